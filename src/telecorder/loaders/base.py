"""The interface every loader source implements, whatever the format on disk.

An :class:`EpisodeSource` lists its episodes (number, length, task) without reading them,
and hands out one episode at a time as a :class:`LoadedEpisode`: its numeric columns in
memory (small) and its frames on demand, one step at a time, so that a sample costs the
frames it shows and nothing else. Sources hold no open files when pickled: DataLoader
workers open their own. The sources of each format (:mod:`.native`, :mod:`.lerobot`,
:mod:`.rlds`) build on this module; :mod:`.source` picks one for a folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.features import DatasetInfo
from ..datasets.stats import DatasetStats
from ..errors import DatasetError
from .finite import first_nonfinite, nonfinite_message


class LoadedEpisode(ABC):
    """One episode opened for sampling: numeric columns in memory, frames decoded per step."""

    numeric: dict[str, np.ndarray]
    instruction: str
    #: The task the episode was recorded for ("" when none: free text, or a dataset without task ids).
    task_id: str = ""

    @abstractmethod
    def frame(self, camera: str, step: int, size: tuple[int, int] | None, out: np.ndarray | None = None
              ) -> np.ndarray:
        """RGB frame of ``camera`` at ``step`` as ``(3, h, w)`` uint8, resized to ``size``."""

    def close(self) -> None:  # noqa: B027 - optional hook: not every episode holds something open
        """Release what this episode holds open (file handles)."""


class EpisodeSource(ABC):
    """A dataset folder seen by the loaders; see the module docstring."""

    format_name = ""
    root: Path
    info: DatasetInfo
    #: One dict per episode: ``episode_index``, ``length``, optionally ``task`` and ``bad``.
    records: list[dict[str, Any]]

    @abstractmethod
    def load(self, episode_index: int, numeric: Sequence[str]) -> LoadedEpisode:
        """Open one episode with the numeric features ``numeric`` read."""

    @abstractmethod
    def own_stats(self) -> dict[str, Any]:
        """The dataset's statistics file as ``{"features": {name: summary}}`` ({} if none)."""

    def check_episodes(self, episode_indices: Sequence[int]) -> None:  # noqa: B027 - optional check
        """Raise, naming what is missing, if an episode the loader will serve cannot be read
        (checked once at construction, so a training run does not fail hours in)."""

    def episode_location(self, episode_index: int) -> str:
        """The file holding episode ``episode_index``'s rows, for messages (the dataset folder
        where one file holds many episodes)."""
        return str(self.root)

    def computed_stats(self, features: Sequence[str], episodes: Sequence[int] | None = None) -> dict[str, Any]:
        """Statistics of ``features`` computed from the numeric columns of ``episodes`` (default:
        every episode), merged episode by episode exactly as the native store merges its
        ``meta/stats.json``. A non-finite value is an error naming its file, episode and step:
        statistics that quietly left it out would hide it from the normalizer, not from training."""
        total = DatasetStats()
        wanted = [int(r["episode_index"]) for r in self.records] if episodes is None else [int(e) for e in episodes]
        for index in wanted:
            ep = self.load(index, features)
            try:
                arrays = {f: np.asarray(ep.numeric[f]) for f in features}
            finally:
                ep.close()
            found = first_nonfinite(arrays, features)
            if found is not None:
                raise DatasetError(nonfinite_message(self.episode_location(index), index, found))
            total = total.merge(DatasetStats.from_arrays(arrays, episode=index))
        return total.to_json_dict()

    def close(self) -> None:  # noqa: B027 - optional hook: not every source holds something open
        """Release what this process holds open for the source (decoders, file maps)."""


def nonfinite_episodes(source: EpisodeSource, episodes: Sequence[int], keys: Sequence[str]) -> dict[int, str]:
    """Episodes of ``source`` whose ``keys`` hold a non-finite value: episode -> one-line message."""
    bad: dict[int, str] = {}
    for index in episodes:
        ep = source.load(int(index), keys)
        try:
            found = first_nonfinite(ep.numeric, keys)
        finally:
            ep.close()
        if found is not None:
            bad[int(index)] = nonfinite_message(source.episode_location(int(index)), int(index), found)
    return bad


def stats_dict(summaries: Mapping[str, Any], where: str = "stats.json") -> dict[str, Any]:
    """``{"features": ...}`` from per-feature summaries whose ``count`` may be a one-element list;
    a count that is not a whole number is a DatasetError naming ``where`` and the feature."""
    features: dict[str, Any] = {}
    for name, s in summaries.items():
        if not isinstance(s, Mapping):
            continue
        s = dict(s)
        count = s.get("count")
        if isinstance(count, (list, tuple)):
            count = count[0] if len(count) == 1 else (count or 0)
        if isinstance(count, (float, np.floating)) and float(count).is_integer():
            count = int(count)  # some writers store counts as floats
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
                raise DatasetError(f"{where}: {name}/count must be a whole number >= 0 (or [n]), not {count!r:.60}; "
                                   "restore the file or delete it to have the statistics computed")
            s["count"] = int(count)
        features[name] = s
    return {"features": features}
