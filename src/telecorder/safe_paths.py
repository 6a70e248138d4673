"""Paths read from a dataset's own metadata stay inside the dataset.

Index lines, ``info.json`` path templates and Parquet image paths are data: whoever
wrote the dataset chose them. A reader that joined them to the root as given would
open ``/etc/passwd`` for ``"/etc/passwd"`` or a sibling dataset for ``"../other/x"``.
The check is lexical (``..`` and absolute paths are refused, symbolic links inside
the folder are followed as usual): dataset folders from the Hugging Face cache are
trees of symbolic links into a shared blob store, and they must keep working.
"""

from __future__ import annotations

import os
import re
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
