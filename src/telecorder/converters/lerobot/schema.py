"""LeRobot's dataset layout and feature naming, shared by the reader, the writer and the merge.

Layouts, relative to the dataset root::

    v2.x  meta/info.json        codebase_version, fps, features, data_path / video_path templates
          meta/episodes.jsonl   {"episode_index", "tasks": [...], "length"} per line
          meta/tasks.jsonl      {"task_index", "task"} per line
          data/chunk-000/episode_000000.parquet               one episode per file
          videos/chunk-000/<video_key>/episode_000000.mp4     one episode per file
    v3.0  meta/info.json        as above; templates use {chunk_index} and {file_index}
          meta/episodes/chunk-000/file-000.parquet   a row per episode: length, tasks, its rows
                (dataset_from_index..dataset_to_index in data/chunk_index, data/file_index), its
                frames (videos/<key>/chunk_index, file_index, from_timestamp, to_timestamp), stats/...
          meta/tasks.parquet    task string (pandas index "task") -> task_index
          meta/stats.json       per feature min/max/mean/std/count and quantiles
          data/chunk-000/file-000.parquet            rows of many episodes
          videos/<video_key>/chunk-000/file-000.mp4  many episodes back to back

Next to them telecorder keeps what LeRobot has no place for: the sidecar ``telecorder_meta.json``
(format ``SIDECAR_FORMAT``) and ``meta/telecorder_timing.parquet`` (``TIMING_PATH``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...datasets.features import IMAGE_PREFIX, FeatureSpec, image_feature
from ..base import SIDECAR, ConversionError

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
WRITTEN_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
TIMING_PATH = "meta/telecorder_timing.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
# Columns every LeRobot frame has; they are bookkeeping, not features of the robot.
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
# Bookkeeping columns numbered across the whole dataset: a part cannot know their values, so
# its statistics of them are left out and the merge computes them from the renumbered rows.
GLOBAL_COLUMNS = ("episode_index", "index", "task_index")
SIDECAR_FORMAT = "telecorder-lerobot-sidecar"
SIDECAR_VERSION = 1
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def flatten_names(names: Any, shape: Iterable[int]) -> tuple[str, ...] | None:
    """LeRobot ``names`` (flat, nested lists, or {"motors": [...]}) as one label per value.

    None when they do not label a 1-D feature one value each: a partial labelling is worse
    than none.
    """
    shape = tuple(shape)
    if names is None or len(shape) != 1:
        return None
    flat: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for v in node.values():
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
        elif node is not None:
            flat.append(str(node))

    walk(names)
    return tuple(flat) if len(flat) == shape[0] else None


def camera_of(key: str) -> str:
    """Camera name of a LeRobot visual key: ``observation.images.cam_high`` -> ``cam_high``."""
    if key.startswith(IMAGE_PREFIX):
        return key[len(IMAGE_PREFIX) :]
    return key.rsplit(".", 1)[-1]


def _is_numeric(dtype: Any) -> bool:
    try:
        return np.dtype(str(dtype)).kind in "biuf"
    except TypeError:
        return False



@dataclass(frozen=True)
class Visual:
    """A LeRobot camera feature and the telecorder image feature it becomes."""

    key: str
    stored: str  # "video" (mp4 files) or "image" (encoded bytes in the parquet rows)
    spec: FeatureSpec
    unsupported: str = ""  # why its frames cannot become RGB frames (depth maps), if they cannot

    @property
    def camera(self) -> str:
        return self.spec.camera


def _image_size(key: str, ft: Mapping[str, Any], info_path: Path) -> tuple[int, int]:
    vinfo = ft.get("info") or ft.get("video_info") or {}
    if "video.height" in vinfo and "video.width" in vinfo:
        return int(vinfo["video.height"]), int(vinfo["video.width"])
    shape = list(ft.get("shape") or [])
    if len(shape) != 3:
        raise ConversionError(f"{info_path}: feature {key!r} has shape {shape}; an image needs 3 dimensions")
    names = ft.get("names") or []
    if names and str(names[0]).startswith("channel"):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _depth_reason(ft: Mapping[str, Any]) -> str:
    """Why a visual feature holds depth (or other high-bit-depth) values rather than RGB, or ""."""
    info = ft.get("info") if isinstance(ft.get("info"), Mapping) else {}
    video_info = ft.get("video_info") if isinstance(ft.get("video_info"), Mapping) else {}
    # LeRobot's flag: canonical info.is_depth_map, legacy video.is_depth_map in info or video_info.
    for where, block, key in (("info", info, "is_depth_map"), ("info", info, "video.is_depth_map"),
                              ("video_info", video_info, "video.is_depth_map")):
        if block.get(key):
            return f"it is a depth map ({where}.{key} is true)"
    pix_fmt = str(info.get("video.pix_fmt") or video_info.get("video.pix_fmt") or "")
    if pix_fmt.startswith("gray") and pix_fmt != "gray":
        return f"it is single-channel video of more than 8 bits ({pix_fmt}), depth or thermal, not RGB"
    return ""


def parse_features(
    features: Mapping[str, Any], info_path: Path, known: Mapping[str, FeatureSpec]
) -> tuple[dict[str, FeatureSpec], list[Visual]]:
    """Numeric and camera features of info.json; ``known`` (from our sidecar) adds units."""
    numeric: dict[str, FeatureSpec] = {}
    visual: list[Visual] = []
    for key, ft in features.items():
        if key in BOOKKEEPING or not isinstance(ft, Mapping):
            continue
        dtype = ft.get("dtype")
        try:
            if dtype in ("video", "image"):
                h, w = _image_size(key, ft, info_path)
                ours = known.get(IMAGE_PREFIX + camera_of(key))
                spec = image_feature(camera_of(key), h, w, unit=ours.unit if ours else "")
                visual.append(Visual(key, str(dtype), spec, _depth_reason(ft)))
            elif _is_numeric(dtype):
                numeric[key] = _numeric_spec(key, ft, known.get(key))
        except (TypeError, ValueError) as e:
            raise ConversionError(f"{info_path}: feature {key!r} cannot be used ({e})") from e
    cams = [v.camera for v in visual]
    clash = sorted({c for c in cams if cams.count(c) > 1})
    if clash:
        raise ConversionError(f"{info_path}: several camera features map to camera name(s) {clash}")
    return numeric, visual


def _numeric_spec(key: str, ft: Mapping[str, Any], known: FeatureSpec | None) -> FeatureSpec:
    shape = tuple(int(s) for s in ft.get("shape") or (1,))
    dtype = str(ft["dtype"])
    if known is not None and known.dtype == dtype and math.prod(known.shape) == math.prod(shape):
        return known  # written by us: same values, with the units and shape we recorded
    return FeatureSpec(key, dtype, shape, names=flatten_names(ft.get("names"), shape))


def sidecar_features(side: Mapping[str, Any] | None) -> dict[str, FeatureSpec]:
    """The features our sidecar recorded (with units and shapes), by name; none without a sidecar."""
    if not side:
        return {}
    out = {}
    for name, d in (side.get("info", {}).get("features") or {}).items():
        try:
            out[name] = FeatureSpec.from_dict(name, d)
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{SIDECAR}: feature {name!r} is malformed ({e})") from e
    return out

