"""End-effector teleoperation end to end on the sim: a VR pose stream and a real SDL virtual gamepad."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from rich.console import Console
from test_cli import run, tool

pytest.importorskip("mujoco")

from telecorder.collect.devices.vr import AXIS_PRESETS, ControllerSample, write_pose_stream
from telecorder.collect.factory import DeviceConfig, make_devices
from telecorder.collect.session import RecordingSession, SessionConfig
from telecorder.datasets import Dataset

FPS = 30.0
RADIUS = 0.04


def _circle_stream(path, *, clutch_at=0.5, circle_s=3.0, release_at=3.6, end=4.5, trigger_at=None):
    """Controller held still, then clutched and moved on a circle (OpenXR horizontal plane), then released.

    From ``trigger_at`` on, the trigger is pulled all the way (gripper closed).
    """
    samples = []
    for k in range(int(end * 90)):
        t = k / 90
        pose = np.eye(4)
        pose[:3, 3] = [0.1, 1.2, -0.3]
        if t >= clutch_at:
            a = 2 * np.pi * min(t - clutch_at, circle_s) / circle_s
            pose[0, 3] += RADIUS * np.sin(a)
            pose[2, 3] += -RADIUS * (1 - np.cos(a))
        if t >= release_at:
            pose[1, 3] += 0.2  # moved after release: must not move the robot
        squeeze = 1.0 if clutch_at <= t < release_at else 0.0
        trigger = 1.0 if trigger_at is not None and t >= trigger_at else 0.0
        samples.append(ControllerSample(t=t, hand="right", pose=pose, squeeze=squeeze, trigger=trigger))
    write_pose_stream(path, samples)
    return samples


def _circle_targets(t, cmd, clutch_at=0.5, circle_s=3.0, release_at=3.6):
    """Ticks well inside the clutched circle, and where the target should be at each: the controller's
    circle mapped into the robot frame (OpenXR -Z forward = robot +x), from the anchor before the clutch."""
    anchor = cmd[t < clutch_at - 0.05][-1, :3]
    during = (t > clutch_at + 0.1) & (t < release_at - 0.2)
    a = 2 * np.pi * np.clip(t[during] - clutch_at, 0, circle_s) / circle_s
    ctrl = np.stack([RADIUS * np.sin(a), np.zeros_like(a), -RADIUS * (1 - np.cos(a))], axis=1)
    return during, anchor + ctrl @ AXIS_PRESETS["openxr_to_robot"].T


def _eef_positions(ds_path):
    from telecorder.sim import Kinematics, SimEnv

    ds = Dataset.open(ds_path)
    env = SimEnv()
    kin = Kinematics(env.model)
    with ds.episode(ds.episode_indices[0]) as ep:
        state = ep.numeric("observation.state").astype(np.float64)
        eef_cmd = ep.numeric("action_eef").astype(np.float64)
        t = ep.timestamps()
    measured = np.array([kin.fk(np.delete(s, env.gripper_index))[0] for s in state])
    return t, measured, eef_cmd


@pytest.mark.slow
@pytest.mark.parametrize("realtime", [True, False], ids=["wall-clock", "simulated-time"])
def test_vr_pose_stream_moves_the_eef_along_the_mapped_path(tmp_path, realtime):
    # On simulated time the stream replays by the simulation's clock: the same path, just faster.
    stream = tmp_path / "circle.jsonl"
    _circle_stream(stream)
    robot, teleop, cameras = make_devices(DeviceConfig(device="vr", pose_stream=stream, sim_cameras=[], fps=FPS,
                                                       realtime=realtime))
    cfg = SessionConfig(out=tmp_path / "vr", episodes=1, episode_time_s=4.2, reset_time_s=0, fps=FPS,
                        realtime=realtime)
    RecordingSession(robot, teleop, cameras, cfg, console=Console(quiet=True)).run()
    t, measured, cmd = _eef_positions(tmp_path / "vr")

    before = t < 0.45
    assert np.ptp(cmd[before, :3], axis=0).max() < 1e-6, "no motion before the clutch is pressed"
    during, expected = _circle_targets(t, cmd)
    # The stream is sampled at the tick, so allow one controller sample (1/90 s) of lag along the path.
    assert np.abs(cmd[during, :3] - expected).max() < 2 * np.pi * RADIUS / 3.0 / 90 * 2 + 1e-4
    after = t > 3.7
    assert np.ptp(cmd[after, :3], axis=0).max() < 1e-6, "no motion while the clutch is released"
    # The arm follows its commanded EEF (IK + position servos), one tick behind.
    err = np.linalg.norm(measured[1:][during[:-1]] - cmd[:-1][during[:-1], :3], axis=1)
    assert np.percentile(err, 95) < 0.01, f"EEF tracking error p95 {np.percentile(err, 95) * 1000:.1f} mm"
    ik = np.array(teleop.ik_times)
    print(f"IK solve p50 {1e3 * np.median(ik):.2f} ms, p99 {1e3 * np.percentile(ik, 99):.2f} ms; "
          f"tracking p50 {1e3 * np.median(err):.2f} mm, p95 {1e3 * np.percentile(err, 95):.2f} mm, "
          f"max {1e3 * err.max():.2f} mm")
    assert run(tool("telecorder"), "doctor", str(tmp_path / "vr")).returncode == 0


def test_vr_collect_cli_with_pose_stream_and_without_runtime(tmp_path):
    stream = tmp_path / "s.jsonl"
    _circle_stream(stream, end=1.5, circle_s=0.8, release_at=1.4)
    out = tmp_path / "cli"
    run(tool("collect"), "--device", "vr", "--pose-stream", str(stream), "--robot", "sim", "--episodes", "1",
        "--episode-time", "1.5", "--sim-cameras", "front", "--camera-size", "96x72", "--reset-time", "0",
        "--out", str(out), check=True)
    info = json.loads(run(tool("telecorder"), "info", str(out), "--json", check=True).stdout)
    assert "action_eef" in info["features"] and info["features"]["action_eef"]["shape"] == [7]
    live = run(tool("collect"), "--device", "vr", "--robot", "sim", "--episodes", "1", "--out", str(tmp_path / "x"),
               "--sim-cameras", "none")
    assert live.returncode == 2 and "XR_RUNTIME_JSON" in live.stderr.replace("\n", " ")


@contextlib.contextmanager
def pad_stick_forward(monkeypatch):
    """A real SDL virtual gamepad with its left stick held forward (+x), the rest centred, both triggers released."""
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    import pygame
    from test_gamepad import AXIS_MIN, M, attach_virtual_pad

    pygame.display.init()
    pygame.joystick.init()
    try:
        pad = attach_virtual_pad(at_rest=False)
    except pytest.skip.Exception:
        pygame.quit()
        raise
    try:
        for axis in (M.left_x, M.right_x, M.right_y):
            pad.axis(axis, 0)
        pad.axis(M.left_trigger, AXIS_MIN)
        pad.axis(M.right_trigger, AXIS_MIN)
        pad.axis(M.left_y, -32768)  # stick pushed forward: +x
        yield pad
    finally:
        pad.detach()
        pygame.quit()


def check_pad_moved_forward(cmd, measured):
    # Full deflection is 0.15 m/s forward: the commanded EEF advances along +x, the rest holds.
    dx = cmd[-1, 0] - cmd[0, 0]
    assert 0.15 * 1.2 < dx < 0.15 * 1.6, dx
    assert np.abs(cmd[-1, 1:3] - cmd[0, 1:3]).max() < 0.01
    assert measured[-1, 0] - measured[0, 0] > 0.15


@pytest.mark.slow
def test_gamepad_drives_the_sim_arm(tmp_path, monkeypatch):
    with pad_stick_forward(monkeypatch):
        robot, teleop, cameras = make_devices(DeviceConfig(device="gamepad", sim_cameras=[], fps=FPS))
        cfg = SessionConfig(out=tmp_path / "pad", episodes=1, episode_time_s=1.5, reset_time_s=0, fps=FPS)
        RecordingSession(robot, teleop, cameras, cfg, console=Console(quiet=True)).run()
    _, measured, cmd = _eef_positions(tmp_path / "pad")
    check_pad_moved_forward(cmd, measured)
    assert run(tool("telecorder"), "doctor", str(tmp_path / "pad")).returncode == 0
