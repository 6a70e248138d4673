"""Conversion, statistics and ``doctor`` on Apache Beam: the same readers, transforms and
writers as the local pipeline, run by any Beam runner (DirectRunner here; Dask, Flink, Spark
or Dataflow on a cluster). Install with ``pip install 'telecorder[beam]'``.

- :mod:`.options`: Beam pipeline options from ``--beam-options`` (runner names, option check).
- :mod:`.run`: running a pipeline to the end (on Dask: no task of a failed run left writing).
- :mod:`.convert`: ``convert --runner beam`` (episodes grouped into shards, parts merged at the end).
- :mod:`.stats`: statistics as a ``CombineFn`` over mergeable :class:`DatasetStats`, for
  pipelines of one's own (``convert`` merges its parts' statistics in shard order instead).
- :mod:`.doctor`: ``doctor --runner beam`` (per-episode checks, report combined at the end).

Elements and accumulators travel as JSON text or plain ints and strings, so Beam never pickles
our data (it does serialize the pipeline's functions, as every Beam program does).
"""
