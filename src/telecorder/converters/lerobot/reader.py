"""Reading LeRobot v2.0, v2.1 and v3.0 datasets (layouts in :mod:`.schema`).

Per frame LeRobot keeps what a policy trains on. What telecorder records beyond that sits
next to it, where LeRobot does not look: ``telecorder_meta.json`` (episode metadata, feature
units, image settings) and ``meta/telecorder_timing.parquet`` (per step: recorded timestamp,
camera frame times and counters, tick lateness). The reader restores both when present.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...datasets.episode_file import Episode
from ...datasets.features import DatasetInfo, FeatureSpec
from ...safe_paths import join_inside
from ..base import SIDECAR, ConversionError, FormatReader
from ..templates import TemplateError, check_template, fill_template
from ..video import decode_frames
from .meta_checks import (
    check_episode_row,
    check_info,
    check_sidecar,
    check_task_row,
    chunks_size,
)
from .schema import (
    BOOKKEEPING,
    EPISODES_DIR,
    INFO_PATH,
    SIDECAR_FORMAT,
    SUPPORTED_VERSIONS,
    TASKS_PATH,
    Visual,
    parse_features,
    sidecar_features,
)
from .tables import (
    column_values,
    complete_column,
    image_bytes,
    image_column,
    parquet_column_names,
    read_json_file,
    read_jsonl,
    read_parquet,
)
from .timing import (
    OFFSET_KEY,
    episode_frame_times,
    find_offset,
    frame_times,
)


def _load_sidecar(root: Path) -> dict[str, Any] | None:
    path = root / SIDECAR
    if not path.is_file():
        return None
    side = read_json_file(path, "sidecar")
    found = side.get("format") if isinstance(side, dict) else type(side).__name__
    if found != SIDECAR_FORMAT:
        raise ConversionError(f"{path}: not a telecorder LeRobot sidecar (format {found!r}); "
                              "remove it to read the dataset without it")
    if not isinstance(side.get("episodes", {}), dict) or not isinstance(side.get("info", {}), dict):
        raise ConversionError(f"{path}: 'episodes' and 'info' must be JSON objects; remove the file or restore it")
    check_sidecar(side, str(path))
    return side



class LeRobotReader(FormatReader):
    """A LeRobot v2.0/v2.1/v3.0 dataset folder.

    ``tabular_only=True`` reads only the numeric part (no cameras in ``info``), for datasets
    whose videos are missing; ``cameras`` reads only those cameras (the others' videos are never
    opened). ``tolerance_s`` is how far a video frame may lie from a step's timestamp (default
    half a frame period). :meth:`missing_cameras` tells which episodes lack a camera's video.
    Rows whose timestamps run a constant offset of at most one frame off their video get their
    own frames by that offset (see :mod:`.timing`; the episode's metadata says so under
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
        self._meta = read_json_file(self._info_path, "meta/info.json")
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
        self._numeric, visual = parse_features(features, self._info_path, sidecar_features(self._sidecar))
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

    def _refuse_unsupported(self, declared: list[Visual]) -> None:
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
            rows = self._index_rows(read_jsonl(path))
            return rows, dict.fromkeys(rows, path)
        files = sorted((self.path / EPISODES_DIR).glob("*/*.parquet"))
        if not files:
            raise ConversionError(f"{self.path / EPISODES_DIR}: no episode metadata files (chunk-*/file-*.parquet)")
        episodes: dict[int, dict[str, Any]] = {}
        where: dict[int, Path] = {}
        for f in files:
            # Per-episode statistics can be most of the file and are not needed to read episodes.
            table = read_parquet(f)
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
            checked = (check_task_row(row, where) for where, row in read_jsonl(path))
            return dict(t for t in checked if t is not None)
        path = self.path / TASKS_PATH
        if not path.is_file():
            return {}
        table = read_parquet(path)
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
            present = parquet_column_names(path)
            self._columns_cache = (key, read_parquet(path, columns=[c for c in columns if c in present]))
        table = self._columns_cache[1]
        if self.is_v3:
            if "episode_index" not in table.column_names:
                raise ConversionError(f"{path}: column 'episode_index' is missing; cannot find episode {index}'s rows")
            table = table.filter(pc.equal(table["episode_index"], index))
        if row.get("length") is not None and int(row["length"]) != table.num_rows:
            raise ConversionError(f"{path}: episode {index} has {table.num_rows} rows but "
                                  f"{self._episodes_file[index]} says length {row['length']}")
        out = {name: column_values(table, name, self._numeric[name].shape, self._numeric[name].dtype, path)
               for name in names}
        out["timestamp"] = column_values(table, "timestamp", (), "float64", path)
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
        table = read_parquet(path, columns=["episode_index", vis.key])
        if self.is_v3:
            table = table.filter(pc.equal(table["episode_index"], index))
        return image_bytes(table, vis.key, path, self.path)

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
        timestamp = column_values(table, "timestamp", (), "float64", data_file)
        data = {name: column_values(table, name, spec.shape, spec.dtype, data_file)
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
        names = parquet_column_names(path)
        # Absent columns are reported by name where they are needed.
        return read_parquet(path, columns=[c for c in wanted if c in names])

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
        self, vis: Visual, index: int, row: Mapping[str, Any], table: pa.Table, timestamp: np.ndarray, data_file: Path,
        offsets: dict[str, float],
    ) -> list[np.ndarray]:
        frames = (self._video_frames(vis, index, row, timestamp, offsets) if vis.stored == "video"
                  else image_column(table, vis.key, data_file, self.path))
        want = vis.spec.shape
        bad = next((f.shape for f in frames if f.shape != want), None)
        if bad is not None:
            raise ConversionError(
                f"{data_file if vis.stored == 'image' else self._video_path(vis, index, row)}: frames of camera "
                f"{vis.camera!r} are {bad[1]}x{bad[0]} but {self._info_path} declares {want[1]}x{want[0]}"
            )
        return frames

    def _video_path(self, vis: Visual, index: int, row: Mapping[str, Any]) -> Path:
        if not self.is_v3:
            chunk = index // chunks_size(self._meta)
            return self._templated_path("video_path", episode_chunk=chunk, video_key=vis.key, episode_index=index)
        chunk, file = (self._episode_field(index, row, f"videos/{vis.key}/{k}") for k in ("chunk_index", "file_index"))
        return self._templated_path("video_path", video_key=vis.key, chunk_index=chunk, file_index=file)

    def _video_frames(
        self, vis: Visual, index: int, row: Mapping[str, Any], timestamp: np.ndarray, offsets: dict[str, float]
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
        offset of at most one frame period that makes every row find one (see :mod:`.timing`)."""
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
            ep.timestamp = column_values(table, "timestamp", (), "float64", self._timing_path)
            if complete_column(table, "tick_lateness"):
                ep.tick_lateness = column_values(table, "tick_lateness", (), "float32", self._timing_path)
            for v in self._visual:
                for column, target, dtype in (("image_timestamp", ep.image_timestamp, "float64"),
                                              ("frame_index", ep.frame_index, "int64")):
                    name = f"{column}.{v.camera}"
                    if complete_column(table, name):
                        target[v.camera] = column_values(table, name, (), dtype, self._timing_path)
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
        table = read_parquet(path, filters=[("episode_index", "=", ep.index)])
        if table.num_rows != len(ep):
            raise ConversionError(
                f"{path}: {table.num_rows} timing rows for episode {ep.index}, which has {len(ep)} steps; "
                f"it belongs to another dataset: remove it and {SIDECAR}"
            )
        return table
