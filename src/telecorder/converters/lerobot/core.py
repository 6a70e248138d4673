"""LeRobot datasets: v2.0, v2.1 and v3.0 in; v3.0 (what lerobot 0.4 loads) out.

Layouts, relative to the dataset root::

    v2.x  meta/info.json        codebase_version, fps, features, data_path / video_path templates
          meta/episodes.jsonl   {"episode_index", "tasks": [...], "length"} per line
          meta/tasks.jsonl      {"task_index", "task"} per line
          data/chunk-000/episode_000000.parquet               one episode per file
          videos/chunk-000/<video_key>/episode_000000.mp4     one episode per file
    v3.0  meta/info.json        as above; templates use {chunk_index} and {file_index}
          meta/episodes/chunk-000/file-000.parquet   a row per episode: length, tasks, its rows
                (dataset_from_index..dataset_to_index in data/chunk_index, data/file_index), its
                frames (videos/<key>/chunk_index, file_index, from_timestamp, to_timestamp), stats/...
          meta/tasks.parquet    task string (pandas index "task") -> task_index
          meta/stats.json       per feature min/max/mean/std/count and quantiles
          data/chunk-000/file-000.parquet            rows of many episodes
          videos/<video_key>/chunk-000/file-000.mp4  many episodes back to back

Per frame LeRobot keeps what a policy trains on. What telecorder records beyond that sits
next to it, where LeRobot does not look: ``telecorder_meta.json`` (episode metadata, feature
units, image settings) and ``meta/telecorder_timing.parquet`` (per step: recorded timestamp,
camera frame times and counters, tick lateness). The reader restores both when present.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...atomic import write_json_atomic
from ...datasets.episode_file import Episode
from ...datasets.features import (
    IMAGE_PREFIX,
    DatasetInfo,
    FeatureSpec,
    image_feature,
    read_json,
)
from ...datasets.images import decode_image
from ...datasets.stats import DatasetStats, FeatureStats
from ...errors import DatasetError
from ...safe_paths import join_inside
from ..base import SIDECAR, ConversionError, FormatReader, FormatWriter
from ..parts import PART_STATS
from ..templates import TemplateError, check_template, fill_template
from ..video import CODECS, DEFAULT_GOP, VideoEncoder, decode_frames
from .meta_checks import (
    check_episode_row,
    check_info,
    check_sidecar,
    check_task_row,
    chunks_size,
)
from .timing import (
    OFFSET_KEY,
    episode_frame_times,
    find_offset,
    frame_times,
)

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
WRITTEN_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
TIMING_PATH = "meta/telecorder_timing.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
# Columns every LeRobot frame has; they are bookkeeping, not features of the robot.
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
# Bookkeeping columns numbered across the whole dataset: a part cannot know their values, so
# its statistics of them are left out and the merge computes them from the renumbered rows.
GLOBAL_COLUMNS = ("episode_index", "index", "task_index")
SIDECAR_FORMAT = "telecorder-lerobot-sidecar"
SIDECAR_VERSION = 1
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
WRITER_OPTIONS = {
    "codec": "h264 (libx264, default) or av1 (libsvtav1)",
    "crf": "encoder quality, lower is better (default 20 for h264, 30 for av1)",
    "preset": "encoder speed preset (default veryfast for h264, 8 for av1)",
    "gop": f"frames per keyframe interval (default {DEFAULT_GOP}, like LeRobot)",
    "data_file_size_mb": "start a new data parquet past this size (default 100)",
    "video_file_size_mb": "start a new mp4 past this size (default 500)",
    "chunks_size": "files per chunk folder (default 1000)",
    "default_task": "task text for episodes without task or language_instruction (default '')",
    "part": "write one part of a sharded conversion, merged later by merge_parts (default false)",
    "encode_threads": "threads of each video encoder (default: the encoder's own choice)",
}
# Image statistics come from a sample: this many frames an episode, this many pixels a side.
_STATS_FRAMES = 32
_STATS_SIDE = 96


# -- shared helpers ------------------------------------------------------------------------


def flatten_names(names: Any, shape: Iterable[int]) -> tuple[str, ...] | None:
    """LeRobot ``names`` (flat, nested lists, or {"motors": [...]}) as one label per value.

    None when they do not label a 1-D feature one value each: a partial labelling is worse
    than none.
    """
    shape = tuple(shape)
    if names is None or len(shape) != 1:
        return None
    flat: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for v in node.values():
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
        elif node is not None:
            flat.append(str(node))

    walk(names)
    return tuple(flat) if len(flat) == shape[0] else None


def camera_of(key: str) -> str:
    """Camera name of a LeRobot visual key: ``observation.images.cam_high`` -> ``cam_high``."""
    if key.startswith(IMAGE_PREFIX):
        return key[len(IMAGE_PREFIX) :]
    return key.rsplit(".", 1)[-1]


def _read_json(path: Path, what: str) -> Any:
    return read_json(path, error=ConversionError, missing=f"{what} is missing; not a complete LeRobot dataset",
                     invalid_hint="")


def _read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` of each line: ``where`` is ``"<path> line <n>"`` for the checks to name."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError as e:
        raise ConversionError(f"{path}: file is missing; not a complete LeRobot v2 dataset") from e
    except OSError as e:
        raise ConversionError(f"{path}: cannot be read ({e.strerror or e})") from e
    out = []
    for n, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConversionError(f"{path}: line {n} is not UTF-8 text ({e}); restore the file") from e
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ConversionError(f"{path}: line {n} is not valid JSON ({e})") from e
        if not isinstance(row, dict):
            raise ConversionError(f"{path}: line {n} is not a JSON object")
        out.append((f"{path} line {n}", row))
    return out


def _parquet_column_names(path: Path) -> set[str]:
    try:
        return set(pq.read_schema(path).names)
    except FileNotFoundError as e:
        raise ConversionError(f"{path}: file is missing") from e
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot be read as Parquet ({e})") from e


def _read_parquet(path: Path, columns: list[str] | None = None, **kwargs: Any) -> pa.Table:
    try:
        table = pq.read_table(path, columns=columns, **kwargs)
        table.column_names  # noqa: B018 - decoded lazily: a corrupt schema fails here, not at the caller
        return table
    except FileNotFoundError as e:
        raise ConversionError(f"{path}: file is missing") from e
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot be read as Parquet ({e})") from e


def _is_numeric(dtype: Any) -> bool:
    try:
        return np.dtype(str(dtype)).kind in "biuf"
    except TypeError:
        return False


def _jsonable(value: Any) -> Any:
    """Metadata as plain JSON types (numpy scalars and arrays included)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Visual:
    """A LeRobot camera feature and the telecorder image feature it becomes."""

    key: str
    stored: str  # "video" (mp4 files) or "image" (encoded bytes in the parquet rows)
    spec: FeatureSpec
    unsupported: str = ""  # why its frames cannot become RGB frames (depth maps), if they cannot

    @property
    def camera(self) -> str:
        return self.spec.camera


