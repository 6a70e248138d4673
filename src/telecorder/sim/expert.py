"""Scripted pick-and-lift demonstrator for the built-in tabletop scene."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .env import SimEnv, SimModelError
from .kinematics import Kinematics

__all__ = ["ScriptedExpert"]

# Height of the grasp point (ee_site) above the cube centre when closing. The fingertips reach
# ~17 mm below ee_site, so this keeps them ~1 cm clear of the table while the pads cover
# most of the cube's side faces.
GRASP_ABOVE_CENTER = 0.008
# Once lifted, the cube must stay up this long before the demo counts as done.
HOLD_SECONDS = 0.5
# Give up (``failed``) if the cube is not up this long after the lift motion has ended.
GIVE_UP_SECONDS = 1.5


def _min_jerk(tau: float) -> float:
    """Smooth 0->1 profile with zero velocity and acceleration at both ends."""
    tau = min(max(tau, 0.0), 1.0)
    return tau * tau * tau * (10.0 + tau * (-15.0 + 6.0 * tau))


def _top_down(yaw: float) -> np.ndarray:
    """Gripper rotation pointing straight down (z = -world z) with the finger axis (y) at ``yaw``."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[-s, c, 0.0], [c, s, 0.0], [0.0, 0.0, -1.0]])


@dataclass
class _Plan:
    """Randomised parameters of one demonstration (sim seconds and metres)."""

    t_approach: float
    t_descend: float
    t_settle: float
    t_close: float
    t_grip: float
    t_lift: float
    approach_height: float
    lift_height: float
    grasp_dz: float
    xy_jitter: np.ndarray
    yaw_jitter: float


