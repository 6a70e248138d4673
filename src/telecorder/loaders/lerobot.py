"""LeRobot v2.0/v2.1/v3.0 datasets as a loader source, read in place through :class:`LeRobotReader`.

An episode opens with its numeric columns only (the Parquet columns asked for); a video frame
is decoded when a sample shows it, found by timestamp in the camera's mp4 as LeRobot finds it;
an ``image`` camera (bytes in the rows) reads that episode's column of bytes and decodes the
steps asked for. Rows whose timestamps run a constant offset (at most one frame) off their video
get their own frames by that offset, with a warning (see ``converters/lerobot/timing.py``);
``strict_timestamps=True`` refuses them as LeRobot does.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..converters.base import ConversionError
from ..converters.lerobot.reader import LeRobotReader
from ..converters.lerobot.schema import STATS_PATH
from ..datasets.features import read_json
from ..datasets.stats import format_ranges
from .base import EpisodeSource, LoadedEpisode, stats_dict
from .frames import decode_chw
from .tasks import metadata_task_id
from .video import VideoFrames


class LeRobotEpisode(LoadedEpisode):
    def __init__(self, source: LeRobotSource, index: int, numeric: dict[str, np.ndarray], instruction: str,
                 timestamp: np.ndarray) -> None:
        self.source = source
        self.index = index
        self.numeric = numeric
        self.instruction = instruction
        self.timestamp = timestamp
        self._videos: dict[str, tuple[Path, float]] = {}
        self._images: dict[str, list[bytes]] = {}

    def frame(self, camera: str, step: int, size: tuple[int, int] | None, out: np.ndarray | None = None
              ) -> np.ndarray:
        src = self.source
        stored, spec = src.reader.camera_storage(camera)
        context = f"episode {self.index}, camera {camera!r}, step {step}"
        if stored == "video":
            if camera not in self._videos:
                self._videos[camera] = src.video_start(camera, self.index, self.timestamp)
            path, start = self._videos[camera]
            return src.videos().frame(path, start + float(self.timestamp[step]), src.reader.tolerance_s,
                                      size, out, context=context, stored_hw=(int(spec.shape[0]), int(spec.shape[1])))
        if camera not in self._images:
            self._images[camera] = src.reader.encoded_images(camera, self.index)
        blobs = self._images[camera]
        if len(blobs) != len(self.timestamp):
            raise ConversionError(f"{src.root}: camera {camera!r} has {len(blobs)} images for the "
                                  f"{len(self.timestamp)} steps of episode {self.index}")
        return decode_chw(blobs[step], size, stored_hw=tuple(spec.shape[:2]), where=f"{src.root} {context}", out=out)

    def close(self) -> None:
        self._images.clear()


class LeRobotSource(EpisodeSource):
    format_name = "lerobot"

    def __init__(self, path: str | Path, cameras: Sequence[str] | None = None, strict_timestamps: bool = False) -> None:
        self.reader = LeRobotReader(Path(path), cameras=cameras, strict_timestamps=strict_timestamps)
        self._warned: set[str] = set()
        self._starts: dict[tuple[str, int], tuple[Path, float]] = {}
        self.root = self.reader.path
        self.info = self.reader.info
        self.records = []
        for index in self.reader.episode_indices():
            length = self.reader.episode_length(index)
            if length is None:  # v2.0 metadata without lengths: count the rows
                length = len(self.reader.episode_columns(index, [])[0]["timestamp"])
            self.records.append({"episode_index": index, "length": length})
        self._videos: dict[int, VideoFrames] = {}

    def video_start(self, camera: str, index: int, timestamp: np.ndarray) -> tuple[Path, float]:
        """The mp4 of ``camera`` for episode ``index`` and the time in it that a row's timestamp
        counts from: the episode's start, less the offset its rows run off the frames (found once
        per episode and process: it reads every packet of the file, though it decodes none)."""
        key = (camera, index)
        found = self._starts.get(key)
        if found is None:
            path, start = self.reader.video_file(camera, index)
            offset = self.reader.video_offset(camera, index, timestamp)
            if offset:
                self._warn_offset(path, camera, index, offset)
            found = self._starts[key] = (path, start - offset)
        return found

    def _warn_offset(self, path: Path, camera: str, index: int, offset: float) -> None:
        """Say once per camera (and process) that rows were mapped to frames by an offset."""
        if camera in self._warned:
            return
        self._warned.add(camera)
        warnings.warn(
            f"{path}: the timestamps of episode {index} run {1000 * offset:+.1f} ms off the video's frames (camera "
            f"{camera!r}); each row is given its own frame by that offset, not the next row's as by timestamp "
            f"(strict_timestamps=True refuses such data); other episodes like it are not reported again",
            stacklevel=5,
        )

    def videos(self) -> VideoFrames:
        """This process's open videos (a forked worker opens its own)."""
        pid = os.getpid()
        if pid not in self._videos:
            self._videos[pid] = VideoFrames()
        return self._videos[pid]

    def check_episodes(self, episode_indices: Sequence[int]) -> None:
        # A camera the dataset declares but has no video for (found in public datasets): one stat
        # per file now rather than a failed sample later.
        missing = self.reader.missing_cameras(episode_indices)
        if missing:
            camera, lacking = next(iter(missing.items()))
            others = [c for c in self.info.cameras if c not in missing]
            raise ConversionError(
                f"{self.root}: camera {camera!r} has no video for {len(lacking)} of {len(episode_indices)} "
                f"episode(s) ({format_ranges(lacking)}); leave it out (cameras={others!r}) or choose "
                "episodes that have it (episodes=[...])"
            )

    def episode_location(self, episode_index: int) -> str:
        try:
            return str(self.reader.data_file(episode_index))
        except ConversionError:
            return str(self.root)

    def own_stats(self) -> dict[str, Any]:
        path = self.root / STATS_PATH
        if not path.is_file():
            return {}
        stats = read_json(path, error=ConversionError)
        return stats_dict(stats, str(path)) if isinstance(stats, dict) else {}

    def load(self, episode_index: int, numeric: Sequence[str]) -> LeRobotEpisode:
        columns, meta = self.reader.episode_columns(episode_index, numeric)
        timestamp = columns.pop("timestamp")
        instruction = str(meta.get("language_instruction") or meta.get("task") or "")
        episode = LeRobotEpisode(self, episode_index, columns, instruction, timestamp)
        episode.task_id = metadata_task_id(meta)  # kept in our sidecar (LeRobot has no column for it)
        return episode

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_videos"] = {}
        return state

    def close(self) -> None:
        videos = self._videos.pop(os.getpid(), None)
        if videos is not None:
            videos.close()
