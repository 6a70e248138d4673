"""The checks every foreign format shares: values, timing and statistics of one episode.

Each adds its findings to an :class:`~telecorder.datasets.doctor.EpisodeCheck` in the words
the native doctor uses (errors for what breaks training or loading, warnings for what may
hurt it), so that ``telecorder doctor`` prints one table whatever it read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...datasets.doctor import EpisodeCheck
from ...datasets.features import CLOCK_SIMULATION, read_json
from ...datasets.stats import FeatureStats, StatsError
from ...datasets.sync import analyze_timing
from ...errors import DatasetError
from ..base import ConversionError

# A statistics file is a few KB to a few MB; one past this is not statistics (and is not read).
MAX_STATS_BYTES = 256 << 20
# LeRobot refuses an episode whose timestamps step off 1/fps by more than its tolerance_s
# (check_timestamps_sync, default 1e-4 s); float32 timestamps add their own rounding (2 ulp a step).
GRID_TOLERANCE_S = 1e-4
FLOAT32_STEP_ROUNDING = 2.5e-7
# How far a dataset's own statistics may lie from the data and still agree. min/max are values
# of the data (float32 rounding only); mean/std accumulate rounding in whoever computed them
# (float32 sums over long episodes: ~1e-6 relative on real data, so 1e-4 leaves room);
# quantiles are estimates everywhere (np.quantile interpolates, LeRobot bins a histogram of the
# range, our statistics keep a sketch of 0.5% relative accuracy), so a declared q-quantile agrees
# when it lies between the data's quantiles at q -/+ 1% of the values (and one value more, which
# matters on short episodes), widened by the sketch's accuracy and 0.01% of the range.
VALUE_RTOL = 1e-5
MEAN_RTOL = 1e-4
STD_RTOL = 1e-3
QUANTILE_RANK_TOL = 0.01
QUANTILE_RANGE_TOL = 1e-4
ABS_TOL = 1e-6
_QUANTILE = re.compile(r"^[qp](\d{2})$")


def problem(e: BaseException, where: str | os.PathLike[str]) -> str:
    """One line for an exception a reader or library raised on damaged input."""
    if isinstance(e, DatasetError):
        return str(e)
    if isinstance(e, OSError):
        return f"{where}: cannot be read ({e.strerror or e})"
    detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"{where}: cannot be checked ({type(e).__name__}{': ' + detail if detail else ''})"


def check_numbers(check: EpisodeCheck, arrays: Mapping[str, np.ndarray], where: str) -> dict[str, FeatureStats]:
    """NaN/inf in the numeric columns (errors, as the native doctor says them); statistics of
    each column that is all finite, for the comparison with the dataset's own statistics."""
    stats: dict[str, FeatureStats] = {}
    check.finite_rows = {}
    for name, values in arrays.items():
        values = np.asarray(values)
        n = len(values)
        if n == 0:
            continue
        bad = ~np.isfinite(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
        rows_bad = bad.reshape(n, -1).any(axis=1) if n else np.zeros(0, bool)
        check.finite_rows[name] = int(n - rows_bad.sum())
        if bad.any():
            check.errors.append(f"{where}: {name} has {int(bad.sum())} NaN/inf values (first at step "
                                f"{int(np.argmax(rows_bad))})")
            continue
        try:
            stats[name] = FeatureStats.from_array(values.reshape(n, -1), name=name)
        except StatsError as e:  # values too large for float64 moments
            check.errors.append(f"{where}: {e}")
    return stats


def check_timing(check: EpisodeCheck, timestamp: np.ndarray, fps: float, *, where: str,
                 image_timestamp: Mapping[str, np.ndarray] | None = None,
                 frame_index: Mapping[str, np.ndarray] | None = None,
                 lateness: np.ndarray | None = None, clock: str = "",
                 grid: str | None = None) -> None:
    """Timestamps finite, increasing and on the declared rate; per-camera frame sync.

    ``grid`` names the file declaring ``fps`` when the format requires every step to be exactly
    1/fps (LeRobot): steps off it are then errors. Otherwise, as natively, a rate more than 5%
    off ``fps`` and late or missed ticks are warnings.
    """
    ts = np.asarray(timestamp, np.float64)
    n = len(ts)
    if not np.all(np.isfinite(ts)):
        check.errors.append(f"{where}: timestamp has {int((~np.isfinite(ts)).sum())} NaN/inf values")
        return
    cams = dict(image_timestamp or {})
    check.frame_age = {c: ts - np.asarray(t, np.float64) for c, t in cams.items()}
    sync = analyze_timing(ts, fps, cams, dict(frame_index or {}), lateness, clock=clock or "monotonic")
    check.sync = sync
    if sync.non_monotonic:
        check.errors.append(f"{where}: timestamps go backwards or repeat at {sync.non_monotonic} step(s)")
    if grid is not None and n > 1:
        dt = np.diff(ts)
        tol = GRID_TOLERANCE_S + FLOAT32_STEP_ROUNDING * float(np.abs(ts).max())
        off = np.abs(dt - 1.0 / fps) > tol
        if off.any():
            first = int(np.argmax(off))
            median = float(np.median(dt))
            rate = f" ({1 / median:.4g} Hz)" if median > 0 else ""
            check.errors.append(
                f"{where}: {int(off.sum())} of {n - 1} timestamp steps are off the {fps:g} fps that {grid} "
                f"declares ({1000 / fps:.2f} ms a step; first at row {first + 1}: {1000 * dt[first]:.2f} ms, "
                f"median {1000 * median:.2f} ms{rate}); LeRobot refuses such episodes")
    elif n > 1 and abs(sync.achieved_fps - fps) > 0.05 * fps:
        check.warnings.append(f"episode {check.index}: control rate {sync.achieved_fps:.1f} Hz, target {fps:g} Hz")
    tolerated = max(1, 0.01 * n)
    if grid is None and sync.clock != CLOCK_SIMULATION:
        if sync.late_ticks > tolerated:
            check.warnings.append(f"episode {check.index}: {sync.late_ticks} late tick(s) "
                                  f"({100 * sync.late_ticks / n:.1f}%, worst {1000 * sync.max_lateness:.1f} ms)")
        if sync.missed_ticks:
            check.warnings.append(f"episode {check.index}: {sync.missed_ticks} missed tick(s)")
    for cam, cs in sync.cameras.items():
        if cs.non_monotonic:
            check.errors.append(f"{where}: camera {cam!r} frame counter goes backwards {cs.non_monotonic} time(s)")
        if cs.age_p99 > 2.0 / fps:
            check.warnings.append(f"episode {check.index}: camera {cam!r} frames are old (p99 age "
                                  f"{1000 * cs.age_p99:.0f} ms > 2 control periods)")
        if cs.repeated - cs.expected_repeats(n, fps) > tolerated:
            check.warnings.append(f"episode {check.index}: camera {cam!r} repeated {cs.repeated} frame(s)")
        if cs.skipped - cs.expected_skips(n, fps) > tolerated:
            check.warnings.append(f"episode {check.index}: camera {cam!r} dropped {cs.skipped} frame(s)")


# -- the dataset's own statistics ------------------------------------------------------------------


def read_stats_file(path: Path) -> Any:
    """A statistics JSON file, bounded in size; ConversionError naming it when unreadable."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ConversionError(f"{path}: cannot be read ({e.strerror or e})") from e
    if size > MAX_STATS_BYTES:
        raise ConversionError(f"{path}: {size} bytes, too large to be statistics (at most {MAX_STATS_BYTES}); "
                              "not read")
    return read_json(path, error=ConversionError, invalid_hint="")


def global_stats_file(path: Path, what: str) -> tuple[Any, list[str]]:
    """A dataset's statistics file as a JSON object (None when there is none) and what is wrong with it."""
    if not path.exists():
        return None, []
    try:
        doc = read_stats_file(path)
    except ConversionError as e:
        return None, [str(e)]
    if not isinstance(doc, dict):
        return None, [f"{path}: holds a JSON {type(doc).__name__}, not an object of {what}"]
    return doc, []


def _numbers(value: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConversionError(f"{what} is not a list of numbers ({type(e).__name__})") from e
    if not np.isfinite(arr).all():
        raise ConversionError(f"{what} holds NaN/inf; statistics must be finite to normalize with")
    return arr


def compare_stats(declared: Any, data: FeatureStats, label: str, *, rows: int | None = None) -> str | None:
    """What in ``declared`` (one feature's block of a statistics file: ``min``, ``max``, ``mean``,
    ``std``, ``count`` and quantiles ``qNN``/``pNN``) disagrees with ``data``; None when all agree.

    ``rows`` is what ``count`` must equal (default ``data.count``). ``label`` starts the line
    (the file, the episode, the feature)."""
    if not isinstance(declared, Mapping):
        return f"{label}: is {type(declared).__name__}, not an object of statistics"
    size = data.ndim
    bad: list[str] = []
    worst: tuple[float, str] | None = None
    for key, value in declared.items():
        where = f"{label} {key}"
        if key == "count":
            try:
                count = _numbers(value, where)
            except ConversionError as e:
                return str(e)
            want = data.count if rows is None else rows
            if count.size != 1 or count[0] != want:
                bad.append(f"count {count.tolist() if count.size != 1 else int(count[0])} (the data has {want} rows)")
            continue
        q = _QUANTILE.match(str(key))
        if key not in ("min", "max", "mean", "std") and not q:
            continue  # other keys (masks, methods, errors of a sketch) are not statistics of values
        try:
            got = _numbers(value, where)
        except ConversionError as e:
            return str(e)
        if got.size != size:
            return f"{where}: holds {got.size} value(s), the data has {size} a step"
        lo, hi, ref = _bounds(data, str(key), int(q.group(1)) / 100 if q else None)
        excess = np.maximum(lo - got, got - hi)
        over = excess > 0
        if over.any():
            bad.append(str(key))
            scale = np.maximum(hi - lo, ABS_TOL)
            j = int(np.argmax(np.where(over, excess / scale, -np.inf)))
            ratio = float(excess[j] / scale[j])
            if worst is None or ratio > worst[0]:
                worst = (ratio, f"{key}[{j}] {got[j]:.6g} in the file, {ref[j]:.6g} in the data")
    if not bad:
        return None
    verb = "disagrees" if len(bad) == 1 else "disagree"
    return (f"{label}: {', '.join(bad)} {verb} with the data" + (f" (worst: {worst[1]})" if worst else "")
            + "; the statistics are stale or belong to other data")


def _bounds(data: FeatureStats, key: str, q: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The interval a declared statistic ``key`` (``q``: of a quantile) must lie in, and the data's value."""
    mean = data.mean.reshape(-1)
    std = data.std.reshape(-1)
    lo, hi = data.min.reshape(-1), data.max.reshape(-1)
    if key in ("min", "max"):
        ref = lo if key == "min" else hi
        tol = VALUE_RTOL * np.abs(ref) + ABS_TOL
    elif key == "mean":
        ref, tol = mean, MEAN_RTOL * (np.abs(mean) + std) + ABS_TOL
    elif key == "std":
        ref, tol = std, STD_RTOL * std + VALUE_RTOL * np.abs(mean) + ABS_TOL
    else:
        assert q is not None
        ref = data.quantile(q).reshape(-1)
        dq = QUANTILE_RANK_TOL + 1.0 / data.count
        below = lo if q - dq <= 0 else data.quantile(q - dq).reshape(-1)
        above = hi if q + dq >= 1 else data.quantile(q + dq).reshape(-1)
        slack = QUANTILE_RANGE_TOL * (hi - lo) + ABS_TOL
        return (below - data.alpha * np.abs(below) - slack, above + data.alpha * np.abs(above) + slack, ref)
    return ref - tol, ref + tol, ref


def merge_stats(total: dict[str, FeatureStats | None], episode: Mapping[str, FeatureStats] | None,
                names: list[str]) -> None:
    """Fold one episode's statistics into ``total``; a feature the episode could not give
    statistics for (unreadable, non-finite) is None from then on: its total is unknown."""
    for name in names:
        fs = None if episode is None else episode.get(name)
        if fs is None:
            total[name] = None
        elif name not in total:
            total[name] = fs
        elif total[name] is not None:
            try:
                total[name] = total[name].merge(fs)  # type: ignore[union-attr]
            except StatsError:  # a feature whose shape differs between episodes: reported where read
                total[name] = None

