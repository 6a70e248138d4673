"""A folder one process builds a dataset in, and how the result takes its final name.

``telecorder convert`` builds its output next to the destination, in ``.NAME.partial``::

    .NAME.partial/        flock'ed (the folder itself) by its owner for the whole run
        owner.json        who owns it (pid, command, since) and the source it is built from
        dataset/          the output; renamed to NAME only once complete
        replaced/         briefly, the old NAME that ``--overwrite`` replaced

The folder belongs to whichever process holds the lock on it; nobody else deletes or
writes it, and a second run for the same destination refuses, naming the owner. The
kernel drops the lock when its owner dies (``kill -9`` too), so a dead run's folder is
taken over by the next run: continued (``--resume``, from the same source only) or
cleared.

Publishing never replaces what the run was not told to replace: a new output takes its
name with ``RENAME_NOREPLACE``; with ``--overwrite`` it replaces only the very folder that
was under the name when the run started (same inode, same content, checked under the
dataset's lock at the moment of the exchange). Otherwise the run refuses and keeps both:
the destination as it is, and the output under a visible name the error gives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import fsync_dir, write_json_atomic
from ..errors import DatasetError
from .dataset import INDEX, INFO, is_dataset
from .edit_publish import _RENAME_EXCHANGE, _RENAME_NOREPLACE, _renameat2
from .lock import LOCK_FILE, DatasetLock, DatasetLockedError

OWNER = "owner.json"
OUTPUT = "dataset"
REPLACED = "replaced"


class WorkFolderBusy(DatasetError):
    """Another live process owns the work folder."""


class PublishRefused(DatasetError):
    """The destination is not what the run may replace; ``kept`` is where the output is instead."""

    def __init__(self, message: str, kept: Path) -> None:
        super().__init__(message)
        self.kept = kept


class WorkFolder:
    """The locked work folder ``path``; see the module note. Use :meth:`claim`."""

    def __init__(self, path: Path, fd: int, previous: dict[str, Any]) -> None:
        self.path = path
        self._fd: int | None = fd
        self.previous = previous  # owner.json as the last owner left it ({} if none)

    @property
    def output(self) -> Path:
        return self.path / OUTPUT

    @classmethod
    def claim(cls, path: str | Path, busy: str) -> WorkFolder:
        """Create ``path`` or take over a dead owner's; ``busy`` is the error when a live one owns it
        (``{owner}`` in it becomes the owner's description)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(1000):  # each retry means another process just created or removed it
            with contextlib.suppress(FileExistsError):
                os.mkdir(path)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise DatasetError(f"{path} is not a folder (the work folder of a conversion goes there); "
                                       "remove it") from e
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                os.close(fd)
                raise WorkFolderBusy(busy.format(owner=describe(_read_owner(path)))) from e
            try:
                same = os.fstat(fd).st_ino == os.lstat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else the owner published and removed it between our open and our lock
                return cls(path, fd, _read_owner(path))
            os.close(fd)
        raise DatasetError(f"{path}: other processes keep creating and removing it; try again")

    def start(self, record: dict[str, Any]) -> None:
        """Describe this process as the owner (with ``record``, e.g. the source) in owner.json."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "argv": " ".join(sys.argv[:8]),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record}
        write_json_atomic(self.path / OWNER, me)

    def clear(self) -> None:
        """Delete everything in the folder (a dead owner's output), keeping the folder and its lock."""
        for child in self.path.iterdir():
            _remove(child)

    def restore_interrupted(self, dst: Path) -> None:
        """A dead owner killed between the two renames of a replacement left the old ``dst`` in
        ``replaced/`` and nothing under ``dst``: it goes back first."""
        old = self.path / REPLACED
        if old.exists():
            if os.path.lexists(dst):  # the replacement finished; only the old one's deletion was cut short
                _remove(old)
            else:
                rename_new(old, dst)

    def finish(self) -> None:
        """Remove the folder (the output was published or kept elsewhere) and drop the lock."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / OWNER).unlink()  # first: a kill below leaves nothing to resume from
        _remove(self.path)
        self.release()

    def close(self) -> None:
        """Drop the lock; the folder goes too if it holds no output (a run refused before it wrote any)."""
        if self._fd is not None and not any(os.path.lexists(self.path / n) for n in (OUTPUT, REPLACED)):
            with contextlib.suppress(OSError):
                _remove(self.path)
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> WorkFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe(owner: dict[str, Any]) -> str:
    if not owner.get("pid"):
        return "another telecorder process"
    where = "" if owner.get("host") in (None, socket.gethostname()) else f" on {owner['host']}"
    what = f" ({owner['command']}" + (f", since {owner['since']}" if owner.get("since") else "") + ")"
    return f"process {owner['pid']}{where}{what if owner.get('command') else ''}"


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / OWNER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- what a folder is -----------------------------------------------------------------------------


def identity(path: str | Path) -> dict[str, Any] | None:
    """The folder (or file) at ``path`` now: its inode and a digest of every entry under it
    (name, size, modification time; the lock file left out, taking a lock is no change), or
    ``None`` if nothing is there."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    digest = hashlib.sha256()
    for rel, entry in _walk(path, hidden=True):
        if rel != LOCK_FILE:
            digest.update(f"{rel}\0{entry.st_size}\0{entry.st_mtime_ns}\0{entry.st_mode}\n".encode())
    return {"dev": st.st_dev, "ino": st.st_ino, "content": digest.hexdigest()}


def source_identity(path: str | Path) -> dict[str, str]:
    """Where a conversion's source is and what it holds: its resolved path and a digest of its
    index and info (a native dataset's ``meta/info.json`` and episode index, any format's
    small JSON metadata) and of the name and size of every file (hidden files left out: a
    lock, an episode being recorded)."""
    path = Path(path)
    digest = hashlib.sha256()
    for rel, entry in _walk(path, hidden=False):
        digest.update(f"{rel}\0{entry.st_size}\n".encode())
        if rel in (INFO, INDEX) or (rel.endswith((".json", ".jsonl")) and entry.st_size <= 1 << 20):
            with contextlib.suppress(OSError):
                digest.update((path / rel).read_bytes() if path.is_dir() else b"")
    if path.is_file():
        with contextlib.suppress(OSError), open(path, "rb") as fh:
            digest.update(fh.read(1 << 16))  # a one-file source: its header
    return {"path": str(path.resolve()), "fingerprint": digest.hexdigest()}


def _walk(path: Path, *, hidden: bool):
    """(relative name, lstat) of ``path`` itself if a file, else of every file below it, sorted;
    links are not followed."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        yield "", st
        return
    out = []
    for folder, dirs, files in os.walk(path):
        if not hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            if not hidden and name.startswith("."):
                continue
            full = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                out.append((os.path.relpath(full, path), os.lstat(full)))
    yield from sorted(out, key=lambda x: x[0])


# -- publishing ------------------------------------------------------------------------------------


def publish(work: WorkFolder, dst: Path, replaces: dict[str, Any] | None, what: str) -> None:
    """Give ``work.output`` the name ``dst``: as a new name, or (``replaces``, the
    :func:`identity` of ``dst`` when the run started) in exchange for exactly that folder.
    Anything else under ``dst`` stays; the output is then kept and :class:`PublishRefused` says where."""
    output = work.output
    if replaces is None or not os.path.lexists(dst):
        try:
            rename_new(output, dst)
        except FileExistsError:
            kept = _keep(output, dst)
            raise PublishRefused(
                f"{dst} appeared while {what} ran (another command made it); it was left as it is and the output "
                f"is kept at {kept}; compare the two, then rename or delete one", kept) from None
        return
    lock = DatasetLock(dst, f"replace it ({what} --overwrite)") if is_dataset(dst) else None
    try:
        if lock is not None:
            lock.acquire()  # nobody may be recording into the dataset that is about to be replaced
    except DatasetLockedError as e:
        kept = _keep(output, dst)
        raise PublishRefused(f"{e}; it was not replaced, and the output is kept at {kept}", kept) from e
    try:
        if identity(dst) != replaces:
            kept = _keep(output, dst)
            raise PublishRefused(
                f"{dst} changed while {what} ran (something recorded into it, edited or replaced it); "
                f"--overwrite replaces only what was there when it started, so it was left as it is and the "
                f"output is kept at {kept}; compare the two, then rename or delete one", kept)
        old = work.path / REPLACED
        if _renameat2(output, dst, _RENAME_EXCHANGE):
            os.rename(output, old)  # first: the folder named "dataset" is never the old one for long
        else:  # no atomic exchange here: two renames; restore_interrupted undoes a kill between them
            os.rename(dst, old)
            os.rename(output, dst)
        fsync_dir(dst.parent)
    finally:
        if lock is not None:
            lock.release()


def rename_new(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, which must not exist (FileExistsError otherwise)."""
    if not _renameat2(src, dst, _RENAME_NOREPLACE):
        if os.path.lexists(dst):  # best effort where the kernel cannot refuse atomically
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
        os.rename(src, dst)
    fsync_dir(dst.parent)


def _keep(output: Path, dst: Path) -> Path:
    """Move a refused output to a free visible name next to ``dst``."""
    for n in range(1, 1000):
        kept = dst.with_name(f"{dst.name}.converted" + (f"-{n}" if n > 1 else ""))
        try:
            rename_new(output, kept)
            return kept
        except FileExistsError:
            continue
    raise DatasetError(f"{dst}: no free name to keep the output at; it is still in {output}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
