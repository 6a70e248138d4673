"""VR teleoperation: pose streams, the clutch mapping, and the OpenXR client's failure mode."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from telecorder.collect.devices.vr import (
    AXIS_PRESETS,
    ControllerSample,
    OpenXRClient,
    PoseStreamSource,
    VRMapping,
    load_pose_stream,
    write_pose_stream,
)
from telecorder.collect.interfaces import Event
from telecorder.errors import DeviceError

A = AXIS_PRESETS["openxr_to_robot"]
UP = np.array([0.0, 0.3, 0.0])  # where the hand goes while the clutch is released


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _pose(pos, rot=None) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.eye(3) if rot is None else rot
    m[:3, 3] = pos
    return m


def _sample(t, pos, rot=None, squeeze=1.0, trigger=0.0, buttons=None, valid=True, hand="right"):
    return ControllerSample(t, hand, _pose(pos, rot), squeeze, trigger, buttons or {}, valid)


def test_axis_preset_maps_openxr_directions_to_robot():
    # OpenXR forward (-Z) is robot +X, OpenXR right (+X) is robot -Y, OpenXR up (+Y) is robot +Z.
    assert np.allclose(A @ [0, 0, -1], [1, 0, 0])
    assert np.allclose(A @ [1, 0, 0], [0, -1, 0])
    assert np.allclose(A @ [0, 1, 0], [0, 0, 1])
    with pytest.raises(ValueError, match="rotation"):
        VRMapping(axes=np.diag([1.0, 1.0, -1.0]))


def test_pose_stream_round_trip(tmp_path: Path):
    samples = [
        _sample(0.0, [0.1, 1.2, -0.3], _rot_y(0.3), squeeze=0.7, trigger=0.2, buttons={"a": True}),
        _sample(0.0, [-0.1, 1.1, -0.3], hand="left", squeeze=0.0),
        _sample(0.011, [0.2, 1.2, -0.3], buttons={"a": False, "b": True}),
        ControllerSample(0.022, "right", np.full((4, 4), np.nan), valid=False),
    ]
    path = tmp_path / "poses.jsonl"
    write_pose_stream(path, samples)
    assert len(path.read_text().splitlines()) == 3  # both hands at t=0 share a line
    loaded = load_pose_stream(path)
    key = {(s.t, s.hand): s for s in loaded}
    assert len(loaded) == 4
    for s in samples:
        got = key[(s.t, s.hand)]
        assert np.array_equal(got.pose, s.pose, equal_nan=True)
        assert (got.squeeze, got.trigger, got.buttons, got.valid) == (
            s.squeeze,
            s.trigger,
            s.buttons,
            s.valid,
        )

    src = PoseStreamSource(path, hand="right")
    assert src.sample_at(-0.001) is None
    assert src.sample_at(0.005).t == 0.0
    assert src.sample_at(0.011).t == 0.011
    assert src.sample_at(10.0).valid is False
    src.start()
    assert src.current() is not None


def test_pose_stream_nested_matrix_and_bad_lines(tmp_path: Path):
    path = tmp_path / "poses.jsonl"
    nested = np.arange(16.0).reshape(4, 4).tolist()
    path.write_text(f'{{"t": 0.5, "left": {{"pose": {nested}}}}}\n')
    (s,) = load_pose_stream(path)
    assert s.hand == "left" and s.pose[1, 2] == 6.0 and s.valid

    path.write_text('{"t": 0, "right": {"pose": [1, 2, 3]}}\n')
    with pytest.raises(ValueError, match=rf"{path}:1: .*right\.pose"):
        load_pose_stream(path)
    good = '{"t": 0, "right": {"pose": ' + str(np.eye(4).ravel().tolist()) + "}}"
    path.write_text(good + "\n\nnot json\n")
    with pytest.raises(ValueError, match=rf"{path}:3: .*not JSON"):
        load_pose_stream(path)


def test_mapping_follows_circle_with_clutch_recentre_and_tracking_loss():
    scale = 0.5
    mapping = VRMapping(scale=scale)
    centre = np.array([0.1, 1.2, -0.4])
    radius = 0.2

    def circle(phase):  # in the OpenXR horizontal plane (x, z)
        return centre + radius * np.array([math.cos(phase), 0.0, math.sin(phase)])

    robot_pos0 = np.array([0.4, 0.0, 0.3])
    robot_rot0 = np.eye(3)
    pos, rot = robot_pos0.copy(), robot_rot0.copy()

    def step(sample):
        nonlocal pos, rot
        out = mapping.update(sample, pos, rot)
        pos, rot = out.position, out.rotation  # the robot tracks its target perfectly
        return out

    # Clutch held: the target traces the circle, mapped and scaled, starting at the robot.
    phases = np.linspace(0.0, math.pi, 20)
    for i, ph in enumerate(phases):
        out = step(_sample(i * 0.01, circle(ph)))
        expected = robot_pos0 + scale * A @ (circle(ph) - circle(0.0))
        assert out.engaged
        assert np.allclose(out.position, expected, atol=1e-9, rtol=0)
        assert np.allclose(out.rotation, robot_rot0, atol=1e-9)
    held = pos.copy()

    # Released and moved elsewhere: no motion.
    for ph in np.linspace(math.pi, 2 * math.pi, 10):
        out = step(_sample(1.0, circle(ph) + UP, squeeze=0.0))
        assert not out.engaged
        assert np.array_equal(out.position, held)

    # Pressed again somewhere else: re-anchored, motion continues from the held target.
    new_start = circle(0.0) + UP
    for ph in np.linspace(0.0, math.pi / 2, 10):
        out = step(_sample(2.0, circle(ph) + UP))
        expected = held + scale * A @ (circle(ph) + UP - new_start)
        assert np.allclose(out.position, expected, atol=1e-9, rtol=0)
    before_loss = pos.copy()

    # Tracking lost (flag or NaN): hold; on recovery, no jump even though the hand moved.
    assert np.array_equal(step(_sample(3.0, [9.0, 9.0, 9.0], valid=False)).position, before_loss)
    assert np.array_equal(step(_sample(3.01, [np.nan, 0.0, 0.0])).position, before_loss)
    recovered = circle(math.pi) + UP
    assert np.allclose(step(_sample(3.02, recovered)).position, before_loss, atol=1e-12)

    # "b" re-centres at the current poses: with the robot lagging behind, the target snaps
    # to where the robot really is and follows from there.
    lagging = before_loss + np.array([0.0, 0.0, -0.05])
    out = mapping.update(_sample(4.0, recovered, buttons={"b": True}), lagging, rot)
    assert np.allclose(out.position, lagging, atol=1e-12)
    out = mapping.update(
        _sample(4.01, recovered + np.array([0.0, 0.0, -0.1]), buttons={"b": True}), lagging, rot
    )
    assert np.allclose(out.position, lagging + scale * A @ [0.0, 0.0, -0.1], atol=1e-9)


def test_mapping_rotation_delta_is_relative_to_anchor_in_robot_frame():
    mapping = VRMapping()
    anchor_rot = _rot_y(0.7)  # the controller is not held upright
    robot_rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    mapping.update(_sample(0.0, [0, 1, 0], anchor_rot), np.zeros(3), robot_rot)
    # Turn the hand by 0.4 rad about OpenXR up (+Y): the gripper turns 0.4 rad about robot +Z.
    out = mapping.update(_sample(0.1, [0, 1, 0], _rot_y(0.4) @ anchor_rot), np.zeros(3), robot_rot)
    c, s = math.cos(0.4), math.sin(0.4)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    assert np.allclose(out.rotation, rz @ robot_rot, atol=1e-12)


def test_mapping_gripper_and_button_events():
    mapping = VRMapping()
    p, r = np.zeros(3), np.eye(3)
    out = mapping.update(_sample(0, [0, 1, 0], trigger=0.25, squeeze=0.0), p, r)
    assert out.gripper == pytest.approx(0.75) and out.events == set()
    assert mapping.update(_sample(0, [0, 1, 0], buttons={"a": True}), p, r).events == {
        Event.SAVE_EPISODE
    }
    # Held, not pressed again: fires once.
    assert mapping.update(_sample(0, [0, 1, 0], buttons={"a": True}), p, r).events == set()
    assert mapping.update(_sample(0, [0, 1, 0], buttons={"menu": True}), p, r).events == {
        Event.DISCARD_EPISODE
    }
    assert mapping.update(None, p, r).events == set()
    assert mapping.update(_sample(0, [0, 1, 0], buttons={"x": True}), p, r).events == {Event.INTERVENE}


def test_the_vr_key_map_shows_what_each_button_does():
    """The live view draws the VR controller's buttons from the table the mapping itself reads."""
    from telecorder.collect.key_bindings import (
        VR,
        VR_RECENTRE_BUTTONS,
        VR_SESSION_BUTTONS,
        controls_for,
    )

    assert controls_for("vr") is VR and controls_for("policy", "vr") is VR
    drawn = " ".join(VR.map_lines())
    p, r = np.zeros(3), np.eye(3)
    for event, buttons in VR_SESSION_BUTTONS.items():
        assert f"{'/'.join(buttons)} {VR.hint((event,)).split(' ', 1)[1]}" in drawn
        for button in buttons:
            mapping = VRMapping()
            mapping.update(_sample(0, [0, 1, 0]), p, r)
            assert mapping.update(_sample(0, [0, 1, 0], buttons={button: True}), p, r).events == {event}
    session = {b for buttons in VR_SESSION_BUTTONS.values() for b in buttons}
    assert not session & set(VR_RECENTRE_BUTTONS), "re-centring must not also save or discard"
    assert "re-centres" in drawn and "squeeze" in drawn and "trigger" in drawn


