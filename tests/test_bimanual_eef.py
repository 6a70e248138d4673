"""End-effector teleop of the two-arm scene: a VR hand per arm, and one pad or keyboard switched between arms."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_cli import run, tool

pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")

from telecorder.collect.devices.vr import ControllerSample, write_pose_stream
from telecorder.collect.factory import DeviceConfig, make_devices
from telecorder.collect.key_bindings import (
    GAMEPAD,
    KEYBOARD,
    KEYBOARD_ARM_KEY,
    PAD_ARM_BUTTON,
    PAD_SESSION_BUTTONS,
    VR,
    XBOX_BUTTONS,
)
from telecorder.datasets import Dataset
from telecorder.sim import Kinematics, SimEnv
from telecorder.sim.scenes import scene_model

FPS = 30.0
SIDES = ("left", "right")
STEP = 0.04  # metres each hand moves while clutched


@pytest.fixture(scope="module")
def fk():
    """Each arm's end-effector position from a 12-D state (left_* then right_*), by its own chain."""
    env = SimEnv(scene_model("bimanual"))
    kins = {side: Kinematics(env.model, site=f"{side}_ee_site",
                             joints=[n for n in env.joint_names if n.startswith(side) and not n.endswith("gripper")])
            for side in SIDES}
    cols = {side: [env.joint_names.index(n) for n in kins[side].joint_names] for side in SIDES}

    def positions(states: np.ndarray) -> dict[str, np.ndarray]:
        return {side: np.array([kins[side].fk(np.asarray(s, np.float64)[cols[side]])[0] for s in states])
                for side in SIDES}

    return positions


def _two_hand_stream(path):
    """Left hand: clutched at 0.3 s, raised STEP (OpenXR +Y = robot up), trigger pulled from 1.5 s.
    Right hand: clutched at 0.6 s, pushed STEP forward (OpenXR -Z = robot +x), trigger released."""
    samples = []
    for k in range(int(2.4 * 90)):
        t = k / 90
        for hand, clutch_at, axis, sign in (("left", 0.3, 1, +1), ("right", 0.6, 2, -1)):
            pose = np.eye(4)
            pose[:3, 3] = [0.2 if hand == "right" else -0.2, 1.2, -0.3]
            held = t >= clutch_at
            if held:
                pose[axis, 3] += sign * STEP * min(t - clutch_at, 0.8) / 0.8
            trigger = 1.0 if hand == "left" and t >= 1.5 else 0.0
            samples.append(ControllerSample(t=t, hand=hand, pose=pose, squeeze=1.0 if held else 0.0,
                                            trigger=trigger))
    write_pose_stream(path, samples)


@pytest.mark.slow
def test_vr_pose_stream_drives_each_arm_by_its_own_hand(tmp_path, fk):
    stream = tmp_path / "hands.jsonl"
    _two_hand_stream(stream)
    out = tmp_path / "vr"
    run(tool("collect"), "--no-realtime", "--device", "vr", "--pose-stream", str(stream), "--robot", "sim",
        "--scene", "bimanual", "--episodes", "1", "--episode-time", "2.4", "--sim-cameras", "none",
        "--reset-time", "0", "--out", str(out), check=True)
    info = json.loads(run(tool("telecorder"), "info", str(out), "--json", check=True).stdout)
    assert info["features"]["action_eef"]["shape"] == [14]
    ds = Dataset.open(out)
    with ds.episode(ds.episode_indices[0]) as ep:
        state = ep.numeric("observation.state").astype(np.float64)
        eef = ep.numeric("action_eef").astype(np.float64)
        t = ep.timestamps()
    pos = fk(state)
    first, last = t < 0.25, t > 2.0

    def moved(side: str) -> np.ndarray:
        return pos[side][last].mean(axis=0) - pos[side][first].mean(axis=0)

    left, right = moved("left"), moved("right")
    # Each arm followed its own hand: left up, right forward, neither the other's way.
    assert left[2] == pytest.approx(STEP, abs=0.008) and np.abs(left[:2]).max() < 0.008, left
    assert right[0] == pytest.approx(STEP, abs=0.008) and np.abs(right[1:]).max() < 0.008, right
    # The right hand's clutch came later: between the two clutches only the left target moved.
    between = (t > 0.35) & (t < 0.58)
    assert np.ptp(eef[between, 2]) > 0.005 and np.ptp(eef[between, 7:10], axis=0).max() < 1e-6
    # Each hand's trigger is its own arm's gripper: the left closed, the right stayed open.
    assert state[-1, 5] < 0.3 and state[-1, 11] > 0.9
    assert eef[-1, 6] == 0.0 and eef[-1, 13] == 1.0


