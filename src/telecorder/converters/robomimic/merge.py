"""The parts of a sharded robomimic conversion (see ``parts.py``) merged into one file.

robomimic keeps the whole dataset in one HDF5 file, which renames cannot assemble: every demo
group is copied into the final file with HDF5's object copy (chunks and filters as written, one
demo at a time, so memory stays flat), its actions scaled by the range of the whole dataset, and
the masks and ``/data`` attributes written once, exactly as the sequential writer writes them.
Everything is checked (see :mod:`..hdf5_merge`) before the first file moves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...atomic import write_json_atomic
from ...datasets.features import DatasetInfo
from ...datasets.stats import DatasetStats
from ..action_scaling import ActionScaling
from ..base import SIDECAR, ConversionError
from ..hdf5_merge import check_info, check_same, numbered_entries, part_sidecar, remove_parts
from ..parts import read_part_stats
from .schema import ACTIONS_ATTR, FPS_ATTR, scale_actions, split_demos

_ROBOMIMIC_SETTINGS = ("file", "locations", "env_args", "env_args_attr", "part")


def _robomimic_part(part: Path, info: DatasetInfo) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    meta = part_sidecar(part, "robomimic")
    check_info(part, meta, info)
    if not isinstance(meta.get("part"), dict):
        raise ConversionError(f"{part / SIDECAR}: not written with part=True (no 'part' section)")
    entries = numbered_entries(part, meta.get("demos"), "demo")
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


def merge_parts(work: Path, parts: list[Path], info: DatasetInfo, options: Mapping[str, Any],
                stats: DatasetStats | None) -> None:
    """One robomimic file in ``work`` from parts written with ``part=True`` (see ``parts.py``)."""
    work, parts = Path(work), [Path(p) for p in parts]
    if not parts:
        raise ConversionError(f"{work}: no parts to merge")
    first: dict[str, Any] | None = None
    checked = []
    for part in parts:
        meta, entries = _robomimic_part(part, info)
        settings = {k: meta.get(k) for k in _ROBOMIMIC_SETTINGS}
        check_same(part, settings, first, parts[0])
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
    remove_parts(work, parts)
