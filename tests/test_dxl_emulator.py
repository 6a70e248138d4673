"""The servo-chain emulator, driven by the real ``dynamixel_sdk`` over its pseudo-terminal."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

sdk = pytest.importorskip("dynamixel_sdk")

from telecorder.collect.dynamixel import protocol as p  # noqa: E402
from telecorder.collect.dynamixel.bus import BusPort  # noqa: E402
from telecorder.collect.dynamixel.control_table import ADDR, rad_to_ticks  # noqa: E402
from telecorder.collect.dynamixel.emulator import BusEmulator, FaultConfig, HandMotion, ServoState  # noqa: E402

IDS = list(range(1, 8))
BAUD = 1_000_000


@contextmanager
def connected(bus: BusEmulator, *, fast_replies: bool = True) -> Iterator[tuple[object, object]]:
    """Start the bus, open a port on it, yield (port, packet handler); close both after.

    The port is our driver's :class:`BusPort`, the SDK's ``PortHandler`` that sleeps while it
    waits: the stock one polls in a busy loop that holds the GIL this emulator's thread needs,
    and gives up on replies that came while the process was descheduled, so on a loaded host
    it times out on replies the emulator did send.
    """
    if fast_replies:
        # Drivers zero Return Delay Time (factory: 250 = 500 µs per reply); tests do the same.
        for servo in bus.servos.values():
            servo.set("return_delay_time", 0)
    path = bus.start()
    port = BusPort(path)
    try:
        assert port.openPort()
        assert port.setBaudRate(BAUD)
        yield port, sdk.PacketHandler(2.0)
    finally:
        if port.is_open:
            port.closePort()
        bus.stop()


def signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def wait_until(predicate, timeout: float = 2.0, period: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


def test_ping_unicast_and_broadcast():
    bus = BusEmulator(IDS, model="xl330-m288")
    with connected(bus) as (port, ph):
        assert ph.ping(port, 3) == (1200, sdk.COMM_SUCCESS, 0)
        assert ph.ping(port, 42)[1] == sdk.COMM_RX_TIMEOUT
        found, result = ph.broadcastPing(port)
        assert result == sdk.COMM_SUCCESS
        assert found == {i: [1200, 52] for i in IDS}


def test_models_report_their_numbers():
    for model, number in [("xm430-w350", 1020), ("XL430-W250-T", 1060)]:
        with connected(BusEmulator([5], model=model)) as (port, ph):
            assert ph.ping(port, 5) == (number, sdk.COMM_SUCCESS, 0)
            assert ph.read2ByteTxRx(port, 5, ADDR.MODEL_NUMBER) == (number, sdk.COMM_SUCCESS, 0)


def test_goal_position_converges_with_torque_on():
    bus = BusEmulator([1])
    with connected(bus) as (port, ph):
        start, res, err = ph.read4ByteTxRx(port, 1, ADDR.PRESENT_POSITION)
        assert (start, res, err) == (2048, sdk.COMM_SUCCESS, 0)
        assert ph.write1ByteTxRx(port, 1, ADDR.TORQUE_ENABLE, 1) == (sdk.COMM_SUCCESS, 0)
        goal = 4000  # close to half a turn
        assert ph.write4ByteTxRx(port, 1, ADDR.GOAL_POSITION, goal) == (sdk.COMM_SUCCESS, 0)
        time.sleep(0.05)
        early = ph.read4ByteTxRx(port, 1, ADDR.PRESENT_POSITION)[0]
        assert 2048 < early < goal - 200  # on its way, speed-limited (XL330 ~ 102 rpm: 0.3 s for this move)
        assert ph.read1ByteTxRx(port, 1, ADDR.MOVING)[0] == 1
        assert wait_until(lambda: abs(ph.read4ByteTxRx(port, 1, ADDR.PRESENT_POSITION)[0] - goal) <= 1, 1.5)
        assert ph.read1ByteTxRx(port, 1, ADDR.MOVING)[0] == 0
        assert ph.read1ByteTxRx(port, 1, ADDR.MOVING_STATUS)[0] & 0x01  # in position


def test_group_sync_read_of_seven_servos():
    bus = BusEmulator(IDS)
    angles = {i: 0.1 * i - 0.4 for i in IDS}
    with connected(bus) as (port, ph):
        for i, a in angles.items():
            bus.set_position(i, a)
        reader = sdk.GroupSyncRead(port, ph, ADDR.PRESENT_POSITION, 4)
        for i in IDS:
            assert reader.addParam(i)
        assert reader.txRxPacket() == sdk.COMM_SUCCESS
        for i, a in angles.items():
            assert reader.isAvailable(i, ADDR.PRESENT_POSITION, 4)
            assert reader.getData(i, ADDR.PRESENT_POSITION, 4) == round(rad_to_ticks(a))
        # Fast Sync Read: one status packet that all servos fill in turn.
        assert reader.fastSyncRead() == sdk.COMM_SUCCESS
        assert [reader.getData(i, ADDR.PRESENT_POSITION, 4) for i in IDS] == [round(rad_to_ticks(angles[i])) for i in IDS]


def test_group_sync_write_goals_moves_all_servos():
    bus = BusEmulator(IDS)
    goals = {i: 2048 + 100 * i for i in IDS}
    with connected(bus) as (port, ph):
        torque = sdk.GroupSyncWrite(port, ph, ADDR.TORQUE_ENABLE, 1)
        writer = sdk.GroupSyncWrite(port, ph, ADDR.GOAL_POSITION, 4)
        for i in IDS:
            torque.addParam(i, [1])
            writer.addParam(i, list(goals[i].to_bytes(4, "little")))
        assert torque.txPacket() == sdk.COMM_SUCCESS
        assert writer.txPacket() == sdk.COMM_SUCCESS
        reader = sdk.GroupSyncRead(port, ph, ADDR.PRESENT_POSITION, 4)
        for i in IDS:
            reader.addParam(i)

        def arrived() -> bool:
            assert reader.txRxPacket() == sdk.COMM_SUCCESS
            return all(abs(reader.getData(i, ADDR.PRESENT_POSITION, 4) - goals[i]) <= 1 for i in IDS)

        assert wait_until(arrived, 1.5)


def test_bulk_read_and_bulk_write():
    bus = BusEmulator([1, 2])
    with connected(bus) as (port, ph):
        writer = sdk.GroupBulkWrite(port, ph)
        assert writer.addParam(1, ADDR.LED, 1, [1])
        assert writer.addParam(2, ADDR.GOAL_POSITION, 4, list((1500).to_bytes(4, "little")))
        assert writer.txPacket() == sdk.COMM_SUCCESS
        reader = sdk.GroupBulkRead(port, ph)
        assert reader.addParam(1, ADDR.LED, 1)
        assert reader.addParam(2, ADDR.GOAL_POSITION, 4)
        assert reader.txRxPacket() == sdk.COMM_SUCCESS
        assert reader.getData(1, ADDR.LED, 1) == 1
        assert reader.getData(2, ADDR.GOAL_POSITION, 4) == 1500


def test_eeprom_write_refused_while_torque_on():
    bus = BusEmulator([1])
    with connected(bus) as (port, ph):
        assert ph.write1ByteTxRx(port, 1, ADDR.TORQUE_ENABLE, 1) == (sdk.COMM_SUCCESS, 0)
        result, error = ph.write1ByteTxRx(port, 1, ADDR.OPERATING_MODE, 4)
        assert result == sdk.COMM_SUCCESS and error == p.ERR_ACCESS
        assert ph.read1ByteTxRx(port, 1, ADDR.OPERATING_MODE)[0] == 3
        assert ph.write1ByteTxRx(port, 1, ADDR.TORQUE_ENABLE, 0) == (sdk.COMM_SUCCESS, 0)
        assert ph.write1ByteTxRx(port, 1, ADDR.OPERATING_MODE, 4) == (sdk.COMM_SUCCESS, 0)
        assert ph.read1ByteTxRx(port, 1, ADDR.OPERATING_MODE)[0] == 4


def test_write_checks_access_length_and_limits():
    bus = BusEmulator([1])
    with connected(bus) as (port, ph):
        assert ph.write4ByteTxRx(port, 1, ADDR.PRESENT_POSITION, 5)[1] == p.ERR_ACCESS  # read-only
        assert ph.write2ByteTxRx(port, 1, ADDR.GOAL_POSITION, 5)[1] == p.ERR_DATA_LENGTH  # half a field
        assert ph.write1ByteTxRx(port, 1, ADDR.OPERATING_MODE, 2)[1] == p.ERR_DATA_RANGE  # no mode 2
        assert ph.write1ByteTxRx(port, 1, ADDR.STATUS_RETURN_LEVEL, 3)[1] == p.ERR_DATA_RANGE
        assert ph.write4ByteTxRx(port, 1, ADDR.GOAL_VELOCITY, 446)[1] == p.ERR_DATA_LIMIT  # Velocity Limit 445
        assert ph.write4ByteTxRx(port, 1, ADDR.GOAL_VELOCITY, 445) == (sdk.COMM_SUCCESS, 0)
        assert ph.read4ByteTxRx(port, 1, 200)[2] == p.ERR_ACCESS  # beyond the table


def test_negative_present_velocity_is_signed():
    bus = BusEmulator([1])
    with connected(bus) as (port, ph):
        bus.set_position(1, 1.5)
        assert ph.write4ByteTxRx(port, 1, ADDR.GOAL_POSITION, 2048 + 1000)[1] == 0
        assert ph.write1ByteTxRx(port, 1, ADDR.TORQUE_ENABLE, 1)[1] == 0
        ph.write4ByteTxRx(port, 1, ADDR.GOAL_POSITION, 0)
        time.sleep(0.05)
        raw, res, _ = ph.read4ByteTxRx(port, 1, ADDR.PRESENT_VELOCITY)
        assert res == sdk.COMM_SUCCESS
        assert raw >= 1 << 31  # the SDK hands back the unsigned register
        velocity = signed32(raw)
        assert -460 <= velocity <= -400  # full speed (~103 rpm = 449 units) toward the goal
        current = ph.read2ByteTxRx(port, 1, ADDR.PRESENT_CURRENT)[0]
        assert current >= 1 << 15  # pushing in the negative direction


def test_unknown_instruction_gets_instruction_error():
    bus = BusEmulator([1])
    with connected(bus) as (port, ph):
        tx = [0] * 10
        tx[4], tx[5], tx[6], tx[7] = 1, 3, 0, 0x7F  # ID, length 3, an undefined instruction
        _rx, result, error = ph.txRxPacket(port, tx)
        assert result == sdk.COMM_SUCCESS
        assert error == p.ERR_INSTRUCTION


def test_bad_crc_gets_crc_error_status():
    bus = BusEmulator([1])
    with connected(bus) as (port, ph):
        packet = bytearray(p.build_packet(1, p.READ, bytes([ADDR.PRESENT_POSITION, 0, 4, 0])))
        packet[-1] ^= 0x55
        port.clearPort()
        port.writePort(bytes(packet))
        port.setPacketTimeoutMillis(200)
        rx, result = ph.rxPacket(port, False)
        assert result == sdk.COMM_SUCCESS
        assert rx[4] == 1 and rx[8] == p.ERR_CRC
        assert bus.stats.crc_errors_received == 1


def test_reply_with_ff_ff_fd_bytes_is_stuffed():
    bus = BusEmulator([1])
    with connected(bus) as (port, ph):
        ticks = 0x00FDFFFF  # little-endian FF FF FD 00: a header inside the data
        bus.set_position(1, (ticks - 2048) * 2 * math.pi / 4096)
        assert ph.read4ByteTxRx(port, 1, ADDR.PRESENT_POSITION) == (ticks, sdk.COMM_SUCCESS, 0)


def test_reply_drop_rate_gives_timeouts_and_is_counted():
    bus = BusEmulator([1], faults=FaultConfig(drop_rate=0.5), seed=7)
    with connected(bus) as (port, ph):
        results = [ph.ping(port, 1)[1] for _ in range(16)]
        timeouts = results.count(sdk.COMM_RX_TIMEOUT)
        assert 0 < timeouts < len(results)
        assert results.count(sdk.COMM_SUCCESS) == len(results) - timeouts
        assert bus.stats.replies_dropped == timeouts


def test_corrupted_replies_are_rejected_by_the_sdk():
    bus = BusEmulator([1], faults=FaultConfig(crc_error_rate=1.0))
    with connected(bus) as (port, ph):
        assert ph.ping(port, 1)[1] == sdk.COMM_RX_CORRUPT
        assert bus.stats.replies_corrupted == 1


def test_latency_fault_delays_replies():
    bus = BusEmulator([1], faults=FaultConfig(latency_s=0.01))
    with connected(bus) as (port, ph):
        start = time.monotonic()
        assert ph.ping(port, 1)[1] == sdk.COMM_SUCCESS
        assert time.monotonic() - start >= 0.01


def _replies(port, count: int, timeout: float = 5.0) -> list[p.Packet]:
    """The next ``count`` status packets off the port (parsed with our parser, not the SDK's)."""
    parser, out = p.PacketParser(), []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        out += parser.feed(port.ser.read(4096))
        time.sleep(0.001)
    return out


def test_each_instruction_gets_one_reply_in_the_order_sent():
    """What a client may rely on to tell a late reply from its own: one reply per request, in order."""
    bus = BusEmulator([1, 2, 3])
    with connected(bus) as (port, _ph):
        # 30 reads sent back to back, each of its own length, so each reply names its request.
        requests = [(1 + k % 3, 1 + k) for k in range(30)]
        port.clearPort()
        port.writePort(b"".join(p.build_packet(sid, p.READ, bytes([0, 0, n, 0])) for sid, n in requests))
        got = _replies(port, len(requests))
        assert [(r.id, len(r.data)) for r in got] == requests
        time.sleep(0.05)
        assert port.getBytesAvailable() == 0  # and nothing more
        assert bus.stats.replies_sent == bus.stats.packets_received == len(requests)


def test_a_held_reply_arrives_late_with_the_rest_queued_behind_it():
    bus = BusEmulator([1, 2])
    with connected(bus) as (port, ph):
        bus.delay_next_reply(0.2, servo_id=1)
        # The SDK's deadline (34 ms) passes first, as behind a slow USB adapter.
        assert ph.ping(port, 1)[1] == sdk.COMM_RX_TIMEOUT
        port.writePort(p.build_packet(2, p.READ, bytes([ADDR.ID, 0, 1, 0])))
        got = _replies(port, 2)
        assert [(r.id, r.data) for r in got] == [(1, bytes([0xB0, 0x04, 52])), (2, bytes([2]))]
        assert ph.ping(port, 1) == (1200, sdk.COMM_SUCCESS, 0)  # one reply held, not all


def test_late_rate_fault_holds_replies_back():
    bus = BusEmulator([1], faults=FaultConfig(late_rate=1.0, late_s=0.1))
    with connected(bus) as (port, ph):
        assert ph.ping(port, 1)[1] == sdk.COMM_RX_TIMEOUT
        assert [r.id for r in _replies(port, 1)] == [1]
    with pytest.raises(ValueError, match="late_rate"):
        FaultConfig(late_rate=2.0)


def test_dead_servo_stops_answering():
    bus = BusEmulator([1, 2, 3], faults=FaultConfig(dead_after_s={3: 0.3}))
    with connected(bus) as (port, ph):
        assert ph.ping(port, 3)[1] == sdk.COMM_SUCCESS
        time.sleep(max(0.0, 0.32 - bus.elapsed()))
        assert ph.ping(port, 3)[1] == sdk.COMM_RX_TIMEOUT
        assert ph.read1ByteTxRx(port, 3, ADDR.ID)[1] == sdk.COMM_RX_TIMEOUT
        assert ph.ping(port, 2)[1] == sdk.COMM_SUCCESS
        reader = sdk.GroupSyncRead(port, ph, ADDR.PRESENT_POSITION, 4)
        for i in (1, 2, 3):
            reader.addParam(i)
        assert reader.txRxPacket() == sdk.COMM_RX_TIMEOUT


def test_torque_off_servos_follow_the_hand():
    hand = HandMotion.builtin(IDS)
    bus = BusEmulator(IDS, hand=hand)
    with connected(bus) as (port, ph):
        reader = sdk.GroupSyncRead(port, ph, ADDR.PRESENT_POSITION, 4)
        for i in IDS:
            reader.addParam(i)
        samples = []
        for _ in range(6):
            before = bus.elapsed()
            assert reader.txRxPacket() == sdk.COMM_SUCCESS
            after = bus.elapsed()
            got = {i: reader.getData(i, ADDR.PRESENT_POSITION, 4) for i in IDS}
            for i in IDS:
                expected = [rad_to_ticks(hand.position(i, t)) for t in (before, after)]
                assert min(expected) - 3 <= got[i] <= max(expected) + 3
            samples.append(got)
            time.sleep(0.15)
        assert any(samples[0][i] != samples[-1][i] for i in IDS)  # it moved
        velocity = ph.read4ByteTxRx(port, 1, ADDR.PRESENT_VELOCITY)[0]
        assert ph.read1ByteTxRx(port, 1, ADDR.TORQUE_ENABLE)[0] == 0
        assert velocity != 0 or hand.velocity(1, bus.elapsed()) == pytest.approx(0, abs=0.01)


def test_link_symlink_is_created_and_removed(tmp_path):
    link = tmp_path / "leader.tty"
    bus = BusEmulator([1])
    bus.link(link)
    with connected(bus) as (_port, _ph):
        assert link.is_symlink() and os.readlink(link) == bus.path
        other = sdk.PortHandler(str(link))
        assert other.openPort()
        other.closePort()
    assert not link.exists() and not link.is_symlink()


def test_status_return_level_and_secondary_id():
    bus = BusEmulator([1, 2])
    with connected(bus) as (port, ph):
        # The level is checked when the reply would go out, so the write that lowers it is already silent.
        assert ph.write1ByteTxRx(port, 1, ADDR.STATUS_RETURN_LEVEL, 1)[0] == sdk.COMM_RX_TIMEOUT
        assert ph.write1ByteTxRx(port, 1, ADDR.LED, 1)[0] == sdk.COMM_RX_TIMEOUT  # level 1: writes are silent...
        assert ph.read1ByteTxRx(port, 1, ADDR.LED) == (1, sdk.COMM_SUCCESS, 0)  # ...but were applied
        ph.write1ByteTxRx(port, 1, ADDR.STATUS_RETURN_LEVEL, 0)
        assert ph.read1ByteTxRx(port, 1, ADDR.LED)[1] == sdk.COMM_RX_TIMEOUT  # level 0: ping only
        assert ph.ping(port, 1)[1] == sdk.COMM_SUCCESS
        # Servo 2 also listens on secondary ID 9: it acts on packets to 9 without replying.
        assert ph.write1ByteTxRx(port, 2, ADDR.SECONDARY_ID, 9) == (sdk.COMM_SUCCESS, 0)
        ph.write1ByteTxOnly(port, 9, ADDR.LED, 1)
        assert ph.read1ByteTxRx(port, 2, ADDR.LED) == (1, sdk.COMM_SUCCESS, 0)


def test_baud_rate_mismatch_is_silent_and_id_change_moves_the_servo():
    bus = BusEmulator([1])
    with connected(bus) as (port, ph):
        assert port.setBaudRate(57_600)
        assert ph.ping(port, 1)[1] == sdk.COMM_RX_TIMEOUT
        assert port.setBaudRate(BAUD)
        assert ph.write1ByteTxRx(port, 1, ADDR.ID, 12) == (sdk.COMM_SUCCESS, 0)
        assert ph.ping(port, 12)[1] == sdk.COMM_SUCCESS
        assert ph.ping(port, 1)[1] == sdk.COMM_RX_TIMEOUT
        assert list(bus.servos) == [12]


def test_reboot_turns_torque_off_and_keeps_eeprom():
    bus = BusEmulator([1])
    with connected(bus) as (port, ph):
        assert ph.write1ByteTxRx(port, 1, ADDR.OPERATING_MODE, 4)[1] == 0
        assert ph.write1ByteTxRx(port, 1, ADDR.TORQUE_ENABLE, 1)[1] == 0
        assert ph.reboot(port, 1) == (sdk.COMM_SUCCESS, 0)
        assert ph.read1ByteTxRx(port, 1, ADDR.TORQUE_ENABLE)[0] == 0
        assert ph.read1ByteTxRx(port, 1, ADDR.OPERATING_MODE)[0] == 4


def test_reg_write_action_and_factory_reset():
    bus = BusEmulator([1, 2])
    with connected(bus) as (port, ph):
        assert ph.regWriteTxRx(port, 1, ADDR.LED, 1, [1]) == (sdk.COMM_SUCCESS, 0)
        assert ph.read1ByteTxRx(port, 1, ADDR.REGISTERED_INSTRUCTION)[0] == 1
        assert ph.read1ByteTxRx(port, 1, ADDR.LED)[0] == 0  # not yet
        assert ph.action(port, p.BROADCAST_ID) == sdk.COMM_SUCCESS
        assert ph.read1ByteTxRx(port, 1, ADDR.LED)[0] == 1
        assert ph.factoryReset(port, 2, 0x02) == (sdk.COMM_SUCCESS, 0)  # keep ID and baud rate
        assert ph.read1ByteTxRx(port, 2, ADDR.RETURN_DELAY_TIME) == (250, sdk.COMM_SUCCESS, 0)


# -- servo model and hand motion without the pty ----------------------------------------------


def test_reverse_drive_mode_and_homing_offset():
    servo = ServoState(1, position_rad=0.5)
    plain = servo.get("present_position")
    assert plain == round(rad_to_ticks(0.5))
    assert servo.write(ADDR.DRIVE_MODE, bytes([1]), now=0.0) == 0
    assert servo.get("present_position") == 4096 - plain  # mirrored about 2048
    assert servo.write(ADDR.HOMING_OFFSET, (-100).to_bytes(4, "little", signed=True), now=0.0) == 0
    assert servo.get("present_position") == 4096 - plain - 100


def test_position_limits_clamp_the_goal():
    servo = ServoState(1, now=0.0)
    assert servo.write(ADDR.MAX_POSITION_LIMIT, (2200).to_bytes(4, "little"), now=0.0) == 0
    assert servo.write(ADDR.TORQUE_ENABLE, b"\x01", now=0.0) == 0
    assert servo.write(ADDR.GOAL_POSITION, (3000).to_bytes(4, "little"), now=0.0) == 0
    servo.step(2.0)
    assert servo.get("present_position") == 2200
    assert servo.get("position_trajectory") == 2200


def test_hand_motion_files(tmp_path):
    csv_path = tmp_path / "hand.csv"
    csv_path.write_text("t,1,2\n0,0.0,1.0\n1,0.5,1.0\n2,0.0,0.0\n")
    hand = HandMotion.from_file(csv_path)
    assert hand.ids == [1, 2]
    assert hand.position(1, 0.5) == pytest.approx(0.25)
    assert hand.position(1, 2.5) == pytest.approx(0.25)  # loops with the last time as period
    json_path = tmp_path / "hand.json"
    json_path.write_text(json.dumps({"t": [0, 1], "joints": {"3": [0.0, 1.0]}}))
    assert HandMotion.from_file(json_path).position(3, 0.25) == pytest.approx(0.25)
    bad = tmp_path / "bad.csv"
    bad.write_text("t,1\n0,0.1\n1,oops\n")
    with pytest.raises(ValueError, match=r"bad\.csv"):
        HandMotion.from_file(bad)
    bad.write_text("time;a\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*header"):
        HandMotion.from_file(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({"t": [0, 1], "joints": {"1": [0.0]}}))
    with pytest.raises(ValueError, match=r"bad\.json.*samples"):
        HandMotion.from_file(bad_json)


def test_builtin_hand_motion_is_smooth_and_loops():
    hand = HandMotion.builtin(range(1, 7))
    assert hand.ids == list(range(1, 7))
    gripper = [hand.position(6, t) for t in (0.0, 1.0, 2.3, 3.0, 6.8)]
    assert min(gripper) < 0.1 and max(gripper) > 0.7  # opens and closes
    assert hand.position(2, 0.3) == pytest.approx(hand.position(2, 8.3))
    steps = [abs(hand.position(1, t + 0.01) - hand.position(1, t)) for t in [k * 0.01 for k in range(800)]]
    assert max(steps) < 0.02  # no jumps, including across the loop
