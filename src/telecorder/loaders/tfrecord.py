"""TFRecord files and ``tf.train.Example`` records read without TensorFlow.

A DataLoader worker that imported TensorFlow to read one record would pay seconds of start-up
and hundreds of MB; the framing and the protobuf wire format of an Example are simple enough
to walk directly, and walking them lazily is what lets a loader decode 2 JPEGs of an episode
without touching its other 300.

TFRecord framing (per record): ``uint64 length``, ``uint32 masked crc(length)``, ``data``,
``uint32 masked crc(data)``, little-endian. The CRCs are not checked: a truncated or garbled
record still fails to parse, with the file and offset named.

``Example`` = ``{1: Features}``; ``Features`` = repeated ``{1: MapEntry}``; ``MapEntry`` =
``{1: key (string), 2: Feature}``; ``Feature`` = one of ``{1: BytesList, 2: FloatList,
3: Int64List}``; each list holds field 1, packed or not.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError

_KINDS = {1: "bytes", 2: "float", 3: "int64"}


class RecordError(DatasetError):
    """A TFRecord file or Example record that cannot be parsed."""


def record_spans(path: Path) -> list[tuple[int, int]]:
    """``(offset, length)`` of the data of every record of a TFRecord file, reading headers only."""
    spans = []
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            pos = 0
            while pos < size:
                fh.seek(pos)
                header = fh.read(12)
                if len(header) < 12:
                    raise RecordError(f"{path}: truncated record header at byte {pos} (the file is cut short)")
                (length,) = struct.unpack("<Q", header[:8])
                if pos + 12 + length + 4 > size:
                    raise RecordError(f"{path}: record at byte {pos} claims {length} bytes, past the end of the "
                                      "file (truncated shard; re-download or regenerate it)")
                spans.append((pos + 12, length))
                pos += 12 + length + 4
    except FileNotFoundError as e:
        raise RecordError(f"{path}: shard file is missing") from e
    return spans


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(field number, wire type, value start, value end)`` of a message; varints: value in start."""
    out = []
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            n, pos = _varint(buf, pos)
            out.append((field, wire, pos, pos + n))
            pos += n
        elif wire == 0:
            value, pos = _varint(buf, pos)
            out.append((field, wire, value, pos))
        elif wire == 5:
            out.append((field, wire, pos, pos + 4))
            pos += 4
        elif wire == 1:
            out.append((field, wire, pos, pos + 8))
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("message overruns its length")
    return out


@dataclass(frozen=True)
class Feature:
    """One feature of an Example, still undecoded: its kind and where its list lies in the buffer."""

    kind: str  # "bytes", "float" or "int64"
    buf: memoryview
    start: int
    end: int
    where: str = "record"  # the shard, record and key, for errors found when the list is walked

    def spans(self) -> list[tuple[int, int]]:
        """``(offset, length)`` of each element of a bytes list, relative to ``buf``."""
        return [(s, e - s) for f, w, s, e in self._fields() if f == 1 and w == 2]

    def _fields(self) -> list[tuple[int, int, int, int]]:
        try:
            return _fields(self.buf, self.start, self.end)
        except (ValueError, IndexError) as e:
            raise RecordError(f"{self.where}: not a valid tf.train.Example list ({e}); the shard is corrupt") from e

    def values(self) -> np.ndarray:
        """The list's values: float32 for floats, int64 for ints, object (bytes) for bytes."""
        try:
            return self._values()
        except (ValueError, IndexError) as e:
            raise RecordError(f"{self.where}: not a valid tf.train.Example list ({e}); the shard is corrupt") from e

    def _values(self) -> np.ndarray:
        if self.kind == "bytes":
            return np.array([bytes(self.buf[s:s + n]) for s, n in self.spans()] or [], dtype=object)
        parts = []
        for f, w, s, e in self._fields():
            if f != 1:
                continue
            if self.kind == "float":
                parts.append(np.frombuffer(self.buf[s:e], dtype="<f4"))
            elif w == 2:
                parts.append(_packed_varints(self.buf[s:e]))
            else:
                parts.append(np.array([_signed(s)], np.int64))
        if not parts:
            return np.zeros(0, np.float32 if self.kind == "float" else np.int64)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _packed_varints(data: memoryview) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    if raw.size and (raw < 0x80).all():  # every value fits in one byte: flags, small counts
        return raw.astype(np.int64)
    out, pos = [], 0
    while pos < len(data):
        v, pos = _varint(data, pos)
        out.append(_signed(v))
    return np.array(out, np.int64)


def parse_example(buf: memoryview, where: str, wanted: Callable[[str], bool] | None = None) -> dict[str, Feature]:
    """The features of one serialized Example (``wanted(key)`` picks which), nothing decoded yet."""
    out: dict[str, Feature] = {}
    try:
        for field, wire, s, e in _fields(buf, 0, len(buf)):
            if field != 1 or wire != 2:
                continue
            for entry_field, entry_wire, es, ee in _fields(buf, s, e):
                if entry_field != 1 or entry_wire != 2:
                    continue
                key, value = None, None
                for f, w, vs, ve in _fields(buf, es, ee):
                    if f == 1 and w == 2:
                        key = bytes(buf[vs:ve]).decode("utf-8")
                    elif f == 2 and w == 2:
                        value = (vs, ve)
                if key is None or (wanted is not None and not wanted(key)):
                    continue
                kind, start, end = "bytes", 0, 0
                if value is not None:
                    inner = _fields(buf, *value)
                    if inner:
                        f, w, start, end = inner[0]
                        if f not in _KINDS or w != 2:
                            raise ValueError(f"feature {key!r} is not a bytes, float or int64 list")
                        kind = _KINDS[f]
                out[key] = Feature(kind, buf, start, end, f"{where} {key}")
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise RecordError(f"{where}: not a valid tf.train.Example ({e}); the shard is corrupt") from e
    return out
