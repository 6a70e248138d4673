"""Video frames by timestamp for the loaders, with the containers of each process kept open.

LeRobot finds a step's frame at ``from_timestamp + timestamp`` in the camera's mp4 by seeking
to the keyframe before it and decoding forward, accepting the nearest frame within a
tolerance; this does the same (LeRobot writes a keyframe every 2 frames, so a frame costs at
most two decodes). What differs is the cost around it: containers stay open per process
(LeRobot reopens the file for every sample), a run of requests moving forward in one file is
decoded without seeking again, and YUV frames are converted to RGB by OpenCV.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from ..converters.base import ConversionError
from ..converters.video import check_stream_size
from .frames import hwc_to_chw, shrink

# Decoding on from the current position beats a seek when the wanted frame is this close ahead.
_FORWARD_S = 0.2

# Containers open in this process. A forked child (a DataLoader worker) inherits their FFmpeg
# state but not the decoder threads behind it: freeing one there (an AV1 decoder the parent left
# to the cyclic garbage collector) waits forever for threads that do not exist in the child. So
# a child keeps what it inherited referenced and never frees it; it opens its own containers.
_OPEN: weakref.WeakSet[_OpenVideo] = weakref.WeakSet()
_INHERITED: list[Any] = []


def _keep_inherited() -> None:
    _INHERITED.extend(_OPEN)


os.register_at_fork(after_in_child=_keep_inherited)


class _OpenVideo:
    def __init__(self, path: Path, stored_hw: tuple[int, int] | None = None, context: str = "") -> None:
        self.path = path
        try:
            self.container = av.open(str(path), metadata_errors="replace")
        except (av.error.FFmpegError, OSError) as e:
            raise ConversionError(f"{path}: cannot be opened as video ({e})") from e
        if not self.container.streams.video:
            self.container.close()
            raise ConversionError(f"{path}: has no video stream")
        self.stream = self.container.streams.video[0]
        try:
            check_stream_size(self.stream, path, stored_hw, context)  # before any frame is decoded
        except ConversionError:
            self.container.close()
            raise
        self.lock = threading.Lock()  # one caller at a time decodes from a container
        _OPEN.add(self)
        self.time_base = float(self.stream.time_base)
        self.frames: Any = None  # the decode iterator
        self.pending: tuple[float, Any] | None = None  # decoded, not handed out yet
        self.last: tuple[float, Any] | None = None  # the frame handed out last

    def seek(self, t: float) -> None:
        self.container.seek(max(0, int(t / self.time_base)), stream=self.stream, backward=True)
        self.frames = self.container.decode(self.stream)
        self.pending = self.last = None

    def next(self) -> tuple[float, Any] | None:
        if self.pending is not None:
            got, self.pending = self.pending, None
            return got
        for frame in self.frames:
            if frame.pts is not None:
                return frame.pts * self.time_base, frame
        self.frames = None
        return None

    def close(self) -> None:
        self.container.close()


class VideoFrames:
    """Open mp4 files of one process (at most ``max_open``) and their frames by time."""

    def __init__(self, max_open: int = 8) -> None:
        self.max_open = max(1, int(max_open))
        self._open: OrderedDict[Path, _OpenVideo] = OrderedDict()
        self._lock = threading.Lock()  # guards the cache itself (decode threads share it)

    def _video(self, path: Path, stored_hw: tuple[int, int] | None, context: str) -> _OpenVideo:
        with self._lock:
            video = self._open.get(path)
            if video is None:
                video = self._open[path] = _OpenVideo(path, stored_hw, context)
                while len(self._open) > self.max_open:
                    old = self._open.popitem(last=False)[1]
                    with old.lock:
                        old.close()
            self._open.move_to_end(path)
            return video

    def frame(self, path: Path, t: float, tolerance: float, size: tuple[int, int] | None,
              out: np.ndarray | None = None, context: str = "", stored_hw: tuple[int, int] | None = None
              ) -> np.ndarray:
        """The frame shown at ``t`` seconds (nearest within ``tolerance``) as ``(3, h, w)`` RGB uint8;
        the file's declared frame size must be ``stored_hw`` (the camera feature's (height, width)),
        else at most the general pixel limit, checked when the file is opened."""
        try:
            video = self._video(path, stored_hw, context)
            with video.lock:
                frame = self._find(video, t, tolerance, context)
                planes = frame.to_ndarray(format="yuv420p" if frame.format.name == "yuv420p" else "rgb24")
            if frame.format.name == "yuv420p":
                # PyAV builds a new swscale context for every frame it converts (about 2 ms at 640x480);
                # OpenCV converts the planes as they are in a fraction of that, with the same BT.601 matrix.
                rgb = cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)
            else:
                rgb = planes
        except av.error.FFmpegError as e:
            self._drop(path)
            raise ConversionError(f"{path}: cannot be decoded at {t:.4f} s{_ctx(context)} ({e})") from e
        return hwc_to_chw(shrink(rgb, size), out)

    def _find(self, video: _OpenVideo, t: float, tolerance: float, context: str) -> Any:
        last = video.last
        if last is not None and abs(last[0] - t) <= tolerance:
            return last[1]
        if video.frames is None or last is None or not (last[0] < t <= last[0] + _FORWARD_S):
            # To the keyframe at or before t itself: seeking to t - tolerance would start a whole
            # GOP early whenever the wanted frame is a keyframe.
            video.seek(t)
        # The first frame at or after t - tolerance is the nearest one when the tolerance is at
        # most half a frame period (the default); stopping there decodes no frame beyond it.
        while True:
            got = video.next()
            if got is None:
                break
            if got[0] >= t - tolerance:
                if got[0] <= t + tolerance:
                    video.last = got
                    return got[1]
                video.pending = got
                break
        seen = video.pending or video.last
        near = "" if seen is None else f"; the nearest frame decoded is at {seen[0]:.4f} s"
        raise ConversionError(
            f"{video.path}: no frame within {tolerance * 1000:.1f} ms of {t:.4f} s{_ctx(context)}{near}; the "
            "video and the data timestamps disagree, or the video is shorter than the episode"
        )

    def _drop(self, path: Path) -> None:
        with self._lock:
            video = self._open.pop(path, None)
        if video is not None:
            video.close()

    def close(self) -> None:
        with self._lock:
            while self._open:
                self._open.popitem()[1].close()


def _ctx(context: str) -> str:
    return f" ({context})" if context else ""
