"""End-effector teleop on a Dynamixel follower: real dynamixel_sdk over a pty to our bus emulator, IK on the MJCF.

The follower in the main test is wired unlike the MJCF on purpose: its servo IDs are shuffled,
some horns are mounted reversed or a quarter/half turn off, and its calibration lists the joints
in another order than the model. Only matching joints by name gets the gripper to the target.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rich.console import Console
from test_cli import run, tool
from test_eef_teleop import (
    RADIUS,
    _circle_stream,
    _circle_targets,
    check_pad_moved_forward,
    pad_stick_forward,
)

pytest.importorskip("dynamixel_sdk")
pytest.importorskip("mujoco")

from telecorder.collect.devices.eef_dynamixel import ARM_STEP_RAD
from telecorder.collect.devices.vr import AXIS_PRESETS
from telecorder.collect.dynamixel.calibration import (
    ArmCalibration,
    GripperCalibration,
    JointCalibration,
)
from telecorder.collect.dynamixel.emulated_arm import ARM_JOINTS, emulated_calibration
from telecorder.collect.dynamixel.emulator import BusEmulator
from telecorder.collect.dynamixel.hand import HandMotion
from telecorder.collect.factory import DeviceConfig, make_devices
from telecorder.collect.session import RecordingSession, SessionConfig
from telecorder.datasets import Dataset
from telecorder.errors import TelecorderError
from telecorder.sim import DEFAULT_MODEL, Kinematics, SimEnv

FPS = 30.0
HOME = {"shoulder_pan": 0.0, "shoulder_lift": -0.35, "elbow_flex": 2.2, "wrist_flex": 0.8, "wrist_roll": 0.0}
# How the test arm is built: joint -> (servo id, sign, offset); joint angle = sign * shaft angle - offset.
WIRING = {
    "shoulder_pan": (3, -1, 0.0),
    "shoulder_lift": (1, 1, math.pi / 2),
    "elbow_flex": (5, -1, -math.pi / 2),
    "wrist_flex": (2, 1, 0.0),
    "wrist_roll": (4, 1, math.pi),
}
RELEASE_S = 2.75
GRIPPER_ID, GRIPPER_OPEN_RAW, GRIPPER_CLOSED_RAW = 6, 1.2, 0.4
CALIBRATION_ORDER = ("wrist_flex", "shoulder_pan", "elbow_flex", "shoulder_lift", "wrist_roll")


def _shaft(joint: str, angle: float) -> float:
    _, sign, offset = WIRING[joint]
    return sign * (angle + offset)


def _joint(joint: str, shaft: float) -> float:
    _, sign, offset = WIRING[joint]
    return sign * shaft - offset


def _wired_calibration(path, order=CALIBRATION_ORDER, rename=None):
    rename = rename or {}
    joints = [JointCalibration(id=WIRING[n][0], name=rename.get(n, n), sign=WIRING[n][1], offset=WIRING[n][2])
              for n in order]
    cal = ArmCalibration("follower", joints, GripperCalibration(GRIPPER_ID, GRIPPER_OPEN_RAW, GRIPPER_CLOSED_RAW),
                         known_pose=[0.0] * len(joints))
    return cal.save(path)


def _wired_emulator() -> BusEmulator:
    """The test arm, limp and resting at the model's home pose with the gripper open, until torque comes on."""
    rest = {sid: [_shaft(n, HOME[n])] for n, (sid, _, _) in WIRING.items()}
    rest[GRIPPER_ID] = [GRIPPER_OPEN_RAW]
    return BusEmulator(sorted(rest), hand=HandMotion([0.0], rest, source="arm at rest"))


def _fk_by_name(kin: Kinematics, names: list[str], states: np.ndarray) -> np.ndarray:
    cols = [names.index(j) for j in kin.joint_names]
    return np.array([kin.fk(s[cols])[0] for s in states.astype(np.float64)])


