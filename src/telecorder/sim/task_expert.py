"""Scripted experts for the ``cubes`` task suite: pick, put in the bin, stack, push to an edge.

:func:`make_expert` returns an object with the interface of
:class:`~telecorder.sim.expert.ScriptedExpert` (``reset()``, ``replan()``, ``act()``, ``done``,
``failed``, ``phase``), so the scripted teleop, the ``--intervene expert`` corrector and replay
use either one the same way. :func:`run_expert_episode` runs one whole demonstration (the
benchmark's and the tests' measure of expert success).

The motion follows ScriptedExpert: a minimum-jerk joint move to a pre-grasp pose, straight
Cartesian descents and lifts tracked by warm-started IK every tick, a top-down grasp aligned with
a cube face. Placing carries the cube at a safe height to above the bin or the support cube,
lowers it, opens and retreats; pushing lowers the closed gripper beside the cube on the far side
and moves it straight along y to the edge zone. When the bin blocks that path, the cube is first
pushed along x to a clear lane, or, when no lane the arm can push along is clear, picked up and
set down where one is (see :meth:`SceneGeometry.push_lane`). The plan is a queue of phases whose targets are
computed when each phase starts, from the poses at that moment, so the expert can take over from
any state (:meth:`TaskExpert.replan`) and retries when a grasp slips or a placement misses.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .env import SimEnv, SimModelError
from .expert import ScriptedExpert, _min_jerk, _top_down
from .kinematics import Kinematics
from .task_expert_geom import (
    SceneGeometry,
    face_yaw,
    wrap_quarter,
)

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["TaskExpert", "make_expert", "run_expert_episode"]

# ee_site height above the cube centre when the fingers close (as ScriptedExpert).
GRASP_ABOVE_CENTER = 0.008
# The fingertips reach this far below ee_site; anything the arm passes over must be lower.
TIP_BELOW_EE = 0.018
# Success must hold this long (after the release, for placing tasks) before ``done``.
HOLD_SECONDS = 0.4
# A finished plan whose success check does not hold within this long is retried.
VERIFY_SECONDS = 1.2
# Whole attempts (grasp + place, or push) before ``failed``.
MAX_ATTEMPTS = 5
# Give up after this much sim time in one plan (a stuck plan must not run forever).
GIVE_UP_SECONDS = 50.0
# Half width of the closed jaws (pads 2 x 8 mm plus a 2 mm gap): the pusher's half size.
PUSHER_HALF = 0.009


def make_expert(env: SimEnv, task: Task | None, seed: int | None = None, speed: float = 1.0) -> Any:
    """The scripted expert for ``task`` on ``env`` (its ``reset()`` is already done).

    ``task`` None: today's pick-and-lift :class:`ScriptedExpert` (the single-cube scene), or the
    handover of :class:`~telecorder.sim.bimanual_expert.BimanualExpert` on a two-arm scene; a
    ``transfer`` task: the handover too.
    """
    if task is None:
        if len(getattr(env, "ee_sites", ())) > 1:
            # Two arms and no instruction: the scene's one task, the handover.
            from .bimanual_expert import BimanualExpert

            return BimanualExpert(env, seed=seed, speed=speed)
        return ScriptedExpert(env, seed=seed, speed=speed)
    if task.family == "transfer":
        from .bimanual_expert import BimanualExpert

        return BimanualExpert(env, seed=seed, speed=speed)
    return TaskExpert(env, task, seed=seed, speed=speed)


def run_expert_episode(env: SimEnv, task: Task | None, seed: int, max_seconds: float = 60.0) -> bool:
    """Reset ``env`` to ``seed``, run the task's expert until done/failed/``max_seconds``; True if it succeeded.

    Sets ``env.task`` (when the env has tasks) so ``env.is_success()`` checks this task.
    """
    if task is not None and hasattr(env, "set_task"):
        env.set_task(task)
    env.reset(seed=seed)
    expert = make_expert(env, task, seed=seed)
    steps = math.ceil(max_seconds / env.control_dt)
    for _ in range(steps):
        env.apply_action(expert.act())
        if expert.done or expert.failed:
            break
    if not expert.done:
        return False
    return bool(task.success(env)) if task is not None else bool(env.is_success())


class TaskExpert:
    """Expert for one task of the cubes suite; see the module docstring for the motions.

    Call :meth:`reset` after every ``env.reset()`` and :meth:`act` once per control tick.

    Attributes:
        done: the task's success check has held ~0.4 s with the gripper clear (pick: holding).
        failed: every attempt failed (or the give-up time passed); the expert keeps still.
        phase: name of the current phase, for logging and the intervention corrector.
    """

    def __init__(self, env: SimEnv, task: Task, seed: int | None = None, speed: float = 1.0) -> None:
        if env.gripper_index is None:
            raise SimModelError(f"{env.model_path}: the task expert needs a 'gripper' actuator")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if task.family not in ("pick", "bin", "stack", "push"):
            raise ValueError(f"task {task.task_id!r}: no expert for family {task.family!r}")
        objects = list(getattr(env, "objects", []))
        if task.obj not in objects:
            raise SimModelError(
                f"{env.model_path}: task {task.task_id!r} needs object {task.obj!r}; the scene has "
                f"{', '.join(objects) or 'none'} (use --scene cubes)"
            )
        if task.family == "stack" and task.support not in objects:
            raise SimModelError(f"{env.model_path}: task {task.task_id!r} stacks on {task.support!r}, "
                                "which the scene does not have (use --scene cubes)")
        self.env = env
        self.task = task
        self.speed = float(speed)
        self.kin = Kinematics(env.model)
        self.geom = SceneGeometry(env)
        self._arm_idx = np.array([env.joint_names.index(n) for n in self.kin.joint_names])
        self._grip_idx = env.gripper_index
        self._rng = np.random.default_rng(seed)
        self.reset()

    # ------------------------------------------------------------------ public interface

    def reset(self) -> None:
        """Plan a new demonstration from the current state (after ``env.reset()``)."""
        self.replan()

    def replan(self) -> None:
        """Plan the rest of the task from the current state (a corrector taking over): the
        plan depends only on what the scene looks like now, so reset and replan are one."""
        self._attempts = 0
        self._elapsed = 0.0
        self.done = False
        self.failed = False
        self._q_cmd = self.env.joint_positions()[self._arm_idx]
        self._grip = float(self.env.joint_positions()[self._grip_idx])
        self._draw_style()
        self._plan_from_state()

    def act(self) -> np.ndarray:
        """Next action (arm joint targets in rad + gripper 0..1); call once per control tick."""
        dt = self.env.control_dt
        if not (self.done or self.failed):
            self._tick(dt)
            self._elapsed += dt
            if self._elapsed > GIVE_UP_SECONDS / max(self.speed, 1e-6) and not self.done:
                self.failed = True
        action = self.env.home_action()
        action[self._arm_idx] = self._q_cmd
        action[self._grip_idx] = self._grip
        return action

    # ------------------------------------------------------------------ style and state

    def _draw_style(self) -> None:
        """Randomised timings, heights and jitters of this demonstration (vary the data)."""
        rng, k = self._rng, 1.0 / self.speed
        self.s = {
            "t_approach": k * rng.uniform(1.3, 1.8),
            "t_descend": k * rng.uniform(0.8, 1.1),
            "t_settle": k * rng.uniform(0.15, 0.3),
            "t_close": k * rng.uniform(0.3, 0.45),
            "t_grip": k * rng.uniform(0.2, 0.3),
            "t_lift": k * rng.uniform(0.8, 1.1),
            "t_lower": k * rng.uniform(0.7, 1.0),
            "t_open": k * rng.uniform(0.3, 0.45),
            "t_retreat": k * rng.uniform(0.6, 0.9),
            "carry_speed": rng.uniform(0.12, 0.17) * self.speed,
            "push_speed": rng.uniform(0.07, 0.1) * self.speed,
            "approach_height": rng.uniform(0.06, 0.09),
            "lift_height": rng.uniform(0.09, 0.12),
            "carry_extra": rng.uniform(0.0, 0.02),
            "grasp_dz": rng.uniform(-0.003, 0.003),
            "xy_jitter": rng.uniform(-0.002, 0.002, size=2),
            "place_jitter": rng.uniform(-0.002, 0.002, size=2),
            "yaw_jitter": math.radians(rng.uniform(-3.0, 3.0)),
            "push_past": rng.uniform(0.02, 0.028),
        }

    def _ee(self) -> tuple[np.ndarray, np.ndarray]:
        return self.kin.fk(self.env.joint_positions()[self._arm_idx])

    def _obj(self, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.env.object_pose(name or self.task.obj)

    def _holding(self) -> bool:
        """The task's cube is between the (partly) closed jaws."""
        q = self.env.joint_positions()
        ee, _ = self._ee()
        pos, _ = self._obj()
        grip = float(q[self._grip_idx])
        near = float(np.linalg.norm(pos[:2] - ee[:2])) < 0.02 and abs(pos[2] + GRASP_ABOVE_CENTER - ee[2]) < 0.02
        return grip < 0.9 and near

    def _plan_from_state(self) -> None:
        """Queue the phases that finish the task from what the scene looks like now."""
        fam = self.task.family
        self._queue: list[str] = []
        self._shifts = 0
        self._relocate: np.ndarray | None = None
        if fam == "push":
            if self.task.success(self.env):
                self._queue = ["clear", "verify"]
            else:
                self._queue = ["clear", "approach", "descend", "push", "back", "retreat", "verify"]
        elif self._holding():
            self._queue = ["lift", "check"] + (["hold"] if fam == "pick" else self._place_phases())
        elif fam != "pick" and self.task.success(self.env) and self._grip > 0.9:
            self._queue = ["retreat", "verify"]
        else:
            self._queue = ["clear", "approach", "descend", "settle", "close", "grip", "lift", "check"]
            self._queue += ["hold"] if fam == "pick" else self._place_phases()
        self._enter(self._queue.pop(0))

    @staticmethod
    def _place_phases() -> list[str]:
        return ["carry", "lower", "open", "retreat", "verify"]

    def _retry(self) -> None:
        """Start over from the current state, or give up after MAX_ATTEMPTS."""
        self._attempts += 1
        if self._attempts >= MAX_ATTEMPTS:
            self.failed = True
            self.phase = "failed"
            return
        self._plan_from_state()

    # ------------------------------------------------------------------ phases

    def _enter(self, name: str) -> None:
        """Start phase ``name``: compute its targets from the poses now."""
        self.phase = name
        self._t = 0.0
        self._held = 0.0
        # Cartesian phases run from the commanded pose (continuity of the command) ...
        p_cmd, rot_cmd = self.kin.fk(self._q_cmd)
        self._p0 = p_cmd
        self._yaw0 = self._yaw1 = None
        self._rot = rot_cmd
        self._grip0 = self._grip1 = self._grip
        fam = self.task.family
        s = self.s
        if name == "clear":
            # Straight up to a height where nothing on the table is in the way, jaws set for the task.
            safe = self.geom.clear_height() + TIP_BELOW_EE + 0.02
            self._p1 = np.array([p_cmd[0], p_cmd[1], max(p_cmd[2], safe)])
            self._grip1 = 0.0 if fam == "push" and not self._holding() else 1.0
            rise = self._p1[2] - p_cmd[2]
            self._dur = max(0.25 / self.speed, rise / (0.12 * self.speed)) if rise > 0.005 else (
                0.25 / self.speed if abs(self._grip1 - self._grip) > 0.1 else 0.0)
        elif name == "approach":
            self._plan_approach()
        elif name == "descend":
            self._plan_target()
            self._p0 = p_cmd
            self._rot = self._rot_target
            self._p1 = self._grasp.copy()
            dz = max(0.0, self._p0[2] - self._p1[2])
            self._dur = s["t_descend"] * float(np.clip(dz / 0.08, 0.3, 1.3))
        elif name in ("settle", "close", "grip"):
            self._p1 = p_cmd
            self._dur = s["t_" + name]
            if name == "close":
                self._grip1 = 0.0
            elif name == "grip":
                self._grip0 = self._grip1 = 0.0
        elif name == "lift":
            self._grip0 = self._grip1 = 0.0
            if fam == "pick":
                top = self.env.object_rest_z(self.task.obj) + GRASP_ABOVE_CENTER + s["lift_height"]
            else:
                top = self._carry_z()
            self._p1 = np.array([p_cmd[0], p_cmd[1], max(top, p_cmd[2])])
            self._dur = s["t_lift"] * float(np.clip((self._p1[2] - p_cmd[2]) / 0.1, 0.3, 1.3))
        elif name in ("check", "again"):
            self._dur = 0.0
        elif name == "carry":
            self._plan_carry(p_cmd)
        elif name == "lower":
            self._plan_lower(p_cmd)
        elif name == "open":
            self._p1 = p_cmd
            self._grip1 = 1.0
            self._dur = s["t_open"]
        elif name == "retreat":
            self._relocate = None  # set down (or given up): push from here
            self._p1 = p_cmd.copy()
            self._p1[2] = max(p_cmd[2] + 0.05, self.geom.clear_height() + TIP_BELOW_EE + 0.01)
            self._dur = s["t_retreat"]
        elif name == "push":
            self._plan_push(p_cmd)
        elif name == "back":
            # Off the cube's face before rising: the pads' friction would otherwise tip it up.
            self._p1 = p_cmd.copy()
            self._p1[self._push_axis] -= self._push_dir * 0.012
            self._dur = 0.3 / self.speed
            self._grip0 = self._grip1 = 0.0
        elif name in ("hold", "verify"):
            self._p1 = p_cmd
            self._dur = math.inf
        else:  # pragma: no cover - programming error
            raise AssertionError(name)

    def _tick(self, dt: float) -> None:
        name = self.phase
        if name in ("hold", "verify"):
            if self.task.success(self.env) and (name == "hold" or not self._touching()):
                self._held += dt
                if self._held >= HOLD_SECONDS - 1e-9:
                    self.done = True
            else:
                self._held = 0.0
                if name == "hold" and not self._holding():
                    self._retry()
                    return
                if self._t > VERIFY_SECONDS / self.speed:
                    self._retry()
                    return
            self._t += dt
            return
        if name == "again":
            self._retry()
            return
        if name == "check":
            if self._lifted():
                self._next()
            else:
                self._retry()
            return
        if name == "approach":
            s = _min_jerk(self._t / self._dur) if self._dur > 0 else 1.0
            self._q_cmd = self._q_start + s * (self._q_goal - self._q_start)
        else:
            s = _min_jerk(self._t / self._dur) if self._dur > 0 else 1.0
            target = self._p0 + s * (self._p1 - self._p0)
            if name == "push" and not self._steer(target, dt):
                return
            if self._yaw0 is not None:
                self._rot = _top_down(self._yaw0 + s * (self._yaw1 - self._yaw0))
            self._q_cmd = self.kin.ik(target, self._rot, self._q_cmd, max_iters=30, tol_pos=5e-5).q
        self._grip = self._grip0 + (self._grip1 - self._grip0) * (
            min(1.0, self._t / self._dur) if self._dur > 0 else 1.0)
        # A placing carry that lost its cube starts over rather than placing nothing.
        if name in ("carry", "lower") and not self._holding():
            self._retry()
            return
        self._t += dt
        if self._t >= self._dur:
            self._next()

    def _next(self) -> None:
        if self._queue:
            self._enter(self._queue.pop(0))
        else:
            self._enter("verify")

    def _lifted(self) -> bool:
        pos, _ = self._obj()
        return self._holding() and pos[2] > self.env.object_rest_z(self.task.obj) + 0.02

    def _touching(self) -> bool:
        """The jaws are still near the task's cube (placing: wait until they are clear)."""
        if self.task.family == "pick":
            return False
        ee, _ = self._ee()
        pos, _ = self._obj()
        return float(np.linalg.norm(ee - pos)) < 0.035

    # ------------------------------------------------------------------ targets

    def _plan_target(self, decide: bool = False) -> None:
        """Grasp (or push start) pose for the task's cube as it lies now (``decide``: also choose
        how to push it, at the approach)."""
        pos, quat = self._obj()
        if self.task.family == "push" and self._relocate is None:
            self._plan_push_start(pos, quat, decide)
            return
        self._plan_grasp(pos, quat)

    def _plan_grasp(self, pos: np.ndarray, quat: np.ndarray) -> None:
        s = self.s
        center = pos + np.array([*s["xy_jitter"], 0.0])
        natural = math.atan2(center[1], center[0]) + math.pi / 2
        cube_yaw = face_yaw(quat)
        yaw = natural + wrap_quarter(cube_yaw - natural)
        # Of the two face-aligned jaw directions, take the one whose open jaws land farthest from
        # the other cubes and the bin walls (the natural one when both are clear).
        options = [yaw, yaw + math.pi / 2 if yaw < natural else yaw - math.pi / 2]
        clear = [self.geom.jaw_clearance(center, y, exclude=self.task.obj) for y in options]
        if clear[1] > clear[0] + 0.004 and clear[0] < 0.012:
            yaw = options[1]
        self._grasp_yaw = yaw + s["yaw_jitter"]
        self._rot_target = _top_down(self._grasp_yaw)
        grasp_z = pos[2] + GRASP_ABOVE_CENTER + s["grasp_dz"]
        self._grasp = np.array([center[0], center[1], grasp_z])
        self._pre = self._grasp + np.array([0.0, 0.0, s["approach_height"]])
        self._pre[2] = max(self._pre[2], self.geom.clear_height() + TIP_BELOW_EE + 0.015)

    def _plan_push_start(self, pos: np.ndarray, quat: np.ndarray, decide: bool) -> None:
        """Where the closed jaws go down behind the cube, and which way they push it.

        Straight along y to the edge when that way is clear; otherwise first along x to the
        nearest clear lane (the bin and the other cubes are in the way), then along y.
        """
        s = self.s
        half = 0.5 * self.env.cube_size
        # Behind the cube (its corner when it lies turned) with a margin, jaws just above the table.
        back = half * math.sqrt(2.0) + PUSHER_HALF + 0.012
        lane = self.geom.push_lane(self.task, pos, back) if decide else pos[0]
        spot = self.geom.relocation_spot(self.task, pos, back) if lane is None and self._shifts < 2 else None
        if spot is not None:
            # No push gets it past the bin: set it down where one does (then push it from there).
            self._relocate = spot
            self._shifts += 1
            self._queue = ["descend", "settle", "close", "grip", "lift", "check", "carry", "lower", "open",
                           "retreat", "approach", "descend", "push", "back", "retreat", "verify"]
            self._plan_grasp(pos, quat)
            return
        if lane is None:
            lane = pos[0]
        if not decide:
            pass  # the descent keeps the direction chosen at the approach, from the cube's pose now
        elif abs(lane - pos[0]) > 0.005 and self._shifts < 2:
            self._push_axis = 0
            self._push_dir = 1.0 if lane > pos[0] else -1.0
            self._push_goal = lane
            self._shifts += 1
            # After the shift: back up, go behind the cube again (re-planned then) and push to the edge.
            self._queue = ["descend", "push", "back", "retreat", "approach", "descend", "push", "back", "retreat", "verify"]
        else:
            self._push_axis = 1
            self._push_dir = 1.0 if self.task.side == "left" else -1.0
            self._push_goal = self.geom.push_goal_y(self.task) + self._push_dir * s["push_past"]
        # Jaws across the push, so the pads' ends push side by side (pushing on one pad's broad
        # face would load the finger slide and tip the wrist); of the two equivalent
        # directions, the one needing less wrist roll.
        natural = math.atan2(pos[1], pos[0]) + math.pi / 2
        axis_yaw = 0.0 if self._push_axis == 0 else math.pi / 2
        yaw = axis_yaw + math.pi * round((natural - axis_yaw) / math.pi) + s["yaw_jitter"]
        self._grasp_yaw = yaw
        self._rot_target = _top_down(yaw)
        start = np.array([pos[0], pos[1], TIP_BELOW_EE + 0.007])
        start[self._push_axis] -= self._push_dir * back
        start[1 - self._push_axis] += s["xy_jitter"][0]
        self._grasp = start
        self._pre = self._grasp + np.array([0.0, 0.0, s["approach_height"]])
        self._pre[2] = max(self._pre[2], self.geom.clear_height() + TIP_BELOW_EE + 0.015)

    def _plan_approach(self) -> None:
        self._plan_target(decide=True)
        self._q_start = self._q_cmd.copy()
        seed = self.kin.home.copy()
        seed[0] = math.atan2(self._pre[1], self._pre[0])
        warm = self.kin.ik(self._pre, self._rot_target, self._q_cmd, max_iters=100)
        res = warm if warm.success else self.kin.ik(self._pre, self._rot_target, seed, max_iters=200, restarts=10)
        self._q_goal = res.q
        home = self.kin.home
        full = max(1e-6, float(np.abs(self._q_goal - home).max()))
        ratio = float(np.abs(self._q_goal - self._q_start).max()) / full
        self._dur = self.s["t_approach"] * float(np.clip(ratio, 0.3, 1.0))
        self._grip1 = 0.0 if self.task.family == "push" and self._relocate is None else 1.0

    def _carry_z(self) -> float:
        """ee height that carries the held cube over every obstacle with margin."""
        size = self.env.cube_size
        bottom_below_ee = GRASP_ABOVE_CENTER + 0.5 * size
        return self.geom.clear_height() + bottom_below_ee + 0.03 + self.s["carry_extra"]

    def _place_xy_and_yaw(self) -> tuple[np.ndarray, float, float]:
        """Where the held cube's centre goes (xy), the yaw change to align it, and the floor under it."""
        if self._relocate is not None:
            center, floor, yaw = self._relocate.copy(), 0.0, face_yaw(self._obj()[1])
        elif self.task.family == "bin":
            center, floor, yaw = self.geom.bin_place()
        else:
            pos, quat = self._obj(self.task.support)
            center, floor, yaw = pos[:2].copy(), pos[2] + 0.5 * self.env.cube_size, face_yaw(quat)
        _, obj_quat = self._obj()
        turn = wrap_quarter(yaw - face_yaw(obj_quat))
        return center + self.s["place_jitter"], turn, floor

    def _plan_carry(self, p_cmd: np.ndarray) -> None:
        obj, _ = self._obj()
        center, turn, _ = self._place_xy_and_yaw()
        offset = p_cmd[:2] - obj[:2]  # where the cube sits in the jaws (turns with them)
        c, sn = math.cos(turn), math.sin(turn)
        offset = np.array([c * offset[0] - sn * offset[1], sn * offset[0] + c * offset[1]])
        yaw0 = self._grasp_yaw_now()
        self._yaw0, self._yaw1 = yaw0, yaw0 + turn
        self._p1 = np.array([center[0] + offset[0], center[1] + offset[1], max(p_cmd[2], self._carry_z())])
        dist = float(np.linalg.norm(self._p1 - p_cmd))
        self._dur = max(0.7 / self.speed, dist / self.s["carry_speed"])
        self._grip0 = self._grip1 = 0.0

    def _plan_lower(self, p_cmd: np.ndarray) -> None:
        obj, _ = self._obj()
        _, _, floor = self._place_xy_and_yaw()
        # Release with the cube's bottom a few millimetres above what it lands on.
        target_center = floor + 0.5 * self.env.cube_size + 0.004
        self._p1 = np.array([p_cmd[0], p_cmd[1], p_cmd[2] + (target_center - obj[2])])
        self._dur = self.s["t_lower"]
        self._grip0 = self._grip1 = 0.0
        yaw = self._grasp_yaw_now()
        self._yaw0 = self._yaw1 = yaw

    def _steer(self, target: np.ndarray, dt: float) -> bool:
        """Keep the jaws behind the pushed cube's centre (it slides sideways as it turns).

        Shifts ``target`` sideways toward the cube's line at a bounded rate; when the cube has
        got away (off the jaws' face) the push stops, the jaws back off and the expert re-plans.
        """
        lat = 1 - self._push_axis
        obj, _ = self._obj()
        ee, _ = self._ee()
        if abs(obj[lat] - ee[lat]) > 0.024 or obj[2] > self.env.object_rest_z(self.task.obj) + 0.012:
            self._queue = ["back", "retreat", "again"]
            self._next()
            return False
        want = float(np.clip(obj[lat] - target[lat], -0.02, 0.02))
        step = 0.04 * self.speed * dt
        self._lat_off += float(np.clip(want - self._lat_off, -step, step))
        target[lat] += self._lat_off
        return True

    def _plan_push(self, p_cmd: np.ndarray) -> None:
        self._lat_off = 0.0
        axis, direction = self._push_axis, self._push_dir
        # The jaws stop where the cube's centre reaches the goal: they touch its back face one
        # cube half plus a jaw half behind its centre.
        stop = self._push_goal - direction * (0.5 * self.env.cube_size + PUSHER_HALF)
        travel = max((stop - p_cmd[axis]) * direction, 0.0)
        self._p1 = p_cmd.copy()
        self._p1[axis] += direction * travel
        self._dur = max(0.5 / self.speed, travel / self.s["push_speed"])
        self._grip0 = self._grip1 = 0.0

    def _grasp_yaw_now(self) -> float:
        """Yaw of the jaw axis as commanded now (for top-down poses)."""
        _, rot = self.kin.fk(self._q_cmd)
        # _top_down(yaw) has column 1 (finger axis) = (c, s, 0).
        return math.atan2(rot[1, 1], rot[0, 1])
