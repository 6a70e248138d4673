"""The cubes suite's scripted experts as a ``Policy``, for ``telecorder eval benchmarks.task_policies:expert``.

A policy sees only its observation, never the simulator that runs the episode. This one reads
the instruction (``language_instruction``) to find its task (``get_suite("cubes").match``), and
the joint state plus ``observation.environment_state`` (every cube's pose and the bin's
position) to rebuild the scene in a simulator of its own, where the task's expert
(:func:`telecorder.sim.task_expert.make_expert`) plans and acts as it does when recording. Each
tick the private scene takes the observed arm joints and object positions (velocities are its
own, from running the same commands), so it stays on the recorded episode's track; its actions go
to the robot through the policy runner like any policy's. An evaluation of it through
``telecorder eval`` must therefore score like the recording does (benchmarks/tasks.py checks that).

    telecorder eval benchmarks.task_policies:expert --scene cubes --tasks cubes --episodes-per-task 10
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from telecorder.policies import Policy, PolicyError, PolicySpec

FPS = 30.0
ARM_DIM = 6  # the built-in arm: 5 joints + gripper


class TaskExpertPolicy(Policy):
    """The scripted expert of whichever cubes task the instruction names, driven from observations."""

    spec = PolicySpec(action_dim=ARM_DIM, horizon=1, state_keys=("observation.state", "observation.environment_state"),
                      fps=FPS)

    def __init__(self, suite: str = "cubes", misread: bool = False) -> None:
        from telecorder.sim.env import SimEnv
        from telecorder.sim.scenes import scene_model
        from telecorder.sim.tasks import get_suite

        self.suite = get_suite(suite)
        self.env = SimEnv(scene_model(self.suite.scene), control_dt=1.0 / FPS)
        self._objects = self.env.scene_objects
        self._arm = [i for i in range(len(self.env.joint_names)) if i != self.env.gripper_index]
        # qpos address of the joint each actuator drives (the action's order), for the arm's joints.
        m = self.env.model
        self._arm_qadr = np.array([int(m.jnt_qposadr[m.actuator_trnid[i, 0]]) for i in self._arm])
        self._expert: Any = None
        self._episodes = 0
        # A policy that hears every colour as the next one (red -> green -> blue -> red): it does a
        # task well, on the wrong object, which is what grounding measures.
        self.misread = misread

    def reset(self) -> None:
        self._expert = None
        self._episodes += 1

    def describe(self) -> str:
        return f"scripted expert of the {self.suite.name} tasks"

    def predict(self, observation: Mapping[str, Any]) -> np.ndarray:
        from telecorder.sim.task_expert import make_expert

        state = np.asarray(observation["state"][-1], dtype=np.float64)
        joints, objects = state[:ARM_DIM], state[ARM_DIM:]
        if self._expert is None:
            text = str(observation.get("language_instruction", ""))
            found = self.suite.match(text)
            if found is None:
                raise PolicyError(f"{self.describe()}: {text!r} is none of the suite's instructions")
            task = found[0]
            if self.misread:
                task = self._misread(task)
            # The episode started from a reset: the home pose, the observed layout, nothing moving.
            self.env.reset()
            self._place(objects, bin_too=True)
            self.env.set_task(task)
            self._expert = make_expert(self.env, task, seed=self._episodes)
        else:
            self._follow(joints, objects)
        action = np.asarray(self._expert.act(), dtype=np.float64)
        self.env.apply_action(action)
        return action[None]

    def _misread(self, task: Any) -> Any:
        from telecorder.sim.tasks import COLOURS

        def shift(name: str | None) -> str | None:
            for i, c in enumerate(COLOURS):
                if name == f"{c}_cube":
                    return f"{COLOURS[(i + 1) % len(COLOURS)]}_cube"
            return name

        obj, support = shift(task.obj), shift(task.support)
        for other in self.suite.tasks:
            if (other.family, other.obj, other.support, other.side) == (task.family, obj, support, task.side):
                return other
        return task

    def _place(self, objects: np.ndarray, bin_too: bool) -> None:
        import mujoco

        env, objs = self.env, self._objects
        d = env.data
        with env.lock:
            for i, name in enumerate(env.objects):
                a = objs.qadr[name]
                d.qpos[a : a + 7] = objects[7 * i : 7 * i + 7]
            if bin_too and env.target is not None and objs.target_qadr is not None:
                base = env.model.body_pos[objs.target_id]
                xy = objects[7 * len(env.objects) : 7 * len(env.objects) + 2] - base[:2]
                d.qpos[list(objs.target_qadr)] = xy
            mujoco.mj_forward(env.model, d)

    def _follow(self, joints: np.ndarray, objects: np.ndarray) -> None:
        """Take the observed arm joints and object poses, keeping the private scene's velocities.

        The observed orientation is the cube's symmetric equivalent nearest the identity; the one
        taken is the equivalent nearest the private cube's own, so its spin keeps its meaning.
        """
        import mujoco

        from telecorder.sim.symmetry import CUBE_SYMMETRIES, quat_mul

        env, objs = self.env, self._objects
        d = env.data
        with env.lock:
            d.qpos[self._arm_qadr] = joints[self._arm]
            for i, name in enumerate(env.objects):
                a = objs.qadr[name]
                d.qpos[a : a + 3] = objects[7 * i : 7 * i + 3]
                own = d.qpos[a + 3 : a + 7].copy()
                seen = np.array([quat_mul(objects[7 * i + 3 : 7 * i + 7], g) for g in CUBE_SYMMETRIES])
                dots = seen @ own
                k = int(np.argmax(np.abs(dots)))
                d.qpos[a + 3 : a + 7] = seen[k] * np.sign(dots[k] or 1.0)
            mujoco.mj_forward(env.model, d)


def expert() -> TaskExpertPolicy:
    """``module:factory`` entry point: the expert of the task the instruction names."""
    return TaskExpertPolicy()


def misread() -> TaskExpertPolicy:
    """``module:factory`` entry point: the expert of the same task on the next colour's cube (ungrounded)."""
    return TaskExpertPolicy(misread=True)