def _mapped_arc(cmd, release_at, clutch_at=0.5, circle_s=3.0, samples=20000, late_s=0.0):
    """Dense points of the controller's arc up to the release, mapped into the robot frame.

    ``late_s``: how far the controller had already moved along the circle when the clutching tick
    sampled it. The mapping is relative to that sample, so a late first tick translates the whole
    arc; on a loaded host that tick can be tens of milliseconds late (the stream replays on the
    wall clock), which moves the arc by a millimetre or more without anything being wrong.
    """
    anchor = cmd[0, :3]  # the target rests where the arm started until the clutch

    def circle(a):
        return np.stack([RADIUS * np.sin(a), np.zeros_like(a), -RADIUS * (1 - np.cos(a))], axis=-1)

    a = np.linspace(0, 2 * np.pi * (release_at - clutch_at) / circle_s, samples)
    ref = circle(np.array(2 * np.pi * late_s / circle_s))
    return anchor + (circle(a) - ref) @ AXIS_PRESETS["openxr_to_robot"].T


def _arc_of_the_clutch(cmd, points, release_at, max_late_s=0.3):
    """The mapped arc for the clutch lateness that fits ``points`` best (coarse grid, then finer)."""
    def worst(late):
        return _distance_to(_mapped_arc(cmd, release_at, samples=4000, late_s=late), points).max()

    best = min(np.linspace(0.0, max_late_s, 61), key=worst)
    step = max_late_s / 60
    best = min(np.linspace(max(best - step, 0.0), best + step, 41), key=worst)
    return _mapped_arc(cmd, release_at, late_s=best), best


def _distance_to(path, points):
    return np.array([np.linalg.norm(path - p, axis=1).min() for p in points])


