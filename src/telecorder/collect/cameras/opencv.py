"""Cameras read through ``cv2.VideoCapture``: USB/V4L2 devices, video files, network streams.

Each camera captures in its own thread and keeps only its newest frame, stamped with
the monotonic time at which ``read()`` returned it. The recorder asks for the newest
frame each tick; a camera that stops delivering (unplugged, stream lost, file ended)
is reported as a :class:`CameraError` within ``stall_timeout_s``.

Video files play at their own frame rate (as a live camera would), optionally looping,
so that recordings and benchmarks can use them in place of hardware.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2

from ...errors import CameraError
from ..interfaces import Camera, Frame


@dataclass
class CameraSpec:
    """A camera as named on the command line: ``NAME=SOURCE[,size=WxH][,fps=F][,loop]``."""

    name: str
    source: int | str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    loop: bool = False

    @classmethod
    def parse(cls, text: str) -> CameraSpec:
        if "=" not in text:
            raise ValueError(f"camera {text!r}: expected NAME=SOURCE, e.g. front=/dev/video0 or front=clip.mp4,loop")
        name, rest = text.split("=", 1)
        parts = rest.split(",")
        src: int | str = int(parts[0]) if parts[0].isdigit() else parts[0]
        spec = cls(name=name.strip(), source=src)
        for opt in parts[1:]:
            key, _, value = opt.partition("=")
            try:
                if key == "size":
                    w, h = value.lower().split("x")
                    spec.width, spec.height = int(w), int(h)
                elif key == "fps":
                    spec.fps = float(value)
                elif key == "loop":
                    spec.loop = True
                else:
                    raise ValueError(f"unknown option {key!r}")
            except ValueError as e:
                raise ValueError(f"camera {text!r}: bad option {opt!r} ({e}); options are size=WxH, fps=F, loop") from e
        if not spec.name.isidentifier():
            raise ValueError(f"camera name {spec.name!r} must be a plain identifier like 'front' or 'wrist'")
        return spec


class OpenCVCamera(Camera):
    def __init__(
        self,
        name: str,
        source: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        loop: bool = False,
        stall_timeout_s: float = 1.0,
        open_timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self.source = source
        self.width = width or 0
        self.height = height or 0
        self.fps = fps or 0.0
        self.loop = loop
        self.stall_timeout_s = stall_timeout_s
        self.open_timeout_s = open_timeout_s
        self._is_file = isinstance(source, str) and Path(source).is_file()
        self._cap: cv2.VideoCapture | None = None
        self._lock = threading.Lock()
        self._latest: Frame | None = None
        self._recent: deque[int] = deque(maxlen=32)
        self._failure: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_captured = 0

    @classmethod
    def from_spec(cls, spec: CameraSpec, **kwargs: float) -> OpenCVCamera:
        return cls(spec.name, spec.source, width=spec.width, height=spec.height, fps=spec.fps, loop=spec.loop, **kwargs)

    def describe(self) -> str:
        return f"camera {self.name!r} ({self.source})"

    def start(self) -> None:
        if isinstance(self.source, str) and not self._is_file and "://" not in self.source and not os.path.exists(self.source):
            raise CameraError(f"{self.describe()}: no such file or device; check the path (list devices with 'v4l2-ctl --list-devices')")
        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            raise CameraError(
                f"{self.describe()}: cannot be opened; is it plugged in and not used by another program? "
                "(list devices with 'v4l2-ctl --list-devices')"
            )
        if not self._is_file:
            if self.width and self.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
        native_fps = cap.get(cv2.CAP_PROP_FPS)
        if not self.fps:
            self.fps = native_fps if native_fps and native_fps > 0 else 30.0
        self._cap = cap
        self._stop.clear()
        self._thread = threading.Thread(target=self._capture_loop, name=f"tc-cam-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.open_timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._latest is not None or self._failure is not None:
                    break
            time.sleep(0.005)
        with self._lock:
            first, failure = self._latest, self._failure
        if first is None:
            self.stop()
            raise CameraError(failure or f"{self.describe()}: opened but delivered no frame within {self.open_timeout_s:g} s")
        self.height, self.width = first.image.shape[:2]

    def _capture_loop(self) -> None:
        assert self._cap is not None
        period_ns = int(1e9 / self.fps)
        next_due = time.monotonic_ns()
        index = 0
        while not self._stop.is_set():
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                if self._is_file and self.loop and index > 0:
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                with self._lock:
                    self._failure = (
                        f"{self.describe()}: video file ended after {index} frames; use a longer file or add ',loop'"
                        if self._is_file
                        else f"{self.describe()}: stopped delivering frames (unplugged or stream lost); "
                        "check the cable and restart the recording"
                    )
                return
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if self._is_file:
                # A file stands in for a live camera: decode ahead, then release each frame on a fixed
                # grid, as a sensor would, so decode and rewind times never show as timing jitter.
                delay = next_due - time.monotonic_ns()
                if delay > 0:
                    time.sleep(delay / 1e9)
                # Stay on the grid after a late frame (a sensor's clock does not shift); re-sync only after a long stall.
                next_due += period_ns
                if time.monotonic_ns() - next_due > 5 * period_ns:
                    next_due = time.monotonic_ns()
            now = time.monotonic_ns()
            frame = Frame(image=rgb, capture_ns=now, index=index)
            index += 1
            with self._lock:
                self._latest = frame
                self._recent.append(now)
                self.frames_captured = index

    def latest(self) -> Frame:
        with self._lock:
            frame, failure = self._latest, self._failure
        if failure is not None:
            raise CameraError(failure)
        if frame is None:
            raise CameraError(f"{self.describe()}: not started")
        age = (time.monotonic_ns() - frame.capture_ns) / 1e9
        if age > self.stall_timeout_s:
            raise CameraError(
                f"{self.describe()}: no new frame for {age:.1f} s (unplugged or frozen?); "
                "check the cable and restart the recording"
            )
        return frame

    def recent_capture_ns(self) -> list[int]:
        with self._lock:
            return list(self._recent)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
