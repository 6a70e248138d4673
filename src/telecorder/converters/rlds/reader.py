"""Reading RLDS/TFDS dataset folders into telecorder Episodes (:class:`RLDSReader`).

How the fields map to an Episode is :mod:`.schema`'s; this module opens the dataset with
tensorflow-datasets (imported only when a dataset is opened), reads episodes in order or by
index, and decodes their frames with OpenCV.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...datasets.episode_file import Episode
from ...datasets.features import IMAGE_PREFIX, DatasetInfo, image_feature, read_json
from ...datasets.images import check_header, decode_image
from ...errors import DatasetError, missing_extra
from ..base import SIDECAR, ConversionError, FormatReader
from .meta_checks import check_dataset_info, check_features_json, check_sidecar
from .paths import check_inside, check_split_paths, find_tfds_dir
from .schema import DEFAULT_FPS, METADATA_JSON_KEY, SIDECAR_FORMAT, Leaf, import_tfds, step_fields

# Reading forward by this many episodes is cheaper than restarting the reader at the target.
_SKIP_AHEAD = 8


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
        self._leaves: list[Leaf] = []
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
        side_info = self._sidecar_info()
        found = step_fields(self._builder.info.features["steps"].feature, self._tfds, self.wants_camera)
        leaves, specs, needs_shape, skipped = found.leaves, found.specs, found.needs_shape, found.skipped
        stored_encoding = found.stored_encoding
        self.check_camera_selection(found.declared, self.data_dir / "features.json")

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
