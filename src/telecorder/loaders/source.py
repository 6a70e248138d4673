"""Which source reads a dataset folder: format detection and the one opener, :func:`open_source`.

The interface the sources implement is in :mod:`.base`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import DatasetError
from .base import EpisodeSource, LoadedEpisode, nonfinite_episodes, stats_dict

FORMATS = ("native", "lerobot", "rlds")

# The interface lives in .base (the format sources build on it); kept importable from here.
__all__ = ["FORMATS", "EpisodeSource", "LoadedEpisode", "detect_format", "nonfinite_episodes", "open_source",
           "stats_dict"]


def detect_format(path: Path) -> str:
    """``native``, ``lerobot`` or ``rlds`` from what the folder holds; nothing heavy is imported."""
    from ..converters.lerobot.reader import LeRobotReader
    from ..converters.rlds.paths import find_tfds_dir
    from ..datasets.dataset import is_dataset

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such folder")
    # LeRobot first: both keep a meta/info.json, and only LeRobot's has a codebase_version.
    if LeRobotReader.detect(path):
        return "lerobot"
    if is_dataset(path):
        return "native"
    if find_tfds_dir(path) is not None:
        return "rlds"
    raise DatasetError(
        f"{path}: not a dataset the loaders read (a telecorder dataset with meta/info.json and episodes/, "
        "a LeRobot v2/v3 folder, or an RLDS/TFDS folder with dataset_info.json + features.json)"
    )


def open_source(path: str | Path, format: str | None = None, *, cameras: Sequence[str] | None = None,
                split: str | None = None, strict_timestamps: bool = False) -> EpisodeSource:
    """The source for ``path``; ``format`` (``native``, ``lerobot``, ``rlds``) skips detection.

    ``cameras`` limits a LeRobot source to those cameras (the others are never opened);
    ``split`` picks an RLDS split (default ``"train"``); ``strict_timestamps`` makes a LeRobot
    source refuse rows whose timestamps run a constant offset off their video instead of mapping them.
    """
    path = Path(path)
    fmt = detect_format(path) if format is None else format
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r} (use one of {', '.join(FORMATS)})")
    if fmt == "native":
        from .native import NativeSource

        return NativeSource(path)
    if fmt == "lerobot":
        from .lerobot import LeRobotSource

        return LeRobotSource(path, cameras=cameras, strict_timestamps=strict_timestamps)
    from .rlds import RLDSSource

    return RLDSSource(path, split=split or "train")
