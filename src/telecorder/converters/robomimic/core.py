"""robomimic HDF5: one file, every demo a group under ``/data``.

::

    /data                          attrs: total (samples in all demos), env_args (JSON: env_name, type, env_kwargs),
                                   telecorder_actions (JSON: "raw", or the min/max scaling into [-1, 1])
    /data/demo_<i>                 attrs: num_samples, telecorder_task
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
robomimic has no language, no timestamps and no units: the task goes to the demo attribute
``telecorder_task``, per-step timing to ``/data/demo_<i>/telecorder/...`` (robomimic loads only the
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
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...atomic import write_json_atomic
from ...datasets.episode_file import Episode
from ...datasets.features import IMAGE_PREFIX, DatasetInfo, FeatureSpec, image_feature
from ...datasets.stats import DatasetStats, FeatureStats
from ..action_scaling import ActionScaling
from ..aloha.core import (
    DERIVED_ATTR,
    EXTRAS,
    FEATURE_ATTR,
    episode_arrays,
    extra_feature_name,
    info_from_sidecar,
    load_sidecar,
    plain_metadata,
    read_extras,
    write_extras,
)
from ..base import SIDECAR, ConversionError, FormatReader, FormatWriter
from ..foreign_hdf5 import DAMAGE, damaged_file_errors, open_foreign, read_rows
from ..parts import PART_STATS

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
_FIXED = {"action": "actions", "next.reward": "rewards", "next.done": "dones", "sim_state": "states"}
_FIXED_NAMES = {loc: name for name, loc in _FIXED.items()}

_DEMO = re.compile(r"^demo_(\d+)$")


def obs_key(spec: FeatureSpec, camera_keys: dict[str, str]) -> str | None:
    """robomimic obs key of an observation feature; None for features outside ``obs/``."""
    if spec.is_image:
        return camera_keys.get(spec.camera, f"{spec.camera}_image")
    if spec.name == "observation.state":
        return "state"
    if spec.name.startswith("observation."):
        return spec.name.removeprefix("observation.").replace(".", "_")
    return None


def _camera_of(key: str) -> str:
    for cam, k in DEFAULT_CAMERA_KEYS.items():
        if key == k:
            return cam
    return key.removesuffix("_image") or key


def _is_rgb(ds: h5py.Dataset) -> bool:
    return ds.dtype == np.uint8 and ds.ndim == 4 and ds.shape[-1] == 3


def _hdf5_file(path: Path) -> Path:
    """The dataset file: ``path`` itself, or the one .hdf5/.h5 file in the folder ``path``."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConversionError(f"{path}: no such file or folder")
    found = [p for p in sorted(path.iterdir())
             if p.suffix in (".hdf5", ".h5") and p.is_file() and not p.name.startswith(".")]
    if len(found) != 1:
        raise ConversionError(
            f"{path}: a robomimic dataset is one .hdf5 file; this folder has {len(found)}"
            + (f" ({', '.join(p.name for p in found[:5])})" if found else "")
            + ": name the file"
        )
    return found[0]


def _open(path: Path, mode: str = "r") -> h5py.File:
    return open_foreign(path, "robomimic HDF5 file", mode)


def _demos(path: Path, f: h5py.File) -> dict[int, str]:
    data = f.get("data")
    if not isinstance(data, h5py.Group):
        raise ConversionError(f"{path}: no 'data' group; a robomimic file keeps its demos in /data/demo_<i>")
    demos = {int(m.group(1)): k for k in data if (m := _DEMO.match(k))}
    if not demos:
        raise ConversionError(f"{path}: /data holds no demo_<i> groups")
    return dict(sorted(demos.items()))


def _env_args(path: Path, data: h5py.Group) -> dict[str, Any] | None:
    raw = data.attrs.get("env_args")
    if raw is None:
        return None
    try:
        env = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: /data attribute env_args is not valid JSON ({e})") from e
    return env if isinstance(env, dict) else None


