"""Two leader arms (ALOHA style): each drives its half of a two-arm follower, left then right.

Each arm is a :class:`~.leader_arm.LeaderArmTeleop` on its own bus with its own calibration,
start check and ramp, applied to its half of ``observation.state`` (the follower's state is
both arms' joints, left first, as the action is). A leader away from its follower stops the
session naming the arm and the joint (``left_elbow_flex``); communication counters are kept per
arm (``left.timeouts``, ``right.timeouts``, ...), so a flaky cable shows which bus it is on.

Also where ``collect`` builds two arms (:func:`bimanual_devices`): ports and calibrations given
per arm (``--leader-port left=/dev/ttyUSB0,right=/dev/ttyUSB1``), two leaders driving the sim's
``bimanual`` scene or a :class:`~..robots.pair.RobotPair` of Dynamixel followers, kinesthetic
teaching on two limp arms, and ``--emulate``'s two-handed operator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DeviceError, TelecorderError
from ..dynamixel.bus import DynamixelBus
from ..dynamixel.calibration import ArmCalibration
from ..dynamixel.emulated_arm import bimanual_demonstration, lead_in
from ..dynamixel.hand import HandMotion
from ..interfaces import Robot, Teleop, TeleopOutput, connect_all
from ..robots.dynamixel import DynamixelRobot, EmulatedFollower
from ..robots.pair import RobotPair
from .leader_arm import KinestheticTeleop, LeaderArmTeleop


class BimanualLeaderTeleop(Teleop):
    device_type = "leader_arm"
    follows_between_episodes = True

    def __init__(self, arms: Sequence[LeaderArmTeleop], *,
                 on_episode_start: Callable[[], None] | None = None) -> None:
        if len(arms) < 2 or any(a.arm is None for a in arms) or len({a.arm for a in arms}) != len(arms):
            raise ValueError("a two-arm teleop needs two or more leader arms, each with its own name")
        self.arms = list(arms)
        self.widths = [len(a.calibration.ids) for a in self.arms]
        self._on_episode_start = on_episode_start

    @property
    def width(self) -> int:
        """The follower state (and action) width these leaders drive: every arm's joints together."""
        return sum(self.widths)

    def connect(self) -> None:
        connect_all(self.arms)

    def start_episode(self) -> None:
        # The operator's plan first (the emulated hands restart with it), then each arm's start check.
        if self._on_episode_start is not None:
            self._on_episode_start()
        for arm in self.arms:
            arm.start_episode()

    def rebase(self) -> None:
        for arm in self.arms:
            arm.rebase()

    def leader_pose(self, *, complete: bool = False) -> np.ndarray:
        """Every leader's calibrated joints, left arm first (where moving a leader takes over from a policy)."""
        return np.concatenate([arm.leader_pose(complete=complete) for arm in self.arms])

    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        state = np.asarray(observation["observation.state"], dtype=np.float64)
        if state.shape != (self.width,):
            raise DeviceError(f"{len(self.arms)} leader arms drive {self.width} joints "
                              f"({' + '.join(map(str, self.widths))}), but the follower reports {state.shape[0]}")
        commands, start = [], 0
        for arm, width in zip(self.arms, self.widths, strict=True):
            part = {"observation.state": state[start:start + width]}
            commands.append(arm.read(part).action)
            start += width
        return TeleopOutput(np.concatenate(commands))

    def counters(self) -> dict[str, int]:
        return {f"{arm.arm}.{k}": v for arm in self.arms for k, v in arm.counters().items()}

    def disconnect(self) -> None:
        errors: list[BaseException] = []
        for arm in self.arms:
            try:
                arm.disconnect()
            except Exception as e:  # every arm lets go, whatever the other did
                errors.append(e)
        if errors:
            raise errors[0]


# --------------------------------------------------------------------------- building the devices

ARMS = ("left", "right")
_PORT_FLAGS = (("--leader-port", "leader_port"), ("--follower-port", "follower_port"),
               ("--leader-calibration", "leader_calibration"), ("--follower-calibration", "follower_calibration"))
_SPEC_HEAD = re.compile(r"^\s*[A-Za-z_]\w*\s*=")


@dataclass
class _Arm:
    """One arm's bus: its side, port, calibration and (for --emulate) the emulator behind the port."""

    side: str
    port: str
    calibration: ArmCalibration
    emulator: Any = None


