"""ALOHA / ACT episode folders: one ``episode_<i>.hdf5`` per demo, as ACT's recording scripts write them.

::

    /observations/qpos           (T, D)        joint positions (ALOHA: grippers normalized 0 = closed, 1 = open)
    /observations/qvel           (T, D)        joint velocities
    /observations/effort         (T, D)        servo effort (real robot only)
    /observations/images/<cam>   (T, H, W, 3)  uint8 RGB, or (T, L) uint8 JPEG rows padded with zeros
    /action                      (T, A)        joint position targets
    /compress_len                (n_cams, T)   byte length of each JPEG row (compressed files only)
    attributes on / : sim (bool), compress (bool)

Compressed files follow aloha's ``record_episodes.py`` exactly, including its quirk: the RGB
frame is handed to ``cv2.imencode`` as if it were BGR, so the JPEG holds red where a viewer
expects blue, and ACT's loader, which decodes without converting, gets RGB back. We write and
read them the same way so that ACT trains on the colours it would have recorded.

What ACT has no place for stays where ACT does not look: per-step timing and extra features
in ``/telecorder/...`` inside each file, and the schema (fps, names, units, robot) and per-episode
metadata (task, success, ...) in ``telecorder_meta.json`` next to the files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from ...atomic import write_json_atomic
from ...datasets.episode_file import Episode
from ...datasets.features import (
    CLOCK_SIMULATION,
    DatasetInfo,
    FeatureSpec,
    image_feature,
    read_json,
)
from ...datasets.images import check_header
from ...datasets.stats import DatasetStats
from ...errors import DatasetError
from ..base import SIDECAR, ConversionError, FormatReader, FormatWriter
from ..fixed_length import PADDED, fit_episode
from ..foreign_hdf5 import DAMAGE, damaged_file_errors, open_foreign, read_rows
from ..parts import PART_STATS

ALOHA_FPS = 50.0  # ALOHA's control loop and ACT's sim both step every DT = 0.02 s
DEFAULT_JPEG_QUALITY = 50  # aloha's record_episodes.py
IMAGES = "observations/images"
COMPRESS_LEN = "compress_len"

# Where our features live in an ACT file; anything else goes by the rules in ``feature_location``.
_STANDARD = {
    "observation.state": "observations/qpos",
    "observation.velocity": "observations/qvel",
    "observation.effort": "observations/effort",
    "action": "action",
}
_STANDARD_NAMES = {loc: name for name, loc in _STANDARD.items()}
_RESERVED_ROOT = {"observations", "action", COMPRESS_LEN, "telecorder"}

# Dataset attributes written on what we store: the feature a dataset holds, or why it was made up.
FEATURE_ATTR = "telecorder_feature"
DERIVED_ATTR = "telecorder_derived"
# File attributes of an episode fitted to --episode-length: its recorded length and padded/cut/unchanged.
ORIGINAL_LENGTH_ATTR = "telecorder_original_length"
LENGTH_FIT_ATTR = "telecorder_length_fit"

# Per-step arrays that no foreign format has a place for, under a group the foreign loaders ignore.
EXTRAS = "telecorder"
_TIMESTAMP = "timestamp"
_IMAGE_TS = "images_timestamp"
_FRAME_INDEX = "images_frame_index"
_LATENESS = "tick_lateness"
_IS_PAD = "is_pad"
_EXTRA_DATA = "data"

_EPISODE_FILE = re.compile(r"^episode_(\d+)\.hdf5$")

# ACT's ALOHA layout: 7 values per arm, left arm first (constants.py STATE_NAMES).
_ARM = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
ALOHA_JOINT_NAMES = tuple(f"{side}_{j}" for side in ("left", "right") for j in _ARM)
_ALOHA_UNITS = {
    "observation.state": "rad; grippers normalized 0 = closed, 1 = open",
    "observation.velocity": "rad/s; grippers in normalized units per second",
    "observation.effort": "servo effort as reported by the driver",
    "action": "absolute joint position targets, rad; grippers normalized 0 = closed, 1 = open",
}


def feature_location(name: str) -> str:
    """Where a numeric feature is stored in an ACT episode file (a path without leading slash)."""
    if name in _STANDARD:
        return _STANDARD[name]
    head, _, rest = name.partition(".")
    if head == "observation" and rest and "." not in rest and rest not in ("qpos", "qvel", "effort", "images"):
        return f"observations/{rest}"
    if "." not in name and name not in _RESERVED_ROOT:
        return name  # e.g. mobile ALOHA's base_action, at the root where ACT++ looks for it
    return f"{EXTRAS}/{_EXTRA_DATA}/{name.replace('.', '/')}"


# -- helpers shared with the robomimic adapter ----------------------------------------------


def plain_metadata(metadata: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Episode metadata as JSON-ready values; ConversionError naming the key that cannot be."""

    def plain(value: Any, key: str) -> Any:
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        if isinstance(value, Mapping):
            return {str(k): plain(v, key) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v, key) for v in value]
        raise ConversionError(f"{where}: metadata {key!r} is a {type(value).__name__}, which JSON cannot hold")

    return {str(k): plain(v, str(k)) for k, v in metadata.items()}


