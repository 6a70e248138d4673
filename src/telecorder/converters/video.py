"""MP4 video in and out with PyAV: RGB frames at exact timestamps, frames found by timestamp.

Frame ``k`` written by :class:`VideoEncoder` has presentation time exactly ``k / fps``
(the stream's time base is ``1 / fps``), so a reader can locate any step of any episode
in a file shared by many episodes from ``from_timestamp + frame_index / fps``, the way
LeRobot v3.0 does. :func:`decode_frames` is the matching reader: it seeks to the keyframe
before the first wanted time and decodes forward, so an episode that starts in the middle
of a long file costs only its own frames plus at most one GOP.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..datasets.images import MAX_IMAGE_PIXELS
from .base import ConversionError

# Codec choice -> (FFmpeg encoder, default options). On real 640x480 robot footage these
# give 39-41 dB PSNR. "veryfast" keeps x264 several times real time on two cores; SVT-AV1
# preset 10 is ~40% faster than 8 for 0.3 dB less, but SVT flags presets from 10 up as
# prone to artifacts, so 8 is the default and preset=10 a choice.
CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "h264": ("libx264", {"crf": "20", "preset": "veryfast"}),
    "av1": ("libsvtav1", {"crf": "30", "preset": "8"}),
}
# LeRobot encodes with a keyframe every 2 frames so that a training loader can fetch any
# frame with at most one extra decode; files it reads are expected to allow that.
DEFAULT_GOP = 2


def _thread_options(encoder: str, threads: int) -> dict[str, str]:
    """Encoder options that hold it to ``threads`` threads.

    The codec context's thread count alone is not enough: libx264 starts its own frame and
    lookahead threads by default, and SVT-AV1 sizes its thread pools from the core count
    unless given a level of parallelism. A worker of a sharded conversion wants one thread,
    the parallelism being across workers.
    """
    threads = max(1, threads)
    if encoder == "libx264":
        return {"threads": str(threads), "x264-params": f"threads={threads}:lookahead-threads={threads}"}
    if encoder == "libsvtav1":
        return {"threads": str(threads), "svtav1-params": f"lp={threads}"}
    return {"threads": str(threads)}


def _rt_threads() -> dict[int, tuple[int, int]]:
    """This process's threads at a real-time policy: tid -> (policy, priority)."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in map(int, tids):
        try:
            policy = os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
            if policy in (os.SCHED_FIFO, os.SCHED_RR):
                out[tid] = (policy, os.sched_getparam(tid).sched_priority)
        except OSError:
            continue  # ended meanwhile
    return out


class _NormalScheduling:
    """Undoes what SVT-AV1 does to the process's scheduling.

    Run as root, SVT-AV1 puts the thread that starts it and every thread it creates at
    SCHED_FIFO 99, the highest real-time priority. The conversion would then take whole
    cores from everything else, a recording included, and the calling thread would stay
    there after the encoder closes. Threads that became real-time during a call go back to
    normal scheduling; those that were real-time before (a recorder's) keep theirs.
    """

    def __init__(self) -> None:
        self._before = _rt_threads()

    def restore(self) -> None:
        for tid, sched in _rt_threads().items():
            if self._before.get(tid) == sched:
                continue
            try:
                if tid in self._before:
                    os.sched_setscheduler(tid, self._before[tid][0], os.sched_param(self._before[tid][1]))
                else:
                    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                continue


