"""Sharded conversion, shared by the local process pool and the Apache Beam pipeline.

The episodes to convert are cut into contiguous shards in source order; each shard is read,
decoded, transformed, encoded and written by one worker into a part (see :mod:`.parts`),
with the format's own writer. Once every part is written, their statistics are merged and
the format's ``merge_parts`` builds the final dataset. Output episode order is source order
minus the skipped ones, whatever ran the shards and in which order they finished.

Everything a shard hands back is JSON text (episode counts, skipped episodes, the part's
mergeable statistics), so that Beam moves it with its string coder and no pickle is involved.
"""

from __future__ import annotations

import importlib
import json
import math
import multiprocessing
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..datasets.features import DatasetInfo
from ..datasets.stats import DatasetStats
from ..datasets.work_folder import rename_new
from ..errors import DatasetError
from . import FORMATS, writer_class
from .base import ConversionError
from .lerobot.timing import OFFSET_KEY
from .parts import PART_STATS, PARTS_DIR, merge_summaries, part_path
from .transform import open_source, transform_episode

# Shards per worker: enough that one slow shard does not leave the other workers idle at the end.
SHARDS_PER_WORKER = 8
MAX_SHARD_EPISODES = 64
REPORT_FILE = ".convert_report.json"


def plan_shards(indices: list[int], workers: int, per_shard: int | None = None) -> list[list[int]]:
    """Contiguous groups of ``indices``, in order: ``per_shard`` episodes each when given, else
    ``SHARDS_PER_WORKER`` groups per worker (a multiple of the worker count, sizes within one
    episode of each other, so that the workers finish together), none above MAX_SHARD_EPISODES."""
    total = len(indices)
    if per_shard is not None:
        if per_shard < 1:
            raise ConversionError(f"--shard-episodes must be at least 1, not {per_shard}")
        return [indices[i : i + per_shard] for i in range(0, total, per_shard)]
    workers = max(1, workers)
    count = max(workers * SHARDS_PER_WORKER, math.ceil(total / MAX_SHARD_EPISODES))
    count = min(total, math.ceil(count / workers) * workers)
    if count == 0:
        return []
    size, extra = divmod(total, count)
    out, start = [], 0
    for k in range(count):
        stop = start + size + (1 if k < extra else 0)
        out.append(indices[start:stop])
        start = stop
    return out


def part_options(to: str, options: dict[str, Any], dst: Path) -> dict[str, Any]:
    """The writer options of one part: the user's, in part mode, on one encoding thread, with
    the dataset name of the final folder."""
    out = {**options, "part": True, "encode_threads": 1}
    if to in ("rlds", "oxe"):
        from .rlds.paths import dataset_name_for

        # Every part keeps the whole val list, so that each declares the same splits (a part
        # may hold no val episode; only the merged dataset must have some).
        out.setdefault("dataset_name", dataset_name_for(dst))
    return out


def write_part(src: str, work: str, dst: str, opts: Any, out_info: dict[str, Any], shard: int,
               episodes: list[int]) -> str:
    """Convert one shard into its part; returns the shard's result as JSON text.

    Idempotent: a retried shard (a Beam worker that died) writes its part again. Each attempt
    writes its own folder, so two attempts at once (a retry while the first still runs,
    speculative execution) never write into one another's files; the part appears under its
    final name only once complete, and the first attempt to finish gives it (later ones, the
    same episodes with the same options, are dropped).
    """
    reader = open_source(src, opts)
    src_info = reader.info
    info = DatasetInfo.from_dict(out_info)
    final = part_path(Path(work), shard)
    building = final.with_name(f"{final.name}.writing-{os.getpid()}-{secrets.token_hex(4)}")
    building.parent.mkdir(parents=True, exist_ok=True)
    options = part_options(opts.to, opts.writer_options, Path(dst))
    writer = writer_class(opts.to)(building, info, **options)
    written: list[int] = []
    skipped: list[list[Any]] = []
    offsets: dict[str, Any] = {}  # LeRobot rows mapped to frames by an offset, for the report
    frames = 0
    try:
        for index in episodes:
            try:
                episode = transform_episode(reader.read_episode(index), src_info, opts)
            except DatasetError as e:
                message = f"episode {index}: {e}"
                if not opts.skip_bad:
                    raise ConversionError(message) from e
                skipped.append([index, message])
                continue
            writer.write_episode(episode)
            written.append(index)
            frames += len(episode)
            if episode.metadata.get(OFFSET_KEY):
                offsets[str(index)] = dict(episode.metadata[OFFSET_KEY])
    finally:
        writer.close()
    result: dict[str, Any] = {"shard": shard, "episodes": written, "frames": frames, "skipped": skipped,
                              "timestamp_offsets": offsets}
    if not written:
        shutil.rmtree(building)
        result.update(path=None, stats=DatasetStats({}).to_json_dict())
        return json.dumps(result)
    try:
        rename_new(building, final)
    except FileExistsError:  # another attempt of this shard finished first: its part stands
        shutil.rmtree(building, ignore_errors=True)
    result.update(path=str(final), stats=json.loads((final / PART_STATS).read_text()))
    return json.dumps(result)