def load_sidecar(folder: Path, fmt: str) -> dict[str, Any] | None:
    """Our sidecar in ``folder`` if it was written for format ``fmt``; None if there is none."""
    path = folder / SIDECAR
    if not path.is_file():
        return None
    try:
        meta = read_json(path)
    except DatasetError as e:
        raise ConversionError(str(e)) from e
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        return None  # written for another format sharing the folder: not ours to interpret
    return meta


def info_from_sidecar(meta: Mapping[str, Any], path: Path) -> DatasetInfo:
    try:
        return DatasetInfo.from_dict(meta["info"], source=str(path))
    except KeyError as e:
        raise ConversionError(f"{path}: sidecar has no 'info' section") from e
    except DatasetError as e:
        raise ConversionError(str(e)) from e


def episode_arrays(episode: Episode, info: DatasetInfo, where: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The episode's numeric arrays and stacked frames, checked against ``info``."""
    n = len(episode)
    if n == 0:
        raise ConversionError(f"{where}: episode {episode.index} has no steps")
    numeric: dict[str, np.ndarray] = {}
    for spec in info.numeric_features:
        if spec.name not in episode.data:
            raise ConversionError(f"{where}: episode {episode.index} has no {spec.name!r} data")
        arr = np.asarray(episode.data[spec.name], dtype=spec.dtype)
        if arr.shape != (n, *spec.shape):
            raise ConversionError(
                f"{where}: episode {episode.index} {spec.name!r} has shape {arr.shape}, "
                f"expected {(n, *spec.shape)}"
            )
        numeric[spec.name] = arr
    frames: dict[str, np.ndarray] = {}
    for spec in info.image_features:
        cam = spec.camera
        got = episode.images.get(cam)
        if got is None or len(got) != n:
            count = "none" if got is None else len(got)
            raise ConversionError(f"{where}: episode {episode.index} camera {cam!r} has {count} frames for {n} steps")
        stack = np.stack([np.asarray(f) for f in got])
        if stack.shape[1:] != spec.shape or stack.dtype != np.uint8:
            raise ConversionError(
                f"{where}: episode {episode.index} camera {cam!r} frames are {stack.dtype} {stack.shape[1:]}, "
                f"expected uint8 {spec.shape}"
            )
        frames[cam] = stack
    return numeric, frames


def write_extras(group: h5py.Group, episode: Episode, cameras: list[str]) -> None:
    """Per-step timing under ``group/telecorder`` (the foreign loaders never look there)."""
    g = group.require_group(EXTRAS)
    g.create_dataset(_TIMESTAMP, data=np.asarray(episode.timestamp, dtype=np.float64))
    for cam in cameras:
        if cam in episode.image_timestamp:
            g.create_dataset(f"{_IMAGE_TS}/{cam}", data=np.asarray(episode.image_timestamp[cam], np.float64))
        if cam in episode.frame_index:
            g.create_dataset(f"{_FRAME_INDEX}/{cam}", data=np.asarray(episode.frame_index[cam], np.int64))
    if episode.tick_lateness is not None:
        g.create_dataset(_LATENESS, data=np.asarray(episode.tick_lateness, dtype=np.float32))


def read_extras(group: h5py.Group, n: int, cameras: list[str], fps: float, where: str) -> dict[str, Any]:
    """Timing arrays for ``Episode``; without stored timestamps the steps are taken as k / fps."""
    g = group.get(EXTRAS)

    def get(path: str) -> np.ndarray | None:
        if g is None or path not in g:
            return None
        ds = g[path]
        # One number per step, or the writer of the converted episode cannot store it.
        if not isinstance(ds, h5py.Dataset) or ds.shape != (n,) or ds.dtype.kind not in "biuf":
            raise ConversionError(f"{where}: {g.name}/{path} is {getattr(ds, 'dtype', 'a group')} "
                                  f"{getattr(ds, 'shape', '')}, expected one number for each of {n} steps")
        return read_rows(ds, group.file.filename, f"{where}: {g.name}/{path}")

    ts = get(_TIMESTAMP)
    out: dict[str, Any] = {
        "timestamp": ts if ts is not None else np.arange(n, dtype=np.float64) / fps,
        "image_timestamp": {},
        "frame_index": {},
        "tick_lateness": get(_LATENESS),
    }
    for cam in cameras:
        its, fidx = get(f"{_IMAGE_TS}/{cam}"), get(f"{_FRAME_INDEX}/{cam}")
        if its is not None:
            out["image_timestamp"][cam] = its
        if fidx is not None:
            out["frame_index"][cam] = fidx
    return out


def extra_feature_name(path: str) -> str:
    """Feature name of a dataset under ``telecorder/data`` (``telecorder/data/a/b`` -> ``a.b``)."""
    return path.removeprefix(f"{EXTRAS}/{_EXTRA_DATA}/").replace("/", ".")


# -- ALOHA ----------------------------------------------------------------------------------


def _episode_files(folder: Path) -> dict[int, Path]:
    out = {}
    for p in folder.iterdir():
        m = _EPISODE_FILE.match(p.name)
        if m and p.is_file():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def _is_rgb(ds: h5py.Dataset) -> bool:
    return ds.dtype == np.uint8 and ds.ndim == 4 and ds.shape[-1] == 3


def _is_jpeg_rows(ds: h5py.Dataset) -> bool:
    return ds.dtype == np.uint8 and ds.ndim == 2


def encode_act_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """JPEG bytes as aloha's recorder makes them: the RGB array passed to OpenCV unconverted."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb), (cv2.IMWRITE_JPEG_QUALITY, int(quality)))
    if not ok:
        raise ConversionError(f"OpenCV could not encode a {rgb.shape} frame as JPEG")
    return buf.reshape(-1)


def decode_act_jpeg(row: np.ndarray, where: str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    # The size the header declares is checked before decoding: a damaged header can claim 30000x30000.
    check_header(np.ascontiguousarray(row), where, expected_hw)
    # No BGR->RGB swap: the bytes hold RGB laid out as BGR, so OpenCV's "BGR" output is RGB.
    img = cv2.imdecode(np.ascontiguousarray(row), cv2.IMREAD_COLOR) if row.size else None
    if img is None:
        raise ConversionError(f"{where}: JPEG row cannot be decoded (corrupt or empty)")
    return img


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
        self._files = _episode_files(self.path)
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
        files = _episode_files(path)
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
                if (_is_rgb(ds) or _is_jpeg_rows(ds)) and not self.wants_camera(cam):
                    images.append(image_feature(cam, 2, 2))  # declared; its size is never read
                    return
                if _is_rgb(ds):
                    images.append(image_feature(cam, ds.shape[1], ds.shape[2]))
                    return
                if _is_jpeg_rows(ds) and n:
                    h, w = decode_act_jpeg(ds[0], f"{path} camera {cam!r} step 0").shape[:2]
                    images.append(image_feature(cam, h, w))
                    return
                name = f"observation.{cam}"  # depth and other non-RGB images: kept as numbers
            elif FEATURE_ATTR in ds.attrs:
                name = str(ds.attrs[FEATURE_ATTR])
            elif loc in _STANDARD_NAMES:
                name = _STANDARD_NAMES[loc]
            elif loc.startswith(f"{EXTRAS}/{_EXTRA_DATA}/"):
                name = extra_feature_name(loc)
            elif loc.startswith("observations/") and loc.count("/") == 1:
                name = "observation." + loc.removeprefix("observations/")
            elif "/" not in loc and ds.ndim >= 1 and ds.shape[0] == n:
                name = loc
            else:
                return
            if ds.ndim < 1 or ds.shape[0] != n:
                raise ConversionError(f"{path}: /{loc} has shape {ds.shape}, but /action has {n} rows")
            aloha = len(ds.shape) == 2 and ds.shape[1] == len(ALOHA_JOINT_NAMES) and name in _ALOHA_UNITS
            numeric.append(FeatureSpec(
                name, ds.dtype.name, ds.shape[1:],
                names=ALOHA_JOINT_NAMES if aloha else None,
                unit=_ALOHA_UNITS[name] if aloha else "",
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
        extras = {k: _first_steps(v, keep) for k, v in extras.items()}
        meta: dict[str, Any] = {}
        if self._sidecar is not None:
            with damaged_file_errors(self.path / SIDECAR, "telecorder sidecar"):
                meta = dict((self._sidecar.get("episodes") or {}).get(path.name, {}).get("metadata") or {})
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
        if _is_rgb(ds):
            frames = list(read_rows(ds, path, f"{path}: /{loc}", keep))
        elif _is_jpeg_rows(ds):
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


#: robot_type of recordings made in MuJoCo: the built-in arm, any other model, ACT's sim (our reader).
SIM_ROBOT_TYPES = ("telecorder_sim_arm", "aloha_sim")
SIM_ROBOT_PREFIX = "mujoco:"


def recorded_in_sim(info: DatasetInfo) -> tuple[bool, str]:
    """Whether the source was recorded in a simulator, and why we think so.

    ACT reads the root ``sim`` attribute to choose how actions line up with observations: on a
    real robot (``sim`` False) it starts each action chunk one step early, to make up for the
    follower lagging the leader; in simulation the command of step t is applied at step t, as in
    our recordings on the sim arm. So a simulated source must say True: an ALOHA source's own
    attribute, a recording on simulated time, or a sim robot.
    """
    recorded = info.extra.get("sim")
    if isinstance(recorded, bool):
        return recorded, f"the source's sim attribute ({recorded})"
    if info.clock == CLOCK_SIMULATION:
        return True, f"recorded on the {CLOCK_SIMULATION} clock"
    robot = info.robot_type or ""
    if robot in SIM_ROBOT_TYPES or robot.startswith(SIM_ROBOT_PREFIX):
        return True, f"robot_type {robot!r} is a simulated robot"
    return False, f"robot_type {robot!r} on the {info.clock} clock: a real robot"


class AlohaWriter(FormatWriter):
    """Writes ``episode_0.hdf5``, ``episode_1.hdf5``, ... that ACT's ``EpisodicDataset`` loads.

    Options: ``compress`` (JPEG rows like aloha's ``record_episodes.py --compress``; default False),
    ``jpeg_quality`` (default 50, aloha's), ``sim`` (the root ``sim`` attribute ACT reads; default
    :func:`recorded_in_sim` of the source), ``episode_length`` (every episode padded
    by holding its last step, or cut, to exactly this many steps: ACT stacks whole episodes; each
    file records its original length and whether it was padded or cut). Episodes are numbered from
    0 without gaps, as ACT expects; the source index is kept in the sidecar.

    ``part`` (default False): write one part of a sharded conversion (see ``parts.py``); the part is
    an ordinary ALOHA folder plus an empty ``part_stats.json`` (ALOHA keeps no statistics), and
    :func:`merge_parts` renames its files into the global numbering. ``encode_threads`` is accepted
    for the pipeline's sake: JPEG rows are already encoded on the calling thread.
    """

    format_name = "aloha"

    def __init__(self, path: Path, info: DatasetInfo, **options: Any) -> None:
        super().__init__(path, info, **options)
        self.compress = bool(options.get("compress", False))
        self.jpeg_quality = int(options.get("jpeg_quality", DEFAULT_JPEG_QUALITY))
        if not 1 <= self.jpeg_quality <= 100:
            raise ConversionError(f"{self.path}: jpeg_quality must be within 1..100, not {self.jpeg_quality}")
        sim = options.get("sim")
        self.sim, self.sim_reason = (bool(sim), "set by the caller") if sim is not None else recorded_in_sim(info)
        self.part = bool(options.get("part", False))
        self.encode_threads = options.get("encode_threads")
        length = options.get("episode_length")
        self.episode_length = None if length is None else int(length)
        if self.episode_length is not None and self.episode_length < 1:
            raise ConversionError(f"{self.path}: episode_length must be at least 1 step, not {self.episode_length}")
        for name in ("observation.state", "action"):
            spec = info.features.get(name)
            if spec is None or spec.is_image or len(spec.shape) != 1:
                have = ", ".join(info.features) or "none"
                raise ConversionError(
                    f"{self.path}: ACT episodes need a 1-D {name!r} feature "
                    f"({_STANDARD[name]}); the source has: {have}"
                )
        self._locations = {s.name: feature_location(s.name) for s in info.numeric_features}
        self._episodes: dict[str, dict[str, Any]] = {}
        self._frames = 0
        self._closed = False
        self.path.mkdir(parents=True, exist_ok=True)

    def write_episode(self, episode: Episode) -> None:
        file = self.path / f"episode_{len(self._episodes)}.hdf5"
        fit = None
        if self.episode_length is not None:
            episode, fit = fit_episode(episode, self.episode_length, self.info.fps)
        numeric, frames = episode_arrays(episode, self.info, str(file))
        meta = plain_metadata(episode.metadata, f"{file}: episode {episode.index}")
        try:
            with h5py.File(file, "w") as f:
                self._write(f, episode, numeric, frames)
                if fit is not None:
                    f.attrs[ORIGINAL_LENGTH_ATTR] = fit.original_length
                    f.attrs[LENGTH_FIT_ATTR] = fit.how
                    is_pad = np.arange(len(episode)) >= fit.original_length
                    f.create_dataset(f"{EXTRAS}/{_IS_PAD}", data=is_pad)
        except BaseException:
            file.unlink(missing_ok=True)
            raise
        entry = {"source_index": int(episode.index), "length": len(episode), "metadata": meta}
        if fit is not None:
            entry.update(fit.to_dict())
        self._episodes[file.name] = entry
        self._frames += len(episode)

    def _write(self, f: h5py.File, episode: Episode, numeric: dict[str, np.ndarray],
               frames: dict[str, np.ndarray]) -> None:
        n = len(episode)
        f.attrs["sim"] = self.sim
        f.attrs["compress"] = self.compress
        for name, arr in numeric.items():
            ds = f.create_dataset(self._locations[name], data=arr)
            ds.attrs[FEATURE_ATTR] = name
        if "observation.velocity" not in numeric:
            # ACT's get_norm_stats reads /observations/qvel; zeros keep it loading, and the marker
            # (and the sidecar's feature list) keep us from reading them back as measurements.
            state = numeric["observation.state"]
            ds = f.create_dataset(_STANDARD["observation.velocity"], data=np.zeros_like(state))
            ds.attrs[DERIVED_ATTR] = "zeros: the source has no joint velocities"
        cams = list(frames)
        f.require_group(IMAGES)
        if self.compress and cams:
            encoded = {c: [encode_act_jpeg(fr, self.jpeg_quality) for fr in frames[c]] for c in cams}
            lengths = np.array([[len(b) for b in encoded[c]] for c in cams])
            padded = int(lengths.max())
            for c in cams:
                rows = np.zeros((n, padded), np.uint8)
                for t, buf in enumerate(encoded[c]):
                    rows[t, : len(buf)] = buf
                f.create_dataset(f"{IMAGES}/{c}", data=rows, chunks=(1, padded))
            # float32 like aloha's (it creates the dataset without a dtype); lengths stay exact.
            ds = f.create_dataset(COMPRESS_LEN, data=lengths.astype(np.float32))
            ds.attrs["camera_names"] = json.dumps(cams)
        else:
            for c in cams:
                f.create_dataset(f"{IMAGES}/{c}", data=frames[c], chunks=(1, *frames[c].shape[1:]))
        write_extras(f, episode, cams)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        info = replace(self.info, total_episodes=len(self._episodes), total_frames=self._frames)
        write_json_atomic(self.path / SIDECAR, {
            "format": self.format_name,
            "info": info.to_dict(),
            "locations": self._locations,
            "compress": self.compress,
            "sim": {"value": self.sim, "why": self.sim_reason},
            "jpeg_quality": self.jpeg_quality if self.compress else None,
            "episode_length": self.episode_length,
            "episodes": self._episodes,
        })
        if self.part:
            write_json_atomic(self.path / PART_STATS, DatasetStats({}).to_json_dict())


def merge_parts(work: Path, parts: list[Path], info: DatasetInfo, options: Mapping[str, Any],
                stats: DatasetStats | None) -> None:
    """One ALOHA folder in ``work`` from parts written with ``part=True`` (see ``parts.py``)."""
    from ..hdf5_merge import merge_aloha_parts  # it imports this module

    merge_aloha_parts(work, parts, info, options, stats)
