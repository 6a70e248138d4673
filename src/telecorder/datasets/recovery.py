"""Put a dataset back in order after a crash, deleting nothing a user could want.

A recording killed at any moment leaves one of a few states, each of which this module
mends (the caller holds the dataset's lock, so nothing else is writing):

* an unfinished ``.episode_N.partial.h5``: its flushed steps are copied into a complete
  ``episode_N.h5`` marked ``recovered`` (or, if nothing can be read, the file is moved
  to ``episodes/.unrecoverable/``, never deleted);
* a complete episode file whose index line was never appended, or was torn mid-write:
  the line is rebuilt from the attributes the file carries. The file's name gives its
  number: an ``episode_index`` attribute that says otherwise (a copied file) is rewritten
  to match, in a copy that replaces the file, so a second repair finds nothing to do;
* statistics that miss an episode (a crash between the index append and the stats
  write): recomputed from the episode files;
* temporaries of an atomic write or a salvage that a kill interrupted: removed (the file
  they were to replace is intact, or the partial they copy from still exists).

``collect --resume`` runs :func:`recover` before numbering anything; ``doctor --repair``
runs it with ``thorough=True``, which also drops index lines whose file is gone and
sets aside episode files that cannot be read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..atomic import fsync_dir, fsync_path, is_temporary, write_json_atomic
from ..errors import DatasetError
from ..safe_paths import refuse_links
from .episode_file import (
    EPISODES_DIR,
    FRAME_INDEX_GROUP,
    IMAGE_TS_GROUP,
    IMAGES_GROUP,
    LATENESS_PATH,
    LOOP_PATHS,
    EpisodeReader,
    episode_filename,
    episode_relpath,
    get_attrs,
    set_attrs,
)
from .features import DatasetInfo, read_json
from .hdf5_links import refuse_other_files
from .index import (
    INDEX,
    INFO,
    STATS,
    episode_files,
    episode_stats,
    partial_files,
    read_index,
    typed_index_record,
    write_index,
)
from .stats import DatasetStats, format_ranges

UNRECOVERABLE_DIR = ".unrecoverable"
SALVAGE_SUFFIX = ".salvage"


def recover(
    root: str | Path, info: DatasetInfo | None = None, *, thorough: bool = False, unfinished: str = "salvage"
) -> list[str]:
    """Mend what a crash left in ``root``; returns what was done, one line per action.

    ``unfinished="discard"`` deletes unfinished episodes instead of salvaging them: for
    outputs derived from a source that is still there (``convert --resume``), where a
    truncated copy would be wrong and a complete one is made again.
    The caller must hold the dataset's lock. With nothing to mend, nothing is written.
    """
    root = Path(root)
    for meta in (INFO, INDEX, STATS):  # files repair replaces: a folder there is not ours to remove
        if (root / meta).is_dir():
            raise DatasetError(f"{root / meta}: is a folder, not the file telecorder keeps there; move it out of "
                               "the dataset, then run 'telecorder doctor --repair' again")
    info = info if info is not None else DatasetInfo.load(root / INFO)
    actions = _remove_temporaries(root)
    for partial in partial_files(root):
        if unfinished == "discard":
            partial.unlink()
            actions.append(f"discarded {partial.name}, cut short by an interruption (it is written again)")
        else:
            actions.append(salvage_partial(root, partial, info))

    records, problems = read_index(root)
    by_index = {int(r["episode_index"]): r for r in records}
    index_changed = bool(problems)
    if problems:
        actions.append(f"rebuilt {INDEX}: " + "; ".join(p.split(": ", 1)[-1] for p in problems[:3])
                       + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
    files = episode_files(root)
    if thorough:
        for idx in sorted(set(by_index) - set(files)):
            del by_index[idx]
            index_changed = True
            actions.append(f"dropped the index line of episode {idx} (its file is missing)")
    for idx in sorted(set(files) - set(by_index)):
        try:
            with EpisodeReader(files[idx], info) as reader:
                claimed = claimed_index(reader.attrs)
                record = record_from_file(reader, idx)
            if not _is_number(claimed, idx):
                actions.append(renumber_file(root, files[idx], idx, claimed))
                record["bytes"] = files[idx].stat().st_size
            by_index[idx] = record
            index_changed = True
            actions.append(f"added episode {idx} to the index (its file was complete, its index line missing)")
        except DatasetError as e:
            if thorough:
                actions.append(quarantine(root, files[idx], f"unreadable ({e})"))
            else:
                actions.append(f"left {files[idx].name} out of the index: {e}; run 'telecorder doctor {root}'")

    if thorough:
        actions += _renumber_indexed(root, files, set(by_index))
    stats_ok = not stats_disagreements(root, set(by_index))
    if thorough or index_changed or not stats_ok:
        stats, unreadable = _recompute_stats(root, info, sorted(by_index))
        for idx, why in unreadable.items():
            if thorough:
                actions.append(quarantine(root, root / episode_relpath(idx), f"unreadable ({why})"))
                del by_index[idx]
                index_changed = True
            else:
                actions.append(f"left episode {idx} out of {STATS}: {why}; run 'telecorder doctor {root}'")
        if index_changed:
            write_index(root, [by_index[i] for i in sorted(by_index)])
        fresh = stats.to_json_dict()
        if not stats_ok:
            write_json_atomic(root / STATS, fresh)
            actions.append(f"recomputed {STATS}: it did not cover the indexed episodes")
        elif not _same_json(root / STATS, fresh):  # unchanged statistics are not rewritten: repair converges
            write_json_atomic(root / STATS, fresh)
            actions.append(f"recomputed {STATS} ({len(by_index)} episodes)")
    frames = sum(int(r.get("length", 0)) for r in by_index.values())
    current = DatasetInfo.load(root / INFO)
    if (current.total_episodes, current.total_frames) != (len(by_index), frames):
        current.total_episodes, current.total_frames = len(by_index), frames
        current.save(root / INFO)
        actions.append(f"set the totals in {INFO} to {len(by_index)} episodes, {frames} frames")
    return actions


def _same_json(path: Path, obj: Any) -> bool:
    try:
        # Compared as text: a NaN equals itself there
        return json.dumps(read_json(path), sort_keys=True) == json.dumps(obj, sort_keys=True)
    except (DatasetError, ValueError, OSError):
        return False


def _renumber_indexed(root: Path, files: dict[int, Path], indexed: set[int]) -> list[str]:
    actions = []
    for idx in sorted(indexed & set(files)):
        try:
            with EpisodeReader(files[idx]) as reader:
                claimed = claimed_index(reader.attrs)
        except (DatasetError, OSError, ValueError):
            continue  # unreadable: the statistics pass below sets it aside
        if not _is_number(claimed, idx):
            actions.append(renumber_file(root, files[idx], idx, claimed))
    return actions


def _recompute_stats(root: Path, info: DatasetInfo, indices: list[int]) -> tuple[DatasetStats, dict[int, str]]:
    stats = DatasetStats({}, episodes=())
    unreadable: dict[int, str] = {}
    for idx in indices:
        try:
            with EpisodeReader(root / episode_relpath(idx), info) as reader:
                arrays = {s.name: reader.numeric(s.name) for s in info.numeric_features}
        except DatasetError as e:
            unreadable[idx] = str(e)
            continue
        stats = stats.merge(episode_stats(arrays, idx))
    return stats, unreadable


def stats_disagreements(root: Path, indexed: set[int]) -> list[str]:
    """What is wrong with ``stats.json`` relative to the index (empty when it agrees; statistics
    written before they recorded their episodes are taken as they are)."""
    path = root / STATS
    try:
        stats = DatasetStats.from_json_dict(read_json(path))
    except (DatasetError, ValueError) as e:
        return [f"{path}: {e} (repair recomputes it)"]
    if stats.episodes is None or stats.episodes == indexed:
        return []
    out = []
    missing, extra = indexed - stats.episodes, stats.episodes - indexed
    if missing:
        out.append(f"{path}: statistics leave out episode(s) {format_ranges(missing)} of the index "
                   "(a crash before they were updated?); repair recomputes them")
    if extra:
        out.append(f"{path}: statistics include episode(s) {format_ranges(extra)} that the index does not list; "
                   "repair recomputes them")
    return out


def record_from_file(reader: EpisodeReader, idx: int) -> dict[str, Any]:
    """An index line rebuilt from the attributes an episode file carries; ``idx`` is the
    number in its file name (the attribute may disagree: see :func:`renumber_file`)."""
    a = reader.attrs
    return typed_index_record({  # an attribute of the wrong type must not make the line unreadable
        "episode_index": idx,
        "file": episode_relpath(idx),
        "length": len(reader),
        "duration_s": a.get("duration_s"),
        "task": a.get("task"),
        **_task_fields(a),
        "success": a.get("success"),
        "start_time": a.get("start_time"),
        "device": a.get("device"),
        "late_ticks": a.get("late_ticks"),
        "missed_ticks": a.get("missed_ticks"),
        "repeated_frames": a.get("repeated_frames"),
        "dropped_frames": a.get("dropped_frames"),
        "recovered": bool(a.get("recovered", False)),
        **_source_index(a.get("source_episode_index")),
        "bytes": reader.path.stat().st_size,
    })


def _source_index(value: Any) -> dict[str, Any]:
    """The ``source_episode_index`` field of a rebuilt index line: an episode number or a source's
    episode id (text) as the attribute holds it; anything else (a damaged attribute) is left out."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)
    if (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str):
        return {"source_episode_index": value}
    return {}


