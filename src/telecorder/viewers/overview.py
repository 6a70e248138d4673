"""What ``info`` and ``stats`` say of a dataset in another format, from its own metadata where it has it.

:func:`overview` lists the episodes (length, instruction, success where known) as cheaply as the
format allows: LeRobot's ``meta/info.json`` and episode metadata; RLDS's ``dataset_info.json`` and
``features.json``, with step counts walked from each record's skeleton (no image decoded); ALOHA
and robomimic files' numeric data (no frame read). A number the metadata does not hold is left
out (None) and ``notes`` says why, or says how it was obtained; nothing is guessed.

:func:`dataset_statistics` returns the dataset's own statistics when it has them (LeRobot's
``meta/stats.json``, or its v2.1 ``meta/episodes_stats.jsonl`` merged; an RLDS/OXE
``dataset_statistics*.json``), else computes them episode by episode with
:class:`telecorder.datasets.stats.DatasetStats` (numeric features only, one episode in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.features import read_json
from ..datasets.stats import DatasetStats, StatsError
from ..errors import DatasetError
from .sources import AnySource, ConvertedAny, LeRobotAny, RLDSAny

Progress = Callable[[int, int], None]
STAT_KEYS = ("mean", "std", "min", "q01", "q99", "max")


@dataclass
class Overview:
    """Episodes and totals of a foreign dataset; None where the format does not say."""

    source: AnySource
    records: list[dict[str, Any]]
    fps: float | None
    frames: int | None
    size_bytes: int
    notes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def overview(source: AnySource) -> Overview:
    """The episodes of ``source`` (any format but native) and the totals its metadata gives."""
    notes: dict[str, str] = {}
    extra: dict[str, Any] = {}
    fps: float | None = float(source.info.fps)
    if isinstance(source, LeRobotAny):
        records = _lerobot_records(source)
        notes["frames"] = "episode lengths from the episode metadata"
    elif isinstance(source, RLDSAny):
        records = _rlds_records(source)
        extra = {"rlds_dataset": source.meta.name, "splits": dict(source.meta.splits)}
        notes["frames"] = "counted from each record's step fields (no image decoded)"
        if not _rlds_has_sidecar(source.meta.data_dir):
            fps = None
            notes["fps"] = (f"RLDS stores no control rate (the readers assume {source.info.fps:g} Hz; "
                            "'convert --from rlds' takes the real one as a reader option)")
    elif isinstance(source, ConvertedAny) and source.format == "rlds":
        records = [{"episode_index": i, "length": None, "task": ""} for i in source.indices]
        notes["frames"] = ("not in the RLDS metadata, and these shards are not TFRecord: counting steps "
                           "needs reading every episode ('telecorder stats' does)")
        notes["tasks"] = "not in the RLDS metadata: shown per episode by 'telecorder view'"
        if not _rlds_has_sidecar(getattr(source.reader, "data_dir", source.path)):
            fps = None
            notes["fps"] = f"RLDS stores no control rate (the readers assume {source.info.fps:g} Hz)"
    else:
        records = _episode_file_records(source)
        notes["frames"] = "episode lengths read from each episode's numeric data (no frame read)"
    lengths = [r.get("length") for r in records]
    frames = None if any(n is None for n in lengths) else int(sum(lengths))
    return Overview(source, records, fps, frames, size_on_disk(source.path), notes, extra)


# --------------------------------------------------------------------------- episodes of each format


def _lerobot_records(source: LeRobotAny) -> list[dict[str, Any]]:
    from ..converters.base import SIDECAR
    from ..converters.lerobot.schema import EPISODES_DIR, SIDECAR_FORMAT
    from ..converters.lerobot.tables import parquet_column_names, read_jsonl, read_parquet

    root = source.path
    rows: dict[int, dict[str, Any]] = {}
    # The reader checked these files when it opened them: here only the columns info shows are read.
    if source.reader.is_v3:
        for f in sorted((root / EPISODES_DIR).glob("*/*.parquet")):
            present = parquet_column_names(f)
            table = read_parquet(f, columns=[c for c in ("episode_index", "tasks") if c in present])
            for row in table.to_pylist():
                rows[int(row["episode_index"])] = row
    else:
        for _, row in read_jsonl(root / "meta/episodes.jsonl"):
            rows[int(row["episode_index"])] = row
    side = read_json(root / SIDECAR, error=DatasetError) if (root / SIDECAR).is_file() else None
    ours = side.get("episodes") if isinstance(side, dict) and side.get("format") == SIDECAR_FORMAT else None
    records = []
    for index in source.indices:
        tasks = (rows.get(index) or {}).get("tasks") or []
        tasks = [tasks] if isinstance(tasks, str) else [str(t) for t in tasks]
        rec: dict[str, Any] = {"episode_index": index, "length": source.lengths[index],
                               "task": tasks[0] if tasks else ""}
        meta = ((ours or {}).get(str(index)) or {}).get("metadata") if isinstance(ours, dict) else None
        if isinstance(meta, dict):
            rec.update({k: meta[k] for k in ("task", "task_id", "success") if meta.get(k) is not None})
        records.append(rec)
    return records


def _rlds_records(source: RLDSAny) -> list[dict[str, Any]]:
    records = []
    for index in source.indices:
        part, local = source.order[index]
        ep = part.load(local, [])  # the record's skeleton: no numeric column decoded, no image
        try:
            rec = {"episode_index": index, "length": source.lengths[index], "task": ep.instruction,
                   "split": part.split}
            if ep.task_id:
                rec["task_id"] = ep.task_id
        finally:
            ep.close()
        records.append(rec)
    return records


def _rlds_has_sidecar(data_dir: Path) -> bool:
    """Whether our sidecar gives the dataset's real control rate."""
    from ..converters.base import SIDECAR
    from ..converters.rlds.schema import SIDECAR_FORMAT

    path = Path(data_dir) / SIDECAR
    if not path.is_file():
        return False
    side = read_json(path, error=DatasetError)
    return isinstance(side, dict) and side.get("format") == SIDECAR_FORMAT and isinstance(side.get("info"), dict)


