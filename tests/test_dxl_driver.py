"""The Dynamixel driver and calibration through the real dynamixel_sdk, against our bus emulator."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

pytest.importorskip("dynamixel_sdk")

from telecorder.collect.calibration_session import calibrate_arm
from telecorder.collect.dynamixel.bus import DynamixelBus, avoid_header_sequence, rad_to_ticks
from telecorder.collect.dynamixel.calibration import ArmCalibration, quarter_turn_offsets
from telecorder.collect.dynamixel.control_table import ADDR, MODE_EXTENDED_POSITION
from telecorder.collect.dynamixel.emulator import BusEmulator, FaultConfig
from telecorder.errors import DeviceError

IDS = list(range(1, 8))


def test_ping_sync_read_sync_write_and_torque():
    with BusEmulator(IDS, "xl330-m288") as path:
        bus = DynamixelBus(path, IDS, model="xl330-m288")
        models = bus.open()
        try:
            assert models == {i: 1200 for i in IDS}
            state = bus.read_state(velocity=True, current=True)
            assert state.position.shape == (7,) and np.allclose(state.position, 0, atol=1e-3)
            bus.set_operating_mode(MODE_EXTENDED_POSITION)
            bus.set_torque(True)
            goals = np.linspace(-1.2, 1.2, 7)
            bus.write_goal_positions(goals)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                pos = bus.read_state().position
                if np.allclose(pos, goals, atol=0.01):
                    break
                time.sleep(0.02)
            np.testing.assert_allclose(bus.read_state().position, goals, atol=0.01)
            assert bus.read(ADDR.TORQUE_ENABLE, 1, 3) == 1
            # Retries absorb a reply delayed past the deadline on a loaded machine; no cycle may fail.
            assert bus.errors.failed_cycles == 0
        finally:
            bus.close()


def test_negative_velocity_is_decoded_signed():
    with BusEmulator([1, 2], "xl430-w250") as path:
        bus = DynamixelBus(path, [1, 2])
        bus.open()
        try:
            bus.set_torque(True)
            bus.write_goal_positions(np.array([-2.0, 2.0]))
            time.sleep(0.05)
            vel = bus.read_state(velocity=True).velocity
            assert vel[0] < -0.5 and vel[1] > 0.5, vel
        finally:
            bus.close()


def test_unsupported_baudrate_lists_valid_rates():
    with pytest.raises(DeviceError, match=r"baud rate 250000 is not supported.*1000000"):
        DynamixelBus("/dev/null", [1], baudrate=250000)


def test_missing_servo_and_wrong_model_are_named():
    with BusEmulator([1, 2, 3], "xl430-w250") as path:
        with pytest.raises(DeviceError, match=r"servo\(s\) 4 did not answer a ping"):
            DynamixelBus(path, [1, 2, 3, 4], retries=0).open()
        with pytest.raises(DeviceError, match=r"expected xl330-m288 .* ID 1: model 1060"):
            DynamixelBus(path, [1, 2, 3], model="xl330-m288").open()


def test_unopenable_port_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceError, match="cannot open serial port"):
        DynamixelBus(str(tmp_path / "ttyUSB9"), [1]).open()


def test_dropped_replies_are_retried_and_counted():
    faults = FaultConfig(drop_rate=0.05)
    with BusEmulator(IDS, "xl330-m288", faults=faults, seed=1) as path:
        bus = DynamixelBus(path, IDS, retries=3)
        bus.open()
        try:
            for _ in range(100):
                bus.read_state()
            assert bus.errors.timeouts > 0 and bus.errors.retries > 0
            assert bus.errors.failed_cycles <= 2
        finally:
            bus.close()


def test_dead_servo_raises_one_clear_error_naming_port_and_id():
    faults = FaultConfig(dead_after_s={5: 0.3})
    with BusEmulator(IDS, "xl330-m288", faults=faults) as path:
        bus = DynamixelBus(path, IDS, retries=1, dead_after_cycles=3)
        bus.open()
        try:
            bus.read_state()
            time.sleep(0.4)
            with pytest.raises(DeviceError, match=rf"{path}: servo\(s\) 5 stopped answering"):
                for _ in range(10):
                    bus.read_state()
        finally:
            bus.close()


@pytest.mark.parametrize("ticks", [[-131073, 5], [5, -131073], [2048, 4095], [-1, -3]])
def test_goal_bytes_never_contain_the_header_sequence(ticks):
    ids = [1, 2]
    safe = avoid_header_sequence(ids, ticks)
    payload = b"".join(bytes([i]) + (v & 0xFFFFFFFF).to_bytes(4, "little") for i, v in zip(ids, safe, strict=True))
    assert b"\xff\xff\xfd" not in payload
    assert all(abs(a - b) <= 1 for a, b in zip(safe, ticks, strict=True))


def test_extended_goal_near_minus_32_turns_reaches_the_servo():
    """-131073 ticks encodes as FF FF FD FF: unstuffed, the servo would see a header; we nudge it."""
    with BusEmulator([1], "xl330-m288") as path:
        bus = DynamixelBus(path, [1])
        bus.open()
        try:
            bus.set_operating_mode(MODE_EXTENDED_POSITION)
            bus.set_torque(True)
            target_ticks = -131073
            goal = (target_ticks - 2048) * 2 * math.pi / 4096
            assert rad_to_ticks(np.array([goal]))[0] == target_ticks
            bus.write_goal_positions(np.array([goal]))
            assert abs(bus.read(ADDR.GOAL_POSITION, 4, 1, signed=True) - target_ticks) <= 1
        finally:
            bus.close()


def test_quarter_turn_offsets():
    known = [0.0, 0.5, -0.3]
    mounted = [math.pi / 2, -math.pi, 0.0]
    raw = [k + m + 0.1 for k, m in zip(known, mounted, strict=True)]  # 0.1 rad off the known pose
    np.testing.assert_allclose(quarter_turn_offsets(raw, known, [1, 1, 1]), mounted)
    np.testing.assert_allclose(quarter_turn_offsets([-r for r in raw], known, [-1, -1, -1]), mounted)


def test_calibration_from_pose_file_reproduces_offsets_and_signs(tmp_path):
    signs = [1, -1, 1, -1, 1]
    mounted = [0.0, math.pi / 2, -math.pi / 2, math.pi, 0.0]  # how each horn sits, in quarter turns
    known = [0.0, -0.35, 1.2, 0.8, 0.0]
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps({
        "known_pose": known,
        "names": ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"],
        "signs": signs,
        "gripper": {"open": 0.9, "closed": 0.1},
    }))
    emu = BusEmulator(range(1, 7), "xl330-m288")
    path = emu.start()
    try:
        # The arm is held near the known pose (a few degrees off, as a person would hold it).
        for k in range(5):
            emu.set_position(k + 1, signs[k] * (known[k] + mounted[k]) + 0.05)
        emu.set_position(6, 0.5)
        bus = DynamixelBus(path, list(range(1, 7)))
        cal, saved = calibrate_arm(bus, "leader", out=tmp_path / "leader.json", pose_file=pose)
    finally:
        emu.stop()
    np.testing.assert_allclose([j.offset for j in cal.joints], mounted, atol=1e-9)
    assert [j.sign for j in cal.joints] == signs
    assert cal.names == ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    again = ArmCalibration.load(saved)
    assert again.to_dict() == cal.to_dict()
    raw = np.array([s * (k + m) for s, k, m in zip(signs, known, mounted, strict=True)] + [0.5])
    np.testing.assert_allclose(again.to_calibrated(raw)[:5], known, atol=1e-9)
    assert again.to_calibrated(raw)[5] == pytest.approx(0.5)
    np.testing.assert_allclose(again.to_raw(again.to_calibrated(raw)), raw, atol=1e-9)


def test_bad_pose_file_is_a_clear_error(tmp_path):
    from telecorder.collect.dynamixel.calibration import CalibrationError, PoseFile

    bad = tmp_path / "pose.json"
    bad.write_text('{"names": ["a"]}')
    with pytest.raises(CalibrationError, match=r"pose\.json: invalid pose file .*known_pose"):
        PoseFile.load(bad)
