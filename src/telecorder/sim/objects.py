"""The movable objects and the target of a scene: lookup, reset layout, task success checks, env-state.

:class:`SimEnv` builds one :class:`SceneObjects` per model. The free bodies named ``cube`` or
``*_cube`` are the scene's objects (in file order): ``["cube"]`` on the ``pick`` scene,
``["red_cube", "green_cube", "blue_cube"]`` on ``cubes``. A body named ``bin`` is the target.

Reset layout (multi-object scenes, :meth:`SceneObjects.sample_layout`), all from the env's rng:

* the bin's centre uniform in ``BIN_X_RANGE`` x ``BIN_Y_RANGE``;
* each cube, in object order, uniform in ``OBJECT_X_RANGE`` x ``OBJECT_Y_RANGE`` and within
  ``OBJECT_R_RANGE`` of the arm base (the comfortable top-down workspace, IK-verified at the
  table and 13 cm up), with a uniform yaw; redrawn (up to 100 times, then the whole layout is
  redrawn) until it is ``MIN_CUBE_DISTANCE`` from every other cube and ``BIN_CLEARANCE`` outside
  the bin's outer wall (Chebyshev distance, so never inside it).

Success checks (:func:`task_success`), with ``s`` = cube edge (0.035 m) and "not held" = no arm
geom touches the cube and it is at rest (speed < 5 cm/s):

* pick: the cube's centre is more than 5 cm above its rest height (as the pick scene always was).
* bin: the cube's centre is inside the bin's inner footprint, below the rim, not held.
* stack: the cube's centre is within ``s/2`` (xy) of the support cube's and ``s +- 1 cm`` above
  it, not held, and the support cube rests on the table (centre within 1 cm of rest height).
* push: the cube is on the table (centre within 1 cm of rest height) with ``y >= PUSH_EDGE_Y``
  (left) or ``y <= -PUSH_EDGE_Y`` (right); touching it is allowed.
* transfer (the ``bimanual`` scene): the cube's centre is more than 5 cm above its rest height,
  the receiving arm (``task.side``) touches it and the giving arm (``task.support``) does not.
Other cubes may be moved along the way; no check looks at them (except the stack's support).

The functions take the :class:`~telecorder.sim.env.SimEnv` (``env``) and a
:class:`~telecorder.sim.tasks.Task` duck-typed (``Any``): the env imports this module, and
importing it back would make an import cycle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._deps import _require_mujoco
from .errors import SimModelError
from .symmetry import canonical_cube_quat

mujoco = _require_mujoco()

__all__ = [
    "BIN_CLEARANCE", "MIN_CUBE_DISTANCE", "OBJECT_R_RANGE", "OBJECT_X_RANGE", "OBJECT_Y_RANGE",
    "PUSH_EDGE_Y", "SceneObjects", "env_state", "env_state_names", "task_success",
]

TARGET_BODY = "bin"
LIFT_SUCCESS_HEIGHT = 0.05

# Cube spawn region on the cubes scene (world frame, metres): a little wider than the pick scene's
# (0.13..0.25 x -0.12..0.12) so that three cubes and the bin fit without touching.
OBJECT_X_RANGE = (0.10, 0.24)
OBJECT_Y_RANGE = (-0.14, 0.14)
OBJECT_R_RANGE = (0.12, 0.25)
BIN_X_RANGE = (0.14, 0.21)
BIN_Y_RANGE = (-0.10, 0.10)
#: Centre-to-centre distance between cubes: an open gripper (jaws ~7 cm apart) fits beside a cube.
MIN_CUBE_DISTANCE = 0.07
#: Gap from the bin's outer wall to a cube's centre (Chebyshev): the corner of a cube at any yaw
#: (2.5 cm) plus 1.5 cm.
BIN_CLEARANCE = 0.04
#: Push tasks: the cube must end with |y| at least this (spawn |y| <= 0.14, table edge at 0.55).
PUSH_EDGE_Y = 0.17
# "At rest" for the bin/stack checks.
REST_SPEED = 0.05
_MAX_TRIES = 100


class SceneObjects:
    """Addresses and geometry of a model's free objects and target (read-only after construction)."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        free = int(mujoco.mjtJoint.mjJNT_FREE)
        self.names: list[str] = []
        self.body_ids: dict[str, int] = {}
        self.qadr: dict[str, int] = {}
        self.vadr: dict[str, int] = {}
        self.in_world: dict[str, bool] = {}
        self.rest_z: dict[str, float] = {}
        self.half_size: dict[str, float] = {}
        for b in range(1, model.nbody):
            name = model.body(b).name
            if not (name == "cube" or name.endswith("_cube")):
                continue
            jnt = int(model.body_jntadr[b])
            if jnt < 0 or int(model.jnt_type[jnt]) != free:
                continue
            self.names.append(name)
            self.body_ids[name] = b
            self.qadr[name] = int(model.jnt_qposadr[jnt])
            self.vadr[name] = int(model.jnt_dofadr[jnt])
            self.in_world[name] = int(model.body_parentid[b]) == 0
            # The model places each object at rest on the table; that height is its lift reference.
            self.rest_z[name] = float(model.qpos0[self.qadr[name] + 2])
            geoms = [g for g in range(model.ngeom) if int(model.geom_bodyid[g]) == b]
            self.half_size[name] = float(model.geom_size[geoms[0], 0]) if geoms else 0.0
        self.geoms: dict[str, set[int]] = {
            n: {g for g in range(model.ngeom) if int(model.geom_bodyid[g]) == b} for n, b in self.body_ids.items()
        }

        # An arm: every body under the tree that holds its grasp site ("ee_site", or "<arm>_ee_site"
        # per arm on a model of several): the tree's root body ("base", "left_mount", ...).
        #: Geoms of each arm, by its prefix ("" for the single arm, "left", "right").
        self.arm_geoms_by_arm: dict[str, set[int]] = {}
        for i in range(model.nsite):
            site = model.site(i).name
            if site != "ee_site" and not site.endswith("_ee_site"):
                continue
            root = int(model.body_rootid[int(model.site_bodyid[i])])
            self.arm_geoms_by_arm[site[: -len("_ee_site")] if site != "ee_site" else ""] = {
                g for g in range(model.ngeom) if root > 0 and int(model.body_rootid[int(model.geom_bodyid[g])]) == root
            }
        self.arm_geoms: set[int] = set().union(*self.arm_geoms_by_arm.values())

        self.target: str | None = None
        bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, TARGET_BODY)
        if bid >= 0:
            self.target = TARGET_BODY
            self.target_id = bid
            jx = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "bin_x")
            jy = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "bin_y")
            # The bin moves on two slide joints when the model has them (cubes.xml), else it is fixed.
            self.target_qadr = (int(model.jnt_qposadr[jx]), int(model.jnt_qposadr[jy])) if jx >= 0 and jy >= 0 else None
            self.target_dofadr = (int(model.jnt_dofadr[jx]), int(model.jnt_dofadr[jy])) if jx >= 0 and jy >= 0 else None
            # Footprint and rim from the geoms: the widest geom is the floor (outer half size),
            # the walls' tops are the rim, the floor's top what a cube rests on.
            gs = [g for g in range(model.ngeom) if int(model.geom_bodyid[g]) == bid]
            sizes = model.geom_size[gs]
            pos = model.geom_pos[gs]
            self.bin_outer_half = float(np.max(np.abs(pos[:, :2]) + sizes[:, :2]))
            walls = [i for i in range(len(gs)) if max(abs(pos[i, 0]), abs(pos[i, 1])) > 1e-6]
            wall_t = float(min(sizes[i, :2].min() for i in walls)) if walls else 0.0
            self.bin_inner_half = self.bin_outer_half - 2.0 * wall_t
            self.bin_rim_z = float(np.max(pos[:, 2] + sizes[:, 2]))
            self.bin_floor_z = float(np.min(pos[:, 2] + sizes[:, 2]))

    @property
    def cube_size(self) -> float:
        """Edge length of the (first) object, metres."""
        return 2.0 * self.half_size[self.names[0]] if self.names else 0.0

    # ------------------------------------------------------------------ layout

    def sample_layout(self, rng: np.random.Generator) -> tuple[np.ndarray | None, dict[str, tuple[float, float, float]]]:
        """Bin (x, y) (None without a bin) and every object's (x, y, yaw), deterministic in ``rng``."""
        while True:
            bin_xy = None
            if self.target is not None and self.target_qadr is not None:
                bin_xy = np.array([rng.uniform(*BIN_X_RANGE), rng.uniform(*BIN_Y_RANGE)])
            placed: dict[str, tuple[float, float, float]] = {}
            for name in self.names:
                for _ in range(_MAX_TRIES):
                    x, y, yaw = rng.uniform(*OBJECT_X_RANGE), rng.uniform(*OBJECT_Y_RANGE), rng.uniform(-np.pi, np.pi)
                    if self._free_spot(x, y, bin_xy, placed):
                        placed[name] = (float(x), float(y), float(yaw))
                        break
                else:
                    break
            if len(placed) == len(self.names):
                return bin_xy, placed

    def _free_spot(self, x: float, y: float, bin_xy: np.ndarray | None,
                   placed: dict[str, tuple[float, float, float]]) -> bool:
        if not OBJECT_R_RANGE[0] <= float(np.hypot(x, y)) <= OBJECT_R_RANGE[1]:
            return False
        if bin_xy is not None and max(abs(x - bin_xy[0]), abs(y - bin_xy[1])) < self.bin_outer_half + BIN_CLEARANCE:
            return False
        return all(np.hypot(x - px, y - py) >= MIN_CUBE_DISTANCE for px, py, _ in placed.values())


