"""The bus emulator keeps time like a wire and a USB adapter; the driver checks the real adapter's latency timer.

Timing is checked with lower bounds only (a loaded host makes everything slower, never
faster): a reply cannot reach the client before the model lets it.
"""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

sdk = pytest.importorskip("dynamixel_sdk")

from telecorder.collect.dynamixel import protocol as p  # noqa: E402
from telecorder.collect.dynamixel.bus import STATE_ADDR, STATE_LEN, BusPort, DynamixelBus  # noqa: E402
from telecorder.collect.dynamixel.control_table import ADDR, rad_to_ticks  # noqa: E402
from telecorder.collect.dynamixel.emulator import BusEmulator, FaultConfig  # noqa: E402
from telecorder.collect.dynamixel.latency_timer import (  # noqa: E402
    SYSFS_ROOT_ENV,
    LatencyTimerWarning,
    check_latency_timer,
    read_latency_timer_ms,
)
from telecorder.collect.dynamixel.wire import UsbAdapter, byte_time  # noqa: E402

IDS = list(range(1, 8))
MS = 1e-3


# -- the adapter model on its own (no clock involved) ----------------------------------------

def test_full_usb_packet_goes_at_once_and_the_rest_waits_a_whole_timer_period():
    adapter = UsbAdapter(1_000_000, 16 * MS, packet_bytes=64, now=0.0)  # full-speed chip: 62 data bytes a packet
    data = bytes(range(100))
    adapter.add(0.0, data)
    bt = byte_time(1_000_000)
    assert adapter.next_time() == pytest.approx(62 * bt)  # the 62nd byte fills the packet
    assert adapter.pop(61 * bt) == b""
    assert adapter.pop(62 * bt) == data[:62]
    # The full packet restarted the timer: the last 38 bytes (all in by 100 us) wait 16 ms from there.
    assert adapter.next_time() == pytest.approx(62 * bt + 16 * MS)
    assert adapter.pop(62 * bt + 15.9 * MS) == b""
    assert adapter.pop(62 * bt + 16 * MS) == data[62:]
    assert adapter.idle and adapter.next_time() is None


def test_an_idle_adapter_ticks_from_its_last_packet():
    adapter = UsbAdapter(1_000_000, 1 * MS, now=0.0)
    adapter.add(5.3 * MS, b"\x01" * 10)  # in by 5.31 ms: the timer, ticking every ms since 0, sends it at 6 ms
    assert adapter.next_time() == pytest.approx(6 * MS)
    assert adapter.pop(5.99 * MS) == b""
    assert len(adapter.pop(6 * MS)) == 10
    adapter.add(6.05 * MS, b"\x02" * 5)  # the next tick after the packet at 6 ms
    assert adapter.next_time() == pytest.approx(7 * MS)
    # A high-speed chip (U2D2) fits 510 bytes in a packet: 300 bytes go on a tick, not when complete.
    adapter.pop(7 * MS)
    adapter.add(7.2 * MS, bytes(300))
    assert adapter.next_time() == pytest.approx(8 * MS)
    assert len(adapter.pop(8 * MS)) == 80  # what has arrived by then
    assert adapter.next_time() == pytest.approx(9 * MS)


def test_held_bytes_keep_their_place_and_no_timer_means_each_packet_when_complete():
    adapter = UsbAdapter(1_000_000, 0.0, now=0.0)
    bt = byte_time(1_000_000)
    adapter.add(0.0, b"a" * 10, release=50 * MS)
    adapter.add(10 * bt, b"b" * 10)
    assert adapter.pop(1 * MS) == b""  # "b" arrived, but waits behind the held "a"
    assert adapter.next_time() == pytest.approx(50 * MS)
    assert adapter.pop(50 * MS) == b"a" * 10 + b"b" * 10
    adapter.add(60 * MS, b"c" * 20)
    assert adapter.next_time() == pytest.approx(60 * MS + 20 * bt)  # the whole packet, once in
    with pytest.raises(ValueError, match="latency timer"):
        UsbAdapter(57_600, -1.0)


def test_parser_tells_where_each_packet_ends_in_the_stream():
    """The emulator times a packet's last byte on the wire by its offset in what the host sent."""
    a, b = p.build_packet(1, p.PING), p.build_packet(2, p.READ, bytes([0, 0, 4, 0]))
    stream = b"\x00\xff" + a + b"junk" + b
    parser = p.PacketParser()
    got = parser.feed(stream[:5]) + parser.feed(stream[5:17]) + parser.feed(stream[17:])
    assert [(q.id, q.end) for q in got] == [(1, 2 + len(a)), (2, len(stream))]
    assert parser.consumed == len(stream)


