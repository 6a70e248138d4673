"""A chain of emulated X-series servos behind a pseudo-terminal, answering Dynamixel Protocol 2.0.

``dynamixel_sdk`` (or any serial client) opens the pty path as it would a U2D2's
``/dev/ttyUSB0``; one serving thread parses instruction packets and writes status packets
back, servo by servo, as the real chain does (each servo sends its own status packet,
after its Return Delay Time). Implemented: Ping (also broadcast), Read, Write, Reg Write,
Action, Factory Reset, Reboot, Clear, Sync Read/Write, Fast Sync Read, Bulk Read/Write,
Fast Bulk Read; a packet with a bad CRC addressed to one servo gets a CRC-error status;
an unknown instruction gets an instruction error. Status Return Level and the Secondary
ID are honoured, and a servo only hears the client when the line speed the client set
matches the servo's Baud Rate(8).

Time is kept as on a real bus (the model is in :mod:`.wire`): every instruction takes its
wire time at the bus baud rate before a servo acts on it, every reply its Return Delay Time
and its own wire time, and a USB adapter (FTDI latency timer, 1 ms by default as drivers
set it; 16 ms from the factory) decides when the bytes reach the client. Replies are
scheduled on ``time.monotonic`` deadlines, so the emulator's own work overlaps with the
time it models instead of adding to it.

Faults (:class:`FaultConfig`) drop or corrupt replies, delay them (all, or some past a
client's deadline, as a slow USB adapter can; :meth:`BusEmulator.delay_next_reply` does it
once), or let servos die. Replies leave in the order the instructions came, one per
instruction that asks for one, as on a real bus.
With the torque off, servos follow a :class:`HandMotion` as if someone moved the arm.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import random
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from . import protocol as p
from .control_table import ADDR, TICKS_PER_REV, baud_index, model_spec, rad_to_ticks
from .hand import HandMotion
from .line import PtyLine
from .servo import ServoState
from .wire import HIGH_SPEED_PACKET, RETURN_DELAY_UNIT_S, UsbAdapter, byte_time

__all__ = ["BusEmulator", "BusStats", "FaultConfig", "HandMotion", "ServoState"]

_RESYNC_IDLE_S = 0.005  # a partial packet left this long is garbage (the SDK waits far longer)
_READ_CHUNK = 4096
_CLEAR_MAGIC = b"\x01\x44\x58\x4c\x22"
_PR_SET_TIMERSLACK = 29
MAX_USB_LATENCY_MS = 255.0  # the FTDI latency timer's range is 1..255 ms


def _tight_timer_slack() -> None:
    """Let this thread's timed waits end within a microsecond of their deadline.

    Linux lets a sleeping thread oversleep by its timer slack (50 us by default) to batch
    wake-ups; the replies would reach the client that much later than the model says.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)


