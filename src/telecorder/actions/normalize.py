"""Per-dimension action normalization, invertible, saved as plain JSON.

Modes
-----
``"mean_std"``
    ``x' = (x - mean) / (std + eps)``.
``"min_max"``
    ``x' = 2 (x - min) / (max - min + eps) - 1``: the data's range maps to [-1, 1].
    Not clipped, so the inverse is exact everywhere.
``"q99"``
    OpenVLA's ``BOUNDS_Q99``: ``x' = clip(2 (x - q01) / (q99 - q01 + eps) - 1, -1, 1)``
    with ``eps = 1e-8`` by default, exactly OpenVLA's constant.  The inverse is exact
    for values inside ``[q01, q99]``; values outside were clipped and come back as the
    bound.
``"none"``
    Identity (no statistics needed).

In ``min_max`` and ``q99`` a dimension whose bounds coincide (``min == max`` or
``q01 == q99``: a joint that never moved) normalizes to 0 and unnormalizes to the
bound, rather than amplifying float noise by ``1 / eps``.  ``mean_std`` keeps the
``eps`` guard, so a constant dimension also gives 0.

``mask[i] = False`` leaves dimension ``i`` untouched in both directions: the usual use
is a binary gripper that the policy should predict in its own units.

Inputs are arrays ``(..., D)`` (numpy or anything ``np.asarray`` takes; a torch tensor
comes back as a tensor on its device).  Computation is float64; a floating input keeps
its dtype on output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..datasets.stats import DatasetStats, FeatureStats
from .errors import ActionError

__all__ = ["MODES", "NORMALIZER_FORMAT", "Normalizer"]

NORMALIZER_FORMAT = "telecorder-normalizer/1"
MODES: dict[str, tuple[str, str]] = {
    "mean_std": ("mean", "std"),
    "min_max": ("min", "max"),
    "q99": ("q01", "q99"),
    "none": ("", ""),
}


def _to_numpy(x: Any) -> tuple[np.ndarray, Any]:
    """The array view of ``x`` plus what is needed to give back the same kind of object."""
    if hasattr(x, "detach") and hasattr(x, "device"):
        # A torch tensor: avoid importing torch unless one is actually passed.
        return x.detach().cpu().numpy(), x
    return np.asarray(x), None


def _from_numpy(y: np.ndarray, like: Any) -> Any:
    if like is None:
        return y
    import torch

    return torch.from_numpy(np.ascontiguousarray(y)).to(device=like.device, dtype=like.dtype)


class Normalizer:
    """Invertible per-dimension normalization of actions (or states).

    ``stats`` is a summary dict (``{"mean": [...], "std": [...], "q01": [...], ...}``
    as written by :meth:`FeatureStats.summary`; only the two keys the mode needs are
    read) or a :class:`FeatureStats`.  Multi-dimensional rows are flattened to ``D``.
    """

    def __init__(
        self,
        mode: str,
        stats: Mapping[str, Any] | FeatureStats | None = None,
        mask: Sequence[bool] | None = None,
        eps: float = 1e-8,
    ) -> None:
        if mode not in MODES:
            raise ActionError(f"unknown normalization mode {mode!r}; choose one of {list(MODES)}")
        self.mode = mode
        self.eps = float(eps)
        lo_key, hi_key = MODES[mode]
        if mode == "none":
            self.a = self.b = None
            self.dim: int | None = None
        else:
            if stats is None:
                raise ActionError(f"normalization mode {mode!r} needs statistics")
            summary = stats.summary() if isinstance(stats, FeatureStats) else stats
            a, b = (self._vector(summary, k) for k in (lo_key, hi_key))
            if a.shape != b.shape:
                raise ActionError(
                    f"statistics {lo_key!r} and {hi_key!r} have different lengths "
                    f"({a.size} vs {b.size})"
                )
            if mode == "mean_std" and (b < 0).any():
                raise ActionError("statistics 'std' must be non-negative")
            if mode != "mean_std" and (a > b).any():
                raise ActionError(f"statistics {lo_key!r} exceed {hi_key!r} in some dimension")
            self.a, self.b = a, b
            self.dim = a.size
        if mask is None:
            self.mask = None if self.dim is None else np.ones(self.dim, dtype=bool)
        else:
            m = np.asarray(mask, dtype=bool).reshape(-1)
            if self.dim is not None and m.size != self.dim:
                raise ActionError(f"mask has {m.size} entries, statistics have {self.dim} dimensions")
            self.mask = m
        if self.a is not None:
            if mode == "mean_std":
                self._scale = self.b + self.eps
            else:
                self._scale = (self.b - self.a + self.eps) / 2.0
            # Degenerate bounds (min == max) map to 0, see the module docstring.
            self._flat = (self.b == self.a) if mode != "mean_std" else np.zeros(self.dim, bool)

    @staticmethod
    def _vector(summary: Mapping[str, Any], key: str) -> np.ndarray:
        if key not in summary or summary[key] is None:
            raise ActionError(f"statistics have no {key!r} values (empty feature?)")
        v = np.asarray(summary[key], dtype=np.float64).reshape(-1)
        if not np.isfinite(v).all():
            raise ActionError(f"statistics {key!r} contain non-finite values")
        return v

    # -- transforms ---------------------------------------------------------------------

    def _check(self, x: np.ndarray) -> None:
        if self.dim is not None and (x.ndim == 0 or x.shape[-1] != self.dim):
            raise ActionError(
                f"expected arrays with last dimension {self.dim}, got shape {tuple(x.shape)}"
            )

    def normalize(self, x: Any) -> Any:
        """Raw units -> normalized units; shape ``(..., D)`` preserved."""
        arr, like = _to_numpy(x)
        if self.mode == "none":
            return x
        self._check(arr)
        xf = arr.astype(np.float64)
        if self.mode == "mean_std":
            y = (xf - self.a) / self._scale
        else:
            # Written as OpenVLA writes it so q99 results match its normalization bit for bit.
            y = 2.0 * (xf - self.a) / (self.b - self.a + self.eps) - 1.0
            if self.mode == "q99":
                y = np.clip(y, -1.0, 1.0)
            y = np.where(self._flat, 0.0, y)
        y = np.where(self.mask, y, xf)
        return _from_numpy(self._cast(y, arr), like)

    def unnormalize(self, y: Any) -> Any:
        """Normalized units -> raw units: the inverse of :meth:`normalize` (see modes)."""
        arr, like = _to_numpy(y)
        if self.mode == "none":
            return y
        self._check(arr)
        yf = arr.astype(np.float64)
        if self.mode == "mean_std":
            x = yf * self._scale + self.a
        else:
            x = (yf + 1.0) * self._scale + self.a
            x = np.where(self._flat, self.a, x)
        x = np.where(self.mask, x, yf)
        return _from_numpy(self._cast(x, arr), like)

    @staticmethod
    def _cast(y: np.ndarray, like: np.ndarray) -> np.ndarray:
        return y.astype(like.dtype, copy=False) if like.dtype.kind == "f" else y

    # -- serialization ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON state; :meth:`from_dict` rebuilds an identical normalizer."""
        out: dict[str, Any] = {"format": NORMALIZER_FORMAT, "mode": self.mode, "eps": self.eps}
        out["mask"] = None if self.mask is None else self.mask.tolist()
        if self.a is not None:
            lo_key, hi_key = MODES[self.mode]
            out["stats"] = {lo_key: self.a.tolist(), hi_key: self.b.tolist()}
        else:
            out["stats"] = None
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalizer:
        if not isinstance(d, Mapping) or d.get("format") != NORMALIZER_FORMAT:
            fmt = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise ActionError(f"not a saved normalizer (format {fmt!r}, expected {NORMALIZER_FORMAT!r})")
        return cls(d["mode"], d.get("stats"), mask=d.get("mask"), eps=d.get("eps", 1e-8))

    @classmethod
    def from_dataset_stats(
        cls,
        stats: Mapping[str, Any] | DatasetStats,
        feature: str = "action",
        mode: str = "q99",
        mask: Sequence[bool] | None = None,
        eps: float = 1e-8,
    ) -> Normalizer:
        """Normalizer for ``feature`` from a :class:`DatasetStats`, the parsed
        ``meta/stats.json`` (``{"format": ..., "features": {...}}``) or a plain
        ``{feature: summary}`` mapping."""
        if isinstance(stats, DatasetStats):
            fs: Any = stats.get(feature)
        elif isinstance(stats, Mapping) and "format" in stats:
            fs = DatasetStats.from_json_dict(stats).get(feature)
        elif isinstance(stats, Mapping):
            fs = stats.get("features", stats).get(feature)
        else:
            raise ActionError(f"expected dataset statistics, got {type(stats).__name__}")
        if fs is None:
            raise ActionError(f"dataset statistics have no feature {feature!r}")
        return cls(mode, fs, mask=mask, eps=eps)

    def __repr__(self) -> str:
        return f"Normalizer(mode={self.mode!r}, dim={self.dim})"
