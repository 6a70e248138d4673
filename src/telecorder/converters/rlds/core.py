"""RLDS datasets in the TFDS on-disk layout (``dataset_info.json`` + ``features.json`` + shards).

One RLDS example is one episode: ``steps`` is a nested dataset of per-step dicts
(``observation/<key>``, ``action``, ``reward``, ``discount``, ``is_first``, ``is_last``,
``is_terminal``, ``language_instruction``) and ``episode_metadata`` holds per-episode fields.

Mapping to the in-memory :class:`~telecorder.datasets.Episode`:

* ``steps/action`` -> ``action``; ``steps/observation/<k>``: RGB uint8 (H, W, 3) images ->
  camera ``<k>`` (``observation.images.<k>``), anything numeric -> ``observation.<k>``.
* ``steps/reward``, ``discount``, ``is_terminal``, ``language_embedding`` -> numeric features
  of the same name where the dataset has them; ``is_first``/``is_last`` follow from the step
  order and are dropped.
* ``steps/language_instruction`` (first step's) -> metadata ``language_instruction`` and ``task``;
  ``episode_metadata/*`` -> metadata.

RLDS stores no control rate, no feature names or units, and no capture timing. The writer
keeps those in the sidecar ``telecorder_meta.json`` (dataset-level), in a per-step
``steps/telecorder`` dict (step timestamps, camera frame times and counters, tick lateness)
and in ``episode_metadata/telecorder_metadata`` (the episode's metadata as JSON), so that
native -> RLDS -> native loses nothing. Training loaders (Octo, OpenVLA) pick the keys they
know and ignore these.

TensorFlow and tensorflow-datasets are imported only when a dataset is opened.
"""

from __future__ import annotations

import bisect
import dataclasses
import importlib.util
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...atomic import write_json_atomic
from ...datasets.episode_file import Episode
from ...datasets.features import (
    IMAGE_PREFIX,
    DatasetInfo,
    FeatureSpec,
    image_feature,
    read_json,
)
from ...datasets.images import check_header, decode_image, encode_image
from ...datasets.stats import DatasetStats
from ...datasets.work_folder import OUTPUT as WORK_OUTPUT
from ...errors import DatasetError, missing_extra
from ..base import SIDECAR, ConversionError, FormatReader, FormatWriter
from ..parts import PART_STATS, PARTS_DIR
from .meta_checks import (
    check_dataset_info,
    check_features_json,
    check_sidecar,
)
from .paths import check_inside, check_split_paths

SIDECAR_FORMAT = "telecorder-rlds"
SIDECAR_VERSION = 1
#: Step key of the per-step timing that RLDS has no field for.
TIMING_KEY = "telecorder"
#: Episode-metadata key holding the episode's full metadata as JSON.
METADATA_JSON_KEY = "telecorder_metadata"
DEFAULT_FPS = 10.0
#: The held-out split's name: what Octo and OpenVLA's ``make_dataset_from_rlds(train=False)`` read.
VAL_SPLIT = "val"

# Standard RLDS step fields and the dtype RLDS tools expect them in.
_RLDS_SCALARS = {"reward": "float32", "discount": "float32", "is_terminal": "bool"}
_DERIVED = ("is_first", "is_last")
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# Reading forward by this many episodes is cheaper than restarting the reader at the target.
_SKIP_AHEAD = 8
# Typed episode_metadata fields: kind -> the Python type a value is cast to, its default when
# missing or not castable.
_META_KINDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "bool": (bool, False),
    "int64": (int, 0),
    "float64": (float, math.nan),
    "text": (str, ""),
}
_META_KIND_OF: dict[type, str] = {bool: "bool", int: "int64", float: "float64", str: "text"}
# episode_metadata fields every episode gets, whatever its metadata.
_META_RESERVED = frozenset({"file_path", "episode_id", METADATA_JSON_KEY})


