"""PyTorch loaders over every format telecorder reads: native, LeRobot v2/v3, RLDS/OXE.

They sit above ``datasets/`` (the store), ``actions/`` (normalizers) and ``converters/``
(the readers whose parsing they reuse); nothing below imports them. ``TorchDataset`` and
``MixtureDataset`` import torch, so they load only when asked for.
"""

from __future__ import annotations

from .source import FORMATS, EpisodeSource, LoadedEpisode, detect_format, open_source


def __getattr__(name: str) -> object:
    if name == "TorchDataset":
        from .torch_dataset import TorchDataset

        return TorchDataset
    if name == "MixtureDataset":
        from .mixture import MixtureDataset

        return MixtureDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FORMATS", "EpisodeSource", "LoadedEpisode", "MixtureDataset", "TorchDataset", "detect_format",
           "open_source"]
