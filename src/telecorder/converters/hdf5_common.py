"""What the ALOHA and robomimic adapters share: our sidecar, episode checks, and per-step extras.

Both formats are HDF5 with no place for what telecorder records besides the robot's arrays. What
they lack goes to the same two places: per-step timing (and features the format has no name for)
under a ``telecorder`` group the foreign loaders never look at, and the schema and per-episode
metadata in ``telecorder_meta.json`` next to the data. The datasets we write carry attributes
naming the feature they hold, or saying why they were made up, so that our readers give back
exactly what was converted. Opening foreign files safely is :mod:`.foreign_hdf5`'s part.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..datasets.episode_file import Episode
from ..datasets.features import DatasetInfo, read_json
from ..errors import DatasetError
from .base import SIDECAR, ConversionError
from .foreign_hdf5 import read_rows

# Dataset attributes written on what we store: the feature a dataset holds, or why it was made up.
FEATURE_ATTR = "telecorder_feature"
DERIVED_ATTR = "telecorder_derived"

# Per-step arrays that no foreign format has a place for, under a group the foreign loaders ignore.
EXTRAS = "telecorder"
EXTRA_DATA = "data"  # EXTRAS/EXTRA_DATA/<a>/<b>: feature a.b, which the format has no place for
_TIMESTAMP = "timestamp"
_IMAGE_TS = "images_timestamp"
_FRAME_INDEX = "images_frame_index"
_LATENESS = "tick_lateness"


def is_rgb(ds: h5py.Dataset) -> bool:
    """Whether ``ds`` holds uint8 RGB frames, one per step (T, H, W, 3)."""
    return ds.dtype == np.uint8 and ds.ndim == 4 and ds.shape[-1] == 3


def plain_metadata(metadata: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Episode metadata as JSON-ready values; ConversionError naming the key that cannot be."""

    def plain(value: Any, key: str) -> Any:
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        if isinstance(value, Mapping):
            return {str(k): plain(v, key) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v, key) for v in value]
        raise ConversionError(f"{where}: metadata {key!r} is a {type(value).__name__}, which JSON cannot hold")

    return {str(k): plain(v, str(k)) for k, v in metadata.items()}


# Attributes naming the episode's task where a loader of the format (or a person with h5py) sees
# them without our sidecar: on each ALOHA episode file's root, on each robomimic demo group.
INSTRUCTION_ATTR = "language_instruction"
TASK_ID_ATTR = "task_id"


