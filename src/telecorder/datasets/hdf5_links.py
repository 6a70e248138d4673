"""An HDF5 file read as data stays one file: no external links, virtual sources or external storage.

HDF5 lets a file name other files: an external link (``/x -> other.h5:/data``), a
virtual dataset whose sources are datasets of other files, and raw data kept in external
files. h5py follows all three when the object is read, so an episode file from elsewhere
(native, ALOHA, robomimic) could make a reader open ``/etc/...`` or a sibling dataset;
these are paths named by metadata, like those :func:`telecorder.safe_paths.join_inside`
keeps inside a dataset folder. Readers call :func:`refuse_other_files` once per file they
open, before reading any dataset of it. Soft links stay inside the file and are fine.
"""

from __future__ import annotations

from pathlib import Path

import h5py

from ..errors import DatasetError


def refuse_other_files(f: h5py.File, where: str | Path, *, error: type[DatasetError] = DatasetError) -> None:
    """``error`` naming ``where`` and the object if any object of ``f`` takes its data from another file."""
    problem: list[str] = []
    damaged: list[str] = []

    def visit(name: str, link: h5py.HardLink | h5py.SoftLink | h5py.ExternalLink) -> bool | None:
        if isinstance(link, h5py.ExternalLink):
            problem.append(f"/{name} is an HDF5 external link to {link.filename}:{link.path}")
            return True
        if not isinstance(link, h5py.HardLink):
            return None
        try:
            obj = f.get(name)
            plist = obj.id.get_create_plist() if isinstance(obj, h5py.Dataset) else None
        except (RuntimeError, OSError, KeyError, ValueError, TypeError) as e:
            # Raised inside h5py's visit callback, an error comes out as a SystemError: stop the
            # visit and report it below instead.
            damaged.append(f"/{name} cannot be opened ({type(e).__name__}: {e})")
            return True
        if plist is None:
            return None
        if plist.get_layout() == h5py.h5d.VIRTUAL:
            others = {plist.get_virtual_filename(i) for i in range(plist.get_virtual_count())} - {"."}
            if others:
                problem.append(f"/{name} is a virtual dataset whose data lies in {sorted(others)[0]}")
                return True
        if plist.get_external_count():
            raw = plist.get_external(0)[0]
            problem.append(f"/{name} keeps its data in the external file "
                           f"{raw.decode('utf-8', 'replace') if isinstance(raw, bytes) else raw}")
            return True
        return None

    try:
        f.visititems_links(visit)
    except (RuntimeError, OSError, KeyError, ValueError, TypeError, SystemError) as e:
        # h5py's errors on a damaged link table or object header: one line naming the file. An error
        # inside h5py's visit callback surfaces as a SystemError whose cause is the real one.
        real = (e.__cause__ or e.__context__ or e) if isinstance(e, SystemError) else e
        damaged.append(f"its objects cannot be listed ({type(real).__name__}: {real})")
    if damaged:
        raise error(f"{where}: the HDF5 file is damaged: {damaged[0]}; restore it from a copy, or set it aside")
    if problem:
        raise error(f"{where}: {problem[0]}; refusing to read outside the file (copy the data into it, "
                    "e.g. with h5copy or by re-exporting)")
