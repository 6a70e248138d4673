"""End-effector teleoperation: a device moves a target pose, IK turns it into joint targets.

VR controllers and gamepads/keyboards steer the gripper in Cartesian space. Each tick the
device's target (position, rotation, gripper opening) is solved by damped-least-squares
IK on a MuJoCo model of the follower, seeded with the measured joints so the arm stays on
its configuration branch. The model's joints are found in the follower's state by name
(:class:`ArmJoints`), so the same teleop steers the simulated arm and a Dynamixel arm whose
calibration lists its joints in any order. The joint targets are the recorded ``action``;
the commanded end-effector pose is recorded too, as ``action_eef``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ...datasets.features import FeatureSpec
from ..interfaces import Event, Teleop, TeleopOutput

if TYPE_CHECKING:
    from ...sim.kinematics import Kinematics
    from ..robots.sim import SimRobot

EEF_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
GRIPPER = "gripper"


@dataclass
class EEFTarget:
    position: np.ndarray  # (3,) metres, robot base (world) frame
    rotation: np.ndarray  # (3, 3)
    gripper: float  # 0 = closed, 1 = open
    events: set[Event] = field(default_factory=set)


# A source gets the current EEF pose and gripper and returns the target for this tick.
TargetSource = Callable[[np.ndarray, np.ndarray, float, float], EEFTarget]


@dataclass
class ArmJoints:
    """Where a kinematic model's joints sit in the follower's state and action vectors.

    ``index[k]`` is the position of ``kin.joint_names[k]`` in the state; ``gripper`` the position
    of the normalized gripper (0 = closed, 1 = open), if any. Any other entry of the state is a
    joint that does not move the end effector: it holds its value from the start of the episode.
    ``max_step`` bounds how far (rad, or m for a slide) an arm joint's command may lead its measured
    position in one tick; None leaves the command as IK found it (the simulated arm).
    """

    kin: Kinematics
    index: np.ndarray
    gripper: int | None
    size: int
    max_step: float | None = None

    @classmethod
    def by_name(cls, kin_model: object, names: Sequence[str], *, site: str = "ee_site",
                max_step: float | None = None, gripper: str = GRIPPER) -> ArmJoints:
        """Match the state's joint ``names`` to the model's joints that move ``site``.

        The state entry named ``gripper`` (``left_gripper`` for one of two arms) is the gripper;
        model joints on the chain with no state entry stay at the model's ``qpos0`` (callers that
        need every one to be driven check that first, see :mod:`telecorder.collect.devices.eef_dynamixel`).
        """
        from ...sim.kinematics import Kinematics, chain_joints

        chain = set(chain_joints(kin_model, site))
        ik_names = [n for n in names if n in chain]
        kin = Kinematics(kin_model, site=site, joints=ik_names)
        grip = list(names).index(gripper) if gripper in names else None
        return cls(kin, np.array([list(names).index(n) for n in ik_names], dtype=np.intp), grip, len(names),
                   max_step)

    def command(self, hold: np.ndarray, q: np.ndarray, gripper: float) -> np.ndarray:
        """The action vector: ``q`` at the IK joints, the gripper, ``hold`` everywhere else."""
        action = np.array(hold, dtype=np.float64)
        action[self.index] = q
        if self.gripper is not None:
            action[self.gripper] = gripper
        return action


def sim_arm_joints(robot: SimRobot) -> ArmJoints:
    """The simulated follower's actuated joints, matched to its own model."""
    env = robot.env
    return ArmJoints.by_name(env.model, env.joint_names)


def rotation_to_euler_xyz(r: np.ndarray) -> np.ndarray:
    """Extrinsic x-y-z (roll, pitch, yaw) of a rotation matrix, R = Rz(yaw) Ry(pitch) Rx(roll)."""
    pitch = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    roll = np.arctan2(r[2, 1], r[2, 2])
    yaw = np.arctan2(r[1, 0], r[0, 0])
    return np.array([roll, pitch, yaw])


