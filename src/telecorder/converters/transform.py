"""The per-episode work of a conversion, shared by the one-process pipeline and the shard workers.

What a conversion does to the data (:class:`ConvertOptions`): select episodes and cameras, rename
cameras, resize images, resample to another control rate by timestamps. :func:`open_source` opens the
source with the camera selection applied in the reader, so a camera left out is never decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..datasets.episode_file import Episode
from ..datasets.features import IMAGE_PREFIX, DatasetInfo, FeatureSpec, image_feature
from ..datasets.ranges import EpisodeRanges
from ..datasets.ranges import parse_episode_ranges as _parse_ranges
from . import open_reader
from .base import ConversionError, FormatReader


@dataclass
class ConvertOptions:
    to: str
    src_format: str | None = None
    episodes: Sequence[int] | None = None  # e.g. parse_episode_ranges("0-9,15"): checked, then expanded
    image_size: tuple[int, int] | None = None  # (width, height)
    fps: float | None = None
    cameras: dict[str, str] | None = None  # source camera -> output camera (also selects)
    rename_cameras: dict[str, str] | None = None  # source camera -> output camera; the others kept as they are
    workers: int = 1
    overwrite: bool = False
    resume: bool = False
    skip_bad: bool = False
    skip_missing_cameras: bool = False
    val_fraction: float = 0.0  # RLDS/OXE output: whole episodes to a "val" split (episode_split, seed 0)
    runner: str = "local"  # "local" (process pool) or "beam" (Apache Beam, see telecorder.beam)
    beam_options: list[str] = field(default_factory=list)  # Beam pipeline options, as on a command line
    shard_episodes: int | None = None  # episodes per shard (default: sized from the worker count)
    sharded: bool | None = None  # None: shard when workers > 1 or on Beam; True also for one worker
    reader_options: dict[str, Any] = field(default_factory=dict)
    writer_options: dict[str, Any] = field(default_factory=dict)


def parse_episode_ranges(text: str) -> EpisodeRanges:
    """``0-9,15`` -> the numbers 0..9 and 15, as ranges: expanded only after :func:`convert`
    checks them against the source's episodes."""
    return _parse_ranges(text, what="--episodes")


def parse_cameras(text: str) -> dict[str, str]:
    """``front:image,wrist:wrist_image`` (or ``front,wrist`` to select without renaming)."""
    out = {}
    for part in text.split(","):
        src, _, dst = part.strip().partition(":")
        if not src:
            raise ValueError(f"camera mapping looks like front:image,wrist:wrist_image, not {text!r}")
        out[src] = dst or src
    return out


def parse_camera_map(text: str) -> dict[str, str]:
    """``cam_high=top,cam_left_wrist=left_wrist`` (output name = source camera, as ``train
    --camera-map`` maps slots) -> ``{source camera: output name}``."""
    out: dict[str, str] = {}
    for part in text.split(","):
        new, eq, old = (x.strip() for x in part.partition("="))
        if not (new and eq and old):
            raise ConversionError(f"--camera-map looks like cam_high=top,cam_left_wrist=left_wrist "
                                  f"(NAME=CAMERA), not {text[:200]!r}")
        if old in out:
            raise ConversionError(f"--camera-map names camera {old!r} twice")
        out[old] = new
    return out


def output_cameras(info: DatasetInfo, opts: ConvertOptions) -> dict[str, str] | None:
    """The ``cameras`` option a conversion of a source described by ``info`` takes: ``rename_cameras``
    over every camera, or for ALOHA output of a bimanual source ALOHA's camera names
    (:func:`.bimanual.aloha_camera_names`); None when neither renames anything."""
    if opts.cameras is not None:
        if opts.rename_cameras:
            raise ConversionError("select cameras (--cameras) or rename them (--camera-map), not both")
        return None
    rename = opts.rename_cameras
    if rename is None and opts.to == "aloha":
        from .bimanual import aloha_camera_names

        rename = aloha_camera_names(info)
    if not rename:
        return None
    unknown = [c for c in rename if c not in info.cameras]
    if unknown:
        raise ConversionError(f"camera map: no camera {', '.join(map(repr, unknown))} in the source; it has "
                              f"{', '.join(info.cameras) or 'none'}")
    out = {c: rename.get(c, c) for c in info.cameras}
    names = list(out.values())
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConversionError(f"camera map: {', '.join(map(repr, twice))} would name two cameras ({out}); "
                              "map each to its own name")
    return out


