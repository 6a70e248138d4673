"""Scripted two-arm demonstrator of the ``bimanual`` scene's transfer task (ALOHA's sim transfer).

The left arm picks the cube top-down (fingers on two side faces, the face pair nearest its
natural wrist roll), lifts it and carries it to a handover point above the middle of the table,
turning the wrist on the way so that its fingers close along world x. Meanwhile the right arm
waits beside that point with its gripper horizontal, pointing +y, fingers closing vertically.
The right gripper then moves straight in and closes on the cube's top and bottom faces (the left
fingers hold the x faces, so the two grips never share a face), the left gripper opens and
backs away up and home, and the right arm draws the cube toward its side.

The plan is a queue of phases; each phase's targets are computed when it starts, from the poses
at that moment (the handover grasp from where the cube actually hangs). Cartesian segments are
followed by warm-started IK every tick and timed by a minimum-jerk profile, as in
:class:`~telecorder.sim.expert.ScriptedExpert`, whose interface (``reset``, ``replan``, ``act``,
``done``, ``failed``, ``phase``) this class shares.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .env import SimEnv, SimModelError
from .expert import _min_jerk, _top_down
from .kinematics import Kinematics

__all__ = ["ARMS", "BimanualExpert"]

ARMS = ("left", "right")
# ee_site above the cube centre when the left fingers close (as the single-arm expert).
GRASP_ABOVE_CENTER = 0.008
# The right ee_site stops this far short of the cube centre (along +y): the fingertips, 17 mm
# beyond it, then reach 7 mm past the centre.
RIGHT_GRASP_SHORT = 0.010
# The handover point (world, metres): above the middle of the table, a little toward the left arm.
HANDOVER = np.array([0.15, 0.02, 0.15])
HOLD_SECONDS = 0.4
# A handover whose success check does not hold this long after the plan ends is a failure.
VERIFY_SECONDS = 1.5


@dataclass
class _Arm:
    """One arm's kinematics and command."""

    name: str
    kin: Kinematics
    idx: np.ndarray
    grip_idx: int
    base: np.ndarray
    yaw0: float
    q_cmd: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grip: float = 1.0
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))


@dataclass
class _Segment:
    """A timed motion of one arm: a Cartesian line (with a rotation at each end) or a joint move."""

    arm: _Arm
    duration: float
    p0: np.ndarray | None = None
    p1: np.ndarray | None = None
    r0: np.ndarray | None = None
    r1: np.ndarray | None = None
    q0: np.ndarray | None = None
    q1: np.ndarray | None = None
    g0: float | None = None
    g1: float | None = None


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _yaw_of(quat: np.ndarray) -> float:
    return math.atan2(2.0 * (quat[0] * quat[3] + quat[1] * quat[2]), 1.0 - 2.0 * (quat[2] ** 2 + quat[3] ** 2))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


