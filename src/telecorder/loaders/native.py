"""Native telecorder datasets (``meta/`` + one HDF5 file per episode) as a loader source."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..datasets.dataset import Dataset
from ..datasets.episode_file import EpisodeReader
from ..datasets.features import read_json
from ..datasets.stats import DatasetStats
from ..errors import DatasetError
from .base import EpisodeSource, LoadedEpisode
from .frames import decode_chw
from .tasks import metadata_task_id


class _FrameColumn:
    """One camera's stored frames, read one element at a time through h5py's low-level API.

    ``dataset[step]`` on a variable-length dataset spends most of its 100 us building a
    selection and a result type; with the file space and the memory type made once, a read
    costs about half, which at 2 frames a sample is a tenth of the budget of a JPEG decode.
    """

    def __init__(self, dataset: h5py.Dataset) -> None:
        self.dataset = dataset
        self.length = dataset.shape[0]
        self._mem_space = h5py.h5s.create_simple((1,))
        self._dtype = dataset.dtype

    def read(self, step: int) -> np.ndarray:
        if not 0 <= step < self.length:
            raise IndexError(f"step {step} out of range for {self.length} frames")
        space = self.dataset.id.get_space()  # one per read: decode threads read concurrently
        space.select_hyperslab((step,), (1,))
        out = np.empty((1,), dtype=self._dtype)
        self.dataset.id.read(self._mem_space, space, out)
        return out[0]


class NativeEpisode(LoadedEpisode):
    def __init__(self, reader: EpisodeReader, numeric: dict[str, np.ndarray], instruction: str,
                 stored: dict[str, tuple[int, int]]) -> None:
        self.reader = reader
        self.numeric = numeric
        self.instruction = instruction
        self._stored = stored
        self._columns: dict[str, _FrameColumn] = {}
        self._where = str(reader.path)

    def _encoded(self, camera: str, step: int) -> np.ndarray:
        column = self._columns.get(camera)
        if column is None:
            column = self._columns[camera] = _FrameColumn(self.reader.image_dataset(camera))
        try:
            return column.read(step)
        except (OSError, RuntimeError) as e:
            raise DatasetError(f"{self._where}: camera {camera!r} step {step} cannot be read ({e}); the file is "
                               "damaged; run 'telecorder doctor DATASET' to find damaged episodes") from e

    def frame(self, camera: str, step: int, size: tuple[int, int] | None, out: np.ndarray | None = None
              ) -> np.ndarray:
        where = f"{self._where} camera {camera!r} step {step}"
        return decode_chw(self._encoded(camera, step), size, stored_hw=self._stored.get(camera), where=where,
                          out=out)

    def close(self) -> None:
        self._columns.clear()
        self.reader.close()


class NativeSource(EpisodeSource):
    format_name = "native"

    def __init__(self, path: str | Path) -> None:
        self.dataset = Dataset.open(path)
        self.root = self.dataset.root
        self.info = self.dataset.info
        self.records = list(self.dataset.records)
        self._stored = {f.camera: (int(f.shape[0]), int(f.shape[1])) for f in self.info.image_features}

    def own_stats(self) -> dict[str, Any]:
        path = self.root / "meta" / "stats.json"
        if not path.exists():
            return {}
        own = read_json(path)
        try:
            if not isinstance(own, dict) or "format" in own:  # (a plain {feature: summary} file is taken as it is)
                DatasetStats.from_json_dict(own)  # every saved number checked here, the error naming the file
        except ValueError as e:
            raise DatasetError(f"{path}: {e}; run 'telecorder doctor --repair' to recompute it") from e
        return own

    def episode_path(self, episode_index: int) -> Path:
        return self.dataset.episode_path(episode_index)

    def episode_location(self, episode_index: int) -> str:
        return str(self.dataset.episode_path(episode_index))

    def load(self, episode_index: int, numeric: Sequence[str]) -> NativeEpisode:
        rec = next((r for r in self.records if int(r["episode_index"]) == episode_index), {})
        path = self.dataset.episode_path(episode_index)
        reader = EpisodeReader(path, self.info)
        try:
            arrays = {k: reader.numeric(k) for k in numeric}
            attrs = reader.attrs
            if rec and len(reader) != int(rec["length"]):
                raise DatasetError(f"{path}: {len(reader)} steps, but meta/episodes.jsonl says {rec['length']}")
        except BaseException:
            reader.close()
            raise
        # The first of these that is text (another tool may have stored a number or an array there).
        texts = (attrs.get("language_instruction"), attrs.get("task"), rec.get("task"))
        instruction = next((t for t in texts if isinstance(t, str) and t), "")
        episode = NativeEpisode(reader, arrays, instruction, self._stored)
        episode.task_id = metadata_task_id(attrs)
        return episode
