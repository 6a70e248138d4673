"""Paths read from a dataset's own metadata stay inside the dataset.

Index lines, ``info.json`` path templates and Parquet image paths are data: whoever
wrote the dataset chose them. A reader that joined them to the root as given would
open ``/etc/passwd`` for ``"/etc/passwd"`` or a sibling dataset for ``"../other/x"``.
The check is lexical (``..`` and absolute paths are refused, symbolic links inside
the folder are followed as usual): dataset folders from the Hugging Face cache are
trees of symbolic links into a shared blob store, and they must keep working.

Writing is stricter: a command that modifies a dataset writes nothing through a link
inside it (:func:`refuse_links` for the folders it writes into; files are opened with
``O_NOFOLLOW`` or replaced by rename, which replaces a link rather than its target).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from .errors import DatasetError

_DRIVE = re.compile(r"^[A-Za-z]:")  # a drive letter: absolute (or drive-relative) on Windows


def join_inside(root: str | Path, relative: str, *, source: str, error: type[DatasetError] = DatasetError) -> Path:
    """``root / relative``, or ``error`` naming ``source`` if ``relative`` leaves ``root``."""
    text = str(relative)
    if "\x00" in text:
        raise error(f"{source}: path {relative!r} contains a NUL byte")
    parts = PurePosixPath(text.replace("\\", "/"))
    if text == "" or parts.is_absolute() or os.path.isabs(text) or _DRIVE.match(text):
        raise error(f"{source}: path {relative!r} is not relative to the dataset folder {root}; refusing to read it")
    kept: list[str] = []
    for part in parts.parts:
        if part == "..":
            if not kept:
                raise error(
                    f"{source}: path {relative!r} points outside the dataset folder {root}; refusing to read it"
                )
            kept.pop()
        elif part != ".":
            kept.append(part)
    return Path(root).joinpath(*kept)


def refuse_links(root: str | Path, folders: Iterable[str], *, purpose: str,
                 error: type[DatasetError] = DatasetError) -> None:
    """``error`` if a folder of ``root`` that a writer writes into is a symbolic link (its writes
    would land wherever the link points) or not a folder at all. Missing folders are fine."""
    for rel in folders:
        path = Path(root) / rel
        try:
            st = os.lstat(path)
        except OSError:
            continue  # missing (or under a parent that is not a folder: reported for the parent)
        if stat.S_ISLNK(st.st_mode):
            raise error(f"{path} is a symbolic link (to {os.readlink(path)}); telecorder writes nothing through "
                        f"links inside a dataset; replace it with a real folder, then {purpose} again")
        if not stat.S_ISDIR(st.st_mode):
            raise error(f"{path} is not a folder; move it away, then {purpose} again")
