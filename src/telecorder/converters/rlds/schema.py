"""The RLDS schema telecorder reads and writes: field names, constants and the features built from them.

RLDS datasets are in the TFDS on-disk layout (``dataset_info.json`` + ``features.json`` + shards).

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
  ``episode_metadata/*`` -> metadata. Episodes recorded from a task list carry ``task_id`` (text,
  "" for none), ``paraphrase_index`` and ``task_family`` there as typed fields.

RLDS stores no control rate, no feature names or units, and no capture timing. The writer
keeps those in the sidecar ``telecorder_meta.json`` (dataset-level), in a per-step
``steps/telecorder`` dict (step timestamps, camera frame times and counters, tick lateness)
and in ``episode_metadata/telecorder_metadata`` (the episode's metadata as JSON), so that
native -> RLDS -> native loses nothing. Training loaders (Octo, OpenVLA) pick the keys they
know and ignore these.

TensorFlow and tensorflow-datasets are imported only when a dataset is opened (:func:`import_tfds`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...datasets.features import IMAGE_PREFIX, DatasetInfo, FeatureSpec, image_feature
from ...errors import missing_extra
from ..base import ConversionError

SIDECAR_FORMAT = "telecorder-rlds"
SIDECAR_VERSION = 1
#: Step key of the per-step timing that RLDS has no field for.
TIMING_KEY = "telecorder"
#: Episode-metadata key holding the episode's full metadata as JSON.
METADATA_JSON_KEY = "telecorder_metadata"
DEFAULT_FPS = 10.0
#: The held-out split's name: what Octo and OpenVLA's ``make_dataset_from_rlds(train=False)`` read.
VAL_SPLIT = "val"
#: The module name recorded in ``dataset_info.json``: the package, so that the files written do
#: not depend on which of its modules holds the writer.
TFDS_MODULE = "telecorder.converters.rlds"

# Standard RLDS step fields and the dtype RLDS tools expect them in.
RLDS_SCALARS = {"reward": "float32", "discount": "float32", "is_terminal": "bool"}
DERIVED = ("is_first", "is_last")
KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# Typed episode_metadata fields: kind -> the Python type a value is cast to, its default when
# missing or not castable.
META_KINDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "bool": (bool, False),
    "int64": (int, 0),
    "float64": (float, math.nan),
    "text": (str, ""),
}
_META_KIND_OF: dict[type, str] = {bool: "bool", int: "int64", float: "float64", str: "text"}
# Keys whose typed field is text whatever the first episode holds, so that every episode's task id
# (a string, "" for none) has one declared type across episodes, parts and shards.
META_TEXT_KEYS = frozenset({"task_id", "task_family"})
# episode_metadata fields every episode gets, whatever its metadata.
META_RESERVED = frozenset({"file_path", "episode_id", METADATA_JSON_KEY})

# What the sidecar says about the fields RLDS has no convention for.
SIDECAR_STEP_FIELDS = {
    f"steps/{TIMING_KEY}/timestamp": "seconds since the episode start",
    f"steps/{TIMING_KEY}/tick_lateness": "seconds the tick started late; NaN when not recorded",
    f"steps/{TIMING_KEY}/image_timestamp/<camera>": "capture time of the frame used at the step",
    f"steps/{TIMING_KEY}/frame_index/<camera>": "camera's own frame counter",
}
SIDECAR_EPISODE_FIELDS = {
    f"episode_metadata/{METADATA_JSON_KEY}": "the episode's metadata as JSON (authoritative)",
    "episode_metadata/<key>": "typed copies of the scalar metadata of the first episode, or of "
    "the keys the writer was given (missing or not castable: False / 0 / NaN / '')",
}
SIDECAR_CONVENTIONS = {
    "reward": "1 on the last step when metadata success is not False, else 0",
    "is_terminal": "True on the last step when metadata success is not False",
    "discount": "1 on every step",
    "language_instruction": "metadata language_instruction, else task, on every step",
    "floats": "floating-point features are stored as float32; 'info' keeps the recorded dtype",
}


def episode_metadata_fields(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The typed ``episode_metadata`` fields (key -> kind: ``bool``, ``int64``, ``float64`` or
    ``text``) that :class:`~.writer.RLDSWriter` derives from its first episode when that has ``metadata``.

    Only scalar bool / int / float / str values (NumPy scalars included) whose key is usable in
    RLDS become fields. A sharded conversion computes this once, from the first episode of the
    whole conversion, and gives it to every part as the writer option ``episode_metadata_fields``,
    so that all parts store the schema one writer would have.
    """
    fields: dict[str, str] = {}
    for key, value in sorted(metadata.items(), key=lambda kv: str(kv[0])):
        if not isinstance(key, str) or key in META_RESERVED or not KEY_RE.match(key):
            continue
        value = value.item() if isinstance(value, np.generic) else value
        kind = "text" if key in META_TEXT_KEYS and value is not None else _META_KIND_OF.get(type(value))
        if kind is not None:
            fields[key] = kind
    return fields


