"""``telecorder doctor``: check every episode before a training run finds the problem for you.

Errors (non-zero exit): unreadable or missing files, schema mismatches, non-monotonic
timestamps, NaN/inf values, corrupt frames, episodes missing from the index or
unfinished ones left by a crash. Warnings: timing that may hurt training (late or
missed ticks, old or repeated camera frames, a control rate off its target).

``repair`` mends what can be mended without guessing: it rebuilds index lines from
the episode files, salvages the complete prefix of an episode a crash interrupted
(or moves an unreadable one aside into ``episodes/.unrecoverable/``, never deleting
it), drops index lines whose file is gone, and recomputes statistics and totals.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DatasetError
from .dataset import (
    EPISODES_DIR,
    INDEX,
    INFO,
    STATS,
    episode_files,
    partial_files,
    read_index,
    write_index,
)
from .episode_file import (
    FRAME_INDEX_GROUP,
    IMAGE_TS_GROUP,
    IMAGES_GROUP,
    LATENESS_PATH,
    EpisodeReader,
    episode_filename,
    get_attrs,
    set_attrs,
)
from .features import DatasetInfo, fsync_dir, read_json, write_json_atomic
from .stats import DatasetStats
from .sync import SyncReport, analyze_timing

UNRECOVERABLE_DIR = ".unrecoverable"


@dataclass
class EpisodeCheck:
    index: int
    path: Path
    steps: int = 0
    sync: SyncReport | None = None
    frame_age: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class DoctorReport:
    root: Path
    info: DatasetInfo | None
    episodes: list[EpisodeCheck] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    @property
    def all_errors(self) -> list[str]:
        return self.errors + [e for ep in self.episodes for e in ep.errors]

    @property
    def all_warnings(self) -> list[str]:
        return self.warnings + [w for ep in self.episodes for w in ep.warnings]

    @property
    def ok(self) -> bool:
        return not self.all_errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": str(self.root),
            "ok": self.ok,
            "errors": self.all_errors,
            "warnings": self.all_warnings,
            "repairs": self.repairs,
            "episodes": [
                {
                    "episode_index": e.index,
                    "steps": e.steps,
                    "sync": e.sync.to_dict() if e.sync else None,
                    "errors": e.errors,
                    "warnings": e.warnings,
                }
                for e in self.episodes
            ],
        }


def check_dataset(root: str | Path, *, decode_frames: str = "ends") -> DoctorReport:
    """Validate a dataset folder; ``decode_frames`` is ``none``, ``ends`` (first/last) or ``all``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    if not (root / INFO).is_file():
        raise DatasetError(f"{root} is not a telecorder dataset (no {INFO})")
    info = DatasetInfo.load(root / INFO)
    report = DoctorReport(root=root, info=info)
    records, problems = read_index(root)
    report.errors += problems
    files = episode_files(root)
    indexed = {int(r["episode_index"]): r for r in records}
    for idx in sorted(set(files) - set(indexed)):
        report.errors.append(f"{files[idx]}: complete episode file not in {INDEX} (repair adds it)")
    for p in partial_files(root):
        report.errors.append(f"{p}: unfinished episode left by an interrupted recording (repair salvages it)")
    for idx in sorted(indexed):
        path = root / EPISODES_DIR / episode_filename(idx)
        check = EpisodeCheck(index=idx, path=path)
        report.episodes.append(check)
        if not path.exists():
            check.errors.append(f"{path}: listed in {INDEX} but the file is missing (repair drops the line)")
            continue
        _check_episode(check, info, indexed[idx], decode_frames)
    stats_path = root / STATS
    try:
        DatasetStats.from_json_dict(read_json(stats_path))
    except (DatasetError, ValueError) as e:
        report.errors.append(f"{stats_path}: {e} (repair recomputes it)")
    if info.total_episodes != len(indexed):
        report.warnings.append(f"{INFO} says {info.total_episodes} episodes, the index has {len(indexed)}")
    return report


