"""What every format adapter implements: a reader that yields episodes, a writer that takes them.

Episodes travel between formats as :class:`telecorder.datasets.Episode` objects in memory:
numeric arrays by dotted feature name (``observation.state``, ``action``), ``timestamp``
in seconds from the episode start, decoded RGB frames per camera in ``images``, and
metadata (``task``, ``language_instruction``, ``success``, ...). The schema common to all
episodes is a :class:`telecorder.datasets.DatasetInfo`.

Conventions in memory, whatever the format on disk: images are RGB uint8 (H, W, 3);
the gripper is 0 = closed, 1 = open where the source says which way it goes; quaternions
are wxyz; the action at step t is the command issued after observing step t. Whatever a
format cannot hold goes to a sidecar JSON (``telecorder_meta.json``) next to its files,
so that a round trip through it loses nothing we recorded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..datasets.episode_file import Episode
from ..datasets.features import DatasetInfo
from ..errors import DatasetError

SIDECAR = "telecorder_meta.json"


class ConversionError(DatasetError):
    """A source that cannot be converted: names the file and what is wrong with it."""


class FormatReader(ABC):
    """Reads one dataset of a format. Opening is cheap; episodes are read one at a time."""

    format_name: str

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """Whether ``path`` looks like a dataset of this format (no heavy imports, no full reads)."""

    @property
    @abstractmethod
    def info(self) -> DatasetInfo:
        """Features (numeric and image), fps, robot type of the dataset."""

    @abstractmethod
    def episode_indices(self) -> list[int]: ...

    @abstractmethod
    def read_episode(self, index: int) -> Episode:
        """One whole episode with decoded RGB frames in ``images``; ConversionError naming the file if bad."""

    def __iter__(self) -> Iterator[Episode]:
        for i in self.episode_indices():
            yield self.read_episode(i)


class FormatWriter(ABC):
    """Writes episodes into a new dataset of a format at ``path`` (a folder the pipeline owns)."""

    format_name: str

    def __init__(self, path: Path, info: DatasetInfo, **options: Any) -> None:
        self.path = Path(path)
        self.info = info
        self.options = options

    @abstractmethod
    def write_episode(self, episode: Episode) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Finish the dataset (metadata, statistics, shards)."""
