"""``telecorder doctor``: check every episode before a training run finds the problem for you.

Errors (non-zero exit): unreadable or missing files, schema mismatches, non-monotonic
timestamps, NaN/inf values, corrupt frames, episodes missing from the index or
unfinished ones left by a crash. Warnings: timing that may hurt training (late or
missed ticks, with their likely cause where the episode recorded one (see :mod:`.tick_causes`),
old or repeated camera frames, a control rate off its target). An episode
on simulated time (attr ``clock``, else the dataset's ``extra.clock``; wall clock when
neither says) has no lateness to warn about; everything else is checked the same.

``repair`` mends what can be mended without guessing: it rebuilds index lines from
the episode files, salvages the complete prefix of an episode a crash interrupted
(or moves an unreadable one aside into ``episodes/.unrecoverable/``, never deleting
it), drops index lines whose file is gone, and recomputes statistics and totals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .dataset import INDEX, INFO, STATS, episode_files, partial_files, read_index
from .episode_file import LOOP_CPU_PATH, LOOP_PATHS, EpisodeReader, episode_relpath
from .features import CLOCK_SIMULATION, DatasetInfo, read_json
from .lock import DatasetLock, lock_holder, lock_problem
from .recovery import (
    UNRECOVERABLE_DIR,
    index_disagreement,
    recover,
    stats_disagreements,
    temporaries,
)
from .stats import DatasetStats
from .sync import SyncReport, analyze_timing
from .tick_causes import explain_late_ticks

__all__ = ["UNRECOVERABLE_DIR", "DoctorReport", "EpisodeCheck", "check_dataset", "repair_dataset"]


@dataclass
class EpisodeCheck:
    index: int
    path: Path
    steps: int = 0
    sync: SyncReport | None = None
    frame_age: dict[str, np.ndarray] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Rows per numeric feature that statistics count (all values finite); None if unknown.
    finite_rows: dict[str, int] | None = None
    # Why ticks were late (see tick_causes), where doctor warned about them and the episode says.
    late_cause: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """Everything, as JSON (for checks that ran in another process or on another machine)."""
        return {
            "index": self.index, "path": str(self.path), "steps": self.steps,
            "sync": self.sync.to_dict() if self.sync else None,
            "frame_age": {c: np.asarray(a, np.float64).tolist() for c, a in self.frame_age.items()},
            "errors": self.errors, "warnings": self.warnings, "finite_rows": self.finite_rows,
            "late_cause": self.late_cause,
        }

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> EpisodeCheck:
        return cls(
            index=int(d["index"]), path=Path(d["path"]), steps=int(d["steps"]),
            sync=None if d["sync"] is None else SyncReport.from_dict(d["sync"]),
            frame_age={c: np.asarray(a, np.float64) for c, a in d["frame_age"].items()},
            errors=list(d["errors"]), warnings=list(d["warnings"]), finite_rows=d["finite_rows"],
            late_cause=d.get("late_cause"),
        )


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
                    **({"late_cause": e.late_cause} if e.late_cause else {}),
                }
                for e in self.episodes
            ],
        }


# (root, info, [(episode, index record), ...], decode_frames) -> one EpisodeCheck per episode
EpisodeChecker = Callable[[Path, DatasetInfo, list[tuple[int, dict[str, Any]]], str], list["EpisodeCheck"]]


def check_dataset(root: str | Path, *, decode_frames: str = "ends",
                  check_episodes: EpisodeChecker | None = None) -> DoctorReport:
    """Validate a dataset folder; ``decode_frames`` is ``none``, ``ends`` (first/last) or ``all``.

    ``check_episodes`` runs the per-episode checks (default: here, one after the other; see
    :mod:`telecorder.beam.doctor` for the same on Beam); the dataset-level checks run here."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    if not (root / INFO).is_file():
        raise DatasetError(f"{root} is not a telecorder dataset (no {INFO})")
    info = DatasetInfo.load(root / INFO)
    report = DoctorReport(root=root, info=info)
    holder = lock_holder(root)
    blocked = lock_problem(root)  # the data is fine, but repair and recording refuse to write there
    if blocked:
        report.warnings.append(blocked)
    if holder:
        report.warnings.append(f"{root} is being modified by {holder}; what it is writing is not checked")
    records, problems = read_index(root)
    report.errors += problems
    files = episode_files(root)
    indexed = {int(r["episode_index"]): r for r in records}
    for idx in sorted(set(files) - set(indexed)):
        if not holder:  # a live writer renames a file into place just before its index line
            report.errors.append(f"{files[idx]}: complete episode file not in {INDEX} (repair adds it)")
            report.errors += _index_attribute_problems(files[idx], idx)
    for p in partial_files(root):
        if not holder:
            report.errors.append(f"{p}: unfinished episode left by an interrupted recording (repair salvages it)")
    debris = [str(p.relative_to(root)) for p in temporaries(root)]
    if debris and not holder:
        report.warnings.append(f"{root}: {len(debris)} temporary file(s) left by an interrupted write "
                               f"({', '.join(debris[:3])}); repair removes them")
    finite_rows: dict[str, int] = {}
    readable = True
    jobs = [(idx, indexed[idx]) for idx in sorted(indexed)]
    checks = (check_episodes or check_locally)(root, info, jobs, decode_frames)
    for check in sorted(checks, key=lambda c: c.index):
        report.episodes.append(check)
        readable = readable and check.finite_rows is not None
        for name, n in (check.finite_rows or {}).items():
            finite_rows[name] = finite_rows.get(name, 0) + n
    if not holder:
        report.errors += stats_disagreements(root, set(indexed))
        if readable and not report.errors:
            report.errors += _stats_count_disagreements(root, finite_rows)
    if info.total_episodes != len(indexed) and not holder:
        report.warnings.append(f"{INFO} says {info.total_episodes} episodes, the index has {len(indexed)}")
    return report


