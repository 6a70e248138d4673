"""Exact quantiles, computed the way Octo and OpenVLA compute theirs, while the values fit in memory.

Octo (``octo/data/utils/data_utils.py``) and OpenVLA (``prismatic/vla/datasets/rlds/utils/
data_utils.py``) take the ``q01``/``q99`` (``p01``/``p99``) bounds of their action and proprio
normalization from ``np.quantile(values, q, axis=0)``: numpy's default ``linear`` method over
every transition of every split, on the float32 arrays read from the TFRecords. The bounds set
the 256 action bins of OpenVLA, so they should be those numbers, not an approximation:
:class:`ExactValues` keeps the rows and answers with exactly that call (per dimension, which is
bit-identical to ``axis=0``, and with a Python ``float`` ``q``, which keeps numpy computing in the
values' own dtype as the loaders do).

Memory is bounded by :data:`EXACT_QUANTILE_LIMIT` values per feature (rows x dimensions;
10**8 float32 values = 400 MB, about 14 M transitions of a 7-D action). Past the limit the rows
are dropped and :attr:`ExactValues.exact` turns False; the caller then falls back on the mergeable
sketch of :class:`~.stats.FeatureStats` and reports its rank error
(:meth:`~.stats.FeatureStats.quantile_rank_error`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .stats import StatsError

__all__ = ["EXACT_QUANTILE_LIMIT", "ExactValues"]

#: Most values (rows x dimensions) of one feature held for exact quantiles.
EXACT_QUANTILE_LIMIT = 10**8


class ExactValues:
    """The rows of one feature, kept while their values number at most ``limit``."""

    def __init__(self, ndim: int, *, dtype: np.dtype | type = np.float32, limit: int = EXACT_QUANTILE_LIMIT,
                 name: str = "") -> None:
        if ndim < 1:
            raise StatsError(f"feature {name!r}: exact quantiles need at least one dimension")
        self.ndim = int(ndim)
        self.dtype = np.dtype(dtype)
        self.limit = max(0, int(limit))
        self.name = name
        self.count = 0  # rows seen, kept or not
        self._chunks: list[np.ndarray] = []
        self._exact = True

    @classmethod
    def past_limit(cls, ndim: int, count: int, *, dtype: np.dtype | type = np.float32,
                   limit: int = EXACT_QUANTILE_LIMIT, name: str = "") -> ExactValues:
        """``count`` rows known only by their number (they did not fit the limit)."""
        out = cls(ndim, dtype=dtype, limit=limit, name=name)
        out.count = int(count)
        out._drop()
        return out

    @property
    def exact(self) -> bool:
        """Whether every row seen is still held (the limit was never passed)."""
        return self._exact

    def add(self, rows: np.ndarray) -> None:
        """Append rows shaped ``(n, ndim)`` (or ``(n,)`` for one dimension)."""
        arr = np.asarray(rows)
        arr = arr.reshape(len(arr), -1 if arr.size else self.ndim)
        if arr.ndim != 2 or arr.shape[1] != self.ndim:
            raise StatsError(f"feature {self.name!r}: rows of {arr.shape[1]} values, expected {self.ndim}")
        self.count += len(arr)
        if not self._exact:
            return
        if self.count * self.ndim > self.limit:
            self._drop()
            return
        if len(arr):
            self._chunks.append(np.array(arr, dtype=self.dtype, order="F"))

    def extend(self, other: ExactValues) -> None:
        """Add what ``other`` holds (its rows, or only its count when it is past its limit)."""
        if other.ndim != self.ndim:
            raise StatsError(f"feature {self.name!r}: cannot merge {other.ndim}-D values into {self.ndim}-D ones")
        if not other.exact:
            self.count += other.count
            self._drop()
            return
        for chunk in other._chunks:
            self.add(chunk)

    def _drop(self) -> None:
        self._exact = False
        self._chunks = []

    def quantile(self, q: float) -> np.ndarray:
        """``np.quantile(values, q, axis=0)`` over every row added, in the rows' dtype."""
        if not self._exact:
            raise StatsError(f"feature {self.name!r}: {self.count} rows passed the exact-quantile limit")
        if self.count == 0:
            raise StatsError(f"feature {self.name!r}: no values recorded, quantiles undefined")
        q = float(q)  # a Python float: numpy then keeps float32 values in float32, as the loaders get them
        out = np.empty(self.ndim, dtype=self.dtype)
        for d in range(self.ndim):
            column = np.concatenate([c[:, d] for c in self._chunks])
            out[d] = np.quantile(column, q)
        return out

    def values(self) -> np.ndarray:
        """Every row added, ``(count, ndim)`` (only while :attr:`exact`)."""
        if not self._exact:
            raise StatsError(f"feature {self.name!r}: {self.count} rows passed the exact-quantile limit")
        if not self._chunks:
            return np.empty((0, self.ndim), self.dtype)
        return np.concatenate(self._chunks)

    # -- files (the parts of a sharded conversion hand their rows to the merge this way) ---------

    def save(self, path: Path) -> None:
        """The rows as ``.npy`` (no pickle); only while :attr:`exact`."""
        np.save(path, self.values(), allow_pickle=False)

    @classmethod
    def load(cls, path: Path, *, ndim: int, rows: int, dtype: np.dtype | type = np.float32,
             limit: int = EXACT_QUANTILE_LIMIT, name: str = "") -> ExactValues:
        """Rows saved by :meth:`save`, checked against what the caller knows: ``rows`` of ``ndim``."""
        out = cls(ndim, dtype=dtype, limit=limit, name=name)
        if rows * ndim > out.limit:
            return cls.past_limit(ndim, rows, dtype=dtype, limit=limit, name=name)
        try:
            # mmap: the header's shape is checked before the rows are read into memory.
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            raise StatsError(f"{path}: unreadable saved values ({e})") from e
        if arr.shape != (rows, ndim) or arr.dtype != out.dtype:
            raise StatsError(
                f"{path}: saved values are {arr.dtype}{list(arr.shape)}, expected {out.dtype}[{rows}, {ndim}]"
            )
        out.add(np.array(arr))
        return out
