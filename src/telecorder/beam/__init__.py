"""Conversion, statistics and ``doctor`` on Apache Beam: the same readers, transforms and
writers as the local pipeline, run by any Beam runner (DirectRunner here; Dataflow, Flink or
Spark on a cluster). Install with ``pip install 'telecorder[beam]'``.

- :mod:`.options`: Beam pipeline options from ``--beam-options``, and which paths can work.
- :mod:`.convert`: ``convert --runner beam`` (episodes grouped into shards, parts merged at the end).
- :mod:`.stats`: statistics as a ``CombineFn`` over mergeable :class:`DatasetStats`.
- :mod:`.doctor`: ``doctor --runner beam`` (per-episode checks, report combined at the end).

Elements and accumulators travel as JSON text or plain ints and strings, so Beam never pickles
our data (it does serialize the pipeline's functions, as every Beam program does).
"""