def arm_spec(flag: str, value: object) -> dict[str, str] | None:
    """``left=A,right=B`` as ``{'left': 'A', 'right': 'B'}`` (an arm may be left out); None for one plain value.

    A bad spec (an unknown arm, an arm twice, no value) is one error naming the flag.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not _SPEC_HEAD.match(text):
        if "," in text:
            raise TelecorderError(f"{flag} {text!r}: two values need their arms, e.g. {flag} "
                                  f"left={text.split(',')[0].strip()},right={text.split(',')[1].strip()}")
        return None
    spec: dict[str, str] = {}
    for item in text.split(","):
        key, sep, val = (part.strip() for part in item.partition("="))
        problem = (f"{key!r} is not an arm (left or right)" if sep and key not in ARMS
                   else f"{item.strip()!r} is not ARM=VALUE" if not sep
                   else f"the {key} arm is named twice" if key in spec
                   else f"the {key} arm has no value" if not val else None)
        if problem:
            raise TelecorderError(f"{flag} {text!r}: {problem}; give one value, or one per arm: "
                                  f"{flag} left=...,right=...")
        spec[key] = val
    return spec


def two_arms(cfg: Any) -> str | None:
    """Why ``cfg`` asks for two arms (left and right), or None for one arm."""
    if cfg.bimanual:
        return "--bimanual"
    if cfg.robot == "sim" and cfg.scene == "bimanual":
        return "--scene bimanual"
    for flag, attr in _PORT_FLAGS:
        if arm_spec(flag, getattr(cfg, attr)) is not None:
            return f"{flag} names the arms"
    return None


def _per_arm(flag: str, value: object, why: str) -> dict[str, str | None]:
    spec = arm_spec(flag, value)
    if spec is None and value is not None and str(value).strip():
        raise TelecorderError(f"{flag} {value} names one arm, and there are two ({why}): give one per arm, "
                              f"{flag} left=...,right=...")
    return {side: (spec or {}).get(side) for side in ARMS}


def bimanual_devices(cfg: Any, cleanups: list[Callable[[], None]], arm_port: Callable[..., tuple],
                     sim_robot: Callable[[Any], Robot], why: str) -> tuple[Robot, Teleop]:
    """Two arms for ``--device leader_arm`` (two leaders, a two-arm follower) or ``kinesthetic`` (two limp arms).

    ``arm_port(cfg, role, port, calibration, cleanups, name=, motion=)`` gives an arm's port and
    calibration, starting an emulated arm moved by ``motion`` where the port is missing (--emulate).
    """
    if cfg.device == "leader_arm":
        return _leaders(cfg, cleanups, arm_port, sim_robot, why)
    return _kinesthetic(cfg, cleanups, arm_port, why)


def _open_arms(cfg: Any, role: str, cleanups: list[Callable[[], None]], arm_port: Callable[..., tuple], why: str,
               motions: Callable[[], dict[str, HandMotion]]) -> list[_Arm]:
    ports = _per_arm(f"--{role}-port", getattr(cfg, f"{role}_port"), why)
    cals = _per_arm(f"--{role}-calibration", getattr(cfg, f"{role}_calibration"), why)
    missing = [side for side in ARMS if not ports[side]]
    if missing and not cfg.emulate:
        raise TelecorderError(
            f"--device {cfg.device} with two arms ({why}) needs --{role}-port left=PORT,right=PORT, the serial "
            f"adapters of the {role} arms (no {' or '.join(missing)} port given; list them with "
            "'ls /dev/serial/by-id/'), or --emulate to use built-in emulated arms for the ports not given"
        )
    arms = []
    for side in ARMS:
        cal = None if cals[side] is None else Path(cals[side])
        port, calibration, emu = arm_port(cfg, role, ports[side], cal, cleanups, name=f"{side}_{role}",
                                          motion=None if ports[side] else motions()[side])
        arms.append(_Arm(side, port, calibration, emu))
    return arms


def _operator(cfg: Any) -> Callable[[], dict[str, HandMotion]]:
    """The emulated operator's hand motions per arm (made once, when an emulated arm first needs them)."""
    made: dict[str, HandMotion] = {}

    def motions() -> dict[str, HandMotion]:
        if not made:
            if cfg.emulator.hand_file is not None:
                made.update(dict.fromkeys(ARMS, HandMotion.from_file(cfg.emulator.hand_file)))
            else:
                made.update(zip(ARMS, bimanual_demonstration(cfg.fps), strict=True))
        return made

    return motions


