"""Build the devices a ``collect`` command names: robot, teleop front-end, cameras.

Also where a task list meets the devices: the scripted expert (``--device scripted`` or
``--intervene expert``) can only do the tasks of the scene's suite, so any other instruction
is refused here, before a device opens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TelecorderError
from .cameras.opencv import CameraSpec, OpenCVCamera
from .interfaces import Camera, Robot, Teleop
from .task_list import TaskList, suite_for_scene

ROBOTS = ("sim", "dynamixel")
DEVICES = ("scripted", "leader_arm", "kinesthetic", "vr", "gamepad", "keyboard", "policy")


@dataclass
class EmulatorOptions:
    """Fault injection for ``--emulate`` buses (tests and rehearsals of bad days)."""

    drop_rate: float = 0.0
    crc_error_rate: float = 0.0
    latency_s: float = 0.0
    dead_after_s: dict[int, float] = field(default_factory=dict)
    hand_file: Path | None = None
    usb_latency_ms: float = 1.0  # the emulated adapter's FTDI latency timer (16 as from the factory)


@dataclass
class DeviceConfig:
    robot: str = "sim"
    device: str = "scripted"
    robot_model: Path | None = None
    script: str = "expert"
    fps: float = 30.0
    seed: int | None = None
    sim_cameras: list[str] | None = None  # None: every camera of the model
    camera_size: tuple[int, int] = (640, 480)
    camera_fps: float = 30.0
    cameras: list[CameraSpec] = field(default_factory=list)
    leader_port: str | None = None
    follower_port: str | None = None
    leader_calibration: Path | None = None
    follower_calibration: Path | None = None
    baudrate: int = 1_000_000
    emulate: bool = False
    emulator: EmulatorOptions = field(default_factory=EmulatorOptions)
    pose_stream: Path | None = None
    vr_hand: str = "right"
    vr_scale: float = 1.0
    vr_axes: str = "openxr_to_robot"
    # Pace the loop by simulated time instead of the wall clock (--no-realtime; sim only).
    realtime: bool = True
    # --device policy: the checkpoint folder or module:factory, who may take over, how chunks run.
    policy: object = None  # a checkpoint folder or module:factory string, or a loaded Policy
    intervene: str | None = None
    task: str = ""
    execute_steps: int | None = None
    ensemble: float | None = None
    # Record the sim's privileged object state as observation.environment_state (--env-state).
    env_state: bool = False
    # The built-in sim scene (--scene: pick, cubes; None: pick) and what each reset varies (--randomize).
    scene: str | None = None
    randomize: frozenset[str] = frozenset()
    # The session's instructions (--tasks); checked against what the scripted expert can do.
    tasks: TaskList | None = None
    # Two Dynamixel arms, left and right (--bimanual); also meant by --scene bimanual for leader arms and
    # by a port or calibration given per arm (left=...,right=...).
    bimanual: bool = False


def make_devices(cfg: DeviceConfig) -> tuple[Robot, Teleop, list[Camera]]:
    if cfg.robot not in ROBOTS:
        raise ValueError(f"unknown robot {cfg.robot!r}; available: {', '.join(ROBOTS)}")
    if cfg.device not in DEVICES:
        raise ValueError(f"unknown teleop device {cfg.device!r}; available: {', '.join(DEVICES)}")
    _check_sim_only_options(cfg)
    _check_two_arm_options(cfg)
    check_expert_tasks(cfg)
    cleanups: list[Callable[[], None]] = []
    try:
        robot, teleop = _robot_and_teleop(cfg, cleanups)
    except BaseException:
        for fn in reversed(cleanups):
            with contextlib.suppress(Exception):
                fn()
        raise
    cameras: list[Camera] = []
    from .cameras.sim import SimCameraRig
    from .robots.sim import SimRobot

    if isinstance(robot, SimRobot):
        names = robot.env.camera_names if cfg.sim_cameras is None else cfg.sim_cameras
        if names:
            w, h = cfg.camera_size
            cameras += SimCameraRig(robot, list(names), w, h, cfg.camera_fps).cameras()
    cameras += [OpenCVCamera.from_spec(spec) for spec in cfg.cameras]
    seen: set[str] = set()
    for cam in cameras:
        if cam.name in seen:
            raise ValueError(f"two cameras are named {cam.name!r}; give each --camera a distinct name")
        seen.add(cam.name)
    check = getattr(teleop, "check_inputs", None)
    if check is not None:
        check([f.name for f in robot.features()], [c.name for c in cameras])
    return robot, teleop, cameras


def uses_expert(cfg: DeviceConfig) -> str | None:
    """How the scripted expert takes part (it then needs suite tasks), or None."""
    if cfg.device == "scripted" and cfg.script == "expert":
        return "the scripted expert (--device scripted)"
    if cfg.device == "policy" and cfg.intervene == "expert":
        return "the expert corrector (--intervene expert)"
    return None


def check_expert_tasks(cfg: DeviceConfig) -> None:
    """Refuse instructions the scripted expert cannot do, up front, listing the tasks it can."""
    who = uses_expert(cfg)
    if who is None or cfg.robot != "sim" or cfg.robot_model is not None:
        return
    suite = suite_for_scene(cfg.scene) if cfg.scene not in (None, "pick") else None
    if suite is None:
        if cfg.tasks is not None and cfg.tasks.multiple:
            cfg.tasks.check_expert(who, None)
        return
    tasks = cfg.tasks if cfg.tasks is not None else TaskList.single(cfg.task, suite)
    tasks.check_expert(who, suite)


def _check_sim_only_options(cfg: DeviceConfig) -> None:
    """Refuse --no-realtime and --env-state where something outside the simulation takes part."""
    if cfg.robot != "sim" and (cfg.scene not in (None, "pick") or cfg.randomize):
        raise TelecorderError(f"--{'scene' if cfg.scene not in (None, 'pick') else 'randomize'} sets up the "
                              "simulated scene: it needs --robot sim (a real scene is whatever is on the table)")
    if cfg.robot_model is not None and cfg.scene not in (None, "pick"):
        raise TelecorderError(f"--scene {cfg.scene} is a built-in scene with the built-in arm; --robot-model "
                              "replaces both, so give one or the other")
    if cfg.env_state and (cfg.robot != "sim" or cfg.device == "kinesthetic"):
        raise TelecorderError("--env-state records the simulated cube's pose: it needs the simulated arm "
                              "(--robot sim, not with --device kinesthetic)")
    steering = cfg.intervene if cfg.device == "policy" else cfg.device
    if cfg.robot == "dynamixel" and cfg.robot_model is not None and steering not in ("vr", "gamepad", "keyboard"):
        # Only IK reads a Dynamixel arm's MJCF: anywhere else it would be ignored without a word.
        raise TelecorderError(f"--robot-model with --robot dynamixel is the arm's model for end-effector devices "
                              f"(--device or --intervene vr, gamepad or keyboard); --device {cfg.device}"
                              f"{f' --intervene {cfg.intervene}' if cfg.intervene else ''} does not use it, so "
                              "leave it out")
    if cfg.realtime:
        return
    # Simulated time runs faster than the wall clock: only parts that live entirely in the simulation
    # (or replay a recording) can follow it; a real arm, a real camera or a person cannot.
    offenders = []
    if cfg.robot != "sim":
        offenders.append(f"--robot {cfg.robot}")
    if cfg.cameras:
        offenders.append("--camera " + ", ".join(spec.name for spec in cfg.cameras))
    if cfg.device == "vr" and cfg.pose_stream is None:
        offenders.append("--device vr with a live headset (use --pose-stream)")
    elif cfg.device not in ("scripted", "policy", "vr"):
        offenders.append(f"--device {cfg.device}")
    if cfg.device == "policy" and cfg.intervene not in (None, "expert"):
        offenders.append(f"--intervene {cfg.intervene}")
    if offenders:
        raise TelecorderError(
            f"--no-realtime runs on simulated time, which a real robot, camera or person cannot follow: "
            f"{'; '.join(offenders)}. Use it with --robot sim, sim cameras only, and --device scripted, "
            "policy or vr --pose-stream; or drop --no-realtime"
        )


def _check_two_arm_options(cfg: DeviceConfig) -> None:
    """Refuse two arms' ports (or --bimanual) where no device drives two Dynamixel arms."""
    steering = cfg.intervene if cfg.device == "policy" else cfg.device
    given = [(flag, value) for flag, value in (
        ("--leader-port", cfg.leader_port), ("--follower-port", cfg.follower_port),
        ("--leader-calibration", cfg.leader_calibration), ("--follower-calibration", cfg.follower_calibration))
        if value is not None]
    if steering in ("leader_arm", "kinesthetic") or not (given or cfg.bimanual):
        return
    from .devices.bimanual import arm_spec

    flags = (["--bimanual"] if cfg.bimanual else []) + [flag for flag, value in given
                                                         if arm_spec(flag, value) is not None]
    if flags:
        who = f"--device {cfg.device}" + (f" --intervene {cfg.intervene}" if cfg.intervene else "")
        raise TelecorderError(f"{', '.join(flags)}: two Dynamixel arms are driven by --device leader_arm or "
                              f"kinesthetic (or --intervene leader_arm); {who} drives one arm, so give one port")


