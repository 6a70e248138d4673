"""Any dataset telecorder reads, opened read-only to look at it (``view``, ``export``, ``info``, ``stats``).

:func:`open_any` picks the reader as ``convert`` does (:func:`telecorder.converters.detect_format`,
or the format named) and hands out one episode at a time as a :class:`LoadedEpisode`: its numeric
series in memory, its frames decoded when asked for. Native datasets, LeRobot folders and RLDS
TFRecord shards are read lazily (a frame costs that frame; opening reads metadata only); ALOHA
and robomimic files, and RLDS in another file format, go through the converters' readers one
whole episode at a time. Nothing here writes into the dataset's folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.dataset import Dataset, is_dataset
from ..datasets.episode_file import EpisodeReader
from ..datasets.features import DatasetInfo, read_json
from ..errors import DatasetError

#: What ``--format`` accepts: the formats with a reader.
READABLE = ("native", "lerobot", "rlds", "aloha", "robomimic")

# What a foreign file can throw past its reader's own checks (pyarrow, PyAV, h5py, numpy): caught
# where an episode is loaded, so that a damaged episode is one line naming it, not a traceback.
READ_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, RuntimeError, EOFError, AttributeError)


@dataclass
class LoadedEpisode:
    """The numeric part of one episode in memory; frames (RGB, H x W x 3) come through ``frame``."""

    index: int
    timestamp: np.ndarray
    series: dict[str, np.ndarray]
    image_timestamp: dict[str, np.ndarray]
    tick_lateness: np.ndarray | None
    metadata: dict[str, Any]
    frame: Callable[[str, int], np.ndarray]
    missing: dict[str, str] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None

    def __len__(self) -> int:
        return len(self.timestamp)

    @property
    def instruction(self) -> str:
        md = self.metadata
        return str(md.get("language_instruction") or md.get("task") or "")


class AnySource(ABC):
    """A dataset folder (or file) of any readable format: episode list, schema, lazy episodes."""

    format: str = ""
    #: The format's own version (telecorder's format version, LeRobot's codebase_version, the
    #: TFDS dataset version); "" where the format has none.
    format_version: str = ""
    path: Path
    info: DatasetInfo
    indices: list[int]
    writable = False

    def record(self, index: int) -> dict[str, Any]:
        """The index record of a native episode ({} for other formats: they have no index)."""
        return {}

    @abstractmethod
    def load(self, index: int, numeric: Iterable[str] = ()) -> LoadedEpisode:
        """Episode ``index`` with the numeric features ``numeric`` (those the dataset has) read."""

    def numeric(self, index: int, names: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The numeric features ``names`` of episode ``index`` and its metadata, no frame decoded."""
        ep = self.load(index, names)
        try:
            return {n: ep.series[n] for n in names if n in ep.series}, ep.metadata
        finally:
            ep.close()

    def numeric_names(self, wanted: Iterable[str] | None = None) -> list[str]:
        """Numeric features of the dataset, all or those of ``wanted`` that it has, in its order."""
        names = [f.name for f in self.info.numeric_features]
        if wanted is None:
            return names
        keep = set(wanted)
        return [n for n in names if n in keep]

    def close(self) -> None:  # noqa: B027 - optional hook: not every source holds something open
        """Release what the source holds open (decoders, file maps)."""

    def _guard(self, index: int, load: Callable[[], LoadedEpisode]) -> LoadedEpisode:
        if index not in self._index_set:
            raise DatasetError(f"{self.path}: no episode {index} ({_count(self.indices)})")
        try:
            return load()
        except DatasetError:
            raise
        except READ_ERRORS as e:
            raise DatasetError(f"{self.path}: episode {index} cannot be read ({type(e).__name__}: "
                               f"{str(e)[:200]})") from e

    @property
    def _index_set(self) -> set[int]:
        cached = getattr(self, "_indices_cache", None)
        if cached is None or len(cached) != len(self.indices):
            cached = self._indices_cache = set(self.indices)
        return cached


def _count(indices: Sequence[int]) -> str:
    if not indices:
        return "it has no episodes"
    return f"episodes {indices[0]}..{indices[-1]}" if len(indices) > 12 else f"episodes: {list(indices)}"


def _hwc(chw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(chw).transpose(1, 2, 0))


def _text_metadata(instruction: str) -> dict[str, Any]:
    return {"task": instruction, "language_instruction": instruction} if instruction else {}


# --------------------------------------------------------------------------- native


