"""The native dataset folder: open it to read, or write episodes into it one at a time.

::

    DATASET/
      meta/info.json        features, fps, robot, format version, totals
      meta/episodes.jsonl   one line per saved episode (the index)
      meta/stats.json       per-feature statistics, merged episode by episode
      episodes/episode_000000.h5 ...

Commit order makes every crash point safe: the episode file is renamed into place
first (complete and fsynced), then its index line is appended, then stats and info
are replaced atomically. An episode file that is not in the index yet, or a hidden
``.partial.h5`` left by a crash, is reported by ``telecorder doctor`` and mended by
``doctor --repair``; the index never names an incomplete file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic
from ..errors import DatasetError, SchemaMismatchError
from .episode_file import (
    EPISODES_DIR,
    EpisodeFileWriter,
    EpisodeReader,
    episode_relpath,
)
from .features import DatasetInfo, read_json
from .index import (
    INDEX,
    INFO,
    STATS,
    _index_of,
    append_index_line,
    episode_files,
    episode_stats,
    index_line_problem,
    is_dataset,
    mark_bad,
    numbers_in_use,
    partial_files,
    read_index,
    typed_index_record,
    write_index,
)
from .lock import DatasetLock
from .stats import DatasetStats, format_ranges

# The index and file helpers live in .index (shared with .recovery); kept importable from here.
__all__ = [
    "INDEX", "INFO", "STATS", "Dataset", "DatasetWriter", "append_index_line", "episode_files", "episode_stats",
    "index_line_problem", "is_dataset", "mark_bad", "numbers_in_use", "partial_files", "read_index",
    "typed_index_record", "write_index",
]


class Dataset:
    """A native telecorder dataset, opened for reading.

    >>> ds = Dataset.open("demos/")
    >>> len(ds), ds.info.fps, ds.info.cameras
    >>> with ds.episode(0) as ep:
    ...     state = ep.numeric("observation.state"); img = ep.frame("front", 10)
    """

    def __init__(self, root: Path, info: DatasetInfo, records: list[dict[str, Any]], problems: list[str]) -> None:
        self.root = root
        self.info = info
        self.records = records
        self.index_problems = problems

    @classmethod
    def open(cls, root: str | Path) -> Dataset:
        root = Path(root)
        if not root.exists():
            raise DatasetError(f"{root}: no such folder")
        if not root.is_dir():
            raise DatasetError(f"{root}: is a file, not a dataset folder")
        if not (root / INFO).is_file():
            raise DatasetError(
                f"{root} is not a telecorder dataset (no {INFO}); record one with "
                f"'collect --out {root}' or convert one with 'telecorder convert'"
            )
        info = DatasetInfo.load(root / INFO)
        records, problems = read_index(root)
        for p in problems:
            warnings.warn(p, stacklevel=2)
        records.sort(key=lambda r: int(r["episode_index"]))
        return cls(root, info, records, problems)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_frames(self) -> int:
        return sum(int(r.get("length", 0)) for r in self.records)

    @property
    def episode_indices(self) -> list[int]:
        return [int(r["episode_index"]) for r in self.records]

    def episode_path(self, index: int) -> Path:
        """The file of episode ``index``: derived from the number, never read from metadata."""
        return self.root / episode_relpath(index)

    def episode(self, index: int) -> EpisodeReader:
        """Open episode ``index`` (its number in the index, not its position)."""
        if index not in self.episode_indices:
            raise DatasetError(f"{self.root}: no episode {index} (episodes: {format_ranges(self.episode_indices) or 'none'})")
        return EpisodeReader(self.episode_path(index), self.info)

    def __iter__(self) -> Iterator[EpisodeReader]:
        for i in self.episode_indices:
            yield self.episode(i)

    def stats(self) -> DatasetStats | None:
        path = self.root / STATS
        if not path.exists():
            return None
        try:
            return DatasetStats.from_json_dict(read_json(path))
        except ValueError as e:
            raise DatasetError(f"{path}: {e}; run 'telecorder doctor --repair' to recompute it") from e

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


class DatasetWriter:
    """Adds episodes to a dataset folder, creating it or (with ``resume``) appending to it.

    The writer holds the dataset's lock for its lifetime (see :mod:`.lock`): no second
    recording, repair or edit can interleave with it. On ``resume`` it first recovers
    what a crash may have left (see :func:`.recovery.recover`), so an unfinished episode
    is salvaged before any new one is numbered; ``recovered`` says what was done.
    """

    def __init__(
        self, root: str | Path, info: DatasetInfo, *, resume: bool = False, unfinished: str = "salvage"
    ) -> None:
        """``unfinished``: what resuming does with an episode a crash cut short: ``salvage`` its
        flushed steps (recordings), or ``discard`` it (derived data that is simply written again)."""
        if unfinished not in ("salvage", "discard"):
            raise ValueError(f"unfinished must be 'salvage' or 'discard', not {unfinished!r}")
        self.root = Path(root)
        self._lock: DatasetLock | None = None
        self._unfinished = unfinished
        self.recovered: list[str] = []
        creating = not is_dataset(self.root)
        if not creating:
            existing = DatasetInfo.load(self.root / INFO)
            if not resume:
                raise DatasetError(
                    f"{self.root} already holds a dataset ({existing.total_episodes} episodes); "
                    "pass --resume to append to it, or choose another --out folder"
                )
            diffs = existing.differences(info)
            if existing.image_encoding != info.image_encoding:
                diffs.append(f"image encoding {existing.image_encoding} vs {info.image_encoding}")
            if diffs:
                raise SchemaMismatchError(
                    f"cannot append to {self.root}: the new recording differs from it ({'; '.join(diffs)}); "
                    "record into another --out folder"
                )
            info.jpeg_quality = existing.jpeg_quality
            info.extra = {**existing.extra, **info.extra}
            self.info = info
        else:
            if self.root.exists() and (not self.root.is_dir() or not _empty_or_unborn(self.root)):
                raise DatasetError(
                    f"{self.root} exists and is not a telecorder dataset; choose a new or empty --out folder"
                )
            (self.root / "meta").mkdir(parents=True, exist_ok=True)
            (self.root / EPISODES_DIR).mkdir(exist_ok=True)
            self.info = info
        self._lock = DatasetLock(self.root, "record into it").acquire()
        try:
            if creating and is_dataset(self.root):
                # Another command (a convert or an edit publishing here) made a dataset between the
                # check above and the lock: it is theirs, and recording must not append to it.
                raise DatasetError(
                    f"{self.root} became a dataset while this recording was starting (another command "
                    "published there); choose another --out folder, or pass --resume to append to it"
                )
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        from .recovery import recover

        (self.root / EPISODES_DIR).mkdir(exist_ok=True)
        if not is_dataset(self.root):
            (self.root / INDEX).touch()
            write_json_atomic(self.root / STATS, DatasetStats({}, episodes=()).to_json_dict())
            self.info.save(self.root / INFO)  # last: until info.json exists, the folder is no dataset
        else:
            self.recovered = recover(self.root, self.info, unfinished=self._unfinished)
            on_disk = DatasetInfo.load(self.root / INFO)
            self.info.total_episodes, self.info.total_frames = on_disk.total_episodes, on_disk.total_frames
        used = numbers_in_use(self.root) | {int(r["episode_index"]) for r in read_index(self.root)[0]}
        self.next_index = max(used) + 1 if used else 0

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reserve_index(self) -> int:
        """Number the next episode (done on the caller's thread, so numbering never races the writer)."""
        index = self.next_index
        self.next_index += 1
        return index

    def release_index(self, index: int) -> None:
        """Give back the number of a discarded episode so that its re-recording takes it."""
        if self.next_index == index + 1:
            self.next_index = index

    def start_episode(self, index: int, attrs: Mapping[str, Any]) -> EpisodeFileWriter:
        return EpisodeFileWriter(self.root / episode_relpath(index), self.info, {**attrs, "episode_index": index})

    def commit(self, writer: EpisodeFileWriter, attrs: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
        """Make the episode complete and visible: file, then index line, then stats and info."""
        if attrs.get("action_from_next_state"):
            writer.derive_action_from_next_state()
        arrays = writer.numeric_arrays()
        path = writer.finish(attrs)
        index = _index_of(path)
        entry = {
            "episode_index": index,
            "file": episode_relpath(index),
            "length": writer.length,
            **record,
            "bytes": path.stat().st_size,
        }
        append_index_line(self.root, entry)
        self._update_stats(arrays, index)
        self.info.total_episodes += 1
        self.info.total_frames += writer.length
        self.info.save(self.root / INFO)
        return entry

    def _update_stats(self, arrays: Mapping[str, np.ndarray], index: int) -> None:
        path = self.root / STATS
        current = DatasetStats.from_json_dict(read_json(path)) if path.exists() else DatasetStats({})
        write_json_atomic(path, current.merge(episode_stats(arrays, index)).to_json_dict())


def _empty_or_unborn(root: Path) -> bool:
    """Empty, or holding only what creating a dataset writes before ``info.json`` (a creation
    that a kill interrupted: no episode can have been saved yet)."""
    from ..atomic import is_temporary

    skeleton = {"meta", EPISODES_DIR}
    if any(p.name not in skeleton for p in root.iterdir()):
        return False
    episodes, meta = root / EPISODES_DIR, root / "meta"
    if episodes.exists() and (not episodes.is_dir() or any(episodes.iterdir())):
        return False
    if meta.exists():
        if not meta.is_dir():
            return False
        for p in meta.iterdir():
            if p.name == "episodes.jsonl" and p.stat().st_size == 0:
                continue
            if p.name not in (".lock", "stats.json") and not is_temporary(p.name):
                return False
    return True