def frame_rate(fps: float) -> Fraction:
    """``fps`` as the exact rational rate a container stores (29.97 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


class VideoEncoder:
    """Appends RGB uint8 (H, W, 3) frames to a new MP4 with frame ``k`` at ``k / fps`` seconds."""

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float,
        codec: str = "h264",
        *,
        crf: int | None = None,
        preset: str | int | None = None,
        gop: int = DEFAULT_GOP,
        threads: int | None = None,
    ) -> None:
        if codec not in CODECS:
            raise ConversionError(f"{path}: unknown video codec {codec!r}; use one of {', '.join(CODECS)}")
        if width % 2 or height % 2:
            raise ConversionError(
                f"{path}: frames of {width}x{height} cannot be stored as yuv420p video, which needs an even "
                "width and height; resize the images (e.g. --image-size) to even dimensions"
            )
        self.path = Path(path)
        self.width, self.height, self.codec = int(width), int(height), codec
        self.rate = frame_rate(fps)
        # Kept apart from the stream's, which the MP4 muxer replaces by its own timescale.
        self._time_base = 1 / self.rate
        self.frames = 0
        encoder, defaults = CODECS[codec]
        options = dict(defaults)
        if crf is not None:
            options["crf"] = str(int(crf))
        if preset is not None:
            options["preset"] = str(preset)
        if threads is not None:
            options.update(_thread_options(encoder, int(threads)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w")
        try:
            self._stream = self._open_stream(encoder, options, gop, threads)
        except BaseException:
            self._container.close()
            raise

    def _open_stream(self, encoder: str, options: dict[str, str], gop: int, threads: int | None) -> Any:
        # SVT-AV1 prints a banner and tuning notes to stderr for every file; errors only, unless
        # the user asked for more.
        os.environ.setdefault("SVT_LOG", "1")
        try:
            stream = self._container.add_stream(encoder, rate=self.rate, options=options)
        except (av.error.FFmpegError, ValueError) as e:
            raise ConversionError(f"{self.path}: cannot start the {encoder} encoder ({e})") from e
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.time_base = self._time_base
        stream.codec_context.gop_size = max(1, int(gop))
        if threads is not None:
            stream.codec_context.thread_count = max(1, int(threads))
        return stream

    @property
    def duration_s(self) -> float:
        """Seconds of video written so far: where the next frame will start."""
        return float(self.frames / self.rate)

    def size_bytes(self) -> int:
        """Bytes on disk so far (the muxer writes packets as they come, the index at close)."""
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def append(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ConversionError(
                f"{self.path}: frame {self.frames} is {rgb.dtype} {rgb.shape}, "
                f"expected uint8 ({self.height}, {self.width}, 3)"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = self._time_base
        self._mux(frame)
        self.frames += 1

    def _mux(self, frame: av.VideoFrame | None) -> None:
        guard = _NormalScheduling() if self._stream.codec_context.name == "libsvtav1" else None
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.error.FFmpegError as e:
            raise ConversionError(f"{self.path}: encoding frame {self.frames} failed ({e})") from e
        finally:
            if guard is not None:
                guard.restore()

    def close(self) -> None:
        """Flush the encoder and write the MP4 index; the file is playable only after this."""
        if self._container is None:
            return
        try:
            self._mux(None)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_stream_size(stream: Any, path: Path, expected_hw: tuple[int, int] | None = None, context: str = "") -> None:
    """The frame size a video stream declares, checked before any frame is decoded: against
    ``expected_hw`` (the feature's (height, width)) when given, else against
    :data:`~telecorder.datasets.images.MAX_IMAGE_PIXELS`. A corrupt header claiming 30000x30000
    would otherwise allocate gigabytes per decoded frame."""
    ctx = f" ({context})" if context else ""
    codec = getattr(stream, "codec_context", None)
    if codec is None:
        raise ConversionError(f"{path}: the video stream has no codec to decode it with{ctx}; the file is corrupt or "
                              "of an unknown codec; re-export the video or leave the camera out")
    w, h = int(codec.width or 0), int(codec.height or 0)
    if w < 1 or h < 1:
        raise ConversionError(f"{path}: the video stream declares a frame size of {w}x{h}{ctx}; the file is corrupt "
                              "(not decoded); re-export the video or leave the camera out")
    if expected_hw is not None:
        eh, ew = int(expected_hw[0]), int(expected_hw[1])
        if (h, w) != (eh, ew):
            raise ConversionError(f"{path}: the video stream declares {w}x{h} frames{ctx}, but the camera's feature "
                                  f"holds {ew}x{eh}; the video or the metadata is wrong (not decoded)")
    elif w * h > MAX_IMAGE_PIXELS:
        raise ConversionError(f"{path}: the video stream declares {w}x{h} frames{ctx}, over the {MAX_IMAGE_PIXELS} "
                              "pixels telecorder decodes; the file is corrupt (not decoded)")


def decode_frames(
    path: Path, timestamps: np.ndarray | list[float], tolerance: float, *, context: str = "",
    expected_hw: tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """RGB uint8 frames of ``path`` shown at ``timestamps`` (seconds in the file), in that order.

    Each wanted time takes the frame nearest to it; none within ``tolerance`` seconds, or a
    video that ends too early, raises ConversionError naming the file, the time and ``context``
    (e.g. ``"episode 3"``). The size the stream declares is checked first (:func:`check_stream_size`,
    against ``expected_hw`` when given).
    """
    path = Path(path)
    wanted = np.asarray(timestamps, dtype=np.float64)
    if wanted.size == 0:
        return []
    if not path.is_file():
        raise ConversionError(f"{path}: video file is missing" + (f" ({context})" if context else ""))
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            if not container.streams.video:
                raise ConversionError(f"{path}: has no video stream")
            check_stream_size(container.streams.video[0], path, expected_hw, context)
            return _decode_sorted(container, path, wanted, tolerance, context)
    except av.error.FFmpegError as e:
        raise ConversionError(f"{path}: cannot be decoded as video ({e})") from e


def _decode_sorted(
    container: Any, path: Path, wanted: np.ndarray, tolerance: float, context: str
) -> list[np.ndarray]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    order = np.argsort(wanted, kind="stable")
    times = wanted[order]
    first = times[0] - tolerance
    if first > 0:
        # Lands on the keyframe at or before `first`; decoding forward from there is exact.
        container.seek(int(first / stream.time_base), stream=stream, backward=True)
    picked: list[np.ndarray | None] = [None] * len(times)
    error = np.full(len(times), np.inf)
    i = 0  # first wanted time that may still improve
    last_time = None
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        t = float(frame.pts * stream.time_base)
        while i < len(times) and t > times[i] + tolerance:
            if picked[i] is None:
                _raise_missing(path, times[i], tolerance, last_time, t, context)
            i += 1
        if i == len(times):
            break
        last_time = t
        rgb = None
        j = i
        while j < len(times) and abs(t - times[j]) <= tolerance:
            if abs(t - times[j]) < error[j]:
                rgb = frame.to_ndarray(format="rgb24") if rgb is None else rgb
                picked[j], error[j] = rgb, abs(t - times[j])
            j += 1
    missing = [k for k, p in enumerate(picked) if p is None]
    if missing:
        k = missing[0]
        if last_time is None or times[k] > last_time:
            ends = "has no frames there" if last_time is None else f"ends at {last_time:.3f} s"
            raise ConversionError(
                f"{path}: video is shorter than the episode" + (f" ({context})" if context else "")
                + f": it {ends} but frames up to {times[-1]:.3f} s are needed "
                f"({len(missing)} of {len(times)} missing); re-export the video or read with tabular_only=True"
            )
        _raise_missing(path, times[k], tolerance, last_time, None, context)
    out: list[np.ndarray] = [np.empty(0)] * len(times)
    for rank, k in enumerate(order):
        out[k] = picked[rank]  # type: ignore[assignment]
    return out


def _raise_missing(
    path: Path, t: float, tolerance: float, before: float | None, after: float | None, context: str
) -> None:
    near = ", ".join(f"{x:.4f} s" for x in (before, after) if x is not None) or "none"
    raise ConversionError(
        f"{path}: no frame within {tolerance * 1000:.1f} ms of timestamp {t:.4f} s"
        + (f" ({context})" if context else "")
        + f"; nearest frames: {near}. The video and the data timestamps disagree (dropped or variable-rate frames)"
    )
