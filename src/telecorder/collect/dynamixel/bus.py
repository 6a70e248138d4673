"""A chain of Dynamixel X-series servos on one serial port, through the real ``dynamixel_sdk``.

What the SDK leaves to its caller, this class does:

- every transaction has a deadline and is retried a bounded number of times; timeouts,
  CRC failures, servo status errors and stale replies are counted, so an episode can
  record how healthy the bus was;
- a reply is only ever taken as the answer to the request it belongs to (below);
- a bus that stays dead raises one :class:`DeviceError` naming the port and the servos
  that stopped answering, instead of hanging or returning stale numbers forever;
- positions are radians (4096 ticks per revolution, 2048 ticks = 0 rad), signed present
  velocity/current are decoded, and sync reads fetch current, velocity and position of
  every servo in one round trip.

Late replies. A status packet names its servo, not the request it answers, and the SDK's
``readTxRx``/``writeTxRx`` take the first packet with the right ID. A reply that misses its
deadline (a slow USB adapter, a loaded host, an emulator thread not scheduled in time)
then becomes the answer to the *next* request to that servo: the low byte of a position
read back as Torque Enable, a refused write acknowledged by the late "OK" of an earlier
one. So this driver sends and receives packets itself (the SDK's ``txPacket`` and
``rxPacket``) and

1. takes a reply only if its ID and data length are what the request asks for (in a sync
   read, each listed servo once); anything else is discarded and counted as stale;
2. after a request that went unanswered, or any stale or corrupt packet, treats the line
   as dirty: before the next request it sends a *fence*, a read whose length no other
   request uses (and that changes from fence to fence), and discards everything up to the
   fence's reply. Replies on one serial line arrive in the order they were asked for, so
   once the fence's reply is in, no older reply can still be on its way. An unanswered
   fence counts as a failed attempt of the request it preceded.

Waiting. :class:`BusPort` is the SDK's ``PortHandler`` with its timing made per port and
three changes: its deadline also counts the time the bytes just sent still need on the
wire and each reply's Return Delay Time (the SDK's counts only the reply's bytes, which at
57600 baud is 12 ms short for a sync read sent after a sync write); it sleeps in
``select`` until bytes arrive or the deadline passes, where the SDK polls the port in a
busy loop that holds a CPU and the GIL (on a loaded host an emulator thread in the same
process waited 85 ms for its turn); and it reports a timeout only when nothing is waiting
on the port, where the SDK also gives up on a reply that arrived while the process was
descheduled past its deadline (measured: a reply written 27 ms before the SDK's
"timeout", and read 0.1 ms after it by the next call).

The SDK's transmit path computes Protocol 2.0 byte stuffing but then sends the
unstuffed packet (``txPacket`` drops ``addStuffing``'s result when the length changes).
A servo would read a ``FF FF FD`` inside our parameters as a new header. We therefore
never send that sequence: :func:`avoid_header_sequence` moves an affected goal by one
tick (0.088 degrees), which only ever happens for multi-turn goals near -32 revolutions.
"""

from __future__ import annotations

import math
import os
import select
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ...errors import DeviceError, missing_extra
from .control_table import (
    ADDR,
    BAUD_RATES,
    CENTER_TICKS,
    TICKS_PER_REV,
    VELOCITY_UNIT_RPM,
    model_spec,
)
from .latency_timer import check_latency_timer

try:  # what pyserial's flush raises on a dead line (POSIX)
    from termios import error as _TermiosError
except ImportError:  # pragma: no cover - Windows
    _TermiosError = OSError

try:
    import dynamixel_sdk as sdk
except ImportError:  # pragma: no cover - exercised only without the extra
    sdk = None

RAD_PER_TICK = 2 * math.pi / TICKS_PER_REV
# Present Current(126, 2) + Present Velocity(128, 4) + Present Position(132, 4): one contiguous block.
STATE_ADDR, STATE_LEN = ADDR.PRESENT_CURRENT, 10
SUPPORTED_BAUDRATES = tuple(sorted(BAUD_RATES.values()))

