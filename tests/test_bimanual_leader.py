"""Two leader arms (ALOHA style) end to end: real dynamixel_sdk over our bus emulator's ptys.

Two emulated leaders drive the sim's two-arm handover scene; two leaders drive a pair of
Dynamixel followers (per-arm ports, calibrations and start checks); kinesthetic teaching on two
limp arms; and the per-arm port specs' errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import run, tool
from test_leader_arm import _episodes

pytest.importorskip("dynamixel_sdk")


SIDES = ("left", "right")
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
NAMES = [f"{side}_{j}" for side in SIDES for j in JOINTS]
IDS6 = list(range(1, 7))


def _records(out):
    return [json.loads(line) for line in (out / "meta/episodes.jsonl").read_text().splitlines()]


def _per_arm_counters(counters):
    """The left./right. counters of one side of comm_errors, as {arm: {name: n}}."""
    arms: dict[str, dict[str, int]] = {}
    for key, n in counters.items():
        arm, _, name = key.partition(".")
        arms.setdefault(arm, {})[name] = n
    return arms


@pytest.mark.slow
def test_two_emulated_leaders_hand_the_cube_over_in_the_sim(tmp_path):
    pytest.importorskip("mujoco")
    out = tmp_path / "handover"
    # A handover takes the operator about 10 s (rest, pick, carry, hand over, retreat).
    proc = run(tool("collect"), "--device", "leader_arm", "--emulate", "--robot", "sim", "--scene", "bimanual",
               "--episodes", "2", "--episode-time", "12", "--reset-time", "0", "--sim-cameras", "top",
               "--camera-size", "96x72", "--seed", "3", "--out", str(out), check=True, timeout=600)
    assert "2 episode(s) saved" in proc.stdout
    ds, eps = _episodes(out)
    assert ds.info.robot_type == "telecorder_sim_bimanual"
    for key in ("observation.state", "action"):
        assert ds.info.features[key].shape == (12,)
        assert list(ds.info.features[key].names) == NAMES
    records = _records(out)
    for ep, rec in zip(eps, records, strict=True):
        assert ep.metadata["device"] == "leader_arm"
        state, action = ep.data["observation.state"], ep.data["action"]
        assert action.shape == (len(ep), 12) and len(ep) == 360
        # Both hands move their own leader, and each half of the follower goes where its half of the action says.
        assert np.ptp(action[:, 0:5], axis=0).max() > 0.3 and np.ptp(action[:, 6:11], axis=0).max() > 0.3
        assert np.abs(action[:, 0:5] - action[:, 6:11]).max() > 0.3, "the two arms do different things"
        err = np.abs(state[1:] - action[:-1])[:, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]]
        assert np.percentile(err, 95) < 0.05, f"tracking error p95 {np.percentile(err, 95):.3f} rad"
        # The left gripper closes on the cube and opens again; the right one ends closed on it.
        assert action[:, 5].min() < 0.1 and action[-1, 5] > 0.9 and action[-1, 11] < 0.1
        for counters in (ep.metadata["comm_errors"]["teleop"], rec["comm_errors"]["teleop"]):
            arms = _per_arm_counters(counters)
            assert set(arms) == set(SIDES), counters
            for side in SIDES:
                assert arms[side]["transactions"] >= len(ep) and arms[side]["failed_cycles"] == 0
    # The sim judges the handover: the cube held up by the right gripper alone, at the end.
    successes = [rec["success"] for rec in records]
    assert successes.count(True) >= 1, successes
    assert run(tool("telecorder"), "doctor", str(out)).returncode == 0


def test_bimanual_teleop_checks_each_arm_and_counts_per_arm():
    """Each leader is checked against its own half of the follower's state; the error names arm and joint."""
    from telecorder.collect.devices.bimanual import BimanualLeaderTeleop
    from telecorder.collect.devices.leader_arm import LeaderArmTeleop
    from telecorder.collect.dynamixel.bus import DynamixelBus
    from telecorder.collect.dynamixel.emulated_arm import emulated_calibration
    from telecorder.collect.dynamixel.emulator import BusEmulator
    from telecorder.errors import DeviceError

    left_pose = [0.1, -0.3, 1.2, 0.6, 0.0, 0.45]
    right_pose = [-0.2, 0.1, 0.9, 0.3, 0.2, 0.45]
    emus = [BusEmulator(IDS6, hand=_HeldHand(pose)) for pose in (left_pose, right_pose)]
    paths = [e.start() for e in emus]
    arms = [LeaderArmTeleop(DynamixelBus(p, IDS6), emulated_calibration(f"{side}_leader"), fps=30, arm=side)
            for p, side in zip(paths, SIDES, strict=True)]
    teleop = BimanualLeaderTeleop(arms)
    cal = emulated_calibration("leader")
    at_leaders = np.concatenate([cal.to_calibrated(np.array(left_pose)), cal.to_calibrated(np.array(right_pose))])
    try:
        teleop.connect()
        teleop.start_episode()
        command = teleop.read({"observation.state": at_leaders}).action
        np.testing.assert_allclose(command, at_leaders, atol=0.01)
        counters = teleop.counters()
        assert counters["left.transactions"] >= 1 and counters["right.transactions"] >= 1
        assert set(counters) == {f"{side}.{k}" for side in SIDES for k in arms[0].counters()}

        # The right follower's elbow stands 0.8 rad from its leader: the right arm is named, the left passes.
        away = at_leaders.copy()
        away[8] -= 0.8
        teleop.start_episode()
        with pytest.raises(DeviceError, match=r"^right leader arm \(.*\) and follower differ by 0\.80 rad on "
                                              r"joint 'right_elbow_flex'.*move the right leader"):
            teleop.read({"observation.state": away})
        # A follower of the wrong width is one clear error, not a silent split.
        teleop.start_episode()
        with pytest.raises(DeviceError, match=r"2 leader arms drive 12 joints .*follower reports 6"):
            teleop.read({"observation.state": at_leaders[:6]})
    finally:
        teleop.disconnect()
        for emu in emus:
            emu.stop()