# -- the emulator through the real SDK ------------------------------------------------------

@contextmanager
def connected(bus: BusEmulator, *, return_delay: int = 0, latency_timer_ms: float = 16.0
              ) -> Iterator[tuple[BusPort, object]]:
    for servo in bus.servos.values():
        servo.set("return_delay_time", return_delay)
    path = bus.start()
    port = BusPort(path, latency_timer_ms=latency_timer_ms)
    try:
        assert port.openPort()
        assert port.setBaudRate(bus.baudrate)
        yield port, sdk.PacketHandler(2.0)
    finally:
        if port.is_open:
            port.closePort()
        bus.stop()


def _status_packets(port: BusPort, count: int, timeout: float = 20.0) -> list[p.Packet]:
    parser, out = p.PacketParser(), []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        out += parser.feed(port.ser.read(4096))
        time.sleep(0.0002)
    return out


def _sync_reader(port: BusPort, ph: object) -> object:
    reader = sdk.GroupSyncRead(port, ph, STATE_ADDR, STATE_LEN)
    for i in IDS:
        assert reader.addParam(i)
    return reader


def test_sync_read_at_57600_takes_at_least_its_wire_time():
    emu = BusEmulator(IDS, baudrate=57_600, usb_latency_ms=0)
    with connected(emu) as (port, ph):
        for i in IDS:
            emu.set_position(i, 0.1 * i)
        reader = _sync_reader(port, ph)
        start = time.monotonic()
        assert reader.txRxPacket() == sdk.COMM_SUCCESS
        elapsed = time.monotonic() - start
        assert [reader.getData(i, ADDR.PRESENT_POSITION, 4) for i in IDS] == [round(rad_to_ticks(0.1 * i)) for i in IDS]
    instruction = len(p.build_packet(p.BROADCAST_ID, p.SYNC_READ, bytes(4 + len(IDS))))
    replies = len(IDS) * len(p.build_status(1, 0, bytes(STATE_LEN)))
    assert (instruction, replies) == (21, 147)
    assert elapsed >= (instruction + replies) * 10 / 57_600  # 29.2 ms


def test_each_reply_waits_its_return_delay_time():
    emu = BusEmulator(IDS, baudrate=1_000_000, usb_latency_ms=0)
    with connected(emu, return_delay=254) as (port, ph):  # 508 us, the longest
        reader = _sync_reader(port, ph)
        start = time.monotonic()
        assert reader.txRxPacket() == sdk.COMM_SUCCESS
        elapsed = time.monotonic() - start
    assert elapsed >= len(IDS) * 254 * 2e-6 + (21 + 147) * 10 / 1_000_000  # 3.7 ms


def test_a_servo_answers_only_once_the_whole_instruction_has_arrived():
    emu = BusEmulator(IDS, baudrate=57_600, usb_latency_ms=0)
    with connected(emu) as (port, _ph):
        goals = b"".join(bytes([i]) + (2048).to_bytes(4, "little") for i in IDS)
        sync_write = p.build_packet(p.BROADCAST_ID, p.SYNC_WRITE, bytes([ADDR.GOAL_POSITION, 0, 4, 0]) + goals)
        ping = p.build_packet(3, p.PING)
        port.clearPort()
        start = time.monotonic()
        port.writePort(sync_write + ping)  # the ping queues behind the 49-byte write on the wire
        got = _status_packets(port, 1)
        elapsed = time.monotonic() - start
    assert [r.id for r in got] == [3]
    assert elapsed >= (len(sync_write) + len(ping) + 14) * 10 / 57_600  # 12.7 ms


def test_a_16ms_latency_timer_paces_a_read_loop():
    """Each read of a loop waits for the adapter's next tick: one timer period per read."""
    emu = BusEmulator([1], baudrate=1_000_000, usb_latency_ms=16)
    reads = 5
    with connected(emu, latency_timer_ms=16) as (port, ph):
        start = time.monotonic()
        for _ in range(reads):
            assert ph.read4ByteTxRx(port, 1, ADDR.PRESENT_POSITION) == (2048, sdk.COMM_SUCCESS, 0)
        elapsed = time.monotonic() - start
    assert elapsed >= (reads - 1) * 16 * MS


