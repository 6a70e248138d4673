"""Leader-arm and kinesthetic recording end to end: real dynamixel_sdk, our bus emulator, the sim follower."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import run, tool

pytest.importorskip("dynamixel_sdk")
pytest.importorskip("mujoco")

from telecorder.datasets import Dataset

SMALL = ["--sim-cameras", "front", "--camera-size", "96x72", "--reset-time", "0"]


def _episodes(out):
    ds = Dataset.open(out)
    eps = []
    for reader in ds:
        with reader:
            eps.append(reader.load())
    return ds, eps


@pytest.mark.slow
def test_leader_arm_drives_sim_follower(tmp_path):
    out = tmp_path / "leader"
    proc = run(tool("collect"), "--device", "leader_arm", "--emulate", "--robot", "sim", "--episodes", "2",
               "--episode-time", "4", *SMALL, "--out", str(out), check=True)
    assert "2 episode(s) saved" in proc.stdout
    ds, eps = _episodes(out)
    assert ds.info.robot_type == "telecorder_sim_arm"
    for ep in eps:
        assert ep.metadata["device"] == "leader_arm"
        state, action = ep.data["observation.state"], ep.data["action"]
        assert len(ep) == 120
        # The leader moves (the scripted hand), and the follower tracks the commands it is sent.
        assert np.ptp(action[:, :5], axis=0).max() > 0.3
        lag = 3  # position servos trail their targets by a few ticks
        err = np.abs(state[lag:, :5] - action[:-lag, :5])
        assert np.percentile(err, 95) < 0.12, f"tracking error p95 {np.percentile(err, 95):.3f} rad"
        assert ep.metadata["comm_errors"]["teleop"]["timeouts"] == 0
    assert run(tool("telecorder"), "doctor", str(out)).returncode == 0


@pytest.mark.slow
def test_lossy_leader_bus_still_records_and_counts_errors(tmp_path):
    out = tmp_path / "lossy"
    run(tool("collect"), "--device", "leader_arm", "--emulate", "--emulate-drop-rate", "0.05", "--episodes", "1",
        "--episode-time", "3", *SMALL, "--seed", "2", "--out", str(out), check=True)
    _, eps = _episodes(out)
    errors = eps[0].metadata["comm_errors"]["teleop"]
    assert errors["timeouts"] > 0 and errors["retries"] > 0, errors
    rec = json.loads((out / "meta/episodes.jsonl").read_text().splitlines()[0])
    assert rec["comm_errors"]["teleop"]["timeouts"] == errors["timeouts"]


@pytest.mark.slow
def test_dead_leader_servo_is_a_clear_error_and_earlier_episode_survives(tmp_path):
    out = tmp_path / "dead"
    proc = run(tool("collect"), "--device", "leader_arm", "--emulate", "--emulate-dead", "4:5.5", "--episodes", "3",
               "--episode-time", "2.5", *SMALL, "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "servo(s) 4 stopped answering" in proc.stderr.replace("\n", " ")
    ds = Dataset.open(out)
    assert len(ds) >= 1
    assert run(tool("telecorder"), "doctor", str(out)).returncode == 0


def test_leader_arm_without_port_says_how_to_find_it(tmp_path):
    proc = run(tool("collect"), "--device", "leader_arm", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2
    text = proc.stderr.replace("\n", " ")
    assert "--leader-port" in text and "--emulate" in text and "/dev/serial/by-id" in text


@pytest.mark.slow
def test_kinesthetic_on_emulated_arm(tmp_path):
    out = tmp_path / "kin"
    run(tool("collect"), "--device", "kinesthetic", "--emulate", "--robot", "dynamixel", "--episodes", "1",
        "--episode-time", "3", "--reset-time", "0", "--out", str(out), check=True)
    ds, eps = _episodes(out)
    ep = eps[0]
    assert ds.info.cameras == []
    assert "next measured" in ds.info.features["action"].unit
    state, action = ep.data["observation.state"], ep.data["action"]
    np.testing.assert_array_equal(action[:-1], state[1:])
    np.testing.assert_array_equal(action[-1], state[-1])
    assert np.ptp(state[:, :5], axis=0).max() > 0.05, "the hand moved the arm"
    assert run(tool("telecorder"), "doctor", str(out)).returncode == 0
