"""One process at a time modifies a dataset folder: an exclusive ``flock`` on ``meta/.lock``.

Every command that changes a dataset (recording, ``--resume``, ``doctor --repair``,
marking episodes bad, replacing it with ``convert --overwrite``) holds this lock for as
long as it writes. The kernel drops the lock when its holder exits, ``kill -9``
included, so a crash never leaves a stale lock behind. While it holds the lock, the
holder describes itself in the file (pid, command, start time) so that a second
command can say who is in the way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import DatasetError

LOCK_FILE = "meta/.lock"


class DatasetLockedError(DatasetError):
    """Another process is modifying the dataset."""


class DatasetLock:
    """Exclusive lock on a dataset folder; ``purpose`` says what the holder is doing.

    >>> with DatasetLock("demos/", "mark episode 3 bad"):
    ...     ...  # modify the dataset
    """

    def __init__(self, root: str | Path, purpose: str) -> None:
        self.root = Path(root)
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DatasetLock:
        if self._fd is not None:
            return self
        # O_CREAT without O_TRUNC: opening must not erase the description of the current holder.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = _describe_holder(fd)
            os.close(fd)
            raise DatasetLockedError(
                f"{self.root} is being modified by {holder}; wait until it finishes (or stop it), "
                f"then {self.purpose} again"
            ) from e
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.purpose,
            "argv": " ".join(sys.argv[:6]),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> DatasetLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(root: str | Path) -> str | None:
    """Who modifies the dataset right now (``None`` if nobody); takes no lock that lasts."""
    path = Path(root) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _describe_holder(fd: int) -> str:
    try:
        raw = os.pread(fd, 4096, 0)
        info: dict[str, Any] = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another telecorder process"
    where = "" if info.get("host") in (None, socket.gethostname()) else f" on {info['host']}"
    what = f" ({info['command']}" + (f", since {info['since']}" if info.get("since") else "") + ")"
    return f"process {info['pid']}{where}{what if info.get('command') else ''}"