def _action_scaling(path: Path, data: h5py.Group) -> tuple[ActionScaling | None, str | None]:
    """The scaling our writer applied to ``actions`` and their dtype before (None: raw, or not ours)."""
    raw = data.attrs.get(ACTIONS_ATTR)
    if raw is None:
        return None, None
    try:
        record = json.loads(_attr_str(raw))
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: /data attribute {ACTIONS_ATTR} is not valid JSON ({e})") from e
    if record == "raw":
        return None, None
    where = f"{path}: /data attribute {ACTIONS_ATTR}"
    dtype = record.get("dtype") if isinstance(record, dict) else None
    try:
        dtype = None if dtype is None else np.dtype(dtype).name
    except TypeError as e:
        raise ConversionError(f"{where}: dtype {dtype!r} is not a numpy dtype") from e
    return ActionScaling.from_dict(record, where), dtype


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


def _attr_str(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class RobomimicReader(FormatReader):
    """A robomimic ``.hdf5`` file (or a folder holding exactly one).

    Options: ``fps`` (control rate when neither our sidecar nor ``env_kwargs.control_freq`` gives
    it; default 20, robosuite's), ``task`` (task text for demos that have none).
    """

    format_name = "robomimic"

    def __init__(self, path: Path, fps: float | None = None, task: str | None = None,
                 cameras: list[str] | None = None, **options: Any) -> None:
        super().__init__(path, cameras)
        self.file = _hdf5_file(self.path)
        with _open(self.file) as f, damaged_file_errors(self.file, "robomimic HDF5 file"):
            self._demos = _demos(self.file, f)
            self._env_args = _env_args(self.file, f["data"])
            self._file_fps = f["data"].attrs.get(FPS_ATTR)
            self._scaling, self._action_dtype = _action_scaling(self.file, f["data"])
            problem = f["data"].attrs.get("problem_info")
        self._fps = float(fps) if fps else None
        self._task = task
        # LIBERO keeps its instruction in /data's problem_info.
        self._file_task: str | None = None
        if problem is not None:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                self._file_task = json.loads(_attr_str(problem)).get("language_instruction")
        sidecar = load_sidecar(self.file.parent, self.format_name)
        self._sidecar = sidecar if sidecar is not None and sidecar.get("file") == self.file.name else None
        self._info: DatasetInfo | None = None
        self._locations: dict[str, str] = {}

    @classmethod
    def detect(cls, path: Path) -> bool:
        try:
            file = _hdf5_file(Path(path))
            with h5py.File(file, "r") as f:
                data = f.get("data")
                return isinstance(data, h5py.Group) and len(data) > 0 and all(k.startswith("demo_") for k in data)
        except (ConversionError, *DAMAGE):
            return False

    @property
    def info(self) -> DatasetInfo:
        if self._info is None:
            self._info, self._locations = self._load_info()
        return self._info

    def _load_info(self) -> tuple[DatasetInfo, dict[str, str]]:
        if self._sidecar is not None:
            with damaged_file_errors(self.file.parent / SIDECAR, "telecorder sidecar"):
                info = info_from_sidecar(self._sidecar, self.file.parent / SIDECAR)
                locations = {str(k): str(v) for k, v in dict(self._sidecar.get("locations") or {}).items()}
            missing = [n for n in info.features if n not in locations]
            if missing:
                raise ConversionError(f"{self.file.parent / SIDECAR}: no location for feature(s) {missing}")
        else:
            with _open(self.file) as f, damaged_file_errors(self.file, "robomimic HDF5 file"):
                demo = next(iter(self._demos.values()))
                info, locations = self._scan(f["data"][demo], demo)
        if self._fps is not None:
            info = replace(info, fps=self._fps)
        if self.camera_selection is not None:  # cameras not selected are never read
            self.check_camera_selection(info.cameras, self.file)
            info = replace(info, features={k: f for k, f in info.features.items()
                                           if not f.is_image or self.wants_camera(f.camera)})
        return info, locations

    def _scan(self, g: h5py.Group, demo: str) -> tuple[DatasetInfo, dict[str, str]]:
        """Schema of a file we did not write, from its first demo."""
        where = f"{self.file}: {demo}"
        if "actions" not in g:
            raise ConversionError(f"{where} has no 'actions' dataset")
        n = g["actions"].shape[0]
        numeric: list[FeatureSpec] = []
        images: list[FeatureSpec] = []
        locations: dict[str, str] = {}

        def visit(loc: str, ds: Any) -> None:
            if (not isinstance(ds, h5py.Dataset) or DERIVED_ATTR in ds.attrs or loc.startswith("next_obs/")
                    or ds.dtype.kind not in "biuf"):
                return  # strings and the like are not per-step numbers
            tagged = str(ds.attrs[FEATURE_ATTR]) if FEATURE_ATTR in ds.attrs else None
            if loc.startswith("obs/"):
                key = loc.removeprefix("obs/")
                if (tagged or "").startswith(IMAGE_PREFIX) or (tagged is None and _is_rgb(ds)):
                    cam = tagged.removeprefix(IMAGE_PREFIX) if tagged else _camera_of(key)
                    if IMAGE_PREFIX + cam in locations:
                        cam = key  # e.g. both agentview_image and front_image: keep the second's own name
                    images.append(image_feature(cam, ds.shape[1], ds.shape[2]))
                    locations[IMAGE_PREFIX + cam] = loc
                    return
                name = tagged or ("observation.state" if key == "state" else f"observation.{key}")
            elif tagged:
                name = tagged
            elif loc in _FIXED_NAMES:
                name = _FIXED_NAMES[loc]
            elif loc.startswith(f"{EXTRAS}/data/"):
                name = extra_feature_name(loc)
            else:
                return
            if ds.ndim < 1 or ds.shape[0] != n:
                raise ConversionError(f"{where}: {loc} has shape {ds.shape}, but actions has {n} rows")
            # Scaled actions are stored as float64; mapped back they have the dtype they were written with.
            dtype = self._action_dtype if loc == "actions" and self._action_dtype else ds.dtype.name
            numeric.append(FeatureSpec(name, dtype, ds.shape[1:]))
            locations[name] = loc

        g.visititems(visit)
        env = self._env_args or {}
        kwargs = env.get("env_kwargs") if isinstance(env.get("env_kwargs"), dict) else {}
        robots = kwargs.get("robots")
        robot_type = (
            "+".join(map(str, robots)) if isinstance(robots, list) and robots
            else str(robots) if robots else str(env.get("env_name") or "unknown")
        )
        fps = self._fps or self._file_fps or kwargs.get("control_freq") or DEFAULT_FPS
        info = DatasetInfo.create(
            sorted(numeric, key=lambda s: s.name) + images,
            fps=float(fps),
            robot_type=robot_type,
            total_episodes=len(self._demos),
            extra={"robomimic_env_args": env} if env else {},
        )
        return info, locations

    def episode_indices(self) -> list[int]:
        return list(self._demos)

    def read_episode(self, index: int) -> Episode:
        info = self.info
        demo = self._demos.get(index)
        if demo is None:
            raise ConversionError(f"{self.file}: no demo_{index} in /data")
        where = f"{self.file}: {demo}"
        with _open(self.file) as f, damaged_file_errors(self.file, "robomimic HDF5 file"):
            g = f["data"][demo]
            if "actions" not in g:
                raise ConversionError(f"{where} has no 'actions' dataset")
            n = g["actions"].shape[0]
            arrays: dict[str, np.ndarray] = {}
            for spec in info.features.values():
                loc = self._locations[spec.name]
                if loc not in g:
                    raise ConversionError(f"{where}: dataset {loc} ({spec.name}) is missing")
                ds = g[loc]
                if not isinstance(ds, h5py.Dataset) or ds.shape != (n, *spec.shape):
                    raise ConversionError(f"{where}: {loc} has shape {getattr(ds, 'shape', None)}, expected "
                                          f"{(n, *spec.shape)} ({n} rows like actions)")
                if (ds.dtype != np.uint8) if spec.is_image else (ds.dtype.kind not in "biuf"):
                    raise ConversionError(f"{where}: {loc} holds {ds.dtype} values, expected "
                                          f"{'uint8 RGB frames' if spec.is_image else 'numbers'} ({spec.name})")
                arr = read_rows(ds, self.file, f"{where}: {loc}")
                arrays[spec.name] = arr
            if self._scaling is not None and self._locations.get("action") == "actions":
                arrays["action"] = self._robot_units(arrays["action"], info.features["action"], where)
            extras = read_extras(g, n, info.cameras, info.fps, where)
            attrs = dict(g.attrs)
        data = {s.name: arrays[s.name].astype(s.dtype, copy=False) for s in info.numeric_features}
        images = {s.camera: list(arrays[s.name]) for s in info.image_features}
        return Episode(index=index, data=data, metadata=self._metadata(demo, attrs), images=images, **extras)

    def _robot_units(self, normalized: np.ndarray, spec: FeatureSpec, where: str) -> np.ndarray:
        assert self._scaling is not None
        if normalized.shape[1:] != self._scaling.offset.shape:
            raise ConversionError(f"{where}: actions have {normalized.shape[1:]} values per step, but /data "
                                  f"{ACTIONS_ATTR} scales {self._scaling.offset.shape}")
        out = self._scaling.denormalize(normalized)
        return np.rint(out) if np.dtype(spec.dtype).kind in "iub" else out

    def _metadata(self, demo: str, attrs: dict[str, Any]) -> dict[str, Any]:
        if self._sidecar is not None:
            with damaged_file_errors(self.file.parent / SIDECAR, "telecorder sidecar"):
                entry = (self._sidecar.get("demos") or {}).get(demo) or {}
                meta = dict(entry.get("metadata") or {})
        else:
            meta = {}
            task = _attr_str(attrs[TASK_ATTR]) if TASK_ATTR in attrs else None
            if task is None and "ep_meta" in attrs:
                # robocasa-style demos keep their instruction in the ep_meta JSON.
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    task = json.loads(_attr_str(attrs["ep_meta"])).get("lang")
            task = task or self._file_task
            if task:
                meta = {"task": task, "language_instruction": task}
        if self._task and not meta.get("task"):
            meta["task"] = self._task
            meta.setdefault("language_instruction", self._task)
        return meta


class RobomimicWriter(FormatWriter):
    """Writes ``<path>/demo.hdf5`` that robomimic's ``SequenceDataset`` trains on.

    Options: ``filename`` (default ``demo.hdf5``), ``valid_fraction`` (default 0.1; at least one
    validation demo once there are two), ``split_seed`` (default 0), ``camera_keys`` (camera ->
    obs key, over the defaults ``front``/``wrist``), ``next_obs`` (default True), ``compress``
    (gzip the obs, like robomimic's ``--compress``; default False), ``actions`` (``normalized``:
    scaled into [-1, 1] with the scaling stored, the default; ``raw``: robot units; data from a
    robosuite file stays raw unless asked), ``env_name``, ``env_type``, ``env_kwargs``
    (``env_args``; by default the source's when it was robomimic, else the robot type and type 0,
    no simulator).

    ``part`` (default False): write one part of a sharded conversion (see ``parts.py``). A part
    cannot know the action range of the whole dataset, so it stores its actions unscaled (as float64,
    like the demos of a sequential write before their scaling) and their exact per-dimension range in
    ``part_stats.json``; :func:`merge_parts` scales them while copying the demos into one file.
    ``encode_threads`` is accepted for the pipeline's sake: nothing here encodes on other threads.
    """

    format_name = "robomimic"

    def __init__(self, path: Path, info: DatasetInfo, **options: Any) -> None:
        super().__init__(path, info, **options)
        self.filename = str(options.get("filename", "demo.hdf5"))
        self.valid_fraction = float(options.get("valid_fraction", 0.1))
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConversionError(f"{self.path}: valid_fraction must be within [0, 1), not {self.valid_fraction}")
        self.split_seed = int(options.get("split_seed", 0))
        self.part = bool(options.get("part", False))
        self.encode_threads = options.get("encode_threads")
        self.next_obs = bool(options.get("next_obs", True))
        self.compression = "gzip" if options.get("compress") else None
        source_env = info.extra.get("robomimic_env_args")
        from_robosuite = isinstance(source_env, dict) and source_env.get("type") == ROBOSUITE_ENV_TYPE
        # robosuite's controllers take the actions as recorded; scaling them would break its rollouts.
        self.actions = str(options.get("actions") or ("raw" if from_robosuite else "normalized"))
        if self.actions not in ACTION_MODES:
            raise ConversionError(f"{self.path}: actions must be one of {ACTION_MODES}, not {self.actions!r}")
        self.env_args = self._env_args(options)
        if "action" not in info.features or info.features["action"].is_image:
            raise ConversionError(f"{self.path}: robomimic demos need an 'action' feature; the source has none")
        camera_keys = {**DEFAULT_CAMERA_KEYS, **dict(options.get("camera_keys") or {})}
        self._locations: dict[str, str] = {}
        for spec in info.features.values():
            key = obs_key(spec, camera_keys)
            if key is not None:
                loc = f"obs/{key}"
            elif spec.name in _FIXED:
                loc = _FIXED[spec.name]
            else:
                loc = f"{EXTRAS}/data/{spec.h5_path}"
            taken = [n for n, other in self._locations.items() if other == loc]
            if taken:
                raise ConversionError(f"{self.path}: features {taken[0]!r} and {spec.name!r} would both be {loc}")
            self._locations[spec.name] = loc
        self.file_path = self.path / self.filename
        self.path.mkdir(parents=True, exist_ok=True)
        self._file = _open(self.file_path, "w")
        self._data = self._file.create_group("data")
        self._demos: dict[str, dict[str, Any]] = {}
        self._total = 0
        self._action_min: np.ndarray | None = None
        self._action_max: np.ndarray | None = None
        self._action_stats: FeatureStats | None = None  # part mode: what the merge scales by
        self._closed = False

    def _env_args(self, options: dict[str, Any]) -> dict[str, Any]:
        base = self.info.extra.get("robomimic_env_args")
        env = dict(base) if isinstance(base, dict) else {
            # env_kwargs go to the environment's constructor, so our description stays out of them.
            "env_name": self.info.robot_type, "type": NO_SIMULATOR_ENV_TYPE, "env_kwargs": {},
            "telecorder": {
                "robot_type": self.info.robot_type,
                "control_freq": float(self.info.fps),
                "actions": self.actions,
                "note": "type 0 is no robomimic environment class (not robosuite, gym or iGibson): train "
                        "with experiment.rollout.enabled=false, or map type 0 to your own EnvBase subclass",
            },
        }
        for opt, key in (("env_name", "env_name"), ("env_type", "type"), ("env_kwargs", "env_kwargs")):
            if options.get(opt) is not None:
                env[key] = options[opt]
        return env

    def write_episode(self, episode: Episode) -> None:
        demo = f"demo_{len(self._demos)}"
        where = f"{self.file_path}: {demo}"
        numeric, frames = episode_arrays(episode, self.info, where)
        meta = plain_metadata(episode.metadata, f"{where} (episode {episode.index})")
        if self.actions == "normalized":
            self._track_action_range(numeric["action"], f"{where} (episode {episode.index})")
            if self.part:
                stats = FeatureStats.from_array(numeric["action"], name="action")
                self._action_stats = stats if self._action_stats is None else self._action_stats.merge(stats)
        arrays = {**numeric, **{IMAGE_PREFIX + c: v for c, v in frames.items()}}
        try:
            self._write(self._data.create_group(demo), episode, arrays, meta)
        except BaseException:
            if demo in self._data:
                del self._data[demo]
            raise
        self._demos[demo] = {"source_index": int(episode.index), "length": len(episode), "metadata": meta}
        self._total += len(episode)

    def _track_action_range(self, action: np.ndarray, where: str) -> None:
        flat = action.reshape(len(action), -1).astype(np.float64)
        bad = ~np.isfinite(flat).all(axis=1)
        if bad.any():
            raise ConversionError(
                f"{where}: action is not finite at step {int(np.argmax(bad))}; normalized robomimic actions "
                "need finite values (fix the episode, leave it out with --episodes, or use --robomimic-actions raw)")
        lo, hi = flat.min(axis=0), flat.max(axis=0)
        self._action_min = lo if self._action_min is None else np.minimum(self._action_min, lo)
        self._action_max = hi if self._action_max is None else np.maximum(self._action_max, hi)

    def _normalize_actions(self) -> dict[str, Any] | str:
        """Rescale every demo's ``actions`` in place once the whole range is known; the record to store."""
        # A part's actions wait for the range of the whole dataset: the merge scales them.
        if self.actions == "raw" or self.part or self._action_min is None or self._action_max is None:
            return "raw"
        scaling = ActionScaling.from_range(self._action_min, self._action_max)
        for demo in self._demos:
            scale_actions(self._data[demo]["actions"], scaling)
        # The dtype the actions had, so that a reader without our sidecar maps back to the same values.
        return {**scaling.to_dict(), "dtype": self.info.features["action"].dtype}

    def _write(self, g: h5py.Group, episode: Episode, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        n = len(episode)
        g.attrs["num_samples"] = n
        task = meta.get("task") or meta.get("language_instruction")
        if task:
            g.attrs[TASK_ATTR] = str(task)
        for name, arr in arrays.items():
            loc = self._locations[name]
            if name == "action" and self.actions == "normalized":
                # float64 holds the scaled values finely enough that mapping back gives the source's
                # float32 actions bit for bit; robomimic casts to float32 for training anyway.
                arr = arr.astype(np.float64)
            big = arr.ndim >= 3
            opts = {"compression": self.compression} if self.compression and loc.startswith("obs/") else {}
            ds = g.create_dataset(loc, data=arr, chunks=(1, *arr.shape[1:]) if big else None, **opts)
            ds.attrs[FEATURE_ATTR] = name
            if self.next_obs and loc.startswith("obs/"):
                shifted = np.concatenate([arr[1:], arr[-1:]])
                g.create_dataset("next_" + loc, data=shifted, chunks=ds.chunks, **opts)

        def derived(loc: str, data: np.ndarray, why: str) -> None:
            if loc not in g:
                g.create_dataset(loc, data=data).attrs[DERIVED_ATTR] = why

        rewards = np.zeros(n, np.float64)
        rewards[-1] = 1.0 if meta.get("success") else 0.0
        derived("rewards", rewards, "sparse: 1 at the last step of a successful demo")
        dones = np.zeros(n, np.int64)
        dones[-1] = 1
        derived("dones", dones, "1 at the last step")
        if "observation.state" in arrays:
            derived("states", arrays["observation.state"], "copy of observation.state")
        write_extras(g, episode, self.info.cameras)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            actions = self._normalize_actions()
            self._data.attrs[ACTIONS_ATTR] = json.dumps(actions)
            self._data.attrs["total"] = self._total
            self._data.attrs["env_args"] = json.dumps(self.env_args)
            self._data.attrs[FPS_ATTR] = float(self.info.fps)
            train, valid = split_demos(list(self._demos), self.valid_fraction, self.split_seed)
            self._file.create_dataset("mask/train", data=np.array(train, dtype="S"))
            self._file.create_dataset("mask/valid", data=np.array(valid, dtype="S"))
        finally:
            self._file.close()
        info = replace(self.info, total_episodes=len(self._demos), total_frames=self._total)
        write_json_atomic(self.path / SIDECAR, {
            "format": self.format_name,
            "file": self.filename,
            "info": info.to_dict(),
            "locations": self._locations,
            "env_args": self.env_args,
            "actions": actions,
            "mask": {"train": train, "valid": valid},
            "demos": self._demos,
            # What the merge of parts needs to finish the dataset as the sequential writer would.
            **({"part": {"actions": self.actions, "valid_fraction": self.valid_fraction,
                         "split_seed": self.split_seed}} if self.part else {}),
        })
        if self.part:
            stats = {"action": self._action_stats} if self._action_stats is not None else {}
            write_json_atomic(self.path / PART_STATS, DatasetStats(stats).to_json_dict())


def merge_parts(work: Path, parts: list[Path], info: DatasetInfo, options: Mapping[str, Any],
                stats: DatasetStats | None) -> None:
    """One robomimic file in ``work`` from parts written with ``part=True`` (see ``parts.py``)."""
    from ..hdf5_merge import merge_robomimic_parts  # it imports this module

    merge_robomimic_parts(work, parts, info, options, stats)
