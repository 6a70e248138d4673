"""One process at a time modifies a dataset folder: an exclusive ``flock`` on ``meta/.lock``.

Every command that changes a dataset (recording, ``--resume``, ``doctor --repair``,
marking episodes bad, replacing it with ``convert --overwrite``) holds this lock for as
long as it writes. The kernel drops the lock when its holder exits, ``kill -9``
included, so a crash never leaves a stale lock behind. While it holds the lock, the
holder describes itself in the file (pid, command, start time) so that a second
command can say who is in the way.

A command that only reads a dataset (the sources of ``edit merge`` and of any edit with
``--out``) takes a shared lock with :class:`DatasetReadLock`: it opens the lock file
read-only and creates or writes nothing, so a read-only source (a read-only mount,
``chmod -R a-w``, a lock file that is a directory) works. Where no shared lock can be
taken without writing, it reads unlocked and checks afterwards that nothing changed.

The lock file is opened without following symbolic links, at ``meta/`` or at the file
itself: a dataset (downloaded, shared, unpacked from an archive) that carries a link
there would otherwise have the lock holder write its description into, and truncate,
whatever the link points at.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..safe_paths import refuse_links

LOCK_FILE = "meta/.lock"
# Folders a writer writes into: each must be a real folder of the dataset, not a link out of it.
WRITTEN_FOLDERS = ("meta", "episodes", "episodes/.unrecoverable")
# Files a writer modifies in place (appends to) rather than replaces by rename.
APPENDED_FILES = ("meta/episodes.jsonl",)


class DatasetLockedError(DatasetError):
    """Another process is modifying the dataset."""


def _open_lock_file(root: Path, flags: int) -> int:
    """``root/meta/.lock`` opened with ``flags``, following no symbolic link below ``root``.

    ``O_NONBLOCK``: a FIFO planted under the name would otherwise block the open forever.
    """
    meta = os.open(root / "meta", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return os.open(".lock", flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666, dir_fd=meta)
    finally:
        os.close(meta)


def _regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


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
        refuse_links(self.root, WRITTEN_FOLDERS, purpose=self.purpose)
        _refuse_linked_files(self.root, self.purpose)
        try:
            # O_CREAT without O_TRUNC: opening must not erase the description of the current holder.
            fd = _open_lock_file(self.root, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise DatasetError(_cannot_open(self.path, e, self.purpose)) from e
        if not _regular(fd):
            os.close(fd)
            raise DatasetError(f"{self.path} is not a regular file; remove it (telecorder makes it again), "
                               f"then {self.purpose} again")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = _describe_holder(fd)
            reader = None if holder else _describe_from_proc(fd)
            os.close(fd)
            busy = (f"is being modified by {holder}" if holder else f"is in use by {reader}" if reader else
                    "is in use by another telecorder process (one reading it, or one starting to modify it)")
            raise DatasetLockedError(
                f"{self.root} {busy}; wait until it finishes (or stop it), then {self.purpose} again"
            ) from e
        except OSError as e:
            os.close(fd)
            raise DatasetError(f"{self.path}: cannot be locked ({e.strerror}); {self.purpose} needs a file "
                               "system that supports flock") from e
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


class DatasetReadLock:
    """Shared lock for a command that only reads ``root``: it writes nothing into the dataset.

    Writers (:class:`DatasetLock`) wait for it and it for them; readers share. Where the
    lock file cannot be opened read-only as a regular file (it is missing, a link, a
    folder), the dataset is read unlocked and :meth:`check_unchanged` (called before
    anything read is published) says whether a writer changed it meanwhile.
    """

    def __init__(self, root: str | Path, purpose: str) -> None:
        self.root = Path(root)
        self.purpose = purpose
        self._fd: int | None = None
        self._snapshot: tuple[Any, ...] | None = None

    @property
    def locked(self) -> bool:
        """Whether a shared lock is held (else the dataset is read unlocked, and checked)."""
        return self._fd is not None

    def acquire(self) -> DatasetReadLock:
        if self._fd is not None or self._snapshot is not None:
            return self
        try:
            fd: int | None = _open_lock_file(self.root, os.O_RDONLY)
        except OSError:
            fd = None
        if fd is not None and not _regular(fd):
            os.close(fd)
            fd = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError as e:
                holder = _describe_holder(fd) or "another telecorder process"
                os.close(fd)
                raise DatasetLockedError(
                    f"{self.root} is being modified by {holder}; wait until it finishes (or stop it), "
                    f"then {self.purpose} again"
                ) from e
            except OSError:  # no flock here (some network file systems): read unlocked, then check
                os.close(fd)
                fd = None
        self._fd = fd
        if fd is None:
            self._snapshot = fingerprint(self.root)
        return self

    def check_unchanged(self) -> None:
        """Raise if the dataset changed since :meth:`acquire` (only when it is read unlocked)."""
        if self._snapshot is not None and fingerprint(self.root) != self._snapshot:
            raise DatasetLockedError(
                f"{self.root} changed while it was being read (it has no usable {LOCK_FILE}, so it could not "
                f"be locked); nothing was written; {self.purpose} again once nothing else modifies it"
            )

    def release(self) -> None:
        self._snapshot = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> DatasetReadLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def fingerprint(root: str | Path) -> tuple[Any, ...]:
    """What a writer changes when it modifies ``root``: identity, size and time of the metadata
    files, the lock file and every entry of ``episodes/`` (links not followed)."""
    root = Path(root)
    out: list[Any] = []
    for rel in ("meta/info.json", "meta/episodes.jsonl", "meta/stats.json", LOCK_FILE, "episodes"):
        out.append((rel, _stat_key(root / rel)))
    with contextlib.suppress(OSError), os.scandir(root / "episodes") as entries:
        out += sorted((e.name, _stat_key(Path(e.path))) for e in entries)
    return tuple(out)


def _stat_key(path: Path) -> tuple[int, ...] | None:
    try:
        s = os.lstat(path)
    except OSError:
        return None
    return (s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)


def lock_holder(root: str | Path) -> str | None:
    """Who modifies the dataset right now (``None`` if nobody); takes no lock that lasts and writes nothing."""
    try:
        fd = _open_lock_file(Path(root), os.O_RDONLY)
    except OSError:
        return None
    try:
        if not _regular(fd):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: readers are not in the way
        except BlockingIOError:
            return _describe_holder(fd) or "another telecorder process"
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def lock_problem(root: str | Path) -> str | None:
    """Why no writer can lock ``root`` (a link or a non-file where its lock file or a folder
    it writes should be), or ``None``; what ``doctor`` reports so that the fix comes first."""
    root = Path(root)
    try:
        refuse_links(root, WRITTEN_FOLDERS, purpose="repair or record into it")
        _refuse_linked_files(root, "repair or record into it")
    except DatasetError as e:
        return str(e)
    path = root / LOCK_FILE
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return (f"{path} is a symbolic link; a writer would write through it, so every command that modifies "
                "the dataset refuses it; remove the link (telecorder makes the file again)")
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file; every command that modifies the dataset refuses it; remove it"
    return None


def _refuse_linked_files(root: Path, purpose: str) -> None:
    for rel in APPENDED_FILES:
        if (root / rel).is_symlink():
            raise DatasetError(f"{root / rel} is a symbolic link; telecorder appends to no file through a link: "
                               f"replace it with a copy of what it points to, then {purpose} again")


def _cannot_open(path: Path, e: OSError, purpose: str) -> str:
    if e.errno == errno.ELOOP or (e.errno == errno.ENOTDIR and path.parent.is_symlink()):
        where = path.parent if path.parent.is_symlink() else path
        return (f"{where} is a symbolic link; telecorder does not write through links inside a dataset; "
                f"replace it with a real {'folder' if where != path else 'file (or just remove it)'}, "
                f"then {purpose} again")
    if e.errno == errno.EISDIR:
        return f"{path} is a folder, not the lock file; remove it (telecorder makes the file), then {purpose} again"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"{path}: cannot be opened for writing ({e.strerror}); the dataset is read-only here, "
                f"and to {purpose} it must be writable")
    if e.errno == errno.ENOENT:
        return f"{path.parent}: folder is missing; this is not a complete telecorder dataset"
    return f"{path}: cannot be opened ({e.strerror}); {purpose} needs it"


def _describe_holder(fd: int) -> str | None:
    """Who holds the lock, as its holder described itself; ``None`` if it did not (yet)."""
    try:
        raw = os.pread(fd, 4096, 0)
        info: dict[str, Any] = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or not info.get("pid") or _gone(info):
        # Readers hold the lock shared and write nothing; a writer killed earlier left its description.
        return None
    where = "" if info.get("host") in (None, socket.gethostname()) else f" on {info['host']}"
    what = f" ({info['command']}" + (f", since {info['since']}" if info.get("since") else "") + ")"
    return f"process {info['pid']}{where}{what if info.get('command') else ''}"


def _describe_from_proc(fd: int) -> str | None:
    """The processes holding a lock on ``fd``'s file, from ``/proc/locks`` (Linux): a reader
    writes no description of itself, but the kernel knows who holds its shared lock."""
    try:
        st = os.fstat(fd)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in lines:
        parts = line.split()
        if (len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == where and parts[4].isdigit()
                and int(parts[4]) not in (0, os.getpid())):
            pids.append(int(parts[4]))
    for pid in sorted(set(pids)):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        command = " ".join(a.decode("utf-8", "replace") for a in argv[:8] if a)
        return f"process {pid} ({command})" if command else f"process {pid}"
    return None


def _gone(info: dict[str, Any]) -> bool:
    """Whether the holder described is a process of this host that no longer runs."""
    if info.get("host") not in (None, socket.gethostname()):
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, TypeError, OverflowError):
        return False
    return False