def _episode_file_records(source: AnySource) -> list[dict[str, Any]]:
    probe = source.numeric_names()[:1]  # one numeric feature gives the length
    records = []
    for index in source.indices:
        arrays, meta = source.numeric(index, probe)
        rec: dict[str, Any] = {"episode_index": index,
                               "length": len(next(iter(arrays.values()))) if arrays else None,
                               "task": str(meta.get("language_instruction") or meta.get("task") or "")}
        rec.update({k: meta[k] for k in ("task_id", "success") if meta.get(k) is not None})
        records.append(rec)
    return records


# --------------------------------------------------------------------------- statistics


@dataclass
class StatsReport:
    """Per-feature statistics (``count`` and those of :data:`STAT_KEYS` known, as lists) and
    where they come from."""

    source: str
    computed: bool
    features: dict[str, dict[str, Any]]


def dataset_statistics(source: AnySource, progress: Progress | None = None) -> StatsReport:
    """The dataset's own statistics when it has them, else computed from its numeric features."""
    numeric = source.numeric_names()
    if isinstance(source, LeRobotAny):
        found = _lerobot_own(source.path, numeric)
        if found is not None:
            return found
    rlds_dir = source.meta.data_dir if isinstance(source, RLDSAny) else None
    if rlds_dir is None and isinstance(source, ConvertedAny) and source.format == "rlds":
        rlds_dir = getattr(source.reader, "data_dir", None)
    if rlds_dir is not None:
        found = _rlds_own(Path(rlds_dir))
        if found is not None:
            return found
    return computed_statistics(source, numeric, progress)


def computed_statistics(source: AnySource, names: list[str], progress: Progress | None = None) -> StatsReport:
    """Statistics of ``names`` merged episode by episode (only one episode's numbers in memory)."""
    total = DatasetStats()
    for k, index in enumerate(source.indices):
        arrays, _ = source.numeric(index, names)
        try:
            total = total.merge(DatasetStats.from_arrays(arrays, episode=index))
        except StatsError as e:
            raise DatasetError(f"{source.path}: episode {index}: {e}") from e
        if progress is not None:
            progress(k + 1, len(source.indices))
    features = {name: {k: v for k, v in s.summary().items() if k == "count" or k in STAT_KEYS}
                for name, s in total.features.items()}
    return StatsReport(f"computed from the numeric features of all {len(source.indices)} episodes "
                       "(q01/q99 within 0.5% relative error; the dataset has no statistics of its own)", True, features)