def claimed_index(attrs: dict[str, Any]) -> Any:
    """The number an episode file's ``episode_index`` attribute gives (an int), or what it holds
    instead (anything else: missing, text, a float, a list) for the caller to report."""
    value = attrs.get("episode_index")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_number(value: Any, idx: int | None = None) -> bool:
    """Whether ``value`` is an episode number (``idx`` itself, if given); ``True`` is not 1 here."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0 and (idx is None or value == idx)


def index_disagreement(reader: EpisodeReader, idx: int) -> str | None:
    """What ``doctor`` says when the ``episode_index`` attribute of episode file ``idx`` is not ``idx``."""
    claimed = claimed_index(reader.attrs)
    if _is_number(claimed, idx):
        return None
    if _is_number(claimed):
        return (f"{reader.path}: its episode_index attribute says {claimed}, its name {idx} (a copied file?); "
                f"repair sets the attribute to {idx}")
    return (f"{reader.path}: episode_index attribute is {claimed!r}, not an episode number; repair sets it to "
            f"{idx}, the number in the file name")


def renumber_file(root: Path, path: Path, idx: int, claimed: Any) -> str:
    """Set the ``episode_index`` attribute of ``path`` to ``idx``, the number in its name.

    The attribute is written into a copy that then replaces the file by rename: a kill leaves
    the file as it was (and the copy as a temporary that repair removes), and a file that is
    a link is replaced by a real one rather than written through.
    """
    tmp = path.with_name("." + path.name + SALVAGE_SUFFIX)
    if os.path.lexists(tmp):
        tmp.unlink()
    try:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as f:
            set_attrs(f, {"episode_index": idx})
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    said = (f"said it was episode {claimed} (a copy of that file?)" if _is_number(claimed)
            else f"had episode_index {claimed!r}, not a number")
    return f"{path.relative_to(root)} {said}; set its episode_index to {idx}, the number in its name"


def quarantine(root: Path, path: Path, why: str) -> str:
    """Move ``path`` into ``episodes/.unrecoverable/`` under a name no earlier file has."""
    dest_dir = root / EPISODES_DIR / UNRECOVERABLE_DIR
    dest_dir.mkdir(exist_ok=True)
    # A link there would move the file out of the dataset (the caller's lock checked it too).
    refuse_links(root, (EPISODES_DIR, f"{EPISODES_DIR}/{UNRECOVERABLE_DIR}"), purpose="repair it")
    base = path.name.lstrip(".")
    dest, n = dest_dir / base, 1
    while os.path.lexists(dest):
        dest, n = dest_dir / f"{base}.{n}", n + 1
    os.replace(path, dest)  # same file system: the move is atomic and never copies
    fsync_dir(dest_dir)
    fsync_dir(path.parent)
    return f"moved {path.name} to {dest.relative_to(root)}: {why}"


def temporaries(root: Path) -> list[Path]:
    """Temporaries of atomic writes and salvages that a kill interrupted (safe to remove: the file
    they were to replace is intact, or the partial they copy from still exists)."""
    found = []
    for folder in (root / "meta", root / EPISODES_DIR):
        if folder.is_dir():
            found += [p for p in folder.iterdir()  # a link under such a name goes too (the link, not its target)
                      if (p.is_file() or p.is_symlink()) and (is_temporary(p.name) or p.name.endswith(SALVAGE_SUFFIX))]
    return sorted(found)


def _remove_temporaries(root: Path) -> list[str]:
    removed = temporaries(root)
    for p in removed:
        p.unlink()
    names = ", ".join(p.name for p in removed)
    return [f"removed {len(removed)} temporary file(s) an interrupted write left: {names}"] if removed else []


def salvage_partial(root: Path, partial: Path, info: DatasetInfo) -> str:
    """Copy the steps an interrupted episode had flushed into a complete episode file."""
    try:
        src = h5py.File(partial, "r")
    except OSError as e:
        return quarantine(root, partial, f"unreadable HDF5 ({e})")
    with src:
        try:
            refuse_other_files(src, partial)  # a file linking into others is not ours: set aside
            attrs = get_attrs(src)
            idx = int(attrs["episode_index"])
            episode_filename(idx)
            paths = ["timestamp", LATENESS_PATH] + [s.h5_path for s in info.numeric_features]
            for cam in info.cameras:
                paths += [f"{IMAGES_GROUP}/{cam}", f"{IMAGE_TS_GROUP}/{cam}", f"{FRAME_INDEX_GROUP}/{cam}"]
            declared = min(src[p].shape[0] for p in paths)
            data = {p: (readable_prefix(src[p], declared), dict(src[p].attrs)) for p in paths}
        except (DatasetError, OSError, KeyError, ValueError, TypeError) as e:
            return quarantine(root, partial, f"damaged ({e})")
        optional = _optional_timing(src, declared)
    n = _consistent_length(data, info)
    data = {p: (values[:n], ds_attrs) for p, (values, ds_attrs) in data.items()}
    for p, (values, ds_attrs) in optional.items():
        if len(values) >= n:  # one shorter than the steps kept explains nothing: left out, steps kept
            data[p] = (values[:n], ds_attrs)
    final = root / episode_relpath(idx)
    if n == 0:
        return quarantine(root, partial, "no complete step was written before the interruption")
    if final.exists():
        return quarantine(root, partial, f"episode {idx} exists already")
    tmp = partial.with_name(partial.name + SALVAGE_SUFFIX)
    if os.path.lexists(tmp):
        tmp.unlink()
    with h5py.File(tmp, "x") as dst:  # exclusive create: never opens an existing file or link
        for p, (values, ds_attrs) in data.items():
            if values.dtype == object:
                ds = dst.create_dataset(p, shape=(n,), dtype=h5py.vlen_dtype(np.dtype("uint8")))
                for i, v in enumerate(values):
                    ds[i] = v
            else:
                ds = dst.create_dataset(p, data=values)
            ds.attrs.update(ds_attrs)
        attrs.pop("success", None)  # an interrupted demo's outcome is unknown
        set_attrs(dst, {**attrs, "recovered": True, "num_steps": n})
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    partial.unlink()
    fsync_dir(final.parent)
    lost = f"; the last {declared - n} step(s) it declared were unreadable" if n < declared else ""
    return f"salvaged {n} steps of interrupted episode {idx} into {final.name} (marked recovered){lost}"


def _optional_timing(src: h5py.File, declared: int) -> dict[str, tuple[np.ndarray, dict]]:
    """The readable rows (at most ``declared``) of a partial file's per-tick loop measurements.

    They only explain late ticks: steps are never cut for them (the caller leaves out one
    shorter than the steps kept), and a dataset that is not one float per step is left out.
    """
    out: dict[str, tuple[np.ndarray, dict]] = {}
    for p in LOOP_PATHS:
        try:
            ds = src.get(p)
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind != "f":
                continue
            out[p] = (readable_prefix(ds, min(declared, ds.shape[0])), dict(ds.attrs))
        except (OSError, KeyError, ValueError, TypeError, RuntimeError):
            continue
    return out


def readable_prefix(ds: h5py.Dataset, n: int) -> np.ndarray:
    """The first ``n`` rows of ``ds``, or as many of them as can be read.

    A kill during ``H5Fflush`` can leave rows whose chunk or variable-length heap lies beyond
    the end-of-allocation the superblock recorded at the previous flush ("len not positive
    after adjustment for EOA"). Everything flushed before is still readable: read by chunk,
    then by row inside the first chunk that fails, and stop at the first row that fails.
    """
    try:
        return ds[:n]
    except OSError:
        pass
    step = ds.chunks[0] if ds.chunks else 1
    parts: list[np.ndarray] = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        try:
            parts.append(ds[start:stop])
            continue
        except OSError:
            pass
        for row in range(start, stop):
            try:
                parts.append(ds[row : row + 1])
            except OSError:
                break
        break
    return np.concatenate(parts) if parts else ds[:0]


def _consistent_length(data: dict[str, tuple[np.ndarray, dict]], info: DatasetInfo) -> int:
    """Steps every column has, cut before the first step that was allocated but never written
    (a crash can leave a dataset's extent on disk ahead of its data: fill values, i.e. a zero
    timestamp or an empty frame)."""
    n = min(len(values) for values, _ in data.values())
    ts = data["timestamp"][0][:n]
    bad = ~np.isfinite(ts)
    bad[1:] |= np.diff(ts) <= 0
    for cam in info.cameras:
        frames = data[f"{IMAGES_GROUP}/{cam}"][0][:n]
        bad |= np.array([len(f) == 0 for f in frames], dtype=bool)
    return int(np.argmax(bad)) if bad.any() else n


def _task_fields(attrs: Any) -> dict[str, Any]:
    """The task-list fields of an episode recorded from one (none for any other episode, so that
    a rebuilt line matches the one the recorder wrote)."""
    return {k: _plain(attrs.get(k)) for k in ("task_id", "task_family", "paraphrase_index") if k in attrs}


def _plain(value: Any) -> Any:
    # HDF5 hands back numpy scalars; the index holds JSON.
    return value.item() if isinstance(value, np.generic) else value
