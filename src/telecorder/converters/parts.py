"""A dataset written in parts, in parallel, by the format's own writer, then merged into one.

This is how ``convert --workers N`` and ``convert --runner beam`` scale the writing side
without a second implementation of any format:

1. The episodes to convert are cut into contiguous groups (shards), in source order.
2. Each group is converted by its own process or Beam worker into a *part*: a complete
   dataset of the output format, written by that format's :class:`FormatWriter` with the
   option ``part=True``, in ``WORK/.parts/part-NNNNN``.
3. The merge function of the format (``merge_parts`` in the format package's ``merge`` module) moves the
   parts' files into ``WORK``, numbering episodes 0..N-1 in part order, and writes the
   dataset-level metadata once (TFDS ``dataset_info.json`` with every shard's length, LeRobot
   ``meta/`` with episode offsets, our ``meta/``), with statistics that are the merge of every
   part's mergeable statistics (:class:`telecorder.datasets.stats.DatasetStats`).

What a writer does differently with ``part=True``:

- it leaves out checks that hold only for a whole dataset (every RLDS split non-empty);
- it writes :data:`PART_STATS` at the root of the part: ``DatasetStats.to_json_dict()`` of
  the statistics it would compute for a whole dataset, so that the statistics of the merged
  dataset are the same whichever way the episodes were grouped;
- names it would derive from its folder come from options instead (the pipeline passes the
  final dataset name as ``dataset_name`` to RLDS/OXE writers).

Every writer also takes ``encode_threads`` (int): a worker of a sharded conversion encodes on
one thread, because the parallelism is across workers.

``merge_parts(work, parts, info, options, stats)``:
    ``work``: the folder the final dataset is built in (it holds ``.parts`` and nothing else);
    ``parts``: the part folders in order; ``info``: the output schema the parts were written
    with; ``options``: the writer options the user gave; ``stats``: merged PART_STATS of all
    parts. Moves files (never copies what it can rename), removes the parts, and raises
    ConversionError naming the part on anything inconsistent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..datasets.stats import DatasetStats
from .base import ConversionError

PARTS_DIR = ".parts"
PART_STATS = "part_stats.json"


def part_path(work: Path, shard: int) -> Path:
    return Path(work) / PARTS_DIR / f"part-{shard:05d}"


def merged_part_stats(parts: Iterable[Path]) -> DatasetStats:
    """The merge of every part's PART_STATS, as the pipeline hands it to ``merge_parts``."""
    return merge_summaries(read_part_stats(part) for part in parts)


def merge_summaries(summaries: Iterable[DatasetStats]) -> DatasetStats:
    """Summaries merged in order; episode numbers dropped (each part counts its own from 0)."""
    merged = DatasetStats({})
    for stats in summaries:
        merged = merged.merge(stats)
    return DatasetStats(merged.features)


def read_part_stats(part: Path) -> DatasetStats:
    path = Path(part) / PART_STATS
    try:
        return DatasetStats.from_json_dict(json.loads(path.read_text()))
    except FileNotFoundError as e:
        raise ConversionError(f"{path}: the part has no statistics (was it written with part=True?)") from e
    except ValueError as e:
        raise ConversionError(f"{path}: unreadable part statistics ({e})") from e