def test_faults_still_apply_on_a_timed_bus():
    emu = BusEmulator([1, 2, 3], baudrate=1_000_000, faults=FaultConfig(latency_s=0.01, dead_after_s={3: 0.0}))
    with connected(emu, latency_timer_ms=16) as (port, ph):  # a deadline past the 10 ms fault
        start = time.monotonic()
        assert ph.ping(port, 1)[1] == sdk.COMM_SUCCESS
        assert time.monotonic() - start >= 0.01
        assert ph.ping(port, 3)[1] == sdk.COMM_RX_TIMEOUT


def test_driver_deadline_counts_the_wire_time_of_what_it_just_sent():
    """At 57600 baud a sync read sent right after a sync write arrives 38 ms later; the SDK's deadline is 30 ms."""
    emu = BusEmulator(IDS, baudrate=57_600, usb_latency_ms=1)
    path = emu.start()
    bus = DynamixelBus(path, IDS, baudrate=57_600, latency_timer_ms=1)
    try:
        bus.open()
        bus.minimize_return_delay()
        port = bus._port
        armed = port.setPacketTimeout
        margins: list[float] = []  # each reply deadline past the moment the bytes before it leave the wire

        def recording(packet_length, replies=1):
            armed(packet_length, replies)
            margins.append(port._deadline - port._tx_end)

        port.setPacketTimeout = recording
        cycles = 8
        for _ in range(cycles):
            bus.write_goal_positions(bus.read_state(velocity=True, current=True).position)
        # Checked on the armed deadlines, not on timeouts: on a loaded host the emulator's thread may
        # answer late whatever the deadline, while a deadline that ignores the write is short every time.
        assert len(margins) >= cycles and min(margins) > 0, margins
        assert bus.errors.failed_cycles == 0, bus.errors
    finally:
        bus.close()
        emu.stop()


# -- the real adapter's latency timer, from sysfs --------------------------------------------

def _fake_sysfs(root: Path, device: str, ms: int) -> Path:
    d = root / "bus" / "usb-serial" / "devices" / device
    d.mkdir(parents=True)
    (d / "latency_timer").write_text(f"{ms}\n")
    return d / "latency_timer"


def test_latency_timer_is_read_through_by_id_links_and_warned_about_once(tmp_path):
    root = tmp_path / "sys"
    timer = _fake_sysfs(root, "ttyUSB41", 16)
    _fake_sysfs(root, "ttyUSB42", 1)
    dev = tmp_path / "dev"
    (dev / "serial" / "by-id").mkdir(parents=True)
    (dev / "ttyUSB41").touch()
    link = dev / "serial" / "by-id" / "usb-ROBOTIS_U2D2_FT1234-if00-port0"
    link.symlink_to(dev / "ttyUSB41")
    with pytest.warns(LatencyTimerWarning) as record:
        assert check_latency_timer(link, root) == 16
    text = str(record[0].message)
    assert str(link) in text and "16 ms" in text
    assert f"echo 1 | sudo tee {timer}" in text
    assert 'ATTR{latency_timer}="1"' in text and "/etc/udev/rules.d/" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_latency_timer(link, root) == 16  # once per adapter
        assert check_latency_timer(dev / "ttyUSB42", root) == 1  # tuned: nothing to say
        assert check_latency_timer(dev / "ttyUSB43", root) is None  # no such adapter
        assert check_latency_timer("/dev/pts/3", root) is None  # not a USB-serial port
    (root / "bus/usb-serial/devices/ttyUSB42/latency_timer").write_text("garbage")
    assert read_latency_timer_ms(dev / "ttyUSB42", root) is None


@pytest.fixture
def emulator_path() -> Iterator[str]:
    emu = BusEmulator([1, 2], usb_latency_ms=1)
    yield emu.start()
    emu.stop()