class NativeSource(AnySource):
    """A telecorder dataset: the only format ``view`` may write to (marking episodes bad)."""

    format = "native"
    writable = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.dataset = Dataset.open(path)
        self.info = self.dataset.info
        self.indices = list(self.dataset.episode_indices)
        self.format_version = str(self.info.format_version)

    def record(self, index: int) -> dict[str, Any]:
        return next((r for r in self.dataset.records if int(r["episode_index"]) == index), {})

    def load(self, index: int, numeric: Iterable[str] = ()) -> LoadedEpisode:
        names = list(numeric)
        # Opened without the schema: a file that lacks one camera must still show the others.
        reader = EpisodeReader(self.dataset.episode_path(index), None)
        try:
            timestamp = reader.timestamps()
            n = len(timestamp)
            series = {}
            for name in names:
                try:
                    values = reader.numeric(name)
                except DatasetError:
                    continue
                if len(values) == n:
                    series[name] = values
            present = set(reader.cameras)
            image_ts, missing = {}, {}
            for cam in self.info.cameras:
                if cam not in present:
                    missing[cam] = "camera stream missing in this episode file"
                    continue
                try:
                    ts = reader.image_timestamps(cam)
                except KeyError:
                    continue
                if len(ts) == n:
                    image_ts[cam] = ts
            return LoadedEpisode(index=index, timestamp=timestamp, series=series, image_timestamp=image_ts,
                                 tick_lateness=reader.tick_lateness(), metadata=reader.attrs, frame=reader.frame,
                                 missing=missing, close=reader.close)
        except BaseException:
            reader.close()
            raise


# --------------------------------------------------------------------------- LeRobot


class LeRobotAny(AnySource):
    """A LeRobot v2.0/v2.1/v3.0 folder through the loaders' source: Parquet columns asked for, and
    a video frame decoded when shown (found by timestamp as LeRobot finds it)."""

    format = "lerobot"

    def __init__(self, path: Path) -> None:
        from ..loaders.lerobot import LeRobotSource

        self.path = Path(path)
        self.source = LeRobotSource(self.path)
        self.reader = self.source.reader
        self.format_version = self.reader.version
        self.info = self.source.info
        self.indices = [int(r["episode_index"]) for r in self.source.records]
        self.lengths = {int(r["episode_index"]): int(r["length"]) for r in self.source.records}

    def load(self, index: int, numeric: Iterable[str] = ()) -> LoadedEpisode:
        from ..loaders.lerobot import LeRobotEpisode

        names = self.numeric_names(numeric)

        def load() -> LoadedEpisode:
            columns, meta = self.reader.episode_columns(index, names)
            timestamp = np.asarray(columns.pop("timestamp"), np.float64)
            instruction = str(meta.get("language_instruction") or meta.get("task") or "")
            ep = LeRobotEpisode(self.source, index, columns, instruction, timestamp)
            missing = {cam: "no video file for this episode"
                       for cam in self.reader.missing_cameras([index])}
            return LoadedEpisode(index=index, timestamp=timestamp, series=columns, image_timestamp={},
                                 tick_lateness=None, metadata=dict(meta),
                                 frame=lambda cam, step: _hwc(ep.frame(cam, step, None)),
                                 missing=missing, close=ep.close)

        return self._guard(index, load)

    def close(self) -> None:
        self.source.close()


# --------------------------------------------------------------------------- RLDS


@dataclass(frozen=True)
class RLDSMeta:
    """What ``dataset_info.json`` says of an RLDS dataset, without TensorFlow."""

    data_dir: Path
    name: str
    version: str
    file_format: str
    splits: dict[str, int]  # split -> episodes, in reading order (train first, then by name)


def rlds_meta(path: Path) -> RLDSMeta:
    from ..converters.base import ConversionError
    from ..converters.rlds.meta_checks import check_dataset_info
    from ..converters.rlds.paths import find_tfds_dir

    data_dir = find_tfds_dir(Path(path))
    if data_dir is None:
        raise ConversionError(f"{path}: no dataset_info.json + features.json here or in a single version "
                              "subfolder; not an RLDS/TFDS dataset")
    doc = read_json(data_dir / "dataset_info.json", error=ConversionError)
    name, file_format, splits = check_dataset_info(doc, data_dir / "dataset_info.json")
    counts = {}
    for split, spec in sorted(splits.items(), key=lambda kv: (kv[0] != "train", kv[0])):
        try:
            counts[split] = int(spec.get("numExamples") or sum(int(n) for n in spec.get("shardLengths") or []))
        except (TypeError, ValueError, OverflowError):
            counts[split] = 0  # the readers name what is wrong with the split when it is read
    return RLDSMeta(data_dir, name, str(doc.get("version") or ""), file_format, counts)


class RLDSAny(AnySource):
    """An RLDS/TFDS folder of TFRecord shards, read without TensorFlow through the loaders' source
    (one per split; episodes numbered across splits as ``convert`` numbers them, ``train`` first):
    opening walks the records' skeletons for their step counts, a frame decodes one JPEG."""

    format = "rlds"

    def __init__(self, path: Path, meta: RLDSMeta) -> None:
        from ..loaders.rlds import RLDSSource

        self.path = Path(path)
        self.meta = meta
        self.format_version = meta.version
        self.parts = []
        try:
            for split in meta.splits:
                self.parts.append(RLDSSource(meta.data_dir, split=split))
        except BaseException:
            self.close()
            raise
        if not self.parts:
            raise DatasetError(f"{meta.data_dir / 'dataset_info.json'}: lists no split; nothing to read")
        self.order = [(part, local) for part in self.parts for local in range(len(part.records))]
        self.indices = list(range(len(self.order)))
        self.lengths = {i: int(part.records[local]["length"]) for i, (part, local) in enumerate(self.order)}
        first = self.parts[0].info
        extra = dict(first.extra)
        extra["rlds_split"] = ",".join(p.split for p in self.parts)
        self.info = replace(first, total_episodes=len(self.order), total_frames=sum(self.lengths.values()),
                            extra=extra)

    def load(self, index: int, numeric: Iterable[str] = ()) -> LoadedEpisode:
        names = self.numeric_names(numeric)

        def load() -> LoadedEpisode:
            part, local = self.order[index]
            ep = part.load(local, names)
            n = self.lengths[index]
            metadata = _text_metadata(ep.instruction)
            if ep.task_id:
                metadata["task_id"] = ep.task_id
            metadata["rlds_split"] = part.split
            return LoadedEpisode(index=index, timestamp=np.arange(n, dtype=np.float64) / self.info.fps,
                                 series=dict(ep.numeric), image_timestamp={}, tick_lateness=None,
                                 metadata=metadata, frame=lambda cam, step: _hwc(ep.frame(cam, step, None)),
                                 close=ep.close)

        return self._guard(index, load)

    def close(self) -> None:
        for part in self.parts:
            part.close()


