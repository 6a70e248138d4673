"""The sim's rendered cameras as camera devices: one render thread per rig, one frame per tick asked.

The rendered cameras are synchronous sensors, like hardware-triggered cameras: at a
tick the recorder asks for a capture, the state is snapshot right there on the
control thread, and a render thread of their own draws it (a GL context per thread)
and fills the frame's future. Every frame shows exactly the state observed at its
tick, is stamped with that tick's time and numbered consecutively, and render time
never lands in the control loop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future

import numpy as np

from ...errors import CameraError
from ..interfaces import Camera, Frame
from ..robots.sim import SimRobot

_CHANGED = "changed"  # the render thread's work item for a state change nobody requested


class _Capture:
    """One requested capture: the state of one control tick, to be rendered by every camera of a rig."""

    __slots__ = ("capture_ns", "futures", "index", "qpos", "taken")

    def __init__(self, qpos: np.ndarray, capture_ns: int, index: int, names: list[str]) -> None:
        self.qpos, self.capture_ns, self.index = qpos, capture_ns, index
        self.futures: dict[str, Future[Frame]] = {n: Future() for n in names}
        self.taken: set[str] = set()


class SimCameraRig:
    """Renders every camera of a simulation from one state snapshot per frame, in its own thread.

    Two ways to get frames. ``request(name, tick_ns)`` (what the recorder uses) snapshots the
    state on the caller's thread and returns a future of the frame that shows exactly that
    state, stamped ``tick_ns``: one capture per tick, numbered consecutively, so a recording
    never repeats or drops a frame. ``latest(name)`` returns the newest frame rendered (the
    live view's); while no tick asks for frames, the rig also renders previews by itself
    whenever the state changed (a reset), at most at the camera rate. A preview carries the
    number of the last capture: only captures advance the frame counter, so a preview made
    during a long stall of the control loop cannot open a gap in a recording's numbering.

    Requests wait in a bounded queue: if rendering falls behind, ``request`` blocks, the
    control loop's ticks come late and that is recorded; nothing is skipped.
    """

    # While ticks request frames, the rig renders nothing else; it renders on state changes again
    # once no request came for this long.
    IDLE_AFTER_S = 0.25

    def __init__(
        self, robot: SimRobot, names: list[str], width: int, height: int, fps: float, *, max_pending: int = 32
    ) -> None:
        missing = [n for n in names if n not in robot.env.camera_names]
        if missing:
            raise CameraError(
                f"sim model has no camera {', '.join(map(repr, missing))}; it has {robot.env.camera_names}"
            )
        self.robot, self.names, self.width, self.height, self.fps = robot, names, width, height, fps
        self.max_pending = max(1, max_pending)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._latest: dict[str, Frame] = {}
        self._failure: str | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self._users = 0
        self._jobs: deque[_Capture] = deque()
        self._open: _Capture | None = None  # the newest requested capture, shared by the rig's cameras
        self._changed = False  # the state moved since the last render
        self._last_request = -float("inf")
        self._next_index = 0
        self.frames_rendered = 0
        self.captures_requested = 0
        robot.on_state_change(self._state_changed)

    def cameras(self) -> list[SimCamera]:
        return [SimCamera(self, n) for n in self.names]

    def acquire(self) -> None:
        self._users += 1
        if self._thread is not None:
            return
        with self._cond:
            self._stop, self._changed, self._failure = False, True, None
            self._last_request = -float("inf")
        self._thread = threading.Thread(target=self._render_loop, name="tc-sim-render", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30.0  # the first EGL context can take seconds to create
        with self._cond:
            while not (self._failure or len(self._latest) == len(self.names)) and time.monotonic() < deadline:
                self._cond.wait(0.1)
            if self._failure:
                raise CameraError(self._failure)
            if len(self._latest) < len(self.names):
                raise CameraError("sim cameras delivered no frame within 30 s (is offscreen rendering working?)")

    def release(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._thread is not None:
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            self._thread.join(timeout=5.0)
            self._thread = None
            self._fail_pending("sim cameras were stopped")

    def _state_changed(self) -> None:
        with self._cond:
            self._changed = True
            if time.monotonic() - self._last_request >= self.IDLE_AFTER_S:
                self._cond.notify_all()

    def request(self, name: str, tick_ns: int) -> Future[Frame]:
        """Capture the state as it is now for camera ``name``; the frame comes stamped ``tick_ns``.

        Cameras of the rig asking with the same ``tick_ns`` share one snapshot (and one frame index).
        """
        with self._cond:
            if self._failure:
                raise CameraError(self._failure)
            if self._thread is None:
                raise CameraError(f"sim camera {name!r}: not started")
            job = self._open
            if job is None or job.capture_ns != tick_ns or name in job.taken:
                while len(self._jobs) >= self.max_pending and not (self._failure or self._stop):
                    self._cond.wait(0.1)  # rendering is behind: hold the caller, never skip a capture
                if self._failure:
                    raise CameraError(self._failure)
                qpos, _, _ = self.robot.env.snapshot()
                job = _Capture(qpos, tick_ns, self._next_index, self.names)
                self._next_index += 1
                self.captures_requested += 1
                self._jobs.append(job)
                self._open = job
                self._cond.notify_all()
            self._last_request = time.monotonic()
            job.taken.add(name)
            return job.futures[name]

    def _next_job(self, idle_next_due: float) -> _Capture | str | None:
        """Wait for work: a requested capture, ``_CHANGED`` to render a changed state, None to stop."""
        with self._cond:
            while True:
                if self._stop:
                    return None
                if self._jobs:
                    job = self._jobs.popleft()
                    self._cond.notify_all()
                    return job
                now = time.monotonic()
                idle_at = self._last_request + self.IDLE_AFTER_S
                if self._changed and now >= idle_at and now >= idle_next_due:
                    self._changed = False
                    return _CHANGED
                wait = 0.5
                if self._changed:
                    wait = max(0.001, min(wait, max(idle_at, idle_next_due) - now))
                self._cond.wait(wait)

    def _render_loop(self) -> None:
        try:
            from ...sim.render import SimRenderer

            renderer = SimRenderer(self.robot.env.model, self.width, self.height)
        except Exception as e:
            self._fail(f"sim cameras: offscreen rendering failed: {e}")
            return
        period = 1.0 / self.fps
        next_due = 0.0
        job: _Capture | str | None = None
        try:
            while True:
                job = self._next_job(next_due)
                if job is None:
                    break
                if job is _CHANGED:
                    # Nobody is recording: show the current state (after a reset) to the live view.
                    next_due = time.monotonic() + period
                    qpos, _, _ = self.robot.env.snapshot()
                    captured = time.monotonic_ns()
                    with self._cond:
                        index = self._next_index - 1
                    frames = {name: Frame(renderer.render(qpos, name), captured, index) for name in self.names}
                else:
                    assert isinstance(job, _Capture)
                    frames = {name: Frame(renderer.render(job.qpos, name), job.capture_ns, job.index)
                              for name in self.names}
                with self._cond:
                    self._latest.update(frames)
                    self.frames_rendered += 1
                    self._cond.notify_all()
                if isinstance(job, _Capture):
                    for name, fut in job.futures.items():
                        fut.set_result(frames[name])
        except Exception as e:
            self._fail(f"sim cameras: rendering failed: {e}")
            if isinstance(job, _Capture):
                for fut in job.futures.values():
                    if not fut.done():
                        fut.set_exception(CameraError(self._failure or str(e)))
        finally:
            renderer.close()

    def _fail(self, message: str) -> None:
        with self._cond:
            self._failure = message
            self._cond.notify_all()
        self._fail_pending(message)

    def _fail_pending(self, message: str) -> None:
        with self._cond:
            jobs, self._jobs, self._open = list(self._jobs), deque(), None
        for job in jobs:
            for fut in job.futures.values():
                if not fut.done():
                    fut.set_exception(CameraError(message))

    def latest(self, name: str) -> Frame:
        with self._lock:
            failure, frame = self._failure, self._latest.get(name)
        if failure:
            raise CameraError(failure)
        if frame is None:
            raise CameraError(f"sim camera {name!r}: not started")
        return frame


class SimCamera(Camera):
    """One rendered camera of a :class:`SimCameraRig`: a synchronous camera, one frame per tick asked."""

    free_running = False
    synchronous = True

    def __init__(self, rig: SimCameraRig, name: str) -> None:
        self.rig, self.name = rig, name
        self.width, self.height, self.fps = rig.width, rig.height, rig.fps

    def describe(self) -> str:
        return f"sim camera {self.name!r}"

    def start(self) -> None:
        self.rig.acquire()

    def request(self, tick_ns: int) -> Future[Frame]:
        return self.rig.request(self.name, tick_ns)

    def latest(self) -> Frame:
        return self.rig.latest(self.name)

    def stop(self) -> None:
        self.rig.release()
