"""One episode = one HDF5 file, laid out so that ``h5ls -r`` reads like the data model.

::

    /timestamp                              (T,)  float64  seconds since episode start
    /observation/state                      (T, D)
    /action                                 (T, A)
    /observation/images/<camera>            (T,)  vlen uint8, JPEG or PNG bytes
    /observation/images_timestamp/<camera>  (T,)  float64  capture time of the frame used at each step
    /observation/images_frame_index/<camera>(T,)  int64    camera's own frame counter (repeats/skips)
    /timing/tick_lateness                   (T,)  float32  seconds the tick started after its schedule
    /timing/loop_cpu                        (T,)  float32  CPU seconds of the control thread's work per tick
    /timing/loop_busy                       (T,)  float32  wall seconds of that work (NaN: not measured)
    attributes on / : task, language_instruction, success, robot_type, device, fps, start_time, ...

Files are written incrementally under a hidden ``.partial.h5`` name and renamed only when
complete and fsynced, so a reader never sees a half-written episode under its final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..atomic import fsync_dir, fsync_path
from ..errors import DatasetError
from .episode_integrity import check_dataset_types, check_extents, check_frame_references
from .features import FORMAT_VERSION, IMAGE_PREFIX, DatasetInfo, check_fps
from .hdf5_links import refuse_other_files
from .images import decode_image

PARTIAL_SUFFIX = ".partial.h5"
IMAGES_GROUP = "observation/images"
IMAGE_TS_GROUP = "observation/images_timestamp"
FRAME_INDEX_GROUP = "observation/images_frame_index"
LATENESS_PATH = "timing/tick_lateness"
# Optional (files written before they existed lack them): the loop's own work per tick, so that
# doctor can tell a tick late from its own work from one the OS woke late (see tick_causes).
LOOP_CPU_PATH = "timing/loop_cpu"
LOOP_BUSY_PATH = "timing/loop_busy"
LOOP_PATHS = (LOOP_CPU_PATH, LOOP_BUSY_PATH)
_BYTES = h5py.vlen_dtype(np.dtype("uint8"))


EPISODES_DIR = "episodes"
JSON_ATTR_PREFIX = "json:"


def episode_filename(index: int) -> str:
    """The one place an episode's file name comes from: its number."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"episode numbers are non-negative integers, not {index!r}")
    return f"episode_{int(index):06d}.h5"


def episode_relpath(index: int) -> str:
    """Where episode ``index`` lives, relative to the dataset folder."""
    return f"{EPISODES_DIR}/{episode_filename(index)}"


def episode_number(path: Path, attrs: Mapping[str, Any]) -> int:
    """An episode file's number: the one in its name (a copied file keeps its old attribute),
    else its ``episode_index`` attribute where that is a number, else -1."""
    m = re.fullmatch(r"episode_(\d{6,})\.h5", Path(path).name)
    if m:
        return int(m.group(1))
    value = attrs.get("episode_index")
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else -1


def partial_path_for(final_path: Path) -> Path:
    return final_path.with_name("." + final_path.stem + PARTIAL_SUFFIX)


@dataclass
class StepBatch:
    """Consecutive steps ready to append: every array has the same first dimension."""

    timestamp: np.ndarray
    numeric: dict[str, np.ndarray]
    images: dict[str, list[np.ndarray]]
    image_timestamp: dict[str, np.ndarray]
    frame_index: dict[str, np.ndarray]
    tick_lateness: np.ndarray
    # None: not measured (a converted episode); stored as NaN.
    loop_cpu: np.ndarray | None = None
    loop_busy: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.timestamp)