def _robot_and_teleop(cfg: DeviceConfig, cleanups: list[Callable[[], None]]) -> tuple[Robot, Teleop]:
    if cfg.device == "policy":
        from .devices.policy import policy_devices

        return policy_devices(cfg, cleanups, _robot_and_teleop, _follower)

    if cfg.device == "scripted":
        if cfg.robot != "sim":
            raise TelecorderError("--device scripted drives the simulated arm only; use --robot sim")
        from .devices.scripted import ScriptedTeleop

        robot = _sim_robot(cfg)
        return robot, ScriptedTeleop(robot, script=cfg.script, seed=cfg.seed)

    if cfg.device in ("vr", "gamepad", "keyboard"):
        return _eef_device(cfg, cleanups)

    if cfg.device in ("leader_arm", "kinesthetic"):
        from .devices.bimanual import two_arms

        why = two_arms(cfg)
        if why is not None:
            from .devices.bimanual import bimanual_devices

            return bimanual_devices(cfg, cleanups, _arm_port, _sim_robot, why)

    if cfg.device == "leader_arm":
        port, cal, emu = _arm_port(cfg, "leader", cfg.leader_port, cfg.leader_calibration, cleanups)
        from .devices.leader_arm import LeaderArmTeleop
        from .dynamixel.bus import DynamixelBus

        bus = DynamixelBus(port, cal.ids, baudrate=cfg.baudrate)
        follower = _follower(cfg, cleanups)
        on_start = emu.hand.restart if emu else None
        if emu is not None and cfg.emulator.hand_file is None and _has_cube(follower):
            from .dynamixel.emulated_arm import demonstration_motion

            def on_start() -> None:
                # The emulated operator looks at the scene: plan this episode's motion for the cube (on a
                # scene of several, the one the instruction names).
                env = follower.env
                task = getattr(env, "task", None)
                pose = env.object_pose(task.obj) if task is not None else env.cube_pose()
                emu.hand.restart(demonstration_motion(cfg.fps, cube_pose=pose))

        teleop = LeaderArmTeleop(bus, cal, fps=cfg.fps, on_disconnect=emu.stop if emu else None,
                                 on_episode_start=on_start)
        return follower, teleop

    # kinesthetic: the follower itself, torque off, moved by a person (or the emulator's hand)
    if cfg.robot == "sim" and not cfg.emulate:
        raise TelecorderError(
            "kinesthetic teaching needs an arm a person can move: use --robot dynamixel --follower-port PORT, "
            "or --emulate for the emulated arm"
        )
    from .devices.leader_arm import KinestheticTeleop
    from .dynamixel.bus import DynamixelBus
    from .robots.dynamixel import DynamixelRobot, EmulatedFollower

    port, cal, emu = _arm_port(cfg, "follower", cfg.follower_port, cfg.follower_calibration, cleanups)
    bus = DynamixelBus(port, cal.ids, baudrate=cfg.baudrate)
    if emu is None:
        return DynamixelRobot(bus, cal, torque=False), KinestheticTeleop()
    # The limp arm is also what the session disconnects last: it stops the emulator after letting go.
    return EmulatedFollower(bus, cal, emu, torque=False), KinestheticTeleop(on_episode_start=emu.hand.restart)


