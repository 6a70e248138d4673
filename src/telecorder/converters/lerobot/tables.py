"""LeRobot's Parquet and JSON files read into checked values: every damage a ConversionError.

Shared by the reader and the merge; a column is taken as the (N, *shape) array that
``meta/info.json`` declares, an ``image`` column as the stored file of each row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...datasets.features import read_json
from ...datasets.images import decode_image
from ...errors import DatasetError
from ...safe_paths import join_inside
from ..base import ConversionError


def read_json_file(path: Path, what: str) -> Any:
    """A JSON metadata file (``what`` names it when missing)."""
    return read_json(path, error=ConversionError, missing=f"{what} is missing; not a complete LeRobot dataset",
                     invalid_hint="")


def read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` of each line: ``where`` is ``"<path> line <n>"`` for the checks to name."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError as e:
        raise ConversionError(f"{path}: file is missing; not a complete LeRobot v2 dataset") from e
    except OSError as e:
        raise ConversionError(f"{path}: cannot be read ({e.strerror or e})") from e
    out = []
    for n, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConversionError(f"{path}: line {n} is not UTF-8 text ({e}); restore the file") from e
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ConversionError(f"{path}: line {n} is not valid JSON ({e})") from e
        if not isinstance(row, dict):
            raise ConversionError(f"{path}: line {n} is not a JSON object")
        out.append((f"{path} line {n}", row))
    return out


def parquet_column_names(path: Path) -> set[str]:
    """The columns of a Parquet file, from its schema alone."""
    try:
        return set(pq.read_schema(path).names)
    except FileNotFoundError as e:
        raise ConversionError(f"{path}: file is missing") from e
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot be read as Parquet ({e})") from e


def read_parquet(path: Path, columns: list[str] | None = None, **kwargs: Any) -> pa.Table:
    """A Parquet file (``columns`` of it) as a table; ``kwargs`` go to ``pq.read_table``."""
    try:
        table = pq.read_table(path, columns=columns, **kwargs)
        table.column_names  # noqa: B018 - decoded lazily: a corrupt schema fails here, not at the caller
        return table
    except FileNotFoundError as e:
        raise ConversionError(f"{path}: file is missing") from e
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot be read as Parquet ({e})") from e



def complete_column(table: pa.Table, name: str) -> bool:
    """Whether the sidecar recorded ``name`` for every step (nulls mean the source had none)."""
    return name in table.column_names and table[name].null_count == 0


def column_values(table: pa.Table, name: str, shape: tuple[int, ...], dtype: str, path: Path) -> np.ndarray:
    """Column ``name`` as an (N, *shape) array: scalars, fixed or variable lists, nested lists."""
    if name not in table.column_names:
        raise ConversionError(
            f"{path}: column {name!r} is missing (meta/info.json declares it); the file is incomplete or "
            "from another dataset"
        )
    values: pa.Array = table[name].combine_chunks()
    while pa.types.is_list(values.type) or pa.types.is_large_list(values.type) or \
            pa.types.is_fixed_size_list(values.type):
        values = values.flatten()
    n, per_row = table.num_rows, math.prod(shape)
    if len(values) != n * per_row or values.null_count:
        raise ConversionError(
            f"{path}: column {name!r} holds {len(values)} values ({values.null_count} null) in {n} rows; "
            f"meta/info.json declares shape {list(shape) or [1]}"
        )
    try:
        return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape((n, *shape))
    except (ValueError, TypeError, pa.ArrowException) as e:
        raise ConversionError(
            f"{path}: column {name!r} holds {values.type} values that are not {dtype} numbers, as meta/info.json "
            f"declares ({e}); fix its dtype there, or leave it out of 'features'"
        ) from e


def image_column(table: pa.Table, key: str, path: Path, root: Path) -> list[np.ndarray]:
    """Frames stored in the rows (LeRobot ``image`` dtype: struct of PNG/JPEG bytes and a path)."""
    frames = []
    for step, blob in enumerate(image_bytes(table, key, path, root)):
        if step == 0 and _high_bit_depth(blob):
            raise ConversionError(
                f"{path}: column {key!r} holds {_high_bit_depth(blob)} images (depth?), which 8-bit RGB frames "
                "would truncate; leave this camera out with --cameras (cameras=[...] in Python), or flag it in "
                "meta/info.json with info.is_depth_map"
            )
        try:
            frames.append(decode_image(blob, where=f"{path} column {key!r} step {step}"))
        except DatasetError as e:
            raise ConversionError(str(e)) from e
    return frames


def image_bytes(table: pa.Table, key: str, path: Path, root: Path) -> list[bytes]:
    """The stored image file of each row of an ``image`` column (inline bytes, or a file it names)."""
    if key not in table.column_names:
        raise ConversionError(f"{path}: column {key!r} is missing (meta/info.json declares it as an image)")
    col = table[key].combine_chunks()
    if pa.types.is_struct(col.type):
        blobs = col.field("bytes").to_pylist() if col.type.get_field_index("bytes") >= 0 else [None] * len(col)
        paths = col.field("path").to_pylist() if col.type.get_field_index("path") >= 0 else [None] * len(col)
    else:
        blobs, paths = col.to_pylist(), [None] * len(col)
    out = []
    for step, (blob, rel) in enumerate(zip(blobs, paths, strict=True)):
        if blob is None and rel:
            image = join_inside(root, rel, source=f"{path} column {key!r} step {step}", error=ConversionError)
            blob = _read_bytes(image, path, key, step)
        if blob is None:
            raise ConversionError(f"{path}: column {key!r} step {step} holds neither image bytes nor a path")
        out.append(blob)
    return out


def _high_bit_depth(blob: bytes) -> str:
    """What a stored image is when more than 8 bits a sample ("16-bit PNG", "TIFF"), else ""."""
    head = bytes(blob[:26])
    # PNG: 8-byte signature, then the IHDR chunk whose bit depth is byte 24.
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) > 24 and head[24] > 8:
        return f"{head[24]}-bit PNG"
    if head[:4] in (b"II*\x00", b"MM\x00*"):  # LeRobot's depth frames are TIFF files
        return "TIFF"
    return ""


def _read_bytes(image: Path, path: Path, key: str, step: int) -> bytes:
    try:
        return image.read_bytes()
    except OSError as e:
        raise ConversionError(f"{image}: image of column {key!r} step {step} in {path} cannot be read ({e})") from e