def test_openxr_client_without_runtime_raises_device_error(monkeypatch, tmp_path: Path):
    pytest.importorskip("xr")
    monkeypatch.setenv("XR_RUNTIME_JSON", str(tmp_path / "missing_runtime.json"))
    with pytest.raises(DeviceError, match="XR_RUNTIME_JSON"):
        OpenXRClient().open()


def test_openxr_client_with_broken_manifest_names_it(monkeypatch, tmp_path: Path):
    pytest.importorskip("xr")
    manifest = tmp_path / "openxr_monado.json"
    monkeypatch.setenv("XR_RUNTIME_JSON", str(manifest))
    # A build that was deleted or moved: the library the manifest names is gone.
    manifest.write_text('{"file_format_version": "1.0.0", "runtime": {"library_path": "./gone/libopenxr_monado.so"}}')
    with pytest.raises(DeviceError, match=rf"{manifest} names {tmp_path}/gone/libopenxr_monado.so, which does not"):
        OpenXRClient().open()
    manifest.write_text('{"runtime": {"name": "no library"}}')
    with pytest.raises(DeviceError, match=rf"{manifest} is not an OpenXR runtime manifest"):
        OpenXRClient().open()
    manifest.write_text("{not json")
    with pytest.raises(DeviceError, match="not an OpenXR runtime manifest"):
        OpenXRClient().open()


