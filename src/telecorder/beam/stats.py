"""Statistics as a Beam ``CombineFn`` over the mergeable :class:`DatasetStats` summaries.

Each part (or episode) contributes its summary as JSON; accumulators are merged with
``DatasetStats.merge`` (exact counts, sums and extrema; quantile sketches that merge bucket by
bucket), so a cluster run gives the numbers a local run gives. The accumulator crosses
process boundaries as JSON through :class:`StatsCoder`, never as a pickle.

Exact quantiles (OXE's ``dataset_statistics.json``, which must equal Octo's and OpenVLA's
``np.quantile``) need every value, which a combiner of constant-size summaries cannot carry; so
they do not go through here. Each part saves its rows next to itself while they fit
:data:`~telecorder.datasets.exact_quantiles.EXACT_QUANTILE_LIMIT`, and the merge step (one
process, on the filesystem every worker writes) computes them when all rows together still fit;
past that it uses the sketch this combiner merged and says so in the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..datasets.stats import DatasetStats
from .options import require_beam

beam = require_beam()


class StatsCoder(beam.coders.Coder):
    """A :class:`DatasetStats` accumulator (or None, for an empty one) as JSON bytes."""

    def encode(self, value: DatasetStats | None) -> bytes:
        return json.dumps(None if value is None else value.to_json_dict()).encode()

    def decode(self, encoded: bytes) -> DatasetStats | None:
        d = json.loads(encoded)
        return None if d is None else DatasetStats.from_json_dict(d)

    def is_deterministic(self) -> bool:
        return True


class StatsCombineFn(beam.CombineFn):
    """JSON summaries (``DatasetStats.to_json_dict`` text) in, the merged summary out as JSON."""

    def create_accumulator(self) -> DatasetStats | None:
        return None

    def add_input(self, acc: DatasetStats | None, summary: str) -> DatasetStats:
        stats = DatasetStats.from_json_dict(json.loads(summary))
        return stats if acc is None else acc.merge(stats)

    def merge_accumulators(self, accumulators: Iterable[DatasetStats | None]) -> DatasetStats | None:
        merged = None
        for acc in accumulators:
            if acc is not None:
                merged = acc if merged is None else merged.merge(acc)
        return merged

    def extract_output(self, acc: DatasetStats | None) -> str:
        return json.dumps((acc or DatasetStats({})).to_json_dict())

    def accumulator_coder(self) -> Any:
        return StatsCoder()