def _leaders(cfg: Any, cleanups: list[Callable[[], None]], arm_port: Callable[..., tuple],
             sim_robot: Callable[[Any], Robot], why: str) -> tuple[Robot, Teleop]:
    motions = _operator(cfg)
    leaders = _open_arms(cfg, "leader", cleanups, arm_port, why, motions)
    teleops = [LeaderArmTeleop(DynamixelBus(a.port, a.calibration.ids, baudrate=cfg.baudrate), a.calibration,
                               fps=cfg.fps, arm=a.side, on_disconnect=a.emulator.stop if a.emulator else None)
               for a in leaders]
    if cfg.robot == "sim":
        follower = sim_robot(cfg)
        followers: list[_Arm] = []
    else:
        followers = _open_arms(cfg, "follower", cleanups, arm_port, why, lambda: _rest(motions()))
        follower = _pair(cfg, followers, torque=True)
    width = sum(len(a.calibration.ids) for a in leaders)
    action = next(f for f in follower.features() if f.name == "action")
    if action.shape != (width,):
        raise TelecorderError(
            f"two leader arms drive {width} joints, and the follower takes {action.shape[0]}: with two arms "
            "use --robot sim --scene bimanual, or --robot dynamixel with --follower-port left=PORT,right=PORT "
            "(or --emulate)"
        )
    emulated = {a.side: a.emulator for a in leaders if a.emulator is not None}
    follower_emus = {a.side: a.emulator for a in followers if a.emulator is not None}
    env = getattr(follower, "env", None)

    def on_start() -> None:
        if not emulated:
            return
        if env is not None and env.has_task and cfg.emulator.hand_file is None:
            # The emulated operator looks at the scene: this episode's handover, for the cube the follower shows.
            plan = dict(zip(ARMS, bimanual_demonstration(cfg.fps, cube_pose=env.cube_pose()), strict=True))
        else:
            plan = motions()
        for side, emu in emulated.items():
            motion = plan[side]
            if side in follower_emus:
                # A follower that is not reset between episodes: take the leader to it first.
                motion = lead_in(motion, _raw_pose(follower_emus[side]))
            emu.hand.restart(motion)

    return follower, BimanualLeaderTeleop(teleops, on_episode_start=on_start)


def _kinesthetic(cfg: Any, cleanups: list[Callable[[], None]], arm_port: Callable[..., tuple],
                 why: str) -> tuple[Robot, Teleop]:
    arms = _open_arms(cfg, "follower", cleanups, arm_port, why, _operator(cfg))
    robot = _pair(cfg, arms, torque=False)
    hands = [a.emulator.hand for a in arms if a.emulator is not None]

    def on_start() -> None:
        for hand in hands:
            hand.restart()

    return robot, KinestheticTeleop(on_episode_start=on_start)


def _pair(cfg: Any, arms: list[_Arm], *, torque: bool) -> RobotPair:
    robots: list[Robot] = []
    for a in arms:
        bus = DynamixelBus(a.port, a.calibration.ids, baudrate=cfg.baudrate)
        # An emulated arm's emulator stops once that arm lets go (see EmulatedFollower).
        robots.append(EmulatedFollower(bus, a.calibration, a.emulator, torque=torque) if a.emulator is not None
                      else DynamixelRobot(bus, a.calibration, torque=torque))
    kind = "emulated" if all(a.emulator is not None for a in arms) else "dynamixel"
    return RobotPair(robots, names=[a.side for a in arms], robot_type=f"{kind}_bimanual")


def _rest(motions: dict[str, HandMotion]) -> dict[str, HandMotion]:
    """Limp emulated followers resting where the operator's motions start (torque on holds them there)."""
    return {side: HandMotion([0.0], {sid: [m.position(sid, 0.0)] for sid in m.ids}, source=f"{side} follower at rest")
            for side, m in motions.items()}


def _raw_pose(emulator: Any) -> dict[int, float]:
    with emulator.lock:
        return {sid: float(servo.position_rad) for sid, servo in emulator.servos.items()}