# --------------------------------------------------------------------------- through a converter's reader


class ConvertedAny(AnySource):
    """A format read through its converter (ALOHA, robomimic, RLDS outside TFRecord): one whole
    episode per load; ``numeric`` opens a second reader with no camera selected, so that numbers
    alone never decode a frame."""

    def __init__(self, path: Path, fmt: str, version: str = "") -> None:
        from ..converters import open_reader

        self.path = Path(path)
        self.format = fmt
        self.format_version = version
        self.reader = open_reader(self.path, fmt)
        self.info = self.reader.info
        self.indices = list(self.reader.episode_indices())
        self._numeric_reader: Any = None

    def load(self, index: int, numeric: Iterable[str] = ()) -> LoadedEpisode:
        names = self.numeric_names(numeric)

        def load() -> LoadedEpisode:
            ep = self.reader.read_episode(index)
            missing = {c: "camera stream missing in this episode" for c in self.info.cameras if c not in ep.images}
            return LoadedEpisode(index=index, timestamp=np.asarray(ep.timestamp, np.float64),
                                 series={k: v for k, v in ep.data.items() if k in names},
                                 image_timestamp=dict(ep.image_timestamp), tick_lateness=ep.tick_lateness,
                                 metadata=dict(ep.metadata), frame=lambda cam, step: ep.images[cam][step],
                                 missing=missing)

        return self._guard(index, load)

    def numeric(self, index: int, names: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from ..converters import open_reader

        if self._numeric_reader is None:
            self._numeric_reader = open_reader(self.path, self.format, cameras=[])

        def load() -> LoadedEpisode:
            ep = self._numeric_reader.read_episode(index)
            return LoadedEpisode(index=index, timestamp=np.asarray(ep.timestamp, np.float64),
                                 series={k: v for k, v in ep.data.items() if k in names}, image_timestamp={},
                                 tick_lateness=None, metadata=dict(ep.metadata), frame=_no_frames)

        ep = self._guard(index, load)
        return ep.series, ep.metadata

    def close(self) -> None:
        for reader in (self.reader, self._numeric_reader):
            close = getattr(reader, "close", None)
            if callable(close):
                close()


def _no_frames(camera: str, step: int) -> np.ndarray:
    raise DatasetError(f"camera {camera!r}: opened for numbers only")


# --------------------------------------------------------------------------- opening


def detect(path: Path) -> str:
    """The format of ``path`` as ``convert`` detects it; a damaged native dataset is still native
    (opening it then says what is wrong with it)."""
    from ..converters import ConversionError, detect_format

    try:
        return detect_format(path)
    except ConversionError as e:
        # A damaged meta/info.json: native where the folder is laid out so (the native message says
        # how to mend it), else the converters' message, which names what is wrong with the file.
        if is_dataset(path) and (path / "episodes").is_dir():
            return "native"
        if "not a dataset telecorder recognises" not in str(e):
            raise DatasetError(str(e).replace("--from FORMAT", "--format FORMAT")) from e
        if is_dataset(path):
            return "native"
        raise DatasetError(f"{path}: not a telecorder dataset, nor one telecorder reads (LeRobot v2/v3, RLDS/TFDS, "
                           "ALOHA HDF5, robomimic); pass --format FORMAT if it is one of them") from e


def open_any(path: str | Path, fmt: str | None = None) -> AnySource:
    """The dataset at ``path`` read-only; ``fmt`` (one of :data:`READABLE`) skips detection."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if fmt is not None and fmt not in READABLE:
        raise DatasetError(f"unknown format {fmt!r}; readable formats: {', '.join(READABLE)}")
    fmt = fmt or detect(path)
    if fmt == "native":
        return NativeSource(path)
    if fmt == "lerobot":
        return LeRobotAny(path)
    if fmt == "rlds":
        meta = rlds_meta(path)
        if meta.file_format == "tfrecord":
            return RLDSAny(path, meta)
        return ConvertedAny(path, "rlds", meta.version)  # ArrayRecord shards: TFDS reads them
    return ConvertedAny(path, fmt)