def merge_stats(stats_json: Iterable[dict[str, Any]]) -> DatasetStats:
    return merge_summaries(DatasetStats.from_json_dict(d) for d in stats_json)


def finish(work: Path, to: str, info: DatasetInfo, options: dict[str, Any], results: list[dict[str, Any]],
           stats: DatasetStats) -> dict[str, Any]:
    """Merge the parts into the final dataset in ``work``; returns the conversion's summary,
    which is also left in ``work/REPORT_FILE`` for a driver that did not run this step."""
    results = sorted(results, key=lambda r: r["shard"])
    parts = [Path(r["path"]) for r in results if r["path"]]
    summary = {
        "episodes": sum(len(r["episodes"]) for r in results),
        "frames": sum(int(r["frames"]) for r in results),
        "skipped": [s for r in results for s in r["skipped"]],
        "timestamp_offsets": {k: v for r in results for k, v in r.get("timestamp_offsets", {}).items()},
        "shards": len(results),
        "parts": len(parts),
    }
    if not parts:
        raise ConversionError(f"no episode could be converted ({len(summary['skipped'])} bad)")
    merge = _merger(to)
    t0 = time.perf_counter()
    merge(work, parts, info, options, stats)
    summary["merge_s"] = round(time.perf_counter() - t0, 3)
    leftover = Path(work) / PARTS_DIR
    if leftover.exists():
        shutil.rmtree(leftover)
    (Path(work) / REPORT_FILE).write_text(json.dumps(summary))
    return summary


def take_report(work: Path) -> dict[str, Any]:
    """The summary :func:`finish` left in ``work``, removed so the dataset holds only its own files."""
    path = Path(work) / REPORT_FILE
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: the pipeline finished without its final step's report ({e})") from e
    path.unlink()
    return summary


def _merger(to: str) -> Callable[..., None]:
    module = importlib.import_module(FORMATS[to][0])
    merge = getattr(module, "merge_parts", None)
    if merge is None:
        raise ConversionError(f"{to} output cannot be written in parallel parts yet; convert with --workers 1")
    return merge


def run_local(src: Path, work: Path, dst: Path, opts: Any, info: DatasetInfo, shards: list[list[int]],
              on_shard: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every shard in a pool of ``opts.workers`` processes, then the merge in one of them (it
    has the output format's libraries loaded already: TensorFlow takes seconds to import)."""
    info_dict = info.to_dict()
    results: list[dict[str, Any]] = []
    lean = replace(opts, workers=1)
    # A forked copy of a process with TensorFlow's thread pools running can deadlock in them, so
    # then the workers start as fresh interpreters (which re-import the caller's main module:
    # scripts need the usual `if __name__ == "__main__":`); otherwise fork, which needs nothing.
    context = multiprocessing.get_context("spawn" if "tensorflow" in sys.modules else "fork")
    with ProcessPoolExecutor(max_workers=max(1, opts.workers), mp_context=context) as pool:
        pending: set[Future] = {
            pool.submit(write_part, str(src), str(work), str(dst), lean, info_dict, k, eps)
            for k, eps in enumerate(shards)
        }
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = json.loads(future.result())
                    results.append(result)
                    if on_shard is not None:
                        on_shard(result)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        results.sort(key=lambda r: r["shard"])
        stats = merge_stats(r["stats"] for r in results)
        merged = pool.submit(finish_json, str(work), opts.to, info_dict, dict(opts.writer_options),
                             json.dumps(results), json.dumps(stats.to_json_dict()))
        return json.loads(merged.result())


def finish_json(work: str, to: str, info: dict[str, Any], options: dict[str, Any], results: str,
                stats: str) -> str:
    """:func:`finish` with JSON in and out, for a worker process or a Beam step."""
    summary = finish(Path(work), to, DatasetInfo.from_dict(info), options, json.loads(results),
                     DatasetStats.from_json_dict(json.loads(stats)))
    return json.dumps(summary)


@dataclass(frozen=True)
class ShardExecutor:
    """What runs a sharded conversion's shards and merge: ``run(src, work, dst, opts, info, shards,
    on_shard)`` returns the merge summary; ``workers(opts)`` sizes the shard plan."""

    name: str
    run: Callable[..., dict[str, Any]]
    workers: Callable[[Any], int]


LOCAL = ShardExecutor("local", run_local, lambda opts: opts.workers)
