"""End-effector teleop on a Dynamixel follower: the arm's MJCF for IK, its calibration for the servos.

The MJCF is used for kinematics only; nothing is simulated and no physics drives the arm.
Each tick the model takes the follower's measured joint angles (calibrated radians), IK
solves for the device's target, and the joint command goes to the servos through the
calibration, within the model's joint limits and at most ``ARM_STEP_RAD`` ahead of where
each joint stands (the leader arm's per-tick limit).

Joints are matched by name, never by position: a calibration may list its servos in any
order. Every calibrated joint must be a joint of the model, and every joint that moves the
model's ``ee_site`` must have a calibrated servo; otherwise the session is refused with the
names that do not match. The calibrated gripper (normalized 0 = closed, 1 = open) takes the
device's gripper command directly, so it spans the range its calibration measured.

``--emulate`` steers the built-in emulated arm, which is the packaged sim arm's chain
(same joint names and convention, identity calibration): its MJCF is the default model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...errors import DeviceError, TelecorderError
from ..dynamixel.bus import DynamixelBus
from ..dynamixel.calibration import ArmCalibration
from ..robots.dynamixel import DynamixelRobot, EmulatedFollower
from .eef import GRIPPER, ArmJoints

# The leader arm's per-tick limit (LeaderArmTeleop.max_step): 7.5 rad/s at 30 Hz.
ARM_STEP_RAD = 0.25
EE_SITE = "ee_site"


def eef_follower(cfg: object, cleanups: list[Callable[[], None]]) -> tuple[DynamixelRobot, ArmJoints]:
    """The follower arm ``cfg`` names (a port, or the emulated arm) and its joints in the MJCF, by name."""
    device = f"--device {cfg.device}"
    if cfg.follower_port:
        from ..dynamixel.calibration import default_path

        cal_path = Path(cfg.follower_calibration or default_path("follower"))
        cal, cal_source = ArmCalibration.load(cal_path), f"follower calibration {cal_path}"
    elif cfg.emulate:
        if cfg.emulator.hand_file is not None:
            raise TelecorderError(f"--hand-file moves a limp emulated arm; with {device} the emulated follower "
                                  "holds torque and is moved by IK, so leave --hand-file out")
        from ..dynamixel.emulated_arm import emulated_calibration

        cal, cal_source = emulated_calibration("follower"), "the emulated arm's calibration"
    else:
        raise TelecorderError(
            f"{device} --robot dynamixel needs --follower-port PORT (the follower's serial adapter, e.g. "
            "/dev/ttyUSB1; list them with 'ls /dev/serial/by-id/'), or --emulate for the built-in emulated arm"
        )
    model_path = _model_path(cfg, cal)
    arm = match_joints(model_path, cal, cal_source)
    if not cfg.follower_port:
        return _emulated_follower(cfg, cal, arm, cleanups), arm
    bus = DynamixelBus(cfg.follower_port, cal.ids, baudrate=cfg.baudrate)
    return DynamixelRobot(bus, cal, torque=True), arm


def _model_path(cfg: object, cal: ArmCalibration) -> Path:
    from ...sim.env import DEFAULT_MODEL

    if cfg.robot_model is not None:
        return Path(cfg.robot_model)
    if cfg.emulate and not cfg.follower_port:
        return DEFAULT_MODEL  # the emulated arm is the packaged sim arm
    raise TelecorderError(
        f"--device {cfg.device} --robot dynamixel solves IK on a model of the follower: give --robot-model "
        f"ARM.xml, an MJCF whose joints carry the calibration's names ({', '.join(_arm_names(cal))}) and with "
        f"a site named {EE_SITE!r} at the grasp point. The built-in arm's model is {DEFAULT_MODEL} (the arm "
        "--emulate emulates); MJCFs of many real arms are in MuJoCo Menagerie "
        "(github.com/google-deepmind/mujoco_menagerie): add the site and name the joints as calibrated"
    )


def match_joints(model_path: Path, cal: ArmCalibration, cal_source: str) -> ArmJoints:
    """The calibrated joints found in the MJCF by name; refuses names either side lacks."""
    from ...sim.env import SimModelError
    from ...sim.kinematics import chain_joints, load_kinematic_model

    try:
        model = load_kinematic_model(model_path)  # its messages name the file
    except SimModelError as e:
        raise DeviceError(f"--robot-model {e}") from e
    try:
        chain = chain_joints(model, EE_SITE)
    except SimModelError as e:
        raise DeviceError(f"--robot-model {model_path}: {e}; end-effector teleop steers that site "
                          "(put it at the grasp point)") from e
    names = _arm_names(cal)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DeviceError(f"{cal_source}: joint name(s) {_quoted(dupes)} appear twice; every servo needs its own "
                          "name to be matched to the model's joints")
    in_model = {model.joint(j).name for j in range(model.njnt)}
    unknown = [n for n in names if n not in in_model]
    uncalibrated = [n for n in chain if n not in names]
    if unknown or uncalibrated:
        parts = []
        if unknown:
            parts.append(f"calibrated joint(s) {_quoted(unknown)} have no joint of that name in the model")
        if uncalibrated:
            parts.append(f"model joint(s) {_quoted(uncalibrated)} move {EE_SITE!r} but no servo is calibrated "
                         "for them")
        raise DeviceError(
            f"{cal_source} and --robot-model {model_path} do not match by joint name: {'; '.join(parts)}. "
            f"Calibrated: {', '.join(names)}; the model's joints from base to {EE_SITE!r}: {', '.join(chain)}. "
            "Rename the joints in the MJCF or in the calibration (the 'names' of 'telecorder calibrate "
            "--pose-file') so that they agree"
        )
    return ArmJoints.by_name(model, cal.names, site=EE_SITE, max_step=ARM_STEP_RAD)


def _arm_names(cal: ArmCalibration) -> list[str]:
    return [n for n in cal.names if not (cal.gripper is not None and n == GRIPPER)]


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _emulated_follower(cfg: object, cal: ArmCalibration, arm: ArmJoints,
                       cleanups: list[Callable[[], None]]) -> EmulatedFollower:
    """Start the emulated arm, resting at the model's home pose with the gripper open."""
    import numpy as np

    from ..dynamixel.emulated_arm import MODEL, bus_emulator
    from ..dynamixel.hand import HandMotion

    # A limp arm rests where a hand left it until torque comes on: the home pose, away from the
    # straight-up singularity of all-zero angles, where IK could not move the gripper sideways.
    calibrated = np.zeros(len(cal.names))
    calibrated[arm.index] = arm.kin.home
    if arm.gripper is not None:
        calibrated[arm.gripper] = 1.0
    raw = cal.to_raw(calibrated)
    rest = HandMotion([0.0], {sid: [float(r)] for sid, r in zip(cal.ids, raw, strict=True)},
                      source="emulated follower at rest")
    emu = bus_emulator(cfg, cal.ids, MODEL, rest)
    path = emu.start()
    cleanups.append(emu.stop)
    return EmulatedFollower(DynamixelBus(path, cal.ids, baudrate=cfg.baudrate), cal, emu)
