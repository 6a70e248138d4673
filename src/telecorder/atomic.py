"""Atomic file replacement: readers see the old content or the new, never a mix or nothing.

Every metadata file telecorder writes (``info.json``, ``stats.json``, the episode index,
converter sidecars, calibrations, tokenizer and normalizer files) goes through
:func:`atomic_write`. The temporary file is created with mode ``0o666`` so the process
umask applies exactly as for any other file (``mkstemp`` would force ``0600``, and a
trainer running as another user could not read the statistics); it is fsynced before
the rename and the directory after it, so the new name survives a power loss.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "fsync_dir", "fsync_path", "is_temporary", "write_json_atomic", "write_text_atomic"]


@contextlib.contextmanager
def atomic_write(path: str | Path, *, binary: bool = False, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Write to a hidden temporary file next to ``path``; on success it replaces ``path``.

    If the block raises (or the process dies), ``path`` keeps its previous content and
    the temporary file is removed (or, after a kill, left as ``.NAME.*.tmp``, which
    ``telecorder doctor --repair`` clears).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": encoding})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Replace ``path`` with ``obj`` as JSON (one trailing newline)."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=indent)
        fh.write("\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write`'s temporaries (debris after a kill)."""
    return name.startswith(".") and name.endswith(".tmp")


def fsync_path(path: str | Path) -> None:
    """Flush a closed file's data to disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable across a power loss."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (e.g. FUSE mounts) refuse fsync on directories
    finally:
        os.close(fd)
