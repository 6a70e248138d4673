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

import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write, write_json_atomic
from ..errors import DatasetError, SchemaMismatchError
from .episode_file import (
    EPISODES_DIR,
    PARTIAL_SUFFIX,
    EpisodeFileWriter,
    EpisodeReader,
    episode_filename,
    episode_relpath,
)
from .features import DatasetInfo, read_json
from .lock import DatasetLock
from .stats import DatasetStats, format_ranges

INFO = "meta/info.json"
INDEX = "meta/episodes.jsonl"
STATS = "meta/stats.json"
_EPISODE_RE = re.compile(r"^episode_(\d{6,})\.h5$")
_ANY_EPISODE_RE = re.compile(r"^\.?episode_(\d{6,})\b")  # complete, partial, salvage or set aside


def is_dataset(path: str | Path) -> bool:
    return (Path(path) / INFO).is_file()


def read_index(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Index lines of ``meta/episodes.jsonl`` (one per episode) and descriptions of what is wrong.

    Unreadable lines (a crash mid-append) are left out; of an episode listed twice the last
    line counts; a line's ``file`` is never used to open anything (the file name derives
    from the episode number), and one that disagrees is reported.
    """
    path = Path(root) / INDEX
    by_index: dict[int, dict[str, Any]] = {}
    lines_of: dict[int, list[int]] = {}
    problems: list[str] = []
    if not path.exists():
        return [], [f"{path}: index file is missing"]
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except IsADirectoryError:
        return [], [f"{path}: is a folder, not the index file; move it out of the dataset"]
    except OSError as e:
        return [], [f"{path}: cannot be read ({e.strerror or e})"]
    lines = raw.split(b"\n")
    torn = bool(lines) and lines[-1] != b""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
            idx = rec["episode_index"]
            episode_filename(idx)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, RecursionError):
            what = "torn last line" if torn and lineno == len(lines) else "unreadable index line"
            problems.append(f"{path}:{lineno}: {what} (interrupted write?)")
            continue
        wrong = index_line_problem(rec)
        if wrong:
            # Left out like an unreadable line: doctor reports it, repair rebuilds it from the file.
            problems.append(f"{path}:{lineno}: episode {int(idx)}: {wrong}; repair rebuilds the line from the file")
            continue
        idx = int(idx)
        expected = episode_relpath(idx)
        if rec.get("file", expected) != expected:
            problems.append(
                f"{path}:{lineno}: episode {idx} names file {rec['file']!r}; episodes are read from "
                f"{expected}, whatever the index says"
            )
            rec["file"] = expected
        by_index[idx] = rec
        lines_of.setdefault(idx, []).append(lineno)
    for idx, at in lines_of.items():
        if len(at) > 1:
            problems.append(f"{path}: episode {idx} is listed {len(at)} times (lines {', '.join(map(str, at))}); "
                            "the last line counts")
    return [by_index[i] for i in sorted(by_index)], problems


# The most steps an index line may give an episode: 2**32 steps is five days at 10 kHz; beyond it a
# length is damage, and sums of lengths (a loader's sample count) stay far inside int64.
MAX_EPISODE_STEPS = 2**32
# Index fields that readers use, and the JSON types they must have (None: may be null).
_INDEX_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "file": ((str,), False),
    "task": ((str,), True),
    "success": ((bool, int), True),
    "bad": ((bool,), True),
    "bad_reason": ((str,), True),
    "recovered": ((bool,), True),
    "duration_s": ((int, float), True),
    "start_time": ((int, float, str), True),
    "device": ((str,), True),
    "bytes": ((int,), True),
}


def index_line_problem(rec: Any) -> str | None:
    """What is wrong with the types of an index line (None: nothing): ``length`` is a whole
    number of steps, every other known field has its type or is null."""
    if not isinstance(rec, dict):
        return f"the line is a JSON {type(rec).__name__}, not an object"
    length = rec.get("length")
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= MAX_EPISODE_STEPS:
        return f"'length' must be a whole number of steps up to {MAX_EPISODE_STEPS}, not {length!r:.40}"
    for key, (types, nullable) in _INDEX_FIELDS.items():
        if key not in rec or (nullable and rec[key] is None):
            continue
        value = rec[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            return f"{key!r} has the wrong type ({type(value).__name__}: {value!r:.40})"
        if isinstance(value, float) and not np.isfinite(value):
            return f"{key!r} is not a finite number ({value!r})"
    return None


def typed_index_record(rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` with every known optional field of the wrong type set to null, so that an index line
    rebuilt from a file's attributes passes :func:`index_line_problem` (repair converges)."""
    out = dict(rec)
    for key in _INDEX_FIELDS:
        value = out.get(key)
        if value is not None and index_line_problem({"length": 0, key: value}) is not None:
            out[key] = None
    return out


