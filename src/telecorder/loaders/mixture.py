"""Several loaders sampled by weight, as Octo mixes its training sets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import missing_extra

try:
    import torch
    from torch.utils.data import Dataset as _TorchBase
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e


class MixtureDataset(_TorchBase):
    """Several datasets sampled by weight, as Octo mixes its training sets.

    Map-style with a fixed ``length`` (default: the components' total): item ``i`` draws
    a component with probability proportional to its weight and then a uniform item of
    it, from a generator seeded by ``(seed, epoch, i)``. Items are therefore reproducible
    whatever the DataLoader's worker count or shuffling; call :meth:`set_epoch` to draw
    fresh samples each epoch. Each component keeps its own normalization statistics and
    may be of any format the loaders read (a native dataset next to a LeRobot one) and keeps its
    own options (``paraphrase="random"`` language augmentation included); items
    gain ``dataset_index`` (int64 tensor). For the default collate, components must produce
    the same keys and shapes (same camera names, image size, history, horizon).
    """

    def __init__(
        self,
        components: Sequence[tuple[Any, float]],
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        if not components:
            raise ValueError("MixtureDataset needs at least one (dataset, weight) pair")
        self.datasets = [d for d, _ in components]
        weights = np.array([float(w) for _, w in components], dtype=np.float64)
        if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError(f"mixture weights must be finite, >= 0 and not all zero, got {weights.tolist()}")
        for d, w in zip(self.datasets, weights, strict=True):
            if w > 0 and len(d) == 0:
                raise ValueError("a component with positive weight has no samples")
        self.weights = weights / weights.sum()
        self._cdf = np.cumsum(self.weights)
        self.seed = int(seed)
        self.epoch = 0
        self.length = int(length) if length is not None else sum(len(d) for d in self.datasets)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        # Components that draw per epoch themselves (TorchDataset's paraphrase="random") follow.
        for d in self.datasets:
            if callable(getattr(d, "set_epoch", None)):
                d.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def choose(self, i: int) -> tuple[int, int]:
        """(component, item within it) that item ``i`` stands for."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        k = min(int(np.searchsorted(self._cdf, rng.random(), side="right")), len(self.datasets) - 1)
        while self.weights[k] == 0:  # float round-off at the top of the cdf
            k -= 1
        return k, int(rng.integers(len(self.datasets[k])))

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, j = self.choose(int(i))
        item = dict(self.datasets[k][j])
        item["dataset_index"] = torch.tensor(k, dtype=torch.int64)
        return item
