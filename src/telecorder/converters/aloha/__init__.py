"""ALOHA / ACT HDF5 episodes: the file layout (``schema``), ``reader``, ``writer``, and the ``merge``
of a sharded conversion's parts."""

from .merge import merge_parts
from .reader import AlohaReader, length_fit_summary
from .writer import AlohaWriter, recorded_in_sim

__all__ = ["AlohaReader", "AlohaWriter", "length_fit_summary", "merge_parts", "recorded_in_sim"]