def _drive(robot, teleop, ticks: int, before=None) -> tuple[np.ndarray, list[int]]:
    """Run the control loop in-process (as the recorder does, minus cameras): states and eef_arm per tick."""
    states, arms = [], []
    for k in range(ticks):
        if before is not None:
            before(k)
        obs = robot.observe()
        out = teleop.read(obs)
        robot.act(out.action)
        states.append(np.asarray(obs["observation.state"], np.float64))
        arms.append(int(out.extra["eef_arm"][0]))
    states.append(np.asarray(robot.observe()["observation.state"], np.float64))
    return np.array(states), arms


def _check_only(pos: dict[str, np.ndarray], a: int, b: int, driven: str) -> None:
    """Over ticks a..b the driven arm went forward (+x), the other held its pose."""
    held = next(s for s in SIDES if s != driven)
    assert pos[driven][b, 0] - pos[driven][a, 0] > 0.03, (driven, pos[driven][b] - pos[driven][a])
    assert np.linalg.norm(pos[held][b] - pos[held][a]) < 0.003, (held, pos[held][b] - pos[held][a])


@pytest.fixture
def pg(monkeypatch):
    pygame = pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pygame.display.init()
    yield pygame
    pygame.event.clear()
    pygame.quit()


def test_keyboard_tab_switches_the_arm_it_drives(pg, fk):
    pygame = pg

    def key(kind: int, code: int) -> None:
        pygame.event.post(pygame.event.Event(kind, key=code, mod=0, unicode="", scancode=0))

    robot, teleop, _ = make_devices(DeviceConfig(device="keyboard", scene="bimanual", sim_cameras=[], fps=FPS))
    assert [f.name for f in teleop.features()] == ["action_eef", "eef_arm"]
    robot.connect()
    teleop.connect()
    try:
        teleop.start_episode()
        tab = pygame.key.key_code(KEYBOARD_ARM_KEY)

        def script(k: int) -> None:
            if k == 0:
                key(pygame.KEYDOWN, pygame.K_w)  # held throughout: forward
            if k in (20, 45):
                key(pygame.KEYDOWN, tab)
            if k in (22, 47):
                key(pygame.KEYUP, tab)  # held two ticks: one switch per press

        states, arms = _drive(robot, teleop, 70, script)
        assert arms == [0] * 20 + [1] * 25 + [0] * 25
        assert teleop.episode_summary() == {"arm_switches": 2}
        pos = fk(states)
        # Left first; after Tab the right moves and the left holds; Tab again hands it back.
        _check_only(pos, 0, 20, "left")
        _check_only(pos, 24, 45, "right")
        _check_only(pos, 49, 70, "left")
        teleop.start_episode()  # a new episode starts on the left arm again
        assert teleop.episode_summary() == {"arm_switches": 0}
        _, arms = _drive(robot, teleop, 2)
        assert arms == [0, 0]
    finally:
        teleop.disconnect()
        robot.disconnect()


@pytest.mark.slow
def test_gamepad_right_stick_click_switches_arms_while_recording(tmp_path, monkeypatch, fk):
    from rich.console import Console
    from test_eef_teleop import pad_stick_forward
    from test_gamepad import M

    from telecorder.collect.session import RecordingSession, SessionConfig

    assert M.arm_button == XBOX_BUTTONS[PAD_ARM_BUTTON]
    with pad_stick_forward(monkeypatch) as pad:
        robot, teleop, cameras = make_devices(DeviceConfig(device="gamepad", scene="bimanual", sim_cameras=[],
                                                           fps=FPS))
        device = teleop.switch.device
        real_read, reads = device.read, [0]

        def read():
            # The click lands on the real virtual pad at a known tick; the device reads it as any press.
            reads[0] += 1
            if reads[0] == 15:
                pad.button(M.arm_button, True)
            return real_read()

        monkeypatch.setattr(device, "read", read)
        cfg = SessionConfig(out=tmp_path / "pad", episodes=1, episode_time_s=1.2, reset_time_s=0, fps=FPS)
        RecordingSession(robot, teleop, cameras, cfg, console=Console(quiet=True)).run()
    ds = Dataset.open(tmp_path / "pad")
    assert ds.info.features["action_eef"].shape == (14,) and ds.info.features["eef_arm"].shape == (1,)
    with ds.episode(ds.episode_indices[0]) as ep:
        state = ep.numeric("observation.state").astype(np.float64)
        arm = ep.numeric("eef_arm").reshape(-1)
    switch = int(np.argmax(arm == 1))
    assert switch >= 10 and arm[:switch].max() == 0 and arm[switch:].min() == 1, arm
    assert ds.records[0]["arm_switches"] == 1
    pos = fk(state)
    _check_only(pos, 0, switch, "left")
    _check_only(pos, switch + 3, len(state) - 1, "right")


def test_one_arm_scene_keeps_its_one_arm_teleop(pg):
    _, teleop, _ = make_devices(DeviceConfig(device="keyboard", sim_cameras=[], fps=FPS))
    assert type(teleop).__name__ == "EEFTeleop"
    assert [(f.name, f.shape) for f in teleop.features()] == [("action_eef", (7,))]
    _, teleop, _ = make_devices(DeviceConfig(device="vr", pose_stream=os.devnull, sim_cameras=[], fps=FPS))
    assert type(teleop).__name__ == "EEFTeleop"


