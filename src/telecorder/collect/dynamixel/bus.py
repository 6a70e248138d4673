"""A chain of Dynamixel X-series servos on one serial port, through the real ``dynamixel_sdk``.

What the SDK leaves to its caller, this class does:

- every transaction has a deadline (the SDK's packet timeout) and is retried a bounded
  number of times; timeouts, CRC failures and servo status errors are counted, so an
  episode can record how healthy the bus was;
- a bus that stays dead raises one :class:`DeviceError` naming the port and the servos
  that stopped answering, instead of hanging or returning stale numbers forever;
- positions are radians (4096 ticks per revolution, 2048 ticks = 0 rad), signed present
  velocity/current are decoded, and sync reads fetch current, velocity and position of
  every servo in one round trip.

The SDK's transmit path computes Protocol 2.0 byte stuffing but then sends the
unstuffed packet (``txPacket`` drops ``addStuffing``'s result when the length changes).
A servo would read a ``FF FF FD`` inside our parameters as a new header. We therefore
never send that sequence: :func:`avoid_header_sequence` moves an affected goal by one
tick (0.088 degrees), which only ever happens for multi-turn goals near -32 revolutions.
"""

from __future__ import annotations

import math
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

try:
    import dynamixel_sdk as sdk
    from dynamixel_sdk import port_handler as sdk_port
except ImportError:  # pragma: no cover - exercised only without the extra
    sdk = None
    sdk_port = None

RAD_PER_TICK = 2 * math.pi / TICKS_PER_REV
# Present Current(126, 2) + Present Velocity(128, 4) + Present Position(132, 4): one contiguous block.
STATE_ADDR, STATE_LEN = ADDR.PRESENT_CURRENT, 10
SUPPORTED_BAUDRATES = tuple(sorted(BAUD_RATES.values()))


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

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class BusState:
    position: np.ndarray  # rad
    velocity: np.ndarray | None = None  # rad/s
    current: np.ndarray | None = None  # mA (or 0.1 % load on models without current sensing)


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
    ) -> None:
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
        self.errors = BusErrorCounts()
        self._consecutive_failures = 0
        self._last_state: BusState | None = None
        if latency_timer_ms is not None:
            # The SDK's read deadline is 2 x its LATENCY_TIMER + 2 ms; it must cover the adapter's own
            # latency timer (16 ms by default for FTDI/U2D2; 1 ms once lowered in sysfs, as GELLO does).
            sdk_port.LATENCY_TIMER = latency_timer_ms
        self._port = None
        self._ph = None

    # -- connection ----------------------------------------------------------

    def open(self) -> dict[int, int]:
        """Open the port, ping every servo, check models; returns id -> model number."""
        port = sdk.PortHandler(self.port_name)
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
        try:
            return self._check_servos()
        except BaseException:
            self.close()
            raise

    def _check_servos(self) -> dict[int, int]:
        found: dict[int, int] = {}
        for i in self.ids:
            # A line just opened can hold bytes from before (adapter buffers, a previous program's
            # half packet): give each servo a few spaced attempts on a cleared line.
            for attempt in range(max(3, self.retries + 1)):
                if attempt:
                    time.sleep(0.02)
                    self._port.clearPort()
                model, result, error = self._ph.ping(self._port, i)
                self.errors.transactions += 1
                if result == sdk.COMM_SUCCESS:
                    found[i] = int(model)
                    break
                self._count(result, error)
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

    # -- registers -------------------------------------------------------------

    def write(self, address: int, size: int, values: int | Iterable[int], ids: Sequence[int] | None = None) -> None:
        """Write a register on each servo (unicast, acknowledged, retried)."""
        targets = list(ids) if ids is not None else self.ids
        vals = [int(values)] * len(targets) if isinstance(values, (int, np.integer)) else [int(v) for v in values]
        fn = {1: self._ph.write1ByteTxRx, 2: self._ph.write2ByteTxRx, 4: self._ph.write4ByteTxRx}[size]
        for i, v in zip(targets, vals, strict=True):
            raw = v & ((1 << (8 * size)) - 1)
            for attempt in range(self.retries + 1):
                result, error = fn(self._port, i, address, raw)
                self.errors.transactions += 1
                if result == sdk.COMM_SUCCESS and error == 0:
                    break
                self._count(result, error)
                if result == sdk.COMM_SUCCESS and error & 0x7F:
                    raise DeviceError(
                        f"{self.port_name}: servo {i} refused writing {raw} to address {address} "
                        f"({self._ph.getRxPacketError(error)})"
                    )
                if attempt == self.retries:
                    raise DeviceError(
                        f"{self.port_name}: servo {i} did not acknowledge a write to address {address} "
                        f"after {self.retries + 1} tries ({self._ph.getTxRxResult(result)})"
                    )

    def read(self, address: int, size: int, servo_id: int, signed: bool = False) -> int:
        for attempt in range(self.retries + 1):
            data, result, error = self._ph.readTxRx(self._port, servo_id, address, size)
            self.errors.transactions += 1
            if result == sdk.COMM_SUCCESS:
                if error:
                    self._count(result, error)
                return int.from_bytes(bytes(data[:size]), "little", signed=signed)
            self._count(result, error)
            if attempt == self.retries:
                raise DeviceError(
                    f"{self.port_name}: servo {servo_id} did not answer a read of address {address} "
                    f"after {self.retries + 1} tries ({self._ph.getTxRxResult(result)})"
                )
        raise AssertionError("unreachable")

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

    def read_state(self, *, velocity: bool = False, current: bool = False) -> BusState:
        """Present position (and velocity/current) of every servo in one sync read.

        A servo that does not answer after the retries keeps its last value for this cycle
        and the failure is counted; after ``dead_after_cycles`` failed cycles in a row the
        bus is declared dead with a DeviceError naming the port and the silent servos.
        """
        want_extra = velocity or current
        addr, length = (STATE_ADDR, STATE_LEN) if want_extra else (ADDR.PRESENT_POSITION, 4)
        raw: dict[int, bytes] = {}
        silent: list[int] = []
        result = self._ph.syncReadTx(self._port, addr, length, self.ids, len(self.ids), False)
        self.errors.transactions += 1
        if result != sdk.COMM_SUCCESS:
            self._count(result, 0)
            silent = list(self.ids)
        else:
            for i in self.ids:
                data, result, error = self._ph.readRx(self._port, i, length)
                if result == sdk.COMM_SUCCESS:
                    raw[i] = bytes(data[:length])
                    if error:
                        self._count(result, error)
                else:
                    # Servos answer a sync read in turn, each after the one before it; once one is
                    # silent the rest may be too, so they are retried one by one below.
                    self._count(result, error)
                    silent.append(i)
        if silent:
            self._port.clearPort()
            for i in list(silent):
                for _ in range(self.retries):
                    self.errors.retries += 1
                    data, result, error = self._ph.readTxRx(self._port, i, addr, length)
                    self.errors.transactions += 1
                    if result == sdk.COMM_SUCCESS:
                        raw[i] = bytes(data[:length])
                        silent.remove(i)
                        break
                    self._count(result, error)
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
            if not extra:
                pos[k] = ticks_to_rad(int.from_bytes(b[0:4], "little", signed=True))
                continue
            pos[k] = ticks_to_rad(int.from_bytes(b[6:10], "little", signed=True))
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


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in ids)
