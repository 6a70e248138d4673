"""Mergeable per-feature statistics for a dataset's ``meta/stats.json``.

Statistics are computed once per recorded episode and merged into the dataset's
running totals, so ``meta/stats.json`` stays current without re-reading old episodes.
For every dimension of a numeric feature we keep:

* ``count``, ``mean`` and ``std`` (population, ddof=0): the state is (count, mean, M2)
  in float64, merged with Chan et al.'s parallel algorithm, so merged moments match
  numpy over the concatenated data to float64 rounding (~1e-12 relative to the data
  scale).
* ``min`` and ``max``: exact.
* quantiles (``q01`` and ``q99`` in the summary, any ``q`` through
  :meth:`FeatureStats.quantile`): a DDSketch-style logarithmic bucket sketch.

Quantile guarantee
------------------
Let ``n`` be the number of values in one dimension and ``x_(1) <= ... <= x_(n)`` the
values sorted.  ``quantile(q)`` targets the order statistic ``x = x_(k)`` with::

    k = max(1, ceil(q * n))      # q * n evaluated in float64

which is exactly what ``np.quantile(values, q, method="inverted_cdf")`` returns (the
smallest value with at least ``q * n`` values at or below it).  The returned
``q_hat`` satisfies::

    |q_hat - x| <= alpha * |x|     if |x| >= ZERO_FLOOR (1e-9)
    |q_hat - x| <  ZERO_FLOOR      if |x| <  ZERO_FLOOR

so ``|q_hat - x| <= max(alpha * |x|, 1e-9)`` always, where ``x`` is the true order
statistic itself, not merely some value of nearby rank.  Float64 rounding in the bucket
index can add at most ~1e-12 * |x| to the bound.  ``q = 0`` and ``q = 1`` (``k == 1``
and ``k == n``) return the exact minimum and maximum, and every result is clamped into
``[min, max]``, which can only move it closer to ``x``.  The guarantee survives any
number of merges, because merging adds bucket counts: the merged sketch is
bit-identical to the sketch of the concatenated data, whatever the order of merges.
(Sketches computed on machines whose ``np.log`` differs in the last ulp may put a value
lying on a bucket boundary in the neighbouring bucket; the bound above still holds.)
:meth:`FeatureStats.quantile_rank_error` gives the same bound in ranks: the share of the values
in the bucket of ``x``. Where exact quantiles are needed and the values fit in memory, see
:mod:`.exact_quantiles`.

How the sketch works: with ``gamma = (1 + alpha) / (1 - alpha)``, a value ``v`` with
``|v| >= ZERO_FLOOR`` falls in bucket ``i = ceil(log_gamma |v|)`` of the positive or
the negative store, i.e. ``gamma**(i-1) < |v| <= gamma**i``, and every value of that
bucket is within ``alpha`` relative error of its representative
``2 * gamma**i / (gamma + 1)``.  Values with ``|v| < ZERO_FLOOR`` are counted in a
single zero bucket represented by 0.  Buckets are sparse ``{index: count}`` per
dimension; a dimension whose values span a ratio ``R`` of magnitudes needs at most
about ``ln(R) / ln(gamma)`` ≈ ``ln(R) / (2 * alpha)`` buckets per sign: ~230 per decade
of magnitude at the default alpha.

Empty statistics
----------------
An array with zero rows gives empty statistics (``count == 0``) that act as the
identity of :meth:`FeatureStats.merge`, so an empty episode never breaks recording.
Their ``mean``/``std``/``min``/``max``/``quantile`` raise :class:`StatsError`, and their
summary holds ``None`` for every statistic (plain JSON ``null``).

Non-finite input (NaN, +-inf) is rejected with a :class:`StatsError` naming the feature
and counting the bad values: statistics must never silently absorb them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DatasetError
from .ranges import parse_episode_ranges
from .stats_checks import (
    MAX_COUNT,
    MIN_ALPHA,
    bucket_index_bound,
    json_floats,
    json_int,
    json_ints,
    shape_of,
)

__all__ = [
    "DEFAULT_ALPHA",
    "STATS_FORMAT",
    "ZERO_FLOOR",
    "DatasetStats",
    "FeatureStats",
    "StatsError",
]

STATS_FORMAT = "telecorder-stats/1"
DEFAULT_ALPHA = 0.005
# Below this magnitude values share one bucket: a log scale needs a floor, and 1e-9 sits
# far below any physical signal we record while keeping the bucket index range small.
ZERO_FLOOR = 1e-9
SUMMARY_QUANTILES: dict[str, float] = {"q01": 0.01, "q99": 0.99}

# A dense histogram is the fastest way to count bucket hits, but only while it stays
# small; past this many bins (or twice the number of values) sorting is cheaper.
_MAX_DENSE_BINS = 1 << 22
# The most episode numbers a stats file's "episodes" may cover: they are held as a set, and
# 10 million (about 0.5 GB) is far beyond any dataset of one file per episode.
MAX_RANGE_COUNT = 10_000_000


class StatsError(DatasetError, ValueError):
    """Statistics cannot be computed, merged or loaded.

    A ``ValueError`` for callers that validate data, and a ``DatasetError`` so the CLI
    prints it as one readable line.
    """


@dataclass(frozen=True, eq=False)
class _Store:
    """Sparse bucket counts of one sign for all dimensions of a feature.

    Kept as three flat int64 arrays sorted by (dim, idx) so that building and merging
    are a handful of vectorized numpy calls instead of a Python loop per dimension.
    """

    dim: np.ndarray
    idx: np.ndarray
    cnt: np.ndarray

    @classmethod
    def empty(cls) -> _Store:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z)

    @classmethod
    def from_sorted(cls, dim: np.ndarray, idx: np.ndarray, cnt: np.ndarray) -> _Store:
        return cls(
            np.ascontiguousarray(dim, dtype=np.int64),
            np.ascontiguousarray(idx, dtype=np.int64),
            np.ascontiguousarray(cnt, dtype=np.int64),
        )

    @classmethod
    def from_unsorted(cls, dim: np.ndarray, idx: np.ndarray, cnt: np.ndarray) -> _Store:
        """Aggregate (dim, idx, cnt) entries that may repeat; ``cnt`` may broadcast."""
        if dim.size == 0:
            return cls.empty()
        cnt = np.broadcast_to(cnt, dim.shape)
        # lexsort rather than a combined integer key: no overflow for any alpha or width.
        order = np.lexsort((idx, dim))
        dim, idx, cnt = dim[order], idx[order], cnt[order]
        new = np.empty(dim.size, dtype=bool)
        new[0] = True
        np.logical_or(dim[1:] != dim[:-1], idx[1:] != idx[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        return cls.from_sorted(dim[starts], idx[starts], np.add.reduceat(cnt, starts))

    def merge(self, other: _Store) -> _Store:
        if other.cnt.size == 0:
            return self
        if self.cnt.size == 0:
            return other
        return _Store.from_unsorted(
            np.concatenate([self.dim, other.dim]),
            np.concatenate([self.idx, other.idx]),
            np.concatenate([self.cnt, other.cnt]),
        )

    def dim_slice(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.searchsorted(self.dim, [d, d + 1])
        return self.idx[lo:hi], self.cnt[lo:hi]

    def totals(self, ndim: int) -> np.ndarray:
        out = np.zeros(ndim, dtype=np.int64)
        np.add.at(out, self.dim, self.cnt)
        return out

    def same_as(self, other: _Store) -> bool:
        return (
            np.array_equal(self.dim, other.dim)
            and np.array_equal(self.idx, other.idx)
            and np.array_equal(self.cnt, other.cnt)
        )


def _gamma(alpha: float) -> float:
    return (1.0 + alpha) / (1.0 - alpha)


def _label(name: str) -> str:
    return f"feature {name!r}" if name else "feature"


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise StatsError(f"quantile relative accuracy alpha must be in (0, 1), got {alpha!r}")
    return alpha


def _sketch_values(x: np.ndarray, alpha: float) -> tuple[np.ndarray, _Store, _Store]:
    """Bucket every value of ``x`` (N, D): zero-bucket counts and both sign stores."""
    n, ndim = x.shape
    ax = np.abs(x)
    is_pos = x >= ZERO_FLOOR
    is_neg = x <= -ZERO_FLOOR
    nonzero = is_pos | is_neg
    zero = n - np.count_nonzero(nonzero, axis=0).astype(np.int64)
    if not nonzero.any():
        return zero, _Store.empty(), _Store.empty()

    # Flooring first keeps log() finite everywhere so the whole array is processed in
    # one pass; zero-bucket entries are masked out below.
    np.maximum(ax, ZERO_FLOOR, out=ax)
    np.log(ax, out=ax)
    ax /= math.log(_gamma(alpha))
    np.ceil(ax, out=ax)
    idx = ax.astype(np.int64)
    del ax
    hi = int(idx.max())
    lo = int(np.where(nonzero, idx, hi).min())
    span = hi - lo + 1
    # One slot range per dimension: [0] zero bucket (unused), [1, span] positive,
    # [span + 1, 2 * span] negative.  A single bincount then counts both stores.
    width = 2 * span + 1
    if ndim * width > max(_MAX_DENSE_BINS, 2 * idx.size):
        # Wide index range (tiny alpha, or magnitudes spanning hundreds of decades):
        # sorting beats allocating a huge histogram.
        dims = np.broadcast_to(np.arange(ndim, dtype=np.int64), x.shape)
        pos = _Store.from_unsorted(dims[is_pos], idx[is_pos], np.ones(1, np.int64))
        neg = _Store.from_unsorted(dims[is_neg], idx[is_neg], np.ones(1, np.int64))
        return zero, pos, neg

    # Arithmetic with the masks instead of masked assignment: several times faster.
    slot = idx
    slot -= lo - 1
    slot += is_neg * span
    slot *= nonzero
    slot += np.arange(ndim, dtype=np.int64) * width
    hist = np.bincount(slot.ravel(), minlength=ndim * width).reshape(ndim, width)
    d_pos, c_pos = np.nonzero(hist[:, 1 : span + 1])
    d_neg, c_neg = np.nonzero(hist[:, span + 1 :])
    pos = _Store.from_sorted(d_pos, c_pos + lo, hist[d_pos, c_pos + 1])
    neg = _Store.from_sorted(d_neg, c_neg + lo, hist[d_neg, c_neg + span + 1])
    return zero, pos, neg


def _as_float_rows(values: Any, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    arr = np.asarray(values)
    label = _label(name)
    if arr.dtype.kind not in "biuf":
        raise StatsError(f"{label}: statistics need numeric values, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise StatsError(f"{label}: expected an array with one row per step, got a scalar")
    row_shape = tuple(int(s) for s in arr.shape[1:])
    if math.prod(row_shape) == 0:
        raise StatsError(f"{label}: rows of shape {row_shape} hold no values")
    x = arr.reshape(arr.shape[0], math.prod(row_shape)).astype(np.float64, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        n_nan = int(np.isnan(x).sum())
        n_inf = int(x.size - finite.sum()) - n_nan
        raise StatsError(
            f"{label}: {n_nan + n_inf} non-finite values ({n_nan} NaN, {n_inf} inf) in "
            f"{arr.shape[0]} rows; clean the data before computing statistics"
        )
    return x, row_shape


class FeatureStats:
    """Mergeable statistics of one numeric feature, per dimension.

    Build with :meth:`from_array` (one episode) or :meth:`from_dict` (saved state) and
    combine with :meth:`merge`.  Instances are immutable.  Arrays returned by the
    properties have the shape of one row, except that scalar rows (``values`` of shape
    ``(N,)``) give arrays and summary lists of length 1.
    """

    __slots__ = (
        "_count",
        "_m2",
        "_max",
        "_mean",
        "_min",
        "_neg",
        "_pos",
        "_zero",
        "alpha",
        "name",
        "shape",
    )

    def __init__(
        self,
        *,
        name: str,
        shape: tuple[int, ...],
        alpha: float,
        count: int,
        mean: np.ndarray,
        m2: np.ndarray,
        min: np.ndarray,
        max: np.ndarray,
        zero: np.ndarray,
        pos: _Store,
        neg: _Store,
    ) -> None:
        self.name = name
        self.shape = shape
        self.alpha = alpha
        self._count = count
        self._mean = mean
        self._m2 = m2
        self._min = min
        self._max = max
        self._zero = zero
        self._pos = pos
        self._neg = neg

    # -- construction ------------------------------------------------------------------

    @classmethod
    def empty(
        cls, shape: tuple[int, ...] = (), *, name: str = "", alpha: float = DEFAULT_ALPHA
    ) -> FeatureStats:
        """Statistics of no values: the identity of :meth:`merge`."""
        ndim = math.prod(shape)
        nan = np.full(ndim, np.nan)
        return cls(
            name=name,
            shape=tuple(shape),
            alpha=_check_alpha(alpha),
            count=0,
            mean=nan,
            m2=np.zeros(ndim),
            min=nan,
            max=nan,
            zero=np.zeros(ndim, dtype=np.int64),
            pos=_Store.empty(),
            neg=_Store.empty(),
        )

    @classmethod
    def from_array(
        cls, values: np.ndarray, *, name: str = "", alpha: float = DEFAULT_ALPHA
    ) -> FeatureStats:
        """Statistics of ``values``: shape ``(N,)`` or ``(N, ...)``, one row per step."""
        alpha = _check_alpha(alpha)
        x, row_shape = _as_float_rows(values, name)
        n = x.shape[0]
        if n == 0:
            return cls.empty(row_shape, name=name, alpha=alpha)
        # Overflow is detected and reported below, so numpy's warning would be noise.
        with np.errstate(over="ignore", invalid="ignore"):
            mean = x.mean(axis=0)
            dev = x - mean
            dev *= dev  # in place: halves the temporaries of the largest step
            m2 = dev.sum(axis=0)
            del dev
        if not (np.isfinite(mean).all() and np.isfinite(m2).all()):
            raise StatsError(
                f"{_label(name)}: values too large for float64 moments "
                f"(max |value| {np.abs(x).max():.3g})"
            )
        zero, pos, neg = _sketch_values(x, alpha)
        return cls(
            name=name,
            shape=row_shape,
            alpha=alpha,
            count=n,
            mean=mean,
            m2=m2,
            min=x.min(axis=0),
            max=x.max(axis=0),
            zero=zero,
            pos=pos,
            neg=neg,
        )

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Statistics of the union of both value sets (a new object)."""
        if not isinstance(other, FeatureStats):
            raise TypeError(f"cannot merge FeatureStats with {type(other).__name__}")
        name = self.name or other.name
        if self.shape != other.shape:
            raise StatsError(
                f"{_label(name)}: cannot merge statistics of rows shaped {self.shape} "
                f"with rows shaped {other.shape}"
            )
        if self.alpha != other.alpha:
            raise StatsError(
                f"{_label(name)}: cannot merge quantile sketches of different accuracy "
                f"(alpha {self.alpha} vs {other.alpha})"
            )
        if other._count == 0:
            return self._renamed(name)
        if self._count == 0:
            return other._renamed(name)
        na, nb = self._count, other._count
        n = na + nb
        with np.errstate(over="ignore", invalid="ignore"):
            delta = other._mean - self._mean
            mean = self._mean + delta * (nb / n)
            m2 = self._m2 + other._m2 + np.square(delta) * (na * (nb / n))
        if not (np.isfinite(mean).all() and np.isfinite(m2).all()):
            raise StatsError(f"{_label(name)}: merged moments overflow float64")
        return FeatureStats(
            name=name,
            shape=self.shape,
            alpha=self.alpha,
            count=n,
            mean=mean,
            m2=m2,
            min=np.minimum(self._min, other._min),
            max=np.maximum(self._max, other._max),
            zero=self._zero + other._zero,
            pos=self._pos.merge(other._pos),
            neg=self._neg.merge(other._neg),
        )

    def _renamed(self, name: str) -> FeatureStats:
        if name == self.name:
            return self
        # Shallow copy is safe: the arrays are never mutated after construction.
        clone = copy.copy(self)
        clone.name = name
        return clone

    # -- statistics --------------------------------------------------------------------

    @property
    def ndim(self) -> int:
        """Number of scalar dimensions per row (1 for scalar rows)."""
        return self._mean.size

    @property
    def _out_shape(self) -> tuple[int, ...]:
        return self.shape or (1,)

    def _nonempty(self) -> None:
        if self._count == 0:
            raise StatsError(f"{_label(self.name)}: no values recorded, statistics undefined")

    def _row(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape(self._out_shape).copy()

    @property
    def count(self) -> int:
        """Number of rows (the same for every dimension)."""
        return self._count

    @property
    def mean(self) -> np.ndarray:
        self._nonempty()
        return self._row(self._mean)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0)."""
        self._nonempty()
        return self._row(np.sqrt(np.maximum(self._m2, 0.0) / self._count))

    @property
    def min(self) -> np.ndarray:
        self._nonempty()
        return self._row(self._min)

    @property
    def max(self) -> np.ndarray:
        self._nonempty()
        return self._row(self._max)

    def quantile(self, q: float) -> np.ndarray:
        """The ``q``-quantile per dimension; see the module docstring for the guarantee."""
        return self._row(self._locate(q)[0])

    def quantile_rank_error(self, q: float) -> np.ndarray:
        """Per dimension, the share of all values in the bucket that holds both :meth:`quantile`
        and the order statistic it targets (0 where that is the exact minimum or maximum): the
        rank of ``quantile(q)`` among the values is within this fraction of the target's."""
        return self._row(self._locate(q)[1] / self._count)

    def _locate(self, q: float) -> tuple[np.ndarray, np.ndarray]:
        """(quantile, count of its bucket) per dimension."""
        q = float(q)
        if not 0.0 <= q <= 1.0:
            raise StatsError(f"quantile q must be in [0, 1], got {q!r}")
        self._nonempty()
        n = self._count
        k = max(1, min(n, math.ceil(n * q)))  # float64 product, as np.quantile computes it
        if k in (1, n):
            return (self._min if k == 1 else self._max), np.zeros(self.ndim, np.int64)
        gamma = _gamma(self.alpha)
        out = np.empty(self.ndim)
        bucket = np.empty(self.ndim, np.int64)
        for d in range(self.ndim):
            n_idx, n_cnt = self._neg.dim_slice(d)
            p_idx, p_cnt = self._pos.dim_slice(d)
            # Ascending value order: most negative bucket (largest index) first, then the
            # zero bucket, then positive buckets by increasing index.
            counts = np.concatenate([n_cnt[::-1], [self._zero[d]], p_cnt])
            j = int(np.searchsorted(np.cumsum(counts), k, side="left"))
            bucket[d] = counts[j]
            if j < n_cnt.size:
                out[d] = -self._representative(int(n_idx[n_cnt.size - 1 - j]), gamma)
            elif j == n_cnt.size:
                out[d] = 0.0
            else:
                out[d] = self._representative(int(p_idx[j - n_cnt.size - 1]), gamma)
        return np.clip(out, self._min, self._max), bucket

    @staticmethod
    def _representative(i: int, gamma: float) -> float:
        # The bucket (gamma**(i-1), gamma**i] is within alpha of this point; it may
        # exceed the float64 range only for the topmost bucket, which the clamp to max fixes.
        try:
            return 2.0 * gamma**i / (gamma + 1.0)
        except OverflowError:
            return math.inf

    # -- serialization -----------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """``count`` plus mean/std/min/max/q01/q99 as lists shaped like one row.

        Scalar rows give lists of length 1; empty statistics give ``None`` values.
        """
        out: dict[str, Any] = {"count": self._count}
        if self._count == 0:
            out.update(dict.fromkeys(("mean", "std", "min", "max", *SUMMARY_QUANTILES)))
            return out
        out["mean"] = self.mean.tolist()
        out["std"] = self.std.tolist()
        out["min"] = self.min.tolist()
        out["max"] = self.max.tolist()
        for key, q in SUMMARY_QUANTILES.items():
            out[key] = self.quantile(q).tolist()
        return out

    def to_dict(self) -> dict[str, Any]:
        """Summary plus the exact mergeable state, as plain JSON types.

        ``shape`` is the row shape, ``m2`` the per-dimension sum of squared deviations
        (``std`` alone would lose bits), and ``sketch`` holds per dimension the zero
        bucket count and, for each sign, bucket indices delta-encoded (first index, then
        gaps) with their counts, which keeps contiguous bucket runs to ~2 chars each.
        """
        out = self.summary()
        out["shape"] = list(self.shape)
        out["m2"] = self._m2.tolist() if self._count else [0.0] * self.ndim
        dims = []
        for d in range(self.ndim):
            entry: dict[str, Any] = {"zero": int(self._zero[d])}
            for key, store in (("pos", self._pos), ("neg", self._neg)):
                idx, cnt = store.dim_slice(d)
                didx = np.diff(idx, prepend=0) if idx.size else idx
                entry[key] = {"didx": didx.tolist(), "cnt": cnt.tolist()}
            dims.append(entry)
        out["sketch"] = {"alpha": self.alpha, "zero_floor": ZERO_FLOOR, "dims": dims}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, name: str = "") -> FeatureStats:
        """Rebuild statistics saved by :meth:`to_dict` (validated; StatsError if invalid)."""
        label = _label(name)
        try:
            return cls._from_dict(d, name)
        except StatsError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise StatsError(f"{label}: malformed saved statistics: {detail}") from exc

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any], name: str) -> FeatureStats:
        label = _label(name)

        def bad(msg: str) -> StatsError:
            return StatsError(f"{label}: malformed saved statistics: {msg}")

        if not isinstance(d, Mapping):
            raise bad(f"expected a JSON object, got {type(d).__name__}")
        # Every number is checked as it enters (stats_checks): no inf, 1e300 or 2**64 reaches numpy.
        shape = shape_of(d["shape"])
        ndim = math.prod(shape)
        count = json_int(d["count"], "count", 0, MAX_COUNT)
        sketch = d["sketch"]
        if not isinstance(sketch, Mapping):
            raise bad("'sketch' must be a JSON object")
        alpha = sketch["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not MIN_ALPHA <= alpha < 1.0:
            raise bad(f"sketch alpha {alpha!r} must be a number from {MIN_ALPHA} to below 1")
        alpha = _check_alpha(alpha)
        if sketch["zero_floor"] != ZERO_FLOOR:
            raise bad(f"sketch zero_floor {sketch['zero_floor']!r} differs from {ZERO_FLOOR}")
        if count == 0:
            return cls.empty(shape, name=name, alpha=alpha)

        def floats(key: str) -> np.ndarray:
            return json_floats(d[key], repr(key), ndim)

        dims = sketch["dims"]
        if not isinstance(dims, list) or len(dims) != ndim:
            raise bad(f"sketch has {len(dims) if isinstance(dims, list) else 'no list of'} dimensions, "
                      f"shape {list(shape)} needs {ndim}")
        bound = bucket_index_bound(alpha, ZERO_FLOOR)
        zero = np.array([json_int(e["zero"], f"dimension {i} zero count", 0, count)
                         for i, e in enumerate(dims)], dtype=np.int64)
        stores = {}
        for key in ("pos", "neg"):
            parts_dim, parts_idx, parts_cnt = [], [], []
            for i, entry in enumerate(dims):
                didx = json_ints(entry[key]["didx"], f"dimension {i} {key} didx", -2 * bound, 2 * bound)
                cnt = json_ints(entry[key]["cnt"], f"dimension {i} {key} cnt", 1, count)
                if didx.shape != cnt.shape:
                    raise bad(f"dimension {i} {key}: didx and cnt lengths differ")
                if (didx[1:] <= 0).any():
                    raise bad(f"dimension {i} {key}: indices must increase, counts be positive")
                idx = np.cumsum(didx)
                if idx.size and (idx[0] < -bound or idx[-1] > bound):
                    raise bad(f"dimension {i} {key}: bucket indices outside [-{bound}, {bound}]")
                if int(zero[i]) + int(cnt.sum(dtype=np.float64)) > count:
                    raise bad(f"dimension {i}: sketch bucket counts do not add up to count {count} (they exceed it)")
                parts_dim.append(np.full(cnt.size, i, dtype=np.int64))
                parts_idx.append(idx)
                parts_cnt.append(cnt)
            stores[key] = _Store.from_sorted(
                np.concatenate(parts_dim), np.concatenate(parts_idx), np.concatenate(parts_cnt)
            )
        totals = zero + stores["pos"].totals(ndim) + stores["neg"].totals(ndim)
        if (zero < 0).any() or (totals != count).any():
            raise bad(f"sketch bucket counts {totals.tolist()} do not add up to count {count}")
        m2 = floats("m2")
        if (m2 < 0).any():
            raise bad("'m2' must be non-negative")
        lo, hi = floats("min"), floats("max")
        if (lo > hi).any():
            raise bad("'min' exceeds 'max'")
        return cls(
            name=name,
            shape=shape,
            alpha=alpha,
            count=count,
            mean=floats("mean"),
            m2=m2,
            min=lo,
            max=hi,
            zero=zero,
            pos=stores["pos"],
            neg=stores["neg"],
        )

    def same_state(self, other: FeatureStats) -> bool:
        """Whether both hold bit-identical state (moments, extremes and sketch)."""
        return (
            self.shape == other.shape
            and self.alpha == other.alpha
            and self._count == other._count
            and all(
                np.array_equal(a, b, equal_nan=True)
                for a, b in (
                    (self._mean, other._mean),
                    (self._m2, other._m2),
                    (self._min, other._min),
                    (self._max, other._max),
                    (self._zero, other._zero),
                )
            )
            and self._pos.same_as(other._pos)
            and self._neg.same_as(other._neg)
        )

    def __repr__(self) -> str:
        return (
            f"FeatureStats(name={self.name!r}, shape={self.shape}, count={self._count}, "
            f"alpha={self.alpha})"
        )


class DatasetStats(Mapping[str, FeatureStats]):
    """Mapping feature name -> :class:`FeatureStats`, serialized as ``meta/stats.json``.

    ``episodes`` is the set of episode numbers the statistics cover, so that a check can
    tell statistics that miss an episode (a crash between the index append and the stats
    write) or count one twice; ``None`` where that is unknown (files written before it was
    recorded, or statistics merged with such a file).
    """

    def __init__(
        self, features: Mapping[str, FeatureStats] | None = None, episodes: Iterable[int] | None = None
    ) -> None:
        self.features: dict[str, FeatureStats] = dict(features or {})
        self.episodes: frozenset[int] | None = None if episodes is None else frozenset(int(e) for e in episodes)

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], *, alpha: float = DEFAULT_ALPHA, episode: int | None = None
    ) -> DatasetStats:
        """Statistics of one episode: one array (rows = steps) per numeric feature."""
        return cls(
            {
                name: FeatureStats.from_array(values, name=name, alpha=alpha)
                for name, values in arrays.items()
            },
            episodes=None if episode is None else (episode,),
        )

    def merge(self, other: DatasetStats) -> DatasetStats:
        """Union of feature names; features present in both are merged."""
        merged = dict(self.features)
        for name, stats in other.features.items():
            merged[name] = merged[name].merge(stats) if name in merged else stats
        episodes = None if self.episodes is None or other.episodes is None else self.episodes | other.episodes
        return DatasetStats(merged, episodes=episodes)

    def to_json_dict(self) -> dict[str, Any]:
        # A dataset holds one alpha in practice; if mixed, the weakest one is the bound
        # that holds for every feature.
        alpha = max((f.alpha for f in self.features.values()), default=DEFAULT_ALPHA)
        out: dict[str, Any] = {
            "format": STATS_FORMAT,
            "quantile_error": {"relative": alpha, "absolute_floor": ZERO_FLOOR},
        }
        if self.episodes is not None:
            out["episodes"] = format_ranges(sorted(self.episodes))
        out["features"] = {name: f.to_dict() for name, f in self.features.items()}
        return out

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> DatasetStats:
        if not isinstance(d, Mapping):
            raise StatsError(f"stats file must hold a JSON object, got {type(d).__name__}")
        fmt = d.get("format")
        if fmt != STATS_FORMAT:
            raise StatsError(
                f"unknown stats format {fmt!r}; this version of telecorder reads "
                f"{STATS_FORMAT!r} (recompute the statistics from the episodes)"
            )
        features = d.get("features")
        if not isinstance(features, Mapping):
            raise StatsError("stats file has no 'features' object")
        episodes = d.get("episodes")
        return cls(
            {name: FeatureStats.from_dict(fd, name=name) for name, fd in features.items()},
            episodes=None if episodes is None else parse_ranges(episodes, what="stats 'episodes'"),
        )

    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: f.summary() for name, f in self.features.items()}

    def __getitem__(self, name: str) -> FeatureStats:
        return self.features[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def __repr__(self) -> str:
        return f"DatasetStats({list(self.features)})"


def format_ranges(indices: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (compact for datasets of many thousand episodes)."""
    out: list[str] = []
    items = sorted(indices)
    if not items:
        return ""
    start = prev = items[0]
    for i in [*items[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(out)


def parse_ranges(text: Any, *, what: str = "ranges", max_count: int = MAX_RANGE_COUNT) -> list[int]:
    """Inverse of :func:`format_ranges`; text naming more than ``max_count`` numbers is refused
    before it is expanded (a file's ``0-99999999999`` is not a list to build)."""
    try:
        return list(parse_episode_ranges(text, what=what, max_count=max_count))
    except ValueError as e:
        raise StatsError(str(e)) from e
