"""Foreign dataset formats, both directions, behind one registry and one pipeline.

Formats are imported only when used, so converting HDF5 never imports TensorFlow.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from .base import ConversionError, FormatReader, FormatWriter

# name -> (module, reader class or None, writer class or None)
FORMATS: dict[str, tuple[str, str | None, str | None]] = {
    "native": ("telecorder.converters.native", "NativeReader", "NativeWriter"),
    "lerobot": ("telecorder.converters.lerobot", "LeRobotReader", "LeRobotWriter"),
    "rlds": ("telecorder.converters.rlds", "RLDSReader", "RLDSWriter"),
    "oxe": ("telecorder.converters.rlds.oxe_merge", None, "OXEWriter"),
    "aloha": ("telecorder.converters.aloha", "AlohaReader", "AlohaWriter"),
    "robomimic": ("telecorder.converters.robomimic", "RobomimicReader", "RobomimicWriter"),
}
# Detection order: cheap, unambiguous markers first.
DETECT_ORDER = ("native", "lerobot", "rlds", "robomimic", "aloha")


def _load(name: str, which: int) -> type:
    if name not in FORMATS:
        raise ConversionError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")
    module, *classes = FORMATS[name]
    cls_name = classes[which]
    if cls_name is None:
        role = "read" if which == 0 else "written"
        raise ConversionError(f"format {name!r} cannot be {role} (it is an output convention of RLDS; read it as 'rlds')")
    return getattr(importlib.import_module(module), cls_name)


def reader_class(name: str) -> type[FormatReader]:
    return _load(name, 0)


def writer_class(name: str) -> type[FormatWriter]:
    return _load(name, 1)


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file or folder")
    for name in DETECT_ORDER:
        try:
            if reader_class(name).detect(path):
                return name
        except ImportError:
            continue
    damaged = _damaged_info(path)
    if damaged:
        raise ConversionError(damaged)
    raise ConversionError(
        f"{path}: not a dataset telecorder recognises (native, LeRobot v2/v3, RLDS/TFDS, ALOHA HDF5, robomimic); "
        "pass --from FORMAT if it is one of them"
    )


def _damaged_info(path: Path) -> str | None:
    """What is wrong with ``path/meta/info.json`` when no format recognised the folder (None: no such
    file, or nothing wrong with it as JSON): a native or LeRobot dataset whose description is damaged
    is named as such, not as an unknown dataset."""
    info = path / "meta" / "info.json"
    if not info.exists() and not info.is_symlink():
        return None
    hint = ("; restore it (a native dataset's says \"format\": \"telecorder\", a LeRobot one's "
            "\"codebase_version\": \"v2.x\"/\"v3.x\"), or pass --from FORMAT")
    try:
        with open(info, "rb") as fh:  # what the file holds, at most 64 MiB (no 64 MiB buffer for a 1 KB file)
            raw = fh.read(min(os.fstat(fh.fileno()).st_size, 64 << 20) + 1)
        doc = json.loads(raw.decode("utf-8"))
    except IsADirectoryError:
        return f"{info}: is a folder, not the dataset's description{hint}"
    except OSError as e:
        return f"{info}: cannot be read ({e.strerror or e}){hint}"
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return f"{info}: not valid JSON ({type(e).__name__}: {str(e)[:120]}){hint}"
    if not isinstance(doc, dict):
        return f"{info}: holds a JSON {type(doc).__name__}, not the object describing the dataset{hint}"
    fmt, version = doc.get("format"), doc.get("codebase_version")
    return (f"{info}: names no format telecorder reads (format {fmt!r:.40}, codebase_version {version!r:.40})"
            f"{hint}")


def open_reader(path: str | Path, fmt: str | None = None, **options: object) -> FormatReader:
    name = fmt or detect_format(path)
    cls = reader_class(name)
    try:
        return cls(Path(path), **options)
    except TypeError as e:
        raise ConversionError(f"{path}: the {name} reader does not take option(s) {sorted(options)} ({e})") from e


__all__ = [
    "FORMATS",
    "ConversionError",
    "FormatReader",
    "FormatWriter",
    "detect_format",
    "open_reader",
    "reader_class",
    "writer_class",
]
