"""``telecorder replay``: send a recorded episode's actions to a robot, and measure the drift.

The recorded actions go out one per control period at the recording's rate (or at a
fraction of it, ``speed``, where each action is held longer), through the
same control loop as recording (:class:`.recorder.Recorder`) and the same safety as a
leader arm (:class:`.start_ramp.StartRamp`: the follower must stand near the episode's
first recorded state, the remaining offset is ramped out over a second, no command moves
a joint more than ``max_step`` per tick). Nothing is written unless ``out`` is given;
then the replay is recorded as a normal dataset (device ``replay``, attribute
``replay_of``), so that it can be viewed or compared like any other.

On the simulated arm the scene is first put back as the episode started: the full
simulator state its ``sim_scene`` attribute holds (see :meth:`SimEnv.scene_state`), else
the cube pose of its first ``observation.environment_state``; older episodes have
neither and replay in whatever scene the reset made (said in the report). The report
gives the drift of the measured state from the recorded one per joint (see
:mod:`.replay_drift`) and whether the task still succeeds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ..collect.interfaces import Event, Robot, Teleop, TeleopOutput
from ..collect.start_ramp import StartRamp
from ..datasets.features import CLOCK_MONOTONIC, check_fps
from ..errors import DeviceError, TelecorderError
from .config import MIN_SPEED, ReplayConfig
from .drift import drift_stats
from .source import (
    ENV_STATE,
    STATE,
    RecordedEpisode,
    check_action_space,
    load_episode,
)


class ReplayTeleop(Teleop):
    """The recorded actions as a teleop device, one per tick, through the start check and ramp.

    It also keeps what the robot measured at each tick, for the drift report.
    """

    device_type = "replay"

    def __init__(self, ep: RecordedEpisode, ramp: StartRamp, *, reference: np.ndarray | None,
                 compare: list[str], on_episode_start: Callable[[], None] | None = None) -> None:
        self.ep, self.ramp, self.reference, self.compare = ep, ramp, reference, compare
        self._on_episode_start = on_episode_start
        self.ticks = 0
        self.observed: dict[str, list[np.ndarray]] = {name: [] for name in compare}

    def connect(self) -> None:
        pass

    def start_episode(self) -> None:
        if self._on_episode_start is not None:
            self._on_episode_start()
        self.ramp.reset(reference=self.reference)
        self.ticks = 0
        self.observed = {name: [] for name in self.compare}

    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        for name in self.compare:
            self.observed[name].append(np.array(observation[name], dtype=np.float64))
        t = min(self.ticks, len(self.ep) - 1)
        self.ticks += 1
        command = self.ramp.command(self.ep.action[t], observation[STATE])
        return TeleopOutput(command, {Event.SAVE_EPISODE} if self.ticks >= len(self.ep) else set())

    def episode_summary(self) -> dict[str, Any]:
        return {"replay_of": {"dataset": str(self.ep.dataset), "episode": self.ep.index}}

    def disconnect(self) -> None:
        pass


class _NoWriter:
    """The recorder's writer when nothing is to be kept: every step is dropped."""

    def begin(self, attrs: dict[str, Any]) -> int:
        return 0

    def add(self, step: object) -> None:
        pass

    def end(self, attrs: dict[str, Any], record: dict[str, Any]) -> Future:
        done: Future = Future()
        done.set_result({})
        return done

    def discard(self) -> None:
        pass


