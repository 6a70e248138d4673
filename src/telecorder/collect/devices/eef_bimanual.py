"""End-effector teleoperation of two arms (``--scene bimanual``): a VR hand per arm, or one device switched.

* VR: each controller drives its own arm through its own clutch mapping (the left hand the
  ``left_`` arm), from a pose stream holding both hands or from both hands of a live headset.
* Gamepad / keyboard: the device drives one arm at a time, the left when an episode starts;
  the arm key (keyboard Tab, pad right-stick click, see :mod:`..key_bindings`) hands it to the
  other. The arm handed over to steers on from where it was held; the one let go keeps its last
  target (pose and gripper), so it holds still. Each step records which arm the device drove
  (``eef_arm``: 0 the first arm, i.e. left), the episode counts the hand-overs
  (``arm_switches``), and the live window's title names the arm being driven.

Each arm is solved by IK on its own chain (``<side>_ee_site``), and ``action_eef`` holds both
commanded poses, left then right (``left_x`` ... ``right_gripper``), as the action holds both
arms' joints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...datasets.features import FeatureSpec
from ...errors import TelecorderError
from ..interfaces import Event, TeleopOutput
from ..live_view import active_view
from .eef import (
    EEF_NAMES,
    ArmJoints,
    EEFTeleop,
    TargetSource,
    eef_vector,
    velocity_source,
    vr_source,
)
from .gamepad import EEFVelocityCommand

log = logging.getLogger(__name__)

EE_SITE_SUFFIX = "_ee_site"
_TITLE_MARK = "  |  "


def arm_sides(env: Any) -> list[str]:
    """The arms of a model of several (``["left", "right"]`` from ``left_ee_site``...); [] for one arm."""
    sites = list(env.ee_sites)
    if len(sites) < 2:
        return []
    return [site.removesuffix(EE_SITE_SUFFIX) for site in sites]


def sim_arms(robot: Any) -> dict[str, ArmJoints]:
    """Each simulated arm's joints (and ``<side>_gripper``), matched to its own chain of the model."""
    env = robot.env
    return {side: ArmJoints.by_name(env.model, env.joint_names, site=side + EE_SITE_SUFFIX,
                                    gripper=f"{side}_gripper")
            for side in arm_sides(env)}


class BimanualEEFTeleop(EEFTeleop):
    """Several arms, each steered by IK toward its own source's target, into one action vector.

    ``on_tick`` runs once at the start of every read, before any arm's source: where one input
    feeds every arm (a live headset, a switched pad) it is read there, once per tick.
    """

    def __init__(self, arms: dict[str, tuple[ArmJoints, TargetSource]], *, device_type: str, fps: float,
                 on_connect: Callable[[], None] | None = None, on_disconnect: Callable[[], None] | None = None,
                 on_episode_start: Callable[[], None] | None = None, on_rebase: Callable[[], None] | None = None,
                 on_tick: Callable[[], None] | None = None, switch: ArmSwitch | None = None) -> None:
        if len(arms) < 2:
            raise ValueError("a two-arm end-effector teleop needs two or more arms")
        first, source = next(iter(arms.values()))
        super().__init__(first, source, device_type=device_type, fps=fps, on_connect=on_connect,
                         on_disconnect=on_disconnect, on_episode_start=on_episode_start, on_rebase=on_rebase)
        self.arms = dict(arms)
        self._on_tick = on_tick
        self.switch = switch

    def features(self) -> list[FeatureSpec]:
        names = tuple(f"{side}_{n}" for side in self.arms for n in EEF_NAMES)
        features = [FeatureSpec("action_eef", "float32", (len(names),), names=names,
                                unit="each arm's commanded end-effector pose in the robot base frame, "
                                f"{', '.join(self.arms)} in turn: metres; extrinsic xyz euler (roll, pitch, "
                                "yaw) in radians; gripper 0 = closed, 1 = open")]
        if self.switch is not None:
            order = ", ".join(f"{i} = {side}" for i, side in enumerate(self.arms))
            features.append(FeatureSpec("eef_arm", "uint8", (1,), names=("eef_arm",),
                                        unit=f"the arm the {self.device_type} drove this step: {order}"))
        return features

    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        if self._on_tick is not None:
            self._on_tick()
        state = self._state(observation)
        assert self._hold is not None
        action = self._hold.copy()
        events: set[Event] = set()
        eefs = []
        for arm, source in self.arms.values():
            q, target = self._steer(arm, source, state)
            action = arm.command(action, q, target.gripper)
            events |= target.events
            eefs.append(eef_vector(target))
        extra = {"action_eef": np.concatenate(eefs)}
        if self.switch is not None:
            extra["eef_arm"] = np.array([self.switch.active], np.uint8)
        return TeleopOutput(action, events, extra)

    def counters(self) -> dict[str, int]:
        counts = {"ik_not_converged": self.ik_failures}
        if any(arm.max_step is not None for arm, _ in self.arms.values()):
            counts["step_limited"] = self.step_limited
        return counts

    def episode_summary(self) -> dict[str, Any]:
        return {"arm_switches": self.switch.switches} if self.switch is not None else {}


