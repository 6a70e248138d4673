"""``telecorder convert --runner beam``: the sharded conversion as an Apache Beam pipeline.

Each shard (a contiguous group of episodes) is one element; a reshuffle spreads the shards
over the workers, and each worker reads, decodes, transforms, encodes and writes its shard's
episodes as one part with the format's own writer (:func:`telecorder.converters.sharded.write_part`).
A last step merges the parts into the dataset (:func:`telecorder.converters.sharded.finish`),
with the parts' statistics merged in shard order as the local process pool merges them, so that
every runner (DirectRunner, Dask, a cluster) writes what ``--workers N`` writes with the same
shards, statistics to the last bit; a combiner would merge them in whatever order the runner
picks, and floating sums differ in their last bits from one order to another. The caller renames the finished
folder into place only after the whole pipeline succeeded.
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
from .run import last_line, new_run, run_to_end, task_of

beam = require_beam()


class WritePart(beam.DoFn):
    """A shard as JSON text (``{"shard": k, "episodes": [...]}``) -> the part's result as JSON text."""

    def __init__(self, src: str, work: str, dst: str, opts: Any, info: dict[str, Any], run: str) -> None:
        self.src, self.work, self.dst, self.opts, self.info, self.run = src, work, dst, opts, info, run

    def process(self, element: str):
        shard = json.loads(element)
        with task_of(self.run):
            result = sharded.write_part(self.src, self.work, self.dst, self.opts, self.info, shard["shard"],
                                        shard["episodes"])
        yield result


def _finish(results: list[str], work: str, to: str, info: dict[str, Any], options: dict[str, Any]) -> None:
    parts = sorted((json.loads(r) for r in results), key=lambda r: r["shard"])
    stats = sharded.merge_stats(r["stats"] for r in parts)
    sharded.finish_json(work, to, info, options, json.dumps(parts), json.dumps(stats.to_json_dict()))


def build(p: Any, src: Path, work: Path, dst: Path, opts: Any, info: DatasetInfo,
          shards: list[list[int]], run: str) -> None:
    """Add the conversion to pipeline ``p``."""
    info_dict = info.to_dict()
    lean = replace(opts, workers=1, beam_options=[])
    plan = [json.dumps({"shard": k, "episodes": eps}) for k, eps in enumerate(shards)]
    results = (
        p
        | "Shards" >> beam.Create(plan)
        # Create's elements would stay in one bundle, i.e. one worker; a reshuffle spreads them.
        # (Beam's Dask runner makes it a no-op: there each element is a task of its own.)
        | "Spread" >> beam.Reshuffle()
        | "WriteParts" >> beam.ParDo(WritePart(str(src), str(work), str(dst), lean, info_dict, run))
    )
    _ = (
        results
        | "AllParts" >> beam.combiners.ToList()
        | "MergeParts" >> beam.Map(_finish, str(work), opts.to, info_dict, dict(opts.writer_options))
    )


def run_beam(src: Path, work: Path, dst: Path, opts: Any, info: DatasetInfo,
             shards: list[list[int]]) -> dict[str, Any]:
    """Run the conversion to completion; returns the summary the merge step left in ``work``."""
    check_path(src, "source")
    check_path(dst, "destination")
    options = pipeline_options(opts.beam_options)
    try:
        run = new_run()
        run_to_end(beam.Pipeline(options=options), lambda p: build(
            p, Path(src).resolve(), Path(work).resolve(), Path(dst).resolve(), opts, info, shards, run), run)
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
    return BeamError(f"the Beam pipeline failed: {last_line(e)}")
