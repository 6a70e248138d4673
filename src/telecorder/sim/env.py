"""A MuJoCo robot-arm environment driven by joint-position actions.

Action / observation convention (write this into dataset feature notes):

* One action dimension per actuator, in actuator order; :attr:`SimEnv.joint_names` names them.
* Arm joints (hinge) are in radians, slide joints in metres: the action is the position target
  of the joint's position actuator, :meth:`SimEnv.joint_positions` the measured joint position.
* The actuator named ``gripper`` is exposed as the dimension ``"gripper"``, normalised to
  0..1 with 0 = fully closed and 1 = fully open, for both the action and the measured position.
  On a model of several arms each arm's gripper actuator is ``<arm>_gripper`` (``left_gripper``,
  ``right_gripper`` on the ``bimanual`` scene) and is exposed, normalised the same way, under
  that name.
  Internally 0..1 maps linearly onto the actuator's ctrlrange (action) and onto its joint's range
  (measurement); on the built-in scene both are the finger opening 0..0.032 m.

The built-in scene (:data:`DEFAULT_MODEL`) adds a pick-and-lift task: a ``cube`` body on the
table and an ``ee_site`` grasp point; see :attr:`SimEnv.has_task`. The ``cubes`` scene
(:data:`telecorder.sim.scenes.CUBES_MODEL`) has three cubes and a bin and runs the tasks of
:mod:`telecorder.sim.tasks` (:attr:`SimEnv.task`); its object code lives in
:mod:`telecorder.sim.objects` and the visual randomization in :mod:`telecorder.sim.randomize`.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._deps import _require_mujoco
from .errors import SimModelError
from .objects import LIFT_SUCCESS_HEIGHT, SceneObjects, moved_object
from .randomize import SceneRandomizer, parse_randomize

if TYPE_CHECKING:
    from .tasks import Task

mujoco = _require_mujoco()

__all__ = ["DEFAULT_MODEL", "SimEnv", "SimModelError"]

DEFAULT_MODEL: Path = Path(__file__).resolve().parent / "assets" / "tabletop_arm.xml"

GRIPPER_NAME = "gripper"
EE_SITE = "ee_site"
# A model may place its single-cube spawn region itself (x_min x_max y_min y_max, metres).
SPAWN_REGION = "cube_spawn_region"


def is_gripper_actuator(name: str) -> bool:
    """``gripper`` or, on a model of several arms, ``<arm>_gripper``."""
    return name == GRIPPER_NAME or name.endswith("_" + GRIPPER_NAME)


def ee_sites(model: mujoco.MjModel) -> list[str]:
    """The grasp-point sites: ``ee_site``, or one ``<arm>_ee_site`` per arm, in model order."""
    names = [model.site(i).name for i in range(model.nsite)]
    return [n for n in names if n == EE_SITE or n.endswith("_" + EE_SITE)]

# Cube spawn region on the built-in table (world frame, metres). It lies inside the arm's
# comfortable top-down workspace, away from the base and from the reach limit.
CUBE_X_RANGE = (0.13, 0.25)
CUBE_Y_RANGE = (-0.12, 0.12)

# MuJoCo's pybind enums compare unequal to numpy integers (model arrays), so enum checks go
# through plain ints.
_ACTUATED_JOINT_TYPES = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))


def _camera_quat(forward: np.ndarray, up_hint: np.ndarray) -> np.ndarray:
    """Quaternion (wxyz) of a MuJoCo camera looking along ``forward``.

    MuJoCo cameras look along their local -z with +y up in the image.
    """
    z = -forward / np.linalg.norm(forward)
    x = np.cross(up_hint, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([x, y, z]).ravel())
    return quat


class SimEnv:
    """MuJoCo simulation stepped at a fixed control rate.

    Args:
        model_path: MJCF file; ``None`` loads the built-in tabletop arm scene. In a user model
            the actuators, in order, define the action: each must drive a hinge or slide joint
            and have a ctrlrange (or its joint a range). Models without any camera get a
            ``front`` and a ``top`` camera framing the model.
        control_dt: seconds of simulated time per :meth:`apply_action`, simulated as
            ``n_substeps = ceil(control_dt / model timestep)`` physics steps; the model's
            timestep becomes ``control_dt / n_substeps`` (never larger than in the file).
        seed: seeds the cube placement of :meth:`reset`.
        randomize: visual randomization drawn at every reset (``"lighting"``, ``"colors"``,
            ``"camera"``; see :mod:`telecorder.sim.randomize`); empty (default): none.

    ``lock`` (an RLock) is held while physics steps or resets; other threads (e.g. a renderer)
    should read state only through :meth:`snapshot` / the accessor methods, which take it.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        control_dt: float = 1 / 30,
        seed: int | None = None,
        randomize: frozenset[str] | str | None = frozenset(),
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        self.model = _load_model(self.model_path)
        self.data = mujoco.MjData(self.model)
        self.lock = threading.RLock()
        self._rng = np.random.default_rng(seed)
        # The seed of the last reset that was given one (None: the scene came from the running generator).
        self.reset_seed: int | None = None

        if not control_dt > 0:
            raise ValueError(f"control_dt must be positive, got {control_dt}")
        # A whole number of physics steps per control tick, with the timestep shrunk slightly so
        # that simulated time advances by exactly control_dt: recorded timestamps then match the
        # real-time loop (30 Hz = 17 x 1.96 ms rather than 17 x 2 ms = 34 ms). Rounding up means
        # the step is never coarser than the model asks for, which keeps its stability margin.
        self.n_substeps = max(1, math.ceil(control_dt / float(self.model.opt.timestep) - 1e-6))
        self.model.opt.timestep = control_dt / self.n_substeps
        self.timestep = float(self.model.opt.timestep)
        self.control_dt = float(control_dt)

        self._setup_actions()
        self.camera_names: list[str] = [
            self.model.camera(i).name for i in range(self.model.ncam) if self.model.camera(i).name
        ]

        #: The arms' grasp points: ``["ee_site"]``, or ``["left_ee_site", "right_ee_site"]`` (bimanual).
        self.ee_sites: list[str] = ee_sites(self.model)
        #: Free objects (``cube`` / ``*_cube`` bodies) and the target (``bin``), see sim/objects.py.
        self.scene_objects = SceneObjects(self.model)
        self.objects: list[str] = list(self.scene_objects.names)
        self.target: str | None = self.scene_objects.target
        self.has_task: bool = bool(self.ee_sites) and bool(self.objects)
        #: The task whose success :meth:`is_success` checks (None: lift the first object).
        self.task: Task | None = None
        if self.has_task:
            self.cube_rest_z = self.scene_objects.rest_z[self.objects[0]]
        self.randomize = parse_randomize(randomize)
        self._randomizer = SceneRandomizer(self.model, self.randomize)

        self._key_home = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_KEY, "home")
        self._spawn = _spawn_region(self.model, self.model_path)
        self.reset()

    # ------------------------------------------------------------------ action space

    def _setup_actions(self) -> None:
        m = self.model
        if m.nu == 0:
            raise SimModelError(f"{self.model_path}: the model has no actuators, so no actions")
        names: list[str] = []
        low = np.empty(m.nu)
        high = np.empty(m.nu)
        qadr = np.empty(m.nu, dtype=np.intp)
        vadr = np.empty(m.nu, dtype=np.intp)
        joint_ranges = np.empty((m.nu, 2))
        self.gripper_index: int | None = None
        #: Every gripper dimension (one per arm); ``gripper_index`` is the first.
        self.gripper_indices: list[int] = []
        for i in range(m.nu):
            act_name = m.actuator(i).name
            label = f"actuator {act_name!r}" if act_name else f"actuator #{i} (unnamed)"
            joint_id = int(m.actuator_trnid[i, 0])
            if int(m.actuator_trntype[i]) != mujoco.mjtTrn.mjTRN_JOINT or joint_id < 0:
                raise SimModelError(
                    f"{self.model_path}: {label} does not drive a joint; every actuator must "
                    'use a joint transmission (joint="...")'
                )
            if int(m.jnt_type[joint_id]) not in _ACTUATED_JOINT_TYPES:
                raise SimModelError(
                    f"{self.model_path}: {label} drives joint {m.joint(joint_id).name!r}, which is "
                    "not a hinge or slide joint"
                )
            if m.actuator_ctrllimited[i]:
                lo, hi = m.actuator_ctrlrange[i]
            elif m.jnt_limited[joint_id]:
                lo, hi = m.jnt_range[joint_id]
            else:
                raise SimModelError(
                    f"{self.model_path}: {label} has no ctrlrange and its joint "
                    f'{m.joint(joint_id).name!r} has no range; add ctrlrange="lo hi" to the '
                    "actuator"
                )
            if not hi > lo:
                raise SimModelError(f"{self.model_path}: {label} has an empty range [{lo}, {hi}]")
            low[i], high[i] = lo, hi
            joint_ranges[i] = m.jnt_range[joint_id] if m.jnt_limited[joint_id] else (lo, hi)
            qadr[i] = m.jnt_qposadr[joint_id]
            vadr[i] = m.jnt_dofadr[joint_id]
            if is_gripper_actuator(act_name) and act_name not in names:
                self.gripper_indices.append(i)
                names.append(act_name)
            else:
                names.append(m.joint(joint_id).name or f"joint{joint_id}")

        self.joint_names: list[str] = names
        self.gripper_index = self.gripper_indices[0] if self.gripper_indices else None
        self._ctrl_low = low
        self._ctrl_high = high
        self._qadr = qadr
        self._vadr = vadr
        self.action_low = low.copy()
        self.action_high = high.copy()
        grips = self.gripper_indices
        self.action_low[grips], self.action_high[grips] = 0.0, 1.0
        self._grip_joint_lo, self._grip_joint_hi = joint_ranges[grips, 0], joint_ranges[grips, 1]
        self._ctrl = np.empty(m.nu)

    def action_to_ctrl(self, action: np.ndarray) -> np.ndarray:
        """Clip an action to the bounds and convert it to actuator controls (gripper 0..1 -> ctrl)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_low.shape:
            raise ValueError(f"action must have shape {self.action_low.shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN/inf: {a}")
        ctrl = np.clip(a, self.action_low, self.action_high, out=self._ctrl)
        g = self.gripper_indices
        ctrl[g] = self._ctrl_low[g] + ctrl[g] * (self._ctrl_high[g] - self._ctrl_low[g])
        return ctrl

    # ------------------------------------------------------------------ stepping

    def reset(self, seed: int | None = None) -> None:
        """Go to the home pose (the model's ``home`` keyframe, else qpos0) and place the cube.

        On the built-in task the cube lands at a random (x, y) in the reachable region in front
        of the robot with a random yaw. ``seed`` re-seeds the environment's generator.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.reset_seed = None if seed is None else int(seed)
        with self.lock:
            m, d = self.model, self.data
            if self._key_home >= 0:
                mujoco.mj_resetDataKeyframe(m, d, self._key_home)
            else:
                mujoco.mj_resetData(m, d)
            if self.has_task:
                self._place_objects()
            # Drawn after the layout, so a seed's layout is the same with or without randomization.
            self._randomizer.apply(self._rng)
            mujoco.mj_forward(m, d)
            if self._key_home < 0:
                # Without a keyframe, command the pose the robot starts in so it holds still.
                self._hold_current_pose()
                mujoco.mj_forward(m, d)

    def _place_objects(self) -> None:
        objs, d = self.scene_objects, self.data
        if len(self.objects) == 1 and self.target is None:
            # The pick scene: exactly the draws it always made (recorded seeds keep their scenes).
            x_range, y_range = self._spawn or (CUBE_X_RANGE, CUBE_Y_RANGE)
            layout = {self.objects[0]: (self._rng.uniform(*x_range), self._rng.uniform(*y_range),
                                        self._rng.uniform(-np.pi, np.pi))}
        else:
            bin_xy, layout = objs.sample_layout(self._rng)
            if bin_xy is not None and objs.target_qadr is not None:
                d.qpos[list(objs.target_qadr)] = bin_xy
                d.qvel[list(objs.target_dofadr)] = 0.0
        for name, (x, y, yaw) in layout.items():
            a, v = objs.qadr[name], objs.vadr[name]
            d.qpos[a : a + 3] = (x, y, objs.rest_z[name])
            d.qpos[a + 3 : a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
            d.qvel[v : v + 6] = 0.0

    def scene_state(self) -> dict[str, object]:
        """The simulator state as JSON-ready lists: what :meth:`restore_scene_state` needs to put
        this exact scene back (positions, velocities, controls), with the last reset's seed."""
        with self.lock:
            d = self.data
            state: dict[str, object] = {
                "model": self.model_path.name,
                "seed": self.reset_seed,
                "time": float(d.time),
                # Python floats: JSON writes them so that they read back bit for bit.
                "qpos": d.qpos.tolist(),
                "qvel": d.qvel.tolist(),
                "ctrl": d.ctrl.tolist(),
            }
            if self.model.na:
                state["act"] = d.act.tolist()
            if self.model.nmocap:
                state["mocap_pos"] = d.mocap_pos.ravel().tolist()
                state["mocap_quat"] = d.mocap_quat.ravel().tolist()
            visuals = self._randomizer.state()
            if visuals is not None:
                state["visuals"] = visuals
        return state

    def restore_scene_state(self, state: dict[str, object]) -> None:
        """Put back a scene :meth:`scene_state` saved, as a fresh reset would leave it (solver
        warm start cleared), so that the same actions play out the same way."""
        m, d = self.model, self.data
        sizes = {"qpos": m.nq, "qvel": m.nv, "ctrl": m.nu, "act": m.na,
                 "mocap_pos": 3 * m.nmocap, "mocap_quat": 4 * m.nmocap}
        arrays = {}
        for key, size in sizes.items():
            if key not in state:
                if key in ("qpos", "qvel", "ctrl") or size:
                    raise SimModelError(f"{self.model_path}: the saved scene has no {key!r}; it cannot be restored")
                continue
            value = np.asarray(state[key], dtype=np.float64).ravel()
            if value.shape != (size,):
                raise SimModelError(
                    f"{self.model_path}: the saved scene has {value.size} {key} values and this model {size} "
                    f"(it was saved from {state.get('model', 'another model')!r}); use the model it was recorded with"
                )
            arrays[key] = value
        with self.lock:
            try:
                self._randomizer.restore(state.get("visuals"))  # type: ignore[arg-type]
            except (ValueError, KeyError, TypeError) as exc:
                raise SimModelError(f"{self.model_path}: the saved scene's visual parameters do not fit: {exc}") from exc
            mujoco.mj_resetData(m, d)
            d.time = float(state.get("time", 0.0))  # type: ignore[arg-type]
            d.qpos[:] = arrays["qpos"]
            d.qvel[:] = arrays["qvel"]
            d.ctrl[:] = arrays["ctrl"]
            if m.na:
                d.act[:] = arrays["act"]
            if m.nmocap:
                d.mocap_pos[:] = arrays["mocap_pos"].reshape(-1, 3)
                d.mocap_quat[:] = arrays["mocap_quat"].reshape(-1, 4)
            mujoco.mj_forward(m, d)
        seed = state.get("seed")
        self.reset_seed = None if seed is None else int(seed)  # type: ignore[call-overload]

    def place_cube(self, position: np.ndarray, quaternion: np.ndarray) -> None:
        """Put the task cube (:meth:`cube_pose`'s object) at a pose (world position, wxyz quaternion), at rest."""
        if not self.has_task:
            raise SimModelError(f"{self.model_path}: the model has no task cube to place")
        self.place_object(self._task_object(), position, quaternion)

    # ------------------------------------------------------------------ objects and tasks

    def _object(self, name: str) -> str:
        if name not in self.scene_objects.qadr:
            raise SimModelError(f"{self.model_path}: the scene has no object {name!r}; it has {self.objects}")
        return name

    def _task_object(self) -> str:
        """The object the task names, else the first one (``cube`` on the pick scene)."""
        if self.task is not None and self.task.obj in self.scene_objects.qadr:
            return self.task.obj
        return self.objects[0]

    def place_object(self, name: str, position: np.ndarray, quaternion: np.ndarray) -> None:
        """Put an object at a pose (world position, wxyz quaternion), at rest."""
        a, v = self.scene_objects.qadr[self._object(name)], self.scene_objects.vadr[name]
        with self.lock:
            self.data.qpos[a : a + 3] = position
            self.data.qpos[a + 3 : a + 7] = quaternion
            self.data.qvel[v : v + 6] = 0.0
            mujoco.mj_forward(self.model, self.data)

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and orientation quaternion wxyz (4,) of an object."""
        objs = self.scene_objects
        with self.lock:
            if objs.in_world[self._object(name)]:
                # Read the free joint itself: xpos/xquat were computed at the start of the last
                # physics step and lag qpos by one timestep.
                a = objs.qadr[name]
                quat = self.data.qpos[a + 3 : a + 7].copy()
                return self.data.qpos[a : a + 3].copy(), quat / np.linalg.norm(quat)
            b = objs.body_ids[name]
            return self.data.xpos[b].copy(), self.data.xquat[b].copy()

    def object_positions(self) -> dict[str, np.ndarray]:
        """Every object's world position (name -> (3,)), e.g. to call :meth:`moved_object` later."""
        return {name: self.object_pose(name)[0] for name in self.objects}

    def moved_object(self, start: dict[str, np.ndarray]) -> str | None:
        """The object that moved most (xy or z, more than 2 cm) since ``start`` (:meth:`object_positions`)."""
        return moved_object(self, start)

    def object_rest_z(self, name: str) -> float:
        """Height of an object's centre when it rests on the table."""
        return self.scene_objects.rest_z[self._object(name)]

    @property
    def cube_size(self) -> float:
        """Edge length of the scene's cubes, metres (0.035 on the built-in scenes)."""
        return self.scene_objects.cube_size

    def target_position(self) -> np.ndarray:
        """World position of the target (the bin body's origin: centre of its floor's underside, z = 0)."""
        if self.target is None:
            raise SimModelError(f"{self.model_path}: the scene has no target (bin)")
        objs = self.scene_objects
        with self.lock:
            if objs.target_qadr is not None:
                x, y = self.data.qpos[list(objs.target_qadr)]
                base = self.model.body_pos[objs.target_id]
                return np.array([base[0] + x, base[1] + y, base[2]])
            return self.data.xpos[objs.target_id].copy()

    def set_task(self, task: Task | None) -> None:
        """Make ``task`` the one :meth:`is_success` checks (None: lift the first object)."""
        if task is not None:
            # A transfer's support is the arm that gives, not an object.
            for name in (task.obj, task.support if task.family != "transfer" else None):
                if name is not None and name not in self.objects and name != self.target:
                    raise SimModelError(
                        f"{self.model_path}: task {task.task_id!r} needs {name!r}, which this scene does not "
                        f"have (objects {self.objects}); use the scene the task suite is for")
        self.task = task

    def _hold_current_pose(self) -> None:
        m, d = self.model, self.data
        for i in range(m.nu):
            position_servo = (
                int(m.actuator_biastype[i]) == mujoco.mjtBias.mjBIAS_AFFINE
                and m.actuator_biasprm[i, 1] < 0
            )
            target = d.actuator_length[i] if position_servo else 0.0
            d.ctrl[i] = np.clip(target, self._ctrl_low[i], self._ctrl_high[i])

    def home_action(self) -> np.ndarray:
        """The action that holds the home pose (what :meth:`reset` commands)."""
        m = self.model
        if self._key_home >= 0:
            ctrl = m.key_ctrl[self._key_home].copy()
        else:
            d = mujoco.MjData(m)
            mujoco.mj_forward(m, d)
            ctrl = d.actuator_length.copy()
        return self._ctrl_to_action(ctrl)

    def _ctrl_to_action(self, ctrl: np.ndarray) -> np.ndarray:
        action = np.array(ctrl, dtype=np.float64)
        g = self.gripper_indices
        action[g] = (action[g] - self._ctrl_low[g]) / (self._ctrl_high[g] - self._ctrl_low[g])
        return np.clip(action, self.action_low, self.action_high)

    def apply_action(self, action: np.ndarray) -> None:
        """Clip ``action`` to the bounds, set it as control and simulate ``control_dt`` seconds.

        Arm dimensions are joint position targets in radians; the gripper dimension is the
        normalised opening (0 closed, 1 open).
        """
        ctrl = self.action_to_ctrl(action)
        with self.lock:
            self.data.ctrl[:] = ctrl
            mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)

    # ------------------------------------------------------------------ observations

    def joint_positions(self) -> np.ndarray:
        """Measured position per action dimension: rad / m, gripper normalised 0 (closed)..1 (open)."""
        with self.lock:
            q = self.data.qpos[self._qadr]
        g = self.gripper_indices
        q[g] = (q[g] - self._grip_joint_lo) / (self._grip_joint_hi - self._grip_joint_lo)
        return q

    def joint_velocities(self) -> np.ndarray:
        """Measured velocity per action dimension: rad/s / m/s, gripper in (0..1 units)/s."""
        with self.lock:
            v = self.data.qvel[self._vadr]
        v[self.gripper_indices] /= self._grip_joint_hi - self._grip_joint_lo
        return v

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Consistent copy of (qpos, qvel, sim time) for rendering or logging from another thread."""
        with self.lock:
            return self.data.qpos.copy(), self.data.qvel.copy(), float(self.data.time)

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and orientation quaternion wxyz (4,) of the task cube: the object the
        current task names, else the first object (``cube`` on the pick scene)."""
        if not self.has_task:
            raise SimModelError(f"{self.model_path}: the model has no free-floating 'cube' body")
        return self.object_pose(self._task_object())

    def is_success(self) -> bool:
        """The current task's success check (:func:`telecorder.sim.objects.task_success`); with no
        task, the built-in one: the first cube is more than 5 cm above its resting height (on a
        two-arm scene: the handover of the ``bimanual`` suite's ``transfer`` task).
        False on a model without objects."""
        if not self.has_task:
            return False
        task = self.task
        if task is None and len(self.ee_sites) > 1:
            # Two arms and no instruction: the scene's one task, the handover.
            from .tasks import get_suite

            task = get_suite("bimanual").by_id("transfer")
        if task is not None:
            with self.lock:
                return task.success(self)
        name = self.objects[0]
        with self.lock:
            z = float(self.object_pose(name)[0][2])
        return z > self.scene_objects.rest_z[name] + LIFT_SUCCESS_HEIGHT

    @property
    def time(self) -> float:
        return float(self.data.time)

    def close(self) -> None:
        """Part of the resource protocol (``with SimEnv() as env``); MuJoCo frees its memory when
        the model and data are garbage collected, so there is nothing to release eagerly."""

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------------- model loading


def _load_model(path: Path) -> mujoco.MjModel:
    if not path.is_file():
        raise SimModelError(f"{path}: model file not found")
    try:
        spec = mujoco.MjSpec.from_file(str(path))
        model = spec.compile()
    except Exception as exc:
        raise SimModelError(f"{path}: MuJoCo could not load the model: {exc}".rstrip()) from exc
    if model.ncam == 0:
        _add_default_cameras(spec, model)
        try:
            model = spec.compile()
        except Exception as exc:
            raise SimModelError(f"{path}: adding default cameras failed: {exc}") from exc
    return model


def _spawn_region(model: mujoco.MjModel, path: Path) -> tuple[tuple[float, float], tuple[float, float]] | None:
    idx = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_NUMERIC, SPAWN_REGION)
    if idx < 0:
        return None
    adr, size = int(model.numeric_adr[idx]), int(model.numeric_size[idx])
    v = [float(x) for x in model.numeric_data[adr : adr + size]]
    if size != 4 or not all(math.isfinite(x) for x in v) or not (v[0] < v[1] and v[2] < v[3]):
        raise SimModelError(f'{path}: <numeric name="{SPAWN_REGION}"> must be 4 finite numbers '
                            f"x_min x_max y_min y_max with min < max, got {v}")
    return (v[0], v[1]), (v[2], v[3])


def _add_default_cameras(spec: mujoco.MjSpec, model: mujoco.MjModel) -> None:
    """Frame the model's bounding sphere with a ``front`` (+x side, from above) and a ``top`` camera.

    MuJoCo's compiled statistics (centre and extent of the bodies) are the best generic guess
    at where the robot is; +x is taken as the robot's forward direction, as in the built-in scene.
    """
    center = np.array(model.stat.center, dtype=np.float64)
    extent = max(float(model.stat.extent), 0.05)
    dist = 1.6 * extent
    elevation = np.deg2rad(35.0)
    front_dir = np.array([np.cos(elevation), 0.0, np.sin(elevation)])

    front = spec.worldbody.add_camera()
    front.name = "front"
    front.pos = center + dist * front_dir
    front.quat = _camera_quat(-front_dir, np.array([0.0, 0.0, 1.0]))
    front.fovy = 50.0

    top = spec.worldbody.add_camera()
    top.name = "top"
    top.pos = center + np.array([0.0, 0.0, dist])
    # Image up = world +x, so "forward" is at the top of the frame.
    top.quat = _camera_quat(np.array([0.0, 0.0, -1.0]), np.array([1.0, 0.0, 0.0]))
    top.fovy = 50.0
