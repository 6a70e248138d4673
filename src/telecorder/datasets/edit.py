"""``telecorder edit``: merge, delete episodes, split, relabel tasks, remove features.

The operations users of LeRobot's ``lerobot-edit-dataset`` rely on, for the native
store, each one safe at every instant:

* it holds the lock of every dataset it reads or replaces (a recording, a repair or a
  second edit cannot interleave with it), and of the folder it builds;
* it builds a complete new dataset in a hidden staging folder and publishes it in one
  atomic step (:mod:`.edit_publish`); a kill -9 at any point leaves the old dataset as
  it was, and nothing under the destination name that looks complete but is not;
* outputs renumber their episodes 0..N-1; an episode that moved records where it came
  from (``source_dataset``, ``source_episode_index`` in its attributes and index line,
  and the chain of earlier ones in ``edit_history``); bad-episode marks and every other
  per-episode field travel with it;
* statistics are recomputed from the output's files, so ``telecorder doctor`` passes on
  every output.

Unlike ``lerobot-edit-dataset``, an in-place edit keeps no ``_old`` copy: the exchange is
atomic, so there is nothing to fall back to and nothing to clean up by hand.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .dataset import INFO, Dataset, episode_files, is_dataset, partial_files
from .edit_build import EpisodeJob, Progress, Staged, pause_point, stage
from .edit_publish import EditError, clear_leftovers, publish_in_place, publish_new, staging_path
from .edit_tasks import TaskFile, read_task_file, task_list_fields
from .episode_file import FRAME_INDEX_GROUP, IMAGE_TS_GROUP, IMAGES_GROUP
from .features import DatasetInfo
from .lock import DatasetLock, DatasetLockedError, DatasetReadLock
from .ranges import EpisodeRanges, compact, parse_episode_ranges
from .splits import episode_split
from .stats import format_ranges

__all__ = [
    "EditError",
    "EditReport",
    "TaskFile",
    "delete_episodes",
    "merge",
    "read_task_file",
    "remove_features",
    "set_task",
    "split",
]


@dataclass
class EditReport:
    """What an edit produced: output folder(s), their episodes and frames, and what changed."""

    operation: str
    outputs: dict[str, Path]
    episodes: dict[str, int]
    frames: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "episodes": self.episodes,
            "frames": self.frames,
            **self.details,
        }


@dataclass
class _Source:
    root: Path
    info: DatasetInfo
    records: list[dict[str, Any]]
    # Read unlocked (no usable lock file): checked for changes before anything is published.
    guard: DatasetReadLock | None = None

    @property
    def indices(self) -> list[int]:
        return [int(r["episode_index"]) for r in self.records]


# -- operations ----------------------------------------------------------------------------


def merge(sources: Sequence[str | Path], out: str | Path, *, progress: Progress | None = None) -> EditReport:
    """Episodes of every source, in order, into the new dataset ``out`` (renumbered 0..N-1).

    The sources must agree on fps, robot, clock, image encoding and every feature; the
    error names the first difference.
    """
    if len(sources) < 2:
        raise EditError("merge takes two or more datasets (telecorder edit merge A B ... --out C)")
    roots = [Path(s) for s in sources]
    out = _new_output(out, roots)
    with _locked(roots, "merge") as loaded:
        first = loaded[0]
        for other in loaded[1:]:
            diffs = first.info.differences(other.info)
            if first.info.image_encoding != other.info.image_encoding:
                diffs.append(f"image encoding {first.info.image_encoding} vs {other.info.image_encoding}")
            if diffs:
                more = f" (and {len(diffs) - 1} more difference(s))" if len(diffs) > 1 else ""
                raise EditError(f"cannot merge {other.root} with {first.root}: {diffs[0]}{more}; "
                                "merge only datasets recorded with the same features, fps and robot "
                                "(remove-feature or convert one of them first)")
        jobs = []
        for src in loaded:
            for rec in src.records:
                jobs.append(EpisodeJob(src.root, int(rec["episode_index"]), rec, len(jobs), provenance="merge"))
        info = _derived_info(first.info, "merge", [s.root for s in loaded])
        staged = _stage_all([(out, info, jobs)], "merge", progress)
        _unchanged(loaded, staged)
        _publish_new(staged, [out])
    return _report("merge", {"out": out}, staged, sources=[str(r) for r in roots])


def delete_episodes(dataset: str | Path, episodes: Iterable[int], *, out: str | Path | None = None,
                    in_place: bool = False, progress: Progress | None = None) -> EditReport:
    """The dataset without ``episodes``, renumbered, to ``out`` or (``in_place``) in its place."""
    root = Path(dataset)
    target = _target(root, out, in_place, "delete-episodes")
    if not isinstance(episodes, EpisodeRanges):
        episodes = list(episodes)
    if not episodes:
        raise EditError("no episodes to delete given (e.g. 3,7-9)")
    with _locked([root], "delete episodes", in_place=in_place) as (src,):
        doomed = sorted(_existing(episodes, src.indices, root, "to delete"))
        kept = [r for r in src.records if int(r["episode_index"]) not in set(doomed)]
        if not kept:
            raise EditError(f"{root}: deleting {format_ranges(doomed)} would leave no episode; "
                            "delete the folder instead")
        jobs = []
        for k, rec in enumerate(kept):
            old = int(rec["episode_index"])
            moved = not in_place or old != k
            jobs.append(EpisodeJob(src.root, old, rec, k, provenance="delete-episodes" if moved else None,
                                   link=in_place))
        info = _derived_info(src.info, "delete-episodes", [src.root], deleted=format_ranges(doomed))
        staged = _stage_all([(target, info, jobs)], "delete episodes", progress, src.root if in_place else None)
        _unchanged([src], staged)
        _publish(staged, [target], in_place)
    return _report("delete-episodes", {"out": target}, staged, deleted=doomed)


def split(dataset: str | Path, *, val_fraction: float, out_train: str | Path, out_val: str | Path,
          seed: int = 0, progress: Progress | None = None) -> EditReport:
    """Whole episodes into two new datasets, deterministically (:func:`.splits.episode_split`).

    Both are built before either is published. A kill between the two publishing renames
    leaves the first complete and the second absent; rerunning the same split then keeps
    the first (its ``edit_history`` says it is this very split) and makes the second.
    """
    root = Path(dataset)
    if not 0.0 < val_fraction < 1.0:
        raise EditError(f"--val-fraction must be between 0 and 1 (exclusive), not {val_fraction}")
    train_out = _new_output(out_train, [root], may_exist=True)
    val_out = _new_output(out_val, [root], may_exist=True)
    if train_out.resolve() == val_out.resolve():
        raise EditError("--out-train and --out-val must be different folders")
    with _locked([root], "split") as (src,):
        train, val = episode_split(src.indices, val_fraction=val_fraction, seed=seed)
        if not val:
            raise EditError(f"{root}: {len(src.indices)} episode(s) cannot be split; a split needs two or more")
        by_index = {int(r["episode_index"]): r for r in src.records}
        plans, kept = [], {}
        for name, dst, chosen in (("train", train_out, train), ("val", val_out, val)):
            jobs = [EpisodeJob(src.root, i, by_index[i], k, provenance="split") for k, i in enumerate(chosen)]
            info = _derived_info(src.info, "split", [src.root], split=name, val_fraction=val_fraction,
                                 seed=seed, episodes=format_ranges(chosen))
            if dst.exists():
                if not _made_by(dst, info):
                    raise EditError(f"{dst} exists; choose a new folder for the result")
                kept[name] = Dataset.open(dst)
                continue
            plans.append((dst, info, jobs))
        staged = _stage_all(plans, "split", progress)
        _unchanged([src], staged)
        _publish_new(staged, [dst for dst, _, _ in plans])
    made = dict(zip([n for n in ("train", "val") if n not in kept], staged, strict=True))
    return EditReport(
        operation="split",
        outputs={"train": train_out, "val": val_out},
        episodes={n: len(made[n].records) if n in made else len(kept[n]) for n in ("train", "val")},
        frames={n: made[n].frames if n in made else kept[n].num_frames for n in ("train", "val")},
        details={"train_episodes": train, "val_episodes": val, "seed": seed, "kept": sorted(kept)},
    )


def _made_by(dst: Path, info: DatasetInfo) -> bool:
    """Whether ``dst`` is exactly what this edit makes, published by an earlier run of it that
    was interrupted before it finished (and left unchanged since)."""
    if not is_dataset(dst):
        return False
    try:
        history = DatasetInfo.load(dst / INFO).extra.get("edit_history") or []
    except DatasetError:
        return False

    def what(entry: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in entry.items() if k != "time"}

    return bool(history) and what(history[-1]) == what(info.extra["edit_history"][-1])


def set_task(dataset: str | Path, tasks: Mapping[int, str] | str, *, episodes: Iterable[int] | None = None,
             out: str | Path | None = None, progress: Progress | None = None) -> EditReport:
    """Relabel episodes' language instructions: ``task`` and ``language_instruction`` in the
    episode files and ``task`` in the index. ``tasks`` is ``{episode: text}``, or one text for
    ``episodes`` (default: every episode). In place unless ``out`` is given; in place,
    episodes keep their numbers."""
    root = Path(dataset)
    in_place = out is None
    if isinstance(tasks, Mapping) and episodes is not None:
        raise EditError("set-task: episodes go with one task text; a mapping names its own episodes")
    target = _target(root, out, in_place, "set-task")
    if isinstance(tasks, str):
        texts = [tasks]
    else:  # a task file's rows, not its expanded episodes: ranges are checked under the lock first
        texts = [t for _, t, _ in tasks.rows] if isinstance(tasks, TaskFile) else list(tasks.values())
    if any(not str(t).strip() for t in texts):
        raise EditError("set-task: the task text is empty")
    with _locked([root], "set tasks", in_place=in_place) as (src,):
        if isinstance(tasks, TaskFile):
            tasks = tasks.resolve(src.indices, root)
        if isinstance(tasks, str):
            chosen = src.indices if episodes is None else _existing(episodes, src.indices, root, "to relabel")
            tasks = dict.fromkeys(chosen, tasks)
        missing = sorted(set(tasks) - set(src.indices))
        if missing:
            raise EditError(f"{root}: no episode(s) {format_ranges(missing)} to relabel "
                            f"(it has {format_ranges(src.indices) or 'none'}); nothing was changed")
        jobs = []
        suite_tasks = src.info.extra.get("tasks")  # recorded from a task list: ids follow the text
        for k, rec in enumerate(src.records):
            idx = int(rec["episode_index"])
            job = EpisodeJob(src.root, idx, rec, idx if in_place else k, link=in_place,
                             provenance=None if in_place else "set-task")
            if idx in tasks:
                text = str(tasks[idx])
                job.attrs = {"task": text, "language_instruction": text}
                job.record_updates = {"task": text}
                if "language_instruction" in rec:
                    job.record_updates["language_instruction"] = text
                if suite_tasks is not None or "task_id" in rec:
                    fields = task_list_fields(text, suite_tasks)
                    job.attrs.update(fields)
                    job.record_updates.update(fields)
            jobs.append(job)
        info = _derived_info(src.info, "set-task", [src.root], episodes=format_ranges(tasks))
        staged = _stage_all([(target, info, jobs)], "set tasks", progress, src.root if in_place else None)
        _unchanged([src], staged)
        _publish(staged, [target], in_place)
    return _report("set-task", {"out": target}, staged, relabeled=sorted(tasks))


def remove_features(dataset: str | Path, features: Sequence[str], *, out: str | Path | None = None,
                    in_place: bool = False, progress: Progress | None = None) -> EditReport:
    """The dataset without the named features: cameras (``observation.images.wrist``, or just
    ``wrist``) or numeric ones (``observation.environment_state``)."""
    root = Path(dataset)
    target = _target(root, out, in_place, "remove-feature")
    if not features:
        raise EditError("name the feature(s) to remove, e.g. observation.images.wrist")
    with _locked([root], "remove features", in_place=in_place) as (src,):
        names = [_feature_name(src.info, f) for f in features]
        remaining = {n: s for n, s in src.info.features.items() if n not in names}
        if not remaining:
            raise EditError(f"{root}: removing {', '.join(names)} would leave no feature")
        drop: list[str] = []
        cams: list[str] = []
        for n in names:
            spec = src.info.features[n]
            if spec.is_image:
                cams.append(spec.camera)
                drop += [f"{g}/{spec.camera}" for g in (IMAGES_GROUP, IMAGE_TS_GROUP, FRAME_INDEX_GROUP)]
            else:
                drop.append(spec.h5_path)
        jobs = [EpisodeJob(src.root, int(r["episode_index"]), r, int(r["episode_index"]) if in_place else k,
                           drop=tuple(drop), drop_cameras=tuple(cams),
                           provenance=None if in_place else "remove-feature")
                for k, r in enumerate(src.records)]
        info = _derived_info(src.info, "remove-feature", [src.root], features=names)
        info.features = remaining
        staged = _stage_all([(target, info, jobs)], "remove features", progress, src.root if in_place else None)
        _unchanged([src], staged)
        _publish(staged, [target], in_place)
    return _report("remove-feature", {"out": target}, staged, removed=names)


# -- shared steps ----------------------------------------------------------------------------


def _target(root: Path, out: str | Path | None, in_place: bool, op: str) -> Path:
    if in_place and out is not None:
        raise EditError(f"{op}: give either --out or --in-place, not both")
    if in_place:
        clear_leftovers(root.resolve())  # a kill mid-publish of an earlier edit is put right first
        return root.resolve()
    if out is None:
        raise EditError(f"{op}: say where the result goes (--out FOLDER), or edit the dataset with --in-place")
    return _new_output(out, [root])


def _new_output(out: str | Path, sources: Sequence[Path], *, may_exist: bool = False) -> Path:
    out = Path(out)
    clear_leftovers(out)
    if any(out.resolve() == s.resolve() for s in sources):
        raise EditError(f"{out} is also a source; write to a new folder (or use --in-place where offered)")
    inside = next((s for s in sources if s.resolve() in out.resolve().parents), None)
    if inside is not None:
        raise EditError(f"{out} is inside the dataset {inside}; write the result next to it, not into it")
    if out.exists() and not may_exist:
        raise EditError(f"{out} exists; choose a new folder for the result")
    return out


@contextlib.contextmanager
def _locked(roots: Sequence[Path], what: str, *, in_place: bool = False):
    """Lock each source (once, however often it is named), then read its info and index.

    A source that is only read gets a shared lock, which writes nothing into it (a read-only
    source works); one edited in place, the exclusive lock."""
    with contextlib.ExitStack() as stack:
        seen: dict[Path, _Source] = {}
        out = []
        for root in roots:
            key = root.resolve()
            if key not in seen:
                if not is_dataset(root):
                    raise EditError(f"{root} is not a telecorder dataset (no {INFO})")
                guard = None
                if in_place:
                    stack.enter_context(DatasetLock(root, f"{what} (in place)"))
                else:
                    guard = stack.enter_context(DatasetReadLock(root, what))
                seen[key] = _load(root)
                seen[key].guard = guard
                if in_place:
                    _refuse_unfinished(seen[key])
            out.append(seen[key])
        yield out


def _unchanged(sources: Sequence[_Source], staged: list[Staged]) -> None:
    """Before publishing: a source read unlocked must not have changed meanwhile."""
    try:
        for src in sources:
            if src.guard is not None:
                src.guard.check_unchanged()
    except BaseException:
        _discard(staged)
        raise


def _load(root: Path) -> _Source:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # index problems are raised below, as one error
        ds = Dataset.open(root)
    if ds.index_problems:
        raise EditError(f"{root}: the index has problems ({ds.index_problems[0]}); "
                        f"run 'telecorder doctor {root} --repair' first")
    if not ds.records:
        raise EditError(f"{root}: the dataset has no episodes")
    return _Source(root.resolve(), ds.info, ds.records)


def _refuse_unfinished(src: _Source) -> None:
    """An in-place edit replaces the whole folder: an episode that only ``doctor --repair``
    can bring into the index (unfinished, or complete but unindexed) would be lost with it."""
    stray = [p.name for p in partial_files(src.root)]
    stray += [p.name for i, p in sorted(episode_files(src.root).items()) if i not in set(src.indices)]
    if stray:
        raise EditError(f"{src.root}: {stray[0]} is not in the index yet (an interrupted recording?); "
                        f"run 'telecorder doctor {src.root} --repair' first, so that the edit keeps it")


def _feature_name(info: DatasetInfo, name: str) -> str:
    if name in info.features:
        return name
    if f"observation.images.{name}" in info.features:  # a bare camera name
        return f"observation.images.{name}"
    raise EditError(f"no feature {name!r} in the dataset; it has {', '.join(info.features)}")


def _derived_info(info: DatasetInfo, op: str, sources: Sequence[Path], **what: Any) -> DatasetInfo:
    history = info.extra.get("edit_history") or []
    if not isinstance(history, list):  # another tool's value: kept as the first entry, not lost
        history = [{"earlier_history": history}]
    history = list(history)
    history.append({"operation": op, "sources": [str(s) for s in sources],
                    "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **what})
    return DatasetInfo(features=dict(info.features), fps=info.fps, robot_type=info.robot_type,
                       image_encoding=info.image_encoding, jpeg_quality=info.jpeg_quality,
                       format_version=info.format_version, extra={**info.extra, "edit_history": history})


def _stage_all(plans: list[tuple[Path, DatasetInfo, list[EpisodeJob]]], what: str,
               progress: Progress | None, carry_from: Path | None = None) -> list[Staged]:
    total = sum(len(jobs) for _, _, jobs in plans)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)
        pause_point(f"episode-{done}")

    staged: list[Staged] = []
    try:
        for dst, info, jobs in plans:
            staged.append(stage(staging_path(dst), info, jobs, f"edit ({what})", step, carry_from))
    except BaseException as e:
        _discard(staged)
        failed = plans[len(staged)][0] if len(staged) < len(plans) else None
        # Only the folder this edit made is its to delete (later plans were never started): one
        # that existed already, or is locked by someone else, is another edit's staging.
        theirs = isinstance(e, (FileExistsError, DatasetLockedError))
        if failed is not None and not theirs:
            _remove_tree(staging_path(failed))
        if isinstance(e, FileExistsError) and failed is not None:
            raise EditError(f"{failed}: another edit into it started at the same moment and is writing "
                            f"{staging_path(failed)}; wait until it finishes") from e
        raise
    pause_point("publish")
    return staged


def _publish_new(staged: list[Staged], outs: list[Path]) -> None:
    published: list[Path] = []
    try:
        for s, dst in zip(staged, outs, strict=True):
            publish_new(s.folder, dst)
            published.append(dst)
            if len(published) < len(outs):
                pause_point(f"published-{len(published)}")
    except BaseException:
        for dst in published:  # all or none: take back what was published
            _remove_tree(dst)
        _discard(staged[len(published):])
        raise
    finally:
        for s in staged:
            s.lock.release()


def _publish(staged: list[Staged], outs: list[Path], in_place: bool) -> None:
    if not in_place:
        _publish_new(staged, outs)
        return
    (s,), (dst,) = staged, outs
    try:
        old = publish_in_place(s.folder, dst)
    except BaseException:
        _discard(staged)
        raise
    pause_point("cleanup")
    s.lock.release()
    _remove_tree(old)  # the old content; the source lock (held by the caller) still covers it


def _discard(staged: list[Staged]) -> None:
    for s in staged:
        s.lock.release()
        _remove_tree(s.folder)


def _existing(episodes: Iterable[int], indices: Sequence[int], root: Path, purpose: str) -> list[int]:
    """``episodes`` (ranges are checked unexpanded) if ``root`` holds every one, else an error."""
    ranges = episodes if isinstance(episodes, EpisodeRanges) else EpisodeRanges((int(n), int(n)) for n in episodes)
    missing = ranges.absent(indices)
    if missing:
        raise EditError(f"{root}: no episode(s) {compact(missing, more=len(missing) >= 10)} {purpose} "
                        f"(it has {format_ranges(indices) or 'none'}); nothing was changed")
    return ranges.select(indices, where=str(root))


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _report(op: str, outputs: dict[str, Path], staged: list[Staged], **details: Any) -> EditReport:
    return EditReport(
        operation=op,
        outputs=outputs,
        episodes={k: len(s.records) for k, s in zip(outputs, staged, strict=True)},
        frames={k: s.frames for k, s in zip(outputs, staged, strict=True)},
        details=details,
    )


def parse_episodes(text: str, *, what: str = "episodes") -> EpisodeRanges:
    """``3,7-9`` -> the numbers 3, 7, 8, 9 as ranges (expanded only once checked against
    the dataset), with an error that says what was expected."""
    try:
        out = parse_episode_ranges(text, what=what)
    except ValueError as e:
        raise EditError(str(e)) from e
    if not out:
        raise EditError(f"{what}: no episode numbers in {text!r} (e.g. 3,7-9)")
    return out