def transform_info(info: DatasetInfo, opts: ConvertOptions) -> DatasetInfo:
    feats: dict[str, FeatureSpec] = {}
    cams = dict(opts.cameras) if opts.cameras else {c: c for c in info.cameras}
    missing = [c for c in cams if c not in info.cameras]
    if missing:
        raise ConversionError(f"no camera {', '.join(map(repr, missing))} in the source; it has {info.cameras}")
    for name, spec in info.features.items():
        if not spec.is_image:
            feats[name] = spec
            continue
        if spec.camera not in cams:
            continue
        h, w = spec.shape[:2]
        if opts.image_size:
            w, h = opts.image_size
        feats[IMAGE_PREFIX + cams[spec.camera]] = image_feature(cams[spec.camera], h, w, unit=spec.unit)
    return DatasetInfo(
        features=feats,
        fps=float(opts.fps or info.fps),
        robot_type=info.robot_type,
        image_encoding=info.image_encoding,
        jpeg_quality=info.jpeg_quality,
        extra=dict(info.extra),
    )


def transform_episode(ep: Episode, src_info: DatasetInfo, opts: ConvertOptions) -> Episode:
    cams = dict(opts.cameras) if opts.cameras else {c: c for c in src_info.cameras}
    keep = np.arange(len(ep))
    timestamp = np.asarray(ep.timestamp, dtype=np.float64)
    if opts.fps and abs(opts.fps - src_info.fps) > 1e-9:
        keep = resample_indices(timestamp, opts.fps)
        timestamp = timestamp[0] + np.arange(len(keep)) / opts.fps
    images = {}
    for src_cam, dst_cam in cams.items():
        frames = [ep.images[src_cam][i] for i in keep]
        if opts.image_size:
            frames = [resize(f, opts.image_size) for f in frames]
        images[dst_cam] = frames
    return replace(
        ep,
        timestamp=timestamp,
        data={k: np.asarray(v)[keep] for k, v in ep.data.items()},
        image_timestamp={cams[c]: np.asarray(v)[keep] for c, v in ep.image_timestamp.items() if c in cams},
        frame_index={cams[c]: np.asarray(v)[keep] for c, v in ep.frame_index.items() if c in cams},
        tick_lateness=None if ep.tick_lateness is None or len(keep) != len(ep) else ep.tick_lateness,
        images=images,
        metadata={**ep.metadata, "source_episode_index": ep.metadata.get("source_episode_index", ep.index)},
    )


def resample_indices(timestamp: np.ndarray, fps: float) -> np.ndarray:
    """For each tick of the new rate, the last recorded step at or before it (what a controller at
    that rate would have seen); the first step maps to itself."""
    t = timestamp - timestamp[0]
    grid = np.arange(int(np.floor(t[-1] * fps + 1e-9)) + 1) / fps
    return np.clip(np.searchsorted(t, grid + 1e-9, side="right") - 1, 0, len(t) - 1)


def resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    if frame.shape[1] == w and frame.shape[0] == h:
        return frame
    # Area averaging does not alias when shrinking; Lanczos keeps edges when enlarging.
    shrink = w * h < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)


def open_source(src: Path | str, opts: ConvertOptions) -> FormatReader:
    """The source's reader with the camera selection applied (None: every camera)."""
    cameras = list(opts.cameras) if opts.cameras is not None else None
    return open_reader(src, opts.src_format, cameras=cameras, **opts.reader_options)
