"""``telecorder replay``: recorded actions back through the control loop, on the sim and the emulated bus.

The drift report is a fidelity check: a clean replay of a simulated episode in its restored
scene reproduces the recorded states up to float32 rounding, and an action column shifted
by one tick or recorded in other units drifts by orders of magnitude more. Comparisons are
relative (corrupted vs clean) or against physical bounds, never against time.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from test_cli import run, tool

pytest.importorskip("mujoco")

from rich.console import Console

from telecorder.datasets import Dataset
from telecorder.errors import TelecorderError
from telecorder.replay.player import ReplayConfig, replay

EPISODE = 1
STATE_NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two scripted pick-and-lift episodes on simulated time, the cube pose recorded too."""
    out = tmp_path_factory.mktemp("replay") / "clean"
    run(tool("collect"), "--device", "scripted", "--robot", "sim", "--episodes", "2", "--episode-time", "8",
        "--sim-cameras", "front", "--camera-size", "64x48", "--no-realtime", "--env-state", "--seed", "3",
        "--out", str(out), check=True)
    return out


def _copy(src, dst, edit=None, attrs_edit=None):
    shutil.copytree(src, dst)
    with h5py.File(dst / f"episodes/episode_{EPISODE:06d}.h5", "r+") as f:
        if edit is not None:
            f["action"][:] = edit(f["action"][:])
        if attrs_edit is not None:
            attrs_edit(f)
    return dst


def _replay(dataset, **options):
    """The report of a replay on simulated time, in this process (the CLI's own tests run it as a command)."""
    return replay(ReplayConfig(dataset=dataset, episode=EPISODE, realtime=False, **options), Console(file=io.StringIO()))


def _replay_cli(dataset, *extra, check=True):
    proc = run(tool("telecorder"), "replay", str(dataset), "--episode", str(EPISODE), "--no-realtime", "--json",
               *extra, check=check)
    return json.loads(proc.stdout) if check else proc


def _recorded(dataset, name="observation.state"):
    ds = Dataset.open(dataset)
    with ds.episode(EPISODE) as ep:
        return ep.numeric(name), ep.attrs


def test_episodes_store_their_starting_scene(recorded):
    state, attrs = _recorded(recorded)
    scene = attrs["sim_scene"]
    assert isinstance(scene["seed"], int) and len(scene["qpos"]) == 14 and len(scene["ctrl"]) == 6
    # The stored arm joints are the first recorded state (the gripper is stored normalized).
    np.testing.assert_allclose(np.asarray(scene["qpos"])[:5], state[0, :5], atol=1e-6)
    cube, _ = _recorded(recorded, "observation.environment_state")
    np.testing.assert_allclose(np.asarray(scene["qpos"])[-7:-4], cube[0, :3], atol=1e-6)


def test_clean_replay_reproduces_states_and_success(recorded):
    report = _replay(recorded)
    state, attrs = _recorded(recorded)
    assert report["steps"] == report["recorded_steps"] == len(state)
    assert "restored from the episode's recorded simulator state" in report["scene"]
    drift = report["drift"]["observation.state"]
    assert drift["names"] == STATE_NAMES
    # float32 storage of actions and states is the only difference: far below a thousandth of a radian.
    assert max(drift["max"]) < 1e-4, drift
    assert max(report["drift"]["observation.environment_state"]["max"]) < 1e-4
    assert attrs["success"] is True
    assert report["success"] == {"recorded": True, "replayed": True}
    assert report["out"] is None and not report["interrupted"]


def test_shifted_and_rescaled_actions_show_up_as_drift(recorded, tmp_path):
    clean = max(_replay(recorded)["drift"]["observation.state"]["max"])
    # The action column one tick late: action[t] is what was sent at t - 1.
    late = _copy(recorded, tmp_path / "late", edit=lambda a: np.concatenate([a[:1], a[:-1]]))
    # Arm joints written in degrees where the robot takes radians.
    degrees = _copy(recorded, tmp_path / "deg", edit=lambda a: np.concatenate([np.rad2deg(a[:, :5]), a[:, 5:]], 1))
    late_drift = _replay(late)["drift"]["observation.state"]
    deg_report = _replay(degrees)
    deg_drift = deg_report["drift"]["observation.state"]
    assert max(late_drift["max"]) > 0.01 and max(late_drift["max"]) > 1000 * max(clean, 1e-7), late_drift
    assert max(deg_drift["p50"]) > 0.1 and max(deg_drift["max"]) > 1000 * max(clean, 1e-7), deg_drift
    # The joints the expert moves most drift most when the commands come a tick late.
    moved = np.ptp(_recorded(recorded)[0], axis=0)
    assert np.argmax(late_drift["p95"][:5]) in np.argsort(moved[:5])[-3:]
    assert deg_report["success"]["replayed"] is False
    # Arm steps in degrees are far beyond a teleop step: they are clipped and the report says why.
    assert any("(wrong units or damaged data?)" in n and "shoulder_pan" in n for n in deg_report["notes"]), deg_report["notes"]