def write_index(root: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``meta/episodes.jsonl`` atomically (readers see the old or the new index)."""
    with atomic_write(Path(root) / INDEX) as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")


def append_index_line(root: Path, entry: Mapping[str, Any]) -> None:
    """Append one line, durably; a torn tail left by a crash is ended first so that it cannot
    swallow the new line (doctor reports the fragment, repair rebuilds it from its file)."""
    line = (json.dumps(dict(entry)) + "\n").encode("utf-8")
    path = Path(root) / INDEX
    try:
        # O_NOFOLLOW: a link there (a dataset from a cache or an archive) would take the line elsewhere.
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if path.is_symlink():
            raise DatasetError(f"{path} is a symbolic link; telecorder appends to no file through a link: "
                               "replace it with a copy of what it points to, then record again") from e
        raise DatasetError(f"{path}: cannot be opened for appending ({e.strerror})") from e
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a crash cut the last line short
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_bad(root: str | Path, index: int, bad: bool = True, reason: str | None = None) -> dict[str, Any]:
    """Mark (or unmark) an episode as bad in the index; its data is never touched.

    Loaders and ``convert`` can then leave marked episodes out. Holds the dataset's lock,
    so it cannot lose an index line that a recording appends meanwhile.
    """
    root = Path(root)
    with DatasetLock(root, f"mark episode {index} {'bad' if bad else 'good'}"):
        records, problems = read_index(root)
        if problems:
            raise DatasetError(
                f"{root}: the index has problems ({problems[0]}); run 'telecorder doctor {root} --repair' first"
            )
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
    return sorted(folder.glob(".*" + PARTIAL_SUFFIX)) if folder.is_dir() else []


def numbers_in_use(root: Path) -> set[int]:
    """Every episode number that a file of any kind already carries: complete, unfinished,
    being salvaged or set aside. A new episode takes none of them."""
    used = set(episode_files(root))
    folder = root / EPISODES_DIR
    for where in (folder, folder / ".unrecoverable"):
        if where.is_dir():
            for p in where.iterdir():
                m = _ANY_EPISODE_RE.match(p.name)
                if m:
                    used.add(int(m.group(1)))
    return used


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


def episode_stats(arrays: Mapping[str, np.ndarray], index: int) -> DatasetStats:
    """Statistics of one episode's numeric features, over its finite rows.

    Non-finite rows are reported by doctor; they must not turn the dataset's statistics into NaN.
    """
    finite = {}
    for name, a in arrays.items():
        if len(a) and a.dtype.kind in "fiub":
            if a.dtype.kind == "f":
                a = a[np.isfinite(a.reshape(len(a), -1)).all(axis=1)]
            if len(a):
                finite[name] = a
    return DatasetStats.from_arrays(finite, episode=index)


def _index_of(path: Path) -> int:
    m = _EPISODE_RE.match(path.name)
    if not m:
        raise ValueError(f"not an episode file name: {path.name}")
    return int(m.group(1))
