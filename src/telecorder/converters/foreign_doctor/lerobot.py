"""``doctor`` on LeRobot v2.0/v2.1/v3.0 folders, read lazily: columns, video packets, a few frames.

Per episode: its Parquet rows against the length the episode metadata gives, every numeric
column finite and of the declared type, the ``timestamp`` column on the 1/fps grid LeRobot's
loader demands (``check_timestamps_sync``), each camera's video present with a frame for every
row (the constant one-frame offset some v2.0 writers left is a warning: telecorder's readers
map it, LeRobot fails on it; see :mod:`..lerobot.timing`), the frames ``--frames`` asks for
decoded, and the episode's own statistics (v2.1 ``meta/episodes_stats.jsonl``, v3.0 ``stats/``
columns of ``meta/episodes``) against its rows. The dataset's ``meta/stats.json`` is compared
with the statistics of all rows, merged episode by episode. Image statistics are left out:
LeRobot computes them from a sample of downsized frames, which cannot be reproduced.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...datasets.doctor import EpisodeCheck
from ...datasets.features import DatasetInfo
from ...datasets.images import decode_image
from ...datasets.stats import FeatureStats
from ...safe_paths import join_inside
from ..base import ConversionError
from ..lerobot.meta_checks import check_episode_row, check_info, chunks_size
from ..lerobot.reader import LeRobotReader
from ..lerobot.schema import (
    BOOKKEEPING,
    EPISODES_DIR,
    INFO_PATH,
    STATS_PATH,
    Visual,
    parse_features,
)
from ..lerobot.tables import (
    column_values,
    parquet_column_names,
    read_json_file,
    read_jsonl,
    read_parquet,
)
from ..lerobot.timing import episode_frame_times, find_offset, frame_times
from ..templates import TemplateError, fill_template
from ..video import decode_frames as decode_video
from .checks import (
    MAX_STATS_BYTES,
    check_numbers,
    check_timing,
    compare_stats,
    global_stats_file,
    problem,
)

EPISODES_STATS = "meta/episodes_stats.jsonl"
# --frames all decodes this many rows at a time: a long 640x480 episode would not fit in memory at once.
DECODE_BATCH = 64
_BOOKKEEPING_DTYPES = {"timestamp": "float64", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                       "task_index": "int64"}


class LeRobotSource:
    """One LeRobot folder opened for checking: its reader, its metadata rows and statistics."""

    format_name = "lerobot"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.info_path = self.root / INFO_PATH
        meta = read_json_file(self.info_path, "meta/info.json")
        if not isinstance(meta, dict):
            raise ConversionError(f"{self.info_path}: holds a JSON {type(meta).__name__}, not an object")
        _, features = check_info(meta, str(self.info_path))
        _, visual = parse_features(features, self.info_path, {})
        # Depth maps cannot be checked as RGB frames; the reader would refuse the whole dataset.
        self.visual = [v for v in visual if not v.unsupported]
        self.unsupported = [v for v in visual if v.unsupported]
        self.reader = LeRobotReader(self.root, cameras=[v.camera for v in self.visual])
        self.meta = meta
        self.fps = self.reader.fps
        self.tolerance = self.reader.tolerance_s
        self.is_v3 = self.reader.is_v3
        self.episodes_file = self.root / (EPISODES_DIR if self.is_v3 else "meta/episodes.jsonl")
        self.stats_file = self.root / EPISODES_STATS
        self._table: tuple[Path, pa.Table] | None = None
        self._times: tuple[Path, np.ndarray] | None = None

    @property
    def info(self) -> DatasetInfo:
        return self.reader.info

    @property
    def version(self) -> str:
        return self.reader.version

    def close(self) -> None:
        self._table = self._times = None

    # -- metadata -----------------------------------------------------------------------------

    def jobs(self) -> tuple[list[tuple[int, dict[str, Any]]], list[str], list[str]]:
        """``(episode, record)`` per episode (its metadata row and statistics), and the errors and
        warnings of the metadata as a whole."""
        errors: list[str] = []
        warnings: list[str] = []
        rows, stats, files = self._rows_v3() if self.is_v3 else self._rows_v2(errors, warnings)
        per_episode = stats is not None
        jobs = [(i, {"format": self.format_name, "row": rows[i], "stats": (stats or {}).get(i),
                     "stats_file": files.get(i, str(self.stats_file)), "has_stats": per_episode})
                for i in sorted(rows)]
        lengths = [r.get("length") for r in rows.values()]
        total = self.meta.get("total_episodes")
        if type(total) is int and total != len(rows):
            warnings.append(f"{self.info_path}: total_episodes is {total}, {self.episodes_file} lists {len(rows)}")
        frames = self.meta.get("total_frames")
        if type(frames) is int and None not in lengths and frames != sum(lengths):
            warnings.append(f"{self.info_path}: total_frames is {frames}, the episodes' lengths in "
                            f"{self.episodes_file} add up to {sum(lengths)}")
        for v in self.unsupported:
            warnings.append(f"{self.info_path}: camera {v.camera!r} not checked: {v.unsupported}")
        warnings += self._unlisted_data_files(sorted(rows))
        return jobs, errors, warnings

    def _rows_v2(self, errors: list[str],
                 warnings: list[str]) -> tuple[dict[int, dict], dict[int, Any] | None, dict[int, str]]:
        rows = {check_episode_row(row, where): row for where, row in read_jsonl(self.episodes_file)}
        path = self.root / EPISODES_STATS
        if not path.is_file():
            if self.version == "v2.1":
                warnings.append(f"{path}: missing (LeRobot v2.1 keeps each episode's statistics there); "
                                "episode statistics not checked")
            return rows, None, {}
        try:
            if path.stat().st_size > MAX_STATS_BYTES:
                raise ConversionError(f"{path}: too large to be statistics (over {MAX_STATS_BYTES} bytes); not read")
            stats: dict[int, Any] = {}
            for where, row in read_jsonl(path):
                stats[check_episode_row(row, where)] = row.get("stats")
        except ConversionError as e:
            errors.append(str(e))
            return rows, None, {}
        return rows, stats, {}

    def _rows_v3(self) -> tuple[dict[int, dict], dict[int, Any] | None, dict[int, str]]:
        rows: dict[int, dict] = {}
        stats: dict[int, Any] = {}
        files: dict[int, str] = {}
        has_stats = False
        for f in sorted((self.root / EPISODES_DIR).glob("*/*.parquet")):
            table = read_parquet(f)
            try:
                pylist = table.to_pylist()
            except (pa.ArrowException, UnicodeDecodeError) as e:
                raise ConversionError(f"{f}: cannot be read as Parquet ({e})") from e
            for k, full in enumerate(pylist):
                row = {c: v for c, v in full.items() if not c.startswith("stats/")}
                idx = check_episode_row(row, f"{f} row {k}")
                rows[idx] = row
                block: dict[str, dict[str, Any]] = {}
                for column, value in full.items():
                    if column.startswith("stats/") and value is not None:
                        name, _, stat = column.removeprefix("stats/").rpartition("/")
                        block.setdefault(name, {})[stat] = value
                has_stats = has_stats or bool(block)
                stats[idx] = block or None
                files[idx] = str(f)
        return rows, (stats if has_stats else None), files

    def _unlisted_data_files(self, episodes: list[int]) -> list[str]:
        listed = set()
        for i in episodes:
            try:
                listed.add(self.reader.data_file(i))
            except ConversionError:
                continue  # said with the episode
        found = sorted(p for p in (self.root / "data").rglob("*.parquet") if p not in listed)
        if not found:
            return []
        names = ", ".join(str(p.relative_to(self.root)) for p in found[:3]) + (", ..." if len(found) > 3 else "")
        return [f"{self.root / 'data'}: {len(found)} Parquet file(s) no episode of {self.episodes_file} "
                f"refers to ({names})"]

    def global_stats(self) -> tuple[Any, list[str]]:
        """``meta/stats.json`` (None when the dataset has none) and what is wrong with it as a file."""
        return global_stats_file(self.root / STATS_PATH, "per-feature statistics")

    def compare_global(self, doc: dict[str, Any], totals: dict[str, FeatureStats | None],
                       checks: list[EpisodeCheck]) -> list[str]:
        """``meta/stats.json`` against the statistics of every episode's rows."""
        path = self.root / STATS_PATH
        image_keys = {v.key for v in self.visual} | {v.key for v in self.unsupported}
        out = []
        for name, block in doc.items():
            if name in image_keys or name not in totals or totals[name] is None:
                continue
            line = compare_stats(block, totals[name], f"{path}: {name}")  # type: ignore[arg-type]
            if line:
                out.append(line)
        return out

    def after(self, checks: list[EpisodeCheck]) -> list[str]:
        return []  # the totals of info.json are checked against the episode metadata, with the jobs

    def global_names(self, doc: dict[str, Any]) -> list[str]:
        """Features of ``meta/stats.json`` whose statistics the data can give."""
        names = {s.name for s in self.info.numeric_features} | set(BOOKKEEPING)
        return [n for n in doc if n in names]

    # -- one episode --------------------------------------------------------------------------

    def check_episode(self, idx: int, record: dict[str, Any],
                      decode_frames: str) -> tuple[EpisodeCheck, dict[str, FeatureStats] | None]:
        row = record.get("row") or {}
        try:
            path = self.reader.data_file(idx)
        except ConversionError as e:
            check = EpisodeCheck(index=idx, path=self.root, errors=[str(e)])
            return check, None
        check = EpisodeCheck(index=idx, path=path)
        try:
            stats = self._check(check, idx, row, record, decode_frames)
        except Exception as e:  # a doctor reports what it cannot read and goes on
            check.errors.append(problem(e, path))
            check.finite_rows = None
            return check, None
        return check, stats

    def _rows(self, path: Path, idx: int, columns: list[str]) -> pa.Table:
        if self._table is None or self._table[0] != path:
            present = parquet_column_names(path)
            self._table = (path, read_parquet(path, columns=[c for c in columns if c in present]))
        table = self._table[1]
        if self.is_v3:
            if "episode_index" not in table.column_names:
                raise ConversionError(f"{path}: column 'episode_index' is missing; cannot find episode {idx}'s rows")
            table = table.filter(pc.equal(table["episode_index"], idx))
        return table

    def _check(self, check: EpisodeCheck, idx: int, row: dict[str, Any], record: dict[str, Any],
               decode_frames: str) -> dict[str, FeatureStats] | None:
        path = check.path
        if not path.is_file():
            check.errors.append(f"{path}: data file of episode {idx} is missing")
            check.finite_rows = None
            return None
        numeric = self.info.numeric_features
        table = self._rows(path, idx, [*BOOKKEEPING, *(s.name for s in numeric)])
        n = table.num_rows
        check.steps = n
        declared = row.get("length")
        if n == 0:
            check.errors.append(f"{path}: episode {idx} has no rows"
                                + (f" ({self.episodes_file} says length {declared})" if declared else ""))
            return None
        if declared is not None and int(declared) != n:
            check.errors.append(f"{path}: episode {idx} has {n} rows, {self.episodes_file} says length {declared}")
        arrays: dict[str, np.ndarray] = {}
        readable = True
        for spec in numeric:
            try:
                arrays[spec.name] = column_values(table, spec.name, spec.shape, spec.dtype, path)
            except ConversionError as e:
                check.errors.append(str(e))
                readable = False
        for column, dtype in _BOOKKEEPING_DTYPES.items():
            if column in table.column_names:
                try:
                    arrays[column] = column_values(table, column, (), dtype, path)
                except ConversionError as e:
                    check.errors.append(str(e))
            elif column == "timestamp":
                check.errors.append(f"{path}: column 'timestamp' is missing; LeRobot finds frames by it")
        self._bookkeeping(check, arrays, idx, n)
        ts = arrays.pop("timestamp", None)
        where = f"{path} episode {idx}" if self.is_v3 else str(path)  # a v3 file holds many episodes
        stats = check_numbers(check, arrays, where)
        if not readable:
            check.finite_rows = None
        if ts is not None and np.isfinite(ts).all():
            stats["timestamp"] = FeatureStats.from_array(ts, name="timestamp")
        if ts is not None:
            image_ts: dict[str, np.ndarray] = {}
            frame_idx: dict[str, np.ndarray] = {}
            if np.isfinite(ts).all():
                for vis in self.visual:
                    try:
                        if vis.stored == "video":
                            self._video(check, vis, idx, row, ts, decode_frames, image_ts, frame_idx)
                        elif decode_frames != "none":
                            self._images(check, vis, idx, path, n, decode_frames)
                    except Exception as e:  # one camera's damage, the others still checked
                        check.errors.append(problem(e, path))
            check_timing(check, ts, self.fps, where=where, image_timestamp=image_ts, frame_index=frame_idx,
                         grid=str(self.info_path))
        self._episode_stats(check, idx, n, stats, record)
        return stats

    @staticmethod
    def _bookkeeping(check: EpisodeCheck, arrays: dict[str, np.ndarray], idx: int, n: int) -> None:
        episode = arrays.pop("episode_index", None)
        if episode is not None and (episode != idx).any():
            others = sorted({int(e) for e in np.unique(episode) if e != idx})
            check.errors.append(f"{check.path}: rows of episode {idx} say episode_index {others[:3]} "
                                "(the file holds another episode's rows)")
        frame = arrays.get("frame_index")
        if frame is not None and not np.array_equal(frame, np.arange(n)):
            first = int(np.argmax(frame != np.arange(n)))
            check.warnings.append(f"{check.path}: frame_index of episode {idx} is not 0..{n - 1} "
                                  f"(row {first} says {int(frame[first])})")

    def _episode_stats(self, check: EpisodeCheck, idx: int, n: int, stats: dict[str, FeatureStats],
                       record: dict[str, Any]) -> None:
        if not record.get("has_stats"):
            return
        declared = record.get("stats")
        source = record.get("stats_file") or self.stats_file
        if not isinstance(declared, dict):
            check.errors.append(f"{source}: no statistics for episode {idx}" if declared is None
                                else f"{source}: statistics of episode {idx} are not a JSON object")
            return
        for name, fs in stats.items():
            if name in declared:
                line = compare_stats(declared[name], fs, f"{source} episode {idx}: {name}", rows=n)
                if line:
                    check.errors.append(line)

    # -- cameras ------------------------------------------------------------------------------

    def _video_path(self, vis: Visual, idx: int, row: dict[str, Any]) -> Path:
        template = self.meta.get("video_path")
        if not isinstance(template, str):
            raise ConversionError(f"{self.info_path}: 'video_path' template is missing")
        if self.is_v3:
            fields: dict[str, Any] = {"video_key": vis.key}
            for k in ("chunk_index", "file_index"):
                value = row.get(f"videos/{vis.key}/{k}")
                if value is None:
                    raise ConversionError(f"{self.episodes_file}: episode {idx} has no 'videos/{vis.key}/{k}'")
                fields[k] = value
        else:
            fields = {"episode_chunk": idx // chunks_size(self.meta), "video_key": vis.key, "episode_index": idx}
        try:
            relative = fill_template(template, fields)
        except TemplateError as e:
            raise ConversionError(f"{self.info_path}: 'video_path' template cannot be filled ({e})") from e
        return join_inside(self.root, relative, source=f"{self.info_path} 'video_path'", error=ConversionError)

    def _frame_times(self, path: Path) -> np.ndarray:
        if self._times is None or self._times[0] != path:  # consecutive v3 episodes share a file
            self._times = (path, frame_times(path))
        return self._times[1]

    def _video(self, check: EpisodeCheck, vis: Visual, idx: int, row: dict[str, Any], ts: np.ndarray,
               decode_frames: str, image_ts: dict[str, np.ndarray], frame_idx: dict[str, np.ndarray]) -> None:
        cam, n, tol = vis.camera, len(ts), self.tolerance
        path = self._video_path(vis, idx, row)
        if not path.is_file():
            check.errors.append(f"{path}: video of camera {cam!r} for episode {idx} is missing")
            return
        start = float(row.get(f"videos/{vis.key}/from_timestamp") or 0.0) if self.is_v3 else 0.0
        times = episode_frame_times(self._frame_times(path), row, vis.key, self.is_v3, tol)
        wanted = start + ts
        offset = find_offset(wanted, times, self.fps, tol)
        where = f"{path}: camera {cam!r} episode {idx}"
        if offset is None:
            nearest, dist = _nearest(times, wanted)
            lost = dist > tol
            first = int(np.argmax(lost))
            check.errors.append(f"{where}: {int(lost.sum())} of {n} rows have no frame within {1000 * tol:.1f} ms "
                                f"(first: row {first} at {ts[first]:.3f} s); the video has {len(times)} frame(s) "
                                f"for the episode's {n} rows")
            return
        if offset:
            check.warnings.append(
                f"{where}: the rows' timestamps run {1000 * offset:+.1f} ms off the video's frames (a constant "
                "offset of up to one frame, as some v2.0 writers left it); telecorder maps each row to its own "
                "frame, LeRobot itself shows the next row's frame and fails on the last row")
        nearest, _ = _nearest(times, wanted - offset)
        if len(times) > n:
            check.warnings.append(f"{where}: the video has {len(times)} frames for {n} rows; "
                                  f"{len(times) - len(np.unique(nearest))} of them belong to no row")
        image_ts[cam] = times[nearest] - start
        frame_idx[cam] = nearest.astype(np.int64)
        if decode_frames == "none":
            return
        rows = np.arange(n) if decode_frames == "all" else np.unique([0, n - 1])
        hw = (int(vis.spec.shape[0]), int(vis.spec.shape[1]))
        for lo in range(0, len(rows), DECODE_BATCH):
            batch = rows[lo:lo + DECODE_BATCH]
            decode_video(path, wanted[batch] - offset, tol, context=f"episode {idx}, camera {cam!r}", expected_hw=hw)

    def _images(self, check: EpisodeCheck, vis: Visual, idx: int, path: Path, n: int, decode_frames: str) -> None:
        blobs = self.reader.encoded_images(vis.camera, idx)
        rows: Iterable[int] = range(n) if decode_frames == "all" else sorted({0, n - 1})
        for r in rows:
            img = decode_image(blobs[r], where=f"{path} column {vis.key!r} step {r}", expected_hw=vis.spec.shape[:2])
            if img.shape != vis.spec.shape:
                check.errors.append(f"{path}: camera {vis.camera!r} step {r} is {img.shape}, "
                                    f"{self.info_path} says {vis.spec.shape}")
                return


def _nearest(times: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the frame nearest to each wanted time, and how far it is (inf without frames)."""
    if times.size == 0:
        return np.zeros(len(wanted), np.int64), np.full(len(wanted), np.inf)
    i = np.clip(np.searchsorted(times, wanted), 0, times.size - 1)
    left = np.maximum(i - 1, 0)
    take_left = np.abs(times[left] - wanted) < np.abs(times[i] - wanted)
    j = np.where(take_left, left, i)
    return j, np.abs(times[j] - wanted)


__all__ = ["LeRobotSource"]
