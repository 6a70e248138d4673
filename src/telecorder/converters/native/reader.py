"""The native store as a conversion source: its episodes as they were recorded."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from ...datasets.dataset import Dataset, is_dataset
from ...datasets.episode_file import Episode
from ...datasets.features import FORMAT_NAME, DatasetInfo
from ..base import ConversionError, FormatReader


class NativeReader(FormatReader):
    """A native dataset; ``exclude_bad`` leaves out the episodes marked bad."""

    format_name = "native"

    def __init__(self, path: Path, *, exclude_bad: bool = False, cameras: Iterable[str] | None = None) -> None:
        super().__init__(path, cameras)
        self._ds = Dataset.open(self.path)
        if self._ds.index_problems:
            # A line left out of the index would be an episode left out of the output, silently.
            raise ConversionError(f"{self.path}: the index has problems ({self._ds.index_problems[0]}); run "
                                  f"'telecorder doctor {self.path} --repair' first, so that the conversion keeps "
                                  "every episode")
        self.exclude_bad = exclude_bad
        self.check_camera_selection(self._ds.info.cameras, self.path / "meta/info.json")

    @classmethod
    def detect(cls, path: Path) -> bool:
        # LeRobot datasets have a meta/info.json too: look at what it says it is.
        if not is_dataset(path):
            return False
        try:
            return json.loads((Path(path) / "meta/info.json").read_text()).get("format") == FORMAT_NAME
        except (OSError, ValueError, AttributeError):
            return False

    @property
    def info(self) -> DatasetInfo:
        info = self._ds.info
        if self.camera_selection is None:
            return info
        features = {k: f for k, f in info.features.items() if not f.is_image or self.wants_camera(f.camera)}
        return replace(info, features=features)

    def episode_indices(self) -> list[int]:
        if self.exclude_bad:
            return [int(r["episode_index"]) for r in self._ds.records if not r.get("bad")]
        return self._ds.episode_indices

    def read_episode(self, index: int) -> Episode:
        with self._ds.episode(index) as reader:
            episode = reader.load(images=False)
            # Only the selected cameras' frames are decoded; the rest stay untouched in the file.
            cams = [c for c in reader.cameras if self.wants_camera(c)]
            episode.images = {c: [reader.frame(c, i) for i in range(len(reader))] for c in cams}
        episode.image_timestamp = {c: v for c, v in episode.image_timestamp.items() if c in episode.images}
        episode.frame_index = {c: v for c, v in episode.frame_index.items() if c in episode.images}
        return episode
