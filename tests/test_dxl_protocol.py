"""Dynamixel Protocol 2.0 framing: CRC, byte stuffing, packet building and the incremental parser."""

from __future__ import annotations

import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from telecorder.collect.dynamixel import protocol as p
from telecorder.collect.dynamixel.protocol import (
    Packet,
    PacketParser,
    build_packet,
    build_status,
    crc16,
    stuff,
    unstuff,
)

# Examples from the ROBOTIS e-manual, "Protocol 2.0" (XM430-W210, ID 1).
EMANUAL = {
    "ping": "FF FF FD 00 01 03 00 01 19 4E",
    "ping status": "FF FF FD 00 01 07 00 55 00 06 04 26 65 5D",
    "read present position": "FF FF FD 00 01 07 00 02 84 00 04 00 1D 15",
    "read status": "FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0",
    "write goal 512": "FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89",
    "sync write": "FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87",
    "broadcast ping": "FF FF FD 00 FE 03 00 01 31 42",
}


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


def test_crc_of_emanual_ping_example():
    assert crc16(_hex("FF FF FD 00 01 03 00 01")) == 0x4E19
    assert _hex(EMANUAL["ping"])[-2:] == bytes([0x19, 0x4E])


def test_build_reproduces_emanual_packets():
    assert build_packet(1, p.PING) == _hex(EMANUAL["ping"])
    assert build_packet(p.BROADCAST_ID, p.PING) == _hex(EMANUAL["broadcast ping"])
    assert build_status(1, 0, bytes([0x06, 0x04, 0x26])) == _hex(EMANUAL["ping status"])
    assert build_packet(1, p.READ, bytes([0x84, 0, 4, 0])) == _hex(EMANUAL["read present position"])
    assert build_status(1, 0, (166).to_bytes(4, "little")) == _hex(EMANUAL["read status"])
    assert build_packet(1, p.WRITE, bytes([0x74, 0]) + (512).to_bytes(4, "little")) == _hex(EMANUAL["write goal 512"])
    sync = bytes([0x74, 0, 4, 0, 1, 0x96, 0, 0, 0, 2, 0xAA, 0, 0, 0])
    assert build_packet(p.BROADCAST_ID, p.SYNC_WRITE, sync) == _hex(EMANUAL["sync write"])


def test_parser_reads_emanual_packets():
    parser = PacketParser()
    got = parser.feed(b"".join(_hex(v) for v in EMANUAL.values()))
    assert [(k.id, k.instruction) for k in got] == [
        (1, p.PING), (1, p.STATUS), (1, p.READ), (1, p.STATUS), (1, p.WRITE), (0xFE, p.SYNC_WRITE), (0xFE, p.PING)
    ]
    assert got[3].error == 0 and int.from_bytes(got[3].data, "little") == 166
    assert parser.crc_errors == 0


def test_stuffing_examples():
    assert stuff(b"\xff\xff\xfd") == b"\xff\xff\xfd\xfd"
    assert stuff(b"\xff\xff\xfd\xfd") == b"\xff\xff\xfd\xfd\xfd"
    assert stuff(b"\x01\xff\xff\xfd\x02\xff\xff\xfd") == b"\x01\xff\xff\xfd\xfd\x02\xff\xff\xfd\xfd"
    assert unstuff(b"\xff\xff\xfd\xfd\xfd") == b"\xff\xff\xfd\xfd"


# Bytes drawn mostly from FF/FD so that header patterns are frequent.
_header_heavy = st.lists(st.sampled_from([0xFF, 0xFD, 0x00, 0x55]) | st.integers(0, 255), max_size=64).map(bytes)


@given(_header_heavy)
def test_stuffing_round_trip_and_hides_headers(data):
    stuffed = stuff(data)
    assert unstuff(stuffed) == data
    # After stuffing, every FF FF FD is followed by the stuffing FD: no header can appear.
    i = stuffed.find(p.HEADER)
    while i >= 0:
        assert stuffed[i + 3 : i + 4] == b"\xfd"
        i = stuffed.find(p.HEADER, i + 1)


@given(st.integers(0, 0xFE).filter(lambda i: i != 0xFD), st.integers(0, 255), _header_heavy)
@example(0, 0xFF, b"\xff\xfd")  # the instruction byte starts an FF FF FD run
def test_build_parse_round_trip(packet_id, instruction, params):
    packet = build_packet(packet_id, instruction, params)
    # The length field counts the stuffed body, and the CRC covers it.
    assert int.from_bytes(packet[5:7], "little") == len(packet) - 7
    assert crc16(packet[:-2]) == int.from_bytes(packet[-2:], "little")
    assert PacketParser().feed(packet) == [Packet(packet_id, instruction, params)]


_packets = st.tuples(st.integers(0, 0xFE).filter(lambda i: i != 0xFD), st.integers(0, 255), _header_heavy)
# Garbage without 0xFD cannot contain or complete a header, so every valid packet must come out.
_garbage = st.lists(st.integers(0, 255).filter(lambda b: b != 0xFD), max_size=40).map(bytes)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_garbage, _packets), max_size=8), _garbage, st.integers(1, 50))
def test_parser_finds_packets_between_garbage_in_any_chunking(items, tail, chunk):
    stream = b"".join(g + build_packet(*pk) for g, pk in items) + tail
    parser = PacketParser()
    got: list[Packet] = []
    for i in range(0, len(stream), chunk):
        got += parser.feed(stream[i : i + chunk])
    assert got == [Packet(*pk) for _, pk in items]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300) | _packets.map(lambda pk: build_packet(*pk)), max_size=20))
def test_parser_survives_arbitrary_bytes(chunks):
    parser = PacketParser(keep_corrupt=True)
    start = time.monotonic()
    for c in chunks:
        for pkt in parser.feed(c):
            assert 0 <= pkt.id <= 0xFF
        assert parser.pending <= 7 + p.MAX_LENGTH + len(c)
    # An idle line flushes whatever partial packet garbage announced; each resync drops a byte.
    for _ in range(parser.pending + 1):
        parser.resync()
    assert parser.pending <= 2
    assert time.monotonic() - start < 2.0


def test_parser_bounded_on_a_flood_of_headers():
    parser = PacketParser()
    start = time.monotonic()
    flood = (p.HEADER + b"\x00\x01\xff\x03") * 2_000  # false headers announcing ~1 KB packets
    assert parser.feed(flood) == []
    assert parser.pending <= 7 + p.MAX_LENGTH
    assert time.monotonic() - start < 5.0


def test_corrupt_packet_is_counted_and_the_next_one_still_found():
    good = build_packet(3, p.READ, bytes([0x84, 0, 4, 0]))
    bad = bytearray(build_packet(1, p.PING))
    bad[-1] ^= 0xFF
    parser = PacketParser()
    assert parser.feed(bytes(bad) + good) == [Packet(3, p.READ, bytes([0x84, 0, 4, 0]))]
    assert parser.crc_errors == 1
    keeping = PacketParser(keep_corrupt=True)
    got = keeping.feed(bytes(bad) + good)
    assert [(k.id, k.instruction, k.crc_ok) for k in got] == [(1, p.PING, False), (3, p.READ, True)]


def test_bad_length_is_skipped():
    parser = PacketParser()
    got = parser.feed(p.HEADER + b"\x00\x01\x01\x00" + build_packet(2, p.PING))  # length 1 < minimum
    assert got == [Packet(2, p.PING, b"")]
    assert parser.bad_lengths == 1
