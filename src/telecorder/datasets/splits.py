"""Train/validation splits by episode.

Steps of one episode are strongly correlated, so a split by step would leak nearly
identical frames into validation; episodes are always kept whole on one side.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["episode_split"]


def _episode_numbers(source: Any) -> list[int]:
    if isinstance(source, (str, Path)):
        from .dataset import Dataset

        source = Dataset.open(source)
    # A TorchDataset or a Dataset: both list the episode numbers they serve.
    numbers = getattr(source, "episode_indices", source)
    if not isinstance(numbers, Iterable):
        raise TypeError(f"cannot take episodes from {type(source).__name__}")
    return sorted({int(e) for e in numbers})


def episode_split(
    source: Iterable[int] | Any, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split episode numbers into (train, validation), both sorted.

    ``source`` is a list of episode numbers, a dataset folder, a
    :class:`~telecorder.datasets.Dataset` or a ``TorchDataset`` (its selected episodes,
    so bad ones it excluded stay excluded). The same episodes and seed always give the
    same split. With ``val_fraction > 0`` and at least two episodes, each side gets at
    least one episode; a single episode goes to training.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    episodes = _episode_numbers(source)
    n = len(episodes)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    elif n < 2:
        n_val = 0
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(episodes[k] for k in order[:n_val])
    train = sorted(episodes[k] for k in order[n_val:])
    return train, val