def task_attrs(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The ``language_instruction`` and ``task_id`` attributes for an episode's ``metadata``: the
    instruction verbatim (else the task text), the task id ("" when it has none); {} when the
    episode names neither."""
    text = next((v for k in ("language_instruction", "task") if isinstance(v := metadata.get(k), str) and v), "")
    task_id = metadata.get("task_id")
    if not text and task_id is None:
        return {}
    return {INSTRUCTION_ATTR: text, TASK_ID_ATTR: "" if task_id is None else str(task_id)}


def metadata_from_task_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Episode metadata from the attributes :func:`task_attrs` wrote (bytes from other tools decoded)."""

    def text(key: str) -> str | None:
        value = attrs.get(key)
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return value if isinstance(value, str) else None

    meta: dict[str, Any] = {}
    instruction, task_id = text(INSTRUCTION_ATTR), text(TASK_ID_ATTR)
    if instruction:
        meta.update(task=instruction, language_instruction=instruction)
    if task_id:  # "" is what an episode without a task id stores: absent, as before the attribute existed
        meta["task_id"] = task_id
    return meta


def load_sidecar(folder: Path, fmt: str) -> dict[str, Any] | None:
    """Our sidecar in ``folder`` if it was written for format ``fmt``; None if there is none."""
    path = folder / SIDECAR
    if not path.is_file():
        return None
    try:
        meta = read_json(path)
    except DatasetError as e:
        raise ConversionError(str(e)) from e
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        return None  # written for another format sharing the folder: not ours to interpret
    return meta


def info_from_sidecar(meta: Mapping[str, Any], path: Path) -> DatasetInfo:
    """The schema our sidecar at ``path`` records; ConversionError if it has none or a broken one."""
    try:
        return DatasetInfo.from_dict(meta["info"], source=str(path))
    except KeyError as e:
        raise ConversionError(f"{path}: sidecar has no 'info' section") from e
    except DatasetError as e:
        raise ConversionError(str(e)) from e


def episode_arrays(episode: Episode, info: DatasetInfo, where: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The episode's numeric arrays and stacked frames, checked against ``info``."""
    n = len(episode)
    if n == 0:
        raise ConversionError(f"{where}: episode {episode.index} has no steps")
    numeric: dict[str, np.ndarray] = {}
    for spec in info.numeric_features:
        if spec.name not in episode.data:
            raise ConversionError(f"{where}: episode {episode.index} has no {spec.name!r} data")
        arr = np.asarray(episode.data[spec.name], dtype=spec.dtype)
        if arr.shape != (n, *spec.shape):
            raise ConversionError(
                f"{where}: episode {episode.index} {spec.name!r} has shape {arr.shape}, "
                f"expected {(n, *spec.shape)}"
            )
        numeric[spec.name] = arr
    frames: dict[str, np.ndarray] = {}
    for spec in info.image_features:
        cam = spec.camera
        got = episode.images.get(cam)
        if got is None or len(got) != n:
            count = "none" if got is None else len(got)
            raise ConversionError(f"{where}: episode {episode.index} camera {cam!r} has {count} frames for {n} steps")
        stack = np.stack([np.asarray(f) for f in got])
        if stack.shape[1:] != spec.shape or stack.dtype != np.uint8:
            raise ConversionError(
                f"{where}: episode {episode.index} camera {cam!r} frames are {stack.dtype} {stack.shape[1:]}, "
                f"expected uint8 {spec.shape}"
            )
        frames[cam] = stack
    return numeric, frames


def write_extras(group: h5py.Group, episode: Episode, cameras: list[str]) -> None:
    """Per-step timing under ``group/telecorder`` (the foreign loaders never look there)."""
    g = group.require_group(EXTRAS)
    g.create_dataset(_TIMESTAMP, data=np.asarray(episode.timestamp, dtype=np.float64))
    for cam in cameras:
        if cam in episode.image_timestamp:
            g.create_dataset(f"{_IMAGE_TS}/{cam}", data=np.asarray(episode.image_timestamp[cam], np.float64))
        if cam in episode.frame_index:
            g.create_dataset(f"{_FRAME_INDEX}/{cam}", data=np.asarray(episode.frame_index[cam], np.int64))
    if episode.tick_lateness is not None:
        g.create_dataset(_LATENESS, data=np.asarray(episode.tick_lateness, dtype=np.float32))


def read_extras(group: h5py.Group, n: int, cameras: list[str], fps: float, where: str) -> dict[str, Any]:
    """Timing arrays for ``Episode``; without stored timestamps the steps are taken as k / fps."""
    g = group.get(EXTRAS)

    def get(path: str) -> np.ndarray | None:
        if g is None or path not in g:
            return None
        ds = g[path]
        # One number per step, or the writer of the converted episode cannot store it.
        if not isinstance(ds, h5py.Dataset) or ds.shape != (n,) or ds.dtype.kind not in "biuf":
            raise ConversionError(f"{where}: {g.name}/{path} is {getattr(ds, 'dtype', 'a group')} "
                                  f"{getattr(ds, 'shape', '')}, expected one number for each of {n} steps")
        return read_rows(ds, group.file.filename, f"{where}: {g.name}/{path}")

    ts = get(_TIMESTAMP)
    out: dict[str, Any] = {
        "timestamp": ts if ts is not None else np.arange(n, dtype=np.float64) / fps,
        "image_timestamp": {},
        "frame_index": {},
        "tick_lateness": get(_LATENESS),
    }
    for cam in cameras:
        its, fidx = get(f"{_IMAGE_TS}/{cam}"), get(f"{_FRAME_INDEX}/{cam}")
        if its is not None:
            out["image_timestamp"][cam] = its
        if fidx is not None:
            out["frame_index"][cam] = fidx
    return out


def extra_feature_name(path: str) -> str:
    """Feature name of a dataset under ``telecorder/data`` (``telecorder/data/a/b`` -> ``a.b``)."""
    return path.removeprefix(f"{EXTRAS}/{EXTRA_DATA}/").replace("/", ".")
