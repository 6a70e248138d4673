"""The fixed-rate control loop of one episode.

Each tick, on one monotonic clock: observe the follower, ask every synchronous camera
(a rendered sim camera) for a capture of that state and take the newest frame of every
other camera, read the teleop device, command the follower, and hand the step to the
background writer. The observation comes first so that a step follows RLDS
semantics: ``action[t]`` is the command issued after observing step ``t``.

A synchronous camera's frame is made off the control thread; the step waits (in a
short queue here) until its frames are ready and then goes to the writer, in order.
The queue is bounded: if rendering falls behind, the loop waits for the oldest
frame, its ticks come late and that is recorded, as with the writer's own queue.

The loop never drops data to keep time. A tick that starts more than 2 ms after its
schedule is counted late; when a tick overruns a whole period, the slots it covered
are skipped (counted as missed) rather than run in a burst.

With ``realtime=False`` (a simulated robot and cameras only) the loop is paced by
simulated time instead: it never sleeps, tick ``k`` happens at ``t0 + k * period``
virtual nanoseconds whenever the previous one is done, and every time in the file is
that virtual time (``k / fps`` seconds). No tick can be late or missed; the episode
runs as fast as physics and rendering allow.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..datasets.async_writer import AsyncEpisodeWriter, Step
from ..datasets.sync import LATE_THRESHOLD_S
from ..errors import CameraError
from .contention import ContentionMeter
from .interfaces import EPISODE_EVENTS, Camera, Event, Frame, Robot, Teleop
from .realtime import RealtimeScope

# Python hands the GIL between threads every 5 ms by default; with encoder and writer
# threads busy, the control thread would wake that late. 0.5 ms keeps ticks on time.
_SWITCH_INTERVAL_S = 0.0005

# How long a step may wait for a synchronous camera's frame before the loop holds for it, and
# how long the loop holds before the camera counts as failed.
FRAME_BUFFER_S = 0.25
FRAME_TIMEOUT_S = 10.0


@dataclass
class TickStatus:
    """What the progress display shows, updated as the episode runs."""

    step: int = 0
    elapsed_s: float = 0.0
    loop_hz: float = 0.0
    late_ticks: int = 0
    missed_ticks: int = 0
    repeated_frames: int = 0
    dropped_frames: int = 0


@dataclass
class EpisodeOutcome:
    # "save", "discard", "stop" (save, then end the session) or "skip" (nothing saved, next instruction)
    kind: str
    index: int
    steps: int
    duration_s: float
    ended_at_ns: int
    late_ticks: int
    missed_ticks: int
    max_lateness_s: float
    repeated_frames: dict[str, int] = field(default_factory=dict)
    dropped_frames: dict[str, int] = field(default_factory=dict)
    saved: Future | None = None
    success: bool | None = None
    # Wall-clock seconds the episode took; equals duration_s only when recorded in real time.
    wall_duration_s: float = 0.0


def sleep_until(deadline_ns: int) -> None:
    """Sleep to a deadline; the last half millisecond is spun because sleep overshoots it."""
    while True:
        remaining = deadline_ns - time.monotonic_ns()
        if remaining <= 0:
            return
        if remaining > 600_000:
            time.sleep((remaining - 500_000) / 1e9)
        elif remaining > 50_000:
            time.sleep(0)
        else:
            return


class Recorder:
    def __init__(
        self,
        robot: Robot,
        teleop: Teleop,
        cameras: Sequence[Camera],
        writer: AsyncEpisodeWriter,
        *,
        fps: float,
        late_threshold_s: float = LATE_THRESHOLD_S,
        frame_buffer_s: float = FRAME_BUFFER_S,
        realtime: bool = True,
        priority: RealtimeScope | None = None,
    ) -> None:
        self.robot, self.teleop, self.cameras, self.writer = robot, teleop, list(cameras), writer
        self.fps = fps
        self.realtime = realtime
        # Real-time scheduling while an episode records in real time (never on simulated time: that loop
        # never sleeps, and at real-time priority it would starve the machine).
        self.priority = priority if realtime else None
        self.late_threshold_s = late_threshold_s
        # Steps whose frames are still being made, at most; one more and the loop waits for the oldest.
        self.max_pending_steps = max(1, math.ceil(frame_buffer_s * fps))
        self.max_pending_seen = 0

    def record_episode(
        self,
        *,
        max_duration_s: float,
        attrs: dict[str, Any],
        poll_keys: Callable[[], set[Event]] | None = None,
        on_tick: Callable[[TickStatus], None] | None = None,
        status_every: int = 5,
        fresh_after_ns: int | None = None,
    ) -> EpisodeOutcome:
        """Record until the time limit, a teleop event or a key; the file is finished in the background."""
        period_ns = round(1e9 / self.fps)
        max_steps = max(1, round(max_duration_s * self.fps))
        status = TickStatus()
        late = missed = 0
        max_lateness = 0.0
        repeated = {c.name: 0 for c in self.cameras}
        dropped = {c.name: 0 for c in self.cameras}
        last_index: dict[str, int] = {}
        events: set[Event] = set()
        sync_cams = [c for c in self.cameras if c.synchronous]
        other_cams = [c for c in self.cameras if not c.synchronous]
        # A synchronous camera slower than the loop captures on the ticks where its next frame is
        # due on the episode's schedule, and its last frame stands in between (expected repeats).
        cam_ratio = {c.name: min(1.0, c.fps / self.fps) if c.fps > 0 else 1.0 for c in sync_cams}
        last_capture: dict[str, tuple[int, Future[Frame]]] = {}
        pending: deque[tuple[Step, dict[str, Frame | Future[Frame]]]] = deque()
        if fresh_after_ns is not None:
            # A synchronous camera's first capture is of the first tick's state: nothing to wait for.
            for cam in other_cams:
                cam.wait_for_frame(fresh_after_ns)
        # Taken before the first tick, so that a replay can start from the scene that tick saw.
        attrs = {**attrs, **self.robot.scene_attrs()}
        index = self.writer.begin(attrs)
        old_switch = sys.getswitchinterval()
        if self.realtime:
            sys.setswitchinterval(_SWITCH_INTERVAL_S)
        scope = self.priority
        # Before --cpu pins this thread: the CPUs that count are all those the recorder may use.
        meter = ContentionMeter()
        if scope is not None:
            # Before the clock starts: locking memory and raising threads takes a few milliseconds.
            try:
                scope.__enter__()
            except BaseException:
                self.writer.discard()
                sys.setswitchinterval(old_switch)
                raise
        # Twice a second the scope raises threads started meanwhile (an encoder pool starts lazily).
        refresh_every = max(1, round(self.fps / 2))
        if self.realtime:
            await_phases(self.cameras)
        # Last before the clock starts: a pose stream's own clock starts with the teleop's episode, and
        # raising threads and locking a large process's memory above take tens of milliseconds.
        try:
            self.teleop.start_episode()
        except BaseException:
            self.writer.discard()
            sys.setswitchinterval(old_switch)
            if scope is not None:
                scope.__exit__(None, None, None)
            raise
        counters_before = {"robot": self.robot.counters(), "teleop": self.teleop.counters()}
        wall_t0 = time.monotonic_ns()
        t0 = aligned_start(self.cameras, wall_t0, period_ns) if self.realtime else wall_t0
        k = steps = 0

        if self.realtime:
            def seconds(ns: int) -> float:
                return (ns - t0) / 1e9
        else:
            # Simulated time counts whole periods: k / fps exactly, the same for a step and its frames.
            def seconds(ns: int) -> float:
                return round((ns - t0) / period_ns) / self.fps

        def hand_over(limit: int, keep: int = 0) -> None:
            """Send the steps whose frames are ready to the writer, in order; wait while over ``limit``.

            ``keep`` newest steps stay: the current tick's step gets its own CPU time once the tick is done.
            """
            while len(pending) > keep:
                step, frames = pending[0]
                if len(pending) <= limit and not all(
                    f.done() for f in frames.values() if isinstance(f, Future)
                ):
                    return
                pending.popleft()
                got = {name: _frame_of(name, f) for name, f in frames.items()}
                for name, fr in got.items():
                    prev = last_index.get(name)
                    if prev is not None:
                        if fr.index == prev:
                            repeated[name] += 1
                        elif fr.index > prev + 1:
                            dropped[name] += fr.index - prev - 1
                    last_index[name] = fr.index
                step.frames = {n: f.image for n, f in got.items()}
                step.frame_time = {n: seconds(f.capture_ns) for n, f in got.items()}
                step.frame_index = {n: f.index for n, f in got.items()}
                self.writer.add(step)

        try:
            meter.start()
            while steps < max_steps:
                deadline = t0 + k * period_ns
                if self.realtime:
                    sleep_until(deadline)
                    now = time.monotonic_ns()
                    if now - deadline >= period_ns:
                        behind = (now - deadline) // period_ns
                        missed += int(behind)
                        k += int(behind)
                        deadline = t0 + k * period_ns
                    lateness = (now - deadline) / 1e9
                    if lateness > self.late_threshold_s:
                        late += 1
                    max_lateness = max(max_lateness, lateness)
                else:
                    # Simulated time: the tick happens exactly on schedule, whenever the last one is done.
                    now, lateness = deadline, 0.0
                tick_wall, tick_cpu = time.monotonic_ns(), time.thread_time_ns()

                observation = self.robot.observe()
                # Right after observing: the synchronous cameras capture the state just observed.
                frames: dict[str, Frame | Future[Frame]] = {}
                for cam in sync_cams:
                    last = last_capture.get(cam.name)
                    r = cam_ratio[cam.name]
                    if last is None or math.floor(k * r + 1e-9) > math.floor(last[0] * r + 1e-9):
                        last = (k, cam.request(now))
                        last_capture[cam.name] = last
                    frames[cam.name] = last[1]
                for cam in other_cams:
                    frames[cam.name] = cam.latest()
                if self.teleop.uses_frames:
                    self.teleop.see_frames(frames)
                command = self.teleop.read(observation)
                sent = self.robot.act(command.action)

                pending.append((
                    Step(
                        timestamp=seconds(now),
                        numeric={**observation, "action": sent, **command.extra},
                        lateness=lateness,
                    ),
                    frames,
                ))
                self.max_pending_seen = max(self.max_pending_seen, len(pending))
                hand_over(self.max_pending_steps, keep=1)
                steps += 1
                k += 1
                events = set(command.events)
                if poll_keys is not None:
                    events |= poll_keys()
                if events - EPISODE_EVENTS:
                    self.teleop.handle_events(events - EPISODE_EVENTS)
                events &= EPISODE_EVENTS
                if on_tick is not None and (steps % status_every == 0 or events):
                    wall = (time.monotonic_ns() - wall_t0) / 1e9
                    # Episode time (simulated when not real time); the rate is the loop's real one.
                    status.step = steps
                    status.elapsed_s = wall if self.realtime else steps / self.fps
                    status.loop_hz = (steps - 1) / wall if wall > 0 else 0.0
                    status.late_ticks, status.missed_ticks = late, missed
                    status.repeated_frames = sum(repeated.values())
                    status.dropped_frames = sum(dropped.values())
                    on_tick(status)
                if scope is not None and steps % refresh_every == 0:
                    scope.refresh()
                # The tick's own cost, for doctor to tell a slow loop from a busy machine.
                step = pending[-1][0]
                step.loop_cpu = (time.thread_time_ns() - tick_cpu) / 1e9
                step.loop_busy = (time.monotonic_ns() - tick_wall) / 1e9
                if events:
                    break
            ended = time.monotonic_ns()
            context = meter.stop()
            hand_over(0)
        except BaseException:
            # Ctrl-C or a device failure mid-episode: drop the unfinished episode, keep every earlier one.
            self.writer.discard()
            raise
        finally:
            sys.setswitchinterval(old_switch)
            if scope is not None:
                scope.__exit__(None, None, None)
        context["realtime"] = (scope.description if scope is not None
                               else "normal (not requested)" if self.realtime else "simulated time")
        context["cpu_pin"] = scope.request.cpu if scope is not None else None
        wall_duration = (ended - wall_t0) / 1e9
        # Simulated, every step holds its command for one whole period.
        duration = (ended - t0) / 1e9 if self.realtime else steps / self.fps
        kind = ("skip" if Event.SKIP_TASK in events else "discard" if Event.DISCARD_EPISODE in events
                else "stop" if Event.STOP in events else "save")
        success = self.robot.success()
        outcome = EpisodeOutcome(
            kind=kind,
            index=index,
            steps=steps,
            duration_s=duration,
            ended_at_ns=ended,
            late_ticks=late,
            missed_ticks=missed,
            max_lateness_s=max_lateness,
            repeated_frames=repeated,
            dropped_frames=dropped,
            success=success,
            wall_duration_s=wall_duration,
        )
        if kind in ("discard", "skip"):
            self.writer.discard()
            return outcome
        comm_errors = {
            side: {k: v - before.get(k, 0) for k, v in now.items()}
            for side, before, now in (
                ("robot", counters_before["robot"], self.robot.counters()),
                ("teleop", counters_before["teleop"], self.teleop.counters()),
            )
            if now
        }
        summary = self.teleop.episode_summary()
        final_attrs = {
            **summary,
            "success": success,
            "comm_errors": comm_errors or None,
            "action_from_next_state": bool(self.teleop.action_from_next_state) or None,
            "late_ticks": late,
            "missed_ticks": missed,
            "duration_s": duration,
            "repeated_frames": repeated,
            "dropped_frames": dropped,
            "timing_context": context,
        }
        record = {
            "duration_s": round(duration, 4),
            "task": attrs.get("task"),
            # A task list's instruction: which task and paraphrase (info and balanced resumes count them).
            **{k: attrs[k] for k in ("task_id", "task_family", "paraphrase_index") if k in attrs},
            "success": success,
            "start_time": attrs.get("start_time"),
            "device": attrs.get("device"),
            "late_ticks": late,
            "missed_ticks": missed,
            "repeated_frames": repeated,
            "dropped_frames": dropped,
            "comm_errors": comm_errors or None,
            **summary,
        }
        outcome.saved = self.writer.end(final_attrs, record)
        return outcome


def _frame_of(name: str, f: Frame | Future[Frame]) -> Frame:
    if not isinstance(f, Future):
        return f
    try:
        return f.result(timeout=FRAME_TIMEOUT_S)
    except FutureTimeout:
        raise CameraError(f"camera {name!r}: no frame {FRAME_TIMEOUT_S:g} s after the tick asked for it") from None


# A tick keeps at least this far from a camera's frame arrivals, or this many times the arrivals' jitter.
_MIN_MARGIN_NS = 2_000_000
_JITTER_MARGINS = 4
_PHASE_FRAMES = 4


def await_phases(cameras: Sequence[Camera], timeout_s: float = 0.3) -> None:
    """Wait (briefly) until every free-running camera has delivered enough frames to know its phase.

    Just after the cameras open, the first episode would otherwise start at an arbitrary phase.
    """
    deadline = time.monotonic() + timeout_s
    for cam in cameras:
        if not cam.free_running or cam.synchronous:
            continue
        while len(cam.recent_capture_ns()) < _PHASE_FRAMES and time.monotonic() < deadline:
            time.sleep(0.005)


def aligned_start(cameras: Sequence[Camera], now_ns: int, period_ns: int) -> int:
    """A start time whose ticks come shortly after the frame arrivals of free-running cameras.

    A camera running at the control rate delivers one frame per tick; if its frames
    arrive just when ticks run, timing jitter makes a tick take the same frame twice
    and the next one skip a frame. So ticks keep a margin from every such camera's
    arrival phase (four times its measured jitter, at least 2 ms); within that, the
    phase where the frames a tick takes are freshest on average wins. Where no phase
    leaves the margin free, the one farthest from every arrival does.
    """
    phases, jitters = [], []
    for cam in cameras:
        if not cam.free_running:
            continue
        # The last few frames only: a camera's first frames after opening come at irregular times.
        caps = np.asarray(cam.recent_capture_ns()[-8:], dtype=np.int64)
        if len(caps) < _PHASE_FRAMES:
            continue
        cam_period = float(np.median(np.diff(caps)))
        if abs(cam_period - period_ns) > 0.1 * period_ns:
            continue  # other rates repeat or skip frames by arithmetic, not by phase
        angle = 2 * np.pi * (caps % period_ns) / period_ns
        mean = np.arctan2(np.sin(angle).mean(), np.cos(angle).mean()) % (2 * np.pi)
        phases.append(mean / (2 * np.pi) * period_ns)
        # How far single frames strayed from that phase (a drifting rate counts as jitter too).
        off = (angle - mean + np.pi) % (2 * np.pi) - np.pi
        jitters.append(float(np.abs(off).max()) / (2 * np.pi) * period_ns)
    if not phases:
        return now_ns
    margin = min(max(_MIN_MARGIN_NS, _JITTER_MARGINS * max(jitters)), period_ns / 4)
    candidates = np.arange(64) * period_ns / 64
    age = (candidates[:, None] - np.asarray(phases)[None, :]) % period_ns  # each camera's frame age at a tick
    dist = np.minimum(age, period_ns - age).min(axis=1)
    safe = dist >= margin
    best = int(np.argmin(np.where(safe, age.mean(axis=1), np.inf))) if safe.any() else int(np.argmax(dist))
    offset = int(candidates[best])
    return now_ns + (offset - now_ns) % period_ns
