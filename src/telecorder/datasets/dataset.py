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

import fcntl
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, SchemaMismatchError
from .episode_file import PARTIAL_SUFFIX, EpisodeFileWriter, EpisodeReader, episode_filename
from .features import DatasetInfo, fsync_dir, read_json, write_json_atomic
from .stats import DatasetStats

INFO = "meta/info.json"
INDEX = "meta/episodes.jsonl"
STATS = "meta/stats.json"
EPISODES_DIR = "episodes"
_EPISODE_RE = re.compile(r"^episode_(\d{6,})\.h5$")


def is_dataset(path: str | Path) -> bool:
    return (Path(path) / INFO).is_file()


def read_index(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Index lines of ``meta/episodes.jsonl`` and descriptions of lines that could not be read."""
    path = root / INDEX
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    if not path.exists():
        return records, [f"{path}: index file is missing"]
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                int(rec["episode_index"])
                records.append(rec)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                problems.append(f"{path}:{lineno}: unreadable index line (interrupted write?)")
    return records, problems


def write_index(root: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``meta/episodes.jsonl`` atomically (readers see the old or the new index)."""
    path = root / INDEX
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def mark_bad(root: str | Path, index: int, bad: bool = True, reason: str | None = None) -> dict[str, Any]:
    """Mark (or unmark) an episode as bad in the index; its data is never touched.

    Loaders and ``convert`` can then leave marked episodes out.
    """
    root = Path(root)
    records, problems = read_index(root)
    if problems:
        raise DatasetError(f"{root}: the index has unreadable lines; run 'telecorder doctor --repair' first")
    for rec in records:
        if int(rec["episode_index"]) == index:
            if bad:
                rec["bad"] = True
                if reason:
                    rec["bad_reason"] = reason
            else:
                rec.pop("bad", None)
                rec.pop("bad_reason", None)
            write_index(root, records)
            return rec
    raise DatasetError(f"{root}: no episode {index} to mark")


def episode_files(root: Path) -> dict[int, Path]:
    """Complete episode files on disk by index (hidden partial files excluded)."""
    out = {}
    folder = root / EPISODES_DIR
    if folder.is_dir():
        for p in folder.iterdir():
            m = _EPISODE_RE.match(p.name)
            if m:
                out[int(m.group(1))] = p
    return out


def partial_files(root: Path) -> list[Path]:
    folder = root / EPISODES_DIR
    return sorted(folder.glob("*" + PARTIAL_SUFFIX)) if folder.is_dir() else []


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
        return self.root / EPISODES_DIR / episode_filename(index)

    def episode(self, index: int) -> EpisodeReader:
        """Open episode ``index`` (its number in the index, not its position)."""
        if index not in self.episode_indices:
            raise DatasetError(f"{self.root}: no episode {index} (episodes: {_ranges(self.episode_indices)})")
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
            raise DatasetError(f"{path}: {e}") from e

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


class DatasetWriter:
    """Adds episodes to a dataset folder, creating it or (with ``resume``) appending to it.

    One writer per folder at a time: a lock file stops a second recording session
    from interleaving episodes into the same dataset.
    """

    def __init__(self, root: str | Path, info: DatasetInfo, *, resume: bool = False) -> None:
        self.root = Path(root)
        self._lock_fh = None
        if is_dataset(self.root):
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
            info.total_episodes, info.total_frames = existing.total_episodes, existing.total_frames
            info.jpeg_quality = existing.jpeg_quality
            info.extra = {**existing.extra, **info.extra}
            self.info = info
        else:
            if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
                raise DatasetError(
                    f"{self.root} exists and is not a telecorder dataset; choose a new or empty --out folder"
                )
            (self.root / "meta").mkdir(parents=True, exist_ok=True)
            (self.root / EPISODES_DIR).mkdir(exist_ok=True)
            self.info = info
        self._acquire_lock()
        if not is_dataset(self.root):
            self.info.save(self.root / INFO)
            (self.root / INDEX).touch()
            write_json_atomic(self.root / STATS, DatasetStats({}).to_json_dict())
        (self.root / EPISODES_DIR).mkdir(exist_ok=True)
        records, _ = read_index(self.root)
        known = {int(r["episode_index"]) for r in records} | set(episode_files(self.root))
        self.next_index = max(known) + 1 if known else 0
        self.unfinished = partial_files(self.root)

    def _acquire_lock(self) -> None:
        fh = open(self.root / "meta" / ".lock", "w")  # noqa: SIM115 - held for the writer's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            fh.close()
            raise DatasetError(f"{self.root} is being written by another telecorder process") from e
        self._lock_fh = fh

    def close(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

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
        path = self.root / EPISODES_DIR / episode_filename(index)
        return EpisodeFileWriter(path, self.info, {**attrs, "episode_index": index})

    def commit(self, writer: EpisodeFileWriter, attrs: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
        """Make the episode complete and visible: file, then index line, then stats and info."""
        if attrs.get("action_from_next_state"):
            writer.derive_action_from_next_state()
        arrays = writer.numeric_arrays()
        path = writer.finish(attrs)
        entry = {
            "episode_index": _index_of(path),
            "file": f"{EPISODES_DIR}/{path.name}",
            "length": writer.length,
            **record,
            "bytes": path.stat().st_size,
        }
        with open(self.root / INDEX, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._update_stats(arrays)
        self.info.total_episodes += 1
        self.info.total_frames += writer.length
        self.info.save(self.root / INFO)
        return entry

    def _update_stats(self, arrays: Mapping[str, np.ndarray]) -> None:
        finite = {}
        for name, a in arrays.items():
            if len(a) and a.dtype.kind in "fiub":
                rows = a.reshape(len(a), -1)
                # Non-finite rows are reported by doctor; they must not turn the dataset's statistics into NaN.
                finite[name] = a[np.isfinite(rows).all(axis=1)] if a.dtype.kind == "f" else a
        finite = {k: v for k, v in finite.items() if len(v)}
        path = self.root / STATS
        current = DatasetStats.from_json_dict(read_json(path)) if path.exists() else DatasetStats({})
        write_json_atomic(path, current.merge(DatasetStats.from_arrays(finite)).to_json_dict())


def _index_of(path: Path) -> int:
    m = _EPISODE_RE.match(path.name)
    if not m:
        raise ValueError(f"not an episode file name: {path.name}")
    return int(m.group(1))


def _ranges(indices: list[int]) -> str:
    if not indices:
        return "none"
    out, start, prev = [], indices[0], indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(out)