@pytest.mark.slow
def test_vr_pose_stream_steers_a_follower_wired_unlike_the_model(tmp_path):
    stream = tmp_path / "circle.jsonl"
    # Released three quarters round the circle, so the arm ends away from where it started.
    _circle_stream(stream, release_at=RELEASE_S, trigger_at=3.2)
    cal_path = _wired_calibration(tmp_path / "follower.json")
    emu = _wired_emulator()
    port = emu.start()
    try:
        robot, teleop, cameras = make_devices(DeviceConfig(
            device="vr", robot="dynamixel", follower_port=port, follower_calibration=cal_path,
            robot_model=DEFAULT_MODEL, pose_stream=stream, fps=FPS))
        cfg = SessionConfig(out=tmp_path / "vr", episodes=1, episode_time_s=4.4, reset_time_s=0, fps=FPS)
        RecordingSession(robot, teleop, cameras, cfg, console=Console(quiet=True)).run()
        with emu.lock:
            shafts = {sid: s.position_rad for sid, s in emu.servos.items()}
    finally:
        emu.stop()

    ds = Dataset.open(tmp_path / "vr")
    names = list(ds.info.features["observation.state"].names)
    assert names == [*CALIBRATION_ORDER, "gripper"], "the dataset keeps the calibration's joint order"
    assert ds.info.robot_type == "dynamixel_arm"
    with ds.episode(ds.episode_indices[0]) as ep:
        state = ep.numeric("observation.state").astype(np.float64)
        action = ep.numeric("action").astype(np.float64)
        cmd = ep.numeric("action_eef").astype(np.float64)
        t = ep.timestamps()
    kin = Kinematics(SimEnv().model)  # the MJCF's own joint order
    measured = _fk_by_name(kin, names, state)

    # The stream replays on the wall clock, and on a loaded host a late tick samples it late, so what
    # is checked is the path (how far off the mapped circle), not the timing along it.
    during, _ = _circle_targets(t, cmd, release_at=RELEASE_S)
    path, late = _arc_of_the_clutch(cmd, cmd[during, :3], RELEASE_S)
    off_cmd = _distance_to(path, cmd[during, :3])
    assert off_cmd.max() < 2e-4, (f"commanded EEF {1e3 * off_cmd.max():.2f} mm off the mapped circle "
                                  f"(clutch sampled {1e3 * late:.0f} ms late)")
    # After the release the target stays at the last clutched sample, near the end of the arc.
    end = np.linalg.norm(path - cmd[-1, :3], axis=1)
    assert end.min() < 2e-4 and np.argmin(end) > 0.8 * len(path), "the target went round the arc and stayed"
    assert np.ptp(state[:, :5], axis=0).max() > 0.1, "the recorded joints move"
    # FK of the recorded joints follows the path. Sideways, the error is mostly IK's: a 5-joint arm
    # cannot keep the anchored orientation while it moves sideways, and IK (position first, 0.1 m
    # per rad of orientation, as on the sim) leaves its command up to 2.7 mm off the target here.
    # The servos' lag (tau 40 ms) trails by 3.4 mm along a circle of radius 40 mm, 0.15 mm off it;
    # encoders resolve 0.088 deg, under 0.5 mm at this reach. Hence 5 mm.
    off = _distance_to(path, measured[during])
    assert off.max() < 0.005, f"measured EEF up to {1e3 * off.max():.2f} mm off the path"
    # Along it, one tick after each command: the lag above plus up to a tick of arm motion; a late
    # tick lets the target run further ahead, hence 10 mm at p95, the sim's own tolerance.
    err = np.linalg.norm(measured[np.flatnonzero(during) + 1] - cmd[during, :3], axis=1)
    assert np.percentile(err, 95) < 0.010, f"EEF tracking p95 {1e3 * np.percentile(err, 95):.1f} mm"

    # Commands: inside the model's limits, never more than the per-tick step ahead of the arm.
    arm_cols = [names.index(j) for j in kin.joint_names]
    assert np.all(action[:, arm_cols] >= kin.lower - 1e-6) and np.all(action[:, arm_cols] <= kin.upper + 1e-6)
    assert np.abs(action[:, arm_cols] - state[:, arm_cols]).max() <= ARM_STEP_RAD + 1e-5

    # Where the servos physically stand at the end, read through this test's own wiring table: at the
    # last command, which puts the gripper where the target was left (released 1.6 s before the end,
    # 5.7 cm from the start).
    assert np.linalg.norm(cmd[-1, :3] - cmd[0, :3]) > 0.05
    q_end = np.array([_joint(j, shafts[WIRING[j][0]]) for j in kin.joint_names])
    commanded = _fk_by_name(kin, names, action[-1:])[0]
    settled = np.linalg.norm(kin.fk(q_end)[0] - commanded)
    # Servos settle to the tick: 0.088 deg, at most 0.5 mm summed over these joints' lever arms (0.6 m);
    # the command is IK's compromise (above).
    assert settled < 0.001, f"the servos stand {1e3 * settled:.2f} mm from the last command"
    assert np.linalg.norm(commanded - cmd[-1, :3]) < 0.005
    # The trigger closed the gripper: command 0, the servo at its calibrated closed angle.
    assert cmd[-1, 6] == 0.0 and action[-1, names.index("gripper")] == 0.0
    assert abs(shafts[GRIPPER_ID] - GRIPPER_CLOSED_RAW) < 0.02, shafts[GRIPPER_ID]
    assert state[0, names.index("gripper")] > 0.97, "it started open"
    print(f"off path max {1e3 * off.max():.2f} mm; tracking p50 {1e3 * np.median(err):.2f} mm, "
          f"p95 {1e3 * np.percentile(err, 95):.2f} mm, "
          f"max {1e3 * err.max():.2f} mm; settled {1e3 * settled:.3f} mm; counters {teleop.counters()}")


@pytest.mark.slow
def test_collect_vr_on_the_emulated_follower_defaults_to_the_builtin_model(tmp_path):
    stream = tmp_path / "s.jsonl"
    _circle_stream(stream, end=1.5, circle_s=0.8, release_at=1.4)
    out = tmp_path / "emu"
    run(tool("collect"), "--device", "vr", "--pose-stream", str(stream), "--robot", "dynamixel", "--emulate",
        "--episodes", "1", "--episode-time", "1.5", "--reset-time", "0", "--out", str(out), check=True)
    info = json.loads(run(tool("telecorder"), "info", str(out), "--json", check=True).stdout)
    feats = info["features"]
    # The sim's EEF schema: joint states and commands named as the sim arm's, plus the commanded EEF pose.
    assert feats["observation.state"]["names"] == SimEnv().joint_names == [*ARM_JOINTS, "gripper"]
    assert feats["action"]["names"] == feats["observation.state"]["names"]
    assert feats["action_eef"]["shape"] == [7]
    assert info["robot_type"] == "emulated_arm"
    ds = Dataset.open(out)
    with ds.episode(ds.episode_indices[0]) as ep:
        state = ep.numeric("observation.state")
        assert ep.attrs["device"] == "vr"
    assert np.ptp(state[:, :5], axis=0).max() > 0.02, "the clutched circle moved the arm"
    assert run(tool("telecorder"), "doctor", str(out)).returncode == 0


