"""``telecorder convert --runner beam``: the sharded conversion as an Apache Beam pipeline.

Each episode is one element, keyed by its shard; grouping by shard hands each worker a
contiguous group of episodes that it reads, decodes, transforms, encodes and writes as one
part with the format's own writer (:func:`telecorder.converters.sharded.write_part`). The
parts' statistics are combined with :class:`.stats.StatsCombineFn`, and a last step merges the
parts into the dataset (:func:`telecorder.converters.sharded.finish`). The caller renames the
finished folder into place only after the whole pipeline succeeded.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..converters import sharded
from ..converters.base import ConversionError
from ..converters.locations import check_path
from ..datasets.features import DatasetInfo
from .options import BeamError, pipeline_options, require_beam
from .stats import StatsCombineFn

beam = require_beam()


class WritePart(beam.DoFn):
    """(shard, [(position, episode), ...]) -> the part's result as JSON text."""

    def __init__(self, src: str, work: str, dst: str, opts: Any, info: dict[str, Any]) -> None:
        self.src, self.work, self.dst, self.opts, self.info = src, work, dst, opts, info

    def process(self, element: tuple[int, Any]):
        shard, members = element
        episodes = [episode for _, episode in sorted(members)]
        yield sharded.write_part(self.src, self.work, self.dst, self.opts, self.info, shard, episodes)


def _episodes_of(shard_json: str):
    shard = json.loads(shard_json)
    for position, episode in enumerate(shard["episodes"]):
        yield shard["shard"], (position, episode)


def _finish(_: Any, work: str, to: str, info: dict[str, Any], options: dict[str, Any], results: list[str],
            stats: str) -> None:
    sharded.finish_json(work, to, info, options, json.dumps([json.loads(r) for r in results]), stats)


def build(p: Any, src: Path, work: Path, dst: Path, opts: Any, info: DatasetInfo,
          shards: list[list[int]]) -> None:
    """Add the conversion to pipeline ``p``."""
    info_dict = info.to_dict()
    lean = replace(opts, workers=1, beam_options=[])
    plan = [json.dumps({"shard": k, "episodes": eps}) for k, eps in enumerate(shards)]
    results = (
        p
        | "Shards" >> beam.Create(plan)
        | "Episodes" >> beam.FlatMap(_episodes_of)
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteParts" >> beam.ParDo(WritePart(str(src), str(work), str(dst), lean, info_dict))
    )
    stats = (
        results
        | "PartStats" >> beam.Map(lambda r: json.dumps(json.loads(r)["stats"]))
        | "CombineStats" >> beam.CombineGlobally(StatsCombineFn())
    )
    everything = results | "AllParts" >> beam.combiners.ToList()
    _ = (
        p
        | "Start" >> beam.Create([None])
        | "MergeParts" >> beam.Map(
            _finish, str(work), opts.to, info_dict, dict(opts.writer_options),
            results=beam.pvalue.AsSingleton(everything), stats=beam.pvalue.AsSingleton(stats),
        )
    )


def run_beam(src: Path, work: Path, dst: Path, opts: Any, info: DatasetInfo,
             shards: list[list[int]]) -> dict[str, Any]:
    """Run the conversion to completion; returns the summary the merge step left in ``work``."""
    check_path(src, "source")
    check_path(dst, "destination")
    options = pipeline_options(opts.beam_options)
    try:
        with beam.Pipeline(options=options) as p:
            build(p, Path(src).resolve(), Path(work).resolve(), Path(dst).resolve(), opts, info, shards)
    except ConversionError:
        raise
    except Exception as e:  # a worker's error comes back wrapped in the runner's own
        raise _unwrapped(e) from e
    return json.loads((Path(work) / sharded.REPORT_FILE).read_text())


def _unwrapped(e: Exception) -> Exception:
    """The first line of our own error inside a runner's wrapped exception, else the runner's text."""
    text = str(e)
    for marker in ("ConversionError: ", "DatasetError: "):  # ours wraps the reader's
        for line in text.splitlines():
            if marker in line:
                message = line.split(marker, 1)[1].strip()
                return ConversionError(re.sub(r" \[while running '[^']*'\]$", "", message))
    return BeamError(f"the Beam pipeline failed: {text.strip().splitlines()[-1] if text.strip() else type(e).__name__}")