def check_locally(root: Path, info: DatasetInfo, jobs: list[tuple[int, dict[str, Any]]],
                  decode_frames: str) -> list[EpisodeCheck]:
    return [check_episode(root, info, idx, record, decode_frames) for idx, record in jobs]


def check_episode(root: Path, info: DatasetInfo, idx: int, record: dict[str, Any], decode_frames: str) -> EpisodeCheck:
    """Every check of one indexed episode (its file, schema, values, timing, frames)."""
    path = Path(root) / episode_relpath(idx)
    check = EpisodeCheck(index=idx, path=path)
    if not path.exists():
        check.errors.append(f"{path}: listed in {INDEX} but the file is missing (repair drops the line)")
        return check
    try:
        _check_episode(check, info, record, decode_frames)
    except (DatasetError, OSError) as e:
        # One damaged episode is reported as such; the others are still checked.
        check.errors.append(str(e) if isinstance(e, DatasetError) else f"{path}: cannot be read ({e})")
        check.finite_rows = None
    return check


def _index_attribute_problems(path: Path, idx: int) -> list[str]:
    try:
        with EpisodeReader(path) as reader:
            problem = index_disagreement(reader, idx)
    except (DatasetError, OSError, ValueError):
        return []  # unreadable: reported where the episode is read
    return [problem] if problem else []


def _stats_count_disagreements(root: Path, finite_rows: dict[str, int]) -> list[str]:
    """Row counts in ``stats.json`` against the episodes' own rows: a check that also holds for
    statistics written before they recorded which episodes they cover."""
    stats = DatasetStats.from_json_dict(read_json(root / STATS))
    out = []
    for name, n in sorted(finite_rows.items()):
        counted = stats.features[name].count if name in stats.features else 0
        if counted != n:
            out.append(f"{root / STATS}: {name} statistics count {counted} rows, the indexed episodes have {n} "
                       "(an episode is missing or counted twice); repair recomputes them")
    return out


