"""What an episode file's structure claims, checked against what the file can hold, before anything is read.

An HDF5 dataset's extent is a number in its header: a file of a few hundred kilobytes can
declare 10^9 rows, and reading it allocates what the header says. A variable-length frame
stores, per row, a 16-byte reference (sequence length, global heap address, object index)
whose length HDF5 allocates before looking at the heap. Both are checked here against the
storage the file really has, so that a damaged or hostile file is one clear error naming
it instead of a MemoryError, a traceback or gigabytes of memory.

The rules (documented in docs/datasets.md (Crash safety)):

* a dataset's rows must fit its allocated storage: chunked datasets, the chunks allocated
  (rows a writer never wrote are not data); contiguous ones, the bytes allocated, which
  must lie inside the file;
* a frame reference must claim at most the file's size, point inside the file, at a
  global heap collection (signature ``GCOL``), and an object index of at least 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import DatasetError

_REPAIR_HINT = "run 'telecorder doctor --repair' to set the episode aside"
_GCOL = b"GCOL"


def storage_rows(ds: h5py.Dataset, file_size: int) -> int | None:
    """How many rows the storage allocated to ``ds`` can hold at most (None: not known)."""
    dsid = ds.id
    storage = int(dsid.get_storage_size())
    if storage > file_size:
        return 0  # the header claims storage beyond the end of the file
    if ds.chunks is not None:
        # Unfiltered or compressed alike: a row without an allocated chunk was never written.
        return int(dsid.get_num_chunks()) * int(ds.chunks[0])
    row_bytes = int(dsid.get_type().get_size()) * int(np.prod(ds.shape[1:], dtype=np.int64))
    if row_bytes <= 0:
        return None
    layout = dsid.get_create_plist().get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = dsid.get_offset()
        if offset is not None and offset + storage > file_size:
            return 0
    return storage // row_bytes


def check_extents(path: Path, f: h5py.File) -> None:
    """Every dataset of ``f`` declares at most the rows its storage holds."""
    file_size = os.path.getsize(path)
    found: list[tuple[str, h5py.Dataset]] = []
    f.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
    for name, ds in found:
        if ds.ndim == 0 or ds.shape[0] == 0:
            continue
        try:
            held = storage_rows(ds, file_size)
        except (OSError, ValueError, RuntimeError) as e:
            raise DatasetError(f"{path}: /{name} has a damaged layout ({e}); {_REPAIR_HINT}") from e
        if held is not None and ds.shape[0] > held:
            raise DatasetError(
                f"{path}: /{name} declares {ds.shape[0]} rows, but the {file_size}-byte file holds at most "
                f"{held} of them (a damaged or altered header); {_REPAIR_HINT}"
            )


def check_frame_references(path: Path, f: h5py.File, name: str, rows: int) -> None:
    """The first ``rows`` variable-length references of dataset ``name`` point at real heap objects."""
    ds = f[name]
    if ds.dtype.kind != "O" or rows == 0:
        return
    dsid = ds.id
    plist = dsid.get_create_plist()
    if plist.get_nfilters():
        return  # compressed references cannot be read raw; the reads below still catch the damage
    addr_size = int(f.id.get_create_plist().get_sizes()[0])
    if addr_size not in (2, 4, 8):
        return
    ref = np.dtype([("length", "<u4"), ("heap", f"<u{addr_size}"), ("object", "<u4")])
    file_size = os.path.getsize(path)
    spans: list[tuple[int, int, int]] = []  # (first row, file offset, bytes)
    try:
        if ds.chunks is not None:
            dsid.chunk_iter(lambda info: spans.append(
                (int(info.chunk_offset[0]), int(info.byte_offset), int(info.size))))
        else:
            offset = dsid.get_offset()
            if offset is None:
                return
            spans.append((0, int(offset), rows * ref.itemsize))
    except (OSError, ValueError, RuntimeError) as e:
        raise DatasetError(f"{path}: /{name} has a damaged chunk index ({e}); {_REPAIR_HINT}") from e
    fd = os.open(path, os.O_RDONLY)
    try:
        parts, firsts = [], []
        for first, offset, size in spans:
            if first >= rows:
                continue
            if offset + size > file_size:
                raise DatasetError(f"{path}: /{name} rows from {first} lie beyond the end of the file; {_REPAIR_HINT}")
            count = min(size // ref.itemsize, rows - first)
            parts.append(os.pread(fd, count * ref.itemsize, offset))
            firsts.append(np.arange(first, first + count))
        if not parts:
            return
        refs, step = np.frombuffer(b"".join(parts), dtype=ref), np.concatenate(firsts)
        length, heap = refs["length"].astype(np.int64), refs["heap"].astype(np.uint64)
        used = length > 0
        damaged = used & ((length > file_size) | (heap == 0) | (heap >= file_size) | (refs["object"] == 0))
        if not damaged.any():
            # Frames share heap collections: one look at each collection's signature.
            for addr in np.unique(heap[used]).tolist():
                if os.pread(fd, len(_GCOL), int(addr)) != _GCOL:
                    damaged = used & (heap == addr)
                    break
        if damaged.any():
            k = int(np.argmax(damaged))
            raise DatasetError(
                f"{path}: /{name} step {int(step[k])}: the frame reference is damaged (claims {int(length[k])} "
                f"bytes at offset {int(heap[k])} of a {file_size}-byte file); {_REPAIR_HINT}"
            )
    finally:
        os.close(fd)


# Dataset kinds numeric data may be stored as (bool, signed, unsigned, float): strings, compound
# records or references in their place are damage, named here rather than by numpy at first use.
_NUMERIC_KINDS = "biuf"


def check_dataset_types(path: Path, f: h5py.File, rows: int, numeric: dict[str, tuple[str, tuple[int, ...]]],
                        cameras: list[str], bookkeeping: list[str]) -> None:
    """Each dataset holds what its place in the layout says, ``rows`` rows of it.

    ``numeric`` maps a feature's HDF5 path to info.json's (dtype, row shape); ``bookkeeping``
    lists 1-D numeric datasets of one value per step (timestamps, frame indices, lateness);
    a camera's frames are one variable-length byte string per step.
    """
    def wrong(name: str, ds: h5py.Dataset, expected: str) -> DatasetError:
        return DatasetError(f"{path}: /{name} holds {ds.dtype} values of shape {list(ds.shape)}, expected "
                            f"{expected} (a damaged or altered file); {_REPAIR_HINT}")

    for name, (dtype, shape) in numeric.items():
        ds = f[name]
        want = np.dtype(dtype)
        kind_ok = ds.dtype.kind in _NUMERIC_KINDS if want.kind in _NUMERIC_KINDS else ds.dtype.kind == want.kind
        if not kind_ok or tuple(ds.shape) != (rows, *shape):
            raise wrong(name, ds, f"{want} values of shape {[rows, *shape]} (info.json's feature)")
    for name in bookkeeping:
        ds = f[name]
        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in _NUMERIC_KINDS or tuple(ds.shape) != (rows,):
            if not isinstance(ds, h5py.Dataset):
                raise DatasetError(f"{path}: /{name} is not a dataset; {_REPAIR_HINT}")
            raise wrong(name, ds, f"one number per step, shape [{rows}]")
    for cam in cameras:
        name = f"observation/images/{cam}"
        ds = f[name]
        if not isinstance(ds, h5py.Dataset):
            raise DatasetError(f"{path}: /{name} is not a dataset; {_REPAIR_HINT}")
        base = ds.dtype.metadata.get("vlen") if ds.dtype.metadata else None
        if ds.dtype.kind != "O" or base is None or np.dtype(base) != np.uint8 or tuple(ds.shape) != (rows,):
            raise wrong(name, ds, f"one encoded image (variable-length bytes) per step, shape [{rows}]")
