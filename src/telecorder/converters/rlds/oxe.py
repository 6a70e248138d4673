"""RLDS in Open X-Embodiment conventions, ready for the Octo and OpenVLA data loaders.

Step layout: ``observation/image`` (primary camera), ``observation/wrist_image``,
``observation/state`` (joint state as recorded), ``action`` float32[7], ``language_instruction``,
``is_first`` / ``is_last`` / ``is_terminal``, ``reward``, ``discount``.

The 7-D action is the end-effector motion the recorded joint command asks for, computed by
forward kinematics of the robot's MJCF:

* ``action[0:3]``: ``p(FK(action_t)) - p(FK(state_t))``, metres, in the robot base (world) frame;
* ``action[3:6]``: roll, pitch, yaw of ``R_delta = R(FK(action_t)) @ R(FK(state_t)).T`` as
  extrinsic XYZ Euler angles (``R_delta = Rz(yaw) @ Ry(pitch) @ Rx(roll)``), radians; the rotation
  that, applied in the base frame, turns the current gripper orientation into the commanded one;
* ``action[6]``: the commanded gripper opening, 1 = open, 0 = closed (absolute, not a delta).

With ``action_space="joint"`` (the default for two arms, :mod:`..bimanual`) the recorded
absolute joint targets are kept instead (``action_encoding`` ``JOINT_POS``). ``binarize_gripper=True`` turns the gripper action into
0/1 (open above ``gripper_threshold``), as Octo's and OpenVLA's dataset transforms do for the
OXE datasets; 1 = open, 0 = closed is already their convention, so nothing is flipped.

Next to the dataset (in ``<path>/<name>/<version>/``):

* ``dataset_statistics.json``: action and proprio statistics with both quantile spellings,
  ``q01``/``q99`` (OpenVLA, ``BOUNDS_Q99``) and ``p01``/``p99`` (Octo, ``BOUNDS``), plus
  ``mean``/``std``/``min``/``max``, ``mask``, ``num_transitions``, ``num_trajectories``:
  mean/std/min/max from :class:`~telecorder.datasets.stats.FeatureStats` merged episode by
  episode, the quantiles exactly Octo's and OpenVLA's ``np.quantile`` while the values fit in
  memory, else the sketch with its error reported (see :mod:`.oxe_stats`); the same file under
  the name each loader's statistics cache looks for, when exact;
* ``oxe_config.json``: ``make_dataset_from_rlds_kwargs`` with one block per loader, each
  passed unchanged as ``**kwargs`` to that loader's ``make_dataset_from_rlds``, or as an entry
  of the ``dataset_kwargs_list`` of its ``make_interleaved_dataset`` (which passes
  ``dataset_statistics`` itself, so the blocks leave it out), Octo's taking
  ``proprio_obs_key``, OpenVLA's fork ``state_obs_keys`` and ``absolute_action_mask`` instead
  (each raises ``TypeError`` on the other's); and ``dataset``, the descriptive fields
  (encodings, control frequency, names, splits and their sizes, the statistics file, conventions).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import write_json_atomic
from ...datasets.episode_file import Episode
from ...datasets.exact_quantiles import ExactValues
from ...datasets.features import IMAGE_PREFIX, DatasetInfo, FeatureSpec, image_feature
from ...datasets.stats import DatasetStats, FeatureStats, StatsError
from ..base import ConversionError
from ..bimanual import gripper_dims, is_bimanual
from .oxe_stats import (
    exact_limit,
    feature_statistics,
    loader_cache_names,
    write_part_values,
)
from .paths import published_path
from .schema import VAL_SPLIT, import_tfds
from .writer import RLDSWriter

#: robot_type of recordings made on the built-in simulated arm (``telecorder.sim``).
BUILTIN_ROBOT_TYPE = "telecorder_sim_arm"
GRIPPER = "gripper"
EEF_ACTION_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
ROTATION_CONVENTION = (
    "R_delta = R_action @ R_state.T (base frame); (roll, pitch, yaw) are its extrinsic XYZ Euler "
    "angles: R_delta = Rz(yaw) @ Ry(pitch) @ Rx(roll)"
)
EEF_ACTION_UNIT = (
    "EEF delta of the commanded joint target relative to the measured joints, by forward "
    "kinematics: xyz = p_action - p_state in metres (robot base frame); roll/pitch/yaw in rad, "
    f"{ROTATION_CONVENTION}; gripper = commanded opening, 1 = open, 0 = closed"
)
STATS_FILE = "dataset_statistics.json"
CONFIG_FILE = "oxe_config.json"
#: Key of the loader keyword-argument blocks in ``oxe_config.json``.
KWARGS_KEY = "make_dataset_from_rlds_kwargs"
#: Gripper commands above this count as open when binarizing (our in-memory range is 0..1).
GRIPPER_THRESHOLD = 0.5
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def euler_xyz(rot: np.ndarray) -> np.ndarray:
    """(roll, pitch, yaw) with ``rot = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (extrinsic XYZ); pitch in
    [-pi/2, pi/2]."""
    r = np.asarray(rot, dtype=np.float64)
    roll = math.atan2(r[2, 1], r[2, 2])
    pitch = math.atan2(-r[2, 0], math.hypot(r[0, 0], r[1, 0]))
    yaw = math.atan2(r[1, 0], r[0, 0])
    return np.array([roll, pitch, yaw])


def default_camera_map(cameras: list[str]) -> dict[str, str]:
    """OXE key per camera: cameras named like ``wrist`` -> ``wrist_image``, the first other
    camera -> ``image`` (primary), further ones -> ``image_1``, ``image_2``, ..."""
    out: dict[str, str] = {}
    wrist = [c for c in cameras if "wrist" in c.lower()]
    others = [c for c in cameras if c not in wrist]
    for k, cam in enumerate(others):
        out[cam] = "image" if k == 0 else f"image_{k}"
    for k, cam in enumerate(wrist):
        out[cam] = "wrist_image" if k == 0 else f"wrist_image_{k}"
    return out


class OXEWriter(RLDSWriter):
    """RLDS writer in Open X-Embodiment conventions (see the module docstring).

    Options (besides :class:`RLDSWriter`'s; ``layout`` defaults to ``"nested"`` here, i.e.
    ``path/<dataset_name>/<version>/`` as ``tfds.builder(name, data_dir=path)`` expects):
        cameras: ``{recorded camera: OXE key}`` (e.g. ``{"front": "image", "wrist":
            "wrist_image"}``); cameras left out are not written. Default: :func:`default_camera_map`.
        action_space: ``"eef"`` (default, 7-D EEF delta by FK) or ``"joint"`` (recorded
            absolute joint targets; the default for two arms, see :mod:`..bimanual`, whose
            grippers are both left out of normalization and both binarized).
        robot_model: MJCF of the robot for FK; default the built-in arm when the dataset's
            robot_type is ``telecorder_sim_arm``.
        ee_site: the end-effector site of the model (default ``ee_site``).
        binarize_gripper: write the gripper action as 0 (closed) / 1 (open), open where the
            command is above ``gripper_threshold`` (default 0.5). Off by default.
        exact_quantile_limit: most values (rows x dims) per feature kept for exact quantiles
            (default ``EXACT_QUANTILE_LIMIT``, 10**8: 400 MB of float32); beyond, the sketch.
    """

    format_name = "oxe"
    default_layout = "nested"
    _OPTIONS = RLDSWriter._OPTIONS | {
        "cameras", "action_space", "robot_model", "ee_site", "binarize_gripper", "gripper_threshold",
        "exact_quantile_limit",
    }

    # -- setup -------------------------------------------------------------------------

    def _setup(self) -> None:
        info, opt = self.info, self.options.get
        # A pair of arms has no single end effector: joint targets, as OXE's ALOHA datasets store them.
        self.action_space = str(opt("action_space", "joint" if is_bimanual(info) else "eef"))
        if self.action_space not in ("eef", "joint"):
            raise ConversionError(f"oxe writer: action_space must be 'eef' or 'joint', not {self.action_space!r}")
        if self.data_dir == self.path:
            raise ConversionError(
                "oxe writer: layout='flat' cannot be opened by Octo / OpenVLA, which look for "
                "<data_dir>/<name>/<version>/; leave layout at 'nested' (or write --to rlds for a flat TFDS folder)"
            )
        _, tfds = import_tfds()
        if self.dataset_name in tfds.list_builders(with_community_datasets=False):
            # tfds.builder(name, data_dir), as Octo and OpenVLA call it, prefers a catalogue builder.
            raise ConversionError(
                f"oxe writer: {self.dataset_name!r} is a dataset of the TFDS catalogue, so Octo and OpenVLA "
                "would load that one instead of this; name the output folder differently (or pass dataset_name)"
            )
        self.binarize_gripper = bool(opt("binarize_gripper", False))
        self.gripper_threshold = float(opt("gripper_threshold", GRIPPER_THRESHOLD))
        if not 0.0 < self.gripper_threshold < 1.0:
            raise ConversionError(f"oxe writer: gripper_threshold must be between 0 and 1, not {self.gripper_threshold}")
        for name in ("observation.state", "action"):
            if name not in info.features or len(info.features[name].shape) != 1:
                raise ConversionError(f"oxe writer: the dataset needs a 1-D {name!r} feature (it has {sorted(info.features)})")

        cams = opt("cameras")
        self.camera_map: dict[str, str] = dict(cams) if cams else default_camera_map(info.cameras)
        missing = [c for c in self.camera_map if c not in info.cameras]
        if missing:
            raise ConversionError(f"oxe writer: no camera {missing[0]!r} in the dataset (it has {info.cameras})")
        keys = list(self.camera_map.values())
        bad = [k for k in keys if not _KEY.match(k)]
        if bad or len(set(keys)) != len(keys):
            raise ConversionError(f"oxe writer: camera keys must be distinct identifiers, got {keys}")

        state_spec = info.features["observation.state"]
        self._state_names = list(state_spec.names or ())
        self._gripper = self._state_names.index(GRIPPER) if GRIPPER in self._state_names else None
        self._kin: Any = None
        self._arm_dims: list[int] = []
        self.robot_model: Path | None = None
        if self.action_space == "eef":
            self._setup_kinematics(state_spec)
        named = gripper_dims(self._state_names)
        self._grippers = named or ([self._gripper] if self._gripper is not None else [])
        if self.binarize_gripper and not self._gripper_action_dims():
            raise ConversionError(
                f"oxe writer: binarize_gripper needs a 'gripper' dimension in observation.state / action "
                f"(names: {self._state_names or 'none'})"
            )
        # Running statistics, merged per episode: nothing grows with the dataset, except the
        # rows kept for exact quantiles, up to their limit.
        self._action_stats: FeatureStats | None = None
        self._state_stats: FeatureStats | None = None
        self.exact_quantile_limit = exact_limit(opt("exact_quantile_limit"))
        self._exact: dict[str, ExactValues] | None = None
        self._split_frames: dict[str, int] = dict.fromkeys(self._split_episodes, 0)
        self._loader_caches: dict[str, str] = {}

    def _setup_kinematics(self, state_spec: FeatureSpec) -> None:
        from ...sim._deps import _require_mujoco

        mujoco = _require_mujoco()
        from ...sim.env import DEFAULT_MODEL
        from ...sim.kinematics import Kinematics

        info, opt = self.info, self.options.get
        if opt("robot_model") is not None:
            model_path = Path(str(opt("robot_model")))
        elif info.robot_type == BUILTIN_ROBOT_TYPE:
            model_path = DEFAULT_MODEL
        else:
            raise ConversionError(
                f"oxe writer: no robot model for robot_type {info.robot_type!r}; pass robot_model=PATH.xml "
                "(an MJCF with the end-effector site) for EEF actions, or action_space='joint'"
            )
        try:
            model = mujoco.MjModel.from_xml_path(str(model_path))
        except (ValueError, OSError) as e:
            raise ConversionError(f"{model_path}: cannot be loaded as a MuJoCo model ({e})") from e
        site = str(opt("ee_site", "ee_site"))
        joint_ids = {model.joint(i).name: i for i in range(model.njnt)}
        if self._state_names:
            arm = [(k, n) for k, n in enumerate(self._state_names) if k != self._gripper]
            unknown = [n for _, n in arm if n not in joint_ids]
            if unknown:
                raise ConversionError(
                    f"{model_path}: observation.state names {unknown} are not joints of this model "
                    f"(it has {sorted(n for n in joint_ids if n)})"
                )
            joints = [n for _, n in arm]
            self._arm_dims = [k for k, _ in arm]
        else:
            joints = None
        try:
            self._kin = Kinematics(model, site=site, joints=joints)
        except ValueError as e:
            raise ConversionError(f"{model_path}: {e}") from e
        if joints is None:
            # Unnamed state: the model's actuated joints in order, then the gripper if one is left.
            n = self._kin.n
            dim = state_spec.shape[0]
            if dim not in (n, n + 1):
                raise ConversionError(
                    f"oxe writer: observation.state has {dim} unnamed dims; {model_path} drives {n} joints "
                    f"({', '.join(self._kin.joint_names)}) + an optional gripper; name the dims in the dataset"
                )
            self._arm_dims = list(range(n))
            self._gripper = n if dim == n + 1 else None
        if self.info.features["action"].shape != state_spec.shape:
            raise ConversionError(
                f"oxe writer: EEF actions need joint-target actions shaped like the state "
                f"({self.info.features['action'].shape} vs {state_spec.shape}); use action_space='joint'"
            )
        self.robot_model = model_path

    # -- schema ------------------------------------------------------------------------

    def _output_info(self, info: DatasetInfo) -> DatasetInfo:
        feats: dict[str, FeatureSpec] = {}
        for name, spec in info.features.items():
            if spec.is_image:
                if spec.camera in self.camera_map:
                    key = self.camera_map[spec.camera]
                    feats[IMAGE_PREFIX + key] = image_feature(key, spec.shape[0], spec.shape[1], unit=spec.unit)
            elif name == "action" and self.action_space == "eef":
                feats[name] = FeatureSpec("action", "float32", (7,), names=EEF_ACTION_NAMES, unit=EEF_ACTION_UNIT)
            elif name == "action":
                feats[name] = dataclasses.replace(
                    spec, unit=(spec.unit + "; " if spec.unit else "") + "absolute joint targets (not deltas)"
                )
            else:
                feats[name] = spec
        extra = dict(info.extra)
        extra["oxe"] = self._conventions()
        return dataclasses.replace(info, features=feats, extra=extra)

    def _conventions(self) -> dict[str, Any]:
        conv: dict[str, Any] = {
            "action_space": self.action_space,
            "action_encoding": "EEF_POS" if self.action_space == "eef" else "JOINT_POS",
            "cameras": dict(self.camera_map),
            "gripper": "1 = open, 0 = closed",
            "gripper_binarized": self.binarize_gripper,
        }
        if self.binarize_gripper:
            conv["gripper"] += f" (binarized: 1 where the command was above {self.gripper_threshold})"
        if not self._grippers:
            conv["gripper"] += "; the recording has no gripper dimension, so action[6] is a constant 1"
        if self.action_space == "eef":
            conv.update(
                action=EEF_ACTION_UNIT,
                rotation_delta=ROTATION_CONVENTION,
                frame="MuJoCo world frame of the model (the robot base on the built-in arm)",
                robot_model=str(self.robot_model),
                ee_site=self._kin.site,
                fk_joints=list(self._kin.joint_names),
            )
        else:
            conv["action"] = "recorded absolute joint targets (rad / m), gripper 1 = open, 0 = closed"
        return conv

    # -- episodes ----------------------------------------------------------------------

    def _prepare(self, episode: Episode) -> Episode:
        n = len(episode)
        data = dict(episode.data)
        where = f"oxe writer, episode {episode.index}"
        for name in ("observation.state", "action"):
            if name not in data or np.shape(data[name]) != (n, *self.info.features[name].shape):
                raise ConversionError(f"{where}: feature {name!r} is missing or not shaped (steps, {self.info.features[name].shape[0]})")
        if self.action_space == "eef":
            data["action"] = self.eef_actions(np.asarray(data["observation.state"]), np.asarray(data["action"]))
        if self.binarize_gripper:
            action = np.array(data["action"], dtype=np.float32)
            g = self._gripper_action_dims()
            action[:, g] = (action[:, g] > self.gripper_threshold).astype(np.float32)
            data["action"] = action
        rename = self.camera_map
        return dataclasses.replace(
            episode,
            data=data,
            images={rename[c]: f for c, f in episode.images.items() if c in rename},
            image_timestamp={rename[c]: v for c, v in episode.image_timestamp.items() if c in rename},
            frame_index={rename[c]: v for c, v in episode.frame_index.items() if c in rename},
        )

    def eef_actions(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(T, 7) EEF delta actions from joint states and absolute joint targets (T, D)."""
        out = np.empty((len(states), 7), dtype=np.float64)
        arm = self._arm_dims
        for t in range(len(states)):
            p_s, r_s = self._kin.fk(states[t, arm])
            p_a, r_a = self._kin.fk(actions[t, arm])
            out[t, :3] = p_a - p_s
            out[t, 3:6] = euler_xyz(r_a @ r_s.T)
        out[:, 6] = actions[:, self._gripper] if self._gripper is not None else 1.0
        return out.astype(np.float32)

    def _written(self, episode: Episode) -> None:
        try:
            action = FeatureStats.from_array(np.asarray(episode.data["action"], np.float64), name="action")
            state = FeatureStats.from_array(
                np.asarray(episode.data["observation.state"], np.float64), name="proprio"
            )
        except StatsError as e:
            raise ConversionError(f"oxe writer, episode {episode.index}: no dataset statistics of it ({e})") from e
        self._action_stats = action if self._action_stats is None else self._action_stats.merge(action)
        self._state_stats = state if self._state_stats is None else self._state_stats.merge(state)
        exact = self._exact_values()
        # float32: the values as stored, which is what the loaders compute their quantiles on.
        exact["action"].add(np.asarray(episode.data["action"], np.float32))
        exact["proprio"].add(np.asarray(episode.data["observation.state"], np.float32))
        split = VAL_SPLIT if episode.index in self._val else self.split
        self._split_frames[split] = self._split_frames.get(split, 0) + len(episode)

    def _exact_values(self) -> dict[str, ExactValues]:
        if self._exact is None:
            dims = {"action": "action", "proprio": "observation.state"}
            self._exact = {
                key: ExactValues(math.prod(self.out_info.features[name].shape), limit=self.exact_quantile_limit, name=key)
                for key, name in dims.items()
            }
        return self._exact

    def _feature_stats(self) -> tuple[FeatureStats, FeatureStats]:
        """(action, proprio) statistics so far; empty ones before the first episode."""
        action = self._action_stats or FeatureStats.empty(self.out_info.features["action"].shape, name="action")
        state = self._state_stats or FeatureStats.empty(
            self.out_info.features["observation.state"].shape, name="proprio"
        )
        return action, state

    def _part_stats(self) -> DatasetStats:
        action, state = self._feature_stats()
        return DatasetStats({"action": action, "proprio": state})

    # -- files next to the dataset --------------------------------------------------------

    def _gripper_action_dims(self) -> list[int]:
        # Joint actions of two arms have a gripper in each half (left_gripper, right_gripper).
        return [6] if self.action_space == "eef" else list(self._grippers)

    def _action_mask(self) -> list[bool]:
        dim = self.out_info.features["action"].shape[0]
        # Octo / OpenVLA normalise only the dims whose mask is True; the gripper stays in 0..1.
        grippers = self._gripper_action_dims()
        return [k not in grippers for k in range(dim)]

    def _absolute_action_mask(self) -> list[bool]:
        # OpenVLA pads past the episode end with zeros on relative dims and repeats absolute ones.
        if self.action_space == "joint":
            return [True] * self.out_info.features["action"].shape[0]
        return [False] * 6 + [True]

    def close(self) -> None:
        if self.part and not self._closed:
            # Before the part's statistics, whose presence marks the part complete.
            write_part_values(self.path, self._split_frames, self._exact_values())
        super().close()

    def _finish(self) -> None:
        self._write_oxe_files(*self._feature_stats(), num_trajectories=self._count, values=self._exact_values())

    def _write_oxe_files(self, action: FeatureStats, proprio: FeatureStats, *, num_trajectories: int,
                         values: Mapping[str, ExactValues]) -> None:
        stats = {
            "action": feature_statistics(action, values.get("action")),
            "proprio": feature_statistics(proprio, values.get("proprio")),
            "num_transitions": int(action.count),
            "num_trajectories": int(num_trajectories),
        }
        stats["action"]["mask"] = self._action_mask()
        write_json_atomic(self.data_dir / STATS_FILE, stats)
        self._loader_caches = {}
        if action.count and all(stats[k]["quantile_method"] == "exact" for k in ("action", "proprio")):
            # Approximate bounds are better recomputed by the loaders than cached under their name.
            _, tfds = import_tfds()
            final = final_root(self.path) / self.dataset_name / self.version
            self._loader_caches = loader_cache_names(
                tfds, self.dataset_name, self.path, final, proprio_obs_key="state", state_obs_keys=["state"]
            )
            for name in sorted(set(self._loader_caches.values())):
                write_json_atomic(self.data_dir / name, stats)
        write_json_atomic(self.data_dir / CONFIG_FILE, self.config())

    def config(self) -> dict[str, Any]:
        """``oxe_config.json``: a kwargs block per loader and the descriptive fields."""
        keys = list(self.camera_map.values())
        wrist = [k for k in keys if k.startswith("wrist_image")]
        external = [k for k in keys if k not in wrist]
        primary = "image" if "image" in external else (external[0] if external else None)
        secondary = next((k for k in external if k != primary), None)
        root = final_root(self.path)
        common: dict[str, Any] = {
            "name": self.dataset_name,
            # tfds.builder(name, data_dir) opens <data_dir>/<name>/<version>/: our output folder.
            "data_dir": str(root),
            # No depth cameras are written; {} is what Octo's make_oxe_dataset_kwargs leaves without load_depth.
            "depth_obs_keys": {},
            "language_key": "language_instruction",
            "action_normalization_mask": self._action_mask(),
            # No dataset_statistics: make_interleaved_dataset passes it itself ("got multiple values
            # for keyword argument"); make_dataset_from_rlds finds ours in its cache (see oxe_stats).
        }
        # The views each trains on: Octo's models take primary + wrist (a None view is padded and
        # masked), a secondary only where one was recorded (padding it would just add 1x1 images);
        # OpenVLA's RLDSDataset loads only the primary view.
        views = {"primary": primary, "secondary": secondary, "wrist": wrist[0] if wrist else None}
        octo = {
            **common,
            "image_obs_keys": {k: v for k, v in views.items() if v is not None or k != "secondary"},
            "proprio_obs_key": "state",
        }
        openvla = {
            **common,
            "image_obs_keys": {"primary": primary},
            "state_obs_keys": ["state"],
            "absolute_action_mask": self._absolute_action_mask(),
            # What OpenVLA's RLDSDataset trains with; it reads q01/q99 from dataset_statistics.
            "action_proprio_normalization_type": "bounds_q99",
        }
        splits = {self.split: len(self._split_episodes[self.split])}
        if VAL_SPLIT in self._split_episodes:
            splits[VAL_SPLIT] = len(self._split_episodes[VAL_SPLIT])
        statistics = str(root / self.dataset_name / self.version / STATS_FILE)
        dataset = {
            "name": self.dataset_name,
            "version": self.version,
            "splits": splits,
            "num_trajectories": dict(splits),
            "num_transitions": {name: int(self._split_frames.get(name, 0)) for name in splits},
            "dataset_statistics": statistics,
            "statistics_cache": dict(self._loader_caches),
            "state_obs_keys": ["state"],
            "state_encoding": "JOINT",
            "proprio_encoding": "JOINT",
            "action_encoding": "EEF_POS" if self.action_space == "eef" else "JOINT_POS",
            "control_frequency": self.out_info.fps,
            "robot_type": self.info.robot_type,
            "state_names": list(self.info.features["observation.state"].names or ()),
            "action_names": list(self.out_info.features["action"].names or ()),
            "gripper": {
                "convention": "1 = open, 0 = closed (Octo's and OpenVLA's; not inverted)",
                "binarized": self.binarize_gripper,
                "threshold": self.gripper_threshold if self.binarize_gripper else None,
            },
            "paths": "data_dir and dataset_statistics are absolute paths of where the dataset was written; "
            "after moving it, set data_dir to the folder holding <name>/ (the loaders then compute the "
            "statistics once themselves, or pass dataset_statistics=<data_dir>/<name>/<version>/"
            f"{STATS_FILE} to make_dataset_from_rlds)",
            "conventions": self._conventions(),
        }
        return {KWARGS_KEY: {"octo": octo, "openvla": openvla}, "dataset": dataset}

    def _sidecar_extra(self) -> dict[str, Any]:
        return {"oxe": self._conventions()}


def final_root(path: Path) -> Path:
    """The absolute folder the dataset ends up in: ``telecorder convert`` builds it in a work
    folder next to the destination and renames it when complete (:func:`.paths.published_path`)."""
    return published_path(path)