@pytest.mark.slow
def test_gamepad_drives_the_emulated_follower(tmp_path, monkeypatch):
    with pad_stick_forward(monkeypatch):
        robot, teleop, cameras = make_devices(DeviceConfig(device="gamepad", robot="dynamixel", emulate=True,
                                                           fps=FPS))
        cfg = SessionConfig(out=tmp_path / "pad", episodes=1, episode_time_s=1.5, reset_time_s=0, fps=FPS)
        RecordingSession(robot, teleop, cameras, cfg, console=Console(quiet=True)).run()
    assert robot.emulator.path is None, "the emulated arm stops with the session"
    ds = Dataset.open(tmp_path / "pad")
    with ds.episode(ds.episode_indices[0]) as ep:
        state = ep.numeric("observation.state")
        cmd = ep.numeric("action_eef").astype(np.float64)
    kin = Kinematics(SimEnv().model)
    check_pad_moved_forward(cmd, _fk_by_name(kin, list(ds.info.features["observation.state"].names), state))


def test_a_real_port_without_robot_model_says_which_model_to_give(tmp_path):
    cal = emulated_calibration("follower").save(tmp_path / "follower.json")
    proc = run(tool("collect"), "--device", "gamepad", "--robot", "dynamixel", "--follower-port", "/dev/null",
               "--follower-calibration", str(cal), "--episodes", "1", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    text = " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert "--robot-model" in text and "ee_site" in text and "shoulder_pan, shoulder_lift" in text
    assert str(DEFAULT_MODEL) in text


def _refusal(tmp_path, cal_path, model=DEFAULT_MODEL, device="vr") -> str:
    stream = tmp_path / "s.jsonl"
    _circle_stream(stream, end=0.2)
    with pytest.raises(TelecorderError) as info:
        make_devices(DeviceConfig(device=device, robot="dynamixel", follower_port="/dev/null",
                                  follower_calibration=cal_path, robot_model=model, pose_stream=stream))
    return str(info.value)


def test_joint_names_the_model_lacks_or_the_calibration_lacks_are_named(tmp_path):
    renamed = _wired_calibration(tmp_path / "renamed.json", rename={"elbow_flex": "elbow"})
    msg = _refusal(tmp_path, renamed)
    assert "'elbow' have no joint of that name in the model" in msg
    assert "'elbow_flex' move 'ee_site' but no servo is calibrated" in msg
    assert str(renamed) in msg and str(DEFAULT_MODEL) in msg

    four = _wired_calibration(tmp_path / "four.json", order=CALIBRATION_ORDER[:4])
    msg = _refusal(tmp_path, four)
    assert "'wrist_roll' move 'ee_site' but no servo is calibrated" in msg and "have no joint" not in msg


def test_model_problems_name_the_file(tmp_path):
    cal = _wired_calibration(tmp_path / "follower.json")
    no_site = tmp_path / "no_site.xml"
    no_site.write_text(DEFAULT_MODEL.read_text().replace('<site name="ee_site"', '<site name="tcp"'))
    msg = _refusal(tmp_path, cal, model=no_site)
    assert str(no_site) in msg and "no site named 'ee_site'" in msg
    msg = _refusal(tmp_path, cal, model=tmp_path / "missing.xml")
    assert str(tmp_path / "missing.xml") in msg and "not found" in msg
    broken = tmp_path / "broken.xml"
    broken.write_text("<mujoco><worldbody><body></mujoco>")
    assert str(broken) in _refusal(tmp_path, cal, model=broken)


def test_robot_model_is_refused_where_dynamixel_devices_would_ignore_it(tmp_path):
    with pytest.raises(TelecorderError, match="--device leader_arm does not use it"):
        make_devices(DeviceConfig(device="leader_arm", robot="dynamixel", emulate=True, robot_model=DEFAULT_MODEL))


def test_a_far_target_is_approached_at_most_one_step_per_tick(tmp_path):
    # A clutch re-grab far away, or a solution on another branch, must not lunge the arm.
    from telecorder.collect.devices.eef import EEFTarget, EEFTeleop
    from telecorder.collect.devices.eef_dynamixel import match_joints

    cal = ArmCalibration.load(_wired_calibration(tmp_path / "follower.json"))
    arm = match_joints(DEFAULT_MODEL, cal, "test calibration")
    names = cal.names
    state = np.array([HOME[n] for n in CALIBRATION_ORDER] + [1.0])
    far = arm.kin.fk(np.array([0.9, 0.3, 1.2, 0.2, 0.5]))[0]  # reachable, half a metre of joint motion away

    def source(pos, rot, gripper, dt):
        return EEFTarget(far, rot, 0.4)

    teleop = EEFTeleop(arm, source, device_type="vr", fps=FPS)
    teleop.start_episode()
    q = state.astype(np.float32)
    arm_cols = [names.index(j) for j in arm.kin.joint_names]
    for _ in range(40):
        action = teleop.read({"observation.state": q}).action
        assert np.abs(action[arm_cols] - q[arm_cols]).max() <= ARM_STEP_RAD + 1e-9
        assert action[names.index("gripper")] == 0.4
        q = action.astype(np.float32)  # a follower that reaches each command within the tick
    assert teleop.counters()["step_limited"] >= 2
    assert np.linalg.norm(arm.kin.fk(q[arm_cols])[0] - far) < 0.002, "and it still gets there"


def test_the_chain_to_the_site_is_what_must_be_calibrated_and_other_servos_hold(tmp_path):
    from telecorder.collect.devices.eef import EEFTarget, EEFTeleop
    from telecorder.collect.devices.eef_dynamixel import match_joints
    from telecorder.sim.kinematics import chain_joints, load_kinematic_model

    assert chain_joints(load_kinematic_model(DEFAULT_MODEL)) == list(ARM_JOINTS), "base first, fingers excluded"
    # A servo on a joint that does not move the grasp point (here one finger, as an arm joint) is
    # matched by name but left out of IK: it holds where it was when the episode started.
    cal = ArmCalibration.load(_wired_calibration(tmp_path / "follower.json"))
    cal.joints.append(JointCalibration(id=7, name="finger_left", range_min=0.0, range_max=0.032))
    arm = match_joints(DEFAULT_MODEL, cal, "test calibration")
    names = cal.names
    assert [names[i] for i in arm.index] == list(CALIBRATION_ORDER) and arm.gripper == names.index("gripper")
    teleop = EEFTeleop(arm, lambda pos, rot, grip, dt: EEFTarget(pos + np.array([0.01, 0, 0]), rot, 1.0),
                       device_type="gamepad", fps=FPS)
    state = np.array([HOME[n] for n in CALIBRATION_ORDER] + [0.02, 1.0], dtype=np.float32)
    teleop.start_episode()
    first = teleop.read({"observation.state": state}).action
    state[5] = 0.005  # something pushed the finger
    second = teleop.read({"observation.state": state}).action
    assert first[5] == second[5] == np.float32(0.02)
    assert np.abs(second[arm.index] - state[arm.index]).max() > 1e-3, "the arm joints are steered"


def test_the_emulated_follower_takes_the_emulator_options(tmp_path):
    from telecorder.collect.factory import EmulatorOptions

    stream = tmp_path / "s.jsonl"
    _circle_stream(stream, end=0.2)
    robot, _, _ = make_devices(DeviceConfig(device="vr", robot="dynamixel", emulate=True, pose_stream=stream,
                                            emulator=EmulatorOptions(usb_latency_ms=16.0, drop_rate=0.1)))
    try:
        assert robot.emulator.usb_latency_ms == 16.0 and robot.emulator.faults.drop_rate == 0.1
    finally:
        robot.emulator.stop()
    with pytest.raises(TelecorderError, match="--hand-file"):
        make_devices(DeviceConfig(device="vr", robot="dynamixel", emulate=True, pose_stream=stream,
                                  emulator=EmulatorOptions(hand_file=tmp_path / "hand.csv")))
