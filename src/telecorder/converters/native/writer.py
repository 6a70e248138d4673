"""The native store as a conversion target: a fresh dataset (or one part of a sharded conversion)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import write_json_atomic
from ...datasets.dataset import Dataset, DatasetWriter
from ...datasets.episode_file import Episode, StepBatch
from ...datasets.features import DatasetInfo
from ...datasets.images import encode_image
from ...datasets.stats import DatasetStats
from ..base import FormatWriter
from ..parts import PART_STATS

# Episode attributes that the store sets itself, so they are not copied from a source.
_OWN_ATTRS = {"episode_index", "format_version", "fps", "robot_type", "image_encoding", "num_steps"}


class NativeWriter(FormatWriter):
    """Writes the native store; options ``image_encoding``, ``jpeg_quality``, ``resume``, ``part``."""

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