def _follower(cfg: DeviceConfig, cleanups: list[Callable[[], None]]) -> Robot:
    if cfg.robot == "sim":
        return _sim_robot(cfg)
    if not cfg.follower_port:
        raise TelecorderError(
            "--robot dynamixel needs --follower-port PORT (the follower's serial adapter, e.g. /dev/ttyUSB1; "
            "list them with 'ls /dev/serial/by-id/')"
        )
    from .dynamixel.bus import DynamixelBus
    from .dynamixel.calibration import ArmCalibration, default_path
    from .robots.dynamixel import DynamixelRobot

    cal = ArmCalibration.load(cfg.follower_calibration or default_path("follower"))
    return DynamixelRobot(DynamixelBus(cfg.follower_port, cal.ids, baudrate=cfg.baudrate), cal, torque=True)


def _arm_port(cfg: DeviceConfig, arm: str, port: str | None, calibration: Path | None,
              cleanups: list[Callable[[], None]], *, name: str | None = None, motion: object = None):
    """The serial port and calibration of an arm, starting an emulated one for ``--emulate``.

    ``name``: the calibration's name (default file, emulated calibration), e.g. ``left_leader``
    for one of two arms; default ``arm``. ``motion``: the emulated arm's hand motion (default:
    ``--hand-file``, else the pick-and-lift demonstration).
    """
    from .dynamixel.calibration import ArmCalibration, default_path

    name = name or arm
    if port:
        return port, ArmCalibration.load(calibration or default_path(name)), None
    if not cfg.emulate:
        raise TelecorderError(
            f"--device {cfg.device} needs --{arm}-port PORT, the serial adapter of the {arm} arm "
            "(e.g. /dev/ttyUSB0; list them with 'ls /dev/serial/by-id/'), or --emulate to use the built-in "
            "emulated arm"
        )
    from .dynamixel.emulated_arm import (
        IDS,
        MODEL,
        EpisodeHand,
        bus_emulator,
        demonstration_motion,
        emulated_calibration,
    )
    from .dynamixel.hand import HandMotion

    opts = cfg.emulator
    if motion is None:
        motion = HandMotion.from_file(opts.hand_file) if opts.hand_file else demonstration_motion(cfg.fps)
    hand = EpisodeHand(motion)
    emu = bus_emulator(cfg, IDS, MODEL, hand)
    hand.clock = emu.elapsed
    path = emu.start()
    cleanups.append(emu.stop)
    return path, emulated_calibration(name), emu



