"""RLDS / Open X-Embodiment datasets (TFDS folders of TFRecord shards) as a loader source, without TensorFlow.

Construction reads ``dataset_info.json`` and ``features.json`` (plain JSON), finds every
record's place in the shards from their headers, and walks each record's protobuf skeleton
once for its step count; image bytes are never read then. A worker maps the shards
(``mmap``: the page cache is shared between workers) and, for a sample, parses that
episode's record lazily: numeric step fields are decoded once per episode, and only the
JPEGs of the steps a sample shows are decoded.

Feature names follow :class:`telecorder.converters.rlds.reader.RLDSReader`, so a loader on the RLDS
export of a dataset takes the same ``state_key`` and ``cameras`` as on the original:
``steps/action`` -> ``action``, ``steps/observation/<k>`` -> ``observation.<k>`` (numeric) or
camera ``<k>`` (image); our sidecar's names and units are restored where it is present.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..converters.base import SIDECAR, ConversionError
from ..converters.rlds import meta_checks as meta
from ..converters.rlds.paths import find_tfds_dir, shard_paths
from ..converters.rlds.schema import DEFAULT_FPS, METADATA_JSON_KEY, SIDECAR_FORMAT, TIMING_KEY
from ..datasets.features import IMAGE_PREFIX, DatasetInfo, FeatureSpec, image_feature, read_json
from ..errors import DatasetError
from .base import EpisodeSource, LoadedEpisode
from .frames import decode_chw
from .tasks import metadata_task_id
from .tfrecord import Feature, parse_example, record_spans

_STEPS = "steps/"
_DERIVED = ("is_first", "is_last")


@dataclass(frozen=True)
class _Leaf:
    """One step field of features.json: where it is in the record and what it becomes."""

    key: str  # the Example key, "steps/observation/state"
    kind: str  # "numeric", "image", "text"
    name: str  # feature name ("observation.state", "observation.images.front") or text key
    dtype: str = ""
    shape: tuple[int | None, ...] = ()
    encoding: str = "none"  # tensors: "none", "bytes" or "zlib"


def _walk(node: Mapping[str, Any], prefix: tuple[str, ...], where: str
          ) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any], str]]:
    """``(path, node, where)`` of each leaf below ``node``; every node on the way is a JSON object."""
    features = meta.child(node, "featuresDict", where).get("features")
    if isinstance(features, Mapping):
        for key, sub in features.items():
            here = meta.at(where, f"featuresDict/features/{key}")
            if not isinstance(sub, Mapping):
                raise ConversionError(f"{here} must be a JSON object, not {type(sub).__name__}; restore the file "
                                      "from the dataset's source")
            yield from _walk(sub, (*prefix, str(key)), here)
    else:
        yield prefix, node, where


def _step_leaves(features_json: Any, where: Path) -> list[_Leaf]:
    if not isinstance(features_json, Mapping):
        raise ConversionError(f"{where}: is a JSON {type(features_json).__name__}, not an object; restore the file "
                              "from the dataset's source")
    top = meta.child(meta.child(features_json, "featuresDict", f"{where}: "), "features", f"{where}: featuresDict")
    steps = meta.child(top, "steps", f"{where}: featuresDict/features")
    at_steps = f"{where}: featuresDict/features/steps"
    sequence = meta.child(steps, "sequence", at_steps)
    if not sequence.get("feature"):
        raise ConversionError(f"{where}: no 'steps' sequence feature; this TFDS dataset is not in RLDS layout")
    feature = meta.child(sequence, "feature", f"{at_steps}/sequence", required=True)
    leaves = []
    for path, node, at in _walk(feature, (), f"{at_steps}/sequence/feature"):
        key = _STEPS + "/".join(path)
        if not path or (len(path) == 1 and path[0] in _DERIVED) or path[0] == TIMING_KEY:
            continue
        if "image" in node:
            img = meta.child(node, "image", at, required=True)
            shape, dtype = meta.dims(img, meta.at(at, "image")), meta.dtype(img, meta.at(at, "image"), "uint8")
            if len(shape) == 3 and shape[2] == 3 and dtype == "uint8":
                cam = "_".join(path[1:]) if path[0] == "observation" else "_".join(path)
                leaves.append(_Leaf(key, "image", IMAGE_PREFIX + cam, dtype, shape))
            continue  # depth and masks: not camera frames, not loader inputs
        if "text" in node:
            leaves.append(_Leaf(key, "text", "/".join(path)))
            continue
        tensor = (meta.child(node, "tensor", at) or ({"dtype": "int64"} if "classLabel" in node else None))
        if tensor is None:
            continue
        dtype = meta.dtype(tensor, meta.at(at, "tensor"), "")
        if dtype in ("string", "str", "object"):
            leaves.append(_Leaf(key, "text", "/".join(path)))
            continue
        shape = meta.dims(tensor, meta.at(at, "tensor"))
        if any(d is None for d in shape):
            continue  # a per-step shape that varies has no place in a fixed-size sample
        encoding = meta.text(tensor, "encoding", meta.at(at, "tensor"), "none")
        leaves.append(_Leaf(key, "numeric", ".".join(path), dtype, shape, encoding))
    return leaves


def _numeric(feature: Feature, leaf: _Leaf, n: int, where: str) -> np.ndarray:
    if leaf.encoding in ("bytes", "zlib"):
        blobs = feature.values()
        raw = b"".join(zlib.decompress(b) if leaf.encoding == "zlib" else bytes(b) for b in blobs)
        values = np.frombuffer(raw, dtype=np.dtype(leaf.dtype).newbyteorder("<"))
    else:
        values = feature.values()
    per = math.prod(leaf.shape)
    if values.size != n * per:
        raise ConversionError(f"{where}: {leaf.key} holds {values.size} values for {n} steps of shape "
                              f"{list(leaf.shape)}; features.json does not describe this record")
    return values.astype(leaf.dtype if leaf.dtype != "bool" else np.bool_, copy=False).reshape(n, *leaf.shape)


class _Shards:
    """Read-only maps of a split's shard files, one set per process."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)
        self._maps: dict[int, tuple[Any, mmap.mmap]] = {}

    def view(self, shard: int, offset: int, length: int) -> memoryview:
        if shard not in self._maps:
            fh = open(self.files[shard], "rb")  # noqa: SIM115 - kept open with its map until close()
            try:
                self._maps[shard] = (fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
            except BaseException:
                fh.close()
                raise
        return memoryview(self._maps[shard][1])[offset:offset + length]

    def close(self) -> None:
        for fh, mm in self._maps.values():
            try:
                mm.close()
            except BufferError:  # a frame still refers to the map; it goes with the last reference
                pass
            fh.close()
        self._maps.clear()


class RLDSEpisode(LoadedEpisode):
    def __init__(self, source: RLDSSource, index: int, features: dict[str, Feature], numeric: dict[str, np.ndarray],
                 instruction: str, where: str) -> None:
        self.source = source
        self.index = index
        self.numeric = numeric
        self.instruction = instruction
        self.where = where
        self._features = features
        self._spans: dict[str, list[tuple[int, int]]] = {}

    def frame(self, camera: str, step: int, size: tuple[int, int] | None, out: np.ndarray | None = None
              ) -> np.ndarray:
        leaf = self.source.camera_leaf(camera)
        feature = self._features.get(leaf.key)
        if feature is None:
            raise ConversionError(f"{self.where}: episode {self.index} has no {leaf.key}")
        spans = self._spans.get(camera)
        if spans is None:
            spans = self._spans[camera] = feature.spans()
        if not 0 <= step < len(spans):
            raise ConversionError(f"{self.where}: {leaf.key} of episode {self.index} has {len(spans)} frames, "
                                  f"step {step} asked for")
        start, n = spans[step]
        data = np.frombuffer(feature.buf, np.uint8, count=n, offset=start)
        hw = self.source.info.features[leaf.name].shape[:2]
        return decode_chw(data, size, stored_hw=(int(hw[0]), int(hw[1])), out=out,
                          where=f"{self.where} episode {self.index} {leaf.key} step {step}")

    def close(self) -> None:
        self._features = {}
        self._spans.clear()


class RLDSSource(EpisodeSource):
    format_name = "rlds"

    def __init__(self, path: str | Path, split: str = "train", fps: float | None = None) -> None:
        self.root = Path(path)
        data_dir = find_tfds_dir(self.root)
        if data_dir is None:
            raise ConversionError(f"{self.root}: no dataset_info.json + features.json here or in a single version "
                                  "subfolder; not an RLDS/TFDS dataset")
        self.data_dir = data_dir
        name, fmt, splits = meta.check_dataset_info(read_json(data_dir / "dataset_info.json", error=ConversionError),
                                                    data_dir / "dataset_info.json")
        if fmt != "tfrecord":
            raise ConversionError(f"{data_dir / 'dataset_info.json'}: file format {fmt!r}; the loaders read "
                                  "TFRecord shards (convert it with 'telecorder convert' first)")
        if split not in splits:
            raise ConversionError(f"{data_dir / 'dataset_info.json'}: no split {split!r} (it has "
                                  f"{', '.join(sorted(map(str, splits))) or 'none'}); pass split=...")
        self.split = split
        self._shards = _Shards(self._shard_files(name, splits[split]))
        features_json = data_dir / "features.json"
        self._leaves = _step_leaves(meta.check_features_json(read_json(features_json, error=ConversionError),
                                                             features_json), features_json)
        self._by_key = {leaf.key: leaf for leaf in self._leaves}
        self._spans = [(k, off, n) for k, f in enumerate(self._shards.files) for off, n in record_spans(f)]
        self.records = [{"episode_index": i, "length": self._length(i)} for i in range(len(self._spans))]
        self._check_shard_lengths(splits[split])
        self.info = self._build_info(name, fps)
        self._maps: dict[int, _Shards] = {}

    # -- layout ------------------------------------------------------------------------

    def _shard_files(self, name: str, split: Mapping[str, Any]) -> list[Path]:
        # The template and the names it is filled with come from the file: kept inside the dataset.
        files = shard_paths(self.data_dir, name, self.split, split, error=ConversionError)
        for k, path in enumerate(files):
            try:
                found = path.is_file()
            except OSError as e:  # a name too long for the file system
                raise ConversionError(f"{path}: shard {k} of split {self.split!r} cannot be opened ({e.strerror or e}); "
                                      "dataset_info.json names it with its filepathTemplate") from e
            if not found:
                raise ConversionError(f"{path}: shard {k} of split {self.split!r} is missing "
                                      f"(dataset_info.json lists {len(files)})")
        return files

    def _where(self, index: int) -> str:
        return str(self._shards.files[self._spans[index][0]])

    def _parse(self, shards: _Shards, index: int, wanted: Any) -> dict[str, Feature]:
        shard, offset, n = self._spans[index]
        return parse_example(shards.view(shard, offset, n), f"{self._where(index)} record {index}", wanted)

    def _length(self, index: int) -> int:
        probe = next((leaf for leaf in self._leaves if leaf.kind == "numeric"), None)
        keys = {_STEPS + "is_first", *(() if probe is None else (probe.key,))}
        feats = self._parse(self._shards, index, keys.__contains__)
        if _STEPS + "is_first" in feats:
            return int(feats[_STEPS + "is_first"].values().size)
        if probe is not None and probe.key in feats:
            return int(_numeric_size(feats[probe.key], probe) // max(1, math.prod(probe.shape)))
        raise ConversionError(f"{self._where(index)}: record {index} has no steps/is_first to count its steps")

    def _check_shard_lengths(self, split: Mapping[str, Any]) -> None:
        """Each shard holds the records ``dataset_info.json`` says (an emptied or cut shard does not)."""
        declared = meta.shard_lengths(split, f"{self.data_dir / 'dataset_info.json'}: split {self.split!r}")
        if declared is None or len(declared) != len(self._shards.files):
            return
        found = [0] * len(declared)
        for k, _, _ in self._spans:
            found[k] += 1
        for k, (want, got) in enumerate(zip(declared, found, strict=True)):
            if want != got:
                raise ConversionError(
                    f"{self._shards.files[k]}: holds {got} record(s) but {self.data_dir / 'dataset_info.json'} "
                    f"lists {want} for shard {k} of split {self.split!r}; the shard is truncated or replaced "
                    "(re-download or regenerate it)")

    def _build_info(self, name: str, fps: float | None) -> DatasetInfo:
        side_path = self.data_dir / SIDECAR
        side = read_json(side_path, error=ConversionError) if side_path.is_file() else None
        side_info = None
        if isinstance(side, dict) and side.get("format") == SIDECAR_FORMAT and "info" in side:
            try:
                side_info = DatasetInfo.from_dict(side["info"], source=str(side_path))
            except DatasetError as e:
                raise ConversionError(f"{e} (delete it to read the dataset without telecorder's metadata)") from e
        specs: dict[str, FeatureSpec] = {}
        for leaf in self._leaves:
            if leaf.kind == "numeric":
                specs[leaf.name] = FeatureSpec(leaf.name, leaf.dtype, tuple(int(d) for d in leaf.shape))
            elif leaf.kind == "image":
                h, w = leaf.shape[:2]
                if h is None or w is None:
                    h, w = self._measure(leaf)
                specs[leaf.name] = image_feature(leaf.name.removeprefix(IMAGE_PREFIX), int(h), int(w))
        if side_info is not None:
            # Our names, units and dtypes where the stored field still matches them.
            specs = {n: (side_info.features[n] if side_info.features[n].shape == s.shape
                         and side_info.features[n].kind == s.kind else s)
                     for n, s in specs.items() if n in side_info.features}
        extra = dict(side_info.extra) if side_info is not None else {}
        extra.update(source_format="rlds", rlds_dataset=name, rlds_split=self.split)
        if fps is None:
            fps = side_info.fps if side_info is not None else DEFAULT_FPS
        robot = side_info.robot_type if side_info is not None else (name or "unknown")
        return DatasetInfo.create(list(specs.values()), fps=float(fps), robot_type=robot,
                                  total_episodes=len(self.records),
                                  total_frames=sum(r["length"] for r in self.records), extra=extra)

    def _measure(self, leaf: _Leaf) -> tuple[int, int]:
        """Size of a camera that features.json leaves open, from its first stored frame."""
        for index in range(len(self._spans)):
            feats = self._parse(self._shards, index, {leaf.key}.__contains__)
            spans = feats[leaf.key].spans() if leaf.key in feats else []
            if spans:
                start, n = spans[0]
                chw = decode_chw(np.frombuffer(feats[leaf.key].buf, np.uint8, count=n, offset=start), None,
                                 where=f"{self._where(index)} record {index} {leaf.key}")
                return int(chw.shape[1]), int(chw.shape[2])
        raise ConversionError(f"{self.data_dir / 'features.json'}: {leaf.key} has no size and no frame to measure")

    def camera_leaf(self, camera: str) -> _Leaf:
        name = IMAGE_PREFIX + camera
        leaf = next((x for x in self._leaves if x.kind == "image" and x.name == name), None)
        if leaf is None:
            raise ConversionError(f"{self.data_dir}: no camera {camera!r} (has {self.info.cameras})")
        return leaf

    # -- episodes ----------------------------------------------------------------------

    def shards(self) -> _Shards:
        """This process's shard maps (a forked worker maps the files itself)."""
        pid = os.getpid()
        if pid not in self._maps:
            self._maps[pid] = _Shards(self._shards.files)
        return self._maps[pid]

    def episode_location(self, episode_index: int) -> str:
        return self._where(episode_index) if 0 <= episode_index < len(self._spans) else str(self.root)

    def own_stats(self) -> dict[str, Any]:
        return {}  # Octo's dataset_statistics.json covers action and proprio only: computed instead

    def load(self, episode_index: int, numeric: Sequence[str]) -> RLDSEpisode:
        if not 0 <= episode_index < len(self._spans):
            raise ConversionError(f"{self.data_dir}: no episode {episode_index} in split {self.split!r}")
        leaves = {leaf.name: leaf for leaf in self._leaves if leaf.kind == "numeric"}
        unknown = [n for n in numeric if n not in leaves]
        if unknown:
            raise ConversionError(f"{self.data_dir / 'features.json'}: no numeric step field for {unknown}")
        feats = self._parse(self.shards(), episode_index, None)
        where = self._where(episode_index)
        n = int(self.records[episode_index]["length"])
        arrays = {}
        for name in numeric:
            leaf = leaves[name]
            if leaf.key not in feats:
                raise ConversionError(f"{where}: record {episode_index} has no {leaf.key}")
            arrays[name] = _numeric(feats[leaf.key], leaf, n, where)
        episode = RLDSEpisode(self, episode_index, feats, arrays, _instruction(feats), where)
        episode.task_id = _task_id(feats)
        return episode

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        state["_shards"] = _Shards(self._shards.files)
        return state

    def close(self) -> None:
        maps = self._maps.pop(os.getpid(), None)
        if maps is not None:
            maps.close()
        self._shards.close()


def _numeric_size(feature: Feature, leaf: _Leaf) -> int:
    if leaf.encoding in ("bytes", "zlib"):
        return len(feature.spans()) * math.prod(leaf.shape)
    return int(feature.values().size)


def _task_id(feats: Mapping[str, Feature]) -> str:
    """The episode's task id: the typed ``episode_metadata/task_id``, else our metadata JSON's; "" if none."""
    f = feats.get("episode_metadata/task_id")
    if f is not None and f.kind == "bytes" and len(f.values()):
        return bytes(f.values()[0]).decode("utf-8", errors="replace")
    return metadata_task_id(_metadata_json(feats))


def _instruction(feats: Mapping[str, Feature]) -> str:
    """The episode's language instruction: the first step's, else the episode metadata's."""
    for key in (_STEPS + "language_instruction", "episode_metadata/language_instruction",
                "episode_metadata/task"):
        f = feats.get(key)
        if f is not None and f.kind == "bytes":
            values = f.values()
            if len(values) and values[0]:
                return bytes(values[0]).decode("utf-8", errors="replace")
    meta = _metadata_json(feats)
    return str(meta.get("language_instruction") or meta.get("task") or "")


def _metadata_json(feats: Mapping[str, Feature]) -> dict[str, Any]:
    """Our metadata JSON of the episode (``episode_metadata/<METADATA_JSON_KEY>``); {} if absent or unreadable."""
    f = feats.get(f"episode_metadata/{METADATA_JSON_KEY}")
    if f is None or f.kind != "bytes" or not len(f.values()):
        return {}
    try:
        meta = json.loads(bytes(f.values()[0]).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}
