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

Every episode is recorded with an instruction from the session's :class:`~.task_list.TaskList`
(``--tasks``, or the one ``--task``): before the scene is reset the robot and the device are
told the task (``set_task``: the simulator's success check, the scripted expert's plan, the
policy's instruction), and a person sees the instruction in the live view, the terminal's
progress line and the reset prompt. The skip key drops an instruction that cannot be done in
the scene as it is: nothing is saved, the skip is counted, and the next instruction comes.
"""

from __future__ import annotations

import contextlib
import threading
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
from ..datasets.index import read_index
from ..errors import TelecorderError
from .devices.keyboard import TerminalKeys
from .interfaces import Camera, Event, Robot, Teleop
from .key_bindings import Controls, controls_for
from .live_view import LiveView, open_live_view
from .realtime import RealtimeRequest, RealtimeScope
from .recorder import EpisodeOutcome, Recorder, TickStatus, sleep_until
from .task_list import Instruction, TaskList, suite_for_scene

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
    # The instructions to record (--tasks); None: ``task`` for every episode.
    tasks: TaskList | None = None
    # Real-time scheduling while an episode records in real time (collect/realtime.py); --no-rt turns it off.
    realtime_priority: bool = True
    # --cpu N: the core the control loop runs on.
    cpu: int | None = None


@dataclass
class SessionSummary:
    out: Path
    saved: list[dict[str, Any]] = field(default_factory=list)
    discarded: int = 0
    outcomes: list[EpisodeOutcome] = field(default_factory=list)
    save_latency_s: list[float] = field(default_factory=list)
    writer_frames_encoded: int = 0
    writer_max_queue: int = 0
    # Instructions skipped (the skip key): nothing saved for them.
    skipped: int = 0
    # The task list with its counts (episodes, successes, skips per task) at the end.
    tasks: TaskList | None = None


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
        scene = getattr(robot, "scene", None)
        # A plain --task on a scene with a task suite still names a suite task: its success check applies.
        self.tasks: TaskList = config.tasks if config.tasks is not None else TaskList.single(
            config.task, suite_for_scene(scene) if scene not in (None, "pick") else None)
        self._posted: list[Event] = []
        self._posted_lock = threading.Lock()
        # Checked here so that a --cpu this process may not use fails before anything connects.
        self.priority = RealtimeScope(
            RealtimeRequest(enabled=config.realtime_priority, cpu=config.cpu),
            warn=lambda m: self.console.print(f"[yellow]warning:[/] {_escape(m)}", highlight=False, soft_wrap=True),
        )

    def post(self, event: Event) -> None:
        """Deliver a session event as if its key was pressed (thread-safe): e.g. ``Event.SKIP_TASK``."""
        with self._posted_lock:
            self._posted.append(event)

    def _take_posted(self) -> set[Event]:
        with self._posted_lock:
            events, self._posted = set(self._posted), []
        return events

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
            extra={"clock": self._clock, **self._extra()},
        )

    def _extra(self) -> dict[str, Any]:
        """info.json extra: the task suite and tasks (merged with a resumed dataset's), the sim scene."""
        extra: dict[str, Any] = {}
        scene = getattr(self.robot, "scene", None)
        if scene not in (None, "pick"):
            extra["sim_scene"] = scene
        randomize = getattr(getattr(self.robot, "env", None), "randomize", None)
        if randomize:
            extra["sim_randomize"] = sorted(randomize)
        tasks = self.tasks.info_extra()
        if tasks.get("tasks") and self.config.resume:
            from ..datasets.dataset import INFO, is_dataset

            if is_dataset(self.config.out):
                old = DatasetInfo.load(self.config.out / INFO).extra.get("tasks")
                if isinstance(old, dict):
                    tasks["tasks"] = {**old, **tasks["tasks"]}
        return {**extra, **tasks}

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
                                    lambda m: self.console.print(f"[yellow]warning:[/] {_escape(m)}", highlight=False),
                                    instruction=any(t for e in self.tasks.entries for t in e.texts))
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
                self.console.print(f"[yellow]recovered:[/] {_escape(line)}", highlight=False)
            writer = AsyncEpisodeWriter(dataset, encode_threads=self.config.encode_threads)
            if self.config.resume:
                # Balanced orders and counts go on from what the dataset already holds.
                self.tasks.count_existing(read_index(self.config.out)[0])
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
            summary.tasks = self.tasks
            if dataset is not None:
                self._print_tasks(summary)
                self.console.print(
                    f"{len(summary.saved)} episode(s) saved this session in {self.config.out} "
                    f"(dataset total: {dataset.info.total_episodes})"
                    + (f"; {summary.skipped} instruction(s) skipped" if summary.skipped else "")
                )
        return summary

    def _print_tasks(self, summary: SessionSummary) -> None:
        """Per task: episodes saved (this session and any resumed ones), successes, skips."""
        tasks = self.tasks
        if not tasks.multiple:
            return
        parts = []
        for e in tasks.entries:
            n, ok, skip = tasks.episodes[e.key], tasks.successes[e.key], tasks.skipped[e.key]
            if n or skip:
                parts.append(f"{e.task_id or e.texts[0]} {ok}/{n}" + (f" ({skip} skipped)" if skip else ""))
        if parts:
            self.console.print("per task (successful/saved): " + ", ".join(parts), highlight=False)

    def _loop(
        self,
        dataset: DatasetWriter,
        writer: AsyncEpisodeWriter,
        summary: SessionSummary,
        pending: list[tuple[Future, int]],
    ) -> None:
        cfg = self.config
        tasks = self.tasks
        recorder = Recorder(self.robot, self.teleop, self.cameras, writer, fps=cfg.fps, realtime=cfg.realtime,
                            priority=self.priority)
        rng = np.random.default_rng(cfg.seed)
        live = self._live
        with TerminalKeys(controls=self.controls) as keys:
            if keys.enabled:
                self.console.print(self.controls.terminal_line())
            if tasks.multiple:
                self.console.print(f"instructions: {_escape(tasks.describe())}", highlight=False)
            elif cfg.realtime and tasks.entries[0].texts[0]:
                self.console.print(f"instruction: [bold]{_escape(tasks.entries[0].texts[0])}[/]", highlight=False)

            def poll() -> set[Event]:
                return keys.poll() | (live.poll() if live is not None else set()) | self._take_posted()

            saved = 0
            first = True
            instr = tasks.next()
            while saved < cfg.episodes and instr is not None:
                self._set_task(instr)
                # A simulated scene resets itself: no pause for a person between episodes. With several
                # instructions a person also gets the pause before the first, to read which one it is.
                if (cfg.realtime and cfg.reset_time_s > 0 and (not first or tasks.multiple)):
                    verdict = self._reset_phase(poll, keys.enabled, live, instr)
                    if verdict == "stop":
                        break
                    if verdict == "skip":
                        instr = self._skip(instr, summary)
                        continue
                first = False
                reset_ns = time.monotonic_ns()  # before the reset: a frame captured after it shows the new scene
                self.robot.reset(int(rng.integers(2**31)))
                attrs = self._episode_attrs(instr)
                outcome = self._record_one(recorder, poll, saved, attrs, reset_ns, live, instr)
                summary.outcomes.append(outcome)
                if outcome.kind == "discard":
                    summary.discarded += 1
                    self.console.print(f"episode {outcome.index} discarded; recording it again")
                    continue
                if outcome.kind == "skip":
                    instr = self._skip(instr, summary)
                    continue
                saved += 1
                tasks.record(instr, outcome.success)
                assert outcome.saved is not None
                pending.append((outcome.saved, outcome.ended_at_ns))
                outcome.saved.add_done_callback(self._note_saved)
                self.console.print(_episode_line(outcome.index, outcome, cfg.realtime)
                                   + (f"  [dim]{_escape(instr.text)}[/]" if tasks.multiple else ""))
                if outcome.kind == "stop":
                    break
                instr = tasks.next()
            if instr is None:
                self.console.print("every task has the episodes its count asks for")

    def _skip(self, instr: Instruction, summary: SessionSummary) -> Instruction | None:
        """The skip key: nothing saved for this instruction, counted; the next one."""
        summary.skipped += 1
        self.tasks.skip(instr)
        self.console.print(f"skipped: {_escape(instr.text)}", highlight=False)
        return self.tasks.next()

    def _set_task(self, instr: Instruction) -> None:
        """Tell the robot (success check) and the device (expert plan, policy instruction) the next task."""
        self.robot.set_task(instr.task)
        self.teleop.set_task(instr.task, instr.text)
        if self._live is not None:
            self._live.set_instruction(instr.text)

    def _record_one(
        self,
        recorder: Recorder,
        poll: Callable[[], set[Event]],
        saved: int,
        attrs: dict[str, Any],
        reset_ns: int,
        live: LiveView | None,
        instr: Instruction | None = None,
    ) -> EpisodeOutcome:
        cfg = self.config
        text = instr.text if instr is not None else cfg.task
        columns = (
            TextColumn(f"[bold]episode {saved + 1}/{cfg.episodes}"),
            BarColumn(bar_width=24),
            TextColumn("{task.completed:5.1f}/{task.total:.0f} s"),
            TextColumn("{task.fields[stats]}"),
            # The instruction on the status line: what the person (or the policy) is doing now.
            TextColumn(f"[bold cyan]{_escape(text)}[/]" if text else ""),
        )
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task("", total=cfg.episode_time_s, stats="")

            def on_tick(s: TickStatus) -> None:
                stats = f"{s.loop_hz:5.1f} Hz  late {s.late_ticks}  dropped {s.dropped_frames}"
                progress.update(task, completed=min(s.elapsed_s, cfg.episode_time_s), stats=stats)
                if live is not None:
                    live.set_status(f"episode {saved + 1}/{cfg.episodes}  {s.elapsed_s:4.1f}/"
                                    f"{cfg.episode_time_s:g} s  {stats}   {self._hint()}")

            if live is not None:
                live.set_title(f"telecorder collect ({self.controls.device}): episode {saved + 1}/{cfg.episodes} "
                               "recording")
                live.set_status(f"episode {saved + 1}/{cfg.episodes}  recording   {self._hint()}")
                live.set_instruction(text)

            return recorder.record_episode(
                max_duration_s=cfg.episode_time_s,
                attrs=attrs,
                poll_keys=poll,
                on_tick=on_tick,
                fresh_after_ns=reset_ns,
            )

    def _hint(self) -> str:
        events = (Event.SAVE_EPISODE, Event.DISCARD_EPISODE, Event.STOP)
        return self.controls.hint(events + ((Event.SKIP_TASK,) if self.tasks.multiple else ()))

    def _reset_phase(self, poll: Callable[[], set[Event]], announce: bool, live: LiveView | None,
                     instr: Instruction | None = None) -> str | None:
        """Wait for the scene to be reset; "stop" if the operator asked to quit, "skip" to skip the instruction.

        The next instruction is shown meanwhile (terminal prompt, live view). A device the follower
        follows (a leader arm) keeps driving it meanwhile.
        """
        end = time.monotonic() + self.config.reset_time_s
        save, stop = self.controls.first_key(Event.SAVE_EPISODE), self.controls.first_key(Event.STOP)
        skip = self.controls.first_key(Event.SKIP_TASK) if Event.SKIP_TASK in self.controls.session else None
        text = instr.text if instr is not None else ""
        can_skip = skip is not None and self.tasks.multiple
        if announce:
            self.console.print(f"reset the scene ({self.config.reset_time_s:g} s; [bold]{save}[/] to start now"
                               + (f", [bold]{skip}[/] to skip the instruction" if can_skip else "") + ")"
                               + (f"; next: [bold cyan]{_escape(text)}[/]" if text else ""), highlight=False)
        if live is not None:
            live.set_status(f"reset the scene ({self.config.reset_time_s:g} s)   {save} start now  {stop} quit"
                            + (f"  {skip} skip instruction" if can_skip else ""))
            live.set_title(f"telecorder collect ({self.controls.device}): reset the scene")
            live.set_instruction(f"next: {text}" if text else "")
        follow = self.teleop.follows_between_episodes
        period_ns = round(1e9 / self.config.fps)
        next_ns = time.monotonic_ns()
        while time.monotonic() < end:
            events = poll()
            if Event.STOP in events:
                return "stop"
            if Event.SKIP_TASK in events and self.tasks.multiple:
                return "skip"
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
        return None

    def _episode_attrs(self, instr: Instruction | None = None) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        if instr is None:
            instr = Instruction(self.config.task)
        return {
            # task, language_instruction (verbatim), task_id, paraphrase_index, task_family
            **instr.attrs(),
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
                self.console.print(f"[red]error:[/] {_escape(str(e))}")
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


def _escape(text: str) -> str:
    """An instruction shown through rich: its brackets are text, not markup."""
    from rich.markup import escape

    return escape(text)