class _HeldHand:
    """The operator's hand holding a limp leader at ``pose`` (raw rad per servo)."""

    def __init__(self, pose):
        self.pose = dict(zip(IDS6, pose, strict=True))
        self.joints = dict.fromkeys(IDS6)

    def position(self, servo_id, t):
        return self.pose[servo_id]

    def velocity(self, servo_id, t):
        return 0.0


@pytest.mark.slow
def test_two_leaders_drive_two_dynamixel_followers_with_per_arm_calibrations(tmp_path):
    """Real-hardware flags: left=/right= ports, a calibration file per arm ('calibrate --arm left_follower'
    saves where 'collect' looks), each arm's start check; each follower ends at its own leader."""
    from telecorder.collect.dynamixel.emulated_arm import emulated_calibration
    from telecorder.collect.dynamixel.emulator import BusEmulator

    # Raw servo radians (the emulated leader calibration is the identity; raw 0.45 is gripper 0.5). The two
    # leaders stand 0.3-0.4 rad apart: swapped arms would pass the start check but end at the wrong pose.
    poses = {"left": [0.1, -0.3, 1.2, 0.6, 0.0, 0.45], "right": [-0.2, 0.1, 0.9, 0.3, 0.3, 0.45]}
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    leader_cals = {}
    for side in SIDES:
        leader_cals[side] = tmp_path / f"{side}_leader.json"
        emulated_calibration(f"{side}_leader").save(leader_cals[side])
    hands = {side: _HeldHand(poses[side]) for side in SIDES}
    leaders = {side: BusEmulator(IDS6, hand=hands[side]) for side in SIDES}
    followers = {side: BusEmulator(IDS6) for side in SIDES}
    lp = {side: emu.start() for side, emu in leaders.items()}
    fp = {side: emu.start() for side, emu in followers.items()}
    try:
        pose_file = tmp_path / "pose.json"
        pose_file.write_text(json.dumps({"known_pose": [0, 0, 0, 0, 0], "names": list(JOINTS[:5]),
                                         "gripper": {"open": 0.85, "closed": 0.05}}))
        for side in SIDES:  # each follower calibrated where it rests (raw 0): the identity
            run(tool("telecorder"), "calibrate", "--arm", f"{side}_follower", "--port", fp[side], "--ids", "1-6",
                "--pose-file", str(pose_file), extra_env=env, check=True, timeout=60)
            assert (tmp_path / f"config/telecorder/calibration/{side}_follower.json").is_file()
        # Someone puts each (limp) follower near its leader, 0.1 rad off on every arm joint.
        for side, emu in followers.items():
            for sid, rad in zip(IDS6, poses[side], strict=True):
                emu.set_position(sid, rad + (0.1 if sid < 6 else 0.0))
        common = ["--device", "leader_arm", "--robot", "dynamixel",
                  "--leader-port", f"left={lp['left']},right={lp['right']}",
                  "--follower-port", f"left={fp['left']}, right={fp['right']}",
                  "--leader-calibration", f"left={leader_cals['left']},right={leader_cals['right']}",
                  "--episodes", "1", "--episode-time", "2", "--reset-time", "0"]

        # The right leader's elbow is 0.8 rad off: the recording must not start, and the message names that arm.
        hands["right"].pose[3] = poses["right"][2] + 0.8
        refused = run(tool("collect"), *common, "--out", str(tmp_path / "refused"), extra_env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        text = " ".join(refused.stderr.split())
        assert "right leader arm" in text and "on joint 'right_elbow_flex'" in text, text
        assert "Traceback" not in refused.stderr
        hands["right"].pose[3] = poses["right"][2]

        run(tool("collect"), *common, "--out", str(tmp_path / "ok"), extra_env=env, check=True)
        with followers["left"].lock, followers["right"].lock:
            final = {side: np.array([emu.servos[i].position_rad for i in IDS6]) for side, emu in followers.items()}
    finally:
        for emu in (*leaders.values(), *followers.values()):
            emu.stop()
    ds, eps = _episodes(tmp_path / "ok")
    ep = eps[0]
    assert ds.info.robot_type == "dynamixel_bimanual"
    assert list(ds.info.features["observation.velocity"].names) == NAMES
    state = ep.data["observation.state"]
    assert state.shape[1] == 12
    for k, side in enumerate(SIDES):
        np.testing.assert_allclose(state[-1, 6 * k:6 * k + 5], poses[side][:5], atol=0.03)
        np.testing.assert_allclose(final[side][:5], poses[side][:5], atol=0.03)
    # Ramped in, never jumped: no command moves a joint more than the per-tick limit.
    assert np.abs(np.diff(ep.data["action"], axis=0)).max() <= 0.25 + 1e-6
    for side_counters in ep.metadata["comm_errors"].values():
        assert set(_per_arm_counters(side_counters)) == set(SIDES)


@pytest.mark.slow
def test_emulated_follower_pair_records_two_episodes(tmp_path):
    """--robot dynamixel --bimanual --emulate: four emulated buses; the second episode starts where the
    first left the (not reset) followers, so the operator takes each leader back to it first."""
    out = tmp_path / "pair"
    run(tool("collect"), "--device", "leader_arm", "--emulate", "--robot", "dynamixel", "--bimanual",
        "--episodes", "2", "--episode-time", "4", "--reset-time", "0", "--seed", "1", "--out", str(out), check=True)
    ds, eps = _episodes(out)
    assert ds.info.robot_type == "emulated_bimanual" and ds.info.cameras == []
    assert list(ds.info.features["action"].names) == NAMES
    for ep in eps:
        state, action = ep.data["observation.state"], ep.data["action"]
        assert action.shape[1] == 12
        assert np.ptp(action[:, 0:5], axis=0).max() > 0.2 and np.ptp(action[:, 6:11], axis=0).max() > 0.2
        arms = [np.r_[0:5], np.r_[6:11]]
        for idx in arms:
            err = np.abs(state[1:, idx] - action[:-1, idx])
            assert np.percentile(err, 95) < 0.05, f"tracking error p95 {np.percentile(err, 95):.3f} rad"
        for side in ("robot", "teleop"):
            arms_counters = _per_arm_counters(ep.metadata["comm_errors"][side])
            assert set(arms_counters) == set(SIDES)
            assert all(c["failed_cycles"] == 0 for c in arms_counters.values())
    assert run(tool("telecorder"), "doctor", str(out)).returncode == 0


@pytest.mark.slow
def test_kinesthetic_on_two_emulated_arms(tmp_path):
    out = tmp_path / "kin"
    run(tool("collect"), "--device", "kinesthetic", "--emulate", "--robot", "dynamixel", "--bimanual",
        "--episodes", "1", "--episode-time", "3", "--reset-time", "0", "--out", str(out), check=True)
    ds, eps = _episodes(out)
    ep = eps[0]
    assert ds.info.robot_type == "emulated_bimanual"
    assert "next measured" in ds.info.features["action"].unit
    state, action = ep.data["observation.state"], ep.data["action"]
    assert state.shape[1] == 12
    np.testing.assert_array_equal(action[:-1], state[1:])
    # Each hand moves its own arm, differently.
    assert np.ptp(state[:, 0:5], axis=0).max() > 0.05 and np.ptp(state[:, 6:11], axis=0).max() > 0.05
    assert np.abs(state[:, 0:5] - state[:, 6:11]).max() > 0.05
    assert set(_per_arm_counters(ep.metadata["comm_errors"]["robot"])) == set(SIDES)


@pytest.mark.parametrize(("args", "message"), [
    (["--leader-port", "lft=/dev/ttyUSB0,right=/dev/ttyUSB1"],
     "--leader-port 'lft=/dev/ttyUSB0,right=/dev/ttyUSB1': 'lft' is not an arm (left or right)"),
    (["--leader-port", "left=/dev/ttyUSB0,left=/dev/ttyUSB1"], "--leader-port 'left=/dev/ttyUSB0,left=/dev/ttyUSB1': "
                                                               "the left arm is named twice"),
    (["--follower-port", "left=,right=/dev/ttyUSB1"], "--follower-port 'left=,right=/dev/ttyUSB1': the left arm has "
                                                       "no value"),
    (["--leader-port", "/dev/ttyUSB0,/dev/ttyUSB1"],
     "two values need their arms, e.g. --leader-port left=/dev/ttyUSB0,right=/dev/ttyUSB1"),
    (["--leader-port", "left=/dev/ttyUSB0,right"], "'right' is not ARM=VALUE"),
    (["--leader-port", "/dev/ttyUSB0", "--robot", "sim", "--scene", "bimanual"],
     "--leader-port /dev/ttyUSB0 names one arm, and there are two (--scene bimanual)"),
    (["--leader-port", "left=/dev/ttyUSB0", "--robot", "sim", "--scene", "bimanual"],
     "needs --leader-port left=PORT,right=PORT"),
    (["--leader-calibration", "leader.json", "--emulate", "--robot", "sim", "--scene", "bimanual"],
     "--leader-calibration leader.json names one arm, and there are two"),
    (["--bimanual", "--emulate", "--robot", "sim"], "two leader arms drive 12 joints, and the follower takes 6"),
    (["--device", "keyboard", "--robot", "dynamixel", "--follower-port", "left=/dev/a,right=/dev/b"],
     "--follower-port: two Dynamixel arms are driven by --device leader_arm or kinesthetic"),
])
def test_per_arm_flags_are_checked_before_any_device_opens(tmp_path, args, message):
    if "sim" in args:
        pytest.importorskip("mujoco")
    cmd = ["--device", "leader_arm", *args] if "--device" not in args else args
    proc = run(tool("collect"), *cmd, "--out", str(tmp_path / "x"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert not (tmp_path / "x").exists()


def test_arm_spec_parsing():
    from telecorder.collect.devices.bimanual import arm_spec

    assert arm_spec("--leader-port", " left=/dev/ttyUSB0 , right=/dev/serial/by-id/usb-FTDI_x-if00-port0") == {
        "left": "/dev/ttyUSB0", "right": "/dev/serial/by-id/usb-FTDI_x-if00-port0"}
    assert arm_spec("--leader-port", "right=/dev/ttyUSB1") == {"right": "/dev/ttyUSB1"}
    assert arm_spec("--leader-port", "/dev/ttyUSB0") is None  # one arm: today's meaning
    assert arm_spec("--leader-calibration", "./cal=v2.json") is None  # a path, not an arm
    assert arm_spec("--leader-port", None) is None


_TWO_ARM_DRIFT = '''
import numpy as np
from telecorder.policies import Policy, PolicySpec

class Drift(Policy):
    """Turns both bases away from wherever the arms are: strays from any handover."""

    spec = PolicySpec(action_dim=12, horizon=10)

    def predict(self, observation):
        chunk = np.repeat(np.asarray(observation["state"][-1], dtype=np.float64)[None], 10, axis=0)
        chunk[:, 0] += 1.0
        chunk[:, 6] -= 1.0
        return chunk

def drift():
    return Drift()
'''


@pytest.mark.slow
def test_moving_either_leader_takes_over_from_a_two_arm_policy(tmp_path):
    pytest.importorskip("mujoco")
    (tmp_path / "two_arm_policies.py").write_text(_TWO_ARM_DRIFT)
    out = tmp_path / "takeover"
    run(tool("collect"), "--device", "policy", "--policy", "two_arm_policies:drift", "--intervene", "leader_arm",
        "--emulate", "--robot", "sim", "--scene", "bimanual", "--sim-cameras", "none", "--episodes", "1",
        "--episode-time", "12", "--reset-time", "0", "--seed", "3", "--out", str(out), check=True,
        extra_env={"PYTHONPATH": str(tmp_path)})
    rec = _records(out)[0]
    assert rec["interventions"] == 1 and rec["human_steps"] > 0 and rec["policy_steps"] > 0
    assert set(_per_arm_counters(rec["comm_errors"]["teleop"])) == set(SIDES)
    assert rec["success"], "the emulated two-handed operator finishes the handover after taking over"
