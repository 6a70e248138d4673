"""A recording session: devices up, N episodes with resets between them, devices down.

This is the part the operator sees: a progress line per episode (elapsed, loop rate,
late ticks, dropped frames), keys to save / re-record / quit, and a summary at the
end. Recording and writing are the recorder's and the writer's; this module only
sequences them and makes sure every way out (done, ``q``, Ctrl-C, a device failure)
leaves each saved episode complete on disk.

A session with ``realtime=False`` runs a simulation on simulated time (see
:mod:`.recorder`): episodes follow each other without the reset pause, and the
dataset (``meta/info.json`` ``extra.clock``) and each episode (attr ``clock``) say
``"simulation"`` instead of ``"monotonic"``, so nobody reads its times as wall time.
Appending to a dataset recorded on the other clock is refused (a schema difference).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from ..datasets.async_writer import AsyncEpisodeWriter
from ..datasets.dataset import DatasetWriter
from ..datasets.features import CLOCK_MONOTONIC, CLOCK_SIMULATION, DatasetInfo, image_feature
from ..errors import TelecorderError
from .devices.keyboard import TerminalKeys
from .interfaces import Camera, Event, Robot, Teleop
from .key_bindings import Controls, controls_for
from .live_view import LiveView, open_live_view
from .recorder import EpisodeOutcome, Recorder, TickStatus, sleep_until

# Above this a Python control loop on a desktop OS cannot keep ticks within 2 ms of schedule.
MAX_CONTROL_HZ = 200


@dataclass
class SessionConfig:
    out: Path
    episodes: int = 10
    episode_time_s: float = 20.0
    reset_time_s: float = 2.0
    task: str = ""
    fps: float = 30.0
    resume: bool = False
    image_encoding: str = "jpeg"
    jpeg_quality: int = 90
    operator: str | None = None
    seed: int | None = None
    encode_threads: int = 2
    # The live view with the cameras. A device that reads its keys from the window (the keyboard)
    # opens it regardless, keys only, and fails when no window can open.
    display: bool = False
    # Whose key bindings apply (key_bindings.controls_for); None: the teleop's device_type.
    controls: str | None = None
    # False: pace by simulated time (sim devices only; the factory checks that).
    realtime: bool = True


@dataclass
class SessionSummary:
    out: Path
    saved: list[dict[str, Any]] = field(default_factory=list)
    discarded: int = 0
    outcomes: list[EpisodeOutcome] = field(default_factory=list)
    save_latency_s: list[float] = field(default_factory=list)
    writer_frames_encoded: int = 0
    writer_max_queue: int = 0


class RecordingSession:
    def __init__(
        self,
        robot: Robot,
        teleop: Teleop,
        cameras: Sequence[Camera],
        config: SessionConfig,
        console: Console | None = None,
    ) -> None:
        if config.episodes < 1:
            raise ValueError("--episodes must be at least 1")
        if config.episode_time_s <= 0:
            raise ValueError("--episode-time must be positive")
        if not 1 <= config.fps <= MAX_CONTROL_HZ:
            raise ValueError(f"--fps {config.fps:g}: the recorder supports control rates of 1 Hz up to {MAX_CONTROL_HZ} Hz")
        self.robot, self.teleop, self.cameras, self.config = robot, teleop, list(cameras), config
        self.console = console or Console()
        self._saved_at_ns: dict[int, int] = {}
        self.controls: Controls = controls_for(config.controls or teleop.device_type)
        self._live: LiveView | None = None

    def _note_saved(self, fut: Future) -> None:
        """When an episode's file became complete: the end-to-saved latency in the summary."""
        self._saved_at_ns[id(fut)] = time.monotonic_ns()

    def dataset_info(self) -> DatasetInfo:
        feats = list(self.robot.features()) + list(self.teleop.features())
        feats += [
            image_feature(c.name, c.height, c.width, unit="RGB; capture time in observation/images_timestamp")
            for c in self.cameras
        ]
        return DatasetInfo.create(
            feats,
            fps=self.config.fps,
            robot_type=self.robot.robot_type,
            image_encoding=self.config.image_encoding,
            jpeg_quality=self.config.jpeg_quality,
            extra={"clock": self._clock},
        )

    @property
    def _clock(self) -> str:
        return CLOCK_MONOTONIC if self.config.realtime else CLOCK_SIMULATION

    def run(self) -> SessionSummary:
        summary = SessionSummary(out=self.config.out)
        started: list[Camera] = []
        connected: list[Any] = []
        writer: AsyncEpisodeWriter | None = None
        dataset: DatasetWriter | None = None
        pending: list[tuple[Future, int]] = []
        # The window first: a device nobody can steer without it fails before anything is recorded.
        self._live = open_live_view(self.cameras, self.controls, self.config.display,
                                    lambda m: self.console.print(f"[yellow]warning:[/] {m}", highlight=False))
        try:
            self.robot.connect()
            connected.append(self.robot)
            self.teleop.connect()
            connected.append(self.teleop)
            for cam in self.cameras:
                cam.start()
                started.append(cam)
            dataset = DatasetWriter(self.config.out, self.dataset_info(), resume=self.config.resume)
            for line in dataset.recovered:
                self.console.print(f"[yellow]recovered:[/] {line}", highlight=False)
            writer = AsyncEpisodeWriter(dataset, encode_threads=self.config.encode_threads)
            self._loop(dataset, writer, summary, pending)
        except KeyboardInterrupt:
            self.console.print("[yellow]Interrupted:[/] the episode in progress was discarded.")
            raise
        finally:
            self._finish_saves(pending, summary)
            if writer is not None:
                summary.writer_frames_encoded = writer.frames_encoded
                summary.writer_max_queue = writer.max_queue_depth
                with contextlib.suppress(TelecorderError):
                    writer.close()
            if dataset is not None:
                dataset.close()
            for cam in reversed(started):
                with contextlib.suppress(Exception):
                    cam.stop()
            for dev in reversed(connected):
                with contextlib.suppress(Exception):
                    dev.disconnect()
            if self._live is not None:
                self._live.close()
                self._live = None
            if dataset is not None:
                self.console.print(
                    f"{len(summary.saved)} episode(s) saved this session in {self.config.out} "
                    f"(dataset total: {dataset.info.total_episodes})"
                )
        return summary

    def _loop(
        self,
        dataset: DatasetWriter,
        writer: AsyncEpisodeWriter,
        summary: SessionSummary,
        pending: list[tuple[Future, int]],
    ) -> None:
        cfg = self.config
        recorder = Recorder(self.robot, self.teleop, self.cameras, writer, fps=cfg.fps, realtime=cfg.realtime)
        rng = np.random.default_rng(cfg.seed)
        live = self._live
        with TerminalKeys(controls=self.controls) as keys:
            if keys.enabled:
                self.console.print(self.controls.terminal_line())

            def poll() -> set[Event]:
                return keys.poll() | (live.poll() if live is not None else set())

            saved = 0
            first = True
            while saved < cfg.episodes:
                # A simulated scene resets itself: no pause for a person between episodes.
                if (not first and cfg.realtime and cfg.reset_time_s > 0
                        and self._reset_phase(poll, keys.enabled, live)):
                    break
                first = False
                reset_ns = time.monotonic_ns()  # before the reset: a frame captured after it shows the new scene
                self.robot.reset(int(rng.integers(2**31)))
                attrs = self._episode_attrs()
                outcome = self._record_one(recorder, poll, saved, attrs, reset_ns, live)
                summary.outcomes.append(outcome)
                if outcome.kind == "discard":
                    summary.discarded += 1
                    self.console.print(f"episode {outcome.index} discarded; recording it again")
                    continue
                saved += 1
                assert outcome.saved is not None
                pending.append((outcome.saved, outcome.ended_at_ns))
                outcome.saved.add_done_callback(self._note_saved)
                self.console.print(_episode_line(outcome.index, outcome, cfg.realtime))
                if outcome.kind == "stop":
                    break

    def _record_one(
        self,
        recorder: Recorder,
        poll: Callable[[], set[Event]],
        saved: int,
        attrs: dict[str, Any],
        reset_ns: int,
        live: LiveView | None,
    ) -> EpisodeOutcome:
        cfg = self.config
        columns = (
            TextColumn(f"[bold]episode {saved + 1}/{cfg.episodes}"),
            BarColumn(bar_width=24),
            TextColumn("{task.completed:5.1f}/{task.total:.0f} s"),
            TextColumn("{task.fields[stats]}"),
        )
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task("", total=cfg.episode_time_s, stats="")

            def on_tick(s: TickStatus) -> None:
                stats = f"{s.loop_hz:5.1f} Hz  late {s.late_ticks}  dropped {s.dropped_frames}"
                progress.update(task, completed=min(s.elapsed_s, cfg.episode_time_s), stats=stats)
                if live is not None:
                    live.set_status(f"episode {saved + 1}/{cfg.episodes}  {s.elapsed_s:4.1f}/"
                                    f"{cfg.episode_time_s:g} s  {stats}   {self.controls.hint()}")

            if live is not None:
                live.set_title(f"telecorder collect ({self.controls.device}): episode {saved + 1}/{cfg.episodes} "
                               "recording")
                live.set_status(f"episode {saved + 1}/{cfg.episodes}  recording   {self.controls.hint()}")

            return recorder.record_episode(
                max_duration_s=cfg.episode_time_s,
                attrs=attrs,
                poll_keys=poll,
                on_tick=on_tick,
                fresh_after_ns=reset_ns,
            )

    def _reset_phase(self, poll: Callable[[], set[Event]], announce: bool, live: LiveView | None) -> bool:
        """Wait for the scene to be reset; True if the operator asked to quit.

        A device the follower follows (a leader arm) keeps driving it meanwhile.
        """
        end = time.monotonic() + self.config.reset_time_s
        save, stop = self.controls.first_key(Event.SAVE_EPISODE), self.controls.first_key(Event.STOP)
        if announce:
            self.console.print(f"reset the scene ({self.config.reset_time_s:g} s; [bold]{save}[/] to start now)")
        if live is not None:
            live.set_status(f"reset the scene ({self.config.reset_time_s:g} s)   {save} start now  {stop} quit")
            live.set_title(f"telecorder collect ({self.controls.device}): reset the scene")
        follow = self.teleop.follows_between_episodes
        period_ns = round(1e9 / self.config.fps)
        next_ns = time.monotonic_ns()
        while time.monotonic() < end:
            events = poll()
            if Event.STOP in events:
                return True
            if Event.SAVE_EPISODE in events:
                break
            if not follow:
                time.sleep(0.02)
                continue
            # The follower keeps following the leader while the scene is reset (through the same
            # ramp and step limit as in an episode; nothing is recorded), so the next start check
            # finds it where the operator holds the leader. A device failure here ends the session
            # as it would mid-episode: every episode saved so far stays.
            self.robot.act(self.teleop.read(self.robot.observe()).action)
            # On the control rate; a host that fell behind skips the slots it missed, no burst.
            next_ns = max(next_ns + period_ns, time.monotonic_ns())
            sleep_until(min(next_ns, int(end * 1e9)))
        return False

    def _episode_attrs(self) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        return {
            "task": self.config.task,
            "language_instruction": self.config.task,
            "robot_type": self.robot.robot_type,
            "device": self.teleop.device_type,
            "operator": self.config.operator,
            "start_time": now.isoformat(timespec="milliseconds"),
            "start_time_unix": now.timestamp(),
            "clock": self._clock,
            "cameras": {c.name: {"source": c.describe(), "fps": c.fps} for c in self.cameras},
        }

    def _finish_saves(self, pending: list[tuple[Future, int]], summary: SessionSummary) -> None:
        for fut, ended_ns in pending:
            try:
                entry = fut.result()
            except TelecorderError as e:
                self.console.print(f"[red]error:[/] {e}")
                continue
            summary.saved.append(entry)
            summary.save_latency_s.append((self._saved_at_ns.get(id(fut), time.monotonic_ns()) - ended_ns) / 1e9)
        pending.clear()


def _episode_line(number: int, o: EpisodeOutcome, realtime: bool = True) -> str:
    ok = {True: "[green]success[/]", False: "[red]failed[/]", None: ""}[o.success]
    if realtime:
        took = f"{o.duration_s:.1f} s ({(o.steps - 1) / o.duration_s if o.duration_s > 0 else 0:.1f} Hz)"
    else:
        speed = o.duration_s / o.wall_duration_s if o.wall_duration_s > 0 else 0.0
        took = f"{o.duration_s:.1f} s simulated in {o.wall_duration_s:.1f} s ({speed:.1f}x real time)"
    return (
        f"episode {number}: {o.steps} steps in {took}, late ticks {o.late_ticks}, "
        f"missed {o.missed_ticks}, dropped frames {sum(o.dropped_frames.values())}, "
        f"repeated {sum(o.repeated_frames.values())} {ok}"
    )