def _floats(value: Any, where: str) -> list[float]:
    try:
        arr = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: not a list of numbers ({str(e)[:80]}); restore the file or delete it "
                           "to have the statistics computed") from e
    return arr.tolist()


def _count(value: Any, where: str) -> int | None:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value < 0:
        raise DatasetError(f"{where}: count must be a whole number >= 0, not {value!r:.60}; restore the file or "
                           "delete it to have the statistics computed")
    return int(value)


def _own_features(doc: Any, path: Path, names: Iterable[str], renames: Mapping[str, str] | None = None,
                  count: int | None = None) -> dict[str, dict[str, Any]]:
    """Per-feature summaries of a statistics file: the features of ``names`` (all when empty) it holds."""
    if not isinstance(doc, Mapping):
        raise DatasetError(f"{path}: is a JSON {type(doc).__name__}, not an object of per-feature statistics")
    wanted = list(names)
    out: dict[str, dict[str, Any]] = {}
    for name, stats in doc.items():
        if (wanted and name not in wanted) or not isinstance(stats, Mapping):
            continue
        row: dict[str, Any] = {"count": _count(stats.get("count", count), f"{path}: {name}/count")}
        for key, value in stats.items():
            key = (renames or {}).get(key, key)
            if key in STAT_KEYS:
                row[key] = _floats(value, f"{path}: {name}/{key}")
        if any(k in row for k in STAT_KEYS):
            out[name] = row
    return out


def _lerobot_own(root: Path, numeric: list[str]) -> StatsReport | None:
    from ..converters.lerobot.schema import STATS_PATH
    from ..converters.lerobot.tables import read_jsonl

    path = root / STATS_PATH
    if path.is_file():
        features = _own_features(read_json(path, error=DatasetError), path, numeric)
        if features:
            return StatsReport(f"the dataset's own, {STATS_PATH}", False, features)
    per_episode = root / "meta/episodes_stats.jsonl"
    if per_episode.is_file():
        rows = [(where, row.get("stats")) for where, row in read_jsonl(per_episode)]
        features = _merge_episode_stats(rows, numeric)
        if features:
            return StatsReport("the dataset's own per-episode statistics, meta/episodes_stats.jsonl, merged "
                               "(they hold no quantiles)", False, features)
    return None


def _merge_episode_stats(rows: list[tuple[str, Any]], numeric: list[str]) -> dict[str, dict[str, Any]]:
    """Per-episode count/mean/std/min/max merged as LeRobot merges them (pooled variance)."""
    parts: dict[str, list[dict[str, Any]]] = {}
    for where, stats in rows:
        for name, row in _own_features(stats or {}, Path(where), numeric).items():
            if row.get("count") is None or not all(k in row for k in ("mean", "std", "min", "max")):
                raise DatasetError(f"{where}: {name} needs count, mean, std, min and max to be merged")
            parts.setdefault(name, []).append(row)
    out = {}
    for name, rows_ in parts.items():
        counts = np.array([r["count"] for r in rows_], np.float64)[:, None]
        try:
            means, stds = (np.array([r[k] for r in rows_], np.float64) for k in ("mean", "std"))
            mins, maxs = (np.array([r[k] for r in rows_], np.float64) for k in ("min", "max"))
        except ValueError as e:
            raise DatasetError(f"meta/episodes_stats.jsonl: {name} has statistics of different sizes ({e})") from e
        n = counts.sum()
        if n <= 0:
            continue
        mean = (counts * means).sum(axis=0) / n
        var = (counts * (stds**2 + (means - mean) ** 2)).sum(axis=0) / n
        out[name] = {"count": int(n), "mean": mean.tolist(), "std": np.sqrt(np.maximum(var, 0)).tolist(),
                     "min": mins.min(axis=0).tolist(), "max": maxs.max(axis=0).tolist()}
    return out


def _rlds_own(data_dir: Path) -> StatsReport | None:
    files = sorted(data_dir.glob("dataset_statistics*.json"))
    if not files:
        return None
    path = files[0]
    doc = read_json(path, error=DatasetError)
    count = doc.get("num_transitions") if isinstance(doc, Mapping) else None
    count = count if isinstance(count, int) and not isinstance(count, bool) else None
    features = _own_features(doc, path, [], renames={"p01": "q01", "p99": "q99"}, count=count)
    if not features:
        return None
    return StatsReport(f"the dataset's own, {path.name} (as Octo/OpenVLA compute it)", False, features)