class EEFTeleop(Teleop):
    def __init__(self, arm: ArmJoints, source: TargetSource, *, device_type: str, fps: float,
                 on_connect: Callable[[], None] | None = None, on_disconnect: Callable[[], None] | None = None,
                 on_episode_start: Callable[[], None] | None = None, rot_weight: float = 0.1,
                 on_rebase: Callable[[], None] | None = None) -> None:
        self.rot_weight = rot_weight
        self.arm, self.source, self.device_type, self.dt = arm, source, device_type, 1.0 / fps
        self.kin = arm.kin
        self._on_connect, self._on_disconnect, self._on_start = on_connect, on_disconnect, on_episode_start
        self._on_rebase = on_rebase
        self._hold: np.ndarray | None = None
        self.ik_times: list[float] = []
        self.ik_failures = 0
        self.step_limited = 0

    def connect(self) -> None:
        if self._on_connect is not None:
            self._on_connect()

    def start_episode(self) -> None:
        self._hold = None
        if self._on_start is not None:
            self._on_start()

    def rebase(self) -> None:
        """The arm was moved by someone else (a policy): steer on from where it stands now."""
        self._hold = None
        if self._on_rebase is not None:
            self._on_rebase()

    def features(self) -> list[FeatureSpec]:
        return [FeatureSpec("action_eef", "float32", (7,), names=EEF_NAMES,
                            unit="commanded end-effector pose in the robot base frame: metres; extrinsic xyz euler "
                            "(roll, pitch, yaw) in radians; gripper 0 = closed, 1 = open")]

    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        state = self._state(observation)
        q, target = self._steer(self.arm, self.source, state)
        action = self.arm.command(self._hold, q, target.gripper)
        return TeleopOutput(action, set(target.events), {"action_eef": eef_vector(target)})

    def _state(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The measured state; its first reading of the episode is what unsteered entries hold."""
        state = np.asarray(observation["observation.state"], dtype=np.float64)
        if self._hold is None:
            self._hold = state.copy()
        return state

    def _steer(self, arm: ArmJoints, source: TargetSource, state: np.ndarray) -> tuple[np.ndarray, EEFTarget]:
        """One arm's joint command toward its source's target this tick, and that target."""
        measured = state[arm.index]
        pos, rot = arm.kin.fk(measured)
        gripper = float(state[arm.gripper]) if arm.gripper is not None else 0.0
        target = source(pos, rot, gripper, self.dt)
        t0 = time.perf_counter()
        # Position first: an arm with fewer than 6 joints cannot hold every orientation while it
        # moves, and an operator notices a gripper off its path sooner than a tilted one.
        result = arm.kin.ik(target.position, target.rotation, q0=measured, max_iters=30,
                            rot_weight=self.rot_weight)
        self.ik_times.append(time.perf_counter() - t0)
        if not result.success:
            self.ik_failures += 1
        q = result.q  # within the model's joint limits
        if arm.max_step is not None:
            # A real arm takes a far-off IK solution (a clutch jump, another branch) as a lunge:
            # lead the measured joints by at most max_step. The step heads from the measured
            # position toward a solution inside the model's limits, so it never leaves them (and
            # an arm standing outside them is brought back gradually, not snapped).
            step = np.clip(q - measured, -arm.max_step, arm.max_step)
            if np.any(step != q - measured):
                self.step_limited += 1
            q = measured + step
        return q, target

    def counters(self) -> dict[str, int]:
        counts = {"ik_not_converged": self.ik_failures}
        if self.arm.max_step is not None:
            counts["step_limited"] = self.step_limited
        return counts

    def disconnect(self) -> None:
        if self._on_disconnect is not None:
            self._on_disconnect()


def eef_vector(target: EEFTarget) -> np.ndarray:
    """A target as recorded in ``action_eef``: x y z, extrinsic xyz euler, gripper."""
    eef = np.concatenate([target.position, rotation_to_euler_xyz(target.rotation), [target.gripper]])
    return eef.astype(np.float32)


def vr_source(stream: object, mapping: object) -> tuple[TargetSource, Callable[[], None]]:
    """Targets from a controller: a replayed pose stream (or a live client) through a VRMapping.

    Returns the source and the per-episode restart (the stream replays from its start and
    the clutch anchors are cleared).
    """

    def source(pos: np.ndarray, rot: np.ndarray, gripper: float, dt: float) -> EEFTarget:
        out = mapping.update(stream.current(), pos, rot)
        return EEFTarget(out.position, out.rotation, out.gripper, set(out.events))

    def restart() -> None:
        mapping.reset()
        stream.start()

    return source, restart


def velocity_source(device: object) -> tuple[TargetSource, Callable[[], None]]:
    """Targets integrated from a device's EEF velocity commands (gamepad, keyboard)."""
    held: dict[str, object] = {}

    def source(pos: np.ndarray, rot: np.ndarray, gripper: float, dt: float) -> EEFTarget:
        cmd = device.read()
        if not held:
            held.update(pos=pos.copy(), rot=rot.copy(), grip=gripper)
        held["pos"] = held["pos"] + np.asarray(cmd.linear) * dt
        held["rot"] = _small_rotation(np.asarray(cmd.angular) * dt) @ held["rot"]
        held["grip"] = float(np.clip(held["grip"] + cmd.gripper_delta * dt, 0.0, 1.0))
        return EEFTarget(held["pos"], held["rot"], held["grip"], set(cmd.events))

    def restart() -> None:
        held.clear()  # the next tick starts from where the arm stands

    return source, restart


def _small_rotation(rpy: np.ndarray) -> np.ndarray:
    """Rotation by roll/pitch/yaw increments about the base axes (extrinsic x-y-z)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx
