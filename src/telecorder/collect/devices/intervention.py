"""Human interventions while a policy drives (HG-DAgger): take over, correct, hand back.

The policy acts until the operator takes over: the toggle (terminal key ``i``, keyboard
``i``, gamepad X, VR ``x``), or, with a leader arm, moving the leader more than
``leader_threshold`` rad from where it rested when the policy got control. Another
press hands back. Taking over never makes the follower jump: the command ramps from the
policy's last command to the operator's over ``ramp_s`` seconds, within the same per-tick
step limit as teleoperation, and handing back clamps the policy's first commands the
same way.

``expert``: in simulation the scripted expert plays the operator (the expert of the episode's
task, see :meth:`ExpertCorrector.set_task`, on a scene with a task suite). It keeps a plan for the
episode; when the arm strays from that plan by more than ``expert_threshold`` rad (or the
gripper command disagrees by more than half its range) it takes over, planning the rest of
the task from the state the policy left (the lift, if the cube is already in the gripper),
so its actions label the states the policy visits, as DAgger needs. It hands back once it
has finished the phase of its plan it took over in (reached the pre-grasp pose, the grasp,
...) with the arm tracking the plan within ``expert_back`` rad for ``back_s`` seconds. That makes
DAgger measurable with nobody present.

Every step records ``intervention`` (True where the human/expert acted) and
``action_source`` (0 policy, 1 human); the episode's record counts ``human_steps``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...datasets.features import FeatureSpec
from ...errors import DeviceError
from ..interfaces import Event, Frame, Teleop, TeleopOutput
from .policy_runner import (
    INTERVENTION_FEATURES,
    SOURCE_HUMAN,
    SOURCE_POLICY,
    PolicyRunner,
)
from .scripted import make_task_expert

INTERVENERS = ("leader_arm", "gamepad", "keyboard", "vr", "expert")


class ExpertCorrector(Teleop):
    """The sim's scripted expert as an operator: its plan's command every tick."""

    device_type = "expert"

    def __init__(self, robot: Any, seed: int | None = None) -> None:
        self.robot = robot
        self._rng = np.random.default_rng(seed)
        self._experts: dict[str, Any] = {}
        self.expert: Any = None
        if not getattr(robot, "multi_object", False):
            self.expert = make_task_expert(robot.env, None, seed=seed)
        self._phase_at_takeover: str | None = None

    def set_task(self, task: Any, instruction: str = "") -> None:
        """The expert of the next episode's task, on a scene with a task suite (one per task, kept)."""
        if not getattr(self.robot, "multi_object", False):
            return
        if task is None:
            raise DeviceError(f"--intervene expert cannot correct towards {instruction!r}: it is no task of the "
                              "scene's suite")
        if task.task_id not in self._experts:
            self._experts[task.task_id] = make_task_expert(self.robot.env, task,
                                                           seed=int(self._rng.integers(2**31)))
        self.expert = self._experts[task.task_id]

    def connect(self) -> None:
        pass

    def start_episode(self) -> None:
        if self.expert is None:
            raise DeviceError("--intervene expert on a scene of several objects needs a task for each episode "
                              "(collect --tasks SPEC)")
        self.expert.reset()

    def rebase(self) -> None:
        """Taking over: plan from the state the policy left, so the corrections are labels for that state."""
        self.expert.replan()
        self._phase_at_takeover = self.expert.phase

    def at_waypoint(self) -> bool:
        """Whether the expert has finished the phase it took over in (reached the next waypoint of its plan)."""
        return self.expert.phase != self._phase_at_takeover

    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        return TeleopOutput(self.expert.act())

    def disconnect(self) -> None:
        pass


