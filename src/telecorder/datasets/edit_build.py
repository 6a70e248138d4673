"""Building an edited dataset: episode files copied (or, in place, shared) into a staging
folder, then index, statistics and ``info.json`` written from what landed there.

Episode files are copied byte for byte and only the attributes that change are rewritten
(in the copy, never in the source). A file that an in-place edit leaves exactly as it is
is hard-linked instead of copied: the staging folder then replaces the dataset and the
old name of the file disappears with the old folder, so no two datasets ever share an
inode that a later edit could rewrite under the other's feet. Outputs in a new folder
are always real copies for that reason.

Statistics are recomputed from the output files themselves, episode by episode, with
the same mergeable summaries a recording writes (``stats.episode_stats``), so they cover
exactly the episodes of the new index.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from ..atomic import fsync_dir, fsync_path, write_json_atomic
from ..errors import DatasetError
from .dataset import INDEX, STATS, episode_stats, write_index
from .edit_publish import EditError
from .episode_file import (
    EPISODES_DIR,
    EpisodeReader,
    episode_relpath,
    get_attrs,
    partial_path_for,
    set_attrs,
)
from .features import DatasetInfo
from .lock import DatasetLock
from .stats import DatasetStats

# Read by tests only: stop at a named point ("episode-N", "publish", "cleanup") so that a
# kill -9 lands there deterministically, without sleeps.
PAUSE_ENV = "TELECORDER_TEST_EDIT_PAUSE"
# Per-camera entries that recordings keep in attributes and index lines.
PER_CAMERA_KEYS = ("cameras", "repeated_frames", "dropped_frames")

Progress = Callable[[int, int], None]


def pause_point(name: str) -> None:
    if os.environ.get(PAUSE_ENV) == name:
        sys.stderr.write(f"PAUSED {name}\n")
        sys.stderr.flush()
        while True:
            time.sleep(3600)


@dataclass
class EpisodeJob:
    """One episode of an output: where it comes from and what changes on the way."""

    src_root: Path
    src_index: int
    record: dict[str, Any]
    new_index: int
    attrs: dict[str, Any] = field(default_factory=dict)  # attribute values to set
    record_updates: dict[str, Any] = field(default_factory=dict)
    provenance: str | None = None  # the operation, when the episode records where it came from
    drop: tuple[str, ...] = ()  # HDF5 dataset paths left out
    drop_cameras: tuple[str, ...] = ()
    link: bool = False  # an in-place edit may share the unchanged file (see the module note)

    @property
    def unchanged(self) -> bool:
        return (not self.attrs and not self.drop and self.provenance is None
                and self.new_index == self.src_index)


@dataclass
class Staged:
    """A complete dataset in a staging folder, still locked by this process."""

    folder: Path
    lock: DatasetLock
    records: list[dict[str, Any]]
    frames: int


def stage(folder: Path, info: DatasetInfo, jobs: list[EpisodeJob], purpose: str,
          progress: Callable[[], None] | None = None, carry_from: Path | None = None) -> Staged:
    """Write ``jobs`` into the new ``folder`` as a complete dataset with schema ``info``;
    ``carry_from`` (an in-place edit's dataset) also brings along everything of it that is
    not an episode or the metadata rewritten here (see :func:`carry_over`)."""
    (folder / "meta").mkdir(parents=True)
    (folder / EPISODES_DIR).mkdir()
    lock = DatasetLock(folder, purpose).acquire()
    try:
        if carry_from is not None:
            carry_over(carry_from, folder)
        stats = DatasetStats({}, episodes=())
        records = []
        for job in jobs:
            record, ep_stats = _write_episode(folder, info, job)
            stats = stats.merge(ep_stats)
            records.append(record)
            if progress is not None:
                progress()
        fsync_dir(folder / EPISODES_DIR)
        write_index(folder, records)
        write_json_atomic(folder / STATS, stats.to_json_dict())
        frames = sum(int(r["length"]) for r in records)
        info.total_episodes, info.total_frames = len(records), frames
        info.save(folder / "meta/info.json")  # last: until it exists, the folder is no dataset
    except BaseException:
        lock.release()
        raise
    return Staged(folder, lock, records, frames)


def _write_episode(folder: Path, info: DatasetInfo, job: EpisodeJob) -> tuple[dict[str, Any], DatasetStats]:
    src = job.src_root / episode_relpath(job.src_index)
    final = folder / episode_relpath(job.new_index)
    if not src.is_file():
        raise EditError(f"{src}: listed in {job.src_root / INDEX} but the file is missing; "
                        f"run 'telecorder doctor {job.src_root} --repair' first")
    try:
        # The source is checked before it is copied, so that a damaged one is refused by its own
        # name and never lands in the output (attributes included: the copy's are rewritten).
        with EpisodeReader(src, info) as reader:
            reader.attrs  # noqa: B018
    except DatasetError as e:
        raise EditError(f"episode {job.src_index} of {job.src_root} cannot be read: {e}") from e
    if not (job.link and job.unchanged and _linked(src, final)):
        tmp = partial_path_for(final)
        try:
            if job.drop:
                _copy_without(src, tmp, set(job.drop))
            else:
                shutil.copyfile(src, tmp)
            attrs_written = _rewrite_attrs(tmp, job)
        except OSError as e:
            raise EditError(f"{src}: cannot be copied ({e}); run 'telecorder doctor {job.src_root}'") from e
        fsync_path(tmp)
        os.replace(tmp, final)
    else:
        attrs_written = {}
    try:
        with EpisodeReader(final, info) as reader:
            length = len(reader)
            arrays = {s.name: reader.numeric(s.name) for s in info.numeric_features}
    except (DatasetError, OSError) as e:
        raise EditError(f"{src}: episode {job.src_index} of {job.src_root} cannot be read ({e}); "
                        f"run 'telecorder doctor {job.src_root}'") from e
    record = {**job.record, **job.record_updates}
    for key in PER_CAMERA_KEYS:
        if isinstance(record.get(key), dict) and job.drop_cameras:
            record[key] = {c: v for c, v in record[key].items() if c not in job.drop_cameras}
    if job.provenance is not None:
        record["source_dataset"] = attrs_written["source_dataset"]
        record["source_episode_index"] = attrs_written["source_episode_index"]
    record.update(episode_index=job.new_index, file=episode_relpath(job.new_index), length=length,
                  bytes=final.stat().st_size)
    return record, episode_stats(arrays, job.new_index)


def _linked(src: Path, final: Path) -> bool:
    try:
        os.link(src, final)
    except OSError:
        return False  # another file system, or links not allowed: copy instead
    return True


def _rewrite_attrs(path: Path, job: EpisodeJob) -> dict[str, Any]:
    """Set the attributes that change (and only those) in the copy at ``path``."""
    if job.unchanged and not job.drop_cameras:
        return {}
    with h5py.File(path, "r+") as f:
        old = get_attrs(f)
        updates = dict(job.attrs)
        if job.new_index != job.src_index or old.get("episode_index") != job.new_index:
            updates["episode_index"] = job.new_index
        for key in PER_CAMERA_KEYS:
            if isinstance(old.get(key), dict) and any(c in old[key] for c in job.drop_cameras):
                updates[key] = {c: v for c, v in old[key].items() if c not in job.drop_cameras}
        if job.provenance is not None:
            history = old.get("edit_history") or []
            if not isinstance(history, list):  # another tool's value: kept as the first entry, not lost
                history = [{"earlier_history": history}]
            if not history and "source_episode_index" in old:  # where a conversion took it from
                history.append({"dataset": old.get("source_dataset"), "episode_index": old["source_episode_index"]})
            history.append({"operation": job.provenance, "dataset": str(job.src_root),
                            "episode_index": job.src_index})
            updates.update(source_dataset=str(job.src_root), source_episode_index=job.src_index,
                           edit_history=history)
        set_attrs(f, updates)
    return updates


def _copy_without(src: Path, dst: Path, drop: set[str]) -> None:
    """A new file with every dataset of ``src`` except ``drop``: raw chunks copied as they are
    (HDF5's object copy), attributes kept, groups created only where something remains."""
    with h5py.File(src, "r") as s, h5py.File(dst, "x") as d:
        d.attrs.update(s.attrs)
        paths: list[str] = []
        s.visititems(lambda name, obj: paths.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in paths:
            if name in drop:
                continue
            parent, _, leaf = name.rpartition("/")
            group = d
            for part in filter(None, parent.split("/")):
                here = f"{group.name.rstrip('/')}/{part}"
                if part not in group:
                    group.create_group(part).attrs.update(s[here].attrs)
                group = group[part]
            s.copy(s[name], group, name=leaf)


_REWRITTEN = {"meta/info.json", "meta/episodes.jsonl", "meta/stats.json", "meta/.lock"}


def carry_over(src: Path, dst: Path) -> list[str]:
    """Bring every file of ``src`` that the edit does not rewrite into ``dst`` (hard links, or
    copies where links are refused): files set aside in ``episodes/.unrecoverable/``, a
    user's notes, other tools' metadata. The exchange deletes the old folder, and with it
    anything not carried. Episode files and atomic-write debris are not carried."""
    from ..atomic import is_temporary

    carried = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        target = dst / rel
        if rel in _REWRITTEN or is_temporary(path.name):
            continue
        if path.parent == src / EPISODES_DIR and path.name.startswith("episode_") and path.suffix == ".h5":
            continue
        if path.is_symlink():
            target.symlink_to(os.readlink(path))
        elif path.is_dir():
            target.mkdir(exist_ok=True)
            continue
        elif not _linked(path, target):
            shutil.copy2(path, target)
        carried.append(rel)
    return carried