@dataclass
class FaultConfig:
    """Faults injected into the replies. Rates are probabilities per status packet."""

    drop_rate: float = 0.0  # a reply is not sent
    crc_error_rate: float = 0.0  # a reply's CRC is corrupted
    latency_s: float = 0.0  # added before each reply
    dead_after_s: dict[int, float] = field(default_factory=dict)  # servo id -> seconds after start() it goes silent
    # A reply held back late_s (past a client's deadline) as a slow USB adapter can; the
    # replies after it queue behind it, in order, as they would in the adapter.
    late_rate: float = 0.0
    late_s: float = 0.1

    def __post_init__(self) -> None:
        for name in ("drop_rate", "crc_error_rate", "late_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        for name in ("latency_s", "late_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class BusStats:
    """Counters of the serving thread (plain ints, read them from any thread)."""

    packets_received: int = 0  # instruction packets with a good CRC
    crc_errors_received: int = 0
    replies_sent: int = 0
    replies_dropped: int = 0  # by the drop fault
    replies_corrupted: int = 0  # by the CRC fault
    bytes_received: int = 0
    bytes_sent: int = 0


@dataclass
class _Reply:
    servo: ServoState
    packet: bytes


class BusEmulator:
    """Servos with the given IDs on one bus, all of one model and configured for ``baudrate``.

    ``usb_latency_ms`` is the adapter's latency timer (1 ms: a U2D2 tuned as GELLO and LeRobot
    instruct; 16 ms: as it leaves the factory; 0: no adapter delay), ``usb_packet_bytes`` its
    USB packet size (512: high-speed FTDI chips such as the U2D2's; 64: full-speed ones such
    as the FT232R). See :mod:`.wire` for how they make time.
    """

    def __init__(self, ids: Iterable[int], model: str = "xl330-m288", baudrate: int = 1_000_000, *,
                 hand: HandMotion | None = None, faults: FaultConfig | None = None, seed: int | None = None,
                 physics_hz: float = 1000.0, usb_latency_ms: float = 1.0,
                 usb_packet_bytes: int = HIGH_SPEED_PACKET) -> None:
        id_list = [int(i) for i in ids]
        if not id_list:
            raise ValueError("a bus needs at least one servo id")
        if len(set(id_list)) != len(id_list):
            raise ValueError(f"servo ids must be unique, got {id_list}")
        bad = [i for i in id_list if not 0 <= i <= p.MAX_ID]
        if bad:
            raise ValueError(f"servo ids must be 0..{p.MAX_ID}, got {bad}")
        self.model = model_spec(model).name
        baud_index(baudrate)  # validates
        self.baudrate = baudrate
        if not 0 <= usb_latency_ms <= MAX_USB_LATENCY_MS:
            raise ValueError(f"the USB latency timer must be 0..{MAX_USB_LATENCY_MS:g} ms, got {usb_latency_ms}")
        self.usb_latency_ms = float(usb_latency_ms)
        UsbAdapter(baudrate, 0.0, usb_packet_bytes)  # validates the packet size
        self.usb_packet_bytes = int(usb_packet_bytes)
        self._byte_s = byte_time(baudrate)
        self.hand = hand
        self.faults = faults or FaultConfig()
        unknown = set(self.faults.dead_after_s) - set(id_list)
        if unknown:
            raise ValueError(f"dead_after_s names servos not on the bus: {sorted(unknown)}")
        self._rng = random.Random(seed)
        self._t0 = time.monotonic()
        self._chain = [
            ServoState(i, self.model, baudrate=baudrate, now=self._t0, physics_hz=physics_hz,
                       position_rad=hand.position(i, 0.0) if hand is not None and i in hand.joints else 0.0,
                       rng=random.Random(self._rng.getrandbits(32)))
            for i in sorted(id_list)
        ]
        self.lock = threading.RLock()  # guards servo state; hold it to inspect servos from another thread
        self.stats = BusStats()
        self._parser = p.PacketParser(keep_corrupt=True)
        self._adapter = UsbAdapter(baudrate, self.usb_latency_ms / 1000.0, self.usb_packet_bytes)
        self._tx_free = self._rx_free = 0.0  # when the host's bytes / the servos' bytes already sent leave the wire
        self._chunks: deque[tuple[int, float]] = deque()  # (stream offset, wire start) of each read from the host
        self._fed = 0  # bytes read from the host so far
        self._due: deque[tuple[float, p.Packet]] = deque()  # instructions on the wire, by the time they end
        self._line: PtyLine | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r = self._wake_w = -1
        self._links: list[Path] = []
        self._holds: list[tuple[int | None, float]] = []  # delay_next_reply() requests, oldest first
        self.path: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def servos(self) -> dict[int, ServoState]:
        """Servos by their current ID (an ID written over the bus moves the entry)."""
        with self.lock:
            return {s.id: s for s in self._chain}

    def start(self) -> str:
        """Open the pty and start serving; returns the device path a client opens."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._line = PtyLine(self.baudrate)
        self._wake_r, self._wake_w = os.pipe()
        self.path = self._line.path
        now = time.monotonic()
        with self.lock:
            self._t0 = now
            for s in self._chain:
                s.step(now)
        self._parser = p.PacketParser(keep_corrupt=True)
        self._adapter = UsbAdapter(self.baudrate, self.usb_latency_ms / 1000.0, self.usb_packet_bytes, now=now)
        self._tx_free = self._rx_free = now
        self._chunks.clear()
        self._due.clear()
        self._fed = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"dxl-emulator {self.path}", daemon=True)
        self._thread.start()
        for link in self._links:
            self._make_link(link)
        return self.path

    def stop(self) -> None:
        """Stop serving, close the pty and remove links; safe to call twice.

        A client that still has the port open then sees the line hang up (its next read or
        write fails; our driver raises a DeviceError naming the port), as when a U2D2 is unplugged.
        """
        if self._thread is not None:
            self._stop.set()
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            self._thread.join()
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._line is not None:
            self._line.close()
            self._line = None
        self.path = None
        for link in self._links:
            with contextlib.suppress(FileNotFoundError):
                if link.is_symlink():
                    link.unlink()
        self._links.clear()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def link(self, path: str | os.PathLike[str]) -> None:
        """Make ``path`` a symlink to the pty (e.g. ``leader.tty``); it is removed on stop()."""
        link = Path(path)
        if link.exists() and not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a symlink; not replacing it")
        self._links.append(link)
        if self.path is not None:
            self._make_link(link)

    def _make_link(self, link: Path) -> None:
        if link.is_symlink():
            link.unlink()
        assert self.path is not None
        link.symlink_to(self.path)

    # -- test hooks ------------------------------------------------------------------------

    def set_position(self, servo_id: int, radians: float) -> None:
        """Put a servo's shaft at a physical angle (as a hand would), by its current ID."""
        with self.lock:
            self._by_id(servo_id).set_position_rad(radians)

    def delay_next_reply(self, seconds: float, servo_id: int | None = None) -> None:
        """Hold the next status packet (of ``servo_id``, or of any servo) back ``seconds``.

        What comes after queues behind it in order, as behind a slow USB adapter: a client
        whose deadline is shorter sees the reply arrive late.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        with self.lock:
            self._holds.append((servo_id, float(seconds)))

    def _take_hold(self, servo_id: int) -> float:
        with self.lock:
            for k, (sid, seconds) in enumerate(self._holds):
                if sid is None or sid == servo_id:
                    del self._holds[k]
                    return seconds
        return 0.0

    def elapsed(self) -> float:
        """Seconds since start() (or construction): the clock of hand motion and dead faults."""
        return time.monotonic() - self._t0

    def _by_id(self, servo_id: int) -> ServoState:
        for s in self._chain:
            if s.id == servo_id:
                return s
        raise KeyError(f"no servo with id {servo_id} on the bus")

    # -- serving ---------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._line is not None
        _tight_timer_slack()
        master = self._line.master
        last_rx = time.monotonic()
        while not self._stop.is_set():
            self._advance()
            wake = self._next_event()
            timeout = None if wake is None else max(0.0, wake - time.monotonic())
            if self._parser.pending:
                timeout = _RESYNC_IDLE_S if timeout is None else min(timeout, _RESYNC_IDLE_S)
            try:
                ready, _, _ = select.select([master, self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                return
            if master not in ready:
                if self._parser.pending and time.monotonic() - last_rx >= _RESYNC_IDLE_S:
                    # Everything still buffered after an idle gap is stale: a false header
                    # announced bytes that never came. Each resync drops at least one byte.
                    while self._parser.pending:
                        self._queue(self._parser.resync())
                continue
            try:
                data = os.read(master, _READ_CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                # EIO: no client has the slave open right now; wait for one without spinning.
                self._stop.wait(0.05)
                continue
            last_rx = time.monotonic()
            self.stats.bytes_received += len(data)
            self._receive(data, last_rx)

    def _receive(self, data: bytes, now: float) -> None:
        """Bytes from the host go onto the wire after those before them."""
        start = max(now, self._tx_free)
        self._tx_free = start + len(data) * self._byte_s
        self._chunks.append((self._fed, start))
        self._fed += len(data)
        self._queue(self._parser.feed(data))

    def _queue(self, packets: list[p.Packet]) -> None:
        """Each packet waits until its last byte has crossed the wire."""
        for pkt in packets:
            while len(self._chunks) > 1 and self._chunks[1][0] < pkt.end:
                self._chunks.popleft()  # chunks wholly before this packet's end are not needed again
            offset, start = self._chunks[0]
            self._due.append((start + (pkt.end - offset) * self._byte_s, pkt))

    def _next_event(self) -> float | None:
        times = [t for t in (self._due[0][0] if self._due else None, self._adapter.next_time()) if t is not None]
        return min(times) if times else None

    def _advance(self) -> None:
        """Act on the instructions that have arrived, then hand the client what reached it."""
        while self._due and self._due[0][0] <= time.monotonic():
            end, pkt = self._due.popleft()
            with self.lock:
                replies = self._dispatch(pkt, time.monotonic())
            self._schedule(replies, end)
        data = self._adapter.pop(time.monotonic())
        if data:
            self._write(data)

    def _schedule(self, replies: list[_Reply], instruction_end: float) -> None:
        """Put the replies on the wire: each a Return Delay Time (plus faults) after the one before it."""
        t = max(instruction_end, self._rx_free)
        for reply in replies:
            t += self.faults.latency_s + reply.servo.table[ADDR.RETURN_DELAY_TIME] * RETURN_DELAY_UNIT_S
            late = self._take_hold(reply.servo.id)
            if self.faults.late_rate and self._rng.random() < self.faults.late_rate:
                late += self.faults.late_s
            if self._rng.random() < self.faults.drop_rate:
                self.stats.replies_dropped += 1
                continue
            packet = reply.packet
            if self._rng.random() < self.faults.crc_error_rate:
                packet = packet[:-1] + bytes([packet[-1] ^ 0xA5])
                self.stats.replies_corrupted += 1
            end = t + len(packet) * self._byte_s
            # A held reply waits in the adapter, and what the adapter gets after it waits behind it.
            self._adapter.add(t, packet, release=end + late if late else 0.0)
            self.stats.replies_sent += 1
            t = end
        self._rx_free = t

    def _write(self, data: bytes) -> None:
        assert self._line is not None
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._line.master, view)
            except BlockingIOError:
                # The client is not reading and the pty buffer is full: the bytes are lost, as on a wire.
                if not select.select([], [self._line.master], [], 0.05)[1]:
                    return
                continue
            except OSError:
                return
            self.stats.bytes_sent += n
            view = view[n:]

    # -- instruction handling (called with the lock held) ----------------------------------

    def _listeners(self, now: float) -> list[ServoState]:
        """Servos that hear the client: alive, at the client's line speed, speaking Protocol 2.0."""
        assert self._line is not None
        speed = self._line.speed()
        t = now - self._t0
        out = []
        for s in self._chain:
            dead_at = self.faults.dead_after_s.get(s.serial)
            if dead_at is not None and t >= dead_at:
                continue
            if speed is not None and speed != s.baudrate:
                continue
            if s.table[ADDR.PROTOCOL_TYPE] != 2:
                continue
            out.append(s)
        return out

    def _step(self, servo: ServoState, now: float, *, refresh: bool = True) -> None:
        if self.hand is not None and servo.serial in self.hand.joints and not servo.torque_enabled:
            t = now - self._t0
            ticks = rad_to_ticks(self.hand.position(servo.serial, t))
            rate = self.hand.velocity(servo.serial, t) * (TICKS_PER_REV / (2 * math.pi))
            servo.step(now, ticks, rate, refresh=refresh)
        else:
            servo.step(now, refresh=refresh)

    def _status(self, servo: ServoState, error: int, data: bytes = b"", status_id: int | None = None) -> _Reply:
        if servo.hardware_error:
            error |= p.ERR_ALERT
        return _Reply(servo, p.build_status(servo.id if status_id is None else status_id, error, data))

    def _dispatch(self, pkt: p.Packet, now: float) -> list[_Reply]:
        listeners = self._listeners(now)
        if not pkt.crc_ok:
            self.stats.crc_errors_received += 1
            if pkt.id == p.BROADCAST_ID:
                return []
            # Real X-series servos answer a corrupt packet addressed to them with a CRC error.
            return [self._status(s, p.ERR_CRC) for s in listeners
                    if s.id == pkt.id and self._answers(s, pkt.instruction)]
        self.stats.packets_received += 1
        handler = self._HANDLERS.get(pkt.instruction)
        if pkt.id == p.BROADCAST_ID:
            targets, answering = listeners, set(map(id, listeners))
        else:
            targets = [s for s in listeners if s.id == pkt.id or s.table[ADDR.SECONDARY_ID] == pkt.id]
            # A servo addressed through its Secondary ID acts but stays silent.
            answering = {id(s) for s in targets if s.id == pkt.id}
        if handler is None:
            if pkt.id == p.BROADCAST_ID:
                return []
            return [self._status(s, p.ERR_INSTRUCTION) for s in targets
                    if id(s) in answering and self._answers(s, pkt.instruction)]
        return handler(self, pkt, targets, answering, now)

    @staticmethod
    def _answers(servo: ServoState, instruction: int) -> bool:
        """Status Return Level: 0 answers Ping only, 1 also the reads, 2 everything."""
        level = servo.table[ADDR.STATUS_RETURN_LEVEL]
        if instruction == p.PING:
            return True
        if instruction in (p.READ, p.SYNC_READ, p.FAST_SYNC_READ, p.BULK_READ, p.FAST_BULK_READ):
            return level >= 1
        return level >= 2

    def _unicast(self, pkt: p.Packet, targets: list[ServoState], answering: set[int],
                 act: Callable[[ServoState], tuple[int, bytes]], *, reply_to_broadcast: bool = False) -> list[_Reply]:
        replies = []
        for s in targets:
            status_id = s.id  # before the instruction can change it
            err, data = act(s)
            if id(s) in answering and (pkt.id != p.BROADCAST_ID or reply_to_broadcast) \
                    and self._answers(s, pkt.instruction):
                replies.append(self._status(s, err, data, status_id))
        return replies

    def _ping(self, pkt, targets, answering, now):
        def act(s: ServoState) -> tuple[int, bytes]:
            return p.ERR_NONE, s.get("model_number").to_bytes(2, "little") + bytes([s.get("firmware_version")])

        return self._unicast(pkt, targets, answering, act, reply_to_broadcast=True)

    def _read(self, pkt, targets, answering, now):
        if pkt.id == p.BROADCAST_ID:
            return []
        if len(pkt.params) != 4:
            return self._unicast(pkt, targets, answering, lambda s: (p.ERR_DATA_LENGTH, b""))
        address = int.from_bytes(pkt.params[0:2], "little")
        length = int.from_bytes(pkt.params[2:4], "little")
        return self._unicast(pkt, targets, answering, lambda s: self._read_one(s, address, length, now))

    def _read_one(self, s: ServoState, address: int, length: int, now: float) -> tuple[int, bytes]:
        self._step(s, now)
        err, data = s.read(address, length)
        if err:
            # The requested length still comes back (zeros), so a client indexing the data
            # after checking only the comm result does not crash on an error reply.
            data = bytes(min(max(length, 0), p.MAX_LENGTH - 8))
        return err, data

    def _write_instr(self, pkt, targets, answering, now):
        if len(pkt.params) < 3:
            return self._unicast(pkt, targets, answering, lambda s: (p.ERR_DATA_LENGTH, b""))
        address = int.from_bytes(pkt.params[0:2], "little")
        data = pkt.params[2:]

        def act(s: ServoState) -> tuple[int, bytes]:
            self._step(s, now, refresh=False)  # the write refreshes
            return s.write(address, data, now), b""

        return self._unicast(pkt, targets, answering, act)

    def _reg_write(self, pkt, targets, answering, now):
        if len(pkt.params) < 3:
            return self._unicast(pkt, targets, answering, lambda s: (p.ERR_DATA_LENGTH, b""))
        address = int.from_bytes(pkt.params[0:2], "little")
        return self._unicast(pkt, targets, answering, lambda s: (s.reg_write(address, pkt.params[2:]), b""))

    def _action(self, pkt, targets, answering, now):
        def act(s: ServoState) -> tuple[int, bytes]:
            self._step(s, now)
            return s.action(now), b""

        return self._unicast(pkt, targets, answering, act)

    def _reboot(self, pkt, targets, answering, now):
        def act(s: ServoState) -> tuple[int, bytes]:
            self._step(s, now)
            s.reboot(now)
            return p.ERR_NONE, b""

        return self._unicast(pkt, targets, answering, act)

    def _factory_reset(self, pkt, targets, answering, now):
        option = pkt.params[0] if len(pkt.params) == 1 else -1
        if pkt.id == p.BROADCAST_ID and option == 0xFF:
            return []  # firmware refuses a broadcast reset-all, so a bus never ends up all ID 1
        return self._unicast(pkt, targets, answering, lambda s: (s.factory_reset(option, now), b""))

    def _clear(self, pkt, targets, answering, now):
        def act(s: ServoState) -> tuple[int, bytes]:
            if pkt.params != _CLEAR_MAGIC:
                return p.ERR_DATA_RANGE, b""
            self._step(s, now)
            return s.clear_multi_turn(), b""

        return self._unicast(pkt, targets, answering, act)

    def _sync_read(self, pkt, targets, answering, now):
        if pkt.id != p.BROADCAST_ID or len(pkt.params) < 5:
            return self._unicast(pkt, targets, answering, lambda s: (p.ERR_INSTRUCTION, b""))
        address = int.from_bytes(pkt.params[0:2], "little")
        length = int.from_bytes(pkt.params[2:4], "little")
        requests = [(sid, address, length) for sid in pkt.params[4:]]
        if pkt.instruction == p.FAST_SYNC_READ:
            return self._fast_read(requests, targets, now)
        return self._multi_read(pkt, requests, targets, now)

    def _bulk_read(self, pkt, targets, answering, now):
        params = pkt.params
        if pkt.id != p.BROADCAST_ID or not params or len(params) % 5:
            return self._unicast(pkt, targets, answering, lambda s: (p.ERR_INSTRUCTION, b""))
        requests = [(params[i], int.from_bytes(params[i + 1 : i + 3], "little"),
                     int.from_bytes(params[i + 3 : i + 5], "little")) for i in range(0, len(params), 5)]
        if pkt.instruction == p.FAST_BULK_READ:
            return self._fast_read(requests, targets, now)
        return self._multi_read(pkt, requests, targets, now)

    def _multi_read(self, pkt, requests, targets, now) -> list[_Reply]:
        """Sync/Bulk Read: each listed servo sends its own status packet, in the order listed."""
        by_id = {s.id: s for s in targets}
        replies = []
        for sid, address, length in requests:
            s = by_id.get(sid)
            if s is None or not self._answers(s, pkt.instruction):
                continue
            err, data = self._read_one(s, address, length, now)
            replies.append(self._status(s, err, data))
        return replies

    def _fast_read(self, requests, targets, now) -> list[_Reply]:
        """Fast Sync/Bulk Read: one status packet from ID 0xFE that the listed servos fill in turn.

        Each servo appends ``error, id, data`` and the CRC of the packet so far, so the last
        CRC covers everything; there is no byte stuffing. A missing servo cuts the packet
        short, as its silence would on the wire.
        """
        by_id = {s.id: s for s in targets}
        total = 1 + sum(4 + length for _, _, length in requests)
        packet = bytearray(p.HEADER + bytes([p.RESERVED, p.BROADCAST_ID, total & 0xFF, total >> 8, p.STATUS]))
        replies = []
        for sid, address, length in requests:
            s = by_id.get(sid)
            if s is None or not self._answers(s, p.FAST_SYNC_READ):
                break
            err, data = self._read_one(s, address, length, now)
            if s.hardware_error:
                err |= p.ERR_ALERT
            start = len(packet) if replies else 0
            packet += bytes([err, sid]) + data
            crc = p.crc16(packet)
            packet += bytes([crc & 0xFF, crc >> 8])
            replies.append(_Reply(s, bytes(packet[start:])))
        return replies

    def _sync_write(self, pkt, targets, answering, now):
        params = pkt.params
        if pkt.id != p.BROADCAST_ID or len(params) < 4:
            return []
        address = int.from_bytes(params[0:2], "little")
        length = int.from_bytes(params[2:4], "little")
        if length == 0 or (len(params) - 4) % (length + 1):
            return []
        by_id = {s.id: s for s in targets}
        for i in range(4, len(params), length + 1):
            s = by_id.get(params[i])
            if s is not None:
                self._step(s, now, refresh=False)  # the write refreshes
                s.write(address, params[i + 1 : i + 1 + length], now)
        return []

    def _bulk_write(self, pkt, targets, answering, now):
        params = pkt.params
        if pkt.id != p.BROADCAST_ID:
            return []
        by_id = {s.id: s for s in targets}
        i = 0
        while i + 5 <= len(params):
            sid = params[i]
            address = int.from_bytes(params[i + 1 : i + 3], "little")
            length = int.from_bytes(params[i + 3 : i + 5], "little")
            data = params[i + 5 : i + 5 + length]
            if len(data) != length:
                break
            s = by_id.get(sid)
            if s is not None:
                self._step(s, now, refresh=False)  # the write refreshes
                s.write(address, data, now)
            i += 5 + length
        return []

    _HANDLERS: ClassVar[dict[int, Callable[..., list[_Reply]]]] = {
        p.PING: _ping,
        p.READ: _read,
        p.WRITE: _write_instr,
        p.REG_WRITE: _reg_write,
        p.ACTION: _action,
        p.FACTORY_RESET: _factory_reset,
        p.REBOOT: _reboot,
        p.CLEAR: _clear,
        p.SYNC_READ: _sync_read,
        p.FAST_SYNC_READ: _sync_read,
        p.SYNC_WRITE: _sync_write,
        p.BULK_READ: _bulk_read,
        p.FAST_BULK_READ: _bulk_read,
        p.BULK_WRITE: _bulk_write,
    }
