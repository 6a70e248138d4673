"""Episode writing off the control thread: encode frames in a thread pool, append in order.

The control loop hands over raw steps and returns at once. A writer thread takes
steps in order, waits for their frames to be encoded (JPEG/PNG encoding releases the
GIL, so a pool uses every core), and appends them to the episode file in batches.
The queue is bounded so memory stays bounded: if the writer falls behind, ``add``
blocks, the control loop's ticks come late, and the lateness is recorded. Nothing is
ever dropped silently.
"""

from __future__ import annotations

import errno
import math
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DatasetError
from .dataset import DatasetWriter
from .episode_file import EpisodeFileWriter, StepBatch
from .images import encode_image


@dataclass
class Step:
    """One control tick as the recorder saw it; times in seconds since episode start."""

    timestamp: float
    numeric: dict[str, np.ndarray]
    frames: dict[str, np.ndarray] = field(default_factory=dict)
    frame_time: dict[str, float] = field(default_factory=dict)
    frame_index: dict[str, int] = field(default_factory=dict)
    lateness: float = 0.0
    # The control thread's own work on this tick (observe to hand-over): CPU seconds and wall
    # seconds. NaN: not measured (a step that no recorder loop made).
    loop_cpu: float = math.nan
    loop_busy: float = math.nan


class _Begin:
    def __init__(self, index: int, attrs: Mapping[str, Any]) -> None:
        self.index, self.attrs = index, attrs


class _End:
    def __init__(self, attrs: Mapping[str, Any], record: Mapping[str, Any], done: Future) -> None:
        self.attrs, self.record, self.done = attrs, record, done


class _Discard:
    pass