def test_table_report_and_nothing_written(recorded, tmp_path):
    before = sorted(p.name for p in recorded.parent.iterdir())
    proc = run(tool("telecorder"), "replay", str(recorded), "--episode", "0", "--no-realtime", check=True)
    text = proc.stdout
    assert "drift of observation.state" in text and "shoulder_lift" in text and "p95" in text
    assert "task success: recorded yes, replayed yes" in text
    assert sorted(p.name for p in recorded.parent.iterdir()) == before
    assert len(Dataset.open(recorded)) == 2


def test_out_records_the_replay_as_a_dataset(recorded, tmp_path):
    out = tmp_path / "replayed"
    report = _replay_cli(recorded, "--out", str(out))
    assert report["out"] == str(out)
    ds = Dataset.open(out)
    assert len(ds) == 1 and ds.info.cameras == ["front"]
    assert ds.info.features["observation.images.front"].shape == (48, 64, 3)
    with ds.episode(0) as ep:
        attrs, state, action = ep.attrs, ep.numeric("observation.state"), ep.numeric("action")
        assert len(ep) == report["recorded_steps"]
    assert attrs["device"] == "replay" and attrs["replay_of"] == {"dataset": str(recorded), "episode": EPISODE}
    rec_state, _ = _recorded(recorded)
    rec_action, _ = _recorded(recorded, "action")
    np.testing.assert_allclose(state, rec_state, atol=1e-4)
    np.testing.assert_allclose(action, rec_action, atol=1e-6)
    assert run(tool("telecorder"), "doctor", str(out)).returncode == 0


def test_old_episodes_replay_with_what_they_have(recorded, tmp_path):
    def drop_scene(f):
        del f.attrs["sim_scene"]

    # No simulator state but the cube's recorded pose: the cube is put back, the arm is at home.
    cube_only = _copy(recorded, tmp_path / "cube_only", attrs_edit=drop_scene)
    report = _replay(cube_only)
    assert "cube placed at its first recorded pose" in report["scene"]
    assert max(report["drift"]["observation.state"]["p95"]) < 0.01
    assert report["success"]["replayed"] is True

    # Neither: replayed anyway, and the report says the scene could not be restored.
    bare = tmp_path / "bare"
    run(tool("telecorder"), "edit", "remove-feature", str(cube_only), "observation.environment_state",
        "--out", str(bare), check=True)
    report = _replay(bare)
    assert report["scene"].startswith("not restored")
    assert "observation.environment_state" not in report["drift"]


