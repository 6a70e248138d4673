"""Which machine runs a conversion: the local process pool, or Apache Beam.

The converters define the work (:mod:`telecorder.converters.transform`: the per-episode
transforms; :mod:`telecorder.converters.sharded`: the shard plan, a shard's part, the merge) and
execute it on the local pool by default; :mod:`telecorder.beam` executes the same shards on any
Beam runner. This module, above both, is the one place that chooses from ``--runner``, so the
converters never import Beam.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .converters.pipeline import ConvertOptions, ConvertReport
from .converters.pipeline import convert as _convert
from .converters.sharded import LOCAL, ShardExecutor

RUNNERS = ("local", "beam")


def _run_beam(src: Path, work: Path, dst: Path, opts: Any, info: Any, shards: list[list[int]],
              on_shard: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    from .beam.convert import run_beam  # imports apache_beam: only when asked for

    return run_beam(src, work, dst, opts, info, shards)  # Beam reports progress in its own UI


def _beam_workers(opts: Any) -> int:
    from .beam.options import beam_worker_count

    return beam_worker_count(opts.beam_options)


BEAM = ShardExecutor("beam", _run_beam, _beam_workers)


def shard_executor(runner: str) -> ShardExecutor:
    """The executor of ``--runner RUNNER``; the caller's conversion options name the same runner."""
    return BEAM if runner == "beam" else LOCAL


def convert(
    src: str | Path,
    dst: str | Path,
    opts: ConvertOptions,
    on_episode: Callable[[int, int, int], None] | None = None,
) -> ConvertReport:
    """:func:`telecorder.converters.pipeline.convert` on the runner ``opts.runner`` names."""
    return _convert(src, dst, opts, on_episode, executor=shard_executor(opts.runner))


__all__ = ["BEAM", "LOCAL", "RUNNERS", "ConvertOptions", "ConvertReport", "ShardExecutor", "convert",
           "shard_executor"]