class AsyncEpisodeWriter:
    """Writes episodes of a :class:`DatasetWriter` in a background thread.

    Usage per episode: ``begin(attrs)``, ``add(step)`` each tick, then ``end(...)``
    (returns a Future of the index entry, done when the file is complete on disk) or
    ``discard()``. Errors in the writer thread are raised by the next call.
    """

    def __init__(
        self,
        dataset: DatasetWriter,
        *,
        encode_threads: int = 2,
        max_queue: int = 256,
        flush_interval_s: float = 1.0,
        append_every: int = 8,
    ) -> None:
        self.dataset = dataset
        self.info = dataset.info
        self.flush_interval_s = flush_interval_s
        self.append_every = max(1, append_every)
        self._pool = ThreadPoolExecutor(max_workers=max(1, encode_threads), thread_name_prefix="tc-encode")
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self._last_encoded: dict[str, tuple[int, Future]] = {}
        self.frames_encoded = 0
        self.max_queue_depth = 0
        self.blocked_s = 0.0
        self._index: int | None = None
        self._thread = threading.Thread(target=self._run, name="tc-writer", daemon=True)
        self._thread.start()

    # -- control-thread side -------------------------------------------------

    def begin(self, attrs: Mapping[str, Any]) -> int:
        """Start the next episode; returns its number."""
        self._last_encoded.clear()
        self._index = self.dataset.reserve_index()
        self._put(_Begin(self._index, dict(attrs)))
        return self._index

    def add(self, step: Step) -> None:
        futures: dict[str, Future] = {}
        for cam, frame in step.frames.items():
            idx = step.frame_index.get(cam)
            last = self._last_encoded.get(cam)
            if last is not None and idx is not None and last[0] == idx:
                # The control loop outpaces this camera: reuse the encoding of the repeated frame.
                futures[cam] = last[1]
                continue
            fut = self._pool.submit(encode_image, frame, self.info.image_encoding, self.info.jpeg_quality)
            futures[cam] = fut
            if idx is not None:
                self._last_encoded[cam] = (idx, fut)
        self._put((step, futures))

    def end(self, attrs: Mapping[str, Any], record: Mapping[str, Any]) -> Future:
        done: Future = Future()
        self._index = None
        self._put(_End(dict(attrs), dict(record), done))
        return done

    def discard(self) -> None:
        self._put(_Discard())
        if self._index is not None:
            self.dataset.release_index(self._index)
            self._index = None

    def close(self, timeout: float | None = None) -> None:
        """Finish everything queued, then stop the threads."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        self._pool.shutdown(wait=True)
        self._raise_pending()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def _put(self, item: Any) -> None:
        self._raise_pending()
        t0 = time.perf_counter()
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                break
            except queue.Full:
                self._raise_pending()
        self.blocked_s += time.perf_counter() - t0
        self.max_queue_depth = max(self.max_queue_depth, self._queue.qsize())

    def _raise_pending(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    # -- writer-thread side ---------------------------------------------------

    def _run(self) -> None:
        current: EpisodeFileWriter | None = None
        pending: list[tuple[Step, dict[str, Future]]] = []
        last_flush = time.monotonic()
        while True:
            item = self._queue.get()
            if item is None:
                if current is not None:
                    current.abort()
                return
            try:
                if isinstance(item, _Begin):
                    if current is not None:
                        current.abort()
                    current = self.dataset.start_episode(item.index, item.attrs)
                    pending, last_flush = [], time.monotonic()
                elif isinstance(item, tuple):
                    if current is None:
                        continue  # steps after a failure of this episode: it is already reported
                    pending.append(item)
                    # Small appends: h5py holds the GIL while it writes, and a long write would
                    # delay the control and camera threads by as much.
                    if len(pending) >= self.append_every:
                        self._append(current, pending)
                        pending = []
                    if time.monotonic() - last_flush >= self.flush_interval_s:
                        self._append(current, pending)
                        current.flush()
                        pending, last_flush = [], time.monotonic()
                elif isinstance(item, _Discard):
                    if current is not None:
                        current.abort()
                    current, pending = None, []
                elif isinstance(item, _End):
                    if current is None:
                        item.done.set_exception(DatasetError("episode was not written (an earlier error)"))
                        continue
                    self._append(current, pending)
                    entry = self.dataset.commit(current, item.attrs, item.record)
                    current, pending = None, []
                    item.done.set_result(entry)
            except BaseException as e:
                failed_path = current.path if current is not None else self.dataset.root
                if current is not None:
                    current.abort()
                current, pending = None, []
                self._error = _describe_write_error(e, failed_path, self.dataset.root)
                if isinstance(item, _End):
                    item.done.set_exception(self._error)

    def _append(self, writer: EpisodeFileWriter, pending: list[tuple[Step, dict[str, Future]]]) -> None:
        if not pending:
            return
        steps = [s for s, _ in pending]
        cams = self.info.cameras
        numeric_names = [f.name for f in self.info.numeric_features]
        batch = StepBatch(
            timestamp=np.array([s.timestamp for s in steps], dtype=np.float64),
            numeric={n: np.stack([s.numeric[n] for s in steps]) for n in numeric_names},
            images={c: [futs[c].result() for _, futs in pending] for c in cams},
            image_timestamp={c: np.array([s.frame_time[c] for s in steps]) for c in cams},
            frame_index={c: np.array([s.frame_index[c] for s in steps], dtype=np.int64) for c in cams},
            tick_lateness=np.array([s.lateness for s in steps], dtype=np.float32),
            loop_cpu=np.array([s.loop_cpu for s in steps], dtype=np.float32),
            loop_busy=np.array([s.loop_busy for s in steps], dtype=np.float32),
        )
        self.frames_encoded += sum(len({id(f[c]) for _, f in pending}) for c in cams)
        writer.append(batch)


def _describe_write_error(e: BaseException, path: Any, root: Any) -> BaseException:
    if isinstance(e, DatasetError):
        return e
    # h5py reports a full disk as a RuntimeError whose text carries the errno; OSError from plain files.
    if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
        return DatasetError(
            f"{path}: no space left on device; free disk space and record again "
            f"(episodes saved before in {root} are intact)"
        )
    if isinstance(e, KeyError):
        return DatasetError(f"{path}: a recorded step lacks feature {e}; the robot's features changed mid-episode")
    return DatasetError(f"{path}: writing the episode failed ({type(e).__name__}: {e}); "
                        f"episodes saved before in {root} are intact")