def _image_size(key: str, ft: Mapping[str, Any], info_path: Path) -> tuple[int, int]:
    vinfo = ft.get("info") or ft.get("video_info") or {}
    if "video.height" in vinfo and "video.width" in vinfo:
        return int(vinfo["video.height"]), int(vinfo["video.width"])
    shape = list(ft.get("shape") or [])
    if len(shape) != 3:
        raise ConversionError(f"{info_path}: feature {key!r} has shape {shape}; an image needs 3 dimensions")
    names = ft.get("names") or []
    if names and str(names[0]).startswith("channel"):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _depth_reason(ft: Mapping[str, Any]) -> str:
    """Why a visual feature holds depth (or other high-bit-depth) values rather than RGB, or ""."""
    info = ft.get("info") if isinstance(ft.get("info"), Mapping) else {}
    video_info = ft.get("video_info") if isinstance(ft.get("video_info"), Mapping) else {}
    # LeRobot's flag: canonical info.is_depth_map, legacy video.is_depth_map in info or video_info.
    for where, block, key in (("info", info, "is_depth_map"), ("info", info, "video.is_depth_map"),
                              ("video_info", video_info, "video.is_depth_map")):
        if block.get(key):
            return f"it is a depth map ({where}.{key} is true)"
    pix_fmt = str(info.get("video.pix_fmt") or video_info.get("video.pix_fmt") or "")
    if pix_fmt.startswith("gray") and pix_fmt != "gray":
        return f"it is single-channel video of more than 8 bits ({pix_fmt}), depth or thermal, not RGB"
    return ""


def _parse_features(
    features: Mapping[str, Any], info_path: Path, known: Mapping[str, FeatureSpec]
) -> tuple[dict[str, FeatureSpec], list[_Visual]]:
    """Numeric and camera features of info.json; ``known`` (from our sidecar) adds units."""
    numeric: dict[str, FeatureSpec] = {}
    visual: list[_Visual] = []
    for key, ft in features.items():
        if key in BOOKKEEPING or not isinstance(ft, Mapping):
            continue
        dtype = ft.get("dtype")
        try:
            if dtype in ("video", "image"):
                h, w = _image_size(key, ft, info_path)
                ours = known.get(IMAGE_PREFIX + camera_of(key))
                spec = image_feature(camera_of(key), h, w, unit=ours.unit if ours else "")
                visual.append(_Visual(key, str(dtype), spec, _depth_reason(ft)))
            elif _is_numeric(dtype):
                numeric[key] = _numeric_spec(key, ft, known.get(key))
        except (TypeError, ValueError) as e:
            raise ConversionError(f"{info_path}: feature {key!r} cannot be used ({e})") from e
    cams = [v.camera for v in visual]
    clash = sorted({c for c in cams if cams.count(c) > 1})
    if clash:
        raise ConversionError(f"{info_path}: several camera features map to camera name(s) {clash}")
    return numeric, visual


def _numeric_spec(key: str, ft: Mapping[str, Any], known: FeatureSpec | None) -> FeatureSpec:
    shape = tuple(int(s) for s in ft.get("shape") or (1,))
    dtype = str(ft["dtype"])
    if known is not None and known.dtype == dtype and math.prod(known.shape) == math.prod(shape):
        return known  # written by us: same values, with the units and shape we recorded
    return FeatureSpec(key, dtype, shape, names=flatten_names(ft.get("names"), shape))


def _load_sidecar(root: Path) -> dict[str, Any] | None:
    path = root / SIDECAR
    if not path.is_file():
        return None
    side = _read_json(path, "sidecar")
    found = side.get("format") if isinstance(side, dict) else type(side).__name__
    if found != SIDECAR_FORMAT:
        raise ConversionError(f"{path}: not a telecorder LeRobot sidecar (format {found!r}); "
                              "remove it to read the dataset without it")
    if not isinstance(side.get("episodes", {}), dict) or not isinstance(side.get("info", {}), dict):
        raise ConversionError(f"{path}: 'episodes' and 'info' must be JSON objects; remove the file or restore it")
    check_sidecar(side, str(path))
    return side


def _sidecar_features(side: Mapping[str, Any] | None) -> dict[str, FeatureSpec]:
    if not side:
        return {}
    out = {}
    for name, d in (side.get("info", {}).get("features") or {}).items():
        try:
            out[name] = FeatureSpec.from_dict(name, d)
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{SIDECAR}: feature {name!r} is malformed ({e})") from e
    return out


