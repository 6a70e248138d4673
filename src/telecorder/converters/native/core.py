"""The native store as a conversion source and target."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...atomic import fsync_dir, write_json_atomic
from ...datasets.dataset import (
    INDEX,
    INFO,
    STATS,
    Dataset,
    DatasetWriter,
    is_dataset,
    read_index,
    write_index,
)
from ...datasets.episode_file import (
    EPISODES_DIR,
    Episode,
    StepBatch,
    episode_relpath,
    set_attrs,
)
from ...datasets.features import FORMAT_NAME, DatasetInfo
from ...datasets.images import encode_image
from ...datasets.stats import DatasetStats
from ..base import ConversionError, FormatReader, FormatWriter
from ..parts import PART_STATS, PARTS_DIR

# Episode attributes that the store sets itself, so they are not copied from a source.
_OWN_ATTRS = {"episode_index", "format_version", "fps", "robot_type", "image_encoding", "num_steps"}


class NativeReader(FormatReader):
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


class NativeWriter(FormatWriter):
    format_name = "native"

    def __init__(self, path: Path, info: DatasetInfo, **options: Any) -> None:
        super().__init__(path, info, **options)
        fresh = DatasetInfo(
            features=dict(info.features),
            fps=info.fps,
            robot_type=info.robot_type,
            image_encoding=options.get("image_encoding", info.image_encoding),
            jpeg_quality=int(options.get("jpeg_quality", info.jpeg_quality)),
            extra=dict(info.extra),
        )
        # An episode cut short by a kill is converted again from the source, not salvaged.
        self._writer = DatasetWriter(self.path, fresh, resume=bool(options.get("resume", False)),
                                     unfinished="discard")

    def write_episode(self, episode: Episode) -> None:
        info = self._writer.info
        index = self._writer.reserve_index()
        attrs = {k: v for k, v in episode.metadata.items() if k not in _OWN_ATTRS}
        file_writer = self._writer.start_episode(index, attrs)
        try:
            n = len(episode)
            cams = info.cameras
            timing_ok = all(c in episode.image_timestamp for c in cams)
            batch = StepBatch(
                timestamp=np.asarray(episode.timestamp, dtype=np.float64),
                numeric={f.name: episode.data[f.name] for f in info.numeric_features},
                images={c: [encode_image(f, info.image_encoding, info.jpeg_quality) for f in episode.images[c]]
                        for c in cams},
                image_timestamp={c: (episode.image_timestamp[c] if timing_ok else episode.timestamp) for c in cams},
                frame_index={c: (episode.frame_index[c] if c in episode.frame_index else np.arange(n)) for c in cams},
                tick_lateness=(episode.tick_lateness if episode.tick_lateness is not None
                               else np.zeros(n, np.float32)),
            )
            file_writer.append(batch)
            meta = episode.metadata
            record = {
                "duration_s": float(episode.timestamp[-1] - episode.timestamp[0]) if n > 1 else 0.0,
                "task": meta.get("task"),
                "success": meta.get("success"),
                "start_time": meta.get("start_time"),
                "device": meta.get("device"),
                "source_episode_index": meta.get("source_episode_index", episode.index),
            }
            self._writer.commit(file_writer, attrs, record)
        except BaseException:
            file_writer.abort()
            raise

    def close(self) -> None:
        self._writer.close()
        if self.options.get("part"):
            stats = Dataset.open(self.path).stats() or DatasetStats({})
            # Episode numbers are the part's own; the merge numbers the whole dataset.
            write_json_atomic(self.path / PART_STATS, DatasetStats(stats.features).to_json_dict())


def merge_parts(work: Path, parts: list[Path], info: DatasetInfo, options: dict[str, Any],
                stats: DatasetStats) -> None:
    """One native dataset in ``work`` from native parts: episode files renamed into one
    numbering (their ``episode_index`` attribute rewritten in place, nothing copied), one
    index, the merged statistics, and ``info.json`` last (until it exists, no dataset)."""
    work = Path(work)
    (work / "meta").mkdir(parents=True, exist_ok=True)
    (work / EPISODES_DIR).mkdir(exist_ok=True)
    records: list[dict[str, Any]] = []
    first: DatasetInfo | None = None
    frames = 0
    for part in parts:
        if not is_dataset(part):
            raise ConversionError(f"{part}: the part is not a native dataset (no {INFO}); convert again")
        part_info = DatasetInfo.load(part / INFO)
        if first is None:
            first = part_info
        elif part_info.differences(first):
            raise ConversionError(f"{part}: the part's schema differs from the first part's "
                                  f"({'; '.join(part_info.differences(first))})")
        part_records, problems = read_index(part)
        if problems:
            raise ConversionError(f"{part}/{INDEX}: {problems[0]}")
        for record in sorted(part_records, key=lambda r: int(r["episode_index"])):
            new = len(records)
            source = part / episode_relpath(int(record["episode_index"]))
            target = work / episode_relpath(new)
            try:
                with h5py.File(source, "r+") as f:
                    set_attrs(f, {"episode_index": new})
                os.replace(source, target)
            except OSError as e:
                raise ConversionError(f"{source}: cannot move the part's episode into {work} ({e})") from e
            records.append({**record, "episode_index": new, "file": episode_relpath(new)})
            frames += int(record["length"])
    fsync_dir(work / EPISODES_DIR)
    write_index(work, records)
    write_json_atomic(work / STATS, DatasetStats(stats.features, episodes=range(len(records))).to_json_dict())
    out = first or DatasetInfo(features=dict(info.features), fps=info.fps, robot_type=info.robot_type)
    out.total_episodes, out.total_frames = len(records), frames
    out.save(work / INFO)
    shutil.rmtree(work / PARTS_DIR)
