"""The parts of a sharded LeRobot conversion merged into one v3.0 dataset (see :mod:`..parts`).

Each part is a complete small v3.0 dataset whose episodes, frames and tasks are numbered from
0. The merge keeps every part's files as they are, in LeRobot's chunk-NNN/file-NNN sequence:

- videos are renamed, never re-encoded: an episode's from/to timestamps stay relative to the
  file it was encoded into, which LeRobot allows (a file holds any run of episodes);
- data files are rewritten row group by row group (one an episode), because their
  ``episode_index``, ``index`` and ``task_index`` columns are numbered across the dataset
  (parts are written in parallel and cannot know their offsets);
- ``meta/`` is written once: episode rows renumbered, tasks in first-seen order as the
  sequential writer numbers them, statistics from the parts' mergeable statistics.

The result is what :class:`~.writer.LeRobotWriter` writes for the same episodes in one go,
except that there are more, smaller files. Everything is checked before anything is moved,
and every row is checked while the data files are rewritten, before any video is moved, so an
inconsistent part stops the merge with the part named and the parts left intact.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...atomic import write_json_atomic
from ...datasets.features import DatasetInfo
from ...datasets.stats import DatasetStats, FeatureStats
from ..base import SIDECAR, ConversionError
from ..parts import PART_STATS, PARTS_DIR, read_part_stats
from .schema import (
    DATA_PATH,
    EPISODES_DIR,
    EPISODES_PATH,
    GLOBAL_COLUMNS,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    TIMING_PATH,
    VIDEO_PATH,
)
from .tables import read_json_file, read_parquet
from .writer import FileSeq, lerobot_summary, tasks_table

# info.json entries that count the whole dataset; everything else must agree between parts.
_TOTALS = ("total_episodes", "total_frames", "total_tasks", "splits")


@dataclass
class _Part:
    path: Path
    info: dict[str, Any]
    sidecar: dict[str, Any]
    rows: list[dict[str, Any]]
    tasks: list[str]  # by the part's task_index
    data_files: list[tuple[int, int]] = field(default_factory=list)  # (chunk, file) in episode order
    videos: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return sum(int(r["length"]) for r in self.rows)

    def file(self, template: str, where: tuple[int, int], **fields: Any) -> Path:
        return self.path / template.format(chunk_index=where[0], file_index=where[1], **fields)


def merge_parts(work: Path, parts: list[Path], info: DatasetInfo, options: Mapping[str, Any],
                stats: DatasetStats) -> None:
    """Build the dataset in ``work`` from ``parts`` in order, then remove ``work/.parts``.

    ``options`` are the user's writer options; the parts were written with them, so the
    layout settings are read back from the parts' info.json, which also checks they agree.
    """
    work = Path(work)
    videos = [f.name for f in info.image_features]
    loaded = [p for p in (_load(Path(path), videos) for path in parts) if p.rows]
    if not loaded:
        raise ConversionError(f"{work}: no part holds an episode; nothing to merge")
    base = _agreed(loaded)
    chunks = int(base["info"].get("chunks_size") or options.get("chunks_size") or 1000)
    data_numbers = _numbers(chunks)
    video_numbers = {key: _numbers(chunks) for key in videos}
    tasks: dict[str, int] = {}  # first seen first, as the sequential writer numbers them
    rows: list[dict[str, Any]] = []
    side_episodes: dict[str, Any] = {}
    global_stats: dict[str, FeatureStats] = {}
    moves: list[tuple[_Part, dict[str, dict[tuple[int, int], tuple[int, int]]]]] = []
    timing: pq.ParquetWriter | None = None
    (work / "meta").mkdir(parents=True, exist_ok=True)
    try:
        for part in loaded:
            episodes, frames = len(rows), rows[-1]["dataset_to_index"] if rows else 0
            task_map = np.array([tasks.setdefault(t, len(tasks)) for t in part.tasks], dtype=np.int64)
            data_map = {where: next(data_numbers) for where in part.data_files}
            _rewrite_data(work, part, data_map, episodes, frames, task_map)
            video_map = {key: {where: next(video_numbers[key]) for where in part.videos[key]} for key in videos}
            moves.append((part, video_map))
            for row in part.rows:
                new = _renumbered(row, episodes, frames, data_map, video_map)
                new.update(_global_column_stats(new, tasks[row["tasks"][0]], global_stats))
                rows.append(new)
            for local, entry in part.sidecar["episodes"].items():
                side_episodes[str(int(local) + episodes)] = entry
            if timing is None and (part.path / TIMING_PATH).is_file():
                timing = _timing_writer(work, part)
            if timing is not None:
                _copy_timing(part, episodes, timing)
    finally:
        if timing is not None:
            timing.close()
    meta_stats = _dataset_stats(rows, stats, global_stats, info)
    for part, video_map in moves:
        _move_videos(work, part, video_map)
    _write_meta(work, base, rows, tasks, side_episodes, timing is not None, meta_stats)
    shutil.rmtree(work / PARTS_DIR, ignore_errors=True)


# -- reading and checking the parts ----------------------------------------------------------


def _load(path: Path, videos: list[str]) -> _Part:
    if not path.is_dir():
        raise ConversionError(f"{path}: part folder is missing")
    info = read_json_file(path / INFO_PATH, "meta/info.json")
    side = read_json_file(path / SIDECAR, SIDECAR)
    if not isinstance(info, dict) or not isinstance(side, dict) or not isinstance(side.get("episodes"), dict):
        raise ConversionError(f"{path}: meta/info.json and {SIDECAR} must be JSON objects with episodes")
    files = sorted((path / EPISODES_DIR).glob("*/*.parquet"))
    rows = [r for f in files for r in read_parquet(f).to_pylist()]
    part = _Part(path, info, side, rows, _part_tasks(path))
    if [r.get("episode_index") for r in rows] != list(range(len(rows))):
        raise ConversionError(f"{path}: episode rows are not numbered 0..{len(rows) - 1} in order")
    if (info.get("total_episodes"), info.get("total_frames")) != (len(rows), part.frames):
        raise ConversionError(f"{path}: meta/info.json counts {info.get('total_episodes')} episodes and "
                              f"{info.get('total_frames')} frames, its episode rows {len(rows)} and {part.frames}")
    if sorted(side["episodes"], key=int) != [str(i) for i in range(len(rows))]:
        raise ConversionError(f"{path}: {SIDECAR} does not list the part's {len(rows)} episodes")
    unknown = sorted({t for r in rows for t in r.get("tasks") or []} - set(part.tasks))
    if unknown:
        raise ConversionError(f"{path}: episodes name task(s) {unknown} that meta/tasks.parquet lacks")
    if rows:
        part.data_files = _files_of(part, "data", DATA_PATH, {})
        part.videos = {key: _files_of(part, f"videos/{key}", VIDEO_PATH, {"video_key": key}) for key in videos}
        _check_stats(part)
        if (path / TIMING_PATH).is_file() != bool(side.get("timing_file")):
            raise ConversionError(f"{path}: {SIDECAR} and {TIMING_PATH} disagree on whether timing was recorded")
    return part


def _part_tasks(path: Path) -> list[str]:
    table = read_parquet(path / TASKS_PATH)
    if not {"task", "task_index"} <= set(table.column_names):
        raise ConversionError(f"{path / TASKS_PATH}: needs task and task_index columns")
    by_index = dict(zip(table["task_index"].to_pylist(), table["task"].to_pylist(), strict=True))
    if sorted(by_index) != list(range(len(by_index))):
        raise ConversionError(f"{path / TASKS_PATH}: task_index is not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


def _files_of(part: _Part, prefix: str, template: str, fields: dict[str, Any]) -> list[tuple[int, int]]:
    """The part's files of one kind, in episode order, each checked against the episodes in it."""
    order: list[tuple[int, int]] = []
    episodes: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in part.rows:
        try:
            where = (int(row[f"{prefix}/chunk_index"]), int(row[f"{prefix}/file_index"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{part.path}: episode {row['episode_index']} has no {prefix} file ({e})") from e
        if where not in episodes:
            order.append(where)
        elif where != order[-1]:
            raise ConversionError(f"{part.path}: episodes of {prefix} file {where} are not consecutive")
        episodes.setdefault(where, []).append(row)
    for where in order:
        path = part.file(template, where, **fields)
        if not path.is_file():
            raise ConversionError(f"{part.path}: {path.relative_to(part.path)} is missing")
        rows = episodes[where]
        if prefix == "data":
            _check_data_file(part, path, sum(int(r["length"]) for r in rows))
        else:
            _check_video_file(part, path, max(float(r[f"{prefix}/to_timestamp"]) for r in rows))
    return order


def _check_data_file(part: _Part, path: Path, frames: int) -> None:
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as e:
        raise ConversionError(f"{part.path}: {path.relative_to(part.path)} cannot be read as Parquet ({e})") from e
    if rows != frames:
        raise ConversionError(f"{part.path}: {path.relative_to(part.path)} has {rows} rows, its episodes {frames}")


def _check_video_file(part: _Part, path: Path, end_s: float) -> None:
    """The mp4 opens and its index holds every frame the episodes point at (nothing decoded)."""
    fps = float(part.info["fps"])
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            frames = container.streams.video[0].frames if container.streams.video else 0
    except av.error.FFmpegError as e:
        raise ConversionError(f"{part.path}: {path.relative_to(part.path)} cannot be opened as video ({e})") from e
    if frames < round(end_s * fps):
        raise ConversionError(f"{part.path}: {path.relative_to(part.path)} holds {frames} frames, its episodes "
                              f"end at frame {round(end_s * fps)}")


def _check_stats(part: _Part) -> None:
    """The part's statistics cover its frames and features: a part from a killed or stale run would not."""
    stats = read_part_stats(part.path)
    features = part.info.get("features") or {}
    for name, s in stats.items():
        # Image statistics count sampled pixels, every other feature one value set a frame.
        if (features.get(name) or {}).get("dtype") != "video" and s.count != part.frames:
            raise ConversionError(f"{part.path}: statistics of {name!r} count {s.count} frames, the part has "
                                  f"{part.frames}")
    wanted = {k[len("stats/"):].rsplit("/", 1)[0] for k in part.rows[0] if k.startswith("stats/")}
    missing = sorted(wanted - set(GLOBAL_COLUMNS) - set(stats))
    if missing:
        raise ConversionError(f"{part.path}: {PART_STATS} has no statistics of {missing}")


def _agreed(parts: list[_Part]) -> dict[str, Any]:
    """The settings every part must share (all but the totals), from the first part."""
    first = parts[0]
    settings = {k: v for k, v in first.info.items() if k not in _TOTALS}
    for part in parts[1:]:
        other = {k: v for k, v in part.info.items() if k not in _TOTALS}
        if other != settings:
            keys = sorted(k for k in settings.keys() | other.keys() if settings.get(k) != other.get(k))
            raise ConversionError(f"{part.path}: meta/info.json differs from {first.path.name}'s in {keys}")
        if part.sidecar.get("info") != first.sidecar.get("info"):
            raise ConversionError(f"{part.path}: {SIDECAR} describes another schema than {first.path.name}'s")
        if bool(part.sidecar.get("timing_file")) != bool(first.sidecar.get("timing_file")):
            raise ConversionError(f"{part.path}: has {'no ' if not part.sidecar.get('timing_file') else ''}"
                                  f"{TIMING_PATH}, unlike {first.path.name}")
    return {"info": first.info, "sidecar": first.sidecar}


# -- writing ---------------------------------------------------------------------------------


def _numbers(chunks_size: int) -> Iterator[tuple[int, int]]:
    seq = FileSeq(chunks_size)
    while True:
        yield seq.chunk, seq.file
        seq.advance()


def _rewrite_data(work: Path, part: _Part, data_map: dict[tuple[int, int], tuple[int, int]], episodes: int,
                  frames: int, task_map: np.ndarray) -> None:
    """The part's rows with their dataset-wide numbers, checked against the episode rows."""
    lengths = np.array([int(r["length"]) for r in part.rows], dtype=np.int64)
    episode_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    local_task = {t: i for i, t in enumerate(part.tasks)}
    task_of = np.array([local_task[r["tasks"][0]] for r in part.rows], dtype=np.int64)[episode_of]
    pos = 0
    for where, target in data_map.items():
        src = part.file(DATA_PATH, where)
        dst = work / DATA_PATH.format(chunk_index=target[0], file_index=target[1])
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            reader = pq.ParquetFile(src)
            with pq.ParquetWriter(dst, reader.schema_arrow) as writer:
                for group in range(reader.num_row_groups):
                    table = reader.read_row_group(group)
                    n = table.num_rows
                    expected = {"episode_index": episode_of[pos : pos + n], "task_index": task_of[pos : pos + n],
                                "index": np.arange(pos, pos + n, dtype=np.int64)}
                    offsets = {"episode_index": episodes, "index": frames}
                    for name in GLOBAL_COLUMNS:
                        i = table.schema.get_field_index(name)
                        old = table.column(i).to_numpy() if i >= 0 else None
                        if old is None or not np.array_equal(old, expected[name]):
                            raise ConversionError(f"{part.path}: {src.relative_to(part.path)} column {name!r} "
                                                  "disagrees with the part's episode rows")
                        new = task_map[old] if name == "task_index" else old + offsets[name]
                        table = table.set_column(i, table.schema.field(i), pa.array(new, pa.int64()))
                    writer.write_table(table)
                    pos += n
        except ConversionError:
            raise
        except (pa.ArrowException, OSError, ValueError) as e:
            raise ConversionError(f"{part.path}: {src.relative_to(part.path)} cannot be read ({e})") from e
    if pos != len(episode_of):
        raise ConversionError(f"{part.path}: data files hold {pos} rows, its episodes {len(episode_of)}")


def _move_videos(work: Path, part: _Part, video_map: dict[str, dict[tuple[int, int], tuple[int, int]]]) -> None:
    for key, files in video_map.items():
        for where, target in files.items():
            dst = work / VIDEO_PATH.format(video_key=key, chunk_index=target[0], file_index=target[1])
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part.file(VIDEO_PATH, where, video_key=key), dst)


def _renumbered(row: Mapping[str, Any], episodes: int, frames: int, data_map: Mapping[tuple[int, int], Any],
                video_map: Mapping[str, Mapping[tuple[int, int], Any]]) -> dict[str, Any]:
    new = dict(row)  # keeps the writer's column order
    new["episode_index"] = int(row["episode_index"]) + episodes
    new["dataset_from_index"] = int(row["dataset_from_index"]) + frames
    new["dataset_to_index"] = int(row["dataset_to_index"]) + frames
    new["data/chunk_index"], new["data/file_index"] = data_map[(row["data/chunk_index"], row["data/file_index"])]
    for key, files in video_map.items():
        prefix = f"videos/{key}"
        new[f"{prefix}/chunk_index"], new[f"{prefix}/file_index"] = \
            files[(row[f"{prefix}/chunk_index"], row[f"{prefix}/file_index"])]
    new["meta/episodes/chunk_index"], new["meta/episodes/file_index"] = 0, 0
    return new


def _global_column_stats(row: Mapping[str, Any], task_index: int, merged: dict[str, FeatureStats]) -> dict[str, Any]:
    """Per-episode statistics of the dataset-wide columns, as the writer computes them from the
    episode's rows, merged into ``merged`` in episode order as the writer does."""
    start, stop = row["dataset_from_index"], row["dataset_to_index"]
    n = stop - start
    values = {"episode_index": np.full(n, row["episode_index"], dtype=np.float64),
              "index": np.arange(start, stop, dtype=np.float64),
              "task_index": np.full(n, task_index, dtype=np.float64)}
    out: dict[str, Any] = {}
    for name in GLOBAL_COLUMNS:
        stats = FeatureStats.from_array(values[name], name=name)
        merged[name] = merged[name].merge(stats) if name in merged else stats
        if f"stats/{name}/count" in row:
            out.update({f"stats/{name}/{k}": v for k, v in lerobot_summary(stats, n).items()})
    return out


def _timing_writer(work: Path, part: _Part) -> pq.ParquetWriter:
    try:
        return pq.ParquetWriter(work / TIMING_PATH, pq.read_schema(part.path / TIMING_PATH))
    except (pa.ArrowException, OSError) as e:
        raise ConversionError(f"{part.path}: {TIMING_PATH} cannot be read ({e})") from e


def _copy_timing(part: _Part, episodes: int, writer: pq.ParquetWriter) -> None:
    try:
        reader = pq.ParquetFile(part.path / TIMING_PATH)
        for group in range(reader.num_row_groups):  # one an episode, kept so for the reader's filter
            table = reader.read_row_group(group)
            i = table.schema.get_field_index("episode_index")
            old = table.column(i).to_numpy()
            if old.size and (old.min() < 0 or old.max() >= len(part.rows)):
                raise ConversionError(f"{part.path}: {TIMING_PATH} has rows of episodes the part does not hold")
            table = table.set_column(i, table.schema.field(i), pa.array(old + episodes, pa.int64()))
            writer.write_table(table)
    except ConversionError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ConversionError(f"{part.path}: {TIMING_PATH} cannot be read or does not match the others ({e})") from e


def _dataset_stats(rows: list[dict[str, Any]], stats: DatasetStats, global_stats: Mapping[str, FeatureStats],
                   info: DatasetInfo) -> dict[str, Any]:
    """meta/stats.json: the parts' merged statistics, with LeRobot's counts summed over episodes."""
    names = list(dict.fromkeys(k[len("stats/"):].rsplit("/", 1)[0] for k in rows[0] if k.startswith("stats/")))
    images = {f.name for f in info.image_features}
    out = {}
    for name in names:
        feature = global_stats.get(name) if name in GLOBAL_COLUMNS else stats.features.get(name)
        if feature is None:
            raise ConversionError(f"the merged statistics of the parts have no feature {name!r}")
        count = sum(int(r[f"stats/{name}/count"][0]) for r in rows)
        out[name] = lerobot_summary(feature, count, name in images)
    return out


def _write_meta(work: Path, base: Mapping[str, Any], rows: list[dict[str, Any]], tasks: dict[str, int],
                side_episodes: dict[str, Any], timing: bool, stats: dict[str, Any]) -> None:
    (work / "meta").mkdir(parents=True, exist_ok=True)
    path = work / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    pq.write_table(tasks_table(tasks), work / TASKS_PATH)
    write_json_atomic(work / STATS_PATH, stats)
    info = dict(base["info"])  # the part's key order is the writer's
    info.update(total_episodes=len(rows), total_frames=rows[-1]["dataset_to_index"], total_tasks=len(tasks),
                splits={"train": f"0:{len(rows)}"})
    write_json_atomic(work / INFO_PATH, info)
    side = dict(base["sidecar"])
    side["timing_file"] = TIMING_PATH if timing else None
    side["episodes"] = side_episodes
    write_json_atomic(work / SIDECAR, side)