class ScriptedExpert:
    """Pick-and-lift expert for the built-in scene: approach above the cube, descend, close, lift (and hold).

    Call :meth:`reset` after every ``env.reset()`` and :meth:`act` once per control tick; feed
    the returned action to ``env.apply_action``. Actions follow the env convention (arm joint
    targets in radians, gripper 0 = closed .. 1 = open).

    Motion: a minimum-jerk joint-space move to a pre-grasp pose above the cube, then straight
    vertical Cartesian descent and lift (IK every tick, warm-started, so the joint trajectory
    stays smooth), with a top-down grasp whose finger axis is aligned with a cube face
    (cube yaw modulo 90 degrees, the option needing the least wrist roll).

    Attributes:
        done: True once the cube has been lifted and held ~0.5 s; the episode can end.
        failed: True when the lift is over but the cube is not up (the expert keeps holding).
        phase: name of the current phase, for logging.
    """

    def __init__(self, env: SimEnv, seed: int | None = None, speed: float = 1.0) -> None:
        if not env.has_task:
            raise SimModelError(
                f"{env.model_path}: ScriptedExpert needs the built-in task "
                "(a free 'cube' body and an 'ee_site' site)"
            )
        if env.gripper_index is None:
            raise SimModelError(f"{env.model_path}: ScriptedExpert needs a 'gripper' actuator")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.env = env
        self.speed = float(speed)
        self.kin = Kinematics(env.model)
        self._arm_idx = np.array([env.joint_names.index(n) for n in self.kin.joint_names])
        self._grip_idx = env.gripper_index
        self._rng = np.random.default_rng(seed)
        self.reset()

    # ------------------------------------------------------------------ planning

    def reset(self) -> None:
        """Plan a new demonstration from the current robot state and cube pose."""
        rng, k = self._rng, 1.0 / self.speed
        self.plan = _Plan(
            t_approach=k * rng.uniform(1.3, 1.8),
            t_descend=k * rng.uniform(0.8, 1.1),
            t_settle=k * rng.uniform(0.15, 0.3),
            t_close=k * rng.uniform(0.3, 0.45),
            t_grip=k * rng.uniform(0.2, 0.3),
            t_lift=k * rng.uniform(0.9, 1.2),
            approach_height=rng.uniform(0.06, 0.10),
            lift_height=rng.uniform(0.09, 0.12),
            grasp_dz=rng.uniform(-0.003, 0.003),
            xy_jitter=rng.uniform(-0.002, 0.002, size=2),
            yaw_jitter=math.radians(rng.uniform(-3.0, 3.0)),
        )
        self.done = False
        self.failed = False
        self.phase = "approach"
        self._t = 0.0
        self._held = 0.0
        self._action = self.env.home_action()
        self._q_start = self.env.joint_positions()[self._arm_idx]
        self._plan_grasp()
        # Seeding with the arm already turned toward the cube lands IK on the elbow-up branch.
        seed = self.kin.home.copy()
        seed[0] = math.atan2(self._pre_pos[1], self._pre_pos[0])
        self._q_pre = self.kin.ik(self._pre_pos, self._rot, seed, max_iters=200, restarts=10).q
        self._q_cmd = self._q_start.copy()

    def replan(self) -> None:
        """Plan the rest of the task from the arm's current state (a corrector taking over).

        With the cube between the closed fingers, the plan is the lift from where the gripper
        is. With the gripper open above the cube (within 1.5 cm of the grasp axis, between the
        grasp and the pre-grasp heights), it is the descent from there. Otherwise it is a
        fresh pick from the current pose, which opens the gripper on the way.
        """
        q = self.env.joint_positions()
        arm = q[self._arm_idx]
        ee, rot = self.kin.fk(arm)
        cube, _ = self.env.cube_pose()
        holding = float(q[self._grip_idx]) < 0.9 and float(np.linalg.norm(cube - ee)) < 0.03
        self.reset()  # fresh timings and grasp from the current pose and cube
        p = self.plan
        if not holding:
            above = (float(q[self._grip_idx]) > 0.9
                     and float(np.linalg.norm(ee[:2] - self._grasp_pos[:2])) < 0.015
                     and self._grasp_pos[2] - 0.005 <= ee[2] <= self._pre_pos[2] + 0.02)
            if above:
                # Descend from here: the descent interpolates from the pre-grasp point to the grasp,
                # in the share of its time that the remaining height needs.
                full = max(1e-6, p.approach_height)
                p.t_descend *= float(np.clip((ee[2] - self._grasp_pos[2]) / full, 0.25, 1.0))
                self._pre_pos = ee.copy()
                self._q_pre = arm.copy()
                self._q_cmd = arm.copy()
                self._t = p.t_approach
                self.phase = "descend"
            else:
                # A fresh approach at the demonstrations' pace: a short way takes a short time
                # (never the crawl of a full-length move over a few centimetres).
                home = self.kin.home
                full = max(1e-6, float(np.abs(self._q_pre - home).max()))
                p.t_approach *= float(np.clip(np.abs(self._q_pre - arm).max() / full, 0.25, 1.0))
            return
        self._rot = rot
        self._grasp_pos = ee.copy()
        self._lift_pos = np.array([ee[0], ee[1], self.env.cube_rest_z + GRASP_ABOVE_CENTER + p.lift_height])
        self._q_cmd = arm.copy()
        self._t = p.t_approach + p.t_descend + p.t_settle + p.t_close + p.t_grip
        self.phase = "lift"

    def _plan_grasp(self) -> None:
        """Grasp orientation and pre-grasp / grasp / lift positions from the cube's current pose."""
        pos, quat = self.env.cube_pose()
        cube_yaw = math.atan2(
            2.0 * (quat[0] * quat[3] + quat[1] * quat[2]),
            1.0 - 2.0 * (quat[2] ** 2 + quat[3] ** 2),
        )
        p = self.plan
        center = pos + np.array([*p.xy_jitter, 0.0])
        # With no wrist roll the finger axis is perpendicular to the arm's vertical plane;
        # picking the face-aligned yaw nearest to it keeps the roll within +-45 degrees.
        natural = math.atan2(center[1], center[0]) + math.pi / 2
        quarter = math.pi / 2
        yaw = natural + ((cube_yaw - natural + quarter / 2) % quarter - quarter / 2)
        self._rot = _top_down(yaw + p.yaw_jitter)
        grasp_z = pos[2] + GRASP_ABOVE_CENTER + p.grasp_dz
        self._grasp_pos = np.array([center[0], center[1], grasp_z])
        self._pre_pos = self._grasp_pos + np.array([0.0, 0.0, p.approach_height])
        self._lift_pos = self._grasp_pos + np.array([0.0, 0.0, p.lift_height])

    def _ik_track(self, target: np.ndarray) -> np.ndarray:
        # Warm-started from the previous command, so successive solutions stay on one branch
        # and the joint trajectory is as smooth as the Cartesian one.
        res = self.kin.ik(target, self._rot, self._q_cmd, max_iters=30, tol_pos=5e-5)
        return res.q

    # ------------------------------------------------------------------ acting

    def act(self) -> np.ndarray:
        """Next action (arm joint targets in rad + gripper 0..1); call once per control tick."""
        p = self.plan
        t = self._t
        grip = 1.0
        t_pre = p.t_approach
        t_down = t_pre + p.t_descend
        t_closing = t_down + p.t_settle
        t_closed = t_closing + p.t_close
        t_lifting = t_closed + p.t_grip
        t_up = t_lifting + p.t_lift

        if t < t_pre:
            self.phase = "approach"
            s = _min_jerk(t / t_pre)
            self._q_cmd = self._q_start + s * (self._q_pre - self._q_start)
        elif t < t_down:
            if self.phase == "approach":
                # The cube has not been touched yet: refresh its pose in case it moved/settled.
                self._replan_descent()
            self.phase = "descend"
            s = _min_jerk((t - t_pre) / p.t_descend)
            self._q_cmd = self._ik_track(self._pre_pos + s * (self._grasp_pos - self._pre_pos))
        elif t < t_closed:
            self.phase = "settle" if t < t_closing else "close"
            self._q_cmd = self._ik_track(self._grasp_pos)
            grip = 1.0 - min(max((t - t_closing) / p.t_close, 0.0), 1.0)
        elif t < t_lifting:
            self.phase = "grip"
            grip = 0.0
        elif t < t_up:
            self.phase = "lift"
            grip = 0.0
            s = _min_jerk((t - t_lifting) / p.t_lift)
            self._q_cmd = self._ik_track(self._grasp_pos + s * (self._lift_pos - self._grasp_pos))
        else:
            self.phase = "hold"
            grip = 0.0
            if self.env.is_success():
                self._held += self.env.control_dt
                if self._held >= HOLD_SECONDS - 1e-9:
                    self.done = True
            else:
                self._held = 0.0
                if t - t_up > GIVE_UP_SECONDS:
                    self.failed = True

        self._t += self.env.control_dt
        action = self._action
        action[self._arm_idx] = self._q_cmd
        action[self._grip_idx] = grip
        return action.copy()

    def _replan_descent(self) -> None:
        self._plan_grasp()
        # Descend from where the approach actually ended so the command stays continuous.
        self._pre_pos = self.kin.fk(self._q_pre)[0]
        self._q_cmd = self._q_pre.copy()