def _check_episode(check: EpisodeCheck, info: DatasetInfo, record: dict[str, Any], decode_frames: str) -> None:
    try:
        reader = EpisodeReader(check.path, info)
    except DatasetError as e:
        check.errors.append(str(e))
        return
    with reader:
        mismatch = index_disagreement(reader, check.index)
        if mismatch:
            check.errors.append(mismatch)
        n = len(reader)
        check.steps = n
        check.finite_rows = {}
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
                check.finite_rows = None
                continue
            values = ds[:]
            bad = ~np.isfinite(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
            if check.finite_rows is not None:
                check.finite_rows[spec.name] = int(n - bad.reshape(n, -1).any(axis=1).sum())
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
        lateness = reader.tick_lateness()
        sync = analyze_timing(
            ts,
            info.fps,
            capture,
            {c: reader.frame_indices(c) for c in cams},
            lateness,
            clock=str(reader.attrs.get("clock") or info.clock),
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
        loop_cpu, loop_busy = _loop_measurements(check, reader, n)
        late = sync.late_ticks > tolerated
        if (late or sync.missed_ticks) and sync.clock != CLOCK_SIMULATION:
            context = reader.attrs.get("timing_context")
            check.late_cause = explain_late_ticks(lateness, loop_cpu, loop_busy,
                                                  context if isinstance(context, dict) else None,
                                                  info.fps, timestamp=ts)
        because = f"; {check.late_cause}" if check.late_cause else ""
        if late:
            check.warnings.append(
                f"episode {check.index}: {sync.late_ticks} late tick(s) "
                f"({100 * sync.late_ticks / n:.1f}%, worst {1000 * sync.max_lateness:.1f} ms){because}"
            )
        if sync.missed_ticks:  # the cause is said once, with the late ticks when both are reported
            check.warnings.append(f"episode {check.index}: {sync.missed_ticks} missed tick(s)"
                                  + ("" if late else because))
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


def _loop_measurements(check: EpisodeCheck, reader: EpisodeReader,
                       n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The loop's per-tick CPU and wall seconds where the file has them and they are sound; values
    no recorder writes are an error, and the damaged array is not used to explain anything."""
    out: list[np.ndarray | None] = []
    for path in LOOP_PATHS:
        values = reader.loop_cpu() if path == LOOP_CPU_PATH else reader.loop_busy()
        if values is None:
            out.append(None)
            continue
        values = np.asarray(values, np.float64)
        nan = np.isnan(values)
        impossible = ~nan & (~np.isfinite(values) | (values < 0))
        if impossible.any():
            check.errors.append(f"{check.path}: /{path} has {int(impossible.sum())} infinite or negative "
                                f"value(s) (first at step {int(np.argmax(impossible))}); the file is damaged "
                                "or was altered")
            values = None
        elif nan.any() and not nan.all():
            # The recorder measures every tick or (a step it did not make) none: a mix is damage.
            check.errors.append(f"{check.path}: /{path} is NaN at {int(nan.sum())} of {n} steps (first at step "
                                f"{int(np.argmax(nan))}) but measured at the others; the file is damaged or "
                                "was altered")
            values = None
        out.append(values)
    return out[0], out[1]


# -- repair -------------------------------------------------------------------


def repair_dataset(root: str | Path) -> list[str]:
    """Mend what ``check_dataset`` found; returns what was done, one line per action.

    Holds the dataset's lock: a repair never runs beside a recording (it would take the
    live episode for crash debris) or another edit.
    """
    root = Path(root)
    if not (root / INFO).is_file():
        raise DatasetError(f"{root} is not a telecorder dataset (no {INFO})")
    for name in (INDEX, STATS):
        # Repair replaces these files; a folder in their place may hold someone's data, and is
        # never deleted.
        if (root / name).is_dir():
            raise DatasetError(f"{root / name} is a folder, not the file repair rewrites; move it out of the "
                               "dataset, then run 'telecorder doctor --repair' again")
    with DatasetLock(root, "repair it (doctor --repair)"):
        return recover(root, thorough=True)
