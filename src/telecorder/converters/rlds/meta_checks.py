"""Type and range checks of RLDS/TFDS metadata, one per field, where a reader takes it in.

``dataset_info.json``, ``features.json`` and our sidecar ``telecorder_meta.json`` are data
whoever wrote the dataset chose: a node of the wrong JSON type at any level, a dimension of
``"x"`` or ``inf``, a dtype that is a file path, a count of ``inf`` is damage. Each check
raises one :class:`~telecorder.converters.base.ConversionError` naming the file, the field
(its JSON path) and what it should hold.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..base import ConversionError

# The most values one step of a tensor feature may declare (per dimension and in all).
MAX_STEP_VALUES = 1 << 24
# The most records one shard may declare.
MAX_SHARD_RECORDS = 1 << 40
_HINT = "; restore the file from the dataset's source"
# What TFDS accepts as a split name (tensorflow_datasets.core.splits._SUB_SPEC_RE).
_SPLIT_NAME = re.compile(r"^[\w-]+$")
# Nodes of features.json that are JSON objects wherever they appear.
_OBJECT_KEYS = ("featuresDict", "sequence", "feature", "tensor", "image", "shape", "text", "classLabel")
_MAX_DEPTH = 64


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def at(where: str, key: str) -> str:
    """``where`` (``"<file>: a/b"`` or ``"<file>: "``) one level down, at ``key``."""
    return where + key if where.endswith(": ") else f"{where}/{key}"


def child(node: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> Mapping[str, Any]:
    """``node[key]`` as a JSON object (``{}`` when absent and not ``required``); ``where`` is the
    file and the JSON path of ``node``."""
    value = node.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ConversionError(f"{at(where, key)} must be a JSON object, not {_shown(value)}{_HINT}")
    return value


def text(node: Mapping[str, Any], key: str, where: str, default: str) -> str:
    value = node.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConversionError(f"{at(where, key)} must be a string, not {_shown(value)}{_HINT}")
    return value


def count(value: Any, where: str, high: int = MAX_SHARD_RECORDS) -> int:
    """A non-negative whole number as TFDS writes one (an int, or its decimal string)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not _is_int(value) or not 0 <= int(value) <= high:
        raise ConversionError(f"{where} must be a whole number from 0 to {high}, not {_shown(value)}{_HINT}")
    return int(value)


def dims(node: Mapping[str, Any], where: str) -> tuple[int | None, ...]:
    """``shape.dimensions`` of a tensor or image node; -1 (a size that varies) is None."""
    shape = child(node, "shape", where)
    values = shape.get("dimensions") or []
    if not isinstance(values, list):
        raise ConversionError(f"{at(where, 'shape/dimensions')} must be a list, not {_shown(values)}{_HINT}")
    out: list[int | None] = []
    for k, d in enumerate(values):
        if isinstance(d, str) and d.strip() in ("-1", "None"):
            d = -1
        if _is_int(d) and d == -1:
            out.append(None)
            continue
        out.append(count(d, at(where, f"shape/dimensions/{k}"), MAX_STEP_VALUES))
    if math.prod(d for d in out if d is not None) > MAX_STEP_VALUES:
        raise ConversionError(f"{at(where, 'shape')} declares {[d if d is not None else -1 for d in out]}, over the "
                              f"{MAX_STEP_VALUES} values a step telecorder reads{_HINT}")
    return tuple(out)


def dtype(node: Mapping[str, Any], where: str, default: str) -> str:
    """The ``dtype`` of a node: a string numpy knows as a number or bool type (or a text type name)."""
    value = text(node, "dtype", where, default)
    if value in ("string", "str", "object"):
        return value
    try:
        kind = np.dtype(value).kind
    except (TypeError, ValueError):
        kind = ""
    if kind not in "biuf" or not kind:
        raise ConversionError(f"{at(where, 'dtype')} {value[:60]!r} is not a number or bool dtype{_HINT}")
    return value


