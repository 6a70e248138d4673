"""Merging the parts of a sharded OXE conversion: the RLDS merge plus the OXE files.

The entry point of the ``oxe`` output format for the converter registry: :class:`OXEWriter`
writes each part, :func:`merge_parts` builds the final dataset from them (:mod:`.merge` moves
the shards; ``dataset_statistics.json`` and ``oxe_config.json`` are written once, from the
parts' merged statistics and their exact values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from ...datasets.features import DatasetInfo
from ...datasets.stats import DatasetStats, FeatureStats
from ..base import ConversionError
from ..parts import read_part_stats
from .merge import MergedRLDS, merge_rlds_parts
from .oxe import OXEWriter
from .oxe_stats import merged_values, read_part_meta

__all__ = ["OXEWriter", "merge_parts"]


def merge_parts(
    work: Path, parts: Sequence[Path], info: DatasetInfo, options: Mapping[str, Any], stats: DatasetStats
) -> None:
    """One OXE dataset in ``work`` from the parts of a sharded conversion: the RLDS merge
    (:func:`.merge.merge_rlds_parts`), then ``dataset_statistics.json`` from ``stats`` (the parts' merged
    action/proprio statistics) and ``oxe_config.json``, written once for the final folder."""
    metas: dict[Path, dict[str, Any]] = {}

    def check_part(part: Path, sidecar: dict[str, Any]) -> None:
        frames = int(sidecar.get("total_frames", 0))
        part_stats = read_part_stats(part)
        meta = metas[part] = read_part_meta(part)
        for key in ("action", "proprio"):
            count = part_stats[key].count if key in part_stats else None
            if count != frames:
                raise ConversionError(
                    f"{part}: oxe part statistics {key!r} cover {count} steps, its episodes have {frames}"
                )
            rows = meta["values"].get(key, {}).get("rows")
            if rows != frames:
                raise ConversionError(f"{part}: oxe part values {key!r} cover {rows} steps, its episodes have {frames}")
        if sum(meta["split_transitions"].values()) != frames:
            raise ConversionError(f"{part}: oxe part split sizes {meta['split_transitions']} do not add up to {frames}")

    def merged_stats(merged: MergedRLDS) -> tuple[OXEWriter, FeatureStats, FeatureStats]:
        writer = cast(OXEWriter, merged.writer)  # merge_rlds_parts made it from OXEWriter
        action, proprio = (
            stats[key] if key in stats else FeatureStats.empty(writer.out_info.features[name].shape, name=key)
            for key, name in (("action", "action"), ("proprio", "observation.state"))
        )
        return writer, action, proprio

    def check_all(merged: MergedRLDS) -> None:
        _, action, proprio = merged_stats(merged)
        if action.count != merged.total_frames or proprio.count != merged.total_frames:
            raise ConversionError(
                f"{work}: the merged statistics cover {action.count} action / {proprio.count} proprio steps, "
                f"the parts hold {merged.total_frames}"
            )

    def finish(merged: MergedRLDS) -> None:
        writer, action, proprio = merged_stats(merged)
        order = list(metas)
        frames: dict[str, int] = {}
        for meta in metas.values():
            for split, n in meta["split_transitions"].items():
                frames[split] = frames.get(split, 0) + n
        writer._split_frames = frames
        values = {
            key: merged_values(order, [metas[p] for p in order], key, ndim=fs.ndim, limit=writer.exact_quantile_limit)
            for key, fs in (("action", action), ("proprio", proprio))
        }
        writer._write_oxe_files(action, proprio, num_trajectories=merged.total_episodes, values=values)

    merge_rlds_parts(
        Path(work), list(parts), info, options, OXEWriter, check_part=check_part, check_all=check_all, finish=finish
    )