class ArmSwitch:
    """One velocity device (gamepad, keyboard) driving one of several arms at a time.

    :meth:`poll` reads the device once per tick; the active arm's source gets the command (and
    its events), every other arm a zero command, so it holds its target. :attr:`sources` are
    the per-arm target sources, :meth:`restart` starts an episode (left arm, targets from where
    the arms stand) and :meth:`rebase` steers on from where the arms stand, keeping the arm.
    """

    def __init__(self, device: Any, sides: Sequence[str]) -> None:
        self.device, self.sides = device, list(sides)
        self.active = 0
        self.switches = 0
        self._cmd = EEFVelocityCommand()
        self.sources: dict[str, TargetSource] = {}
        self._restarts: list[Callable[[], None]] = []
        for i, side in enumerate(self.sides):
            source, restart = velocity_source(_ArmView(self, i))
            self.sources[side] = source
            self._restarts.append(restart)

    @property
    def side(self) -> str:
        return self.sides[self.active]

    def poll(self) -> None:
        cmd = self.device.read()
        if cmd.switch_arm:
            self.active = (self.active + 1) % len(self.sides)
            self.switches += 1
            log.info("%s now drives the %s arm", getattr(self.device, "device_type", "the device"), self.side)
            self.show()
        self._cmd = cmd

    def command_for(self, index: int) -> EEFVelocityCommand:
        return self._cmd if index == self.active else EEFVelocityCommand()

    def restart(self) -> None:
        self.active, self.switches = 0, 0
        self._cmd = EEFVelocityCommand()
        self.rebase()
        self.show()

    def rebase(self) -> None:
        for restart in self._restarts:
            restart()

    def show(self) -> None:
        """Name the arm being driven in the live window's title (the session owns the rest of it)."""
        view = active_view()
        if view is not None:
            base = view.title.split(_TITLE_MARK)[0]
            view.set_title(f"{base}{_TITLE_MARK}driving the {self.side} arm")


class _ArmView:
    """What one arm's velocity source reads: the device's command while that arm is active."""

    def __init__(self, switch: ArmSwitch, index: int) -> None:
        self.switch, self.index = switch, index

    def read(self) -> EEFVelocityCommand:
        return self.switch.command_for(self.index)


class LiveHands:
    """Both hands of a live OpenXR client, sampled once per tick (one frame sync for both arms)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._latest: dict[str, Any] = {}

    def poll(self) -> None:
        self._latest = self.client.sample()

    def hand(self, side: str) -> _LiveHand:
        return _LiveHand(self, side)


class _LiveHand:
    """The pose-stream interface over one hand of :class:`LiveHands`."""

    def __init__(self, hands: LiveHands, side: str) -> None:
        self.hands, self.side = hands, side

    def start(self) -> None:
        """A live stream has no start to rewind to."""

    def current(self) -> Any:
        return self.hands._latest.get(self.side)


def bimanual_eef_teleop(cfg: Any, robot: Any, arms: dict[str, ArmJoints]) -> BimanualEEFTeleop:
    """The end-effector teleop of ``cfg.device`` (vr, gamepad, keyboard) for a robot of several arms."""
    if cfg.device == "vr":
        return _vr_teleop(cfg, robot, arms)
    from .gamepad import GamepadInput, KeyboardInput

    device = GamepadInput(switch_arms=True) if cfg.device == "gamepad" else KeyboardInput(switch_arms=True)
    switch = ArmSwitch(device, list(arms))
    return BimanualEEFTeleop({side: (arm, switch.sources[side]) for side, arm in arms.items()},
                             device_type=cfg.device, fps=cfg.fps, on_connect=device.open, on_disconnect=device.close,
                             on_episode_start=switch.restart, on_rebase=switch.rebase, on_tick=switch.poll,
                             switch=switch)


def _vr_teleop(cfg: Any, robot: Any, arms: dict[str, ArmJoints]) -> BimanualEEFTeleop:
    from .vr import HANDS, OpenXRClient, PoseStreamSource, VRMapping

    if set(arms) != set(HANDS):
        raise TelecorderError(f"--device vr gives each arm the controller of its hand (left, right); this model's "
                              f"arms are {', '.join(arms)} (from their *_ee_site sites): name them left_ee_site "
                              "and right_ee_site, or use --device gamepad or keyboard, which drive one arm at a time")
    mappings = {side: VRMapping(scale=cfg.vr_scale, axes=cfg.vr_axes) for side in arms}
    on_tick = on_connect = on_disconnect = None
    if cfg.pose_stream is not None:
        # On simulated time the stream replays by the simulation's clock, as the loop runs.
        clock = None if cfg.realtime else (lambda: robot.env.time)
        streams: dict[str, Any] = {side: PoseStreamSource(cfg.pose_stream, hand=side, clock=clock) for side in arms}
    else:
        # A live headset through OpenXR; without a runtime, connecting fails with the runtime named.
        hands = LiveHands(OpenXRClient())
        streams = {side: hands.hand(side) for side in arms}
        on_tick, on_connect, on_disconnect = hands.poll, hands.client.open, hands.client.close
    wired = {side: vr_source(streams[side], mappings[side]) for side in arms}

    def restart() -> None:
        for _, restart_arm in wired.values():
            restart_arm()

    def rebase() -> None:
        for mapping in mappings.values():
            mapping.reset()

    return BimanualEEFTeleop({side: (arm, wired[side][0]) for side, arm in arms.items()}, device_type="vr",
                             fps=cfg.fps, on_connect=on_connect, on_disconnect=on_disconnect,
                             on_episode_start=restart, on_rebase=rebase, on_tick=on_tick)
