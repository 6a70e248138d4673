"""How long a Dynamixel bus takes: bytes on the wire, and the USB adapter between the wire and the host.

The model :class:`~.emulator.BusEmulator` keeps time by, and that ``benchmarks/bus.py``
computes its physical limit from:

Wire. A byte is 10 bits (start, 8 data, stop), so it takes ``10 / baudrate`` seconds.
The adapter sends the host's bytes onto the wire in order, as soon as it has them; a servo
acts on an instruction once its last byte has arrived. A servo starts its status packet its
Return Delay Time (control table item 9, in 2 us units; 250 = 500 us from the factory, 0
once a driver has lowered it) after the instruction ended, and in a Sync/Bulk Read after the
servo before it finished its own.

Adapter (FTDI's latency timer, application note AN232B-04). Bytes from the servos wait in
the chip until it sends them to the host in one USB packet, which it does when

- the packet is full: ``packet_bytes - 2`` bytes of data (each packet also carries two
  status bytes), 62 on a full-speed chip (FT232R, 64-byte packets) and 510 on a
  high-speed one (FT232H, 512-byte packets; a U2D2 reaches 6 Mbps, beyond full-speed
  chips, so it is one of these), or
- the latency timer expires: it counts from the last packet sent to the host, and when it
  expires the chip sends whatever it holds, even nothing but the status bytes. So on an
  idle line it ticks at a fixed period, and a reply waits for the next tick: up to one
  whole period (16 ms by default, 1 ms once lowered through sysfs). A host that asks again
  as soon as its answer arrives asks right after a tick, and each of its transactions then
  takes one period or more; a full packet sent on the way restarts the timer, so the last
  bytes of a long reply wait a whole period after it.

A latency timer of 0 stands for an adapter that forwards each status packet as soon as its
last byte has arrived. Not modelled: the USB transfer from host to adapter (well under a
millisecond), the host's own USB scheduling, and collisions: a host that talks while servos
answer is heard as if the line were full duplex, and the replies keep their order. The
emulator takes host bytes as on the wire from the moment it reads them, so its own wake-up
(tens of microseconds) adds to what it models; it never makes a reply earlier.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

BITS_PER_BYTE = 10  # start + 8 data + stop
STATUS_BYTES_PER_PACKET = 2  # FTDI prefixes every USB packet to the host with two modem-status bytes
RETURN_DELAY_UNIT_S = 2e-6  # Return Delay Time(9) counts 2 us steps
FULL_SPEED_PACKET = 64  # FT232R and other full-speed chips
HIGH_SPEED_PACKET = 512  # FT232H (U2D2) and other high-speed chips


def byte_time(baudrate: int) -> float:
    """Seconds one byte takes on the wire."""
    if baudrate <= 0:
        raise ValueError(f"baud rate must be positive, got {baudrate}")
    return BITS_PER_BYTE / baudrate


def packet_payload(packet_bytes: int) -> int:
    """Data bytes in one USB packet to the host."""
    if packet_bytes <= STATUS_BYTES_PER_PACKET:
        raise ValueError(f"a USB packet must be larger than {STATUS_BYTES_PER_PACKET} bytes, got {packet_bytes}")
    return packet_bytes - STATUS_BYTES_PER_PACKET


@dataclass
class _Run:
    """Bytes a servo sends back to back: byte i reaches the adapter at ``start + (i + 1) * byte_time``."""

    start: float
    data: bytes
    release: float  # the adapter holds them until then at least (a fault: a slow adapter)


class UsbAdapter:
    """The host-bound half of a USB-serial adapter: when each byte from the wire reaches the host.

    :meth:`add` puts bytes on the wire (in order, never earlier than those before them);
    :meth:`pop` returns what the host has received by a given time, in order; and
    :meth:`next_time` says when more will arrive (None: nothing is on its way).
    """

    def __init__(self, baudrate: int, latency_timer_s: float, packet_bytes: int = HIGH_SPEED_PACKET, *,
                 now: float = 0.0) -> None:
        if latency_timer_s < 0:
            raise ValueError(f"the latency timer must be >= 0, got {latency_timer_s}")
        self.byte_s = byte_time(baudrate)
        self.latency_s = float(latency_timer_s)
        self.payload = packet_payload(packet_bytes)
        self._anchor = now  # when the chip last sent a packet to the host: its timer counts from here
        self._wire: deque[_Run] = deque()  # bytes on their way to, or waiting in, the chip
        self._sent: deque[_Run] = deque()  # bytes sent to the host, held back where a fault says so

    def add(self, start: float, data: bytes, *, release: float = 0.0) -> None:
        """``data`` leaves a servo starting at ``start``; the host gets none of it before ``release``."""
        if data:
            self._wire.append(_Run(start, bytes(data), release))

    @property
    def idle(self) -> bool:
        return not self._wire and not self._sent

    def next_time(self) -> float | None:
        """When the host next receives bytes, or None when none are on their way."""
        flush = self._next_flush()
        held = self._sent[0].release if self._sent else None
        if flush is None:
            return held
        return flush[0] if held is None else min(flush[0], held)

    def pop(self, now: float) -> bytes:
        """Every byte the host has received by ``now`` and not yet taken."""
        while True:
            flush = self._next_flush()
            if flush is None or flush[0] > now:
                break
            self._flush(*flush)
        out = bytearray()
        while self._sent and self._sent[0].release <= now:
            out += self._sent.popleft().data
        return bytes(out)

    # -- the chip --------------------------------------------------------------------------

    def _arrival(self, run: _Run, count: int) -> float:
        """When the ``count``-th byte of ``run`` (1-based) has reached the chip."""
        return run.start + count * self.byte_s

    def _next_flush(self) -> tuple[float, int] | None:
        """The next USB packet to the host: when, and how many bytes it carries (at least one)."""
        if not self._wire:
            return None
        head = self._wire[0]
        if self.latency_s == 0:
            return self._arrival(head, len(head.data)), len(head.data)  # no timer: each status packet once complete
        # The timer's next expiry at or after the first waiting byte (it ticks every period from the anchor).
        periods = max(1, math.ceil((self._arrival(head, 1) - self._anchor) / self.latency_s - 1e-9))
        tick = self._anchor + periods * self.latency_s
        # Or the moment the packet fills, if that comes first.
        need, arrived = self.payload, 0
        for run in self._wire:
            if len(run.data) >= need and self._arrival(run, need) <= tick:
                return self._arrival(run, need), self.payload
            n = min(len(run.data), math.floor((tick - run.start) / self.byte_s + 1e-6))
            if n <= 0:
                break
            arrived += n
            if n < len(run.data):
                break
            need -= n
        return tick, max(1, min(arrived, self.payload))

    def _flush(self, t: float, count: int) -> None:
        """One USB packet at ``t`` with the next ``count`` bytes."""
        while count > 0 and self._wire:
            run = self._wire[0]
            n = min(count, len(run.data))
            self._sent.append(_Run(t, run.data[:n], run.release))
            count -= n
            if n == len(run.data):
                self._wire.popleft()
            else:
                self._wire[0] = _Run(self._arrival(run, n), run.data[n:], run.release)
        self._anchor = t
