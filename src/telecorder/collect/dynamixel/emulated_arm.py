"""The arm behind ``--emulate``: a Dynamixel chain on the bus emulator, moved by a scripted hand.

The emulated arm has the built-in sim arm's joints (IDs 1-5) and gripper (ID 6), with
the sim's joint convention, so its calibration is the identity and a leader arm can
drive the MuJoCo follower directly. The hand motion is a demonstration of the sim's
pick-and-lift task, computed once by the scripted expert for a cube in the middle of
the workspace (or, for the sim follower, for the cube it sees), starting with a rest at
the home pose and ending holding the cube up: like a person, the hand starts each
episode from where the follower stands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .calibration import (
    ArmCalibration,
    GripperCalibration,
    JointCalibration,
)
from .hand import HandMotion

if TYPE_CHECKING:
    from .emulator import BusEmulator

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
IDS = (1, 2, 3, 4, 5, 6)
MODEL = "xl330-m288"
# Raw angles of the gripper servo when closed / open (what its calibration maps to 0 / 1).
GRIPPER_CLOSED_RAW, GRIPPER_OPEN_RAW = 0.05, 0.85
REST_S = 1.0
HOLD_S = 60.0


def emulated_calibration(arm: str) -> ArmCalibration:
    joints = [JointCalibration(id=i, name=n) for i, n in zip(IDS[:-1], ARM_JOINTS, strict=True)]
    grip = GripperCalibration(id=IDS[-1], open=GRIPPER_OPEN_RAW, closed=GRIPPER_CLOSED_RAW)
    return ArmCalibration(arm=arm, joints=joints, gripper=grip, known_pose=[0.0] * len(ARM_JOINTS), model=MODEL)


def demonstration_motion(
    control_hz: float = 30.0, seed: int = 7, cube_pose: tuple[np.ndarray, np.ndarray] | None = None
) -> HandMotion:
    """Joint commands of a pick-and-lift by the scripted expert, as a looping hand trajectory.

    ``cube_pose`` (position, wxyz quaternion) plans the motion for a cube the follower
    sees, as a person looking at the scene would; otherwise the cube of ``seed``.
    """
    from ...sim.env import SimEnv
    from ...sim.expert import ScriptedExpert

    env = SimEnv(control_dt=1.0 / control_hz, seed=seed)
    env.reset(seed)
    if cube_pose is not None:
        env.place_cube(*cube_pose)
    expert = ScriptedExpert(env, seed=seed)
    expert.reset()
    # A leader arm is where the operator's hand puts it, i.e. the command, not where the
    # follower ends up: a closed leader gripper commands a squeeze the cube resists.
    home = env.joint_positions()
    samples = [home, home]
    while not expert.done and len(samples) < 20 * control_hz:
        action = expert.act()
        env.apply_action(action)
        samples.append(np.asarray(action, dtype=np.float64))
    env.close()
    # The operator then holds the cube up until the episode ends (the motion loops only after HOLD_S).
    samples.append(samples[-1])
    dt = 1.0 / control_hz
    times = [0.0] + [REST_S + k * dt for k in range(len(samples) - 2)] + [REST_S + (len(samples) - 3) * dt + HOLD_S]
    cal = emulated_calibration("leader")
    joints = {}
    for k, sid in enumerate(IDS):
        values = [s[k] for s in samples]
        if k == len(IDS) - 1:
            values = [cal.gripper.to_raw(v) for v in values]
        joints[sid] = values
    return HandMotion(times, joints, smooth=False, source="built-in pick-and-lift demonstration")


class EpisodeHand:
    """A hand motion whose clock restarts with each episode, as a person starts each demo anew.

    The emulator asks for positions at its own elapsed time; ``restart`` makes the
    motion begin again from its first (rest) sample at the current emulator time.
    """

    def __init__(self, motion: HandMotion, clock: Callable[[], float] | None = None) -> None:
        self.motion = motion
        self.clock = clock
        self._origin = 0.0

    @property
    def joints(self) -> dict[int, object]:
        return self.motion.joints

    def restart(self, motion: HandMotion | None = None) -> None:
        """Begin the motion (or a new one) again from its first sample, now."""
        if motion is not None:
            self.motion = motion
        if self.clock is not None:
            self._origin = self.clock()

    def position(self, servo_id: int, t: float) -> float:
        return self.motion.position(servo_id, max(0.0, t - self._origin))

    def velocity(self, servo_id: int, t: float) -> float:
        return self.motion.velocity(servo_id, max(0.0, t - self._origin))

def bus_emulator(cfg: Any, ids: Sequence[int], model: str, hand: object) -> BusEmulator:
    """A bus emulator (not started) with the ``--emulate-*`` options of ``cfg``: the one place they are read."""
    from .emulator import BusEmulator, FaultConfig

    opts = cfg.emulator
    faults = FaultConfig(drop_rate=opts.drop_rate, crc_error_rate=opts.crc_error_rate, latency_s=opts.latency_s,
                         dead_after_s=dict(opts.dead_after_s))
    return BusEmulator(ids, model, cfg.baudrate, hand=hand, faults=faults, seed=cfg.seed,
                       usb_latency_ms=opts.usb_latency_ms)
