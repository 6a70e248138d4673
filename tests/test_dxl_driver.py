"""The Dynamixel driver and calibration through the real dynamixel_sdk, against our bus emulator."""

from __future__ import annotations

import json
import math
import random
import time

import numpy as np
import pytest

pytest.importorskip("dynamixel_sdk")

from telecorder.collect.dynamixel.bus import (
    BusPort,
    DynamixelBus,
    avoid_header_sequence,
    rad_to_ticks,
)
from telecorder.collect.dynamixel.calibration import ArmCalibration, quarter_turn_offsets
from telecorder.collect.dynamixel.calibration_session import calibrate_arm
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


# -- late replies: a reply that missed its deadline must never answer another request ----------
# The emulator holds a reply back 0.15 s: past the driver's deadline (34 ms) and the grace it
# gives bytes already waiting, as a slow USB adapter (or a loaded host) can.
LATE_S = 0.15


@pytest.fixture
def one_servo():
    emu = BusEmulator([1], "xl330-m288")
    path = emu.start()
    bus = DynamixelBus(path, [1])
    try:
        bus.open()
        yield emu, bus
    finally:
        bus.close()
        emu.stop()


def test_a_late_read_reply_never_answers_the_next_read(one_servo):
    emu, bus = one_servo
    emu.set_position(1, -0.01)  # 2041 ticks: low byte 249, a value Torque Enable never has
    ticks = int(rad_to_ticks(np.array([-0.01]))[0])
    emu.delay_next_reply(LATE_S)
    bus.retries = 0
    with pytest.raises(DeviceError, match="did not answer a read of address 132"):
        bus.read(ADDR.PRESENT_POSITION, 4, 1)
    bus.retries = 5  # enough tries to still be waiting when the late reply comes
    assert bus.read(ADDR.TORQUE_ENABLE, 1, 1) == 0  # not 249, the late position's low byte
    assert bus.read(ADDR.PRESENT_POSITION, 4, 1) == ticks
    assert bus.errors.stale_replies >= 1


def test_a_refused_write_is_reported_even_after_a_late_ack(one_servo):
    emu, bus = one_servo
    emu.delay_next_reply(LATE_S)
    bus.retries = 0
    with pytest.raises(DeviceError, match="did not acknowledge a write to address 65"):
        bus.write(ADDR.LED, 1, 1, [1])
    bus.retries = 5
    # Present Position is read-only: the servo's error must reach us, not the earlier write's late "OK".
    with pytest.raises(DeviceError, match="refused writing 5 to address 132"):
        bus.write(ADDR.PRESENT_POSITION, 4, 5, [1])
    assert bus.read(ADDR.LED, 1, 1) == 1  # the late-acknowledged write did land
    assert bus.errors.stale_replies >= 1


def test_random_late_replies_never_reach_the_caller():
    """Reads, writes and sync reads with one reply in 8 held past the deadline: every answer is its own."""
    ids = [1, 2, 3]
    emu = BusEmulator(ids, "xl330-m288", faults=FaultConfig(late_rate=0.125, late_s=0.06), seed=3)
    path = emu.start()
    bus = DynamixelBus(path, ids, retries=6, dead_after_cycles=1000)
    rng = random.Random(5)
    unanswered = 0
    try:
        bus.open()
        epoch = 0
        expected: dict[int, int] = {}

        def move() -> None:
            # Every servo to a new, distinct angle: a stale position cannot pass for a current one.
            nonlocal epoch
            epoch += 1
            for i in ids:
                angle = 0.01 * i + 0.05 * epoch
                emu.set_position(i, angle)
                expected[i] = int(rad_to_ticks(np.array([angle]))[0])

        move()
        bus.read_state()  # the first cycle has no last values to fall back on
        led = dict.fromkeys(ids, 0)
        for _ in range(120):
            op, i = rng.randrange(6), rng.choice(ids)
            try:
                if op == 0:
                    assert bus.read(ADDR.ID, 1, i) == i
                elif op == 1:
                    assert bus.read(ADDR.PRESENT_POSITION, 4, i) == expected[i]
                elif op == 2:
                    assert bus.read(ADDR.LED, 1, i) == led[i]
                elif op == 3:
                    led[i] ^= 1
                    bus.write(ADDR.LED, 1, led[i], [i])
                elif op == 4:
                    with pytest.raises(DeviceError, match="refused"):
                        bus.write(ADDR.PRESENT_POSITION, 4, 5, [i])
                else:
                    failed = bus.errors.failed_cycles
                    state = bus.read_state()
                    if bus.errors.failed_cycles == failed:
                        np.testing.assert_array_equal(rad_to_ticks(state.position), [expected[j] for j in ids])
                    move()
            except DeviceError as e:
                # Unanswered after all tries is allowed (a late bus is a slow bus); a wrong answer is not.
                assert "did not" in str(e), e
                unanswered += 1
                if op == 3:
                    led[i] = bus.read(ADDR.LED, 1, i)  # whether it landed is unknown
        assert emu.stats.replies_sent > 0 and bus.errors.stale_replies > 0, bus.errors
        assert unanswered < 20, bus.errors
    finally:
        bus.close()
        emu.stop()


def test_port_reads_a_reply_that_came_while_the_process_was_not_running():
    """Past the deadline with the reply already waiting is not a timeout (the stock SDK says it is)."""
    import dynamixel_sdk as sdk

    with BusEmulator([1], "xl330-m288") as path:
        port, ph = BusPort(path), sdk.PacketHandler(2.0)
        assert port.openPort()
        try:
            tx = [0] * 10
            tx[4], tx[5], tx[7] = 1, 3, 0x01  # ping servo 1
            assert ph.txPacket(port, tx) == sdk.COMM_SUCCESS
            port.setPacketTimeoutMillis(1)
            deadline = time.monotonic() + 5
            while port.getBytesAvailable() < 14 and time.monotonic() < deadline:
                time.sleep(0.005)  # as if descheduled: the deadline passes, the reply arrives
            assert not port.isPacketTimeout()
            rx, result = ph.rxPacket(port, False)
            assert result == sdk.COMM_SUCCESS and rx[4] == 1
        finally:
            port.closePort()


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