# Protocol 2.0 instructions and packet offsets (the SDK's names, not exported by it).
_PING, _READ, _WRITE, _SYNC_READ = 0x01, 0x02, 0x03, 0x82
_BROADCAST_ID = 0xFE
_ID, _LEN_L, _LEN_H, _INSTRUCTION, _ERROR = 4, 5, 6, 7, 8
_STATUS_OVERHEAD = 11  # header(4) + id + length(2) + instruction + error + crc(2)
# A fence reads Model Number onward with one of these lengths, which no other request uses;
# consecutive fences use different ones, so a late reply to one fence never passes for the next.
FENCE_LENGTHS = range(20, 52)
# Past its deadline, a read goes on while bytes keep arriving, for at most this long.
_LATE_BYTES_GRACE_S = 0.05
_READ_CHUNK = 4096
# The longest Return Delay Time (254 x 2 us): a reply may start this late.
_RETURN_DELAY_MAX_MS = 0.508
DEFAULT_LATENCY_TIMER_MS = 16.0  # FTDI's factory setting, and the SDK's assumption


@dataclass
class BusErrorCounts:
    """What went wrong on the bus during a recording; stored with each episode."""

    transactions: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    status_errors: int = 0
    hardware_alerts: int = 0
    retries: int = 0
    failed_cycles: int = 0
    stale_replies: int = 0  # status packets that answered some other request, discarded

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class BusState:
    position: np.ndarray  # rad
    velocity: np.ndarray | None = None  # rad/s
    current: np.ndarray | None = None  # mA (or 0.1 % load on models without current sensing)
    # Servos that did not answer this cycle: their entries are the values they last reported.
    missing: tuple[int, ...] = ()


def ticks_to_rad(ticks: np.ndarray) -> np.ndarray:
    return (np.asarray(ticks, dtype=np.float64) - CENTER_TICKS) * RAD_PER_TICK


def rad_to_ticks(rad: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(rad, dtype=np.float64) / RAD_PER_TICK + CENTER_TICKS).astype(np.int64)


def avoid_header_sequence(ids: Sequence[int], ticks: Sequence[int]) -> list[int]:
    """Goals whose sync-write parameters never contain FF FF FD (see the module docstring)."""
    out = [int(t) for t in ticks]
    for _ in range(4):
        payload = b"".join(bytes([i]) + (v & 0xFFFFFFFF).to_bytes(4, "little") for i, v in zip(ids, out, strict=True))
        pos = payload.find(b"\xff\xff\xfd")
        if pos < 0:
            return out
        k = pos // 5
        out[k] += 1 if out[k] < 0 else -1
    return out


class BusPort(sdk.PortHandler if sdk is not None else object):  # type: ignore[misc]
    """The SDK's ``PortHandler`` that waits asleep and reads what came in while it was not running.

    ``latency_timer_ms`` is the adapter's latency timer (FTDI/U2D2: 16 ms by default, 1 ms once
    lowered in sysfs); the SDK keeps it in a module global, here each port has its own. The
    deadline for a reply is the SDK's (reply transfer time + 2 x latency timer + 2 ms) plus
    what the bytes written before it still need on the wire and the longest Return Delay
    Time of each reply, and at least ``min_timeout_ms``.
    """

    def __init__(self, port_name: str, *, latency_timer_ms: float = DEFAULT_LATENCY_TIMER_MS,
                 min_timeout_ms: float = 0.0) -> None:
        super().__init__(port_name)
        self.latency_timer_ms = float(latency_timer_ms)
        self.min_timeout_ms = float(min_timeout_ms)
        self.timed_out = False
        self._deadline = 0.0
        self._tx_end = 0.0  # when the bytes written so far have left the adapter (monotonic seconds)
        self._rx = bytearray()  # read from the OS, not yet taken by the SDK

    def writePort(self, packet):
        try:
            written = super().writePort(packet)
        except OSError as e:  # pyserial's SerialException is one
            raise self._gone(e) from e
        now = time.monotonic()
        self._tx_end = max(now, self._tx_end) + len(packet) * self.tx_time_per_byte / 1000.0
        return written

    def setPacketTimeout(self, packet_length, replies=1):  # the SDK's name (and its one argument)
        on_wire_ms = max(0.0, self._tx_end - time.monotonic()) * 1000.0
        ms = (on_wire_ms + self.tx_time_per_byte * packet_length + replies * _RETURN_DELAY_MAX_MS
              + 2.0 * self.latency_timer_ms + 2.0)
        self.setPacketTimeoutMillis(max(ms, self.min_timeout_ms))

    def setPacketTimeoutMillis(self, msec):
        super().setPacketTimeoutMillis(msec)
        self._deadline = time.monotonic() + msec / 1000.0
        self.timed_out = False

    def isPacketTimeout(self):
        now = time.monotonic()
        if now < self._deadline:
            return False
        if now < self._deadline + _LATE_BYTES_GRACE_S and (self._rx or self.ser.in_waiting):
            return False  # they came while this process was not running: read them first
        self.packet_timeout = 0
        self.timed_out = True
        return True

    def readPort(self, length):
        # Whatever the OS holds is taken in one read and handed out as the SDK asks: it asks
        # for a few bytes at a time, and a sync read's replies arrive together.
        if len(self._rx) < length:
            if not self._rx:
                left = self._deadline - time.monotonic()
                select.select([self.ser.fileno()], [], [], max(left, 0.0))  # sleeps, without the GIL
            try:
                self._rx += os.read(self.ser.fileno(), _READ_CHUNK)
            except BlockingIOError:
                pass
            except OSError as e:
                raise self._gone(e) from e
        out = bytes(self._rx[:length])
        del self._rx[:length]
        return out

    def clearPort(self):
        self._rx.clear()
        try:
            super().clearPort()
        except (OSError, _TermiosError) as e:
            raise self._gone(e) from e

    def _gone(self, e: BaseException) -> DeviceError:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e.args[-1] if e.args else e
        return DeviceError(f"{self.port_name}: the serial port stopped working ({reason}); "
                           "was the adapter unplugged?")

    def getBytesAvailable(self):
        return len(self._rx) + self.ser.in_waiting