def test_driver_warns_about_a_slow_adapter_and_waits_by_its_timer(tmp_path, monkeypatch, emulator_path):
    """The emulator's pty behind a link named like a USB adapter (as udev names them): the driver reads its timer."""
    node = tmp_path / "ttyUSB57"
    node.symlink_to(emulator_path)
    _fake_sysfs(tmp_path / "sys", "ttyUSB57", 16)
    monkeypatch.setenv(SYSFS_ROOT_ENV, str(tmp_path / "sys"))
    bus = DynamixelBus(str(node), [1, 2])
    with pytest.warns(LatencyTimerWarning, match="ttyUSB57/latency_timer"):
        assert bus.open() == {1: 1200, 2: 1200}
    try:
        assert bus.adapter_latency_timer_ms == 16 and bus.latency_timer_ms == 16
        assert np.allclose(bus.read_state().position, 0, atol=1e-3)
    finally:
        bus.close()
    # A tuned adapter: no warning, and the driver waits by 1 ms.
    (tmp_path / "sys/bus/usb-serial/devices/ttyUSB57/latency_timer").write_text("1\n")
    bus = DynamixelBus(str(node), [1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bus.open()
    bus.close()
    assert bus.latency_timer_ms == 1
    # Told explicitly, the driver keeps the caller's value.
    bus = DynamixelBus(str(node), [1, 2], latency_timer_ms=4)
    bus.open()
    bus.close()
    assert bus.latency_timer_ms == 4


def test_no_warning_on_a_pseudo_terminal(tmp_path, monkeypatch, emulator_path):
    _fake_sysfs(tmp_path / "sys", "ttyUSB0", 16)
    monkeypatch.setenv(SYSFS_ROOT_ENV, str(tmp_path / "sys"))
    link = tmp_path / "leader.tty"
    link.symlink_to(emulator_path)
    bus = DynamixelBus(str(link), [1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bus.open()
    bus.close()
    assert bus.adapter_latency_timer_ms is None and bus.latency_timer_ms == 16  # SDK's default deadline


# -- the options on the command line ---------------------------------------------------------

def _telecorder(*args: str) -> list[str]:
    return [sys.executable, "-m", "telecorder.cli", *args]


def test_emulate_command_takes_the_usb_latency_and_baud_rate():
    proc = subprocess.Popen(_telecorder("emulate", "--ids", "1", "--hand", "none", "--baudrate", "57600",
                                        "--usb-latency-ms", "16"), stdout=subprocess.PIPE, text=True)
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/"), path
        assert "57600 baud, USB latency timer 16 ms" in proc.stdout.readline()
        port, ph = BusPort(path, latency_timer_ms=16), sdk.PacketHandler(2.0)
        assert port.openPort() and port.setBaudRate(57_600)
        try:
            start = time.monotonic()
            for _ in range(4):
                assert ph.ping(port, 1) == (1200, sdk.COMM_SUCCESS, 0)
            assert time.monotonic() - start >= 3 * 16 * MS
        finally:
            port.closePort()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    bad = subprocess.run(_telecorder("emulate", "--usb-latency-ms", "300"), capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "0..255" in bad.stderr


def test_collect_emulator_options_reach_the_emulator(tmp_path):
    from telecorder.cli import build_parser
    from telecorder.collect.factory import DeviceConfig, EmulatorOptions, make_devices

    args = build_parser().parse_args(["collect", "--device", "kinesthetic", "--emulate", "--out", str(tmp_path / "x"),
                                      "--emulate-usb-latency-ms", "16"])
    assert args.emulate_usb_latency_ms == 16
    bad = subprocess.run([sys.executable, "-m", "telecorder.cli", "collect", "--emulate-usb-latency-ms", "-1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--emulate-usb-latency-ms" in bad.stderr
    hand = tmp_path / "hand.csv"
    hand.write_text("t,1,2,3,4,5,6\n0,0,0,0,0,0,0.5\n10,0,0,0,0,0,0.5\n")
    robot, teleop, _ = make_devices(DeviceConfig(
        robot="dynamixel", device="kinesthetic", emulate=True,
        emulator=EmulatorOptions(hand_file=hand, usb_latency_ms=args.emulate_usb_latency_ms)))
    try:
        robot.connect()
        start = time.monotonic()
        for _ in range(4):
            robot.observe()
        assert time.monotonic() - start >= 3 * 16 * MS
    finally:
        robot.disconnect()
        teleop.disconnect()



def test_an_unplugged_adapter_is_one_clear_error():
    from telecorder.errors import DeviceError

    emu = BusEmulator([1, 2])
    path = emu.start()
    bus = DynamixelBus(path, [1, 2])
    try:
        bus.open()
        emu.stop()  # the line hangs up under the open port, as when the cable is pulled
        with pytest.raises(DeviceError, match=f"{path}: the serial port stopped working .*unplugged"):
            bus.read_state()
    finally:
        bus.close()
        emu.stop()
