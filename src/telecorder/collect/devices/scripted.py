"""A teleop device driven by a script instead of a person, so datasets can be made unattended.

``expert``: the sim's pick-and-lift expert (randomized cube pose, smooth trajectories);
it asks to save the episode once the cube has been lifted and held.
``sweep``: smooth joint-space motion within the actuator limits, for any user MJCF arm
that has no task to solve.
"""

from __future__ import annotations

import numpy as np

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
        self._t = 0
        if script == "expert":
            from ...sim.env import SimModelError
            from ...sim.expert import ScriptedExpert

            if not robot.env.has_task:
                raise SimModelError(
                    f"{robot.env.model_path}: the scripted expert needs the built-in task "
                    "(a body named 'cube' and a site named 'ee_site'); use '--script sweep' for other models"
                )
            self._expert = ScriptedExpert(robot.env, seed=int(self._rng.integers(2**31)))

    def connect(self) -> None:
        pass

    def start_episode(self) -> None:
        self._t = 0
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