class DynamixelBus:
    def __init__(
        self,
        port: str,
        ids: Sequence[int],
        *,
        baudrate: int = 1_000_000,
        model: str | None = None,
        retries: int = 2,
        dead_after_cycles: int = 10,
        latency_timer_ms: float | None = None,
        reply_timeout_ms: float | None = None,
    ) -> None:
        """``latency_timer_ms``: the adapter's latency timer, which sets how long to wait for replies
        (default: what sysfs says for a ``ttyUSBn`` adapter, else 16 ms, FTDI's and the SDK's).
        ``reply_timeout_ms``: wait at least this long for a reply (default: the SDK's deadline,
        transfer time + 2 x latency timer + 2 ms, plus wire time and return delays, see
        :class:`BusPort`); for adapters or bridges slower than that.

        ``open()`` reads the adapter's latency timer from sysfs and warns once per adapter when
        it is above 1 ms, with the command that lowers it."""
        if sdk is None:
            raise missing_extra("dynamixel_sdk", "dynamixel")
        if baudrate not in SUPPORTED_BAUDRATES:
            raise DeviceError(
                f"{port}: baud rate {baudrate} is not supported by Dynamixel X-series servos; "
                f"use one of {', '.join(map(str, SUPPORTED_BAUDRATES))}"
            )
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i <= 252 for i in ids):
            raise DeviceError(f"{port}: servo IDs must be distinct numbers 0..252, got {list(ids)}")
        self.port_name = port
        self.ids = [int(i) for i in ids]
        self.baudrate = baudrate
        self.model = model_spec(model).name if model else None
        self.retries = retries
        self.dead_after_cycles = dead_after_cycles
        self._latency_given = latency_timer_ms is not None
        self.latency_timer_ms = DEFAULT_LATENCY_TIMER_MS if latency_timer_ms is None else float(latency_timer_ms)
        self.adapter_latency_timer_ms: int | None = None  # what sysfs said at open(), where it says anything
        self.reply_timeout_ms = reply_timeout_ms
        self.errors = BusErrorCounts()
        self._consecutive_failures = 0
        self._last_state: BusState | None = None
        self._port = None
        self._ph = None
        self._dirty = False  # a reply to an earlier request may still arrive
        self._fences = 0
        self._last_result = 0
        self._last_answered: int | None = None  # the servo that gave the latest wanted reply

    # -- connection ----------------------------------------------------------

    def open(self) -> dict[int, int]:
        """Open the port, ping every servo, check models; returns id -> model number."""
        self.adapter_latency_timer_ms = check_latency_timer(self.port_name)
        if self.adapter_latency_timer_ms is not None and not self._latency_given:
            self.latency_timer_ms = float(max(self.adapter_latency_timer_ms, 1))
        port = BusPort(self.port_name, latency_timer_ms=self.latency_timer_ms,
                       min_timeout_ms=self.reply_timeout_ms or 0.0)
        try:
            opened = port.openPort()
        except Exception as e:  # pyserial raises its own SerialException subclasses
            raise DeviceError(
                f"{self.port_name}: cannot open serial port ({e}); is the adapter plugged in, and may this user "
                "use it (Linux: add yourself to the 'dialout' group)?"
            ) from e
        if not opened:
            raise DeviceError(f"{self.port_name}: cannot open serial port")
        if not port.setBaudRate(self.baudrate):
            port.closePort()
            raise DeviceError(f"{self.port_name}: the adapter refused baud rate {self.baudrate}")
        self._port, self._ph = port, sdk.PacketHandler(2.0)
        self._dirty = False
        try:
            return self._check_servos()
        except BaseException:
            self.close()
            raise

    def _check_servos(self) -> dict[int, int]:
        found: dict[int, int] = {}
        for i in self.ids:
            # A line just opened can hold bytes from before (adapter buffers, a previous program's
            # half packet): give each servo a few spaced attempts (each send clears the input first).
            for attempt in range(max(3, self.retries + 1)):
                if attempt:
                    time.sleep(0.02)
                reply = self._request(i, _PING, b"", 3, attempts=1, retry=attempt > 0)
                if reply is not None:
                    data = reply[1]
                    found[i] = data[0] | (data[1] << 8)
                    break
        missing = [i for i in self.ids if i not in found]
        if missing:
            raise DeviceError(
                f"{self.port_name}: servo(s) {_ids(missing)} did not answer a ping at {self.baudrate} baud "
                f"(found {_ids(found) or 'none'}); check power, cabling, IDs and baud rate"
            )
        if self.model is not None:
            expected = model_spec(self.model).number
            wrong = {i: m for i, m in found.items() if m != expected}
            if wrong:
                raise DeviceError(
                    f"{self.port_name}: expected {self.model} (model {expected}) but servo(s) report "
                    + ", ".join(f"ID {i}: model {m}" for i, m in wrong.items())
                )
        return found

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def close(self) -> None:
        if self._port is not None:
            self._port.closePort()
            self._port = None

    def __enter__(self) -> DynamixelBus:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ------------------------------------------------------------

    def _send(self, packet_id: int, instruction: int, params: bytes, reply_bytes: int, replies: int = 1) -> bool:
        """One instruction packet (the SDK clears the port's input first); arms the reply deadline."""
        n = len(params) + 3
        tx = [0] * (n + 7)
        tx[_ID], tx[_LEN_L], tx[_LEN_H], tx[_INSTRUCTION] = packet_id, n & 0xFF, n >> 8, instruction
        tx[8 : 8 + len(params)] = list(params)
        result = self._ph.txPacket(self._port, tx)
        self.errors.transactions += 1
        self._last_result = result
        if result != sdk.COMM_SUCCESS:
            self._count(result, 0)
            self._port.is_using = False
            self._dirty = True  # how much of it went out is unknown
            return False
        self._port.setPacketTimeout(reply_bytes, replies)
        return True

    def _receive(self, want: dict[int, int]) -> dict[int, tuple[int, bytes]]:
        """Status packets until each servo in ``want`` (id -> data length) has answered or the deadline passed.

        Returns id -> (error byte, data). Any packet that is not one of the wanted replies (another
        servo, another length, a second one from the same servo) is a reply to some other request:
        it is dropped, counted, and leaves the line dirty; so does a corrupt or missing reply.
        """
        got: dict[int, tuple[int, bytes]] = {}
        while len(got) < len(want):
            rx, result = self._ph.rxPacket(self._port, False)
            self._last_result = result
            if result == sdk.COMM_SUCCESS:
                sid = rx[_ID]
                length = (rx[_LEN_L] | (rx[_LEN_H] << 8)) - 4  # instruction, error and CRC
                # A servo that refuses a read may answer with the error and no data.
                expected = (want.get(sid), 0) if rx[_ERROR] & 0x7F else (want.get(sid),)
                if sid in want and sid not in got and length in expected:
                    got[sid] = (rx[_ERROR], bytes(rx[_ERROR + 1 : _ERROR + 1 + length]))
                    self._count(result, rx[_ERROR])
                    self._last_answered = sid
                else:
                    self.errors.stale_replies += 1
                    self._dirty = True
                continue
            self._dirty = True
            if self._port.timed_out:
                self.errors.timeouts += len(want) - len(got)
                break
            self._count(result, 0)  # a corrupt packet; the deadline still runs
        return got

    def _fence(self, servo_id: int) -> bool:
        """Flush the line (see the module docstring); True once no older reply can still arrive."""
        length = FENCE_LENGTHS[self._fences % len(FENCE_LENGTHS)]
        self._fences += 1
        if not self._send(servo_id, _READ, _read_params(0, length), _STATUS_OVERHEAD + length):
            return False
        if servo_id in self._receive({servo_id: length}):
            self._dirty = False
            return True
        return False

    def _request(self, servo_id: int, instruction: int, params: bytes, data_len: int, *, attempts: int,
                 retry: bool = False) -> tuple[int, bytes] | None:
        """A unicast instruction and its own status packet: (error byte, data), or None after ``attempts``."""
        for attempt in range(attempts):
            if attempt or retry:
                self.errors.retries += 1
            if self._dirty and not self._fence(servo_id):
                continue
            if not self._send(servo_id, instruction, params, _STATUS_OVERHEAD + data_len):
                continue
            reply = self._receive({servo_id: data_len}).get(servo_id)
            if reply is not None:
                return reply
        return None

    # -- registers -------------------------------------------------------------

    def write(self, address: int, size: int, values: int | Iterable[int], ids: Sequence[int] | None = None) -> None:
        """Write a register on each servo (unicast, acknowledged, retried)."""
        if size not in (1, 2, 4):
            raise ValueError(f"register size must be 1, 2 or 4 bytes, got {size}")
        targets = list(ids) if ids is not None else self.ids
        vals = [int(values)] * len(targets) if isinstance(values, (int, np.integer)) else [int(v) for v in values]
        for i, v in zip(targets, vals, strict=True):
            raw = v & ((1 << (8 * size)) - 1)
            params = address.to_bytes(2, "little") + raw.to_bytes(size, "little")
            reply = self._request(i, _WRITE, params, 0, attempts=self.retries + 1)
            if reply is None:
                raise DeviceError(
                    f"{self.port_name}: servo {i} did not acknowledge a write to address {address} "
                    f"after {self.retries + 1} tries ({self._ph.getTxRxResult(self._last_result)})"
                )
            error = reply[0]
            if error & 0x7F:
                raise DeviceError(
                    f"{self.port_name}: servo {i} refused writing {raw} to address {address} "
                    f"({self._ph.getRxPacketError(error)})"
                )

    def read(self, address: int, size: int, servo_id: int, signed: bool = False) -> int:
        reply = self._request(servo_id, _READ, _read_params(address, size), size, attempts=self.retries + 1)
        if reply is None:
            raise DeviceError(
                f"{self.port_name}: servo {servo_id} did not answer a read of address {address} "
                f"after {self.retries + 1} tries ({self._ph.getTxRxResult(self._last_result)})"
            )
        return int.from_bytes(reply[1], "little", signed=signed)

    def set_torque(self, enabled: bool, ids: Sequence[int] | None = None) -> None:
        self.write(ADDR.TORQUE_ENABLE, 1, int(enabled), ids)

    def set_operating_mode(self, mode: int, ids: Sequence[int] | None = None) -> None:
        """Operating mode is EEPROM: torque goes off first, as the servo requires."""
        self.set_torque(False, ids)
        self.write(ADDR.OPERATING_MODE, 1, mode, ids)

    def minimize_return_delay(self) -> None:
        """Set Return Delay Time to 0 (EEPROM; turns torque off).

        X-series servos leave the factory waiting 500 us before each reply; in a sync read
        of 7 servos that alone is 3.5 ms of every cycle. GELLO and LeRobot set it to 0 too.
        """
        self.set_torque(False)
        delays = {i: self.read(ADDR.RETURN_DELAY_TIME, 1, i) for i in self.ids}
        slow = [i for i, d in delays.items() if d]
        if slow:
            self.write(ADDR.RETURN_DELAY_TIME, 1, 0, slow)

    # -- the control-loop calls --------------------------------------------------

    def read_state(self, *, velocity: bool = False, current: bool = False, complete: bool = False) -> BusState:
        """Present position (and velocity/current) of every servo in one sync read.

        A servo that does not answer after the retries keeps its last value for this cycle
        and the failure is counted; after ``dead_after_cycles`` failed cycles in a row the
        bus is declared dead with a DeviceError naming the port and the silent servos.

        ``complete``: read again until every servo answered in the same cycle. A value a
        silent servo kept is fine to steer by for a tick, but not to check or measure by
        (a start check, a calibration pose): a servo that has just died would be compared
        where it last stood, and the check would fail or pass for the wrong reason.
        """
        while True:
            state = self._read_state_once(velocity=velocity, current=current)
            # Terminates: each cycle with a silent servo counts towards the dead-bus error.
            if not complete or not state.missing:
                return state

    def _read_state_once(self, *, velocity: bool, current: bool) -> BusState:
        want_extra = velocity or current
        addr, length = (STATE_ADDR, STATE_LEN) if want_extra else (ADDR.PRESENT_POSITION, 4)
        raw: dict[int, bytes] = {}
        fence_id = self._last_answered if self._last_answered in self.ids else self.ids[0]
        if not self._dirty or self._fence(fence_id):
            params = _read_params(addr, length) + bytes(self.ids)
            if self._send(_BROADCAST_ID, _SYNC_READ, params, (_STATUS_OVERHEAD + length) * len(self.ids),
                          len(self.ids)):
                raw = {i: data for i, (_, data) in self._receive(dict.fromkeys(self.ids, length)).items()}
        silent = [i for i in self.ids if i not in raw]
        # Servos answer a sync read in turn; the ones that did not are asked one by one.
        for i in silent:
            reply = self._request(i, _READ, _read_params(addr, length), length, attempts=self.retries, retry=True)
            if reply is not None:
                raw[i] = reply[1]
        silent = [i for i in self.ids if i not in raw]
        if silent:
            self.errors.failed_cycles += 1
            self._consecutive_failures += 1
            if self._last_state is None or self._consecutive_failures >= self.dead_after_cycles:
                raise DeviceError(
                    f"{self.port_name}: servo(s) {_ids(silent)} stopped answering "
                    f"({self._consecutive_failures} failed read cycle(s) in a row); check power and cabling"
                )
        else:
            self._consecutive_failures = 0
        state = self._decode(raw, want_extra, velocity, current)
        state.missing = tuple(silent)
        self._last_state = state
        return state

    def _decode(self, raw: dict[int, bytes], extra: bool, velocity: bool, current: bool) -> BusState:
        """Radians, rad/s and current units; a servo missing from ``raw`` keeps its last values."""
        n, last = len(self.ids), self._last_state
        pos = last.position.copy() if last is not None else np.zeros(n)
        vel = (last.velocity.copy() if last is not None and last.velocity is not None else np.zeros(n)) if velocity else None
        cur = (last.current.copy() if last is not None and last.current is not None else np.zeros(n)) if current else None
        for k, i in enumerate(self.ids):
            b = raw.get(i)
            if b is None:
                continue
            # Plain int arithmetic: numpy on one number at a time costs more than the rest of the decode.
            if not extra:
                pos[k] = (int.from_bytes(b[0:4], "little", signed=True) - CENTER_TICKS) * RAD_PER_TICK
                continue
            pos[k] = (int.from_bytes(b[6:10], "little", signed=True) - CENTER_TICKS) * RAD_PER_TICK
            if vel is not None:
                vel[k] = int.from_bytes(b[2:6], "little", signed=True) * VELOCITY_UNIT_RPM * 2 * math.pi / 60
            if cur is not None:
                cur[k] = int.from_bytes(b[0:2], "little", signed=True)
        return BusState(position=pos, velocity=vel, current=cur)

    def write_goal_positions(self, radians: np.ndarray) -> None:
        """Sync-write goal positions (one broadcast packet, no reply to wait for)."""
        ticks = avoid_header_sequence(self.ids, rad_to_ticks(radians).tolist())
        group = sdk.GroupSyncWrite(self._port, self._ph, ADDR.GOAL_POSITION, 4)
        for i, t in zip(self.ids, ticks, strict=True):
            group.addParam(i, list((t & 0xFFFFFFFF).to_bytes(4, "little")))
        result = group.txPacket()
        self.errors.transactions += 1
        if result != sdk.COMM_SUCCESS:
            self._count(result, 0)
            raise DeviceError(f"{self.port_name}: sending goal positions failed ({self._ph.getTxRxResult(result)})")

    def _count(self, result: int, error: int) -> None:
        if result == sdk.COMM_RX_TIMEOUT:
            self.errors.timeouts += 1
        elif result == sdk.COMM_RX_CORRUPT:
            self.errors.crc_errors += 1
        if error & 0x80:
            self.errors.hardware_alerts += 1
        if error & 0x7F:
            self.errors.status_errors += 1


def _read_params(address: int, length: int) -> bytes:
    return address.to_bytes(2, "little") + length.to_bytes(2, "little")


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in ids)