def _check_episode(check: EpisodeCheck, info: DatasetInfo, record: dict[str, Any], decode_frames: str) -> None:
    try:
        reader = EpisodeReader(check.path, info)
    except DatasetError as e:
        check.errors.append(str(e))
        return
    with reader:
        n = len(reader)
        check.steps = n
        if n == 0:
            check.errors.append(f"{check.path}: episode has no steps")
            return
        if int(record.get("length", n)) != n:
            check.errors.append(f"{check.path}: {n} steps, index says {record.get('length')}")
        for spec in info.numeric_features:
            ds = reader._file[spec.h5_path]
            if tuple(ds.shape[1:]) != spec.shape or ds.dtype != np.dtype(spec.dtype):
                check.errors.append(
                    f"{check.path}: /{spec.h5_path} is {ds.dtype}{list(ds.shape[1:])}, "
                    f"info.json says {spec.dtype}{list(spec.shape)}"
                )
                continue
            values = ds[:]
            if values.dtype.kind == "f":
                bad = ~np.isfinite(values)
                if bad.any():
                    rows = np.unique(np.nonzero(bad.reshape(n, -1))[0])
                    check.errors.append(
                        f"{check.path}: {spec.name} has {int(bad.sum())} NaN/inf values (first at step {rows[0]})"
                    )
        ts = reader.timestamps()
        if not np.all(np.isfinite(ts)):
            check.errors.append(f"{check.path}: timestamp has NaN/inf values")
            return
        cams = info.cameras
        capture = {c: reader.image_timestamps(c) for c in cams}
        check.frame_age = {c: ts - capture[c] for c in cams}
        sync = analyze_timing(
            ts,
            info.fps,
            capture,
            {c: reader.frame_indices(c) for c in cams},
            reader.tick_lateness(),
        )
        check.sync = sync
        if sync.non_monotonic:
            check.errors.append(f"{check.path}: timestamps go backwards or repeat at {sync.non_monotonic} step(s)")
        if n > 1 and abs(sync.achieved_fps - info.fps) > 0.05 * info.fps:
            check.warnings.append(
                f"episode {check.index}: control rate {sync.achieved_fps:.1f} Hz, target {info.fps:g} Hz"
            )
        # Occasional scheduler hiccups are normal on a desktop OS; flag them once they exceed 1% of steps.
        tolerated = max(1, 0.01 * n)
        if sync.late_ticks > tolerated:
            check.warnings.append(
                f"episode {check.index}: {sync.late_ticks} late tick(s) "
                f"({100 * sync.late_ticks / n:.1f}%, worst {1000 * sync.max_lateness:.1f} ms)"
            )
        if sync.missed_ticks:
            check.warnings.append(f"episode {check.index}: {sync.missed_ticks} missed tick(s)")
        for cam, cs in sync.cameras.items():
            if cs.non_monotonic:
                check.errors.append(f"{check.path}: camera {cam!r} frame counter goes backwards {cs.non_monotonic} time(s)")
            if cs.age_p99 > 2.0 / info.fps:
                check.warnings.append(
                    f"episode {check.index}: camera {cam!r} frames are old (p99 age {1000 * cs.age_p99:.0f} ms "
                    f"> 2 control periods)"
                )
            excess = cs.repeated - cs.expected_repeats(n, info.fps)
            if excess > tolerated:
                check.warnings.append(f"episode {check.index}: camera {cam!r} repeated {cs.repeated} frame(s)")
            if cs.skipped - cs.expected_skips(n, info.fps) > tolerated:
                check.warnings.append(f"episode {check.index}: camera {cam!r} dropped {cs.skipped} frame(s)")
        if decode_frames != "none":
            for cam in cams:
                steps = range(n) if decode_frames == "all" else sorted({0, n - 1})
                for i in steps:
                    try:
                        img = reader.frame(cam, i)
                    except DatasetError as e:
                        check.errors.append(str(e))
                        break
                    spec = info.features[f"observation.images.{cam}"]
                    if img.shape != spec.shape:
                        check.errors.append(
                            f"{check.path}: camera {cam!r} step {i} is {img.shape}, info.json says {spec.shape}"
                        )
                        break


# -- repair -------------------------------------------------------------------


