"""The arm behind ``--emulate``: a Dynamixel chain on the bus emulator, moved by a scripted hand.

The emulated arm has the built-in sim arm's joints (IDs 1-5) and gripper (ID 6), with
the sim's joint convention, so its calibration is the identity and a leader arm can
drive the MuJoCo follower directly. The hand motion is a demonstration of the sim's
pick-and-lift task, computed once by the scripted expert for a cube in the middle of
the workspace (or, for the sim follower, for the cube it sees), starting with a rest at
the home pose and ending holding the cube up: like a person, the hand starts each
episode from where the follower stands. Two emulated arms (``--scene bimanual``) are moved
by a two-handed operator: the bimanual expert's transfer, each arm's half on its own bus.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    return _hand_motion(samples, control_hz, "built-in pick-and-lift demonstration")


def bimanual_demonstration(
    control_hz: float = 30.0, seed: int = 7, cube_pose: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[HandMotion, HandMotion]:
    """A two-handed operator's motions for the ``bimanual`` scene's transfer: (left arm, right arm).

    Planned by the scripted bimanual expert on a private copy of the scene (its cube at
    ``cube_pose``, as the follower shows it), the commands split into the two arms' halves
    (left dims 0-5, right 6-11): each becomes the hand motion of one leader arm's bus.
    """
    from ...sim.bimanual_expert import BimanualExpert
    from ...sim.env import SimEnv
    from ...sim.scenes import scene_model

    env = SimEnv(scene_model("bimanual"), control_dt=1.0 / control_hz, seed=seed)
    env.reset(seed)
    if cube_pose is not None:
        env.place_cube(*cube_pose)
    expert = BimanualExpert(env, seed=seed)
    home = env.joint_positions()
    samples = [home, home]
    while not (expert.done or expert.failed) and len(samples) < 20 * control_hz:
        action = expert.act()
        env.apply_action(action)
        samples.append(np.asarray(action, dtype=np.float64))
    env.close()
    width = len(IDS)
    if len(home) != 2 * width:
        raise ValueError(f"the bimanual scene has {len(home)} action dimensions, two emulated arms {2 * width}")
    return (_hand_motion([s[:width] for s in samples], control_hz, "built-in two-handed transfer (left arm)"),
            _hand_motion([s[width:] for s in samples], control_hz, "built-in two-handed transfer (right arm)"))


def lead_in(motion: HandMotion, start: Mapping[int, float], seconds: float = 2.0) -> HandMotion:
    """``motion`` after a move from ``start`` (raw rad per servo) to its first sample.

    The operator first puts the leader where the follower stands (the start check wants it
    there) and brings it back to where the demonstration begins: a follower that is not reset
    between episodes still stands where the last one ended.
    """
    times = [0.0, *(seconds + float(t) for t in motion.times)]
    joints = {sid: [float(start[sid]), *values] for sid, values in motion.joints.items()}
    return HandMotion(times, joints, smooth=motion.smooth, source="hand motion with its lead-in")


def _hand_motion(samples: list[np.ndarray], control_hz: float, source: str) -> HandMotion:
    """One arm's commands (``[home, home, action...]``) as a hand trajectory: a rest, the motion, a hold."""
    # The operator then holds the last pose until the episode ends (the motion loops only after HOLD_S).
    samples = [*samples, samples[-1]]
    dt = 1.0 / control_hz
    times = [0.0] + [REST_S + k * dt for k in range(len(samples) - 2)] + [REST_S + (len(samples) - 3) * dt + HOLD_S]
    cal = emulated_calibration("leader")
    joints = {}
    for k, sid in enumerate(IDS):
        values = [s[k] for s in samples]
        if k == len(IDS) - 1:
            values = [cal.gripper.to_raw(v) for v in values]
        joints[sid] = values
    return HandMotion(times, joints, smooth=False, source=source)


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
