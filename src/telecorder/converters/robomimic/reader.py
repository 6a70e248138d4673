"""Reading robomimic HDF5 files (layout in :mod:`.schema`): ours, robosuite's, LIBERO's, robocasa's."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...datasets.episode_file import Episode
from ...datasets.features import IMAGE_PREFIX, DatasetInfo, FeatureSpec, image_feature
from ..action_scaling import ActionScaling
from ..base import SIDECAR, ConversionError, FormatReader
from ..foreign_hdf5 import DAMAGE, damaged_file_errors, read_rows
from ..hdf5_common import (
    DERIVED_ATTR,
    EXTRAS,
    FEATURE_ATTR,
    extra_feature_name,
    info_from_sidecar,
    is_rgb,
    load_sidecar,
    metadata_from_task_attrs,
    read_extras,
)
from .schema import (
    ACTIONS_ATTR,
    DEFAULT_CAMERA_KEYS,
    DEFAULT_FPS,
    FIXED_NAMES,
    FPS_ATTR,
    TASK_ATTR,
    open_file,
)

_DEMO = re.compile(r"^demo_(\d+)$")


def _camera_of(key: str) -> str:
    for cam, k in DEFAULT_CAMERA_KEYS.items():
        if key == k:
            return cam
    return key.removesuffix("_image") or key


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
        with open_file(self.file) as f, damaged_file_errors(self.file, "robomimic HDF5 file"):
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
            with open_file(self.file) as f, damaged_file_errors(self.file, "robomimic HDF5 file"):
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
                if (tagged or "").startswith(IMAGE_PREFIX) or (tagged is None and is_rgb(ds)):
                    cam = tagged.removeprefix(IMAGE_PREFIX) if tagged else _camera_of(key)
                    if IMAGE_PREFIX + cam in locations:
                        cam = key  # e.g. both agentview_image and front_image: keep the second's own name
                    images.append(image_feature(cam, ds.shape[1], ds.shape[2]))
                    locations[IMAGE_PREFIX + cam] = loc
                    return
                name = tagged or ("observation.state" if key == "state" else f"observation.{key}")
            elif tagged:
                name = tagged
            elif loc in FIXED_NAMES:
                name = FIXED_NAMES[loc]
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
        with open_file(self.file) as f, damaged_file_errors(self.file, "robomimic HDF5 file"):
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
        for key, value in metadata_from_task_attrs(attrs).items():
            meta.setdefault(key, value)
        if self._task and not meta.get("task"):
            meta["task"] = self._task
            meta.setdefault("language_instruction", self._task)
        return meta
