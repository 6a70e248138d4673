"""Checks on the numbers read back from ``meta/stats.json`` before they become arrays.

JSON numbers are unbounded: a damaged or hand-edited file can hold ``Infinity``, ``1e300``
where a count belongs, or an integer beyond int64. numpy turns those into OverflowError or
silently wrapped values, far from the file. Every number is checked here, where it enters:
integers are integers within the bounds the statistics can hold, floats are finite. A
problem is a ValueError naming the key; :meth:`FeatureStats.from_dict` adds the feature
and the caller the file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Rows a feature's statistics may count: float64 holds every integer up to 2**53 exactly, and
# no recording comes near it.
MAX_COUNT = 2**53
# Values per row (the product of a feature's shape): numeric features are joint vectors and
# small matrices; a million is far beyond any of them and bounds what an empty sketch allocates.
MAX_ROW_VALUES = 1_000_000
# The smallest relative accuracy a saved sketch may claim: below ~1e-16 its gamma rounds to 1
# and bucket indices divide by log(1) = 0.
MIN_ALPHA = 1e-9


def json_int(value: Any, what: str, lo: int, hi: int) -> int:
    """``value`` as an int in [lo, hi] (a JSON integer, never a bool or a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{what} is {_show(value)}; expected an integer from {lo} to {hi}")
    return value


def json_ints(values: Any, what: str, lo: int, hi: int) -> np.ndarray:
    """``values`` (a JSON list of integers in [lo, hi]) as a 1-D int64 array."""
    if not isinstance(values, list):
        raise ValueError(f"{what} is {_show(values)}; expected a list of integers")
    if not values:
        return np.zeros(0, dtype=np.int64)
    try:
        arr = np.asarray(values)
    except (OverflowError, ValueError, TypeError):
        arr = np.asarray(values, dtype=object)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi),
                   values[0])
        raise ValueError(f"{what} holds {_show(bad)}; expected integers from {lo} to {hi}")
    if arr.min() < lo or arr.max() > hi:
        bad = arr.min() if arr.min() < lo else arr.max()
        raise ValueError(f"{what} holds {int(bad)}; expected integers from {lo} to {hi}")
    return arr.astype(np.int64)


def json_floats(values: Any, what: str, size: int) -> np.ndarray:
    """``values`` (a JSON list of ``size`` finite numbers, possibly nested like a row) as float64."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (OverflowError, ValueError, TypeError) as e:
        raise ValueError(f"{what} must hold {size} finite numbers ({e})") from e
    if arr.size != size or not np.isfinite(arr).all():
        raise ValueError(f"{what} must hold {size} finite numbers")
    return arr.reshape(size)


def shape_of(value: Any) -> tuple[int, ...]:
    """A saved row shape: a list of positive integers whose product is at most MAX_ROW_VALUES."""
    if not isinstance(value, list) or len(value) > 32:
        raise ValueError(f"shape {_show(value)} must be a list of positive integers")
    shape = tuple(json_int(s, "a shape entry", 1, MAX_ROW_VALUES) for s in value)
    if math.prod(shape) > MAX_ROW_VALUES:
        raise ValueError(f"shape {list(shape)} holds more than {MAX_ROW_VALUES} values per row")
    return shape


def bucket_index_bound(alpha: float, zero_floor: float) -> int:
    """The largest bucket index magnitude any finite float64 at or above ``zero_floor`` maps to."""
    log_gamma = math.log((1.0 + alpha) / (1.0 - alpha))
    widest = max(abs(math.log(np.finfo(np.float64).max)), abs(math.log(zero_floor)))
    return math.ceil(widest / log_gamma) + 2


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