def test_mismatched_action_space_is_refused(recorded, tmp_path):
    renamed = _copy(recorded, tmp_path / "renamed")
    info = json.loads((renamed / "meta/info.json").read_text())
    action = info["features"]["action"]
    action["names"] = ["j1", "j2", "j3", "j4", "j5", "gripper"]
    (renamed / "meta/info.json").write_text(json.dumps(info))
    proc = _replay_cli(renamed, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert "actions are for joints ['j1'" in err and "replay it on the robot it was recorded with" in err

    action["names"] = STATE_NAMES
    action["unit"] = "end effector delta in metres"
    (renamed / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(TelecorderError, match="not absolute joint positions"):
        _replay(renamed)


def test_start_check_refuses_an_arm_far_from_the_recorded_start(recorded, tmp_path):
    def move_start(f):
        f["observation/state"][0, 2] += 1.0

    far = _copy(recorded, tmp_path / "far", attrs_edit=move_start)
    proc = _replay_cli(far, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "differ by 1.00 rad on joint 'elbow_flex'" in " ".join(proc.stderr.split())
    # A looser tolerance lets it start; the follower then ramps from where it stands.
    report = _replay(far, start_tolerance=1.5)
    assert report["steps"] == report["recorded_steps"]


@pytest.mark.slow
def test_replay_on_the_emulated_dynamixel_arm(recorded, tmp_path):
    """Real dynamixel_sdk over a pseudo-terminal to the bus emulator, at the recorded 30 Hz."""
    pytest.importorskip("dynamixel_sdk")
    out = tmp_path / "dxl"
    proc = run(tool("telecorder"), "replay", str(recorded), "--episode", str(EPISODE), "--robot", "dynamixel",
               "--emulate", "--json", "--out", str(out), check=True)
    report = json.loads(proc.stdout)
    assert report["robot"].startswith("the emulated Dynamixel arm")
    assert report["steps"] == report["recorded_steps"]
    assert report["scene"] is None and report["success"]["replayed"] is None
    ds = Dataset.open(out)
    assert ds.info.robot_type == "emulated_arm" and ds.info.cameras == []
    with ds.episode(0) as ep:
        action, state = ep.numeric("action"), ep.numeric("observation.state")
    rec_action, _ = _recorded(recorded, "action")
    rec_state, _ = _recorded(recorded)
    # The emulated arm starts at the sim's home pose to within a servo tick, so the ramp has almost
    # nothing to take out: the bus carried the recorded actions.
    np.testing.assert_allclose(action, rec_action, atol=5e-3)
    # Servos lag their goals (first-order, 40 ms) where the simulated arm did not: drift, but bounded
    # by how far the recorded arm moved.
    drift = report["drift"]["observation.state"]
    assert max(drift["p95"][:5]) < np.ptp(rec_state[:, :5], axis=0).max()
    np.testing.assert_allclose(state[-1, :5], rec_action[-1, :5], atol=0.05)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_nothing(recorded, tmp_path):
    out = tmp_path / "interrupted"
    env_cmd = [tool("telecorder"), "replay", str(recorded), "--episode", str(EPISODE), "--json", "--out", str(out)]
    proc = subprocess.Popen(env_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        # The episode's unfinished file appears right before the replay's first tick; the episode takes 5 s.
        def started():
            return (out / "episodes").is_dir() and any((out / "episodes").iterdir())

        deadline = time.monotonic() + 60
        while not started() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert started(), proc.communicate()
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    report = json.loads(stdout)
    assert report["interrupted"] and "stopped by Ctrl-C; nothing was recorded" in report["notes"]
    assert 0 < report["steps"] < report["recorded_steps"]
    assert len(Dataset.open(out)) == 0


def test_help_and_bad_arguments(tmp_path):
    proc = run(tool("telecorder"), "replay", "--help", check=True)
    assert "examples:" in proc.stdout and "--robot dynamixel --emulate" in proc.stdout
    proc = run(tool("telecorder"), "replay", str(tmp_path / "nowhere"), "--episode", "0")
    assert proc.returncode == 2 and "nowhere" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(tool("telecorder"), "replay", str(tmp_path), "--episode", "0", "--robot", "dynamixel")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_vr_gripper_snap_replays_as_recorded(tmp_path):
    """A VR trigger snaps the gripper shut in one tick, faster than teleop's step limit: the replay
    allows the recording's own steps (and says so), so the gripper does not drift."""
    from test_eef_teleop import _circle_stream

    stream = tmp_path / "s.jsonl"
    _circle_stream(stream, end=2.0, circle_s=1.0, release_at=1.8, trigger_at=1.0)
    out = tmp_path / "vr"
    run(tool("collect"), "--device", "vr", "--pose-stream", str(stream), "--robot", "sim", "--episodes", "1",
        "--episode-time", "2", "--sim-cameras", "none", "--no-realtime", "--out", str(out), check=True)
    ds = Dataset.open(out)
    with ds.episode(0) as ep:
        assert np.abs(np.diff(ep.numeric("action")[:, 5])).max() > 0.9
    proc = run(tool("telecorder"), "replay", str(out), "--episode", "0", "--no-realtime", "--json", check=True)
    report = json.loads(proc.stdout)
    assert max(report["drift"]["observation.state"]["max"]) < 1e-4, report["drift"]
    assert any("moves the gripper by up to 1 per tick" in n for n in report["notes"]), report["notes"]


def test_replays_a_lerobot_conversion(recorded, tmp_path):
    """A LeRobot copy keeps the episode metadata, scene included, so it replays as the original."""
    lerobot = tmp_path / "lerobot"
    run(tool("telecorder"), "convert", str(recorded), str(lerobot), "--to", "lerobot", check=True)
    report = _replay(lerobot)
    assert report["steps"] == report["recorded_steps"] and report["scene"].startswith("restored")
    assert max(report["drift"]["observation.state"]["max"]) < 1e-4
    assert report["success"] == {"recorded": True, "replayed": True}


def test_half_speed_holds_each_action_twice_as_long(recorded, tmp_path):
    out = tmp_path / "slow"
    report = _replay(recorded, speed=0.5, out=out)
    assert report["fps"] == 15 and report["steps"] == report["recorded_steps"]
    assert Dataset.open(out).info.fps == 15
    # The arm gets twice the time to reach each target: it runs the same path a little closer to its
    # targets, so the states differ from the recording by tracking error, not by a different motion.
    drift = report["drift"]["observation.state"]
    assert 1e-4 < max(drift["max"]) < 0.1, drift
    assert report["success"]["replayed"] is True
    with pytest.raises(TelecorderError, match="--speed 2"):
        _replay(recorded, speed=2.0)


def test_a_cubes_task_episode_replays_in_its_scene_with_its_task(tmp_path):
    # The replay builds the scene the episode names (not the default one), restores all three cubes
    # and the bin, and judges success by the episode's task (a stack, not the default lift).
    out = tmp_path / "cubes"
    run(tool("collect"), "--device", "scripted", "--robot", "sim", "--scene", "cubes", "--tasks",
        "put the red cube on the blue cube;put the green cube in the bin", "--episodes", "2",
        "--episode-time", "15", "--sim-cameras", "none", "--no-realtime", "--env-state", "--seed", "5",
        "--out", str(out), check=True)
    ds = Dataset.open(out)
    with ds.episode(EPISODE) as ep:
        attrs = dict(ep.attrs)
    assert attrs["task_id"] == "bin_green" and attrs["success"] is True
    report = _replay(out)
    assert "restored from the episode's recorded simulator state" in report["scene"]
    assert report["success"] == {"recorded": True, "replayed": True}
    assert max(report["drift"]["observation.environment_state"]["max"]) < 1e-4