def repair_dataset(root: str | Path) -> list[str]:
    """Mend what ``check_dataset`` found; returns what was done, one line per action."""
    root = Path(root)
    info = DatasetInfo.load(root / INFO)
    actions: list[str] = []
    records, problems = read_index(root)
    by_index = {int(r["episode_index"]): r for r in records}
    if problems:
        actions.append(f"dropped {len(problems)} unreadable line(s) of {INDEX}")
    for partial in partial_files(root):
        actions.append(_salvage_partial(root, partial, info))
    files = episode_files(root)
    for idx in sorted(set(by_index) - set(files)):
        del by_index[idx]
        actions.append(f"dropped index line of episode {idx} (file missing)")
    for idx in sorted(set(files) - set(by_index)):
        try:
            with EpisodeReader(files[idx], info) as reader:
                by_index[idx] = record_from_file(reader, root)
            actions.append(f"added episode {idx} to the index")
        except DatasetError as e:
            actions.append(_quarantine(root, files[idx], f"unreadable ({e})"))
    stats = DatasetStats({})
    frames = 0
    for idx in sorted(by_index):
        try:
            with EpisodeReader(root / EPISODES_DIR / episode_filename(idx), info) as reader:
                arrays = {s.name: reader.numeric(s.name) for s in info.numeric_features}
                frames += len(reader)
        except DatasetError as e:
            actions.append(_quarantine(root, root / EPISODES_DIR / episode_filename(idx), f"unreadable ({e})"))
            del by_index[idx]
            continue
        stats = stats.merge(DatasetStats.from_arrays(_finite_rows(arrays)))
    write_index(root, [by_index[i] for i in sorted(by_index)])
    write_json_atomic(root / STATS, stats.to_json_dict())
    info.total_episodes, info.total_frames = len(by_index), frames
    info.save(root / INFO)
    actions.append(f"rewrote {INDEX}, {STATS} and totals ({len(by_index)} episodes, {frames} frames)")
    return actions


def _finite_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, a in arrays.items():
        if len(a) and a.dtype.kind == "f":
            a = a[np.isfinite(a.reshape(len(a), -1)).all(axis=1)]
        if len(a):
            out[name] = a
    return out


def record_from_file(reader: EpisodeReader, root: Path) -> dict[str, Any]:
    """An index line rebuilt from the attributes an episode file carries."""
    a = reader.attrs
    return {
        "episode_index": int(a.get("episode_index", -1)),
        "file": f"{EPISODES_DIR}/{reader.path.name}",
        "length": len(reader),
        "duration_s": a.get("duration_s"),
        "task": a.get("task"),
        "success": a.get("success"),
        "start_time": a.get("start_time"),
        "device": a.get("device"),
        "late_ticks": a.get("late_ticks"),
        "missed_ticks": a.get("missed_ticks"),
        "repeated_frames": a.get("repeated_frames"),
        "dropped_frames": a.get("dropped_frames"),
        "recovered": bool(a.get("recovered", False)),
        "bytes": reader.path.stat().st_size,
    }


def _quarantine(root: Path, path: Path, why: str) -> str:
    dest_dir = root / EPISODES_DIR / UNRECOVERABLE_DIR
    dest_dir.mkdir(exist_ok=True)
    dest = dest_dir / path.name.lstrip(".")
    shutil.move(str(path), dest)
    return f"moved {path.name} to {dest.relative_to(root)}: {why}"


def _salvage_partial(root: Path, partial: Path, info: DatasetInfo) -> str:
    """Copy the steps an interrupted episode had flushed into a complete episode file."""
    try:
        src = h5py.File(partial, "r")
    except OSError as e:
        return _quarantine(root, partial, f"unreadable HDF5 ({e})")
    with src:
        try:
            attrs = get_attrs(src)
            idx = int(attrs["episode_index"])
            paths = ["timestamp", LATENESS_PATH] + [s.h5_path for s in info.numeric_features]
            for cam in info.cameras:
                paths += [f"{IMAGES_GROUP}/{cam}", f"{IMAGE_TS_GROUP}/{cam}", f"{FRAME_INDEX_GROUP}/{cam}"]
            n = min(src[p].shape[0] for p in paths)
            data = {p: (src[p][:n], dict(src[p].attrs)) for p in paths}
        except (OSError, KeyError, ValueError) as e:
            return _quarantine(root, partial, f"damaged ({e})")
    final = root / EPISODES_DIR / episode_filename(idx)
    if n == 0:
        return _quarantine(root, partial, "no complete step was written before the interruption")
    if final.exists():
        return _quarantine(root, partial, f"episode {idx} exists already")
    tmp = partial.with_name(partial.name + ".salvage")
    with h5py.File(tmp, "w") as dst:
        for p, (values, ds_attrs) in data.items():
            if values.dtype == object:
                ds = dst.create_dataset(p, shape=(n,), dtype=h5py.vlen_dtype(np.dtype("uint8")))
                for i, v in enumerate(values):
                    ds[i] = v
            else:
                ds = dst.create_dataset(p, data=values)
            ds.attrs.update(ds_attrs)
        attrs.pop("success", None)  # an interrupted demo's outcome is unknown
        set_attrs(dst, {**attrs, "recovered": True, "num_steps": n})
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    partial.unlink()
    fsync_dir(final.parent)
    return f"salvaged {n} steps of interrupted episode {idx} into {final.name} (marked recovered)"
