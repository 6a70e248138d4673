"""Dynamixel Protocol 2.0 framing: CRC, byte stuffing, packet building and incremental parsing.

Pure functions and a byte-stream parser, no I/O. Packet layout (ROBOTIS e-manual,
"Protocol 2.0")::

    FF FF FD 00 | ID | LEN_L LEN_H | INSTRUCTION | PARAMS... | CRC_L CRC_H

``LEN`` counts the instruction, the parameters and the two CRC bytes *after* byte
stuffing, and the CRC covers every byte before it as sent on the wire (stuffed). A
status packet is an instruction packet whose instruction is ``STATUS`` (0x55) and whose
first parameter is the error byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HEADER = b"\xff\xff\xfd"
RESERVED = 0x00
BROADCAST_ID = 0xFE
MAX_ID = 0xFC  # 0xFD and 0xFF are never IDs: they would look like header bytes

# Instructions.
PING = 0x01
READ = 0x02
WRITE = 0x03
REG_WRITE = 0x04
ACTION = 0x05
FACTORY_RESET = 0x06
REBOOT = 0x08
CLEAR = 0x10
STATUS = 0x55
SYNC_READ = 0x82
SYNC_WRITE = 0x83
FAST_SYNC_READ = 0x8A
BULK_READ = 0x92
BULK_WRITE = 0x93
FAST_BULK_READ = 0x9A

# Error numbers (low 7 bits of a status packet's error byte).
ERR_NONE = 0
ERR_RESULT_FAIL = 1
ERR_INSTRUCTION = 2
ERR_CRC = 3
ERR_DATA_RANGE = 4
ERR_DATA_LENGTH = 5
ERR_DATA_LIMIT = 6
ERR_ACCESS = 7
ERR_ALERT = 0x80  # set alongside any error number while Hardware Error Status(70) is non-zero

# The SDK refuses packets whose LEN exceeds 1024 (RXPACKET_MAX_LEN); so does this parser.
MAX_LENGTH = 1024
_MIN_LENGTH = 3  # instruction + CRC


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16/BUYPASS (poly 0x8005, init 0, no reflection) as the e-manual specifies.

    ``crc`` continues a running CRC, which is how chained Fast Sync Read replies are built.
    """
    table = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) ^ table[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(field: bytes) -> bytes:
    """Insert 0xFD after every ``FF FF FD`` so the field can never contain a header."""
    if HEADER not in field:
        return bytes(field)
    out = bytearray()
    for b in field:
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(field: bytes) -> bytes:
    """Inverse of :func:`stuff`: drop the 0xFD that follows each ``FF FF FD`` of the stuffed field."""
    if HEADER not in field:
        return bytes(field)
    out = bytearray()
    n = len(field)
    i = 0
    while i < n:
        b = field[i]
        out.append(b)
        i += 1
        # The window is checked on the stuffed input, so an FD that was itself inserted
        # can never start a new match.
        if b == 0xFD and i >= 3 and field[i - 3] == 0xFF and field[i - 2] == 0xFF and i < n and field[i] == 0xFD:
            i += 1
    return bytes(out)


def build_packet(packet_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete packet with byte stuffing applied, length and CRC filled in."""
    if not 0 <= packet_id <= 0xFE or packet_id == 0xFD:
        raise ValueError(f"packet id must be 0..252 or 254 (broadcast), got {packet_id}")
    if not 0 <= instruction <= 0xFF:
        raise ValueError(f"instruction must be one byte, got {instruction}")
    body = stuff(bytes([instruction]) + bytes(params))
    length = len(body) + 2
    if length > 0xFFFF:
        raise ValueError(f"packet too long ({length} bytes)")
    head = HEADER + bytes([RESERVED, packet_id, length & 0xFF, length >> 8]) + body
    crc = crc16(head)
    return head + bytes([crc & 0xFF, crc >> 8])


def build_status(packet_id: int, error: int, params: bytes = b"") -> bytes:
    """A status (reply) packet: instruction 0x55, then the error byte, then the data."""
    return build_packet(packet_id, STATUS, bytes([error & 0xFF]) + bytes(params))


@dataclass(frozen=True)
class Packet:
    """One parsed packet. ``params`` are unstuffed; for a status packet they start with the error byte."""

    id: int
    instruction: int
    params: bytes
    crc_ok: bool = True
    # Where the packet ends in the byte stream its parser was fed (a count of bytes): the
    # emulator times the packet's last byte on the wire by it.
    end: int = field(default=0, compare=False)

    @property
    def error(self) -> int:
        """The error byte of a status packet."""
        if self.instruction != STATUS or not self.params:
            raise ValueError("only a status packet has an error byte")
        return self.params[0]

    @property
    def data(self) -> bytes:
        """The data of a status packet (its parameters after the error byte)."""
        if self.instruction != STATUS:
            raise ValueError("only a status packet has status data")
        return self.params[1:]


class PacketParser:
    """Turns a byte stream into packets, resynchronising on garbage.

    Each call to :meth:`feed` consumes at least one buffered byte per loop iteration or
    stops to wait for more input, so it always terminates, and it never raises on any
    input. The buffer holds at most one maximal packet plus the newest input.
    ``keep_corrupt`` also returns packets whose CRC fails (``crc_ok=False``), which a servo
    needs in order to answer them with a CRC error.
    """

    def __init__(self, *, max_length: int = MAX_LENGTH, keep_corrupt: bool = False) -> None:
        self.max_length = max_length
        self.keep_corrupt = keep_corrupt
        self._buf = bytearray()
        self.consumed = 0  # bytes taken off the front of the stream (packets and garbage)
        self.crc_errors = 0
        self.bad_lengths = 0
        self.discarded_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes buffered while waiting for the rest of a packet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        return self._drain()

    def resync(self) -> list[Packet]:
        """Give up on the partial packet at the head of the buffer (e.g. after a bus-idle gap).

        A false header in garbage can announce a length that never arrives; dropping its
        first byte lets a real packet behind it be found.
        """
        if not self._buf:
            return []
        self._drop(1)
        return self._drain()

    def _drain(self) -> list[Packet]:
        buf = self._buf
        out: list[Packet] = []
        while True:
            start = self._find_header(buf)
            if start < 0:
                # Keep a possible header prefix (FF or FF FF) at the end for the next feed.
                keep = 2 if buf.endswith(b"\xff\xff") else 1 if buf.endswith(b"\xff") else 0
                self._drop(len(buf) - keep)
                return out
            self._drop(start)
            if len(buf) < 7:
                return out
            length = buf[5] | (buf[6] << 8)
            if length < _MIN_LENGTH or length > self.max_length:
                self.bad_lengths += 1
                self._drop(1)
                continue
            total = 7 + length
            if len(buf) < total:
                return out
            crc = buf[total - 2] | (buf[total - 1] << 8)
            ok = crc16(memoryview(buf)[: total - 2]) == crc
            if not ok:
                self.crc_errors += 1
                # Only the header is skipped: stuffing guarantees no real header inside a
                # valid body, so a packet that follows a corrupt one is still found.
                if self.keep_corrupt:
                    out.append(self._packet(buf, total, crc_ok=False, end=self.consumed + total))
                self._drop(1)
                continue
            out.append(self._packet(buf, total, crc_ok=True, end=self.consumed + total))
            del buf[:total]
            self.consumed += total

    @staticmethod
    def _packet(buf: bytearray, total: int, *, crc_ok: bool, end: int) -> Packet:
        # Stuffing spans the instruction byte too, so the field is unstuffed as a whole.
        body = unstuff(bytes(buf[7 : total - 2]))
        return Packet(buf[4], body[0], body[1:], crc_ok=crc_ok, end=end)

    @staticmethod
    def _find_header(buf: bytearray) -> int:
        pos = 0
        while True:
            i = buf.find(HEADER, pos)
            # FF FF FD FD is stuffed data, not a header; a header is followed by the reserved 0x00.
            if i < 0 or (i + 3 < len(buf) and buf[i + 3] == RESERVED) or i + 3 >= len(buf):
                return i
            pos = i + 1

    def _drop(self, n: int) -> None:
        if n > 0:
            del self._buf[:n]
            self.discarded_bytes += n
            self.consumed += n
