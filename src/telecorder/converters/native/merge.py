"""The parts of a sharded conversion to the native store (see ``parts.py``) merged into one dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import h5py

from ...atomic import fsync_dir, write_json_atomic
from ...datasets.dataset import INDEX, INFO, STATS, is_dataset, read_index, write_index
from ...datasets.episode_file import EPISODES_DIR, episode_relpath, set_attrs
from ...datasets.features import DatasetInfo
from ...datasets.stats import DatasetStats
from ..base import ConversionError
from ..parts import PARTS_DIR


def merge_parts(work: Path, parts: list[Path], info: DatasetInfo, options: dict[str, Any],
                stats: DatasetStats) -> None:
    """One native dataset in ``work`` from native parts: episode files renamed into one
    numbering (their ``episode_index`` attribute rewritten in place, nothing copied), one
    index, the merged statistics, and ``info.json`` last (until it exists, no dataset)."""
    work = Path(work)
    (work / "meta").mkdir(parents=True, exist_ok=True)
    (work / EPISODES_DIR).mkdir(exist_ok=True)
    records: list[dict[str, Any]] = []
    first: DatasetInfo | None = None
    frames = 0
    for part in parts:
        if not is_dataset(part):
            raise ConversionError(f"{part}: the part is not a native dataset (no {INFO}); convert again")
        part_info = DatasetInfo.load(part / INFO)
        if first is None:
            first = part_info
        elif part_info.differences(first):
            raise ConversionError(f"{part}: the part's schema differs from the first part's "
                                  f"({'; '.join(part_info.differences(first))})")
        part_records, problems = read_index(part)
        if problems:
            raise ConversionError(f"{part}/{INDEX}: {problems[0]}")
        for record in sorted(part_records, key=lambda r: int(r["episode_index"])):
            new = len(records)
            source = part / episode_relpath(int(record["episode_index"]))
            target = work / episode_relpath(new)
            try:
                with h5py.File(source, "r+") as f:
                    set_attrs(f, {"episode_index": new})
                os.replace(source, target)
            except OSError as e:
                raise ConversionError(f"{source}: cannot move the part's episode into {work} ({e})") from e
            records.append({**record, "episode_index": new, "file": episode_relpath(new)})
            frames += int(record["length"])
    fsync_dir(work / EPISODES_DIR)
    write_index(work, records)
    write_json_atomic(work / STATS, DatasetStats(stats.features, episodes=range(len(records))).to_json_dict())
    out = first or DatasetInfo(features=dict(info.features), fps=info.fps, robot_type=info.robot_type)
    out.total_episodes, out.total_frames = len(records), frames
    out.save(work / INFO)
    shutil.rmtree(work / PARTS_DIR)
