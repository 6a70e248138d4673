"""Per-dimension action binning: RT-2/OpenVLA uniform bins and fitted quantile bins.

:class:`UniformBins` reproduces OpenVLA's ``ActionTokenizer`` arithmetic exactly (same
numpy calls in the same order), so token ids produced here are interchangeable with
OpenVLA's: bins are ``np.linspace(low, high, n_bins)``, a value is clipped to
``[low, high]`` and digitized to ``1..n_bins``, and its token id is
``vocab_size - bin`` (the last ``n_bins`` ids of the language model's vocabulary).
Decoding maps to the ``n_bins - 1`` bin centers; the top bin (only reached by
``x == high``) decodes to the last center, as in OpenVLA.

:class:`QuantileBins` puts the edges at empirical quantiles of the training actions,
so every bin is used about equally often.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from .errors import ActionError

__all__ = ["QuantileBins", "UniformBins"]


def _reject_nan(x: np.ndarray) -> None:
    if x.dtype.kind in "fc":
        n_nan = int(np.count_nonzero(np.isnan(x)))
        if n_nan:
            raise ActionError(
                f"{n_nan} NaN value(s) among {x.size} action values; NaN has no bin "
                "(check the normalization statistics and the recorded data)"
            )


class UniformBins:
    """OpenVLA-compatible uniform binning of (normalized) actions in ``[low, high]``."""

    def __init__(self, n_bins: int = 256, low: float = -1.0, high: float = 1.0) -> None:
        if n_bins < 2:
            raise ActionError(f"n_bins must be at least 2, got {n_bins}")
        if not low < high:
            raise ActionError(f"low ({low}) must be below high ({high})")
        self.n_bins = int(n_bins)
        self.low = low
        self.high = high
        self.bins = np.linspace(low, high, self.n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0

    def encode(self, x: Any) -> np.ndarray:
        """Bin numbers ``1..n_bins`` (``np.digitize`` convention), same shape as ``x``."""
        arr = np.asarray(x)
        _reject_nan(arr)
        return np.digitize(np.clip(arr, a_min=float(self.low), a_max=float(self.high)), self.bins)

    def decode(self, bins: Any) -> np.ndarray:
        """Bin numbers -> bin centers (out-of-range numbers clamp to the end bins)."""
        idx = np.clip(np.asarray(bins) - 1, a_min=0, a_max=self.bin_centers.shape[0] - 1)
        return self.bin_centers[idx]

    def _check_vocab(self, vocab_size: int) -> None:
        if vocab_size <= self.n_bins:
            raise ActionError(
                f"vocab_size {vocab_size} leaves no room for {self.n_bins} action tokens"
            )

    def to_token_ids(self, x: Any, vocab_size: int) -> np.ndarray:
        """Token ids ``vocab_size - bin``, as OpenVLA's ``ActionTokenizer`` emits."""
        self._check_vocab(vocab_size)
        return vocab_size - self.encode(x)

    def from_token_ids(self, ids: Any, vocab_size: int) -> np.ndarray:
        """Token ids -> actions, exactly OpenVLA's ``decode_token_ids_to_actions``."""
        self._check_vocab(vocab_size)
        discretized = vocab_size - np.asarray(ids)
        idx = np.clip(discretized - 1, a_min=0, a_max=self.bin_centers.shape[0] - 1)
        return self.bin_centers[idx]

    def __repr__(self) -> str:
        return f"UniformBins(n_bins={self.n_bins}, low={self.low}, high={self.high})"


class QuantileBins:
    """Per-dimension bins with edges at empirical quantiles of the fitted actions.

    For dimension ``d`` the edges are the unique values of
    ``np.quantile(x[:, d], linspace(0, 1, n_bins + 1))``, so a dimension with many
    repeated values gets fewer (but still non-empty) bins; a constant dimension gets a
    single bin ``[v, v]``.  Bin ``i`` covers ``[e_i, e_{i+1})`` (the last one also
    includes its upper edge); values outside the fitted range go to the end bins.
    Decoding returns the midpoint of the bin's edges.
    """

    FORMAT = "telecorder-quantile-bins/1"

    def __init__(self, n_bins: int = 256) -> None:
        if n_bins < 1:
            raise ActionError(f"n_bins must be positive, got {n_bins}")
        self.n_bins = int(n_bins)
        self.edges: list[np.ndarray] | None = None

    def fit(self, x: Any) -> QuantileBins:
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ActionError(f"fit expects a non-empty (N, D) array, got shape {arr.shape}")
        _reject_nan(arr)
        if not np.isfinite(arr).all():
            raise ActionError("cannot fit quantile bins to infinite values")
        qs = np.quantile(arr, np.linspace(0.0, 1.0, self.n_bins + 1), axis=0)
        self.edges = [self._clean(qs[:, d]) for d in range(arr.shape[1])]
        return self

    @staticmethod
    def _clean(e: np.ndarray) -> np.ndarray:
        # np.quantile's interpolation can be non-monotonic by an ulp; sort before unique.
        e = np.unique(np.sort(e))
        return np.array([e[0], e[0]]) if e.size == 1 else e

    def _fitted(self) -> list[np.ndarray]:
        if self.edges is None:
            raise ActionError("QuantileBins is not fitted; call fit() or load() first")
        return self.edges

    @property
    def bins_per_dim(self) -> list[int]:
        return [e.size - 1 for e in self._fitted()]

    def _check_dim(self, arr: np.ndarray) -> list[np.ndarray]:
        edges = self._fitted()
        if arr.ndim == 0 or arr.shape[-1] != len(edges):
            raise ActionError(f"expected last dimension {len(edges)}, got shape {arr.shape}")
        return edges

    def encode(self, x: Any) -> np.ndarray:
        """Bin indices ``0..bins_per_dim[d] - 1``, shape of ``x`` (``(..., D)``)."""
        arr = np.asarray(x)
        edges = self._check_dim(arr)
        _reject_nan(arr)
        out = np.empty(arr.shape, dtype=np.int64)
        # D is small (robot joints); each dimension is one vectorized searchsorted.
        for d, e in enumerate(edges):
            out[..., d] = np.searchsorted(e[1:-1], arr[..., d], side="right")
        return out

    def decode(self, bins: Any) -> np.ndarray:
        """Bin indices -> midpoints of the bins' quantile ranges (indices are clamped)."""
        b = np.asarray(bins)
        edges = self._check_dim(b)
        out = np.empty(b.shape, dtype=np.float64)
        for d, e in enumerate(edges):
            mids = (e[:-1] + e[1:]) / 2.0
            out[..., d] = mids[np.clip(b[..., d], 0, mids.size - 1)]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "n_bins": self.n_bins,
            "edges": [e.tolist() for e in self._fitted()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantileBins:
        if not isinstance(d, dict) or d.get("format") != cls.FORMAT:
            raise ActionError(f"not saved quantile bins (expected format {cls.FORMAT!r})")
        qb = cls(int(d["n_bins"]))
        edges = [np.asarray(e, dtype=np.float64) for e in d["edges"]]
        for i, e in enumerate(edges):
            if e.ndim != 1 or e.size < 2 or (np.diff(e) < 0).any() or not np.isfinite(e).all():
                raise ActionError(f"saved quantile bins: edges of dimension {i} are invalid")
        qb.edges = edges
        return qb

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> QuantileBins:
        return cls.from_dict(json.loads(Path(path).read_text()))
