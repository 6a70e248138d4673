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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..datasets.episode_file import Episode
from ..datasets.features import DatasetInfo
from ..errors import DatasetError

SIDECAR = "telecorder_meta.json"


class ConversionError(DatasetError):
    """A source that cannot be converted: names the file and what is wrong with it."""


class FormatReader(ABC):
    """Reads one dataset of a format. Opening is cheap; episodes are read one at a time.

    ``cameras`` selects cameras before anything is read: a camera not selected never appears
    in ``info`` and its frames are never opened or decoded (None: every camera; an empty
    selection: none). Naming a camera the dataset does not declare is a ConversionError.
    """

    format_name: str

    def __init__(self, path: Path, cameras: Iterable[str] | None = None) -> None:
        self.path = Path(path)
        if isinstance(cameras, str):
            cameras = [cameras]
        self.camera_selection: tuple[str, ...] | None = None if cameras is None else tuple(dict.fromkeys(cameras))

    def wants_camera(self, camera: str) -> bool:
        """Whether ``camera`` is selected (readers skip the frames of those that are not)."""
        return self.camera_selection is None or camera in self.camera_selection

    def check_camera_selection(self, declared: Iterable[str], source: object) -> None:
        """Reject selected names that ``source`` (a file or folder) does not declare as cameras."""
        if self.camera_selection is None:
            return
        declared = list(declared)
        unknown = [c for c in self.camera_selection if c not in declared]
        if unknown:
            raise ConversionError(
                f"{source}: no camera {', '.join(map(repr, unknown))}; it has {declared or 'no cameras'} "
                "(choose among them with --cameras)"
            )

    def missing_cameras(self, episodes: Iterable[int]) -> dict[str, list[int]]:
        """Selected cameras whose frames are absent for some of ``episodes``: camera -> those episodes.

        Only formats that keep frames outside the episode's own file (LeRobot's videos) can lack
        them; a cheap existence check, nothing is decoded.
        """
        return {}

    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """Whether ``path`` looks like a dataset of this format (no heavy imports, no full reads)."""

    @property
    @abstractmethod
    def info(self) -> DatasetInfo:
        """Features (numeric, and image features of the selected cameras), fps, robot type of the dataset."""

    @abstractmethod
    def episode_indices(self) -> list[int]: ...

    @abstractmethod
    def read_episode(self, index: int) -> Episode:
        """One whole episode with decoded RGB frames of the selected cameras in ``images``;
        ConversionError naming the file if bad."""

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
