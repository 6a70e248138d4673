"""Reading ALOHA / ACT episode folders (layout in :mod:`.schema`), ours or recorded by aloha/ACT."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...datasets.episode_file import Episode
from ...datasets.features import DatasetInfo, FeatureSpec, image_feature
from ..base import SIDECAR, ConversionError, FormatReader
from ..fixed_length import PADDED
from ..foreign_hdf5 import DAMAGE, damaged_file_errors, open_foreign, read_rows
from ..hdf5_common import (
    DERIVED_ATTR,
    EXTRA_DATA,
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
    ALOHA_FPS,
    ALOHA_JOINT_NAMES,
    ALOHA_UNITS,
    COMPRESS_LEN,
    IMAGES,
    LENGTH_FIT_ATTR,
    ORIGINAL_LENGTH_ATTR,
    STANDARD_NAMES,
    decode_act_jpeg,
    episode_files,
    feature_location,
    is_jpeg_rows,
)


class AlohaReader(FormatReader):
    """A folder of ACT/ALOHA ``episode_<i>.hdf5`` files.

    Options: ``fps`` (the control rate when our sidecar does not give it; default 50, ALOHA's),
    ``task`` (task text for episodes that have none: ACT files carry no language).
    """

    format_name = "aloha"

    def __init__(self, path: Path, fps: float | None = None, task: str | None = None,
                 cameras: list[str] | None = None, **options: Any) -> None:
        super().__init__(path, cameras)
        if not self.path.is_dir():
            raise ConversionError(f"{self.path}: an ALOHA/ACT dataset is a folder of episode_<i>.hdf5 files")
        self._files = episode_files(self.path)
        if not self._files:
            raise ConversionError(f"{self.path}: no episode_<i>.hdf5 files in this folder")
        self._fps = float(fps) if fps else None
        self._task = task
        self._sidecar = load_sidecar(self.path, self.format_name)
        self._info: DatasetInfo | None = None
        self._locations: dict[str, str] = {}

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if not path.is_dir():
            return False
        files = episode_files(path)
        if not files:
            return False
        try:
            with h5py.File(next(iter(files.values())), "r") as f:
                return "action" in f and "observations/qpos" in f
        except DAMAGE:
            return False

    @property
    def info(self) -> DatasetInfo:
        if self._info is None:
            self._info, self._locations = self._load_info()
        return self._info

    def _load_info(self) -> tuple[DatasetInfo, dict[str, str]]:
        if self._sidecar is not None:
            with damaged_file_errors(self.path / SIDECAR, "telecorder sidecar"):
                info = info_from_sidecar(self._sidecar, self.path / SIDECAR)
                locations = dict(self._sidecar.get("locations") or {})
                locations = {s.name: str(locations.get(s.name, feature_location(s.name)))
                             for s in info.numeric_features}
        else:
            first = next(iter(self._files.values()))
            with self._open(first) as f, damaged_file_errors(first, "ALOHA/ACT episode file"):
                info, locations = self._scan(first, f)
        if self._fps is not None:
            info = replace(info, fps=self._fps)
        if self.camera_selection is not None:  # cameras not selected are never read
            self.check_camera_selection(info.cameras, self.path)
            info = replace(info, features={k: f for k, f in info.features.items()
                                           if not f.is_image or self.wants_camera(f.camera)})
        return info, locations

    def _scan(self, path: Path, f: h5py.File) -> tuple[DatasetInfo, dict[str, str]]:
        """Schema of a file we did not write: every per-step dataset becomes a feature."""
        self._check(path, f)
        n = f["action"].shape[0]
        numeric: list[FeatureSpec] = []
        images: list[FeatureSpec] = []
        locations: dict[str, str] = {}

        def visit(loc: str, ds: Any) -> None:
            if (not isinstance(ds, h5py.Dataset) or loc == COMPRESS_LEN or DERIVED_ATTR in ds.attrs
                    or ds.dtype.kind not in "biuf"):
                return  # strings and the like are not per-step numbers
            if loc.startswith(IMAGES + "/"):
                cam = loc.removeprefix(IMAGES + "/")
                if (is_rgb(ds) or is_jpeg_rows(ds)) and not self.wants_camera(cam):
                    images.append(image_feature(cam, 2, 2))  # declared; its size is never read
                    return
                if is_rgb(ds):
                    images.append(image_feature(cam, ds.shape[1], ds.shape[2]))
                    return
                if is_jpeg_rows(ds) and n:
                    h, w = decode_act_jpeg(ds[0], f"{path} camera {cam!r} step 0").shape[:2]
                    images.append(image_feature(cam, h, w))
                    return
                name = f"observation.{cam}"  # depth and other non-RGB images: kept as numbers
            elif FEATURE_ATTR in ds.attrs:
                name = str(ds.attrs[FEATURE_ATTR])
            elif loc in STANDARD_NAMES:
                name = STANDARD_NAMES[loc]
            elif loc.startswith(f"{EXTRAS}/{EXTRA_DATA}/"):
                name = extra_feature_name(loc)
            elif loc.startswith("observations/") and loc.count("/") == 1:
                name = "observation." + loc.removeprefix("observations/")
            elif "/" not in loc and ds.ndim >= 1 and ds.shape[0] == n:
                name = loc
            else:
                return
            if ds.ndim < 1 or ds.shape[0] != n:
                raise ConversionError(f"{path}: /{loc} has shape {ds.shape}, but /action has {n} rows")
            aloha = len(ds.shape) == 2 and ds.shape[1] == len(ALOHA_JOINT_NAMES) and name in ALOHA_UNITS
            numeric.append(FeatureSpec(
                name, ds.dtype.name, ds.shape[1:],
                names=ALOHA_JOINT_NAMES if aloha else None,
                unit=ALOHA_UNITS[name] if aloha else "",
            ))
            locations[name] = loc

        f.visititems(visit)
        sim = bool(f.attrs.get("sim", False))
        info = DatasetInfo.create(
            sorted(numeric, key=lambda s: s.name) + images,
            fps=self._fps or ALOHA_FPS,
            robot_type="aloha_sim" if sim else "aloha",
            total_episodes=len(self._files),
            extra={"sim": sim},
        )
        return info, locations

    def episode_indices(self) -> list[int]:
        return list(self._files)

    def _open(self, path: Path) -> h5py.File:
        return open_foreign(path, "ALOHA/ACT episode file")

    @staticmethod
    def _check(path: Path, f: h5py.File) -> None:
        if "action" not in f:
            raise ConversionError(f"{path}: no /action dataset; not an ALOHA/ACT episode file")
        if "observations/qpos" not in f:
            raise ConversionError(f"{path}: no /observations/qpos dataset; not an ALOHA/ACT episode file")

    def read_episode(self, index: int) -> Episode:
        info = self.info
        path = self._files.get(index)
        if path is None:
            raise ConversionError(f"{self.path}: no episode_{index}.hdf5")
        with self._open(path) as f, damaged_file_errors(path, "ALOHA/ACT episode file"):
            self._check(path, f)
            n = f["action"].shape[0]
            keep = self._recorded_length(path, f, n)
            data = {}
            for spec in info.numeric_features:
                loc = self._locations[spec.name]
                if loc not in f:
                    raise ConversionError(f"{path}: dataset /{loc} ({spec.name}) is missing")
                ds = f[loc]
                if not isinstance(ds, h5py.Dataset) or ds.shape != (n, *spec.shape):
                    raise ConversionError(
                        f"{path}: /{loc} has shape {getattr(ds, 'shape', None)}, expected {(n, *spec.shape)} "
                        f"({n} rows like /action)"
                    )
                arr = read_rows(ds, path, f"{path}: /{loc}")
                data[spec.name] = arr[:keep].astype(spec.dtype, copy=False)
            images = {spec.camera: self._frames(path, f, spec, n, keep) for spec in info.image_features}
            extras = read_extras(f, n, info.cameras, info.fps, str(path))
            from_attrs = metadata_from_task_attrs(f.attrs)
        extras = {k: _first_steps(v, keep) for k, v in extras.items()}
        meta: dict[str, Any] = {}
        if self._sidecar is not None:
            with damaged_file_errors(self.path / SIDECAR, "telecorder sidecar"):
                meta = dict((self._sidecar.get("episodes") or {}).get(path.name, {}).get("metadata") or {})
        for key, value in from_attrs.items():  # the sidecar, where there is one, has the whole record
            meta.setdefault(key, value)
        if self._task and not meta.get("task"):
            meta["task"] = self._task
            meta.setdefault("language_instruction", self._task)
        return Episode(index=index, data=data, metadata=meta, images=images, **extras)

    @staticmethod
    def _recorded_length(path: Path, f: h5py.File, n: int) -> int:
        """Steps that were recorded: a file padded to ``--episode-length`` holds its last step after them."""
        if str(f.attrs.get(LENGTH_FIT_ATTR, "")) != PADDED:
            return n
        original = int(f.attrs.get(ORIGINAL_LENGTH_ATTR, n))
        if not 1 <= original <= n:
            raise ConversionError(
                f"{path}: attribute {ORIGINAL_LENGTH_ATTR}={original} does not fit a padded file of {n} steps")
        return original

    def _frames(self, path: Path, f: h5py.File, spec: FeatureSpec, n: int, keep: int) -> list[np.ndarray]:
        cam = spec.camera
        loc = f"{IMAGES}/{cam}"
        if loc not in f:
            raise ConversionError(f"{path}: camera {cam!r} (/{loc}) is missing")
        ds = f[loc]
        if ds.shape[0] != n:
            raise ConversionError(f"{path}: /{loc} has {ds.shape[0]} frames, /action has {n} rows")
        # Steps past ``keep`` are --episode-length padding (copies of the last frame): not decoded.
        if is_rgb(ds):
            frames = list(read_rows(ds, path, f"{path}: /{loc}", keep))
        elif is_jpeg_rows(ds):
            rows, lengths = read_rows(ds, path, f"{path}: /{loc}", keep), self._compress_len(path, f, cam, n)
            frames = [
                # ACT decodes the whole padded row (JPEG stops at its end marker); where we know the
                # true length we cut the padding off first.
                decode_act_jpeg(rows[t] if lengths is None else rows[t, : int(lengths[t])],
                                f"{path} camera {cam!r} step {t}", spec.shape[:2])
                for t in range(keep)
            ]
        else:
            raise ConversionError(f"{path}: /{loc} is {ds.dtype} {ds.shape}, neither RGB frames nor JPEG rows")
        for t, frame in enumerate(frames):
            if frame.shape != spec.shape:
                raise ConversionError(f"{path}: camera {cam!r} step {t} is {frame.shape}, expected {spec.shape}")
        return frames

    @staticmethod
    def _compress_len(path: Path, f: h5py.File, cam: str, n: int) -> np.ndarray | None:
        # aloha writes rows in its config's camera order, which the file does not record; only
        # files that name their row order (ours) can be cut by length.
        if COMPRESS_LEN not in f or "camera_names" not in f[COMPRESS_LEN].attrs:
            return None
        order = json.loads(f[COMPRESS_LEN].attrs["camera_names"])
        if cam not in order:
            return None
        table = f[COMPRESS_LEN]
        if table.ndim != 2 or table.shape[1] != n or order.index(cam) >= table.shape[0]:
            raise ConversionError(f"{path}: /{COMPRESS_LEN} has shape {table.shape}, expected one row of {n} "
                                  f"lengths per camera of {order}")
        return read_rows(table, path, f"{path}: /{COMPRESS_LEN}")[order.index(cam)]


def length_fit_summary(folder: Path) -> str:
    """One line on what ``--episode-length`` did to the episodes in ``folder`` (from our sidecar)."""
    meta = load_sidecar(Path(folder), "aloha") or {}
    episodes = list((meta.get("episodes") or {}).values())
    cut = [e for e in episodes if e.get("length_fit") == "cut"]
    padded = [e for e in episodes if e.get("length_fit") == "padded"]
    line = f"episode length {meta.get('episode_length')}: {len(padded)} padded, {len(cut)} cut"
    if cut:
        # A cut drops the end of a demonstration, often the moment it succeeds.
        longest = max(int(e["original_length"]) for e in cut)
        line += f" (longest was {longest} steps; --episode-length {longest} keeps every step)"
    return line


def _first_steps(value: Any, keep: int) -> Any:
    if isinstance(value, dict):
        return {k: v[:keep] for k, v in value.items()}
    return None if value is None else value[:keep]