class LeRobotReader(FormatReader):
    """A LeRobot v2.0/v2.1/v3.0 dataset folder.

    ``tabular_only=True`` reads only the numeric part (no cameras in ``info``), for datasets
    whose videos are missing; ``cameras`` reads only those cameras (the others' videos are never
    opened). ``tolerance_s`` is how far a video frame may lie from a step's timestamp (default
    half a frame period). :meth:`missing_cameras` tells which episodes lack a camera's video.
    Rows whose timestamps run a constant offset of at most one frame off their video get their
    own frames by that offset (see :mod:`.lerobot_timing`; the episode's metadata says so under
    ``video_timestamp_offset_s``) unless ``strict_timestamps``.
    """

    format_name = "lerobot"

    def __init__(self, path: Path, *, tabular_only: bool = False, tolerance_s: float | None = None,
                 cameras: Iterable[str] | None = None, strict_timestamps: bool = False) -> None:
        super().__init__(path, cameras)
        self.tabular_only = bool(tabular_only)
        self.strict_timestamps = bool(strict_timestamps)
        self._times_cache: tuple[Path, np.ndarray] | None = None
        self._info_path = self.path / INFO_PATH
        self._meta = _read_json(self._info_path, "meta/info.json")
        self.version = self._check_version(self._meta)
        for key in ("data_path", "video_path"):  # checked once here: file lookups treat a failed fill as "no file"
            if isinstance(self._meta.get(key), str):
                try:
                    check_template(self._meta[key])
                except TemplateError as e:
                    raise ConversionError(f"{self._info_path}: '{key}' template cannot be used ({e})") from e
        self.fps, features = check_info(self._meta, str(self._info_path))
        self.tolerance_s = float(tolerance_s) if tolerance_s is not None else 1.0 / (2.0 * self.fps)
        self._sidecar = _load_sidecar(self.path)
        self._numeric, visual = _parse_features(features, self._info_path, _sidecar_features(self._sidecar))
        self.check_camera_selection([v.camera for v in visual], self._info_path)
        if self.tabular_only and self.camera_selection:
            raise ConversionError(f"{self.path}: tabular_only (--tabular-only) reads no camera, but cameras "
                                  f"{list(self.camera_selection)} were selected (--cameras); pass one or the other")
        self._visual = [] if self.tabular_only else [v for v in visual if self.wants_camera(v.camera)]
        self._refuse_unsupported(visual)
        self._episodes, self._episodes_file = self._load_episodes()
        self._tasks = self._load_tasks()
        self._cached: tuple[Path, pa.Table] | None = None
        self._columns_cache: tuple[tuple[Path, tuple[str, ...]], pa.Table] | None = None

    def _refuse_unsupported(self, declared: list[_Visual]) -> None:
        bad = next((v for v in self._visual if v.unsupported), None)
        if bad is None:
            return
        others = [v.camera for v in declared if v is not bad and not v.unsupported]
        how = (f"select the other cameras with --cameras {','.join(others)}" if others
               else "convert without cameras with --tabular-only")
        raise ConversionError(
            f"{self._info_path}: feature {bad.key!r} (camera {bad.camera!r}) cannot be converted: {bad.unsupported}, "
            f"and telecorder cameras hold 8-bit RGB frames; {how} (cameras=[...] in Python)"
        )

    def _check_version(self, meta: Any) -> str:
        version = meta.get("codebase_version") if isinstance(meta, dict) else None
        if version not in SUPPORTED_VERSIONS:
            raise ConversionError(
                f"{self._info_path}: codebase_version {version!r} is not supported; this reader handles "
                f"{', '.join(SUPPORTED_VERSIONS)} (convert the dataset with LeRobot's converter first)"
            )
        return str(version)

    @property
    def is_v3(self) -> bool:
        return self.version.startswith("v3")

    @classmethod
    def detect(cls, path: Path) -> bool:
        info = Path(path) / INFO_PATH
        if not info.is_file():
            return False
        try:
            with open(info, encoding="utf-8") as fh:
                version = json.load(fh).get("codebase_version", "")
        except (OSError, ValueError, AttributeError):
            return False
        return isinstance(version, str) and version.startswith(("v2", "v3"))

    # -- metadata --------------------------------------------------------------------------

    def _load_episodes(self) -> tuple[dict[int, dict[str, Any]], dict[int, Path]]:
        if not self.is_v3:
            path = self.path / "meta/episodes.jsonl"
            rows = self._index_rows(_read_jsonl(path))
            return rows, dict.fromkeys(rows, path)
        files = sorted((self.path / EPISODES_DIR).glob("*/*.parquet"))
        if not files:
            raise ConversionError(f"{self.path / EPISODES_DIR}: no episode metadata files (chunk-*/file-*.parquet)")
        episodes: dict[int, dict[str, Any]] = {}
        where: dict[int, Path] = {}
        for f in files:
            # Per-episode statistics can be most of the file and are not needed to read episodes.
            table = _read_parquet(f)
            table = table.select([c for c in table.column_names if not c.startswith("stats/")])
            try:
                rows = table.to_pylist()
            except (pa.ArrowException, UnicodeDecodeError) as e:
                raise ConversionError(f"{f}: cannot be read as Parquet ({e})") from e
            indexed = self._index_rows((f"{f} row {k}", row) for k, row in enumerate(rows))
            episodes.update(indexed)
            where.update(dict.fromkeys(indexed, f))
        return episodes, where

    @staticmethod
    def _index_rows(rows: Iterable[tuple[str, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
        return {check_episode_row(row, where): row for where, row in rows}

    def _load_tasks(self) -> dict[int, str]:
        if not self.is_v3:
            path = self.path / "meta/tasks.jsonl"
            if not path.is_file():
                return {}
            checked = (check_task_row(row, where) for where, row in _read_jsonl(path))
            return dict(t for t in checked if t is not None)
        path = self.path / TASKS_PATH
        if not path.is_file():
            return {}
        table = _read_parquet(path)
        text = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
        if text is None or "task_index" not in table.column_names:
            raise ConversionError(f"{path}: needs a task_index column and the task text (column or index 'task')")
        try:
            rows = zip(table["task_index"].to_pylist(), table[text].to_pylist(), strict=True)
        except (pa.ArrowException, UnicodeDecodeError) as e:
            raise ConversionError(f"{path}: cannot be read as Parquet ({e})") from e
        checked = (check_task_row({"task_index": i, "task": t}, f"{path} row {k}") for k, (i, t) in enumerate(rows))
        return dict(t for t in checked if t is not None)

    @property
    def info(self) -> DatasetInfo:
        side = (self._sidecar or {}).get("info", {})
        features = dict(self._numeric)
        features.update({v.spec.name: v.spec for v in self._visual})
        extra = dict(side.get("extra") or {})
        extra.setdefault("lerobot_codebase_version", self.version)
        return DatasetInfo(
            features=features,
            fps=self.fps,
            robot_type=str(self._meta.get("robot_type") or side.get("robot_type") or "unknown"),
            image_encoding=str(side.get("image_encoding", "jpeg")),
            jpeg_quality=int(side.get("jpeg_quality", 90)),
            total_episodes=len(self._episodes),
            total_frames=sum(int(r.get("length") or 0) for r in self._episodes.values()),
            extra=extra,
        )

    def episode_indices(self) -> list[int]:
        return sorted(self._episodes)

    def missing_cameras(self, episodes: Iterable[int]) -> dict[str, list[int]]:
        """Selected video cameras whose file is absent for some of ``episodes`` (a stat per file)."""
        out: dict[str, list[int]] = {}
        exists: dict[Path, bool] = {}
        for vis in self._visual:
            if vis.stored != "video":
                continue
            lacking = []
            for index in episodes:
                row = self._episodes.get(index)
                if row is None:
                    continue
                try:
                    path = self._video_path(vis, index, row)
                except ConversionError:  # v3 episode metadata without this camera's file: no video
                    lacking.append(index)
                    continue
                if path not in exists:
                    exists[path] = path.is_file()
                if not exists[path]:
                    lacking.append(index)
            if lacking:
                out[vis.camera] = lacking
        return out

    # -- lazy access for the PyTorch loaders: columns and frames, never a whole episode -------

    def episode_length(self, index: int) -> int | None:
        """Steps of episode ``index`` as the episode metadata says (None where it does not say)."""
        length = self._row(index).get("length")
        return None if length is None else int(length)

    def episode_columns(self, index: int, names: Iterable[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Numeric columns ``names`` plus ``timestamp`` of one episode, and its metadata.

        Only those columns are read from the Parquet file (no image bytes, no video); a file
        shared by several episodes is read once and kept for the next one.
        """
        row = self._row(index)
        names = list(names)
        unknown = [n for n in names if n not in self._numeric]
        if unknown:
            raise ConversionError(f"{self._info_path}: no numeric feature(s) {unknown} (has {sorted(self._numeric)})")
        path = self._data_path(index, row)
        columns = [*BOOKKEEPING, *names]
        key = (path, tuple(columns))
        if self._columns_cache is None or self._columns_cache[0] != key:
            present = _parquet_column_names(path)
            self._columns_cache = (key, _read_parquet(path, columns=[c for c in columns if c in present]))
        table = self._columns_cache[1]
        if self.is_v3:
            if "episode_index" not in table.column_names:
                raise ConversionError(f"{path}: column 'episode_index' is missing; cannot find episode {index}'s rows")
            table = table.filter(pc.equal(table["episode_index"], index))
        if row.get("length") is not None and int(row["length"]) != table.num_rows:
            raise ConversionError(f"{path}: episode {index} has {table.num_rows} rows but "
                                  f"{self._episodes_file[index]} says length {row['length']}")
        out = {name: _column_values(table, name, self._numeric[name].shape, self._numeric[name].dtype, path)
               for name in names}
        out["timestamp"] = _column_values(table, "timestamp", (), "float64", path)
        return out, self._metadata(index, row, table)

    def data_file(self, index: int) -> Path:
        """The Parquet file holding episode ``index``'s rows."""
        return self._data_path(index, self._row(index))

    def camera_storage(self, camera: str) -> tuple[str, FeatureSpec]:
        """How ``camera`` is stored, ``"video"`` (mp4 files) or ``"image"`` (bytes in the rows), and its spec."""
        vis = next((v for v in self._visual if v.camera == camera), None)
        if vis is None:
            raise ConversionError(f"{self._info_path}: no camera {camera!r} (has {[v.camera for v in self._visual]})")
        return vis.stored, vis.spec

    def video_file(self, camera: str, index: int) -> tuple[Path, float]:
        """The mp4 holding ``camera``'s frames of episode ``index`` and the time (s) the episode starts in it."""
        vis = next(v for v in self._visual if v.camera == camera)
        row = self._row(index)
        path = self._video_path(vis, index, row)
        if not path.is_file():
            raise ConversionError(f"{path}: video of camera {camera!r} for episode {index} is missing; "
                                  "leave the camera out (cameras=[...])")
        start = float(self._episode_field(index, row, f"videos/{vis.key}/from_timestamp")) if self.is_v3 else 0.0
        return path, start

    def encoded_images(self, camera: str, index: int) -> list[bytes]:
        """The stored image bytes of ``camera`` (an ``image`` feature) for each step of episode ``index``."""
        vis = next(v for v in self._visual if v.camera == camera)
        row = self._row(index)
        path = self._data_path(index, row)
        table = _read_parquet(path, columns=["episode_index", vis.key])
        if self.is_v3:
            table = table.filter(pc.equal(table["episode_index"], index))
        return _image_bytes(table, vis.key, path, self.path)

    def _row(self, index: int) -> dict[str, Any]:
        if index not in self._episodes:
            raise ConversionError(f"{self.path}: no episode {index} (it has {len(self._episodes)} episodes)")
        return self._episodes[index]

    # -- one episode -----------------------------------------------------------------------

    def read_episode(self, index: int) -> Episode:
        if index not in self._episodes:
            raise ConversionError(f"{self.path}: no episode {index} (it has {len(self._episodes)} episodes)")
        row = self._episodes[index]
        table, data_file = self._episode_table(index, row)
        n = table.num_rows
        if row.get("length") is not None and int(row["length"]) != n:
            raise ConversionError(
                f"{data_file}: episode {index} has {n} rows but {self._episodes_file[index]} "
                f"says length {row['length']}"
            )
        timestamp = _column_values(table, "timestamp", (), "float64", data_file)
        data = {name: _column_values(table, name, spec.shape, spec.dtype, data_file)
                for name, spec in self._numeric.items()}
        offsets: dict[str, float] = {}
        images = {v.camera: self._frames(v, index, row, table, timestamp, data_file, offsets) for v in self._visual}
        episode = Episode(index=index, timestamp=timestamp, data=data, images=images,
                          metadata=self._metadata(index, row, table))
        if offsets:
            episode.metadata[OFFSET_KEY] = offsets
        self._restore_timing(episode)
        return episode

    def _data_path(self, index: int, row: Mapping[str, Any]) -> Path:
        if not self.is_v3:
            chunk = index // chunks_size(self._meta)
            return self._templated_path("data_path", episode_chunk=chunk, episode_index=index)
        chunk, file = (self._episode_field(index, row, f"data/{k}") for k in ("chunk_index", "file_index"))
        return self._templated_path("data_path", chunk_index=chunk, file_index=file)

    def _episode_table(self, index: int, row: Mapping[str, Any]) -> tuple[pa.Table, Path]:
        path = self._data_path(index, row)
        if not self.is_v3:
            return self._read_frames(path), path
        if self._cached is None or self._cached[0] != path:
            self._cached = (path, self._read_frames(path))  # consecutive episodes share a file
        table = self._cached[1]
        if "episode_index" not in table.column_names:
            raise ConversionError(f"{path}: column 'episode_index' is missing; cannot find episode {index}'s rows")
        return table.filter(pc.equal(table["episode_index"], index)), path

    def _read_frames(self, path: Path) -> pa.Table:
        """The columns this reader uses: image bytes of cameras not selected are not even read."""
        wanted = [*BOOKKEEPING, *self._numeric, *(v.key for v in self._visual if v.stored == "image")]
        names = _parquet_column_names(path)
        # Absent columns are reported by name where they are needed.
        return _read_parquet(path, columns=[c for c in wanted if c in names])

    def _templated_path(self, key: str, **fields: Any) -> Path:
        """A file named by an ``info.json`` path template; it must lie inside the dataset."""
        template = self._meta.get(key)
        if not isinstance(template, str):
            raise ConversionError(f"{self._info_path}: '{key}' template is missing")
        try:
            relative = fill_template(template, fields)
        except TemplateError as e:
            shown = template if len(template) <= 80 else template[:80] + "..."
            raise ConversionError(f"{self._info_path}: '{key}' template {shown!r} cannot be filled ({e})") from e
        return join_inside(self.path, relative, source=f"{self._info_path} '{key}'", error=ConversionError)

    def _episode_field(self, index: int, row: Mapping[str, Any], name: str) -> Any:
        if row.get(name) is None:
            raise ConversionError(f"{self._episodes_file[index]}: episode {index} has no '{name}'")
        return row[name]

    def _frames(
        self, vis: _Visual, index: int, row: Mapping[str, Any], table: pa.Table, timestamp: np.ndarray, data_file: Path,
        offsets: dict[str, float],
    ) -> list[np.ndarray]:
        frames = (self._video_frames(vis, index, row, timestamp, offsets) if vis.stored == "video"
                  else _image_column(table, vis.key, data_file, self.path))
        want = vis.spec.shape
        bad = next((f.shape for f in frames if f.shape != want), None)
        if bad is not None:
            raise ConversionError(
                f"{data_file if vis.stored == 'image' else self._video_path(vis, index, row)}: frames of camera "
                f"{vis.camera!r} are {bad[1]}x{bad[0]} but {self._info_path} declares {want[1]}x{want[0]}"
            )
        return frames

    def _video_path(self, vis: _Visual, index: int, row: Mapping[str, Any]) -> Path:
        if not self.is_v3:
            chunk = index // chunks_size(self._meta)
            return self._templated_path("video_path", episode_chunk=chunk, video_key=vis.key, episode_index=index)
        chunk, file = (self._episode_field(index, row, f"videos/{vis.key}/{k}") for k in ("chunk_index", "file_index"))
        return self._templated_path("video_path", video_key=vis.key, chunk_index=chunk, file_index=file)

    def _video_frames(
        self, vis: _Visual, index: int, row: Mapping[str, Any], timestamp: np.ndarray, offsets: dict[str, float]
    ) -> list[np.ndarray]:
        path = self._video_path(vis, index, row)
        if not path.is_file():
            raise ConversionError(
                f"{path}: video of camera {vis.camera!r} for episode {index} is missing; leave the camera out "
                "(--cameras with the others, or --skip-missing-cameras), skip such episodes (--skip-bad), or "
                "convert only the numeric data (--tabular-only; tabular_only=True or cameras=[...] in Python)"
            )
        start = float(self._episode_field(index, row, f"videos/{vis.key}/from_timestamp")) if self.is_v3 else 0.0
        context = f"episode {index}, camera {vis.camera!r}"
        offset = self.video_offset(vis.camera, index, timestamp)
        if offset:
            offsets[vis.camera] = offset
        return decode_frames(path, start + timestamp - offset, self.tolerance_s, context=context,
                             expected_hw=(int(vis.spec.shape[0]), int(vis.spec.shape[1])))

    def video_offset(self, camera: str, index: int, timestamp: np.ndarray) -> float:
        """Seconds to subtract from the rows' times to find each row's own frame of ``camera``:
        0.0 when the timestamps match the video (or ``strict_timestamps``), else the constant
        offset of at most one frame period that makes every row find one (see :mod:`.lerobot_timing`)."""
        if self.strict_timestamps:
            return 0.0
        vis = next(v for v in self._visual if v.camera == camera)
        row = self._row(index)
        path = self._video_path(vis, index, row)
        start = float(self._episode_field(index, row, f"videos/{vis.key}/from_timestamp")) if self.is_v3 else 0.0
        cached = self._times_cache
        if cached is None or cached[0] != path:
            cached = self._times_cache = (path, frame_times(path))  # consecutive v3 episodes share a file
        times = episode_frame_times(cached[1], row, vis.key, self.is_v3, self.tolerance_s)
        return find_offset(start + np.asarray(timestamp, np.float64), times, self.fps, self.tolerance_s) or 0.0

    def _metadata(self, index: int, row: Mapping[str, Any], table: pa.Table) -> dict[str, Any]:
        tasks = row.get("tasks") or []
        tasks = [tasks] if isinstance(tasks, str) else [str(t) for t in tasks]
        if not tasks and "task_index" in table.column_names and table.num_rows:
            first = table["task_index"][0].as_py()
            tasks = [self._tasks[first]] if first in self._tasks else []
        meta: dict[str, Any] = {"robot_type": self._meta.get("robot_type")}
        if tasks:
            meta.update(task=tasks[0], language_instruction=tasks[0])
        if len(tasks) > 1:
            meta["tasks"] = tasks
        if row.get("success") is not None:
            meta["success"] = bool(row["success"])
        side = ((self._sidecar or {}).get("episodes") or {}).get(str(index)) or {}
        meta.update(side.get("metadata") or {})
        return meta

    def _restore_timing(self, ep: Episode) -> None:
        """Recorded times from our sidecar; without it, the frame grid LeRobot keeps."""
        table = self._timing_rows(ep)
        if table is not None:
            ep.timestamp = _column_values(table, "timestamp", (), "float64", self._timing_path)
            if _complete(table, "tick_lateness"):
                ep.tick_lateness = _column_values(table, "tick_lateness", (), "float32", self._timing_path)
            for v in self._visual:
                for column, target, dtype in (("image_timestamp", ep.image_timestamp, "float64"),
                                              ("frame_index", ep.frame_index, "int64")):
                    name = f"{column}.{v.camera}"
                    if _complete(table, name):
                        target[v.camera] = _column_values(table, name, (), dtype, self._timing_path)
        for v in self._visual:
            ep.image_timestamp.setdefault(v.camera, ep.timestamp.copy())
            ep.frame_index.setdefault(v.camera, np.arange(len(ep), dtype=np.int64))

    @property
    def _timing_path(self) -> Path | None:
        timing = (self._sidecar or {}).get("timing_file")
        if not isinstance(timing, str):
            return None
        path = join_inside(self.path, timing, source=f"{self.path / SIDECAR} 'timing_file'", error=ConversionError)
        return path if path.is_file() else None

    def _timing_rows(self, ep: Episode) -> pa.Table | None:
        path = self._timing_path
        if path is None:
            return None
        table = _read_parquet(path, filters=[("episode_index", "=", ep.index)])
        if table.num_rows != len(ep):
            raise ConversionError(
                f"{path}: {table.num_rows} timing rows for episode {ep.index}, which has {len(ep)} steps; "
                f"it belongs to another dataset: remove it and {SIDECAR}"
            )
        return table


def _complete(table: pa.Table, name: str) -> bool:
    """Whether the sidecar recorded ``name`` for every step (nulls mean the source had none)."""
    return name in table.column_names and table[name].null_count == 0


def _column_values(table: pa.Table, name: str, shape: tuple[int, ...], dtype: str, path: Path) -> np.ndarray:
    """Column ``name`` as an (N, *shape) array: scalars, fixed or variable lists, nested lists."""
    if name not in table.column_names:
        raise ConversionError(
            f"{path}: column {name!r} is missing (meta/info.json declares it); the file is incomplete or "
            "from another dataset"
        )
    values: pa.Array = table[name].combine_chunks()
    while pa.types.is_list(values.type) or pa.types.is_large_list(values.type) or \
            pa.types.is_fixed_size_list(values.type):
        values = values.flatten()
    n, per_row = table.num_rows, math.prod(shape)
    if len(values) != n * per_row or values.null_count:
        raise ConversionError(
            f"{path}: column {name!r} holds {len(values)} values ({values.null_count} null) in {n} rows; "
            f"meta/info.json declares shape {list(shape) or [1]}"
        )
    try:
        return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape((n, *shape))
    except (ValueError, TypeError, pa.ArrowException) as e:
        raise ConversionError(
            f"{path}: column {name!r} holds {values.type} values that are not {dtype} numbers, as meta/info.json "
            f"declares ({e}); fix its dtype there, or leave it out of 'features'"
        ) from e


def _image_column(table: pa.Table, key: str, path: Path, root: Path) -> list[np.ndarray]:
    """Frames stored in the rows (LeRobot ``image`` dtype: struct of PNG/JPEG bytes and a path)."""
    frames = []
    for step, blob in enumerate(_image_bytes(table, key, path, root)):
        if step == 0 and _high_bit_depth(blob):
            raise ConversionError(
                f"{path}: column {key!r} holds {_high_bit_depth(blob)} images (depth?), which 8-bit RGB frames "
                "would truncate; leave this camera out with --cameras (cameras=[...] in Python), or flag it in "
                "meta/info.json with info.is_depth_map"
            )
        try:
            frames.append(decode_image(blob, where=f"{path} column {key!r} step {step}"))
        except DatasetError as e:
            raise ConversionError(str(e)) from e
    return frames


def _image_bytes(table: pa.Table, key: str, path: Path, root: Path) -> list[bytes]:
    """The stored image file of each row of an ``image`` column (inline bytes, or a file it names)."""
    if key not in table.column_names:
        raise ConversionError(f"{path}: column {key!r} is missing (meta/info.json declares it as an image)")
    col = table[key].combine_chunks()
    if pa.types.is_struct(col.type):
        blobs = col.field("bytes").to_pylist() if col.type.get_field_index("bytes") >= 0 else [None] * len(col)
        paths = col.field("path").to_pylist() if col.type.get_field_index("path") >= 0 else [None] * len(col)
    else:
        blobs, paths = col.to_pylist(), [None] * len(col)
    out = []
    for step, (blob, rel) in enumerate(zip(blobs, paths, strict=True)):
        if blob is None and rel:
            image = join_inside(root, rel, source=f"{path} column {key!r} step {step}", error=ConversionError)
            blob = _read_bytes(image, path, key, step)
        if blob is None:
            raise ConversionError(f"{path}: column {key!r} step {step} holds neither image bytes nor a path")
        out.append(blob)
    return out


def _high_bit_depth(blob: bytes) -> str:
    """What a stored image is when more than 8 bits a sample ("16-bit PNG", "TIFF"), else ""."""
    head = bytes(blob[:26])
    # PNG: 8-byte signature, then the IHDR chunk whose bit depth is byte 24.
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) > 24 and head[24] > 8:
        return f"{head[24]}-bit PNG"
    if head[:4] in (b"II*\x00", b"MM\x00*"):  # LeRobot's depth frames are TIFF files
        return "TIFF"
    return ""


def _read_bytes(image: Path, path: Path, key: str, step: int) -> bytes:
    try:
        return image.read_bytes()
    except OSError as e:
        raise ConversionError(f"{image}: image of column {key!r} step {step} in {path} cannot be read ({e})") from e


# -- writing -------------------------------------------------------------------------------


class _FileSeq:
    """LeRobot's file numbering: chunk-NNN/file-NNN, a new chunk every ``chunks_size`` files."""

    def __init__(self, chunks_size: int) -> None:
        self.chunks_size = chunks_size
        self.chunk = self.file = 0

    def advance(self) -> None:
        if self.file == self.chunks_size - 1:
            self.chunk, self.file = self.chunk + 1, 0
        else:
            self.file += 1


class _DataFiles:
    """Frame rows in parquet files; an episode is never split, a file closes past the size limit."""

    def __init__(self, root: Path, limit_mb: float, chunks_size: int) -> None:
        self.root, self.limit = root, limit_mb * 1024**2
        self.seq = _FileSeq(chunks_size)
        self._writer: pq.ParquetWriter | None = None
        self._bytes = 0

    def write(self, table: pa.Table) -> tuple[int, int]:
        if self._writer is not None and self._bytes >= self.limit:
            self.close()
            self.seq.advance()
        if self._writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self.seq.chunk, file_index=self.seq.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, table.schema)
            self._bytes = 0
        self._writer.write_table(table)
        self._bytes += table.nbytes  # uncompressed, as LeRobot measures its files
        return self.seq.chunk, self.seq.file

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _VideoFiles:
    """One camera's mp4 files: episodes back to back, a new file past the size limit."""

    def __init__(self, root: Path, key: str, shape: tuple[int, ...], fps: float, limit_mb: float,
                 chunks_size: int, encoder: Mapping[str, Any]) -> None:
        self.root, self.key, self.shape, self.fps = root, key, shape, fps
        self.limit = limit_mb * 1024**2
        self.encoder_options = dict(encoder)
        self.seq = _FileSeq(chunks_size)
        self._enc: VideoEncoder | None = None

    def add_episode(self, frames: list[np.ndarray]) -> dict[str, Any]:
        if self._enc is not None and self._enc.size_bytes() >= self.limit:
            self.close()
            self.seq.advance()
        if self._enc is None:
            name = VIDEO_PATH.format(video_key=self.key, chunk_index=self.seq.chunk, file_index=self.seq.file)
            path = self.root / name
            h, w = self.shape[:2]
            self._enc = VideoEncoder(path, w, h, self.fps, **self.encoder_options)
        start = self._enc.duration_s
        for frame in frames:
            self._enc.append(frame)
        return {
            f"videos/{self.key}/chunk_index": self.seq.chunk,
            f"videos/{self.key}/file_index": self.seq.file,
            f"videos/{self.key}/from_timestamp": start,
            f"videos/{self.key}/to_timestamp": self._enc.duration_s,
        }

    def close(self) -> None:
        if self._enc is not None:
            enc, self._enc = self._enc, None
            enc.close()


def _arrow_column(values: np.ndarray, spec: FeatureSpec, n: int) -> pa.Array:
    if math.prod(spec.shape) == 1 and len(spec.shape) <= 1:
        return pa.array(values.reshape(n))  # LeRobot keeps shape (1,) features as scalars
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), spec.shape[0])


def _hf_feature(spec_dtype: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """The Hugging Face `datasets` description LeRobot's own parquet files carry."""
    value = {"dtype": spec_dtype, "_type": "Value"}
    if math.prod(shape) == 1 and len(shape) <= 1:
        return value
    return {"feature": value, "length": shape[0], "_type": "Sequence"}


def _lerobot_summary(stats: FeatureStats, count: int, image: bool = False) -> dict[str, Any]:
    """LeRobot's stats layout: lists shaped like a row, images per channel as (3, 1, 1)."""
    values = {"min": stats.min, "max": stats.max, "mean": stats.mean, "std": stats.std}
    values.update({k: stats.quantile(q) for k, q in QUANTILES.items()})
    shape = (3, 1, 1) if image else (-1,)
    out = {k: np.asarray(v, dtype=np.float64).reshape(shape).tolist() for k, v in values.items()}
    out["count"] = [int(count)]
    return out


def _image_sample(frames: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """A few frames, downsampled, as (pixels, 3) values in [0, 1] like LeRobot's image stats.

    Returns the pixels and how many frames they come from (LeRobot's ``count`` for images).
    """
    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), _STATS_FRAMES)).astype(int))
    h, w = frames[0].shape[:2]
    step = max(1, math.ceil(max(h, w) / _STATS_SIDE))
    sample = np.stack([frames[i][::step, ::step] for i in picks])
    return sample.reshape(-1, 3).astype(np.float64) / 255.0, len(picks)


