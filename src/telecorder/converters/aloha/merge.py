"""The parts of a sharded ALOHA conversion (see ``parts.py``) merged into one episode folder.

ALOHA keeps one file per episode and nothing inside a file names its episode, so the parts'
files are renamed into the global numbering and one sidecar lists them all. Everything is
checked (see :mod:`..hdf5_merge`) before the first file moves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py

from ...atomic import write_json_atomic
from ...datasets.features import DatasetInfo
from ...datasets.stats import DatasetStats
from ..base import SIDECAR, ConversionError
from ..hdf5_merge import check_info, check_same, numbered_entries, part_sidecar, remove_parts
from .schema import episode_files

_ALOHA_SETTINGS = ("locations", "compress", "sim", "jpeg_quality", "episode_length")


def _check_episode_file(part: Path, path: Path, rows: int) -> None:
    if not path.is_file():
        raise ConversionError(f"{part}: {path.name} is missing")
    try:
        with h5py.File(path, "r") as f:
            got = f["action"].shape[0] if isinstance(f.get("action"), h5py.Dataset) else None
    except OSError as e:
        raise ConversionError(f"{part}: {path.name} cannot be read as HDF5 ({e})") from e
    if got != rows:
        raise ConversionError(f"{part}: {path.name} has {'no /action' if got is None else f'{got} steps'}, "
                              f"its sidecar says {rows}")


def merge_parts(work: Path, parts: list[Path], info: DatasetInfo, options: Mapping[str, Any],
                stats: DatasetStats | None) -> None:
    """One ALOHA folder in ``work`` from parts written with ``part=True`` (see ``parts.py``)."""
    work, parts = Path(work), [Path(p) for p in parts]
    if not parts:
        raise ConversionError(f"{work}: no parts to merge")
    first: dict[str, Any] | None = None
    moves: list[tuple[Path, dict[str, Any]]] = []
    for part in parts:
        meta = part_sidecar(part, "aloha")
        check_info(part, meta, info)
        settings = {k: meta.get(k) for k in _ALOHA_SETTINGS}
        check_same(part, settings, first, parts[0])
        first = first or settings
        entries = numbered_entries(part, meta.get("episodes"), "episode", ".hdf5")
        stray = sorted(set(p.name for p in episode_files(part).values()) - set(entries))
        if stray:
            raise ConversionError(f"{part}: {stray[0]} is not in the part's sidecar")
        for name, entry in entries.items():
            _check_episode_file(part, part / name, int(entry["length"]))
            moves.append((part / name, entry))
    assert first is not None
    episodes: dict[str, dict[str, Any]] = {}
    for src, entry in moves:
        name = f"episode_{len(episodes)}.hdf5"
        os.replace(src, work / name)
        episodes[name] = entry
    frames = sum(int(e["length"]) for e in episodes.values())
    write_json_atomic(work / SIDECAR, {
        "format": "aloha",
        "info": replace(info, total_episodes=len(episodes), total_frames=frames).to_dict(),
        **first,
        "episodes": episodes,
    })
    remove_parts(work, parts)