def episode_metadata_fields(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The typed ``episode_metadata`` fields (key -> kind: ``bool``, ``int64``, ``float64`` or
    ``text``) that :class:`RLDSWriter` derives from its first episode when that has ``metadata``.

    Only scalar bool / int / float / str values (NumPy scalars included) whose key is usable in
    RLDS become fields. A sharded conversion computes this once, from the first episode of the
    whole conversion, and gives it to every part as the writer option ``episode_metadata_fields``,
    so that all parts store the schema one writer would have.
    """
    fields: dict[str, str] = {}
    for key, value in sorted(metadata.items(), key=lambda kv: str(kv[0])):
        if not isinstance(key, str) or key in _META_RESERVED or not _KEY_RE.match(key):
            continue
        value = value.item() if isinstance(value, np.generic) else value
        kind = _META_KIND_OF.get(type(value))
        if kind is not None:
            fields[key] = kind
    return fields


def _checked_metadata_fields(value: Any, where: str) -> dict[str, str] | None:
    """The ``episode_metadata_fields`` option, validated; None when not given."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConversionError(f"{where}: episode_metadata_fields must map metadata keys to kinds, not {type(value).__name__}")
    fields: dict[str, str] = {}
    for key, kind in sorted(value.items(), key=lambda kv: str(kv[0])):
        if not isinstance(key, str) or not _KEY_RE.match(key) or key in _META_RESERVED:
            raise ConversionError(
                f"{where}: episode_metadata_fields key {key!r} cannot be an episode_metadata field "
                f"(reserved: {', '.join(sorted(_META_RESERVED))}; keys match {_KEY_RE.pattern})"
            )
        if kind not in _META_KINDS:
            raise ConversionError(
                f"{where}: episode_metadata_fields[{key!r}] is {kind!r}; kinds are {', '.join(_META_KINDS)}"
            )
        fields[key] = str(kind)
    return fields


def import_tfds() -> tuple[Any, Any]:
    """``(tensorflow, tensorflow_datasets)``, or an ImportError that says how to install them."""
    # TensorFlow's C++ start-up banner would otherwise interleave with the CLI's progress output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise missing_extra("tensorflow / tensorflow-datasets", "rlds") from e
    return tf, tfds


def find_tfds_dir(path: Path) -> Path | None:
    """The folder holding ``dataset_info.json`` + ``features.json``: ``path`` itself, its single
    version subfolder (``1.0.0/``), or ``<name>/<version>/`` below it (the layout ``tfds.builder``
    expects under a data_dir). ``None`` if there is none; nothing heavy is imported."""

    def has_info(d: Path) -> bool:
        return (d / "dataset_info.json").is_file() and (d / "features.json").is_file()

    path = Path(path)
    if not path.is_dir():
        return None
    if has_info(path):
        return path
    candidate = path
    for _ in range(2):
        subdirs = [d for d in candidate.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if len(subdirs) != 1:
            return None
        candidate = subdirs[0]
        if has_info(candidate):
            return candidate
    return None


def published_path(path: Path) -> Path:
    """The absolute folder a dataset built in ``path`` ends up in: ``telecorder convert`` builds
    DST in ``.DST.partial/dataset`` (earlier versions in ``.DST.partial``) and renames it when complete."""
    path = Path(os.path.abspath(path))

    def work(name: str) -> bool:
        return name.startswith(".") and name.endswith(".partial") and len(name) > len("..partial")

    if path.name == WORK_OUTPUT and work(path.parent.name):
        path = path.parent
    return path.with_name(path.name[1 : -len(".partial")]) if work(path.name) else path


def dataset_name_for(path: Path) -> str:
    """A TFDS dataset name (snake_case) from the folder the dataset ends up in (see
    :func:`published_path`)."""
    name = published_path(path).name
    name = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    name = re.sub(r"^[0-9_]+", "", name)
    return name or "telecorder_dataset"


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Leaf:
    """How one step field of the dataset becomes part of an Episode."""

    path: tuple[str, ...]
    kind: str  # "image" (camera), "numeric", "text" (metadata), "timing"
    name: str  # feature name, metadata key, or timing path
    dtype: str = ""
    encoded: bool = False  # image bytes (tfds Image) rather than a raw uint8 array
    channels: int = 3
    # A Tensor stored as raw bytes (tfds Encoding.BYTES/ZLIB); its feature decodes it.
    tensor: Any = field(default=None, compare=False)


def _bytes_tensor(feat: Any) -> Any:
    """``feat`` if it is a tfds Tensor serialized as bytes (arrives undecoded under SkipDecoding)."""
    serialized = feat.get_serialized_info()
    kind = np.dtype(getattr(serialized, "np_dtype", object)).kind
    return feat if kind == "O" and np.dtype(feat.np_dtype).kind != "O" else None


def _walk(feature: Any, prefix: tuple[str, ...], fdict: type) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(feature, fdict):
        for key, sub in feature.items():
            yield from _walk(sub, (*prefix, key), fdict)
    else:
        yield prefix, feature


def _to_python(value: Any) -> Any:
    """A decoded tfds value as plain JSON-able Python (bytes -> str, numpy -> lists/scalars)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_to_python(v) for v in value.tolist()]
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _to_python(v) for k, v in value.items()}
    return value


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


@dataclass(frozen=True, eq=False)
class _SplitPart:
    name: str
    count: int
    shard_ends: list[int]
    shard_files: list[Path]

    @classmethod
    def of(cls, name: str, split_info: Any) -> _SplitPart:
        try:
            files = [Path(os.fspath(p)) for p in split_info.filepaths]
        except Exception:  # an unusual filename template: errors then name the folder instead
            files = []
        ends = [int(e) for e in np.cumsum([int(n) for n in split_info.shard_lengths])]
        return cls(name, int(split_info.num_examples), ends, files)


class RLDSReader(FormatReader):
    """Reads an RLDS/TFDS dataset folder one episode at a time.

    Options: ``split`` (default: every split, so that a conversion loses no episode: ``train``
    first, then the others by name, or in their original order where our sidecar lists it);
    ``fps`` for datasets without our sidecar (RLDS
    records no control rate; default 10, and ``info.extra`` says it was assumed);
    ``robot_type`` (default: the sidecar's, else the TFDS dataset name).
    """

    format_name = "rlds"

    def __init__(
        self,
        path: Path,
        *,
        split: str | None = None,
        fps: float | None = None,
        robot_type: str | None = None,
        cameras: Sequence[str] | None = None,
    ) -> None:
        super().__init__(path, cameras)
        self.data_dir = find_tfds_dir(self.path)
        if self.data_dir is None:
            raise ConversionError(
                f"{self.path}: no dataset_info.json + features.json here or in a single version "
                "subfolder; not an RLDS/TFDS dataset"
            )
        if fps is not None and not fps > 0:
            raise ConversionError(f"{self.path}: reader option fps must be positive, not {fps}")
        check_split_paths(self.data_dir, error=ConversionError)  # TFDS would read shards wherever they point
        for name, check in (("dataset_info.json", check_dataset_info), ("features.json", check_features_json)):
            check(read_json(self.data_dir / name, error=ConversionError), self.data_dir / name)  # before TFDS parses
        self._tf, self._tfds = import_tfds()
        try:
            self._builder = self._tfds.builder_from_directory(os.fspath(self.data_dir))
            features = self._builder.info.features
        except Exception as e:
            raise ConversionError(
                f"{self.data_dir}: dataset_info.json / features.json cannot be loaded by "
                f"tensorflow-datasets ({type(e).__name__}: {e})"
            ) from e
        if "steps" not in features or not isinstance(features["steps"], self._tfds.features.Dataset):
            raise ConversionError(
                f"{self.data_dir / 'features.json'}: no 'steps' Dataset feature; this TFDS dataset is "
                "not in RLDS layout (episodes of steps)"
            )
        splits = self._builder.info.splits
        if split is not None and split not in splits:
            raise ConversionError(
                f"{self.data_dir / 'dataset_info.json'}: no split {split!r} (it has "
                f"{', '.join(sorted(splits)) or 'none'}); pass the reader option split=..."
            )
        names = [split] if split is not None else sorted(splits, key=lambda n: (n != "train", n))
        self._parts = [_SplitPart.of(name, splits[name]) for name in names]
        for part in self._parts:
            check_inside(self.data_dir, part.shard_files, error=ConversionError,
                         source=f"{self.data_dir / 'dataset_info.json'} split {part.name!r} shard")
        self._file_format = str(getattr(self._builder.info.file_format, "value", "tfrecord") or "tfrecord")
        self._sidecar = self._load_sidecar()
        self._order = self._episode_order()
        self._num_episodes = len(self._order)
        self._fps_option = fps
        self._robot_type_option = robot_type
        self._leaves: list[_Leaf] = []
        self._info: DatasetInfo | None = None
        # Per split: an open tf.data iterator and the split-local position it is at.
        self._iters: dict[str, tuple[Iterator[Any], int]] = {}
        self._sources: dict[str, Any] = {}

    @property
    def split(self) -> str:
        """The split(s) read, comma-separated."""
        return ",".join(part.name for part in self._parts)

    def _episode_order(self) -> list[tuple[_SplitPart, int]]:
        """(split, index in split) for each episode number this reader serves."""
        order = [(part, i) for part in self._parts for i in range(part.count)]
        listed = (self._sidecar or {}).get("splits")
        if len(self._parts) > 1 and isinstance(listed, dict):
            # Our own output: put the episodes back in the order they had before the split.
            try:
                original = [int(e) for part in self._parts for e in listed[part.name]["episodes"]]
            except (KeyError, TypeError, ValueError, OverflowError):
                return order
            if len(original) == len(order) and len(set(original)) == len(original):
                return [pos for _, pos in sorted(zip(original, order, strict=True), key=lambda t: t[0])]
        return order

    @classmethod
    def detect(cls, path: Path) -> bool:
        return find_tfds_dir(Path(path)) is not None

    # -- schema ------------------------------------------------------------------------

    def _load_sidecar(self) -> dict[str, Any] | None:
        path = self.data_dir / SIDECAR
        if not path.is_file():
            return None
        try:
            side = read_json(path)
        except DatasetError as e:
            raise ConversionError(f"{e} (delete it to read the dataset without telecorder's metadata)") from e
        if not isinstance(side, dict) or side.get("format") != SIDECAR_FORMAT:
            return None
        try:
            check_sidecar(side, path)
        except ConversionError as e:
            raise ConversionError(f"{e} (or delete it to read the dataset without telecorder's metadata)") from e
        return side

    @property
    def info(self) -> DatasetInfo:
        if self._info is None:
            try:
                self._info = self._build_info()
            except (ValueError, TypeError) as e:  # a field our data model cannot represent
                raise ConversionError(f"{self.data_dir / 'features.json'}: {e}") from e
        return self._info

    def _build_info(self) -> DatasetInfo:
        tfds = self._tfds
        fdict, image_cls, text_cls = tfds.features.FeaturesDict, tfds.features.Image, tfds.features.Text
        tensor_cls = tfds.features.Tensor
        step_features = self._builder.info.features["steps"].feature
        side_info = self._sidecar_info()
        skipped: list[str] = []
        leaves: list[_Leaf] = []
        specs: dict[str, FeatureSpec] = {}
        stored_encoding = "jpeg"
        needs_shape: dict[str, tuple[str, ...]] = {}
        declared: list[str] = []  # cameras; those not selected get no leaf, so are never decoded
        for path, feat in _walk(step_features, (), fdict):
            key = "/".join(path)
            doc = getattr(getattr(feat, "doc", None), "desc", "") or ""
            if path[0] in _DERIVED and len(path) == 1:
                continue
            if path[0] == TIMING_KEY:
                raw = _bytes_tensor(feat) if isinstance(feat, tensor_cls) else None
                leaves.append(_Leaf(path, "timing", "/".join(path[1:]), tensor=raw))
                continue
            if isinstance(feat, text_cls) or (
                isinstance(feat, tensor_cls) and np.dtype(feat.np_dtype).kind in "OSU"
            ):
                leaves.append(_Leaf(path, "text", ".".join(path[1:] if path[0] == "observation" else path)))
                continue
            if isinstance(feat, image_cls):
                shape = tuple(feat.shape)
                dtype = np.dtype(feat.np_dtype).name
                if len(shape) == 3 and shape[2] == 3 and dtype == "uint8":
                    cam = "_".join(path[1:]) if path[0] == "observation" else "_".join(path)
                    name = IMAGE_PREFIX + cam
                    declared.append(cam)
                    if not self.wants_camera(cam):
                        continue
                    leaves.append(_Leaf(path, "image", name, "uint8", encoded=True))
                    if any(s is None for s in shape):
                        needs_shape[name] = path
                    else:
                        specs[name] = image_feature(cam, shape[0], shape[1], unit=doc)
                    if feat.encoding_format == "png":
                        stored_encoding = "png"
                    continue
                if any(s is None for s in shape):
                    skipped.append(f"{key} (image of unknown size {shape})")
                    continue
                name = ".".join(path)
                leaves.append(_Leaf(path, "numeric", name, dtype, encoded=True, channels=shape[-1]))
                specs[name] = FeatureSpec(name, dtype, shape, unit=doc)
                continue
            if isinstance(feat, tensor_cls):
                shape = tuple(feat.shape)
                dtype = np.dtype(feat.np_dtype).name
                if any(s is None for s in shape):
                    skipped.append(f"{key} (per-step shape {shape} varies)")
                    continue
                if dtype == "uint8" and len(shape) == 3 and shape[2] == 3 and path[0] == "observation":
                    cam = "_".join(path[1:])
                    name = IMAGE_PREFIX + cam
                    declared.append(cam)
                    if not self.wants_camera(cam):
                        continue
                    leaves.append(_Leaf(path, "image", name, "uint8"))
                    specs[name] = image_feature(cam, shape[0], shape[1], unit=doc)
                    continue
                name = ".".join(path)
                leaves.append(_Leaf(path, "numeric", name, dtype, tensor=_bytes_tensor(feat)))
                specs[name] = FeatureSpec(name, dtype, shape, unit=doc)
                continue
            skipped.append(f"{key} ({type(feat).__name__})")
        self.check_camera_selection(declared, self.data_dir / "features.json")

        if needs_shape:
            # Images declared without a size (shape (None, None, 3)) take the first frame's.
            first = self._raw_episode(0) if self._num_episodes else None
            for name, path in needs_shape.items():
                blobs = _get_path(first["steps"], path) if first is not None else []
                if len(blobs) == 0:
                    skipped.append(f"{'/'.join(path)} (image of unknown size, no frame to measure)")
                    leaves = [leaf for leaf in leaves if leaf.name != name]
                    continue
                where = f"{self._shard_for(0)} episode 0 {'/'.join(path)}"
                try:
                    h, w = check_header(blobs[0], where)  # the declared size: nothing to decode to measure it
                except DatasetError as e:
                    raise ConversionError(str(e)) from e
                specs[name] = image_feature(name.removeprefix(IMAGE_PREFIX), h, w)
        self._leaves = leaves

        if side_info is not None:
            # Our own names, units and original dtypes, where the stored field still matches them.
            for name, spec in list(specs.items()):
                theirs = side_info.features.get(name)
                if theirs is not None and theirs.shape == spec.shape and theirs.kind == spec.kind:
                    specs[name] = theirs
            written = {n for n in side_info.features}
            specs = {n: s for n, s in specs.items() if n in written}

        order = {"action": 0, "observation": 1}
        feats = sorted(specs.values(), key=lambda s: (s.is_image, order.get(s.name.split(".")[0], 2), s.name))
        extra: dict[str, Any] = dict(side_info.extra) if side_info is not None else {}
        extra.update(
            source_format="rlds",
            rlds_dataset=self._builder.info.name,
            rlds_version=str(self._builder.info.version),
            rlds_split=self.split,
        )
        if skipped:
            extra["rlds_skipped_fields"] = skipped
        if self._fps_option is not None:
            fps = float(self._fps_option)
        elif side_info is not None:
            fps = side_info.fps
        else:
            fps = DEFAULT_FPS
            extra["fps_assumed"] = True
            extra["fps_note"] = (
                f"RLDS stores no control rate; {DEFAULT_FPS:g} Hz was assumed and timestamps are "
                "step / fps. Pass the reader option fps=... if the real rate is known."
            )
        robot_type = self._robot_type_option or (
            side_info.robot_type if side_info is not None else self._builder.info.name
        )
        image_encoding = side_info.image_encoding if side_info is not None else stored_encoding
        jpeg_quality = side_info.jpeg_quality if side_info is not None else 90
        return DatasetInfo.create(
            feats,
            fps=fps,
            robot_type=robot_type,
            image_encoding=image_encoding,
            jpeg_quality=jpeg_quality,
            total_episodes=self._num_episodes,
            total_frames=int(self._sidecar.get("total_frames", 0)) if self._sidecar else 0,
            extra=extra,
        )

    def _sidecar_info(self) -> DatasetInfo | None:
        if self._sidecar is None or "info" not in self._sidecar:
            return None
        try:
            return DatasetInfo.from_dict(self._sidecar["info"], source=str(self.data_dir / SIDECAR))
        except DatasetError as e:
            raise ConversionError(f"{e} (delete it to read the dataset without telecorder's metadata)") from e

    # -- episodes ----------------------------------------------------------------------

    def episode_indices(self) -> list[int]:
        return list(range(self._num_episodes))

    def _shard_for(self, index: int) -> str:
        part, local = self._order[index] if 0 <= index < self._num_episodes else (self._parts[0], index)
        k = bisect.bisect_right(part.shard_ends, local)
        if part.shard_files and k < len(part.shard_files):
            return str(part.shard_files[k])
        return f"{self.data_dir} (shard holding episode {local} of split {part.name!r})"

    def _read_error(self, index: int, e: Exception) -> ConversionError:
        shard = self._shard_for(index)
        errors = self._tf.errors
        if isinstance(e, errors.NotFoundError):
            what = "file is missing"
        elif isinstance(e, errors.DataLossError):
            what = f"truncated or corrupt {self._file_format} shard"
        else:
            what = f"episode {index} cannot be decoded with features.json"
        # TF wraps the cause in "{{function_node ...}} ... [Op:IteratorGetNext]"; keep the cause.
        detail = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", str(e).strip().splitlines()[0] if str(e).strip() else "")
        detail = detail.strip() or type(e).__name__
        return ConversionError(f"{shard}: {what} ({detail}); re-download or regenerate this shard")

    def _decoders(self) -> dict[str, Any]:
        # Steps come back as whole arrays (images still encoded): one tensor per field instead
        # of a nested tf.data.Dataset per episode, and frames are decoded by OpenCV below.
        return {"steps": self._tfds.decode.SkipDecoding()}

    def _dataset_from(self, name: str, start: int) -> Iterator[Any]:
        split = name if start == 0 else f"{name}[{start}:]"
        # One shard at a time, in file order, so episode i is the i-th record of the split.
        read_config = self._tfds.ReadConfig(interleave_cycle_length=1)
        ds = self._builder.as_dataset(
            split=split, shuffle_files=False, decoders=self._decoders(), read_config=read_config
        )
        return ds.as_numpy_iterator()

    def _raw_episode(self, index: int) -> dict[str, Any]:
        part, local = self._order[index]
        if self._file_format == "array_record":
            try:
                if part.name not in self._sources:
                    self._sources[part.name] = self._builder.as_data_source(split=part.name, decoders=self._decoders())
                return self._sources[part.name][local]
            except ImportError as e:
                raise missing_extra("array_record", "rlds") from e
            except Exception as e:
                raise self._read_error(index, e) from e
        it, pos = self._iters.pop(part.name, (None, 0))
        try:
            if it is None or local < pos or local > pos + _SKIP_AHEAD:
                it, pos = self._dataset_from(part.name, local), local
            while pos < local:
                next(it)
                pos += 1
            raw = next(it)
            self._iters[part.name] = (it, pos + 1)
            return raw
        except StopIteration as e:
            raise ConversionError(
                f"{self._shard_for(index)}: ended before episode {local}; dataset_info.json promises "
                f"{part.count} episodes in split {part.name!r}"
            ) from e
        except self._tf.errors.OpError as e:
            # A failed tf.data iterator cannot be resumed; it is dropped (popped above).
            failed = next((g for g, (p, i) in enumerate(self._order) if p is part and i == pos), index)
            raise self._read_error(failed, e) from e

    def read_episode(self, index: int) -> Episode:
        if not 0 <= index < self._num_episodes:
            raise ConversionError(
                f"{self.data_dir}: no episode {index} in split {self.split!r} (it has {self._num_episodes})"
            )
        info = self.info
        raw = self._raw_episode(index)
        return self._to_episode(index, raw, info)

    def _to_episode(self, index: int, raw: Mapping[str, Any], info: DatasetInfo) -> Episode:
        steps = raw["steps"]
        where = self._shard_for(index)
        lengths = {len(np.asarray(v)) for _, v in _flatten(steps)}
        if len(lengths) > 1:
            raise ConversionError(f"{where}: episode {index} has step fields of different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        data: dict[str, np.ndarray] = {}
        images: dict[str, list[np.ndarray]] = {}
        timing: dict[str, np.ndarray] = {}
        texts: dict[str, Any] = {}
        for leaf in self._leaves:
            value = _get_path(steps, leaf.path)
            if leaf.tensor is not None:
                value = (
                    leaf.tensor.decode_example_np(np.asarray(value, dtype=object))
                    if len(value)
                    else np.zeros((0, *leaf.tensor.shape), leaf.tensor.np_dtype)
                )
            if leaf.kind == "timing":
                timing[leaf.name] = np.asarray(value)
            elif leaf.kind == "text":
                if len(value):
                    texts[leaf.name] = _to_python(value[0])
            elif leaf.kind == "image":
                if leaf.name not in info.features:
                    continue
                label = f"{where} episode {index} {'/'.join(leaf.path)}"
                images[leaf.name.removeprefix(IMAGE_PREFIX)] = (
                    _decode_all(value, label) if leaf.encoded else [np.asarray(f, dtype=np.uint8) for f in value]
                )
            elif leaf.name in info.features:
                spec = info.features[leaf.name]
                if leaf.encoded and len(value):
                    value = np.stack([_decode_any(b, leaf.channels, f"{where} episode {index}") for b in value])
                elif leaf.encoded:
                    value = np.zeros((0, *spec.shape), spec.dtype)
                data[leaf.name] = np.asarray(value).reshape(n, *spec.shape).astype(spec.dtype, copy=False)
        for cam, frames in images.items():
            spec = info.features[IMAGE_PREFIX + cam]
            bad = next((i for i, f in enumerate(frames) if f.shape != spec.shape), None)
            if bad is not None:
                raise ConversionError(
                    f"{where}: episode {index} camera {cam!r} frame {bad} is {frames[bad].shape}, "
                    f"features.json says {spec.shape}"
                )

        metadata = self._metadata(raw.get("episode_metadata", {}), texts)
        timestamp = timing.get("timestamp")
        if timestamp is None or len(timestamp) != n:
            timestamp = np.arange(n, dtype=np.float64) / info.fps
        image_ts = {c: timing[f"image_timestamp/{c}"].astype(np.float64) for c in images if f"image_timestamp/{c}" in timing}
        frame_idx = {c: timing[f"frame_index/{c}"].astype(np.int64) for c in images if f"frame_index/{c}" in timing}
        lateness = timing.get("tick_lateness")
        if lateness is not None and (len(lateness) != n or (n and np.isnan(lateness).all())):
            lateness = None
        return Episode(
            index=index,
            timestamp=np.asarray(timestamp, dtype=np.float64),
            data=data,
            image_timestamp=image_ts,
            frame_index=frame_idx,
            tick_lateness=None if lateness is None else lateness.astype(np.float32),
            metadata=metadata,
            images=images,
        )

    def _metadata(self, episode_metadata: Mapping[str, Any], texts: Mapping[str, Any]) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        stored = episode_metadata.get(METADATA_JSON_KEY) if isinstance(episode_metadata, Mapping) else None
        if stored is not None:
            try:
                meta = json.loads(_to_python(stored))
            except json.JSONDecodeError:
                meta = {}
        if not meta:
            for path, value in _flatten(episode_metadata):
                meta[".".join(path)] = _to_python(value)
            for key, value in texts.items():
                if value != "":
                    meta.setdefault(key, value)
            instruction = meta.get("language_instruction")
            if instruction:
                meta.setdefault("task", instruction)
        return meta

    def close(self) -> None:
        """Drop the open reader (tf.data iterator or ArrayRecord source)."""
        self._iters.clear()
        self._sources.clear()


def _get_path(tree: Mapping[str, Any], path: Sequence[str]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _decode_all(blobs: Sequence[bytes], label: str) -> list[np.ndarray]:
    def one(i: int) -> np.ndarray:
        try:
            return decode_image(blobs[i], where=f"{label} step {i}")
        except DatasetError as e:
            raise ConversionError(str(e)) from e

    if len(blobs) < 32:
        return [one(i) for i in range(len(blobs))]
    # OpenCV releases the GIL while decoding, so threads scale with the cores.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, range(len(blobs))))


def _decode_any(blob: bytes, channels: int, label: str) -> np.ndarray:
    """A non-RGB stored image (depth, mask) decoded as stored, (H, W, C)."""
    buf = np.frombuffer(blob, np.uint8)
    try:
        check_header(buf, label)  # bounded before OpenCV allocates what the header claims
    except DatasetError as e:
        raise ConversionError(str(e)) from e
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ConversionError(f"{label}: stored image bytes cannot be decoded (corrupt or empty)")
    if img.ndim == 2:
        img = img[..., None]
    elif img.shape[2] in (3, 4):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB if img.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    if channels == 1 and img.shape[2] == 4:  # tfds stores float32 depth bit-cast into RGBA
        img = img.view(np.float32)
    return img


# --------------------------------------------------------------------------- writing


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)  # paths, datetimes, ...: readable rather than lost


def _insert(tree: dict[str, Any], path: Sequence[str], value: Any, what: str) -> None:
    node = tree
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConversionError(f"{what}: {'/'.join(path)} would nest under the field {key!r}")
        node = child
    if path[-1] in node:
        raise ConversionError(f"{what}: two features map to the RLDS field {'/'.join(path)}")
    node[path[-1]] = value


class RLDSWriter(FormatWriter):
    """Writes episodes as an RLDS dataset, one TFDS example per ``write_episode`` call.

    Options:
        file_format: ``"tfrecord"`` (default) or ``"array_record"`` (needs the array_record
            package; TFDS reads those with ``as_data_source``, not ``as_dataset``).
        dataset_name: TFDS name, used in shard file names (default: the folder name).
        version: TFDS version (default ``"1.0.0"``).
        split: split the episodes go to (default ``"train"``).
        val_episodes: episode indices (``Episode.index``) that go to a second split, ``"val"``,
            the split Octo and OpenVLA read with ``train=False``; both splits must end up
            non-empty (:func:`telecorder.datasets.splits.episode_split` picks them).
        layout: ``"flat"`` (default: the dataset files directly in ``path``) or ``"nested"``
            (``path/<dataset_name>/<version>/``, what ``tfds.builder(name, data_dir=path)``
            and the Octo / OpenVLA loaders look for).
        episodes_per_shard: fixed shard size; default sized from the first episode so that a
            shard holds about ``shard_size_mb`` (default 256) MB.
        image_encoding / jpeg_quality: default the dataset's (``jpeg``, 90).
        language_embeddings: ``.npy`` file with one row per written episode, stored as
            ``steps/language_embedding`` float32[D] (repeated on every step).
        encode_threads: threads encoding frames (default: up to 8).
        description: text for dataset_info.json.
        part: write one part of a sharded conversion (:mod:`telecorder.converters.parts`):
            a split may stay empty, and ``part_stats.json`` is written at ``path``.
        episode_metadata_fields: the typed ``episode_metadata`` fields, metadata key -> kind
            (``bool``, ``int64``, ``float64``, ``text``), used instead of those derived from the
            first episode written (:func:`episode_metadata_fields`). The parts of a sharded
            conversion all get the fields of the conversion's first episode, so that they store
            one schema. Values are cast to the field's kind; an episode without the key, or with
            a value that does not cast, stores False / 0 / NaN / ''.

    Conventions written: ``reward`` is 1 on the last step of an episode whose ``success`` is
    not False (0 elsewhere), ``is_terminal`` likewise (a failed demo was cut off, not finished),
    ``discount`` is 1, unless the dataset has its own ``reward``/``discount``/``is_terminal``
    features. Floating-point features are stored as float32, other dtypes as they are.
    """

    format_name = "rlds"
    default_layout = "flat"
    _OPTIONS: frozenset[str] = frozenset(
        {
            "file_format",
            "dataset_name",
            "version",
            "split",
            "val_episodes",
            "layout",
            "episodes_per_shard",
            "shard_size_mb",
            "image_encoding",
            "jpeg_quality",
            "language_embeddings",
            "encode_threads",
            "description",
            "part",
            "episode_metadata_fields",
        }
    )

    def __init__(self, path: Path, info: DatasetInfo, **options: Any) -> None:
        super().__init__(path, info, **options)
        unknown = sorted(set(options) - self._OPTIONS)
        if unknown:
            raise ConversionError(
                f"{self.format_name} writer: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(self._OPTIONS))}"
            )
        opt = self.options.get
        self.part = bool(opt("part", False))
        self.file_format = str(opt("file_format", "tfrecord"))
        if self.file_format not in ("tfrecord", "array_record"):
            raise ConversionError(f"{self.format_name} writer: file_format must be 'tfrecord' or 'array_record', not {self.file_format!r}")
        if self.file_format == "array_record" and importlib.util.find_spec("array_record") is None:
            raise ConversionError(
                f"{self.format_name} writer: file_format='array_record' needs the array_record package "
                "(pip install array_record), or use file_format='tfrecord'"
            )
        name_from = self.path
        if self.part and self.path.parent.name == PARTS_DIR:
            # A part's own folder name (part-00003) would name its shards wrongly; the dataset's is WORK's.
            name_from = self.path.parent.parent
        given = opt("dataset_name")
        self.dataset_name = dataset_name_for(Path(str(given)) if given else name_from)
        self.version = str(opt("version", "1.0.0"))
        if not re.fullmatch(r"\d+\.\d+\.\d+", self.version):
            raise ConversionError(f"{self.format_name} writer: version must look like 1.0.0, not {self.version!r}")
        self.split = str(opt("split", "train"))
        self._val = frozenset(int(i) for i in (opt("val_episodes") or ()))
        if self._val and self.split == VAL_SPLIT:
            raise ConversionError(f"{self.format_name} writer: split={VAL_SPLIT!r} clashes with val_episodes; name the other split differently")
        self._split_episodes: dict[str, list[int]] = {self.split: []} | ({VAL_SPLIT: []} if self._val else {})
        layout = str(opt("layout", self.default_layout))
        if layout not in ("flat", "nested"):
            raise ConversionError(f"{self.format_name} writer: layout must be 'flat' or 'nested', not {layout!r}")
        self.data_dir = self.path if layout == "flat" else self.path / self.dataset_name / self.version
        self.image_encoding = str(opt("image_encoding", info.image_encoding))
        if self.image_encoding not in ("jpeg", "png"):
            raise ConversionError(f"{self.format_name} writer: image_encoding must be 'jpeg' or 'png', not {self.image_encoding!r}")
        self.jpeg_quality = int(opt("jpeg_quality", info.jpeg_quality))
        self._episodes_per_shard = opt("episodes_per_shard")
        self._shard_bytes = float(opt("shard_size_mb", 256)) * 1e6
        self._threads = max(1, int(opt("encode_threads", min(8, os.cpu_count() or 1))))
        self._given_meta_fields = _checked_metadata_fields(opt("episode_metadata_fields"), f"{self.format_name} writer")
        self._description = str(opt("description", "")) or (
            f"Teleoperated demonstrations of {info.robot_type} recorded with telecorder."
        )

        self._setup()
        out = self._output_info(info)
        self._embeddings: np.ndarray | None = None
        if opt("language_embeddings") is not None:
            self._embeddings = self._load_embeddings(Path(str(opt("language_embeddings"))))
            feats = {n: s for n, s in out.features.items() if n != "language_embedding"}
            feats["language_embedding"] = FeatureSpec(
                "language_embedding", "float32", (self._embeddings.shape[1],), unit="language embedding of the episode's instruction"
            )
            out = dataclasses.replace(out, features=feats)
        self.out_info = DatasetInfo(
            features=dict(out.features),
            fps=out.fps,
            robot_type=out.robot_type,
            image_encoding=self.image_encoding,
            jpeg_quality=self.jpeg_quality,
            extra=dict(out.extra),
        )
        self._keys = self._rlds_keys(self.out_info)
        self._tf, self._tfds = import_tfds()
        self._writer: Any = None
        self._meta_fields: dict[str, str] = {}
        self._count = 0
        self._frames = 0
        self._closed = False

    # -- hooks for conventions built on RLDS (OXE) ---------------------------------------

    def _setup(self) -> None:
        """Read subclass options; runs before the output schema is derived."""

    def _output_info(self, info: DatasetInfo) -> DatasetInfo:
        """The schema actually written (a subclass may rename cameras or change the action)."""
        return info

    def _prepare(self, episode: Episode) -> Episode:
        """The episode as written, matching :meth:`_output_info`."""
        return episode

    def _written(self, episode: Episode) -> None:
        """Called after each episode is stored (statistics)."""

    def _finish(self) -> None:
        """Extra files once the dataset is complete (not in a part: the merge writes them once)."""

    def _sidecar_extra(self) -> dict[str, Any]:
        return {}

    # -- schema --------------------------------------------------------------------------

    def _load_embeddings(self, path: Path) -> np.ndarray:
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError as e:
            raise ConversionError(f"{path}: language embeddings file is missing") from e
        except (OSError, ValueError) as e:
            raise ConversionError(f"{path}: not a readable .npy array of embeddings ({e})") from e
        if arr.ndim != 2 or arr.dtype.kind not in "fiu" or arr.shape[1] == 0:
            raise ConversionError(f"{path}: language embeddings must be a 2-D numeric array (episodes, D), got {arr.dtype}{list(arr.shape)}")
        return arr.astype(np.float32)

    def _rlds_keys(self, info: DatasetInfo) -> dict[str, tuple[str, ...]]:
        """Feature name -> path of its RLDS step field."""
        keys: dict[str, tuple[str, ...]] = {}
        probe: dict[str, Any] = {}
        reserved = {"is_first", "is_last", "language_instruction", TIMING_KEY}
        for spec in info.features.values():
            if spec.is_image:
                path: tuple[str, ...] = ("observation", spec.camera)
            else:
                path = tuple(spec.name.split("."))
                if path[0] in reserved:
                    continue  # is_first/is_last are recomputed from the step order
            bad = [p for p in path if not _KEY_RE.match(p) or "/" in p]
            if bad:
                raise ConversionError(f"{self.format_name} writer: feature {spec.name!r} has a name part {bad[0]!r} RLDS cannot use as a key")
            _insert(probe, path, spec.name, f"{self.format_name} writer")
            keys[spec.name] = path
        return keys

    def _step_schema(self) -> dict[str, Any]:
        F = self._tfds.features
        info = self.out_info
        tree: dict[str, Any] = {}
        for name, path in self._keys.items():
            spec = info.features[name]
            doc = spec.unit + (f" [{', '.join(spec.names)}]" if spec.names else "")
            if spec.is_image:
                feat = F.Image(shape=spec.shape, dtype=np.uint8, encoding_format=self.image_encoding, doc=doc or None)
            elif name in _RLDS_SCALARS and spec.shape in ((), (1,)):
                feat = F.Scalar(dtype=np.dtype(_RLDS_SCALARS[name]), doc=doc or None)
            else:
                feat = F.Tensor(shape=spec.shape, dtype=_stored_dtype(spec.dtype), doc=doc or None)
            _insert(tree, path, feat, self.format_name)
        tree.setdefault("observation", {})
        defaults = {
            "reward": F.Scalar(dtype=np.float32, doc="1 on the last step of a successful demo, else 0"),
            "discount": F.Scalar(dtype=np.float32, doc="1 (demonstrations are not discounted)"),
            "is_terminal": F.Scalar(dtype=np.bool_, doc="last step of an episode not marked failed"),
        }
        for key, feat in defaults.items():
            tree.setdefault(key, feat)
        tree["is_first"] = F.Scalar(dtype=np.bool_, doc="first step of the episode")
        tree["is_last"] = F.Scalar(dtype=np.bool_, doc="last step of the episode")
        tree["language_instruction"] = F.Text(doc="the episode's task instruction, on every step")
        cams = info.cameras
        # tf.train.Example holds floats as float32; float64 times go as raw bytes to stay exact.
        exact = F.Encoding.BYTES
        tree[TIMING_KEY] = {
            "timestamp": F.Tensor(shape=(), dtype=np.float64, encoding=exact, doc="seconds since the episode start"),
            "tick_lateness": F.Scalar(dtype=np.float32, doc="seconds the control tick started late (NaN: not recorded)"),
            "image_timestamp": {
                c: F.Tensor(shape=(), dtype=np.float64, encoding=exact, doc="capture time of the frame used") for c in cams
            },
            "frame_index": {c: F.Scalar(dtype=np.int64, doc="camera's own frame counter") for c in cams},
        }
        if not cams:
            del tree[TIMING_KEY]["image_timestamp"], tree[TIMING_KEY]["frame_index"]
        return _features_dict(F, tree)

    def _metadata_schema(self, first: Episode | None) -> Any:
        F = self._tfds.features
        fields: dict[str, Any] = {
            "file_path": F.Text(doc="episode this was converted from"),
            "episode_id": F.Scalar(dtype=np.int32, doc="index of the episode in its source dataset"),
            METADATA_JSON_KEY: F.Text(doc="all of the episode's telecorder metadata, as JSON"),
        }
        if self._given_meta_fields is not None:
            self._meta_fields = dict(self._given_meta_fields)
        else:
            self._meta_fields = episode_metadata_fields(first.metadata if first is not None else {})
        for key, kind in self._meta_fields.items():
            fields[key] = F.Text() if kind == "text" else F.Scalar(dtype=np.dtype(kind))
        return F.FeaturesDict(fields)

    def _open(self, first: Episode | None, first_bytes: int) -> None:
        tfds = self._tfds
        self.data_dir.mkdir(parents=True, exist_ok=True)
        features = tfds.features.FeaturesDict(
            {"steps": tfds.features.Dataset(self._step_schema()), "episode_metadata": self._metadata_schema(first)}
        )
        identity = tfds.core.DatasetIdentity(
            name=self.dataset_name,
            version=tfds.core.Version(self.version),
            data_dir=os.fspath(self.data_dir),
            module_name=__name__,
        )
        ds_info = tfds.core.DatasetInfo(builder=identity, features=features, description=self._description)
        if self._episodes_per_shard is not None:
            per_shard = max(1, int(self._episodes_per_shard))
        else:
            per_shard = max(1, int(self._shard_bytes // max(first_bytes, 1)))
        try:
            self._writer = tfds.core.SequentialWriter(
                ds_info=ds_info, max_examples_per_shard=per_shard, file_format=self.file_format
            )
            self._writer.initialize_splits(list(self._split_episodes))
        except Exception as e:
            raise ConversionError(f"{self.data_dir}: cannot start the RLDS dataset ({type(e).__name__}: {e})") from e

    # -- episodes --------------------------------------------------------------------------

    def write_episode(self, episode: Episode) -> None:
        if self._closed:
            raise ConversionError(f"{self.data_dir}: the {self.format_name} writer is already closed")
        ep = self._prepare(episode)
        self._check(ep)
        encoded = self._encode(ep)
        if self._writer is None:
            size = sum(len(b) for frames in encoded.values() for b in frames)
            size += sum(np.asarray(v).nbytes for v in ep.data.values())
            self._open(ep, size)
        example = self._example(ep, encoded)
        split = VAL_SPLIT if ep.index in self._val else self.split
        try:
            self._writer.add_examples({split: [example]})
        except Exception as e:
            raise ConversionError(
                f"{self.data_dir}: episode {ep.index} could not be written as RLDS ({type(e).__name__}: {e})"
            ) from e
        self._count += 1
        self._frames += len(ep)
        self._split_episodes[split].append(ep.index)
        self._written(ep)

    def _check(self, ep: Episode) -> None:
        n = len(ep)
        where = f"{self.format_name} writer, episode {ep.index}"
        for name in self._keys:
            spec = self.out_info.features[name]
            if spec.is_image:
                frames = ep.images.get(spec.camera)
                if frames is None:
                    raise ConversionError(f"{where}: no frames for camera {spec.camera!r} (episodes must be loaded with their images)")
                if len(frames) != n:
                    raise ConversionError(f"{where}: camera {spec.camera!r} has {len(frames)} frames for {n} steps")
                bad = next((i for i, f in enumerate(frames) if np.shape(f) != spec.shape), None)
                if bad is not None:
                    raise ConversionError(f"{where}: camera {spec.camera!r} frame {bad} is {np.shape(frames[bad])}, the dataset says {spec.shape}")
                continue
            if name == "language_embedding" and self._embeddings is not None:
                continue
            arr = ep.data.get(name)
            if arr is None:
                raise ConversionError(f"{where}: feature {name!r} is missing")
            if np.shape(arr) != (n, *spec.shape):
                raise ConversionError(f"{where}: feature {name!r} has shape {np.shape(arr)}, expected {(n, *spec.shape)}")

    def _encode(self, ep: Episode) -> dict[str, list[bytes]]:
        cams = self.out_info.cameras

        def one(job: tuple[str, int]) -> bytes:
            cam, i = job
            rgb = np.ascontiguousarray(ep.images[cam][i], dtype=np.uint8)
            return encode_image(rgb, self.image_encoding, self.jpeg_quality).tobytes()

        jobs = [(c, i) for c in cams for i in range(len(ep))]
        if self._threads > 1 and len(jobs) > 8:
            with ThreadPoolExecutor(max_workers=self._threads) as pool:
                blobs = list(pool.map(one, jobs))
        else:
            blobs = [one(j) for j in jobs]
        n = len(ep)
        return {c: blobs[k * n : (k + 1) * n] for k, c in enumerate(cams)}

    def _example(self, ep: Episode, encoded: Mapping[str, list[bytes]]) -> dict[str, Any]:
        n = len(ep)
        meta = ep.metadata
        success = meta.get("success")
        finished = success is None or bool(success)
        instruction = str(meta.get("language_instruction") or meta.get("task") or "")
        columns: dict[tuple[str, ...], Any] = {}
        for name, path in self._keys.items():
            spec = self.out_info.features[name]
            if spec.is_image:
                columns[path] = encoded[spec.camera]
            elif name == "language_embedding" and self._embeddings is not None:
                if self._count >= len(self._embeddings):
                    raise ConversionError(
                        f"{self.options['language_embeddings']}: has {len(self._embeddings)} rows, "
                        f"fewer than the episodes written (episode {ep.index} is number {self._count + 1})"
                    )
                columns[path] = np.broadcast_to(self._embeddings[self._count], (n, *spec.shape))
            elif name in _RLDS_SCALARS and spec.shape in ((), (1,)):
                columns[path] = np.asarray(ep.data[name]).reshape(n).astype(_RLDS_SCALARS[name])
            else:
                columns[path] = np.asarray(ep.data[name]).astype(_stored_dtype(spec.dtype), copy=False)
        last = np.arange(n) == n - 1
        columns.setdefault(("reward",), (last & finished).astype(np.float32))
        columns.setdefault(("discount",), np.ones(n, np.float32))
        columns.setdefault(("is_terminal",), last & finished)
        columns[("is_first",)] = np.arange(n) == 0
        columns[("is_last",)] = last
        columns[(TIMING_KEY, "timestamp")] = np.asarray(ep.timestamp, np.float64)
        lateness = ep.tick_lateness if ep.tick_lateness is not None and len(ep.tick_lateness) == n else np.full(n, np.nan)
        columns[(TIMING_KEY, "tick_lateness")] = np.asarray(lateness, np.float32)
        for cam in self.out_info.cameras:
            ts = ep.image_timestamp.get(cam)
            fi = ep.frame_index.get(cam)
            columns[(TIMING_KEY, "image_timestamp", cam)] = np.asarray(ts if ts is not None and len(ts) == n else ep.timestamp, np.float64)
            columns[(TIMING_KEY, "frame_index", cam)] = np.asarray(fi if fi is not None and len(fi) == n else np.arange(n), np.int64)

        steps = []
        for t in range(n):
            step: dict[str, Any] = {"observation": {}, "language_instruction": instruction}
            for path, col in columns.items():
                node = step
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = col[t]
            steps.append(step)

        source = meta.get("source_file") or meta.get("file_path") or f"episode_{ep.index:06d}"
        try:
            episode_id = int(meta.get("source_episode_index", ep.index))
        except (TypeError, ValueError):
            episode_id = ep.index
        episode_metadata: dict[str, Any] = {
            "file_path": str(source),
            "episode_id": episode_id,
            METADATA_JSON_KEY: json.dumps(meta, default=_json_default, sort_keys=True),
        }
        for key, kind in self._meta_fields.items():
            value = meta.get(key)
            value = value.item() if isinstance(value, np.generic) else value
            caster, default = _META_KINDS[kind]
            try:
                episode_metadata[key] = default if value is None else caster(value)
            except (TypeError, ValueError):
                episode_metadata[key] = default
        return {"steps": steps, "episode_metadata": episode_metadata}

    # -- finishing -----------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is None:
            self._open(None, 1)
        empty = [name for name, eps in self._split_episodes.items() if not eps]
        if self._val and self._count and empty and not self.part:
            # tfds refuses to read an empty split ("corresponds to no data"), so Octo would fail later.
            raise ConversionError(
                f"{self.data_dir}: split {empty[0]!r} would hold no episode (val_episodes "
                f"{sorted(self._val)[:10]}, written {self._count}); choose episodes so both splits get some"
            )
        try:
            self._writer.close_all()
        except Exception as e:
            raise ConversionError(f"{self.data_dir}: cannot finish the RLDS dataset ({type(e).__name__}: {e})") from e
        info = self.out_info
        info.total_episodes = self._count
        info.total_frames = self._frames
        sidecar = {
            "format": SIDECAR_FORMAT,
            "sidecar_version": SIDECAR_VERSION,
            "writer": self.format_name,
            "dataset_name": self.dataset_name,
            "version": self.version,
            "file_format": self.file_format,
            "split": self.split,
            "splits": {name: {"episodes": eps} for name, eps in self._split_episodes.items()},
            "total_episodes": self._count,
            "total_frames": self._frames,
            "info": info.to_dict(),
            "rlds_keys": {name: "steps/" + "/".join(path) for name, path in self._keys.items()},
            "step_fields": {
                f"steps/{TIMING_KEY}/timestamp": "seconds since the episode start",
                f"steps/{TIMING_KEY}/tick_lateness": "seconds the tick started late; NaN when not recorded",
                f"steps/{TIMING_KEY}/image_timestamp/<camera>": "capture time of the frame used at the step",
                f"steps/{TIMING_KEY}/frame_index/<camera>": "camera's own frame counter",
            },
            "episode_fields": {
                f"episode_metadata/{METADATA_JSON_KEY}": "the episode's metadata as JSON (authoritative)",
                "episode_metadata/<key>": "typed copies of the scalar metadata of the first episode, or of "
                "the keys the writer was given (missing or not castable: False / 0 / NaN / '')",
            },
            "conventions": {
                "reward": "1 on the last step when metadata success is not False, else 0",
                "is_terminal": "True on the last step when metadata success is not False",
                "discount": "1 on every step",
                "language_instruction": "metadata language_instruction, else task, on every step",
                "floats": "floating-point features are stored as float32; 'info' keeps the recorded dtype",
            },
            **self._sidecar_extra(),
        }
        write_json_atomic(self.data_dir / SIDECAR, sidecar)
        if self.part:
            write_json_atomic(self.path / PART_STATS, self._part_stats().to_json_dict())
        else:
            self._finish()

    def _part_stats(self) -> DatasetStats:
        """The mergeable statistics of a part; plain RLDS writes none."""
        return DatasetStats({})


def merge_parts(
    work: Path, parts: Sequence[Path], info: DatasetInfo, options: Mapping[str, Any], stats: DatasetStats
) -> None:
    """One RLDS dataset in ``work`` from the parts of a sharded conversion (:mod:`.rlds_merge`);
    RLDS keeps no statistics, so ``stats`` is unused."""
    from .merge import merge_rlds_parts  # it builds on this module

    merge_rlds_parts(Path(work), list(parts), info, options, RLDSWriter)


def _stored_dtype(dtype: str) -> np.dtype:
    dt = np.dtype(dtype)
    return np.dtype(np.float32) if dt.kind == "f" else dt


def _features_dict(F: Any, tree: Mapping[str, Any]) -> Any:
    return F.FeaturesDict({k: _features_dict(F, v) if isinstance(v, Mapping) else v for k, v in tree.items()})
