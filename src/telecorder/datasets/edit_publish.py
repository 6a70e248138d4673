"""Where an edit builds its output, and how the output takes its final name in one step.

Every ``telecorder edit`` operation writes a complete dataset into a hidden staging
folder next to its destination (``.NAME.edit.partial``) and only then publishes it:

* a new output is renamed into place with ``RENAME_NOREPLACE`` (it never replaces a
  folder that appeared meanwhile);
* an in-place edit *exchanges* the staging folder with the dataset
  (``renameat2(RENAME_EXCHANGE)``, one atomic step on Linux): there is no moment at
  which the dataset's name is missing or holds anything but a complete dataset. The
  old content, now under the staging name, is deleted afterwards.

A kill before the publish leaves the old dataset untouched; a kill after it leaves the
new one complete. Either way the staging folder is debris that the next edit of the
same destination removes (never while another live edit holds its lock). Where the
kernel or file system cannot exchange folders, two renames with a ``.NAME.edit.replaced``
backup take its place, and the next edit puts the backup back if a kill fell between them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path

from ..atomic import fsync_dir
from ..errors import DatasetError
from .lock import DatasetLock, DatasetLockedError, lock_holder

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# The file system (or kernel) cannot do it: fall back to plain renames.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


class EditError(DatasetError):
    """An edit that cannot be done as asked: names the dataset, episode or feature, and what to do."""


def staging_path(dst: Path) -> Path:
    return dst.with_name("." + dst.name + ".edit.partial")


def backup_path(dst: Path) -> Path:
    return dst.with_name("." + dst.name + ".edit.replaced")


def clear_leftovers(dst: Path) -> None:
    """Put back what an edit killed mid-publish left, and drop its staging folder.

    A backup with no dataset under ``dst`` means the kill fell between the two fallback
    renames: the backup is the old dataset and goes back. A staging folder is never the
    only copy of anything (``dst`` holds a complete dataset in every state), so it goes,
    unless a live edit is still writing it.
    """
    backup, staging = backup_path(dst), staging_path(dst)
    for folder in (backup, staging):
        holder = lock_holder(folder) if folder.exists() else None
        if holder:
            raise EditError(f"{dst} is being edited by {holder}; wait until it finishes (or stop it)")
    if backup.exists():
        if dst.exists():
            shutil.rmtree(backup)
        else:
            os.replace(backup, dst)
            fsync_dir(dst.parent)
    if staging.exists():
        # Deleted under its lock: an edit that created the folder a moment ago and has not
        # locked it yet then fails to lock it (one line) instead of writing into a deleted folder.
        claim: DatasetLock | None = DatasetLock(staging, "clear an interrupted edit")
        try:
            claim.acquire()
        except DatasetLockedError as e:
            raise EditError(f"{dst} is being edited by another process ({e}); wait until it finishes") from e
        except DatasetError:
            claim = None  # no lock file to take (a kill before the staging folder had one): nobody holds it
        try:
            shutil.rmtree(staging)
        finally:
            if claim is not None:
                claim.release()


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2``; False if this system cannot (then the caller falls back)."""
    if not sys.platform.startswith("linux"):
        return False
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(dst))


def publish_new(staging: Path, dst: Path) -> None:
    """Give the finished ``staging`` folder the name ``dst``, which must not exist."""
    try:
        done = _renameat2(staging, dst, _RENAME_NOREPLACE)
    except FileExistsError as e:
        raise EditError(f"{dst} appeared while the edit ran; the result was not put there") from e
    if not done:
        if dst.exists():
            raise EditError(f"{dst} appeared while the edit ran; the result was not put there")
        os.rename(staging, dst)
    fsync_dir(dst.parent)


def publish_in_place(staging: Path, dst: Path) -> Path:
    """Swap the finished ``staging`` folder with the dataset ``dst``; returns where the old
    content now is (the caller deletes it)."""
    if _renameat2(staging, dst, _RENAME_EXCHANGE):
        fsync_dir(dst.parent)
        return staging
    backup = backup_path(dst)
    os.replace(dst, backup)
    try:
        os.replace(staging, dst)
    except BaseException:
        os.replace(backup, dst)  # the old dataset goes straight back under its name
        raise
    fsync_dir(dst.parent)
    return backup