# The right gripper at the handover: pointing +y, fingers closing along world z.
_RIGHT_ROT = np.column_stack([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


class BimanualExpert:
    """Hand the cube from the left gripper to the right one (see the module docstring).

    Actions follow the env convention: both arms' joint targets (rad) and grippers (0 closed ..
    1 open), left arm first. Call :meth:`reset` after every ``env.reset()`` and :meth:`act` once per
    control tick.
    """

    def __init__(self, env: SimEnv, seed: int | None = None, speed: float = 1.0) -> None:
        missing = [a for a in ARMS if f"{a}_ee_site" not in getattr(env, "ee_sites", ())]
        if missing or not env.has_task:
            raise SimModelError(f"{env.model_path}: the bimanual expert needs a cube and two arms with sites "
                                "'left_ee_site' and 'right_ee_site' (the built-in --scene bimanual)")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.env, self.speed = env, float(speed)
        self._rng = np.random.default_rng(seed)
        self.arms = {a: self._make_arm(a) for a in ARMS}
        self.reset()

    def _make_arm(self, name: str) -> _Arm:
        env = self.env
        joints = [f"{name}_{j}" for j in ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")]
        missing = [j for j in [*joints, f"{name}_gripper"] if j not in env.joint_names]
        if missing:
            raise SimModelError(f"{env.model_path}: the bimanual expert needs the dimensions {missing}")
        kin = Kinematics(env.model, site=f"{name}_ee_site", joints=joints)
        # Where the arm stands and which way it faces at pan 0: IK seeds turn the pan from there.
        jid = env.model.joint(joints[0]).id
        kin.fk(kin.home)
        base = kin.data.xanchor[jid].copy()
        ee_home = kin.fk(np.where(np.arange(kin.n) == 0, 0.0, kin.home))[0]
        yaw0 = math.atan2(ee_home[1] - base[1], ee_home[0] - base[0])
        idx = np.array([env.joint_names.index(j) for j in joints])
        return _Arm(name, kin, idx, env.joint_names.index(f"{name}_gripper"), base, yaw0)

    # ------------------------------------------------------------------ planning

    def reset(self) -> None:
        """Plan a new demonstration from the current state (call after ``env.reset()``)."""
        rng, k = self._rng, 1.0 / self.speed
        self._dur = {name: k * rng.uniform(0.85, 1.2) * base for name, base in (
            ("reach", 1.6), ("descend", 0.9), ("settle", 0.2), ("close", 0.4), ("lift", 0.8), ("carry", 1.3),
            ("reach_in", 1.0), ("right_close", 0.4), ("release", 0.3), ("retreat", 1.0))}
        self._handover = HANDOVER + rng.uniform(-0.012, 0.012, size=3)
        self._approach_h = rng.uniform(0.06, 0.09)
        self._lift_h = rng.uniform(0.07, 0.10)
        self._jitter = rng.uniform(-0.002, 0.002, size=2)
        q = self.env.joint_positions()
        for arm in self.arms.values():
            arm.q_cmd = q[arm.idx].copy()
            arm.grip = float(np.clip(q[arm.grip_idx], 0.0, 1.0))
        self._action = self.env.home_action()
        self.done = self.failed = False
        self._held = 0.0
        self._verify = 0.0
        self._queue: list[tuple[str, Callable[[], list[_Segment]]]] = [
            ("reach", self._plan_reach), ("descend", self._plan_descend), ("close", self._plan_close),
            ("lift", self._plan_lift), ("carry", self._plan_carry), ("reach_in", self._plan_reach_in),
            ("right_close", self._plan_right_close), ("release", self._plan_release), ("retreat", self._plan_retreat),
        ]
        self._start_next()

    def replan(self) -> None:
        """Plan the rest from the current state (a corrector taking over): from the handover if the
        left gripper holds the cube in the air, else a fresh pick."""
        self.reset()
        left = self.arms["left"]
        env = self.env
        q = env.joint_positions()
        ee = left.kin.fk(q[left.idx])[0]
        cube = env.cube_pose()[0]
        holding = q[left.grip_idx] < 0.6 and float(np.linalg.norm(cube - ee)) < 0.03
        if holding and cube[2] > env.cube_rest_z + 0.03:
            self._grasp_rot = left.kin.fk(q[left.idx])[1]
            left.grip = 0.0
            # Drop the phases up to the lift: carry on from where the cube is.
            while self._queue and self._queue[0][0] != "carry":
                self._queue.pop(0)
            self._start_next()

    def _start_next(self) -> None:
        if not self._queue:
            self.phase, self._segments, self._t = "hold", [], 0.0
            return
        self.phase, plan = self._queue.pop(0)
        self._segments = plan()
        self._t = 0.0

    def _line(self, arm: _Arm, p1: np.ndarray, r1: np.ndarray, duration: float, **grip: float) -> _Segment:
        p0, r0 = arm.kin.fk(arm.q_cmd)
        return _Segment(arm, duration, p0=p0, p1=np.asarray(p1, dtype=np.float64), r0=r0, r1=r1, **grip)

    def _joint_move(self, arm: _Arm, p1: np.ndarray, r1: np.ndarray, duration: float) -> _Segment:
        seed = arm.kin.home.copy()
        seed[0] = _wrap(math.atan2(p1[1] - arm.base[1], p1[0] - arm.base[0]) - arm.yaw0)
        q1 = arm.kin.ik(p1, r1, seed, max_iters=200, restarts=10).q
        arm.rot = r1
        return _Segment(arm, duration, q0=arm.q_cmd.copy(), q1=q1)

    def _plan_reach(self) -> list[_Segment]:
        left, right = self.arms["left"], self.arms["right"]
        pos, quat = self.env.cube_pose()
        center = pos + np.array([*self._jitter, 0.0])
        # The face-aligned grasp yaw nearest the arm's natural one (no wrist roll): the finger
        # axis perpendicular to the arm's vertical plane.
        natural = math.atan2(center[1] - left.base[1], center[0] - left.base[0]) + math.pi / 2
        quarter = math.pi / 2
        yaw = natural + ((_yaw_of(quat) - natural + quarter / 2) % quarter - quarter / 2)
        self._grasp_yaw = yaw
        self._grasp_rot = _top_down(yaw)
        self._grasp_pos = np.array([center[0], center[1], pos[2] + GRASP_ABOVE_CENTER])
        pre = self._grasp_pos + np.array([0.0, 0.0, self._approach_h])
        wait = self._handover + np.array([0.0, -0.11, -GRASP_ABOVE_CENTER])
        return [self._joint_move(left, pre, self._grasp_rot, self._dur["reach"]),
                self._joint_move(right, wait, _RIGHT_ROT, self._dur["reach"])]

    def _plan_descend(self) -> list[_Segment]:
        return [self._line(self.arms["left"], self._grasp_pos, self._grasp_rot, self._dur["descend"])]

    def _plan_close(self) -> list[_Segment]:
        left = self.arms["left"]
        return [self._line(left, self._grasp_pos, self._grasp_rot, self._dur["settle"] + self._dur["close"],
                           g0=1.0, g1=0.0)]

    def _plan_lift(self) -> list[_Segment]:
        left = self.arms["left"]
        p = left.kin.fk(left.q_cmd)[0] + np.array([0.0, 0.0, self._lift_h])
        return [self._line(left, p, self._grasp_rot, self._dur["lift"])]

    def _plan_carry(self) -> list[_Segment]:
        # Turn the wrist on the way so the fingers close along world x (yaw 0 or pi, the nearer):
        # the cube's x faces are then the left's and its top and bottom free for the right gripper.
        left = self.arms["left"]
        end_yaw = 0.0 if abs(_wrap(self._grasp_yaw)) <= math.pi / 2 else math.pi
        return [self._line(left, self._handover, _top_down(end_yaw), self._dur["carry"])]

    def _plan_reach_in(self) -> list[_Segment]:
        right = self.arms["right"]
        cube = self.env.cube_pose()[0]
        target = np.array([cube[0], cube[1] - RIGHT_GRASP_SHORT, cube[2]])
        return [self._line(right, target, _RIGHT_ROT, self._dur["reach_in"])]

    def _plan_right_close(self) -> list[_Segment]:
        right = self.arms["right"]
        p, r = right.kin.fk(right.q_cmd)
        return [self._line(right, p, r, self._dur["right_close"] + 0.2, g0=1.0, g1=0.0)]

    def _plan_release(self) -> list[_Segment]:
        left = self.arms["left"]
        p, r = left.kin.fk(left.q_cmd)
        return [self._line(left, p, r, self._dur["release"] + 0.15, g0=0.0, g1=1.0)]

    def _plan_retreat(self) -> list[_Segment]:
        left, right = self.arms["left"], self.arms["right"]
        pl, rl = left.kin.fk(left.q_cmd)
        pr, rr = right.kin.fk(right.q_cmd)
        return [self._line(left, pl + np.array([0.0, 0.04, 0.07]), rl, self._dur["retreat"]),
                self._line(right, pr + np.array([0.0, -0.07, 0.02]), rr, self._dur["retreat"])]

    # ------------------------------------------------------------------ acting

    def act(self) -> np.ndarray:
        """Next action (both arms' joint targets in rad + grippers 0..1); call once per control tick."""
        dt = self.env.control_dt
        if self.phase == "hold":
            if self._success():
                self._held += dt
                self.done = self._held >= HOLD_SECONDS - 1e-9
            else:
                self._held = 0.0
                self._verify += dt
                self.failed = self._verify > VERIFY_SECONDS
        else:
            finished = True
            for seg in self._segments:
                s = _min_jerk(self._t / seg.duration) if seg.duration > 0 else 1.0
                arm = seg.arm
                if seg.q0 is not None and seg.q1 is not None:
                    arm.q_cmd = seg.q0 + s * (seg.q1 - seg.q0)
                else:
                    target = seg.p0 + s * (seg.p1 - seg.p0)
                    arm.rot = _blend(seg.r0, seg.r1, s)
                    arm.q_cmd = arm.kin.ik(target, arm.rot, arm.q_cmd, max_iters=30, tol_pos=5e-5).q
                if seg.g0 is not None and seg.g1 is not None:
                    arm.grip = seg.g0 + min(1.0, self._t / max(seg.duration - 0.2, 1e-6)) * (seg.g1 - seg.g0)
                finished &= self._t + dt >= seg.duration - 1e-9
            self._t += dt
            if finished:
                self._start_next()
        action = self._action
        for arm in self.arms.values():
            action[arm.idx] = arm.q_cmd
            action[arm.grip_idx] = arm.grip
        return action.copy()

    def _success(self) -> bool:
        # The env's check: the task set on it, else (two arms) the handover.
        return bool(self.env.is_success())


def _blend(r0: np.ndarray, r1: np.ndarray, s: float) -> np.ndarray:
    """Rotation a share ``s`` of the way from ``r0`` to ``r1`` (about their relative axis)."""
    rel = r1 @ r0.T
    angle = math.acos(float(np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0)))
    if angle < 1e-9:
        return r1.copy()
    axis = np.array([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:  # a half turn: no blend is well defined, jump at the end
        return r1.copy() if s >= 1.0 else r0.copy()
    axis /= norm
    a = s * angle
    kx = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return (np.eye(3) + math.sin(a) * kx + (1.0 - math.cos(a)) * kx @ kx) @ r0