def _sim_robot(cfg: DeviceConfig) -> Robot:
    from .robots.sim import SimRobot

    return SimRobot(cfg.robot_model, fps=cfg.fps, seed=cfg.seed, env_state=cfg.env_state, scene=cfg.scene,
                    randomize=cfg.randomize)


def _has_cube(robot: Robot) -> bool:
    env = getattr(robot, "env", None)
    return bool(env is not None and env.has_task)


def _eef_device(cfg: DeviceConfig, cleanups: list[Callable[[], None]]) -> tuple[Robot, Teleop]:
    """End-effector devices steer through IK on a MuJoCo model: the sim arm's own, or a Dynamixel arm's MJCF.

    A simulated model of two arms (``--scene bimanual``) gets VR's two hands, or a gamepad or
    keyboard that switches arms (:mod:`.devices.eef_bimanual`); ``--vr-hand`` is for one arm.
    """
    from .devices.eef import EEFTeleop, sim_arm_joints, velocity_source, vr_source

    if cfg.robot == "dynamixel":
        from .devices.eef_dynamixel import eef_follower

        robot, arm = eef_follower(cfg, cleanups)
    else:
        from .devices.eef_bimanual import arm_sides, bimanual_eef_teleop, sim_arms

        robot = _sim_robot(cfg)
        if arm_sides(robot.env):
            return robot, bimanual_eef_teleop(cfg, robot, sim_arms(robot))
        arm = sim_arm_joints(robot)
    if cfg.device == "vr":
        from .devices.vr import OpenXRClient, PoseStreamSource, VRMapping

        mapping = VRMapping(scale=cfg.vr_scale, axes=cfg.vr_axes)
        if cfg.pose_stream is not None:
            # On simulated time the stream replays by the simulation's clock, as the loop runs.
            clock = None if cfg.realtime else (lambda: robot.env.time)
            stream = PoseStreamSource(cfg.pose_stream, hand=cfg.vr_hand, clock=clock)
            source, restart = vr_source(stream, mapping)
            return robot, EEFTeleop(arm, source, device_type="vr", fps=cfg.fps, on_episode_start=restart,
                                    on_rebase=mapping.reset)
        # A live headset through OpenXR; without a runtime, connecting fails with the runtime named.
        live = LiveController(OpenXRClient(), cfg.vr_hand)
        source, restart = vr_source(live, mapping)
        return robot, EEFTeleop(arm, source, device_type="vr", fps=cfg.fps, on_connect=live.client.open,
                                on_disconnect=live.client.close, on_episode_start=restart, on_rebase=mapping.reset)
    from .devices.gamepad import GamepadInput, KeyboardInput

    device = GamepadInput() if cfg.device == "gamepad" else KeyboardInput()
    source, restart = velocity_source(device)
    return robot, EEFTeleop(arm, source, device_type=cfg.device, fps=cfg.fps, on_connect=device.open,
                            on_disconnect=device.close, on_episode_start=restart, on_rebase=restart)


class LiveController:
    """The pose-stream interface over a live OpenXR client: the newest sample of one hand."""

    def __init__(self, client: object, hand: str) -> None:
        self.client, self.hand = client, hand

    def start(self) -> None:
        """A live stream has no start to rewind to."""

    def current(self) -> object:
        return self.client.sample().get(self.hand)