# ---------------------------------------------------------------------- success checks


def _touching_arm(env: Any, name: str, arm_name: str | None = None) -> bool:
    """Whether an arm geom (of the arm ``arm_name`` only, when given) touches the object."""
    objs = env.scene_objects
    mine = objs.geoms[name]
    arm = objs.arm_geoms if arm_name is None else objs.arm_geoms_by_arm[arm_name]
    d = env.data
    for i in range(d.ncon):
        g1, g2 = int(d.contact.geom1[i]), int(d.contact.geom2[i])
        if (g1 in mine and g2 in arm) or (g2 in mine and g1 in arm):
            return True
    return False


def _speed(env: Any, name: str) -> float:
    a = env.scene_objects.vadr[name]
    return float(np.linalg.norm(env.data.qvel[a : a + 3]))


def is_held(env: Any, name: str) -> bool:
    """The arm touches the object, or it is still moving (faster than 5 cm/s)."""
    with env.lock:
        return _touching_arm(env, name) or _speed(env, name) > REST_SPEED


def _model_error(env: Any, message: str) -> Exception:
    return SimModelError(f"{env.model_path}: {message}")


def task_success(env: Any, task: Any) -> bool:
    """The sim's success check of ``task`` in ``env``'s current state (module docstring has the rules)."""
    objs = env.scene_objects
    if task.obj not in objs.names:
        raise _model_error(env, f"task {task.task_id!r} names {task.obj!r}, which this scene does not have")
    pos, _ = env.object_pose(task.obj)
    rest = objs.rest_z[task.obj]
    size = objs.cube_size
    if task.family == "pick":
        return bool(pos[2] > rest + LIFT_SUCCESS_HEIGHT)
    if task.family == "bin":
        if objs.target is None:
            raise _model_error(env, f"task {task.task_id!r} needs a bin, which this scene does not have")
        c = env.target_position()
        inside = max(abs(pos[0] - c[0]), abs(pos[1] - c[1])) <= objs.bin_inner_half
        return bool(inside and pos[2] < objs.bin_rim_z and not is_held(env, task.obj))
    if task.family == "stack":
        if task.support not in objs.names:
            raise _model_error(env, f"task {task.task_id!r} stacks on {task.support!r}, which this scene does not have")
        sup, _ = env.object_pose(task.support)
        on = (float(np.hypot(pos[0] - sup[0], pos[1] - sup[1])) <= size / 2
              and abs(pos[2] - (sup[2] + size)) <= 0.01)
        sup_on_table = abs(sup[2] - objs.rest_z[task.support]) <= 0.01
        return bool(on and sup_on_table and not is_held(env, task.obj))
    if task.family == "transfer":
        # Handed over: up in the air, in the receiving arm's gripper only.
        for arm in (task.support, task.side):
            if arm not in objs.arm_geoms_by_arm:
                raise _model_error(env, f"task {task.task_id!r} hands over between arms {task.support!r} and "
                                        f"{task.side!r}; this scene's arms are {sorted(objs.arm_geoms_by_arm)}")
        with env.lock:
            return bool(pos[2] > rest + LIFT_SUCCESS_HEIGHT and _touching_arm(env, task.obj, task.side)
                        and not _touching_arm(env, task.obj, task.support))
    if task.family == "push":
        on_table = abs(pos[2] - rest) <= 0.01
        if task.side == "left":
            return bool(on_table and pos[1] >= PUSH_EDGE_Y)
        if task.side == "right":
            return bool(on_table and pos[1] <= -PUSH_EDGE_Y)
        raise ValueError(f"push task {task.task_id!r} has side {task.side!r}; expected 'left' or 'right'")
    raise ValueError(f"task {task.task_id!r} has unknown family {task.family!r}")


