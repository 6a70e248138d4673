"""Writing LeRobot v3.0 datasets, what lerobot 0.4 loads (layout in :mod:`.schema`).

Frames go to ``data/`` Parquet files and ``videos/`` mp4s, many episodes a file; ``meta/``
(episodes, tasks, stats, info.json) is written on close. What LeRobot has no place for goes to
the telecorder sidecar and ``meta/telecorder_timing.parquet``. With ``part=True`` the writer
also leaves the mergeable statistics that :mod:`.merge` needs to join parts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...atomic import write_json_atomic
from ...datasets.episode_file import Episode
from ...datasets.features import DatasetInfo, FeatureSpec
from ...datasets.stats import DatasetStats, FeatureStats
from ..base import SIDECAR, ConversionError, FormatWriter
from ..parts import PART_STATS
from ..video import CODECS, DEFAULT_GOP, VideoEncoder
from .schema import (
    BOOKKEEPING,
    DATA_PATH,
    EPISODES_PATH,
    GLOBAL_COLUMNS,
    INFO_PATH,
    QUANTILES,
    SIDECAR_FORMAT,
    SIDECAR_VERSION,
    STATS_PATH,
    TASKS_PATH,
    TIMING_PATH,
    VIDEO_PATH,
    WRITTEN_VERSION,
)
from .tables import column_values

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


class FileSeq:
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
        self.seq = FileSeq(chunks_size)
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
        self.seq = FileSeq(chunks_size)
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


def lerobot_summary(stats: FeatureStats, count: int, image: bool = False) -> dict[str, Any]:
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


def tasks_table(tasks: Mapping[str, int]) -> pa.Table:
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
            values = column_values(table, name, shape, "float64", self.path)
            out.update(self._add_stats(name, FeatureStats.from_array(values, name=name), len(ep)))
        for spec in self.info.image_features:
            sample, frames = _image_sample(ep.images[spec.camera])
            out.update(self._add_stats(spec.name, FeatureStats.from_array(sample, name=spec.name), frames, True))
        return out

    def _add_stats(self, name: str, stats: FeatureStats, count: int, image: bool = False) -> dict[str, Any]:
        self._stats[name] = self._stats[name].merge(stats) if name in self._stats else stats
        self._counts[name] = self._counts.get(name, 0) + count
        return {f"stats/{name}/{k}": v for k, v in lerobot_summary(stats, count, image).items()}

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
        pq.write_table(tasks_table(self._tasks), self.path / TASKS_PATH)
        images = {f.name for f in self.info.image_features}
        stats = {k: lerobot_summary(s, self._counts[k], k in images) for k, s in self._stats.items()}
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