def _option(options: Mapping[str, Any], name: str, cast: type, default: Any) -> Any:
    """A numeric writer option (command lines pass text), positive, or ``default`` when absent."""
    if options.get(name) is None:
        return default
    try:
        value = cast(options[name])
    except (TypeError, ValueError) as e:
        raise ConversionError(
            f"LeRobot writer: option {name}={options[name]!r} is not a number ({WRITER_OPTIONS[name]})"
        ) from e
    if value <= 0 and name != "crf":
        raise ConversionError(f"LeRobot writer: option {name} must be positive, not {value}")
    return value


def _flag(options: Mapping[str, Any], name: str) -> bool:
    """A yes/no writer option (command lines pass text)."""
    value = options.get(name, False)
    if isinstance(value, str):
        if value.strip().lower() not in ("1", "true", "yes", "0", "false", "no", ""):
            raise ConversionError(f"LeRobot writer: option {name}={value!r} is not true or false")
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _tasks_table(tasks: Mapping[str, int]) -> pa.Table:
    """meta/tasks.parquet as pandas writes LeRobot's DataFrame(task_index, index=task)."""
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()),
                      "task": pa.array(list(tasks), pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "telecorder"},
    }
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


class LeRobotWriter(FormatWriter):
    """Writes a LeRobot v3.0 dataset; options are listed in ``WRITER_OPTIONS``."""

    format_name = "lerobot"

    def __init__(self, path: Path, info: DatasetInfo, **options: Any) -> None:
        super().__init__(path, info, **options)
        unknown = sorted(set(options) - set(WRITER_OPTIONS))
        if unknown:
            raise ConversionError(f"LeRobot writer: unknown option(s) {unknown}; it takes: "
                                  + "; ".join(f"{k}: {v}" for k, v in WRITER_OPTIONS.items()))
        self.codec = str(options.get("codec", "h264"))
        if self.codec not in CODECS:
            raise ConversionError(f"LeRobot writer: codec {self.codec!r} is not one of {', '.join(CODECS)}")
        self.chunks_size = _option(options, "chunks_size", int, 1000)
        self.data_mb = _option(options, "data_file_size_mb", float, 100.0)
        self.video_mb = _option(options, "video_file_size_mb", float, 500.0)
        self.default_task = str(options.get("default_task", ""))
        self.part = _flag(options, "part")
        self._check_schema(info)
        (self.path / "meta").mkdir(parents=True, exist_ok=True)
        encoder = {"codec": self.codec, "crf": _option(options, "crf", int, None),
                   "preset": options.get("preset"), "gop": _option(options, "gop", int, DEFAULT_GOP),
                   "threads": _option(options, "encode_threads", int, None)}
        self._data = _DataFiles(self.path, self.data_mb, self.chunks_size)
        self._videos = {f.name: _VideoFiles(self.path, f.name, f.shape, info.fps, self.video_mb, self.chunks_size,
                                            encoder) for f in info.image_features}
        self._timing: pq.ParquetWriter | None = None
        self._rows: list[dict[str, Any]] = []
        self._side_episodes: dict[str, Any] = {}
        self._tasks: dict[str, int] = {}
        self._stats: dict[str, FeatureStats] = {}
        self._counts: dict[str, int] = {}
        self._frames = 0
        self._closed = False

    def _check_schema(self, info: DatasetInfo) -> None:
        for f in info.numeric_features:
            if len(f.shape) > 1:
                raise ConversionError(f"LeRobot writer: feature {f.name!r} has shape {f.shape}; LeRobot features "
                                      "are 1-D, flatten it first")
        for f in info.image_features:
            if f.shape[0] % 2 or f.shape[1] % 2:
                raise ConversionError(f"LeRobot writer: camera {f.camera!r} is {f.shape[1]}x{f.shape[0]}; video "
                                      "needs even width and height, resize the images (e.g. --image-size)")

    # -- one episode -----------------------------------------------------------------------

    def write_episode(self, episode: Episode) -> None:
        if self._closed:
            raise ConversionError(f"{self.path}: the LeRobot writer is closed")
        data = self._validated(episode)
        n, ep_index = len(episode), len(self._rows)
        task = self._task_of(episode)
        task_index = self._tasks.setdefault(task, len(self._tasks))
        start = self._frames
        table = self._frame_table(data, n, ep_index, start, task_index)
        chunk, file = self._data.write(table)
        row: dict[str, Any] = {
            "episode_index": ep_index, "tasks": [task], "length": n,
            "data/chunk_index": chunk, "data/file_index": file,
            "dataset_from_index": start, "dataset_to_index": start + n,
        }
        for name, files in self._videos.items():
            row.update(files.add_episode(episode.images[self.info.features[name].camera]))
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        row.update(self._episode_stats(table, episode))
        self._rows.append(row)
        self._write_timing(episode, ep_index)
        self._side_episodes[str(ep_index)] = {"source_index": int(episode.index),
                                              "metadata": _jsonable(episode.metadata)}
        self._frames += n

    def _validated(self, ep: Episode) -> dict[str, np.ndarray]:
        n = len(ep)
        where = f"{self.path}: episode {ep.index}"
        if n == 0:
            raise ConversionError(f"{where} has no steps; LeRobot cannot hold an empty episode")
        out = {}
        for spec in self.info.numeric_features:
            if spec.name not in ep.data:
                raise ConversionError(f"{where} has no feature {spec.name!r}, which the dataset declares")
            arr = np.asarray(ep.data[spec.name])
            if arr.shape != (n, *spec.shape):
                raise ConversionError(f"{where}: feature {spec.name!r} is {arr.shape}, expected {(n, *spec.shape)}")
            out[spec.name] = arr.astype(spec.dtype, copy=False)
        for spec in self.info.image_features:
            frames = ep.images.get(spec.camera)
            if frames is None or len(frames) != n:
                got = "no frames" if frames is None else f"{len(frames)} frames"
                raise ConversionError(f"{where}: camera {spec.camera!r} has {got} for {n} steps")
            bad = next((f.shape for f in frames if f.shape != spec.shape or f.dtype != np.uint8), None)
            if bad is not None:
                raise ConversionError(f"{where}: camera {spec.camera!r} has a {bad} frame, expected uint8 {spec.shape}")
        return out

    def _task_of(self, ep: Episode) -> str:
        # The language instruction is what a VLA is conditioned on; a short task id is the fallback.
        for key in ("language_instruction", "task"):
            value = ep.metadata.get(key)
            if isinstance(value, str) and value.strip():
                return value
        return self.default_task

    def _frame_table(self, data: Mapping[str, np.ndarray], n: int, ep_index: int, start: int,
                     task_index: int) -> pa.Table:
        cols = {spec.name: _arrow_column(data[spec.name], spec, n) for spec in self.info.numeric_features}
        frame_index = np.arange(n, dtype=np.int64)
        # LeRobot requires timestamps exactly frame_index / fps (it checks the spacing and finds
        # video frames by them); recorded times go to the timing sidecar.
        cols["timestamp"] = pa.array((frame_index / self.info.fps).astype(np.float32))
        cols["frame_index"] = pa.array(frame_index)
        cols["episode_index"] = pa.array(np.full(n, ep_index, dtype=np.int64))
        cols["index"] = pa.array(np.arange(start, start + n, dtype=np.int64))
        cols["task_index"] = pa.array(np.full(n, task_index, dtype=np.int64))
        hf = {s.name: _hf_feature(s.dtype, s.shape) for s in self.info.numeric_features}
        hf.update({"timestamp": _hf_feature("float32", (1,))})
        hf.update({k: _hf_feature("int64", (1,)) for k in BOOKKEEPING[1:]})
        table = pa.table(cols)
        return table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": hf}})})

    def _episode_stats(self, table: pa.Table, ep: Episode) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in table.column_names:
            spec = self.info.features.get(name)
            shape = spec.shape if spec is not None else ()
            values = _column_values(table, name, shape, "float64", self.path)
            out.update(self._add_stats(name, FeatureStats.from_array(values, name=name), len(ep)))
        for spec in self.info.image_features:
            sample, frames = _image_sample(ep.images[spec.camera])
            out.update(self._add_stats(spec.name, FeatureStats.from_array(sample, name=spec.name), frames, True))
        return out

    def _add_stats(self, name: str, stats: FeatureStats, count: int, image: bool = False) -> dict[str, Any]:
        self._stats[name] = self._stats[name].merge(stats) if name in self._stats else stats
        self._counts[name] = self._counts.get(name, 0) + count
        return {f"stats/{name}/{k}": v for k, v in _lerobot_summary(stats, count, image).items()}

    def _write_timing(self, ep: Episode, ep_index: int) -> None:
        n, cams = len(ep), self.info.cameras
        fields = [("episode_index", pa.int64()), ("timestamp", pa.float64()), ("tick_lateness", pa.float32())]
        fields += [(f"image_timestamp.{c}", pa.float64()) for c in cams]
        fields += [(f"frame_index.{c}", pa.int64()) for c in cams]
        schema = pa.schema(fields)

        def col(values: Any, typ: pa.DataType) -> pa.Array:
            if values is None or len(values) != n:
                return pa.nulls(n, typ)
            return pa.array(np.asarray(values), typ)

        arrays = [col(np.full(n, ep_index), pa.int64()), col(ep.timestamp, pa.float64()),
                  col(ep.tick_lateness, pa.float32())]
        arrays += [col(ep.image_timestamp.get(c), pa.float64()) for c in cams]
        arrays += [col(ep.frame_index.get(c), pa.int64()) for c in cams]
        if self._timing is None:
            self._timing = pq.ParquetWriter(self.path / TIMING_PATH, schema)
        # One row group per episode, so the reader's filter on episode_index skips the rest.
        self._timing.write_table(pa.Table.from_arrays(arrays, schema=schema))

    # -- finishing -------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for files in self._videos.values():
                files.close()
        finally:
            self._data.close()
            if self._timing is not None:
                self._timing.close()
        if self._rows:
            path = self.path / EPISODES_PATH.format(chunk_index=0, file_index=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(self._rows), path)
        pq.write_table(_tasks_table(self._tasks), self.path / TASKS_PATH)
        images = {f.name for f in self.info.image_features}
        stats = {k: _lerobot_summary(s, self._counts[k], k in images) for k, s in self._stats.items()}
        write_json_atomic(self.path / STATS_PATH, stats)
        write_json_atomic(self.path / INFO_PATH, self._info_json())
        write_json_atomic(self.path / SIDECAR, self._sidecar_json())
        if self.part:
            part_stats = {k: s for k, s in self._stats.items() if k not in GLOBAL_COLUMNS}
            write_json_atomic(self.path / PART_STATS, DatasetStats(part_stats).to_json_dict())

    def _info_json(self) -> dict[str, Any]:
        fps = int(self.info.fps) if float(self.info.fps).is_integer() else self.info.fps
        features: dict[str, Any] = {}
        for spec in self.info.numeric_features:
            features[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape) or [1],
                                   "names": list(spec.names) if spec.names else None}
        for spec in self.info.image_features:
            h, w = spec.shape[:2]
            features[spec.name] = {
                "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                "info": {"video.height": h, "video.width": w, "video.codec": self.codec, "video.pix_fmt": "yuv420p",
                         "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False},
            }
        features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        features.update({k: {"dtype": "int64", "shape": [1], "names": None} for k in BOOKKEEPING[1:]})
        return {
            "codebase_version": WRITTEN_VERSION,
            "robot_type": self.info.robot_type,
            "total_episodes": len(self._rows),
            "total_frames": self._frames,
            "total_tasks": len(self._tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_mb,
            "video_files_size_in_mb": self.video_mb,
            "fps": fps,
            "splits": {"train": f"0:{len(self._rows)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self._videos else None,
            "features": features,
        }

    def _sidecar_json(self) -> dict[str, Any]:
        return {
            "format": SIDECAR_FORMAT,
            "version": SIDECAR_VERSION,
            "about": "telecorder data that LeRobot has no place for; LeRobot ignores this file",
            "info": _jsonable(self.info.to_dict()),
            "timing_file": TIMING_PATH if self._timing is not None else None,
            "episodes": self._side_episodes,
        }


def merge_parts(work: Path, parts: list[Path], info: DatasetInfo, options: Mapping[str, Any],
                stats: DatasetStats) -> None:
    """One LeRobot v3.0 dataset in ``work`` from parts written with ``part=True`` (see :mod:`.parts`)."""
    # Imported here: the merge uses this module's layout helpers, so a top-level import would be circular.
    from .merge import merge_parts as merge

    merge(work, parts, info, options, stats)