class InterventionTeleop(Teleop):
    """``collect --device policy --intervene DEVICE``: the policy drives, a person may take over."""

    device_type = "policy"

    def __init__(
        self,
        runner: PolicyRunner,
        human: Teleop,
        *,
        kind: str,
        fps: float,
        ramp_s: float = 0.5,
        max_step: float = 0.25,
        leader_threshold: float = 0.2,
        expert_threshold: float = 0.12,
        expert_back: float = 0.04,
        back_s: float = 0.5,
        gripper_index: int | None = None,
    ) -> None:
        if kind not in INTERVENERS:
            raise ValueError(f"--intervene {kind!r}: choose one of {', '.join(INTERVENERS)}")
        self.runner, self.human, self.kind = runner, human, kind
        self.uses_frames = runner.uses_frames
        self.ramp_ticks = max(1, round(ramp_s * fps))
        self.max_step = float(max_step)
        self.leader_threshold, self.expert_threshold, self.expert_back = leader_threshold, expert_threshold, expert_back
        self.back_ticks = max(1, round(back_s * fps))
        self.gripper_index = gripper_index
        self._toggle_requested = False
        self._reset_episode()

    def _reset_episode(self) -> None:
        self.human_acting = False
        self.human_steps = self.policy_steps = self.interventions = 0
        self._last: np.ndarray | None = None
        self._ramp_from: np.ndarray | None = None
        self._ramp_i = 0
        self._rest: np.ndarray | None = None  # the leader's pose when the policy got control
        self._on_track = 0
        self._toggle_requested = False

    # -- Teleop -------------------------------------------------------------------------

    def features(self) -> list[FeatureSpec]:
        return list(INTERVENTION_FEATURES)

    def check_inputs(self, observation_features: list[str], cameras: list[str]) -> None:
        self.runner.check_inputs(observation_features, cameras)

    def connect(self) -> None:
        self.runner.connect()
        self.human.connect()

    def set_task(self, task: Any, instruction: str = "") -> None:
        self.runner.set_task(task, instruction)
        self.human.set_task(task, instruction)

    def start_episode(self) -> None:
        self.runner.start_episode()
        self.human.start_episode()
        self._reset_episode()

    def see_frames(self, frames: dict[str, Frame | Any]) -> None:
        self.runner.see_frames(frames)

    def handle_events(self, events: set[Event]) -> None:
        if Event.INTERVENE in events:
            self._toggle_requested = True

    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        state = np.asarray(observation["observation.state"], dtype=np.float64).reshape(-1)
        events: set[Event] = set()
        toggle, self._toggle_requested = self._toggle_requested, False
        out: TeleopOutput | None = None
        if self.kind != "leader_arm" or self.human_acting:
            # Event devices are read every tick (their buttons are the toggle); the expert's plan
            # advances every tick whoever acts.
            out = self.human.read(observation)
            events |= out.events
            toggle |= Event.INTERVENE in out.events
        if not self.human_acting:
            toggle |= self._wants_takeover(state, out)
        elif self.kind == "expert":
            toggle = self._back_on_track(state, out)

        if toggle and not self.human_acting:
            self._take_over(state)
            out = self.human.read(observation)  # from the rebased device: starts where the arm stands
            events |= out.events
        elif toggle and self.human_acting:
            self.human_acting = False
            self._rest = None
            self.runner.resume(self._last if self._last is not None else state)

        if self.human_acting:
            assert out is not None
            self.runner.observe_only(observation)
            command = self._ramped(np.asarray(out.action, dtype=np.float64))
            self.human_steps += 1
            source = SOURCE_HUMAN
        else:
            command, _ = self.runner.step(observation)
            self.policy_steps += 1
            source = SOURCE_POLICY
        self._last = command
        events = {e for e in events if e is not Event.INTERVENE} | self.runner.success_events()
        extra = {"intervention": np.array([source == SOURCE_HUMAN]),
                 "action_source": np.array([source], np.uint8)}
        return TeleopOutput(command, events, extra)

    def episode_summary(self) -> dict[str, Any]:
        return {**self.runner.episode_summary(), "human_steps": self.human_steps,
                "policy_steps": self.policy_steps, "interventions": self.interventions}

    def counters(self) -> dict[str, int]:
        return self.human.counters()

    def disconnect(self) -> None:
        try:
            self.human.disconnect()
        finally:
            self.runner.disconnect()

    # -- switching ----------------------------------------------------------------------

    def _take_over(self, state: np.ndarray) -> None:
        self.human_acting = True
        self.interventions += 1
        self._ramp_from = self._last.copy() if self._last is not None else state.copy()
        self._ramp_i = 0
        self._on_track = 0
        rebase = getattr(self.human, "rebase", None)
        if rebase is not None:
            rebase()

    def _ramped(self, target: np.ndarray) -> np.ndarray:
        self._ramp_i += 1
        alpha = min(1.0, self._ramp_i / self.ramp_ticks)
        goal = (1 - alpha) * self._ramp_from + alpha * target
        last = self._last if self._last is not None else goal
        return last + np.clip(goal - last, -self.max_step, self.max_step)

    def _arm(self, v: np.ndarray) -> np.ndarray:
        return np.delete(v, self.gripper_index) if self.gripper_index is not None else v

    def _wants_takeover(self, state: np.ndarray, out: TeleopOutput | None) -> bool:
        if self.kind == "leader_arm":
            pose = np.asarray(self.human.leader_pose(), dtype=np.float64)
            if self._rest is None:
                self._rest = pose
            return bool(np.abs(pose - self._rest).max() > self.leader_threshold)
        if self.kind == "expert" and out is not None:
            plan = np.asarray(out.action, dtype=np.float64)
            strayed = np.abs(self._arm(state) - self._arm(plan)).max() > self.expert_threshold
            if self.gripper_index is not None and self._last is not None:
                g = self.gripper_index
                strayed |= abs(float(self._last[g]) - float(plan[g])) > 0.5
            return bool(strayed)
        return False

    def _back_on_track(self, state: np.ndarray, out: TeleopOutput | None) -> bool:
        if out is None or self._ramp_i < self.ramp_ticks:
            return False
        plan = np.asarray(out.action, dtype=np.float64)
        close = np.abs(self._arm(state) - self._arm(plan)).max() < self.expert_back
        self._on_track = self._on_track + 1 if close else 0
        # Handing back mid-motion would give the policy a state the plan is rushing through; the
        # expert hands back at the next waypoint of its plan (the end of a phase), on track there.
        at_waypoint = getattr(self.human, "at_waypoint", None)
        return self._on_track >= self.back_ticks and (at_waypoint is None or at_waypoint())
