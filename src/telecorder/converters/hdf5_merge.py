"""The parts of a sharded ALOHA or robomimic conversion (see ``parts.py``) merged into one dataset.

ALOHA keeps one file per episode and nothing inside a file names its episode, so the parts'
files are renamed into the global numbering and one sidecar lists them all.

robomimic keeps the whole dataset in one HDF5 file, which renames cannot assemble: every demo
group is copied into the final file with HDF5's object copy (chunks and filters as written, one
demo at a time, so memory stays flat), its actions scaled by the range of the whole dataset, and
the masks and ``/data`` attributes written once, exactly as the sequential writer writes them.

Everything is checked before the first file moves, so an inconsistent part leaves the parts as
they were and the error names it. The settings come from the parts' sidecars (what their writers
made of the options), so ``options`` is not read again here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..atomic import write_json_atomic
from ..datasets.features import DatasetInfo
from ..datasets.stats import DatasetStats
from .action_scaling import ActionScaling
from .aloha.core import _episode_files, load_sidecar
from .base import SIDECAR, ConversionError
from .parts import PARTS_DIR, read_part_stats
from .robomimic.core import (
    ACTIONS_ATTR,
    FPS_ATTR,
    scale_actions,
    split_demos,
)


def _sidecar(part: Path, fmt: str) -> dict[str, Any]:
    if not part.is_dir():
        raise ConversionError(f"{part}: the part is missing")
    meta = load_sidecar(part, fmt)
    if meta is None:
        raise ConversionError(f"{part}: no {fmt} {SIDECAR}; not a part written by the {fmt} writer")
    return meta


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _check_info(part: Path, meta: Mapping[str, Any], info: DatasetInfo) -> None:
    """The part was written with ``info`` (its own episode and frame counts aside)."""
    got = meta.get("info")
    if not isinstance(got, dict):
        raise ConversionError(f"{part / SIDECAR}: no 'info' section")
    want = _plain(replace(info, total_episodes=got.get("total_episodes", 0),
                          total_frames=got.get("total_frames", 0)).to_dict())
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    if diff:
        raise ConversionError(f"{part / SIDECAR}: written with another schema than the conversion's ({', '.join(diff)} differ)")


def _check_same(part: Path, settings: dict[str, Any], first: dict[str, Any] | None, first_part: Path) -> None:
    for key, value in settings.items():
        if first is not None and first[key] != value:
            raise ConversionError(f"{part}: {key} is {value!r}, but {first_part.name} has {first[key]!r}")


def _numbered(part: Path, entries: Any, stem: str, suffix: str = "") -> dict[str, dict[str, Any]]:
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


def _remove_parts(work: Path, parts: list[Path]) -> None:
    for part in parts:
        shutil.rmtree(part, ignore_errors=True)
    shutil.rmtree(work / PARTS_DIR, ignore_errors=True)


# -- ALOHA ----------------------------------------------------------------------------------

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


def merge_aloha_parts(work: Path, parts: list[Path], info: DatasetInfo, options: Mapping[str, Any],
                      stats: DatasetStats | None) -> None:
    work, parts = Path(work), [Path(p) for p in parts]
    if not parts:
        raise ConversionError(f"{work}: no parts to merge")
    first: dict[str, Any] | None = None
    moves: list[tuple[Path, dict[str, Any]]] = []
    for part in parts:
        meta = _sidecar(part, "aloha")
        _check_info(part, meta, info)
        settings = {k: meta.get(k) for k in _ALOHA_SETTINGS}
        _check_same(part, settings, first, parts[0])
        first = first or settings
        entries = _numbered(part, meta.get("episodes"), "episode", ".hdf5")
        stray = sorted(set(p.name for p in _episode_files(part).values()) - set(entries))
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
    _remove_parts(work, parts)


# -- robomimic ------------------------------------------------------------------------------

_ROBOMIMIC_SETTINGS = ("file", "locations", "env_args", "env_args_attr", "part")


def _robomimic_part(part: Path, info: DatasetInfo) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    meta = _sidecar(part, "robomimic")
    _check_info(part, meta, info)
    if not isinstance(meta.get("part"), dict):
        raise ConversionError(f"{part / SIDECAR}: not written with part=True (no 'part' section)")
    entries = _numbered(part, meta.get("demos"), "demo")
    path = part / str(meta.get("file"))
    if not path.is_file():
        raise ConversionError(f"{part}: {path.name} is missing")
    try:
        with h5py.File(path, "r") as f:
            data = f.get("data")
            have = set(data) if isinstance(data, h5py.Group) else set()
            rows = {d: data[d].attrs.get("num_samples") for d in entries if d in have}
            env_args = data.attrs.get("env_args") if isinstance(data, h5py.Group) else None
    except OSError as e:
        raise ConversionError(f"{part}: {path.name} cannot be read as HDF5 ({e})") from e
    for demo, entry in entries.items():
        if demo not in rows or rows[demo] != entry["length"]:
            got = "no such group" if demo not in rows else f"{rows[demo]} samples"
            raise ConversionError(f"{part}: {path.name} /data/{demo}: {got}, its sidecar says {entry['length']} steps")
    # The file's own attribute, so the merged file gets the very string the writer made.
    meta["env_args_attr"] = env_args.decode() if isinstance(env_args, bytes) else env_args
    return meta, entries


def merge_robomimic_parts(work: Path, parts: list[Path], info: DatasetInfo, options: Mapping[str, Any],
                          stats: DatasetStats | None) -> None:
    work, parts = Path(work), [Path(p) for p in parts]
    if not parts:
        raise ConversionError(f"{work}: no parts to merge")
    first: dict[str, Any] | None = None
    checked = []
    for part in parts:
        meta, entries = _robomimic_part(part, info)
        settings = {k: meta.get(k) for k in _ROBOMIMIC_SETTINGS}
        _check_same(part, settings, first, parts[0])
        first = first or settings
        checked.append((part, part / meta["file"], entries))
    assert first is not None
    mode = first["part"]
    any_demo = any(entries for *_, entries in checked)
    scaling = None
    if mode["actions"] == "normalized" and any_demo:
        if stats is None:
            stats = DatasetStats({})
            for part in parts:
                stats = stats.merge(read_part_stats(part))
        if "action" not in stats:
            raise ConversionError(f"{work}: the parts' statistics have no 'action' range to scale the actions by")
        steps = sum(int(e["length"]) for *_, entries in checked for e in entries.values())
        if stats["action"].count != steps:
            raise ConversionError(f"{work}: the parts' statistics count {stats['action'].count} actions, "
                                  f"their demos hold {steps}: statistics of other parts?")
        scaling = ActionScaling.from_stats(stats["action"], f"{work}: merged part statistics")
    out = work / first["file"]
    demos: dict[str, dict[str, Any]] = {}
    with h5py.File(out, "w") as dst:
        data = dst.create_group("data")
        for _part, path, entries in checked:
            with h5py.File(path, "r") as src:
                for demo, entry in entries.items():
                    name = f"demo_{len(demos)}"
                    src.copy(src["data"][demo], data, name=name)
                    if scaling is not None:
                        scale_actions(data[name]["actions"], scaling)
                    demos[name] = entry
        # The same attributes, in the same order, as RobomimicWriter.close.
        actions = "raw" if scaling is None else {**scaling.to_dict(), "dtype": info.features["action"].dtype}
        total = sum(int(e["length"]) for e in demos.values())
        data.attrs[ACTIONS_ATTR] = json.dumps(actions)
        data.attrs["total"] = total
        data.attrs["env_args"] = first["env_args_attr"]
        data.attrs[FPS_ATTR] = float(info.fps)
        train, valid = split_demos(list(demos), float(mode["valid_fraction"]), int(mode["split_seed"]))
        dst.create_dataset("mask/train", data=np.array(train, dtype="S"))
        dst.create_dataset("mask/valid", data=np.array(valid, dtype="S"))
    write_json_atomic(work / SIDECAR, {
        "format": "robomimic",
        "file": first["file"],
        "info": replace(info, total_episodes=len(demos), total_frames=total).to_dict(),
        "locations": first["locations"],
        "env_args": first["env_args"],
        "actions": actions,
        "mask": {"train": train, "valid": valid},
        "demos": demos,
    })
    _remove_parts(work, parts)