def _runtime_present() -> bool:
    from telecorder.collect.devices.vr.openxr_client import _runtime_manifest_candidates

    env = os.environ.get("XR_RUNTIME_JSON")
    if env:
        return Path(env).is_file()
    return any(p.is_file() for p in _runtime_manifest_candidates())


def test_openxr_client_on_this_machine():
    pytest.importorskip("xr")
    if _runtime_present():
        pytest.skip("an OpenXR runtime is installed here; covered by the real-session test")
    with pytest.raises(DeviceError, match="XR_RUNTIME_JSON"):
        OpenXRClient().open()


def test_openxr_real_session_without_controllers(tmp_path: Path):
    """A real runtime (Monado, built by scripts/vr_runtime.sh) whose system has a headset but no
    controllers: the session runs for --seconds and every sample says the hands are untracked."""
    pytest.importorskip("xr")
    from monado_remote import monado_manifest, runtime_env
    from test_cli import run, tool

    env = runtime_env(monado_manifest(), config=None)  # Monado's default here: a simulated HMD only
    out = tmp_path / "live.jsonl"
    proc = run(tool("telecorder"), "vr-record", str(out), "--seconds", "1", extra_env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = out.read_text().splitlines()
    assert f"wrote {len(lines)} samples" in proc.stdout
    assert "controllers: left none (not bound: switched off?), right none" in proc.stdout
    assert len(lines) >= 10  # 90 Hz for a second, on a busy machine
    samples = load_pose_stream(out)
    assert len(samples) == 2 * len(lines)
    t = np.array([json.loads(line)["t"] for line in lines])
    # Seconds since the recording started, on the recorder's clock (not XrTime nanoseconds).
    assert np.all(np.diff(t) > 0) and t[0] >= 0 and t[-1] < 60
    assert not any(s.valid or s.squeeze or s.trigger or any(s.buttons.values()) for s in samples)