def checked_metadata_fields(value: Any, where: str) -> dict[str, str] | None:
    """The ``episode_metadata_fields`` option, validated; None when not given."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConversionError(f"{where}: episode_metadata_fields must map metadata keys to kinds, not {type(value).__name__}")
    fields: dict[str, str] = {}
    for key, kind in sorted(value.items(), key=lambda kv: str(kv[0])):
        if not isinstance(key, str) or not KEY_RE.match(key) or key in META_RESERVED:
            raise ConversionError(
                f"{where}: episode_metadata_fields key {key!r} cannot be an episode_metadata field "
                f"(reserved: {', '.join(sorted(META_RESERVED))}; keys match {KEY_RE.pattern})"
            )
        if kind not in META_KINDS:
            raise ConversionError(
                f"{where}: episode_metadata_fields[{key!r}] is {kind!r}; kinds are {', '.join(META_KINDS)}"
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


# --------------------------------------------------------------------------- reading: fields -> features


@dataclass(frozen=True)
class Leaf:
    """How one step field of the dataset becomes part of an Episode."""

    path: tuple[str, ...]
    kind: str  # "image" (camera), "numeric", "text" (metadata), "timing"
    name: str  # feature name, metadata key, or timing path
    dtype: str = ""
    encoded: bool = False  # image bytes (tfds Image) rather than a raw uint8 array
    channels: int = 3
    # A Tensor stored as raw bytes (tfds Encoding.BYTES/ZLIB); its feature decodes it.
    tensor: Any = field(default=None, compare=False)


@dataclass
class StepFields:
    """What the ``steps`` features of a dataset hold, as :func:`step_fields` maps them."""

    leaves: list[Leaf]
    specs: dict[str, FeatureSpec]
    # Images declared without a size (shape (None, None, 3)): feature name -> field path.
    needs_shape: dict[str, tuple[str, ...]]
    declared: list[str]  # cameras; those not selected get no leaf, so are never decoded
    skipped: list[str]  # fields our data model cannot represent, with why
    stored_encoding: str


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


def step_fields(step_features: Any, tfds: Any, wants_camera: Callable[[str], bool]) -> StepFields:
    """The leaves and feature specs of a dataset's ``steps`` features (a tfds FeaturesDict):
    RGB uint8 images become cameras (those ``wants_camera`` accepts), numeric tensors features,
    text metadata, ``steps/telecorder/*`` timing."""
    fdict, image_cls, text_cls = tfds.features.FeaturesDict, tfds.features.Image, tfds.features.Text
    tensor_cls = tfds.features.Tensor
    skipped: list[str] = []
    leaves: list[Leaf] = []
    specs: dict[str, FeatureSpec] = {}
    stored_encoding = "jpeg"
    needs_shape: dict[str, tuple[str, ...]] = {}
    declared: list[str] = []
    for path, feat in _walk(step_features, (), fdict):
        key = "/".join(path)
        doc = getattr(getattr(feat, "doc", None), "desc", "") or ""
        if path[0] in DERIVED and len(path) == 1:
            continue
        if path[0] == TIMING_KEY:
            raw = _bytes_tensor(feat) if isinstance(feat, tensor_cls) else None
            leaves.append(Leaf(path, "timing", "/".join(path[1:]), tensor=raw))
            continue
        if isinstance(feat, text_cls) or (
            isinstance(feat, tensor_cls) and np.dtype(feat.np_dtype).kind in "OSU"
        ):
            leaves.append(Leaf(path, "text", ".".join(path[1:] if path[0] == "observation" else path)))
            continue
        if isinstance(feat, image_cls):
            shape = tuple(feat.shape)
            dtype = np.dtype(feat.np_dtype).name
            if len(shape) == 3 and shape[2] == 3 and dtype == "uint8":
                cam = "_".join(path[1:]) if path[0] == "observation" else "_".join(path)
                name = IMAGE_PREFIX + cam
                declared.append(cam)
                if not wants_camera(cam):
                    continue
                leaves.append(Leaf(path, "image", name, "uint8", encoded=True))
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
            leaves.append(Leaf(path, "numeric", name, dtype, encoded=True, channels=shape[-1]))
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
                if not wants_camera(cam):
                    continue
                leaves.append(Leaf(path, "image", name, "uint8"))
                specs[name] = image_feature(cam, shape[0], shape[1], unit=doc)
                continue
            name = ".".join(path)
            leaves.append(Leaf(path, "numeric", name, dtype, tensor=_bytes_tensor(feat)))
            specs[name] = FeatureSpec(name, dtype, shape, unit=doc)
            continue
        skipped.append(f"{key} ({type(feat).__name__})")
    return StepFields(leaves, specs, needs_shape, declared, skipped, stored_encoding)


# --------------------------------------------------------------------------- writing: features -> fields


def rlds_keys(info: DatasetInfo, who: str) -> dict[str, tuple[str, ...]]:
    """Feature name -> path of its RLDS step field (``who`` names the writer in errors)."""
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
        bad = [p for p in path if not KEY_RE.match(p) or "/" in p]
        if bad:
            raise ConversionError(f"{who}: feature {spec.name!r} has a name part {bad[0]!r} RLDS cannot use as a key")
        insert(probe, path, spec.name, who)
        keys[spec.name] = path
    return keys


def step_features(F: Any, info: DatasetInfo, keys: Mapping[str, tuple[str, ...]], image_encoding: str,
                  who: str) -> Any:
    """The tfds FeaturesDict of one step (``F`` is ``tfds.features``): the features at ``keys``,
    the standard RLDS fields and the timing under ``steps/telecorder``."""
    tree: dict[str, Any] = {}
    for name, path in keys.items():
        spec = info.features[name]
        doc = spec.unit + (f" [{', '.join(spec.names)}]" if spec.names else "")
        if spec.is_image:
            feat = F.Image(shape=spec.shape, dtype=np.uint8, encoding_format=image_encoding, doc=doc or None)
        elif name in RLDS_SCALARS and spec.shape in ((), (1,)):
            feat = F.Scalar(dtype=np.dtype(RLDS_SCALARS[name]), doc=doc or None)
        else:
            feat = F.Tensor(shape=spec.shape, dtype=stored_dtype(spec.dtype), doc=doc or None)
        insert(tree, path, feat, who)
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


def metadata_features(F: Any, fields: Mapping[str, str]) -> Any:
    """The tfds FeaturesDict of ``episode_metadata``: the reserved fields, then the typed ``fields``."""
    features: dict[str, Any] = {
        "file_path": F.Text(doc="episode this was converted from"),
        "episode_id": F.Scalar(dtype=np.int32, doc="index of the episode in its source dataset"),
        METADATA_JSON_KEY: F.Text(doc="all of the episode's telecorder metadata, as JSON"),
    }
    for key, kind in fields.items():
        features[key] = F.Text() if kind == "text" else F.Scalar(dtype=np.dtype(kind))
    return F.FeaturesDict(features)


def stored_dtype(dtype: str) -> np.dtype:
    """The dtype a feature is stored in: floats as float32, the rest as they are."""
    dt = np.dtype(dtype)
    return np.dtype(np.float32) if dt.kind == "f" else dt


def insert(tree: dict[str, Any], path: Sequence[str], value: Any, what: str) -> None:
    """Put ``value`` at ``path`` in a nested dict, refusing two values for one field."""
    node = tree
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConversionError(f"{what}: {'/'.join(path)} would nest under the field {key!r}")
        node = child
    if path[-1] in node:
        raise ConversionError(f"{what}: two features map to the RLDS field {'/'.join(path)}")
    node[path[-1]] = value


def _features_dict(F: Any, tree: Mapping[str, Any]) -> Any:
    return F.FeaturesDict({k: _features_dict(F, v) if isinstance(v, Mapping) else v for k, v in tree.items()})
