"""What merging the parts of a sharded ALOHA or robomimic conversion (see ``parts.py``) shares.

The format's own merge (:mod:`.aloha.merge`, :mod:`.robomimic.merge`) checks everything with these
before the first file moves, so an inconsistent part leaves the parts as they were and the error
names it. The settings come from the parts' sidecars (what their writers made of the options).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..datasets.features import DatasetInfo
from .base import SIDECAR, ConversionError
from .hdf5_common import load_sidecar
from .parts import PARTS_DIR


def part_sidecar(part: Path, fmt: str) -> dict[str, Any]:
    """The sidecar the ``fmt`` writer left in ``part``; ConversionError if the part is missing or not its."""
    if not part.is_dir():
        raise ConversionError(f"{part}: the part is missing")
    meta = load_sidecar(part, fmt)
    if meta is None:
        raise ConversionError(f"{part}: no {fmt} {SIDECAR}; not a part written by the {fmt} writer")
    return meta


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def check_info(part: Path, meta: Mapping[str, Any], info: DatasetInfo) -> None:
    """The part was written with ``info`` (its own episode and frame counts aside)."""
    got = meta.get("info")
    if not isinstance(got, dict):
        raise ConversionError(f"{part / SIDECAR}: no 'info' section")
    want = _plain(replace(info, total_episodes=got.get("total_episodes", 0),
                          total_frames=got.get("total_frames", 0)).to_dict())
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    if diff:
        raise ConversionError(f"{part / SIDECAR}: written with another schema than the conversion's ({', '.join(diff)} differ)")


def check_same(part: Path, settings: dict[str, Any], first: dict[str, Any] | None, first_part: Path) -> None:
    """The part's writer settings are those of the first part (``first``; None for the first part itself)."""
    for key, value in settings.items():
        if first is not None and first[key] != value:
            raise ConversionError(f"{part}: {key} is {value!r}, but {first_part.name} has {first[key]!r}")


def numbered_entries(part: Path, entries: Any, stem: str, suffix: str = "") -> dict[str, dict[str, Any]]:
    """The part's episode entries, which its writer numbers from 0 without gaps."""
    if not isinstance(entries, dict):
        raise ConversionError(f"{part / SIDECAR}: no episode list")
    want = [f"{stem}_{k}{suffix}" for k in range(len(entries))]
    if list(entries) != want:
        raise ConversionError(f"{part / SIDECAR}: episodes are {list(entries)[:5]}..., not {want[:5]}...")
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("length"), int):
            raise ConversionError(f"{part / SIDECAR}: {name} has no step count")
    return entries


def remove_parts(work: Path, parts: list[Path]) -> None:
    """The parts and their folder, once their episodes are in the merged dataset."""
    for part in parts:
        shutil.rmtree(part, ignore_errors=True)
    shutil.rmtree(work / PARTS_DIR, ignore_errors=True)
