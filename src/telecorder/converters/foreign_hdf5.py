"""Foreign HDF5 files (ALOHA/ACT episodes, robomimic datasets) as found: damage is one line.

A bit flip in a B-tree or a heap surfaces from h5py as ``RuntimeError``, ``KeyError``,
``OSError``, ``ValueError``, ``TypeError`` or ``IndexError`` depending on where HDF5 trips
over it; an attribute of the wrong type breaks the reader's own arithmetic the same way.
The readers run their file work inside :func:`damaged_file_errors`, which turns any of these
into a :class:`ConversionError` naming the file. :func:`read_rows` reads a whole dataset only
after checking the rows its header declares against the storage the file really holds, so a
header claiming 10^9 rows in a small file is an error, not a MemoryError.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from ..datasets.episode_integrity import storage_rows
from ..datasets.hdf5_links import refuse_other_files
from ..errors import TelecorderError
from .base import ConversionError

# What h5py and numpy raise on a damaged file or a value of the wrong kind in it.
DAMAGE = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError, OverflowError)


@contextlib.contextmanager
def damaged_file_errors(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Inside: any error of a damaged ``what`` file at ``path`` becomes one ConversionError."""
    try:
        yield
    except TelecorderError:
        raise
    except DAMAGE as e:
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ConversionError(f"{path}: damaged or not a valid {what} ({type(e).__name__}: {detail}); "
                              "restore it from a backup or leave it out") from e


def read_rows(ds: h5py.Dataset, path: str | os.PathLike[str], where: str, rows: int | None = None) -> np.ndarray:
    """All of ``ds`` (or its first ``rows``), once its declared rows fit what the file stores."""
    if ds.ndim >= 1 and ds.shape[0]:
        held = storage_rows(ds, Path(path).stat().st_size)
        if held is not None and ds.shape[0] > held:
            raise ConversionError(f"{where}: declares {ds.shape[0]} rows, but the file holds at most {held} of "
                                  "them (a damaged or altered header)")
    return ds[()] if rows is None else ds[:rows]


def open_foreign(path: Path, what: str, mode: str = "r") -> h5py.File:
    """``path`` opened with h5py; read, it is first checked for links into other files (see
    :mod:`..datasets.hdf5_links`), and any damage is one ConversionError naming it."""
    try:
        f = h5py.File(path, mode)
    except OSError as e:
        raise ConversionError(f"{path}: cannot be {'read' if mode == 'r' else 'written'} as HDF5 ({e})") from e
    if mode == "r":
        try:
            with damaged_file_errors(path, what):
                refuse_other_files(f, path, error=ConversionError)
        except BaseException:
            f.close()
            raise
    return f