class EpisodeFileWriter:
    """Appends steps to a hidden partial file; ``finish`` makes it appear complete, atomically."""

    def __init__(self, final_path: Path, info: DatasetInfo, attrs: Mapping[str, Any]) -> None:
        self.final_path = Path(final_path)
        self.path = partial_path_for(self.final_path)
        self.info = info
        self.length = 0
        self._numeric_rows: dict[str, list[np.ndarray]] = {f.name: [] for f in info.numeric_features}
        self._datasets: dict[str, h5py.Dataset] = {}
        if self.final_path.exists():
            raise DatasetError(f"{self.final_path}: episode file exists already; refusing to overwrite it")
        try:
            # "x": an unfinished file of an earlier session is never truncated, whatever the numbering says.
            self._file = h5py.File(self.path, "x")
        except FileExistsError as e:
            raise DatasetError(
                f"{self.path}: an unfinished episode file of an earlier session is in the way; "
                "run 'telecorder doctor --repair' to salvage it (it is never overwritten)"
            ) from e
        try:
            self._create_layout(attrs)
        except BaseException:
            self.abort()
            raise

    def _create_layout(self, attrs: Mapping[str, Any]) -> None:
        f = self._file
        f.create_dataset("timestamp", shape=(0,), maxshape=(None,), dtype="float64", chunks=(1024,))
        for spec in self.info.numeric_features:
            f.create_dataset(
                spec.h5_path,
                shape=(0, *spec.shape),
                maxshape=(None, *spec.shape),
                dtype=spec.dtype,
                chunks=(256, *spec.shape),
            )
            if spec.names:
                f[spec.h5_path].attrs["names"] = json.dumps(list(spec.names))
            if spec.unit:
                f[spec.h5_path].attrs["unit"] = spec.unit
        for cam in self.info.cameras:
            f.create_dataset(f"{IMAGES_GROUP}/{cam}", shape=(0,), maxshape=(None,), dtype=_BYTES, chunks=(16,))
            f[f"{IMAGES_GROUP}/{cam}"].attrs["encoding"] = self.info.image_encoding
            f.create_dataset(f"{IMAGE_TS_GROUP}/{cam}", shape=(0,), maxshape=(None,), dtype="float64", chunks=(1024,))
            f.create_dataset(f"{FRAME_INDEX_GROUP}/{cam}", shape=(0,), maxshape=(None,), dtype="int64", chunks=(1024,))
        for path in (LATENESS_PATH, *LOOP_PATHS):
            f.create_dataset(path, shape=(0,), maxshape=(None,), dtype="float32", chunks=(1024,))
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["fps"] = self.info.fps
        f.attrs["robot_type"] = self.info.robot_type
        f.attrs["image_encoding"] = self.info.image_encoding
        set_attrs(f, attrs)
        f.flush()

    def append(self, batch: StepBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        start, end = self.length, self.length + n

        def put(path: str, values: Any) -> None:
            ds = self._dataset(path)
            ds.resize(end, axis=0)
            ds[start:end] = values

        put("timestamp", batch.timestamp)
        for name, rows in batch.numeric.items():
            spec = self.info.features[name]
            rows = np.asarray(rows, dtype=spec.dtype)
            put(spec.h5_path, rows)
            self._numeric_rows[name].append(rows)
        for cam, frames in batch.images.items():
            path = f"{IMAGES_GROUP}/{cam}"
            if n > 1 and len({len(b) for b in frames}) > 1:
                # One write per batch: per-frame assignment into a vlen dataset costs about twice as much.
                blobs = np.empty(n, dtype=object)
                for i, buf in enumerate(frames):
                    blobs[i] = buf
                put(path, blobs)
            else:
                # h5py reads an object array of equal-length buffers as a 2-D array and refuses it.
                ds = self._dataset(path)
                ds.resize(end, axis=0)
                for i, buf in enumerate(frames):
                    ds[start + i] = buf
            put(f"{IMAGE_TS_GROUP}/{cam}", batch.image_timestamp[cam])
            put(f"{FRAME_INDEX_GROUP}/{cam}", batch.frame_index[cam])
        put(LATENESS_PATH, batch.tick_lateness)
        for path, values in ((LOOP_CPU_PATH, batch.loop_cpu), (LOOP_BUSY_PATH, batch.loop_busy)):
            put(path, np.full(n, np.nan, np.float32) if values is None else values)
        self.length = end

    def _dataset(self, path: str) -> h5py.Dataset:
        # Held until the file closes: a dataset handle released after a failed write would flush
        # its chunk cache on release, fail again, and leave HDF5 in a state that crashes later.
        ds = self._datasets.get(path)
        if ds is None:
            ds = self._datasets[path] = self._file[path]
        return ds

    def flush(self) -> None:
        """Push everything appended so far to disk (fsync), so that a crash or power loss leaves a
        file whose flushed prefix ``doctor --repair`` can salvage."""
        self._file.flush()
        os.fsync(self._file.id.get_vfd_handle())

    def numeric_arrays(self) -> dict[str, np.ndarray]:
        """Everything numeric appended so far, for statistics (images are not kept in memory)."""
        out = {}
        for spec in self.info.numeric_features:
            rows = self._numeric_rows[spec.name]
            out[spec.name] = np.concatenate(rows) if rows else np.zeros((0, *spec.shape), spec.dtype)
        return out

    def derive_action_from_next_state(self, state: str = "observation.state", action: str = "action") -> None:
        """Kinesthetic teaching: nobody commands the arm, so action[t] is the state measured at t+1.

        The last step, which has no successor, repeats its own state (the arm holds still).
        """
        states = self.numeric_arrays()[state]
        if len(states) == 0:
            return
        spec = self.info.features[action]
        derived = np.concatenate([states[1:], states[-1:]]).astype(spec.dtype)
        self._file[spec.h5_path][:] = derived
        self._numeric_rows[action] = [derived]

    def finish(self, attrs: Mapping[str, Any]) -> Path:
        set_attrs(self._file, attrs)
        self._file.attrs["num_steps"] = self.length
        # Flush first: if the disk is full, this fails and abort() can still close the file
        # safely; a close that fails to write would not leave it in a state to close again.
        self._file.flush()
        self._file.close()
        self._datasets.clear()
        fsync_path(self.path)
        if self.final_path.exists():  # only a second writer could have made it; never replace it
            raise DatasetError(f"{self.final_path}: appeared while this episode was recorded; "
                               f"the new episode stays in {self.path.name}")
        os.replace(self.path, self.final_path)
        fsync_dir(self.final_path.parent)
        return self.final_path

    def abort(self) -> None:
        """Drop the partial file (a discarded or failed episode)."""
        _close_discarding(self._file)
        self._datasets.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _close_discarding(f: h5py.File) -> None:
    """Close an HDF5 file whose content is being thrown away.

    Closing flushes HDF5's caches. On a full disk that write fails, and a failed close
    leaves the HDF5 library in a state that crashes the process later (h5py issues 914
    and 2160: the file's id stays valid after its memory is freed). So the caches are
    flushed first: in the usual case (a discarded episode, Ctrl-C) that succeeds and the
    close has nothing left to write. Only when it fails is the descriptor pointed at an
    in-memory copy of the file, so that the close succeeds without touching the disk.
    A copy, not an empty stand-in: HDF5 reads back metadata it evicted from its cache
    while closing, and garbage there crashes it. Unlinking the partial file then frees
    its disk space at once.
    """
    if not f.id.valid:
        return
    try:
        f.flush()
    except Exception:
        pass
    else:
        with contextlib.suppress(Exception):
            f.close()
        return
    try:
        fd = f.id.get_vfd_handle()
        scratch = os.memfd_create("telecorder-discarded-episode")
    except (AttributeError, OSError, ValueError, RuntimeError):
        scratch = None
    if scratch is not None:
        try:
            size, offset = os.fstat(fd).st_size, 0
            while offset < size:
                sent = os.sendfile(scratch, fd, offset, size - offset)
                if sent <= 0:
                    break
                offset += sent
            os.dup2(scratch, fd)
        except OSError:
            pass  # no memory for the copy either: close as it is
        finally:
            os.close(scratch)
    with contextlib.suppress(Exception):
        f.close()


def set_attrs(node: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    """HDF5 attributes take scalars and strings; anything else is stored as JSON text."""
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, (bool, np.bool_)):
            node.attrs[key] = bool(value)
        elif isinstance(value, str) and value.startswith(JSON_ATTR_PREFIX):
            # Text that looks like an encoded value is encoded too, so it reads back as written.
            node.attrs[key] = JSON_ATTR_PREFIX + json.dumps(value)
        elif isinstance(value, (float, str, np.integer, np.floating)) or (isinstance(value, int) and -2**63 <= value < 2**63):
            node.attrs[key] = value  # an int beyond int64 (metadata of a foreign source) goes to JSON below
        else:
            node.attrs[key] = JSON_ATTR_PREFIX + json.dumps(value)


def get_attrs(node: h5py.HLObject, where: str | Path | None = None) -> dict[str, Any]:
    """The attributes of ``node`` as Python values; a damaged one is a DatasetError naming
    ``where`` (default: the node's file) and the attribute."""
    where = where if where is not None else node.file.filename
    out: dict[str, Any] = {}
    try:
        items = list(node.attrs.items())
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{where}: the attributes cannot be read ({e}); the file is damaged") from e
    for key, value in items:
        try:
            if isinstance(value, bytes):
                value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DatasetError(f"{where}: attribute {key!r} is not valid UTF-8 text ({e}); the file is "
                               "damaged or was altered by another tool") from e
        if isinstance(value, str) and value.startswith(JSON_ATTR_PREFIX):
            try:
                value = json.loads(value[len(JSON_ATTR_PREFIX):])
            except (json.JSONDecodeError, RecursionError) as e:
                raise DatasetError(f"{where}: attribute {key!r} is not valid JSON ({e}); the file is "
                                   "damaged or was altered by another tool") from e
        else:
            value = _plain(value)
        out[key] = value
    return out


def _plain(value: Any) -> Any:
    """An attribute value as plain Python that JSON can hold: an array becomes a list (another tool
    may store one where telecorder writes text), bytes text, anything else exotic (complex numbers,
    references, compound records) its text form."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufSUO":
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value)


@dataclass
class Episode:
    """An episode in memory: numeric arrays, per-camera timing, metadata, and (optionally) frames."""

    index: int
    timestamp: np.ndarray
    data: dict[str, np.ndarray]
    image_timestamp: dict[str, np.ndarray] = field(default_factory=dict)
    frame_index: dict[str, np.ndarray] = field(default_factory=dict)
    tick_lateness: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    images: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.timestamp)


class EpisodeReader:
    """Read access to one episode file; frames are decoded only when asked for."""

    def __init__(self, path: Path, info: DatasetInfo | None = None) -> None:
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except FileNotFoundError as e:
            raise DatasetError(f"{self.path}: episode file is missing") from e
        except OSError as e:
            raise DatasetError(
                f"{self.path}: cannot be read as HDF5 (truncated or corrupt: {e}); "
                "run 'telecorder doctor DATASET' to find damaged episodes"
            ) from e
        self.info = info
        try:
            self._check_layout()
        except (OSError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            # h5py's errors on a damaged header or link table: one line naming the file.
            self._file.close()
            raise DatasetError(f"{self.path}: the episode file is damaged ({e}); "
                               "run 'telecorder doctor DATASET' to find damaged episodes") from e
        except BaseException:
            self._file.close()
            raise

    def _check_layout(self) -> None:
        f = self._file
        refuse_other_files(f, self.path)  # HDF5 links into other files are paths the file names (see hdf5_links)
        if "timestamp" not in f:
            raise DatasetError(f"{self.path}: no /timestamp dataset; not a telecorder episode file")
        if not isinstance(f["timestamp"], h5py.Dataset) or f["timestamp"].ndim != 1:
            raise DatasetError(f"{self.path}: /timestamp is not a list of one time per step (a damaged or "
                               "altered file); run 'telecorder doctor --repair' to set the episode aside")
        n = f["timestamp"].shape[0]
        expected = ["timestamp"]
        if self.info is not None:
            expected += [s.h5_path for s in self.info.numeric_features]
            for cam in self.info.cameras:
                expected += [f"{IMAGES_GROUP}/{cam}", f"{IMAGE_TS_GROUP}/{cam}", f"{FRAME_INDEX_GROUP}/{cam}"]
        for path in expected:
            if path not in f or not isinstance(f[path], h5py.Dataset) or f[path].ndim == 0:
                raise DatasetError(f"{self.path}: dataset /{path} is missing")
            if f[path].shape[0] != n:
                raise DatasetError(f"{self.path}: /{path} has {f[path].shape[0]} rows, /timestamp has {n}")
        get_attrs(f, self.path)  # a damaged attribute makes the episode damaged, named here, not at first use
        # Before anything is read: each dataset's type and shape against info.json and the fixed layout,
        # sizes the header claims against what the file holds.
        self._check_types(n)
        check_extents(self.path, f)
        for cam in self.cameras:
            check_frame_references(self.path, f, f"{IMAGES_GROUP}/{cam}", n)

    def _check_types(self, n: int) -> None:
        f = self._file
        if self.info is not None:
            numeric = {s.h5_path: (s.dtype, s.shape) for s in self.info.numeric_features}
        else:
            numeric = {p: ("float64", tuple(f[p].shape[1:])) for p in self.numeric_paths}
        cameras = sorted(set(self.cameras) | set(self.info.cameras if self.info is not None else []))
        bookkeeping = ["timestamp", *(f"{g}/{c}" for c in cameras for g in (IMAGE_TS_GROUP, FRAME_INDEX_GROUP))]
        for path in bookkeeping[1:] + [f"{IMAGES_GROUP}/{c}" for c in cameras]:
            if path not in f:
                raise DatasetError(f"{self.path}: dataset /{path} is missing")
        if LATENESS_PATH in f:
            bookkeeping.append(LATENESS_PATH)
        loop = [p for p in LOOP_PATHS if p in f]
        check_dataset_types(self.path, f, n, numeric, cameras, bookkeeping + loop)
        for path in loop:
            # Seconds: an integer or boolean array there is not what the recorder writes.
            if f[path].dtype.kind != "f":
                raise DatasetError(f"{self.path}: /{path} holds {f[path].dtype} values, expected float seconds "
                                   "(a damaged or altered file); run 'telecorder doctor --repair' to set the "
                                   "episode aside")

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def __len__(self) -> int:
        return int(self._file["timestamp"].shape[0])

    @property
    def attrs(self) -> dict[str, Any]:
        return get_attrs(self._file, self.path)

    def fps(self, default: float) -> float:
        """The rate the episode was recorded at (attribute ``fps``, else ``default``), checked as
        ``info.json``'s is: a finite number in the documented range."""
        value = self.attrs.get("fps")
        if value is None:
            return float(default)
        try:
            return check_fps(value)
        except ValueError as e:
            raise DatasetError(f"{self.path}: attribute 'fps': {e}") from e

    def _read(self, path: str, step: int | None = None) -> Any:
        """Rows of dataset ``path`` (all, or one step); a read that the damaged file refuses is
        a DatasetError naming it."""
        try:
            ds = self._file[path]
            return ds[:] if step is None else ds[step]
        except (OSError, RuntimeError) as e:
            where = f"/{path}" + ("" if step is None else f" step {step}")
            raise DatasetError(f"{self.path}: {where} cannot be read ({e}); the file is damaged; "
                               "run 'telecorder doctor DATASET' to find damaged episodes") from e

    @property
    def cameras(self) -> list[str]:
        return list(self._file[IMAGES_GROUP].keys()) if IMAGES_GROUP in self._file else []

    @property
    def numeric_paths(self) -> list[str]:
        """HDF5 paths of every numeric per-step dataset except bookkeeping ones."""
        skip = ("timestamp", IMAGES_GROUP, IMAGE_TS_GROUP, FRAME_INDEX_GROUP, "timing")
        out: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and not any(name == s or name.startswith(s + "/") for s in skip):
                out.append(name)

        self._file.visititems(visit)
        return out

    def timestamps(self) -> np.ndarray:
        return self._read("timestamp")

    def numeric(self, name: str) -> np.ndarray:
        path = name.replace(".", "/")
        if path not in self._file:
            raise DatasetError(f"{self.path}: feature {name!r} (/{path}) is missing")
        return self._read(path)

    def image_timestamps(self, camera: str) -> np.ndarray:
        return self._read(f"{IMAGE_TS_GROUP}/{camera}")

    def frame_indices(self, camera: str) -> np.ndarray:
        return self._read(f"{FRAME_INDEX_GROUP}/{camera}")

    def tick_lateness(self) -> np.ndarray | None:
        return self._read(LATENESS_PATH) if LATENESS_PATH in self._file else None

    def loop_cpu(self) -> np.ndarray | None:
        """CPU seconds of the control thread's work per tick; None in files written before it was kept."""
        return self._read(LOOP_CPU_PATH) if LOOP_CPU_PATH in self._file else None

    def loop_busy(self) -> np.ndarray | None:
        """Wall seconds of the control thread's work per tick; None in files written before it was kept."""
        return self._read(LOOP_BUSY_PATH) if LOOP_BUSY_PATH in self._file else None

    def encoded_frame(self, camera: str, step: int) -> np.ndarray:
        self.image_dataset(camera)
        return self._read(f"{IMAGES_GROUP}/{camera}", step)

    def image_dataset(self, camera: str) -> h5py.Dataset:
        """The HDF5 dataset of ``camera``'s stored frames (for readers that keep it between reads)."""
        path = f"{IMAGES_GROUP}/{camera}"
        if path not in self._file:
            raise DatasetError(f"{self.path}: camera {camera!r} is not in this episode (has {self.cameras})")
        return self._file[path]

    def frame(self, camera: str, step: int) -> np.ndarray:
        """Decoded RGB frame of ``camera`` at ``step``."""
        spec = self.info.features.get(IMAGE_PREFIX + camera) if self.info is not None else None
        return decode_image(self.encoded_frame(camera, step), where=f"{self.path} camera {camera!r} step {step}",
                            expected_hw=None if spec is None else (int(spec.shape[0]), int(spec.shape[1])))

    def load(self, images: bool = False) -> Episode:
        """Everything into memory; ``images=True`` also decodes every frame."""
        names = (
            [s.name for s in self.info.numeric_features]
            if self.info is not None
            else [p.replace("/", ".") for p in self.numeric_paths]
        )
        attrs = self.attrs
        ep = Episode(
            index=episode_number(self.path, attrs),
            timestamp=self.timestamps(),
            data={n: self.numeric(n) for n in names},
            image_timestamp={c: self.image_timestamps(c) for c in self.cameras},
            frame_index={c: self.frame_indices(c) for c in self.cameras},
            tick_lateness=self.tick_lateness(),
            metadata=attrs,
        )
        if images:
            ep.images = {c: [self.frame(c, i) for i in range(len(self))] for c in self.cameras}
        return ep