def moved_object(env: Any, start: dict[str, np.ndarray], threshold: float = 0.02) -> str | None:
    """The object that moved most (xy distance or z change, whichever is larger) since ``start``
    (``env.object_positions()`` then); None if none moved more than ``threshold`` metres."""
    now = env.object_positions()
    best, best_d = None, threshold
    for name, p0 in start.items():
        if name not in now:
            continue
        p0 = np.asarray(p0, dtype=np.float64)
        d = max(float(np.hypot(*(now[name][:2] - p0[:2]))), abs(float(now[name][2] - p0[2])))
        if d > best_d:
            best, best_d = name, d
    return best


# ---------------------------------------------------------------------- env-state

_PICK_NAMES = ["cube_x", "cube_y", "cube_z", "cube_qw", "cube_qx", "cube_qy", "cube_qz"]


def env_state_names(env: Any) -> list[str]:
    """Feature names of :func:`env_state`: ``cube_x .. cube_qz`` on the pick scene; on multi-object
    scenes ``{obj}.x, .y, .z, .qw, .qx, .qy, .qz`` per object in order, then ``bin.x, bin.y, bin.z``."""
    objs = env.scene_objects
    if objs.names == ["cube"] and objs.target is None:
        return list(_PICK_NAMES)
    names = [f"{o}.{k}" for o in objs.names for k in ("x", "y", "z", "qw", "qx", "qy", "qz")]
    if objs.target is not None:
        names += [f"{objs.target}.{k}" for k in ("x", "y", "z")]
    return names


def env_state(env: Any) -> np.ndarray:
    """Every object's position and canonical orientation (:func:`canonical_cube_quat`: of a cube's
    24 symmetric equivalents, the one nearest the identity, w >= 0), then the target's position."""
    parts = []
    for name in env.scene_objects.names:
        pos, quat = env.object_pose(name)
        parts += [pos, canonical_cube_quat(quat)]
    if env.scene_objects.target is not None:
        parts.append(env.target_position())
    return np.concatenate(parts).astype(np.float64)
