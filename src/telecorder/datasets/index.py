"""A native dataset folder's index and files: ``meta/episodes.jsonl`` and ``episodes/*.h5``.

Reading, checking and rewriting the index, the episode files it may name, and each episode's
statistics: what :mod:`.dataset` (open, write) and :mod:`.recovery` (mend after a crash) share.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..errors import DatasetError
from .episode_file import EPISODES_DIR, PARTIAL_SUFFIX, episode_filename, episode_relpath
from .lock import DatasetLock
from .stats import DatasetStats

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
    # A task list's task (collect --tasks): its id, family and which paraphrase was recorded.
    "task_id": ((str,), True),
    "task_family": ((str,), True),
    "paraphrase_index": ((int,), True),
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
