"""Normalizers for the loaders, built from a dataset's statistics (one implementation: ``actions/``).

Statistics arrive as the JSON dict of a native ``meta/stats.json`` or as any
``{"features": {name: summary}}`` dict whose summaries hold the per-dimension lists a mode
needs (``mean``/``std``, ``min``/``max``, ``q01``/``q99``). Foreign sources convert their own
stats files to that shape, or compute it from their numeric columns (see ``sources``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..datasets.model_inputs import concat_summaries
from ..errors import DatasetError
from .finite import finite_summary_problem

NORMALIZE_MODES = ("q99", "mean_std", "min_max", "none")
#: The summary keys each mode reads.
MODE_KEYS = {"q99": ("q01", "q99"), "mean_std": ("mean", "std"), "min_max": ("min", "max"), "none": ()}
_EPS = 1e-8


class _BoundsNormalizer:
    """Fallback for when ``telecorder.actions.normalize`` is unavailable.

    Same conventions as that module: ``q99`` is OpenVLA's BOUNDS_Q99 (clipped to [-1, 1]),
    ``min_max`` maps [min, max] to [-1, 1] unclipped, ``mean_std`` standardizes; a
    dimension with equal bounds normalizes to 0 and masked-out ones (False) pass through.
    """

    def __init__(self, mode: str, summary: dict[str, Any], mask: np.ndarray | None) -> None:
        self.mode = mode
        self.mask = mask
        if mode == "mean_std":
            self.a, self.b = np.asarray(summary["mean"], np.float64), np.asarray(summary["std"], np.float64)
        elif mode == "min_max":
            self.a, self.b = np.asarray(summary["min"], np.float64), np.asarray(summary["max"], np.float64)
        elif mode == "q99":
            self.a, self.b = np.asarray(summary["q01"], np.float64), np.asarray(summary["q99"], np.float64)

    def _masked(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return y if self.mask is None else np.where(self.mask, y, x)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.mode == "none":
            return x
        if self.mode == "mean_std":
            y = (x - self.a) / (self.b + _EPS)
        else:
            y = 2.0 * (x - self.a) / (self.b - self.a + _EPS) - 1.0
            if self.mode == "q99":
                y = np.clip(y, -1.0, 1.0)
            y = np.where(self.b == self.a, 0.0, y)
        return self._masked(x, y)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, np.float64)
        if self.mode == "none":
            return y
        if self.mode == "mean_std":
            x = y * (self.b + _EPS) + self.a
        else:
            x = np.where(self.b == self.a, self.a, 0.5 * (y + 1.0) * (self.b - self.a + _EPS) + self.a)
        return self._masked(y, x)


def _check_mode(mode: str) -> None:
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalization {mode!r} (use one of {', '.join(NORMALIZE_MODES)})")


def has_stats(stats: Mapping[str, Any], features: Sequence[str], mode: str) -> bool:
    """Whether ``stats`` holds what ``mode`` needs for every one of ``features``."""
    summaries = stats.get("features", {})
    return all(
        isinstance(summaries.get(f), Mapping) and all(summaries[f].get(k) is not None for k in MODE_KEYS[mode])
        and finite_summary_problem(summaries[f], MODE_KEYS[mode]) is None
        for f in features
    )


def _check_summary(summary: Any, feature: str, mode: str) -> None:
    """Refuse statistics a ``mode`` normalizer cannot use: absent, counted empty, lacking the
    mode's values or holding non-finite ones. ``count`` is not needed (LeRobot v2.0 files have none)."""
    if mode == "none":
        return
    names = MODE_KEYS[mode]
    if (not isinstance(summary, Mapping) or not summary or summary.get("count") == 0
            or any(summary.get(k) is None for k in names)):
        raise DatasetError(
            f"meta/stats.json has no statistics for {feature!r}; cannot normalize it with {mode!r} "
            "(recompute the statistics, or pass normalize='none')"
        )
    problem = finite_summary_problem(summary, names)
    if problem is not None:
        raise DatasetError(
            f"the statistics of {feature!r} cannot normalize it with {mode!r}: {problem}, so every normalized "
            "value would be NaN; the data holds NaN/inf (telecorder doctor finds them): fix it and recompute "
            "the statistics (telecorder doctor --repair), or leave such episodes out (--skip-nonfinite)"
        )


def make_normalizer(stats: Mapping[str, Any], feature: str, mode: str, mask: Sequence[bool] | None = None) -> Any:
    """A normalizer for ``feature`` from the JSON dict of ``meta/stats.json``.

    Uses :class:`telecorder.actions.normalize.Normalizer` when that module is importable,
    so training and inference share one implementation; otherwise an equivalent local one.
    """
    _check_mode(mode)
    mask_arr = None if mask is None else np.asarray(mask, dtype=bool)
    summary = stats.get("features", {}).get(feature) if mode != "none" else {}
    _check_summary(summary, feature, mode)
    try:
        from ..actions.normalize import Normalizer
    except ImportError:
        return _BoundsNormalizer(mode, summary, mask_arr)
    if mode == "none":  # needs no statistics, so a dataset without any still loads
        return Normalizer("none", mask=mask_arr)
    return Normalizer.from_dataset_stats(stats, feature=feature, mode=mode, mask=mask_arr)


def make_state_normalizer(stats: Mapping[str, Any], keys: Sequence[str], mode: str) -> Any:
    """One normalizer for the concatenation of ``keys`` (see ``concat_state``), each part
    normalized with its own statistics from ``meta/stats.json``."""
    _check_mode(mode)
    from ..actions.normalize import Normalizer

    if mode == "none":
        return Normalizer("none")
    for k in keys:
        _check_summary(stats.get("features", stats).get(k), k, mode)
    return Normalizer(mode, concat_summaries(stats, keys))
