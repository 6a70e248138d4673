"""Kept for existing imports: the PyTorch loaders live in :mod:`telecorder.loaders` now.

They read every format (native, LeRobot, RLDS) through the converters' readers and use
``actions/``, which sit above ``datasets/``; this module only re-exports them.
"""

from __future__ import annotations

from ..loaders.mixture import MixtureDataset
from ..loaders.normalization import NORMALIZE_MODES, make_normalizer, make_state_normalizer
from ..loaders.torch_dataset import PAD_MODES, ActionTokenizer, TorchDataset

__all__ = [
    "NORMALIZE_MODES",
    "PAD_MODES",
    "ActionTokenizer",
    "MixtureDataset",
    "TorchDataset",
    "make_normalizer",
    "make_state_normalizer",
]