def replay(cfg: ReplayConfig, console: Console) -> dict[str, Any]:
    """Replay one episode; returns the report (``print_report`` shows it, ``--json`` prints it)."""
    from .setup import make_robot, scene_restorer, sim_cameras

    if cfg.robot not in ("sim", "dynamixel"):
        raise TelecorderError(f"unknown robot {cfg.robot!r}; replay drives 'sim' or 'dynamixel'")
    if not cfg.realtime and cfg.robot != "sim":
        raise TelecorderError("--no-realtime runs on simulated time, which a real arm cannot follow; "
                              "use it with --robot sim only")
    if not MIN_SPEED <= cfg.speed <= 1:  # NaN fails it too
        raise TelecorderError(f"--speed {cfg.speed:g}: replay runs from {MIN_SPEED:g} (a hundredth of the recorded "
                              "rate) to 1 (the recorded rate); faster would ask the arm for moves it never made")
    ep = load_episode(cfg.dataset, cfg.episode)
    try:
        check_fps(cfg.rate(ep), "the replay's control rate (fps x --speed)")
    except ValueError as e:
        raise TelecorderError(f"{cfg.dataset}: {e}; choose a --speed closer to 1") from e
    cleanups: list[Callable[[], None]] = []
    try:
        robot, robot_name = make_robot(cfg, ep, cleanups)
        notes = check_action_space(ep, robot, robot_name)
        feats = {f.name: f for f in robot.features()}
        compare = [n for n in (STATE, ENV_STATE)
                   if n in ep.states and n in feats and tuple(feats[n].shape) == ep.states[n].shape[1:]]
        if STATE not in compare:
            notes.append(f"the dataset has no {STATE} matching {robot_name}'s, so there is no drift to report")
        restore, scene = scene_restorer(ep, robot)
        reference = ep.states[STATE][0] if STATE in compare else None
        names = list(feats["action"].names or [f"dim{i}" for i in range(ep.action.shape[1])])
        max_step = _step_limits(ep, cfg.max_step, names, notes)
        ramp = StartRamp(
            names, fps=cfg.rate(ep), start_tolerance=cfg.start_tolerance, ramp_s=cfg.ramp_s, max_step=max_step,
            source=f"episode {ep.index}'s first recorded state" if reference is not None else "the first action",
            remedy="move the arm to where the episode started (or pass a larger --start-tolerance)",
        )
        teleop = ReplayTeleop(ep, ramp, reference=reference, compare=compare, on_episode_start=restore)
        notes += _timing_notes(ep)
        interrupted = False
        try:
            if cfg.out is not None:
                success = _record(cfg, ep, robot, teleop, sim_cameras(cfg, ep, robot, notes), console)
            else:
                success = _run(cfg, ep, robot, teleop, console)
        except KeyboardInterrupt:
            interrupted, success = True, None
            notes.append("stopped by Ctrl-C" + ("; nothing was recorded" if cfg.out is not None else ""))
    finally:
        for fn in reversed(cleanups):
            with contextlib.suppress(Exception):
                fn()
    drift = {}
    for name in compare:
        observed = teleop.observed[name]
        d = drift_stats(ep.states[name], np.array(observed) if observed else np.zeros((0,)),
                        ep.info.features[name].names)
        d["unit"] = feats[name].unit
        drift[name] = d
    steps = len(teleop.observed[compare[0]]) if compare else teleop.ticks
    recorded_success = ep.attrs.get("success")
    return {
        "dataset": str(ep.dataset),
        "episode": ep.index,
        "robot": robot_name,
        "steps": steps,
        "recorded_steps": len(ep),
        "fps": cfg.rate(ep),
        "speed": cfg.speed,
        "scene": scene,
        "drift": drift,
        "success": {"recorded": recorded_success if isinstance(recorded_success, bool) else None,
                    "replayed": success},
        "notes": notes,
        "interrupted": interrupted,
        "out": str(cfg.out) if cfg.out is not None and not interrupted else None,
    }