def check_dataset_info(info: Any, path: Path) -> tuple[str, str, dict[str, Mapping[str, Any]]]:
    """``(name, fileFormat, {split name: split})`` of ``dataset_info.json``, every field typed."""
    if not isinstance(info, Mapping):
        raise ConversionError(f"{path}: is a JSON {type(info).__name__}, not an object{_HINT}")
    where = f"{path}: "
    name = text(info, "name", where, "")
    if not name:  # TFDS fills its shard file names with it
        raise ConversionError(f"{path}: name must be the dataset's name, not {_shown(info.get('name'))}{_HINT}")
    file_format = text(info, "fileFormat", where, "tfrecord")
    splits = info.get("splits") or []
    if not isinstance(splits, list):
        raise ConversionError(f"{path}: splits must be a list, not {_shown(splits)}{_HINT}")
    out: dict[str, Mapping[str, Any]] = {}
    for k, split in enumerate(splits):
        here = f"{path}: splits/{k}"
        if not isinstance(split, Mapping):
            raise ConversionError(f"{here} must be a JSON object, not {_shown(split)}{_HINT}")
        split_name = text(split, "name", here, "")
        if not _SPLIT_NAME.match(split_name):
            raise ConversionError(f"{here}/name {split_name[:60]!r} is not a split name (letters, digits, _ and -)"
                                  f"{_HINT}")
        shard_lengths(split, here)
        out[split_name] = split
    return name, file_format, out


def shard_lengths(split: Mapping[str, Any], where: str) -> list[int] | None:
    """The records each shard of a split holds, as ``dataset_info.json`` declares (None: not declared)."""
    lengths = split.get("shardLengths")
    if lengths is None:
        return None
    if not isinstance(lengths, list):
        raise ConversionError(f"{at(where, 'shardLengths')} must be a list, not {_shown(lengths)}{_HINT}")
    return [count(n, at(where, f"shardLengths/{k}")) for k, n in enumerate(lengths)]


def check_features_json(doc: Any, path: Path) -> Mapping[str, Any]:
    """``features.json``, checked at every level: each node a JSON object, each dimension and
    sequence length a whole number (or -1), each dtype one numpy knows."""
    if not isinstance(doc, Mapping):
        raise ConversionError(f"{path}: is a JSON {type(doc).__name__}, not an object{_HINT}")
    _check_node(doc, f"{path}: ", 0)
    return doc


def _check_node(node: Mapping[str, Any], where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ConversionError(f"{where} nests features over {_MAX_DEPTH} levels deep{_HINT}")
    for key in _OBJECT_KEYS:
        if key in node:
            child(node, key, where)
    features = child(node, "featuresDict", where).get("features")
    if features is not None:
        for name, sub in child(node["featuresDict"], "features", at(where, "featuresDict")).items():
            here = at(where, f"featuresDict/features/{name}")
            if not isinstance(sub, Mapping):
                raise ConversionError(f"{here} must be a JSON object, not {_shown(sub)}{_HINT}")
            _check_node(sub, here, depth + 1)
    sequence = child(node, "sequence", where)
    if sequence:
        here = at(where, "sequence")
        length = sequence.get("length")
        if length is not None and not ((_is_int(length) and length == -1) or str(length).strip() == "-1"):
            count(length, at(here, "length"))
        feature = child(sequence, "feature", here)
        if feature:
            _check_node(feature, at(here, "feature"), depth + 1)
    for key, default in (("tensor", ""), ("image", "uint8")):
        if key in node:
            dims(node[key], at(where, key))
            dtype(node[key], at(where, key), default)


def check_sidecar(side: Mapping[str, Any], path: Path) -> None:
    """The counts of our RLDS sidecar, where present, are whole numbers."""
    for key in ("total_episodes", "total_frames"):
        if key in side:
            count(side[key], f"{path}: {key}")


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}" if not isinstance(value, (Mapping, list)) else type(value).__name__
