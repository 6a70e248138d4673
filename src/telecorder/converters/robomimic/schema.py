"""The robomimic HDF5 layout: one file, every demo a group under ``/data``.

::

    /data                          attrs: total (samples in all demos), env_args (JSON: env_name, type, env_kwargs),
                                   telecorder_actions (JSON: "raw", or the min/max scaling into [-1, 1])
    /data/demo_<i>                 attrs: num_samples, telecorder_task, language_instruction, task_id
        obs/<key>                  (T, ...)       observations; images uint8 (T, H, W, 3) RGB
        next_obs/<key>             (T, ...)       obs shifted by one step, the last repeated
        actions                    (T, A)         scaled into [-1, 1] per dimension by default (see below)
        rewards                    (T,)           sparse: 1 at the last step of a successful demo
        dones                      (T,)           1 at the last step
        states                     (T, S)         the robot state vector (robomimic: simulator state)
    /mask/train, /mask/valid       demo names as byte strings, a deterministic 90/10 split

Observation keys: ``observation.state`` -> ``state``; camera ``front`` -> ``agentview_image`` and
``wrist`` -> ``robot0_eye_in_hand_image`` (robomimic's names, so its default configs find them),
any other camera ``<cam>_image``; other ``observation.<name>`` -> ``<name>`` with dots as ``_``.
robomimic has no language, no timestamps and no units: the task goes to the demo attributes
``telecorder_task`` and ``language_instruction`` (verbatim) with ``task_id`` ("" for none), per-step timing to ``/data/demo_<i>/telecorder/...`` (robomimic loads only the
keys it is configured with), and the schema and episode metadata to ``telecorder_meta.json``.

Actions: robomimic's actors end in ``tanh`` and its dataset checks want actions in [-1, 1], so by
default each dimension is scaled by the dataset's min/max (widened by 1% of the span) and the
scaling is stored in ``/data`` attribute ``telecorder_actions`` and the sidecar; our reader maps
them back to robot units. ``actions="raw"`` keeps robot units.

Environment: robomimic resolves ``env_args["type"]`` to a simulator class (1 robosuite, 2 gym,
3 iGibson). Our recordings come from none of them, so we write type 0, which robomimic does not
define: nothing that only reads the dataset (``SequenceDataset``, training without rollouts,
``get_dataset_info.py``) looks at it, and nothing mistakes the data for robosuite's. Data that came
from a robosuite file keeps its own ``env_args`` (and raw actions, which robosuite's controllers take).

This module names the places in the file, shared by :mod:`.reader`, :mod:`.writer` and :mod:`.merge`.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ...datasets.features import FeatureSpec
from ..action_scaling import ActionScaling
from ..foreign_hdf5 import open_foreign

DEFAULT_CAMERA_KEYS = {"front": "agentview_image", "wrist": "robot0_eye_in_hand_image"}
DEFAULT_FPS = 20.0  # robosuite's default control_freq, for files that state no rate
ROBOSUITE_ENV_TYPE = 1  # robomimic.envs.env_base.EnvType.ROBOSUITE_TYPE
# Not one of robomimic's EnvType values (1 robosuite, 2 gym, 3 iGibson MOMART): no simulator class.
NO_SIMULATOR_ENV_TYPE = 0
ACTIONS_ATTR = "telecorder_actions"
ACTION_MODES = ("normalized", "raw")
TASK_ATTR = "telecorder_task"
FPS_ATTR = "telecorder_fps"

# Our features that robomimic has fixed places for (besides obs/): feature -> dataset in the demo.
FIXED = {"action": "actions", "next.reward": "rewards", "next.done": "dones", "sim_state": "states"}
FIXED_NAMES = {loc: name for name, loc in FIXED.items()}


def obs_key(spec: FeatureSpec, camera_keys: dict[str, str]) -> str | None:
    """robomimic obs key of an observation feature; None for features outside ``obs/``."""
    if spec.is_image:
        return camera_keys.get(spec.camera, f"{spec.camera}_image")
    if spec.name == "observation.state":
        return "state"
    if spec.name.startswith("observation."):
        return spec.name.removeprefix("observation.").replace(".", "_")
    return None


def open_file(path: Path, mode: str = "r") -> h5py.File:
    """``path`` opened as a robomimic file (read: checked, see :func:`..foreign_hdf5.open_foreign`)."""
    return open_foreign(path, "robomimic HDF5 file", mode)


def split_demos(names: list[str], valid_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Train and valid demo names: ``round(valid_fraction * n)`` demos (at least one once there are two,
    never all) drawn by a seeded permutation, each list in ``names`` order."""
    n = len(names)
    n_valid = 0 if n < 2 or valid_fraction == 0 else min(n - 1, max(1, round(valid_fraction * n)))
    picked = set(np.random.default_rng(seed).permutation(n)[:n_valid].tolist())
    return [d for i, d in enumerate(names) if i not in picked], [d for i, d in enumerate(names) if i in picked]


def scale_actions(ds: h5py.Dataset, scaling: ActionScaling) -> None:
    """Rescale one demo's stored ``actions`` in place (the writer, and the merge of parts, both use this)."""
    flat = ds[()].reshape(ds.shape[0], -1)
    ds[...] = scaling.normalize(flat).reshape(ds.shape).astype(ds.dtype)
