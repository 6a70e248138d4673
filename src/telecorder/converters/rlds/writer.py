"""Writing telecorder Episodes as an RLDS dataset in the TFDS layout (:class:`RLDSWriter`).

The fields written and the sidecar's description of them are :mod:`.schema`'s; this module
checks and encodes each episode, streams it into TFDS's SequentialWriter (tensorflow-datasets
is imported when the writer is created) and writes the sidecar when the writer closes. The
parts of a sharded conversion are merged by :mod:`.merge`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import write_json_atomic
from ...datasets.episode_file import Episode
from ...datasets.features import DatasetInfo, FeatureSpec
from ...datasets.images import encode_image
from ...datasets.stats import DatasetStats
from ..base import SIDECAR, ConversionError, FormatWriter
from ..parts import PART_STATS, PARTS_DIR
from .paths import dataset_name_for
from .schema import (
    META_KINDS,
    METADATA_JSON_KEY,
    RLDS_SCALARS,
    SIDECAR_CONVENTIONS,
    SIDECAR_EPISODE_FIELDS,
    SIDECAR_FORMAT,
    SIDECAR_STEP_FIELDS,
    SIDECAR_VERSION,
    TFDS_MODULE,
    TIMING_KEY,
    VAL_SPLIT,
    checked_metadata_fields,
    episode_metadata_fields,
    import_tfds,
    metadata_features,
    rlds_keys,
    step_features,
    stored_dtype,
)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)  # paths, datetimes, ...: readable rather than lost


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
        self._given_meta_fields = checked_metadata_fields(opt("episode_metadata_fields"), f"{self.format_name} writer")
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
        self._keys = rlds_keys(self.out_info, f"{self.format_name} writer")
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

    def _metadata_fields(self, first: Episode | None) -> dict[str, str]:
        """The typed episode_metadata fields: the writer's option, else the first episode's."""
        if self._given_meta_fields is not None:
            fields = dict(self._given_meta_fields)
        else:
            fields = episode_metadata_fields(first.metadata if first is not None else {})
        if isinstance(self.info.extra.get("tasks"), dict):
            # Recorded from a task list: every episode gets a task_id ('' for free text), even when
            # the first one written (or a part's first) predates task ids. Decided from the info
            # every part shares, so parts still declare one schema.
            fields.setdefault("task_id", "text")
        return fields

    def _open(self, first: Episode | None, first_bytes: int) -> None:
        tfds = self._tfds
        self.data_dir.mkdir(parents=True, exist_ok=True)
        steps = step_features(tfds.features, self.out_info, self._keys, self.image_encoding, self.format_name)
        self._meta_fields = self._metadata_fields(first)
        features = tfds.features.FeaturesDict(
            {"steps": tfds.features.Dataset(steps), "episode_metadata": metadata_features(tfds.features, self._meta_fields)}
        )
        identity = tfds.core.DatasetIdentity(
            name=self.dataset_name,
            version=tfds.core.Version(self.version),
            data_dir=os.fspath(self.data_dir),
            module_name=TFDS_MODULE,
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
            elif name in RLDS_SCALARS and spec.shape in ((), (1,)):
                columns[path] = np.asarray(ep.data[name]).reshape(n).astype(RLDS_SCALARS[name])
            else:
                columns[path] = np.asarray(ep.data[name]).astype(stored_dtype(spec.dtype), copy=False)
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
            caster, default = META_KINDS[kind]
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
            "step_fields": dict(SIDECAR_STEP_FIELDS),
            "episode_fields": dict(SIDECAR_EPISODE_FIELDS),
            "conventions": dict(SIDECAR_CONVENTIONS),
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
