"""``telecorder convert``: reader -> transforms -> writer, episode by episode.

Transforms: select episodes, select and rename cameras, resize images, resample to
another control rate by timestamps. Cameras are selected in the reader, before anything is
read: a camera left out is never opened or decoded. Cameras whose files are absent for the
episodes asked for (LeRobot videos) stop the conversion up front, or with
``skip_missing_cameras`` are left out and listed in the report and the output's metadata.
The output is built in a hidden ``.NAME.partial`` folder next to the destination, locked by
the run for its whole length, and moved into place only when complete, so a failed or
interrupted conversion never leaves a half dataset under the destination name; the move never
replaces anything but what ``overwrite`` was told to (see :mod:`..datasets.work_folder`).
With ``workers > 1`` (or ``runner="beam"``) the episodes are cut into contiguous shards that
workers read, transform, encode and write in parallel as parts, merged at the end by the
output format (see :mod:`.sharded`); with ``resume`` episodes are read in parallel and written
in order by this process, so that an interrupted native output can be continued.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..datasets.dataset import is_dataset
from ..datasets.episode_file import Episode
from ..datasets.features import DatasetInfo
from ..datasets.lock import lock_holder
from ..datasets.ranges import RangeError, select_episodes
from ..datasets.stats import format_ranges
from ..datasets.work_folder import (
    PublishRefused,
    WorkFolder,
    WorkFolderBusy,
    identity,
    publish,
    source_identity,
)
from ..errors import DatasetError
from . import writer_class
from .base import ConversionError, FormatReader
from .lerobot.timing import OFFSET_KEY
from .locations import check_path
from .sharded import ShardExecutor
from .transform import (
    ConvertOptions,
    open_source,
    output_cameras,
    parse_cameras,
    parse_episode_ranges,
    resample_indices,
    resize,
    transform_episode,
    transform_info,
)

# What callers import from here: the options and transforms live in .transform (shared with the
# shard workers), the conversion itself here.
__all__ = [
    "ConvertOptions",
    "ConvertReport",
    "convert",
    "open_source",
    "parse_cameras",
    "parse_episode_ranges",
    "partial_path",
    "resample_indices",
    "resize",
    "transform_episode",
    "transform_info",
]


@dataclass
class ConvertReport:
    output: Path
    episodes: int = 0
    frames: int = 0
    seconds: float = 0.0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    resumed: int = 0
    cameras_left_out: dict[str, str] = field(default_factory=dict)  # camera -> why (skip_missing_cameras)
    shards: int = 0  # sharded runs: how many shards, and the seconds the final merge took
    merge_seconds: float = 0.0
    # LeRobot sources: episode -> camera -> seconds its rows were shifted to find their own frames
    timestamp_offsets: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def partial_path(dst: Path) -> Path:
    return dst.with_name("." + dst.name + ".partial")


def convert(
    src: str | Path,
    dst: str | Path,
    opts: ConvertOptions,
    on_episode: Callable[[int, int, int], None] | None = None,
    executor: ShardExecutor | None = None,
) -> ConvertReport:
    """Convert ``src`` into a new dataset at ``dst``; ``on_episode(done, total, frames)`` reports progress.

    A sharded run's shards are executed by ``executor``: the local process pool when None. Only the
    layer above chooses another (``telecorder.runners``: Beam), so converters never import a runner.
    """
    if opts.runner not in ("local", "beam"):
        raise ConversionError(f"--runner must be local or beam, not {opts.runner!r}")
    if opts.runner != (executor.name if executor is not None else "local"):
        raise ConversionError(f"--runner {opts.runner}: run this conversion through telecorder.runners.convert, "
                              "which sets up that runner")
    src, dst = check_path(src, "source"), check_path(dst, "destination")
    t0 = time.perf_counter()
    reader = open_source(src, opts)
    # Renaming only: the reader already reads every camera, so it need not be opened again.
    renamed = output_cameras(reader.info, opts)
    if renamed is not None:
        opts = replace(opts, cameras=renamed)
    available = reader.episode_indices()
    try:
        wanted = select_episodes(opts.episodes, available, where=str(src))
    except RangeError as e:
        raise ConversionError(str(e)) from e
    left_out = _cameras_without_files(src, reader, wanted, opts)
    if left_out:
        kept = [c for c in reader.info.cameras if c not in left_out]
        mapping = opts.cameras or {}
        opts = replace(opts, cameras={c: mapping.get(c, c) for c in kept})
        reader = open_source(src, opts)
    src_info = reader.info
    out_info = transform_info(src_info, opts)
    if left_out:
        out_info.extra["source_cameras_left_out"] = dict(left_out)
    val_episodes = _val_episodes(wanted, opts)
    # The work folder is this run's alone (locked until it ends); a second run for dst refuses here.
    try:
        work = WorkFolder.claim(partial_path(dst), f"{dst}: {{owner}} is converting into it; wait until it "
                                "finishes (or stop it), then convert again")
    except WorkFolderBusy as e:
        raise ConversionError(str(e)) from e
    try:
        return _convert_into(work, src, dst, opts, src_info, out_info, wanted, val_episodes, left_out,
                             on_episode, t0, executor)
    finally:
        work.close()


def _convert_into(work: WorkFolder, src: Path, dst: Path, opts: ConvertOptions, src_info: DatasetInfo,
                  out_info: DatasetInfo, wanted: list[int], val_episodes: list[int], left_out: dict[str, str],
                  on_episode: Callable[[int, int, int], None] | None, t0: float,
                  executor: ShardExecutor | None) -> ConvertReport:
    _undo_interrupted_swap(dst)
    work.restore_interrupted(dst)
    if dst.exists() and not opts.overwrite:
        raise ConversionError(f"{dst} exists; pass --overwrite to replace it")
    holder = lock_holder(dst) if is_dataset(dst) else None
    if holder:
        raise ConversionError(f"{dst} is being modified by {holder}; it cannot be replaced until that finishes")
    # What --overwrite may replace: this folder as it is now, and nothing that takes its place later.
    replaces = identity(dst) if opts.overwrite else None
    source = source_identity(src)
    out = work.output
    resuming = opts.resume and opts.to == "native" and is_dataset(out)
    if resuming:
        _check_resume_source(work, source, src)
    else:
        work.clear()
    work.start({"command": f"convert into {dst.name}", "source": source})
    writer_opts = dict(opts.writer_options)
    if resuming:
        writer_opts["resume"] = True
    if val_episodes:
        writer_opts["val_episodes"] = val_episodes
    if _sharded(opts, resuming):
        return _convert_sharded(src, dst, work, replace(opts, writer_options=writer_opts), out_info,
                                wanted, left_out, on_episode, t0, replaces, executor)
    writer = writer_class(opts.to)(out, out_info, **writer_opts)
    # Read after the writer has opened: on resume it first puts the output back in order.
    done_before = _converted_sources(out) if resuming else set()
    report = ConvertReport(output=dst, resumed=len(done_before), cameras_left_out=left_out)
    remaining = [i for i in wanted if i not in done_before]
    try:
        for index, result in _episodes(src, src_info, opts, remaining):
            if isinstance(result, str):
                if not opts.skip_bad:
                    raise ConversionError(result)
                report.skipped.append((index, result))
            else:
                writer.write_episode(result)
                report.episodes += 1
                report.frames += len(result)
                if result.metadata.get(OFFSET_KEY):
                    report.timestamp_offsets[index] = dict(result.metadata[OFFSET_KEY])
            if on_episode is not None:
                on_episode(report.episodes + len(report.skipped), len(remaining), report.frames)
            _test_pause(report.episodes + len(report.skipped))
    finally:
        writer.close()
    if report.episodes + report.resumed == 0:
        work.finish()
        raise ConversionError(f"{src}: no episode could be converted ({len(report.skipped)} bad)")
    _publish(work, dst, replaces)
    report.seconds = time.perf_counter() - t0
    return report


def _check_resume_source(work: WorkFolder, source: dict[str, str], src: Path) -> None:
    """--resume continues only a conversion of this very source, unchanged since."""
    before = work.previous.get("source")
    if not isinstance(before, dict):
        raise ConversionError(f"--resume: {work.path} has no record of the source it was converted from (left by an "
                              "older telecorder?); convert again without --resume")
    if before.get("path") != source["path"]:
        raise ConversionError(f"--resume: {work.path} holds episodes converted from {before.get('path')}, not from "
                              f"{source['path']} (another source); resume with that source, or convert without "
                              "--resume to start over from this one")
    if before.get("fingerprint") != source["fingerprint"]:
        raise ConversionError(f"--resume: {src} changed since the interrupted conversion started (its index, info "
                              "or files differ), so what was converted then may not match it; convert again "
                              "without --resume")


def _publish(work: WorkFolder, dst: Path, replaces: dict[str, Any] | None) -> None:
    try:
        publish(work, dst, replaces, "the conversion")
    except PublishRefused as e:
        if not os.path.lexists(work.output):  # it is kept under the name the error gives
            work.finish()
        raise ConversionError(str(e)) from e
    work.finish()


# Read by tests only: "N:FILE" stops a one-process conversion after N episodes until FILE exists,
# so that a test can act while the conversion is known to be mid-way, without sleeps.
PAUSE_ENV = "TELECORDER_TEST_CONVERT_PAUSE"


def _test_pause(done: int) -> None:
    count, _, go = os.environ.get(PAUSE_ENV, "").partition(":")
    if not go or count != str(done):
        return
    sys.stderr.write(f"PAUSED {done}\n")
    sys.stderr.flush()
    while not os.path.exists(go):
        time.sleep(0.05)


def _sharded(opts: ConvertOptions, resuming: bool) -> bool:
    if opts.runner not in ("local", "beam"):
        raise ConversionError(f"--runner must be local or beam, not {opts.runner!r}")
    if opts.runner == "beam" and opts.resume:
        raise ConversionError("--resume continues a local conversion; a Beam run always starts over "
                              "(its shards are rewritten whole), so leave --resume out")
    if resuming:
        return False
    if opts.sharded is not None:
        return opts.sharded or opts.runner == "beam"
    return opts.runner == "beam" or opts.workers > 1


def _convert_sharded(src: Path, dst: Path, work: WorkFolder, opts: ConvertOptions, out_info: DatasetInfo,
                     wanted: list[int], left_out: dict[str, str],
                     on_episode: Callable[[int, int, int], None] | None, t0: float,
                     replaces: dict[str, Any] | None, executor: ShardExecutor | None) -> ConvertReport:
    """Shards written in parallel as parts and merged (see :mod:`.sharded`); nothing under
    ``dst`` unless every shard and the merge succeeded."""
    from . import sharded

    executor = executor or sharded.LOCAL
    workers = executor.workers(opts)
    if opts.to in ("rlds", "oxe") and "episode_metadata_fields" not in opts.writer_options:
        fields = _first_episode_metadata_fields(src, opts, wanted)
        if fields is not None:
            opts = replace(opts, writer_options={**opts.writer_options, "episode_metadata_fields": fields})
    shards = sharded.plan_shards(list(wanted), workers, opts.shard_episodes)
    out = work.output
    out.mkdir()
    progress = {"episodes": 0, "frames": 0}

    def on_shard(result: dict[str, Any]) -> None:
        progress["episodes"] += len(result["episodes"]) + len(result["skipped"])
        progress["frames"] += int(result["frames"])
        if on_episode is not None:
            on_episode(progress["episodes"], len(wanted), progress["frames"])

    try:
        summary = executor.run(src, out, dst, opts, out_info, shards, on_shard)
        sharded.take_report(out)
    except BaseException:
        work.finish()  # a sharded run never resumes: nothing of it is worth keeping
        raise
    report = ConvertReport(output=dst, episodes=int(summary["episodes"]), frames=int(summary["frames"]),
                           skipped=[(int(i), str(m)) for i, m in summary["skipped"]], cameras_left_out=left_out,
                           shards=int(summary["shards"]), merge_seconds=float(summary.get("merge_s", 0.0)),
                           timestamp_offsets={int(k): dict(v) for k, v in summary.get("timestamp_offsets", {}).items()})
    _publish(work, dst, replaces)
    report.seconds = time.perf_counter() - t0
    return report


def _first_episode_metadata_fields(src: Path, opts: ConvertOptions, wanted: list[int]) -> dict[str, str] | None:
    """The typed RLDS ``episode_metadata`` fields a one-process run takes from its first episode,
    given to every part so that all parts declare the same ones (read without frames)."""
    from .rlds.schema import episode_metadata_fields

    reader = open_source(src, replace(opts, cameras={}))
    for index in wanted:
        try:
            episode = reader.read_episode(index)
        except DatasetError:
            if not opts.skip_bad:
                raise
            continue
        return episode_metadata_fields({**episode.metadata, "source_episode_index": index})
    return None


def _val_episodes(wanted: list[int], opts: ConvertOptions) -> list[int]:
    if not opts.val_fraction:
        return []
    if opts.to not in ("rlds", "oxe"):
        raise ConversionError(
            f"--val-fraction: {opts.to} output has no splits; convert to native, split it with "
            "`telecorder edit split DS --val-fraction F --out-train T --out-val V`, and convert each part"
        )
    from ..datasets.splits import episode_split

    try:
        val = episode_split(wanted, opts.val_fraction)[1]
    except ValueError as e:
        raise ConversionError(f"--val-fraction: {e}") from e
    if not val:
        raise ConversionError(f"--val-fraction {opts.val_fraction}: needs at least 2 episodes to split (converting {len(wanted)})")
    return val


def _cameras_without_files(src: Path, reader: FormatReader, wanted: list[int], opts: ConvertOptions) -> dict[str, str]:
    """Cameras to leave out because their files are absent (``skip_missing_cameras``), camera -> why.

    Without that option an absent camera stops the conversion before anything is written, with
    the ways out; one absent for only some episodes is left to ``skip_bad`` when that is on.
    """
    missing = reader.missing_cameras(wanted)
    if not missing:
        return {}
    if opts.skip_missing_cameras:
        return {cam: f"no video for {len(eps)} of {len(wanted)} episode(s) ({_shorten(format_ranges(eps))})"
                for cam, eps in missing.items()}
    total = [c for c, eps in missing.items() if len(eps) == len(wanted)]
    if total:
        others = [c for c in reader.info.cameras if c not in missing]
        instead = f"--cameras {','.join(others)} to convert the others, or " if others else ""
        raise ConversionError(
            f"{src}: camera(s) {', '.join(map(repr, total))} declared in the dataset have no video file for any of "
            f"the {len(wanted)} episode(s) to convert; pass {instead}--skip-missing-cameras to convert what "
            "exists and list what was left out"
        )
    if opts.skip_bad:
        return {}  # each episode without the video is skipped and listed
    cam, eps = next(iter(missing.items()))
    having = [i for i in wanted if i not in set(eps)]
    raise ConversionError(
        f"{src}: camera {cam!r} has no video for {len(eps)} of {len(wanted)} episode(s) "
        f"({_shorten(format_ranges(eps))}); convert the episodes that have it (--episodes "
        f"{_shorten(format_ranges(having))}), leave the camera out (--skip-missing-cameras), "
        "or skip those episodes (--skip-bad)"
    )


def _shorten(text: str, limit: int = 60) -> str:
    cut = text.rfind(",", 0, limit)
    return text if len(text) <= limit or cut < 0 else text[:cut] + ",..."


def _replaced_path(dst: Path) -> Path:
    """Where older versions put the replaced destination during the swap (see _undo_interrupted_swap)."""
    return dst.with_name("." + dst.name + ".replaced")


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _undo_interrupted_swap(dst: Path) -> None:
    old = _replaced_path(dst)
    if not old.exists():
        return
    if dst.exists():  # the swap finished; only the deletion of the old output was cut short
        _remove(old)
    else:  # killed between the two renames: the old output comes back, the new one is redone
        os.replace(old, dst)


def _converted_sources(work: Path) -> set[int]:
    """Source episodes already in an interrupted native output (they carry their source index)."""
    from ..datasets.dataset import read_index

    records, _ = read_index(work)
    return {int(r["source_episode_index"]) for r in records if r.get("source_episode_index") is not None}


# -- reading, in this process or in workers ------------------------------------------------

_worker_state: dict[str, Any] = {}


def _worker_init(src: str, opts: ConvertOptions) -> None:
    reader = open_source(src, opts)
    _worker_state.update(reader=reader, info=reader.info, opts=opts)


def _read_and_transform(index: int) -> tuple[int, Episode | str]:
    reader, info, opts = _worker_state["reader"], _worker_state["info"], _worker_state["opts"]
    try:
        return index, transform_episode(reader.read_episode(index), info, opts)
    except DatasetError as e:  # ConversionError too: a bad episode, reported by index and file
        return index, f"episode {index}: {e}"


def _episodes(src: Path, src_info: DatasetInfo, opts: ConvertOptions, indices: list[int]):
    if opts.workers <= 1:
        _worker_init(str(src), opts)
        for i in indices:
            yield _read_and_transform(i)
        return
    with ProcessPoolExecutor(max_workers=opts.workers, initializer=_worker_init, initargs=(str(src), opts)) as pool:
        # A bounded window keeps memory flat: decoded episodes wait only for the writer.
        window: deque[Future] = deque()
        pending = iter(indices)
        for i in pending:
            window.append(pool.submit(_read_and_transform, i))
            if len(window) >= 2 * opts.workers:
                break
        while window:
            yield window.popleft().result()
            nxt = next(pending, None)
            if nxt is not None:
                window.append(pool.submit(_read_and_transform, nxt))
