"""Type and range checks of LeRobot metadata, one per field, where the reader takes it in.

``meta/info.json``, ``meta/episodes.jsonl`` / ``meta/episodes/*.parquet`` and
``meta/tasks.jsonl`` / ``meta/tasks.parquet`` are data whoever wrote the dataset chose: a
field of the wrong JSON type, a count of ``inf`` or ``"x"``, a shape of ``-10**18`` is
damage. Each check raises one :class:`~telecorder.converters.base.ConversionError` naming
the file, the line (or row) and the field, and what it should hold; nothing further down
the reader converts a field it has not passed through here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...datasets.features import IMAGE_ENCODINGS, check_fps
from ...datasets.images import MAX_IMAGE_PIXELS
from ..base import ConversionError

# The most values one step of a numeric feature may declare (a 7-dim action is typical;
# a 1024-dim embedding is large): beyond this a shape is damage, not a recording.
MAX_FEATURE_VALUES = 1 << 20
# The most steps one episode may declare (a day at 1 kHz is 8.6e7).
MAX_EPISODE_LENGTH = 1 << 31
# The most episodes / tasks an index may number (index values, not counts of lines).
MAX_INDEX = 1 << 40
_HINT = "; restore the file from the dataset's source"
_SIDECAR_HINT = "; delete the file to read the dataset without telecorder's metadata"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def whole(value: Any, where: str, field: str, *, low: int = 0, high: int = MAX_INDEX, hint: str = _HINT) -> int:
    """``value`` as an int from ``low`` to ``high``, else a ConversionError naming ``where`` and ``field``."""
    if not _is_int(value) or not low <= int(value) <= high:
        raise ConversionError(f"{where}: {field!r} must be a whole number from {low} to {high}, not "
                              f"{value!r:.60}{hint}")
    return int(value)


def check_info(meta: Mapping[str, Any], where: str) -> tuple[float, dict[str, Any]]:
    """``fps`` and ``features`` of an ``info.json`` object, checked; ``chunks_size`` too."""
    try:
        fps = check_fps(meta.get("fps"), "'fps'")
    except ValueError as e:
        raise ConversionError(f"{where}: {e}{_HINT}") from e
    features = meta.get("features")
    if not isinstance(features, Mapping):
        raise ConversionError(f"{where}: 'features' must be a JSON object, not {type(features).__name__}{_HINT}")
    if "chunks_size" in meta:
        whole(meta["chunks_size"], where, "chunks_size", low=1)
    for key, ft in features.items():
        if isinstance(ft, Mapping):
            check_feature(str(key), ft, where)
    return fps, dict(features)


def chunks_size(meta: Mapping[str, Any]) -> int:
    """``chunks_size`` (checked by :func:`check_info`), default 1000."""
    return int(meta.get("chunks_size", 1000))


def check_feature(key: str, ft: Mapping[str, Any], where: str) -> None:
    """One feature of ``info.json``: dtype a string, shape a list of whole numbers within bounds,
    image sizes within the pixel limit."""
    at = f"{where}: feature {key!r}"
    dtype = ft.get("dtype")
    if not isinstance(dtype, str):
        raise ConversionError(f"{at}: 'dtype' must be a string, not {dtype!r:.60}{_HINT}")
    shape = ft.get("shape")
    if shape is not None:
        if not isinstance(shape, list) or not all(_is_int(s) and 0 <= s <= MAX_FEATURE_VALUES for s in shape):
            raise ConversionError(f"{at}: 'shape' must be a list of whole numbers from 0 to {MAX_FEATURE_VALUES}, "
                                  f"not {shape!r:.60}{_HINT}")
        if dtype not in ("video", "image") and math.prod(shape) > MAX_FEATURE_VALUES:
            raise ConversionError(f"{at}: 'shape' {shape} declares {math.prod(shape)} values a step, over the "
                                  f"{MAX_FEATURE_VALUES} telecorder reads{_HINT}")
    for block in ("info", "video_info"):
        value = ft.get(block)
        if value is not None and not isinstance(value, Mapping):
            raise ConversionError(f"{at}: '{block}' must be a JSON object, not {type(value).__name__}{_HINT}")
    if dtype in ("video", "image"):
        vinfo = ft.get("info") or ft.get("video_info") or {}
        if "video.height" in vinfo and "video.width" in vinfo:
            h = whole(vinfo["video.height"], at, "video.height", low=1, high=MAX_IMAGE_PIXELS)
            w = whole(vinfo["video.width"], at, "video.width", low=1, high=MAX_IMAGE_PIXELS)
            if h * w > MAX_IMAGE_PIXELS:
                raise ConversionError(f"{at}: declares {w}x{h} frames, over the {MAX_IMAGE_PIXELS} pixels "
                                      f"telecorder decodes{_HINT}")
        elif shape is not None and len(shape) == 3 and not 0 < math.prod(shape) <= 4 * MAX_IMAGE_PIXELS:
            raise ConversionError(f"{at}: 'shape' {shape} declares frames of no pixels or over the "
                                  f"{MAX_IMAGE_PIXELS} pixels telecorder decodes{_HINT}")


def check_episode_row(row: Mapping[str, Any], where: str) -> int:
    """One episode entry (a line of ``episodes.jsonl`` or a row of a v3 episodes file): its
    ``episode_index``, with ``tasks`` (a string or a list of strings), ``length`` and the
    chunk/file numbers of v3 checked where present."""
    if "episode_index" not in row:
        raise ConversionError(f"{where}: an episode entry has no 'episode_index'{_HINT}")
    index = whole(row["episode_index"], where, "episode_index")
    at = f"{where} (episode {index})"
    tasks = row.get("tasks")
    if tasks is not None and not isinstance(tasks, str) and not (
            isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)):
        raise ConversionError(f"{at}: 'tasks' must be a list of task strings, not {tasks!r:.60}{_HINT}")
    if row.get("length") is not None:
        whole(row["length"], at, "length", high=MAX_EPISODE_LENGTH)
    for name, value in row.items():
        if value is None or not isinstance(name, str):
            continue
        if name.endswith(("/chunk_index", "/file_index")) or (name.startswith("dataset_") and name.endswith("_index")):
            whole(value, at, name)
        elif name.endswith(("/from_timestamp", "/to_timestamp")) and (
                isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
                or not math.isfinite(value) or value < 0):
            raise ConversionError(f"{at}: {name!r} must be a finite number of seconds >= 0, not {value!r:.60}{_HINT}")
    return index


def check_task_row(row: Mapping[str, Any], where: str) -> tuple[int, str] | None:
    """``(task_index, task)`` of one ``tasks.jsonl`` line, None for a line without both."""
    if "task_index" not in row or "task" not in row:
        return None
    index = whole(row["task_index"], where, "task_index")
    task = row["task"]
    if not isinstance(task, str):
        raise ConversionError(f"{where}: 'task' must be a string, not {task!r:.60}{_HINT}")
    return index, task


def check_sidecar(side: Mapping[str, Any], where: str) -> None:
    """Our sidecar (``telecorder_meta.json``): its ``info`` block and each episode's entry, where
    the reader takes them in."""
    for index, entry in (side.get("episodes") or {}).items():
        meta = entry.get("metadata") if isinstance(entry, Mapping) else None
        if not isinstance(entry, Mapping) or (meta is not None and not isinstance(meta, Mapping)):
            raise ConversionError(f"{where}: episodes/{index} must be a JSON object with a 'metadata' object"
                                  f"{_SIDECAR_HINT}")
    info = side.get("info") or {}
    at = f"{where}: info"
    for key in ("features", "extra"):
        if info.get(key) is not None and not isinstance(info[key], Mapping):
            raise ConversionError(f"{at}/{key} must be a JSON object, not {type(info[key]).__name__}{_SIDECAR_HINT}")
    if info.get("robot_type") is not None and not isinstance(info["robot_type"], str):
        raise ConversionError(f"{at}/robot_type must be a string, not {info['robot_type']!r:.60}{_SIDECAR_HINT}")
    if info.get("image_encoding", "jpeg") not in IMAGE_ENCODINGS:
        raise ConversionError(f"{at}/image_encoding must be one of {list(IMAGE_ENCODINGS)}, not "
                              f"{info['image_encoding']!r:.60}{_SIDECAR_HINT}")
    if "jpeg_quality" in info:
        whole(info["jpeg_quality"], at, "jpeg_quality", low=1, high=100, hint=_SIDECAR_HINT)

