"""A teleop device driven by a script instead of a person, so datasets can be made unattended.

``expert``: the sim's scripted expert for the episode's task (``sim.task_expert.make_expert``):
on the pick scene the pick-and-lift expert, on a scene with a task suite (``cubes``) the expert
of the task the session sets before each episode (:meth:`ScriptedTeleop.set_task`). It asks
to save the episode once its task is done.
``sweep``: smooth joint-space motion within the actuator limits, for any user MJCF arm
that has no task to solve.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import DeviceError
from ..interfaces import Event, Teleop, TeleopOutput
from ..robots.sim import SimRobot

SCRIPTS = ("expert", "sweep")


class ScriptedTeleop(Teleop):
    device_type = "scripted"

    def __init__(self, robot: SimRobot, *, script: str = "expert", seed: int | None = None) -> None:
        if script not in SCRIPTS:
            raise ValueError(f"unknown script {script!r}; choose one of {', '.join(SCRIPTS)}")
        self.robot, self.script = robot, script
        self._rng = np.random.default_rng(seed)
        self._expert = None
        self._experts: dict[str, Any] = {}  # one per task, made when the task first comes
        self._t = 0
        if script == "expert":
            from ...sim.env import SimModelError

            if not robot.env.has_task:
                raise SimModelError(
                    f"{robot.env.model_path}: the scripted expert needs the built-in task "
                    "(a body named 'cube' and a site named 'ee_site'); use '--script sweep' for other models"
                )
            if not robot.multi_object:
                # One object, one task: the pick-and-lift expert, whatever the instruction says.
                self._expert = make_task_expert(robot.env, None, seed=int(self._rng.integers(2**31)))

    def set_task(self, task: Any, instruction: str = "") -> None:
        """The expert of the next episode's task (the session checked that the scene's suite has it)."""
        if self.script != "expert" or not self.robot.multi_object:
            return
        if task is None:
            raise DeviceError(f"the scripted expert cannot do {instruction!r}: it is no task of the scene's suite "
                              "(record --tasks with the suite's instructions)")
        if task.task_id not in self._experts:
            self._experts[task.task_id] = make_task_expert(self.robot.env, task, seed=int(self._rng.integers(2**31)))
        self._expert = self._experts[task.task_id]

    def connect(self) -> None:
        pass

    def start_episode(self) -> None:
        self._t = 0
        if self.script == "expert" and self._expert is None:
            raise DeviceError("the scripted expert on a scene of several objects needs a task before the episode "
                              "(collect --tasks SPEC, or --task with one of the suite's instructions)")
        if self._expert is not None:
            self._expert.reset()
        else:
            env = self.robot.env
            self._phase = self._rng.uniform(0, 2 * np.pi, len(env.joint_names))
            self._freq = self._rng.uniform(0.15, 0.4, len(env.joint_names))
            self._start = env.joint_positions()

    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        self._t += 1
        if self._expert is not None:
            action = self._expert.act()
            return TeleopOutput(action, {Event.SAVE_EPISODE} if self._expert.done else set())
        env = self.robot.env
        t = self._t * env.control_dt
        mid, half = (env.action_high + env.action_low) / 2, (env.action_high - env.action_low) / 2
        target = mid + 0.6 * half * np.sin(2 * np.pi * self._freq * t + self._phase)
        # Blend in from where the arm stands so the first commands do not jump.
        blend = min(1.0, t / 1.0)
        return TeleopOutput((1 - blend) * self._start + blend * target)

    def disconnect(self) -> None:
        pass


def make_task_expert(env: Any, task: Any, seed: int | None = None) -> Any:
    """The sim's scripted expert for ``task`` (None: the pick scene's pick-and-lift expert)."""
    from ...sim.task_expert import make_expert

    return make_expert(env, task, seed=seed)