def test_the_arm_key_and_button_are_free_and_advertised():
    motion = {m.key for m in KEYBOARD.motion}
    session = {k for keys in KEYBOARD.session.values() for k in keys}
    assert KEYBOARD_ARM_KEY not in motion | session
    assert PAD_ARM_BUTTON not in {*PAD_SESSION_BUTTONS.values(), "Y", "LB", "RB"}
    # The live view's key map shows them (and VR's one arm per hand).
    assert any(line.startswith("arms:  Tab") for line in KEYBOARD.map_lines())
    assert any(line.startswith(f"arms:  {PAD_ARM_BUTTON}") for line in GAMEPAD.map_lines())
    assert "each controller drives its own arm" in " ".join(VR.map_lines())


@pytest.mark.slow
def test_live_openxr_drives_each_arm_by_its_own_hand(tmp_path, fk):
    """Both controllers of a real OpenXR runtime (Monado, fed over its remote driver), as tests/test_vr_live.py."""
    pytest.importorskip("xr")
    from monado_remote import (
        Frame,
        HandState,
        monado_manifest,
        port_lock,
        runtime_env,
    )
    from test_vr_live import C0, IDLE_S, feed_collect

    def frame(left=(0.0, 0.0, 0.0), right=(0.0, 0.0, 0.0), squeeze=0.0, save=False) -> Frame:
        return Frame(left=HandState(tuple(C0 + np.array([-0.4, 0.0, 0.0]) + left), squeeze=squeeze),
                     right=HandState(tuple(C0 + np.asarray(right)), squeeze=squeeze, a=save))

    # Left hand up STEP (robot +z), right hand forward STEP (robot +x), both clutched; released; saved.
    up, forward = (0.0, STEP, 0.0), (0.0, 0.0, -STEP)
    keyframes = [(IDLE_S, frame()), (0.6, frame(squeeze=1.0)), (1.5, frame(up, forward, squeeze=1.0)),
                 (0.6, frame(up, forward)), (0.5, frame(up, forward, save=True)), (0.5, frame(up, forward))]
    with port_lock():
        env = runtime_env(monado_manifest(), "remote")
        out = tmp_path / "live"
        feeder, client, rc = feed_collect(keyframes, ["--robot", "sim", "--scene", "bimanual", "--out", str(out)], env)
    assert rc == 0, client.report()
    ds = Dataset.open(out)
    with ds.episode(ds.episode_indices[0]) as ep:
        state = ep.numeric("observation.state").astype(np.float64)
        tick_unix = float(ep.attrs["start_time_unix"]) + ep.timestamps()
    starts = feeder.started_unix
    pos = fk(state)
    before = tick_unix < starts[1]
    after = (tick_unix > starts[3] + 0.2) & (tick_unix < starts[4])
    assert before.sum() >= 3 and after.sum() >= 3, (before.sum(), after.sum())
    left = pos["left"][after].mean(axis=0) - pos["left"][before].mean(axis=0)
    right = pos["right"][after].mean(axis=0) - pos["right"][before].mean(axis=0)
    assert left[2] == pytest.approx(STEP, abs=0.008) and np.abs(left[:2]).max() < 0.008, left
    assert right[0] == pytest.approx(STEP, abs=0.008) and np.abs(right[1:]).max() < 0.008, right


def test_tab_in_the_live_window_switches_and_the_title_names_the_arm(monkeypatch):
    """Through the live view's own key handling: Tab reaches the device (not the session) and the title says which arm."""
    pygame = pytest.importorskip("pygame")
    from test_gamepad import _until

    from telecorder.collect.live_view import LiveView

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pygame.quit()
    robot, teleop, _ = make_devices(DeviceConfig(device="keyboard", scene="bimanual", sim_cameras=[], fps=FPS))
    try:
        with LiveView([], controls=KEYBOARD) as view:
            assert view.wait_open()
            view.set_title("telecorder collect (keyboard): episode 1/1 recording")
            robot.connect()
            teleop.connect()
            teleop.start_episode()
            assert view.title.endswith("episode 1/1 recording  |  driving the left arm")
            obs = robot.observe()
            assert teleop.read(obs).extra["eef_arm"][0] == 0
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_TAB, mod=0, unicode="\t", scancode=0))
            _until(lambda: teleop.read(obs).extra["eef_arm"][0] == 1, "Tab to reach the keyboard device")
            assert view.title == "telecorder collect (keyboard): episode 1/1 recording  |  driving the right arm"
            assert view.poll() == set(), "Tab is no session key"
            teleop.disconnect()
    finally:
        robot.disconnect()
        pygame.quit()