def _step_limits(ep: RecordedEpisode, max_step: float, names: list[str], notes: list[str]) -> np.ndarray:
    """The per-tick step limit of each joint: teleop's ``max_step``, except for a gripper.

    A gripper that an end-effector device snapped shut in one tick (a VR trigger, a gamepad
    button) was sent that step when recorded; clipping it would make the replay drift from
    the recording by the clipping alone (measured: up to 0.57 on a VR gripper). So a gripper
    may step as far as the recording did. Arm joints keep the limit whatever the recording
    says: steps beyond it come from other units or damaged data, not from our devices.
    """
    limits = np.full(ep.action.shape[1], float(max_step))
    if len(ep) < 2:
        return limits
    recorded = np.abs(np.diff(ep.action, axis=0)).max(axis=0)
    fast = []
    for i in np.flatnonzero(recorded > limits):
        if names[i] == "gripper":
            limits[i] = min(float(recorded[i]), 1.0)  # normalized 0..1: one full stroke at most
            notes.append(f"the recording moves the gripper by up to {recorded[i]:.3g} per tick; the replay "
                         f"allows that step as recorded (arm joints: {max_step:g} per tick)")
        else:
            fast.append(f"{names[i]} {recorded[i]:.3g}")
    if fast:
        notes.append(f"the recording moves joints by more than {max_step:g} per tick ({', '.join(fast)}); the "
                     "replay limits each tick's step to that, so those moves take longer (wrong units or damaged data?)")
    return limits


def _timing_notes(ep: RecordedEpisode) -> list[str]:
    if ep.timestamps is None or len(ep.timestamps) < 2 or ep.info.clock != CLOCK_MONOTONIC:
        return []
    gaps = np.diff(np.asarray(ep.timestamps, dtype=np.float64)) * ep.fps
    missed = int(np.sum(np.maximum(np.round(gaps) - 1, 0)))
    if not missed:
        return []
    return [f"the recording missed {missed} control tick(s) (its loop ran late); the replay sends one action "
            "per period, so those actions are held for a shorter time than when recorded"]


def _run(cfg: ReplayConfig, ep: RecordedEpisode, robot: Robot, teleop: ReplayTeleop, console: Console) -> bool | None:
    """Play the episode through the control loop without recording anything."""
    from rich.progress import BarColumn, Progress, TextColumn

    from ..collect.recorder import Recorder, TickStatus

    connected: list[Robot | Teleop] = []
    try:
        robot.connect()
        connected.append(robot)
        teleop.connect()
        connected.append(teleop)
        recorder = Recorder(robot, teleop, [], _NoWriter(), fps=cfg.rate(ep), realtime=cfg.realtime)  # type: ignore[arg-type]
        columns = (TextColumn(f"[bold]replay of episode {ep.index}"), BarColumn(bar_width=24),
                   TextColumn("{task.completed:.0f}/{task.total:.0f} steps"))
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("", total=len(ep))

            def on_tick(s: TickStatus) -> None:
                progress.update(task, completed=s.step)

            outcome = recorder.record_episode(max_duration_s=(len(ep) + 2) / cfg.rate(ep), attrs={}, on_tick=on_tick)
        return outcome.success
    finally:
        for dev in reversed(connected):
            with contextlib.suppress(Exception):
                dev.disconnect()


def _record(cfg: ReplayConfig, ep: RecordedEpisode, robot: Robot, teleop: ReplayTeleop, cameras: list,
            console: Console) -> bool | None:
    """Play the episode as a one-episode recording session into ``cfg.out``."""
    from ..collect.session import RecordingSession, SessionConfig

    task = str(ep.attrs.get("task") or ep.attrs.get("language_instruction") or "")
    session = RecordingSession(robot, teleop, cameras, SessionConfig(
        out=Path(cfg.out),  # type: ignore[arg-type]
        episodes=1, episode_time_s=(len(ep) + 2) / cfg.rate(ep), reset_time_s=0.0, task=task, fps=cfg.rate(ep),
        image_encoding=ep.info.image_encoding if ep.info.image_encoding in ("jpeg", "png") else "jpeg",
        realtime=cfg.realtime,
    ), console=console)
    summary = session.run()
    if not summary.saved:
        raise DeviceError(f"the replay of episode {ep.index} was not saved in {cfg.out}")
    return summary.outcomes[-1].success if summary.outcomes else None
