"""The MuJoCo arm as a follower robot (its rendered cameras are in :mod:`telecorder.collect.cameras.sim`).

Physics advances by one control period per command, so the simulated follower
moves in step with the control loop and its state holds still between commands.

With ``env_state=True`` the robot also records the simulator's privileged object state,
the task cube's world pose, as ``observation.environment_state`` (the name LeRobot
uses for it), for policies and baselines that learn from state instead of pixels. The
orientation is the cube's symmetric equivalent nearest the identity (see
:mod:`telecorder.sim.symmetry`), so a physical pose always reads the same.

``scene`` picks a built-in scene (``pick``: one cube, the default; ``cubes``: red, green and
blue cubes and a bin, with the task suite of :mod:`telecorder.sim.tasks`). There the
environment state is every object's pose in one fixed layout (``red_cube.x`` ... ``bin.z``,
see :func:`telecorder.sim.objects.env_state_names`), and :meth:`SimRobot.set_task` sets the task
whose success check :meth:`SimRobot.success` runs. ``randomize`` (lighting, colors, camera)
varies the look of every reset, from the env's seeded generator.

Every episode stores the scene it started from (episode attribute ``sim_scene``: the
reset seed and the full simulator state, see :meth:`SimEnv.scene_state`), so that
``telecorder replay`` can put the exact scene back and replay the recorded actions in it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...datasets.features import FeatureSpec
from ...errors import DeviceError
from ..interfaces import Robot

BUILTIN_ROBOT_TYPE = "telecorder_sim_arm"
#: The two arms of ``--scene bimanual`` are another robot: 12-D, left_*/right_* names.
BIMANUAL_ROBOT_TYPE = "telecorder_sim_bimanual"
ENV_STATE_FEATURE = "observation.environment_state"
SCENE_ATTR = "sim_scene"
SCENE_NAME_ATTR = "sim_scene_name"
DEFAULT_SCENE = "pick"
ENV_STATE_NAMES = ("cube_x", "cube_y", "cube_z", "cube_qw", "cube_qx", "cube_qy", "cube_qz")


class SimRobot(Robot):
    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        fps: float = 30.0,
        seed: int | None = None,
        env_state: bool = False,
        scene: str | None = None,
        randomize: frozenset[str] = frozenset(),
    ) -> None:
        from ...sim.env import SimEnv

        user_model = model_path is not None
        if scene not in (None, DEFAULT_SCENE):
            if user_model:
                raise DeviceError(f"--scene {scene} is a built-in scene; --robot-model replaces the built-in arm "
                                  "and its scene, so give one or the other")
            from ...sim.scenes import scene_model

            try:
                model_path = scene_model(scene)
            except ValueError as e:
                raise DeviceError(f"--scene {scene}: {e}") from None
        # The built-in scene's name; None for the user's own MJCF arm.
        self.scene: str | None = None if user_model else (scene or DEFAULT_SCENE)
        kwargs: dict[str, Any] = {"randomize": frozenset(randomize)} if randomize else {}
        self.env = SimEnv(model_path, control_dt=1.0 / fps, seed=seed, **kwargs)
        self.builtin = self.scene is not None
        if env_state and not self.env.has_task:
            self.env.close()
            raise DeviceError(
                f"--env-state records the task cube's pose, and {self.env.model_path} has no free-floating "
                "'cube' body; leave --env-state off for this model"
            )
        self.env_state = env_state
        self._listeners: list[Callable[[], None]] = []
        if not self.builtin:
            self.robot_type = f"mujoco:{Path(model_path).stem}"
        else:
            self.robot_type = BIMANUAL_ROBOT_TYPE if len(self.env.ee_sites) > 1 else BUILTIN_ROBOT_TYPE

    @property
    def multi_object(self) -> bool:
        """A scene of several objects (``cubes``): env-state and success follow ``sim.objects`` and the task."""
        return len(getattr(self.env, "objects", ())) > 1 or getattr(self.env, "target", None) is not None

    def set_task(self, task: Any) -> None:
        """The task of the next episode (a ``sim.tasks.Task``; None: no task), whose success check the sim runs."""
        setter = getattr(self.env, "set_task", None)
        if setter is not None:
            setter(task)
        elif task is not None:
            raise DeviceError(f"the simulated scene {self.env.model_path} has no task suite; record "
                              "--tasks on --scene cubes")

    def connect(self) -> None:
        self.env.reset()

    def features(self) -> list[FeatureSpec]:
        names = tuple(self.env.joint_names)
        if self.builtin:
            arms = "left arm then right arm, each 5 joints then its gripper; " if len(self.env.ee_sites) > 1 else ""
            state_unit = f"{arms}measured joint positions in radians; gripper normalized 0 = closed, 1 = open"
            action_unit = (
                f"{arms}absolute joint position targets in radians; gripper 0 = closed, 1 = open; "
                "the command issued after observing this step"
            )
        else:
            grip = "; an actuator named 'gripper' is normalized 0 = closed, 1 = open" if "gripper" in names else ""
            state_unit = f"measured positions of the actuated joints, in the model's units{grip}"
            action_unit = f"actuator targets in the model's units{grip}; the command issued after observing this step"
        feats = [
            FeatureSpec("observation.state", "float32", (len(names),), names=names, unit=state_unit),
            FeatureSpec("action", "float32", (len(names),), names=names, unit=action_unit),
        ]
        if self.env_state and self.multi_object:
            from ...sim.objects import env_state_names

            names = tuple(env_state_names(self.env))
            feats.append(FeatureSpec(
                ENV_STATE_FEATURE, "float32", (len(names),), names=names,
                unit="every object's pose in the world frame, in a fixed order: position in metres and, for a "
                     "cube, orientation as a unit quaternion w, x, y, z (w >= 0) chosen among its 24 symmetric "
                     "equivalents as the one nearest the identity; the target's position; privileged simulator "
                     "state, not a sensor reading",
            ))
        elif self.env_state:
            feats.append(FeatureSpec(
                ENV_STATE_FEATURE, "float32", (len(ENV_STATE_NAMES),), names=ENV_STATE_NAMES,
                unit="task cube pose in the world frame: position in metres, orientation as a unit "
                     "quaternion w, x, y, z (w >= 0), of the cube's 24 symmetric equivalents the one nearest "
                     "the identity; privileged simulator state, not a sensor reading",
            ))
        return feats

    def observe(self) -> dict[str, np.ndarray]:
        obs = {"observation.state": self.env.joint_positions().astype(np.float32)}
        if self.env_state and self.multi_object:
            from ...sim.objects import env_state

            obs[ENV_STATE_FEATURE] = np.asarray(env_state(self.env), dtype=np.float32)
        elif self.env_state:
            from ...sim.symmetry import canonical_cube_quat

            pos, quat = self.env.cube_pose()
            obs[ENV_STATE_FEATURE] = np.concatenate([pos, canonical_cube_quat(quat)]).astype(np.float32)
        return obs

    def act(self, action: np.ndarray) -> np.ndarray:
        sent = np.clip(np.asarray(action, dtype=np.float64), self.env.action_low, self.env.action_high)
        self.env.apply_action(sent)
        self._state_changed()
        return sent.astype(np.float32)

    def reset(self, seed: int | None = None) -> None:
        self.env.reset(seed)
        self._state_changed()

    def scene_attrs(self) -> dict[str, object]:
        """Episode attributes describing the scene as it is now (the recorder stores them at the start)."""
        attrs: dict[str, object] = {SCENE_ATTR: self.env.scene_state()}
        if self.scene is not None:
            # Which built-in scene: a replay must load the same model to put this state back.
            attrs[SCENE_NAME_ATTR] = self.scene
        return attrs

    def restore_scene(self, state: dict[str, object]) -> None:
        """Put back the scene an episode started from (its ``sim_scene`` attribute)."""
        self.env.restore_scene_state(state)
        self._state_changed()

    def on_state_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quickly, from the control thread) whenever the simulated state moved."""
        self._listeners.append(callback)

    def _state_changed(self) -> None:
        for cb in self._listeners:
            cb()

    def success(self) -> bool | None:
        if not self.env.has_task:
            return None
        if self.multi_object and getattr(self.env, "task", None) is None:
            return None  # several objects and no instruction: nothing says what success would be
        return bool(self.env.is_success())

    def disconnect(self) -> None:
        self.env.close()
