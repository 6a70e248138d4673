"""Action processing for VLA training: normalization, binning, FAST tokens, chunks, spaces.

Importing the package is cheap: ``fast`` imports the ``tokenizers`` library only when a
tokenizer is fitted or loaded.
"""

from __future__ import annotations

from .chunking import chunk_indices, history_indices, make_chunks
from .discretize import QuantileBins, UniformBins
from .errors import ActionError
from .fast import FASTTokenizer
from .normalize import Normalizer

__all__ = [
    "ActionError",
    "FASTTokenizer",
    "Normalizer",
    "QuantileBins",
    "UniformBins",
    "chunk_indices",
    "history_indices",
    "make_chunks",
]
