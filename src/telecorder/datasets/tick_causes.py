"""Why a recording's ticks came late: the clause ``doctor`` appends to its late-tick warning.

Tick ``k`` starts late when the tick before it ended past ``k``'s deadline, or when the loop
slept in time but the OS woke it late. The recorder keeps, per tick, the control thread's own
work (``/timing/loop_cpu``: CPU seconds; ``/timing/loop_busy``: wall seconds, observe to
hand-over) and, per episode, the machine around it (attribute ``timing_context``: CPUs, load,
other processes' CPU use, the priority the loop ran at). Each late tick ``k`` is put down to the
tick before it:

* **own work**: ``lateness[k-1] + loop_cpu[k-1]`` ends at least half of tick ``k``'s delay past
  its deadline: the CPU time alone made it late (a slow device driver or policy);
* **waited**: the wall time ``lateness[k-1] + loop_busy[k-1]`` does so, the CPU time does not:
  the thread was blocked (GIL, a device, the writer's queue) or runnable without a CPU;
* **woken late**: the work ended in time; the delay is the OS waking the sleeping loop.

The most common of the three names the cause. ``woken late`` is blamed on CPU contention when
the context shows it: other processes used at least 0.5 CPU and left less than 0.5 CPU idle on
average (``cpu_count - others_cpu - process_cpu < 0.5``), or the 1-minute load reached
``cpu_count + 1``; on the recorder itself when its process used all but 0.5 of its CPUs.
``waited`` is blamed on them only if the control thread was preempted (involuntary context
switches) at least half as often as such ticks came late, or the count is not known: a loop that
was not preempted waited of its own accord (the GIL, a device, the writer). Without the per-tick arrays (older or foreign files) only the context speaks; with
neither, there is no clause. The thresholds are documented in docs/datasets.md (doctor).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .sync import LATE_THRESHOLD_S

__all__ = ["LateTickCauses", "classify_late_ticks", "explain_late_ticks"]

RT_DOCS = "docs/collect.md#real-time-priority"
# A cause explains a late tick when the work it names ended at least this share of the delay late.
SHARE_OF_DELAY = 0.5
# Contention: other processes use at least this many CPUs and leave less than IDLE_CPUS idle.
OTHERS_MIN_CPUS = 0.5
IDLE_CPUS = 0.5
# A waiting loop was kept off the CPU if preempted at least this often per tick it waited late.
PREEMPTED_PER_TICK = 0.5
# ...or the load average exceeds the CPUs by this many runnable tasks.
LOAD_EXCESS = 1.0

WORK, WAITED, WOKEN = "own work", "waited", "woken late"


@dataclass
class LateTickCauses:
    """Late ticks put down to the tick before each: counts per cause, and the median CPU and wall
    seconds of that tick's work for the ticks of each cause."""

    late: int
    counts: dict[str, int]
    cpu_s: dict[str, float]
    busy_s: dict[str, float]

    @property
    def known(self) -> int:
        return sum(self.counts.values())

    @property
    def dominant(self) -> str | None:
        if not self.known:
            return None
        return max((WORK, WAITED, WOKEN), key=lambda c: self.counts.get(c, 0))  # ties: the order here


def classify_late_ticks(
    lateness: np.ndarray | None,
    loop_cpu: np.ndarray | None,
    loop_busy: np.ndarray | None,
    fps: float,
    *,
    timestamp: np.ndarray | None = None,
    late_threshold: float = LATE_THRESHOLD_S,
) -> LateTickCauses | None:
    """Each late tick (after the first) by the cause the tick before it shows; None without lateness.

    With ``timestamp``, a tick after skipped slots counts from the deadline it would have had
    (the recorder moves the deadline on past missed slots), so missed ticks are classified too.
    A tick whose predecessor has no measurement (NaN, or arrays absent) counts as late only.
    """
    period = 1.0 / float(fps)
    ts = None if timestamp is None else np.asarray(timestamp, np.float64)
    if lateness is None:
        if ts is None or len(ts) < 2:
            return None
        lateness = ts - ts[0] - np.arange(len(ts)) * period  # as analyze_timing does without it
    late_s = np.asarray(lateness, np.float64)
    n = len(late_s)
    if late_s.ndim != 1 or n < 2:
        return None
    delay = late_s.copy()
    if ts is not None and ts.shape == late_s.shape:
        delay[1:] = ts[1:] - ts[:-1] + late_s[:-1] - period
    with np.errstate(invalid="ignore"):
        late_k = np.nonzero(delay[1:] > late_threshold)[0] + 1
    cpu, busy = _column(loop_cpu, n), _column(loop_busy, n)
    counts = {WORK: 0, WAITED: 0, WOKEN: 0}
    picked: dict[str, list[int]] = {WORK: [], WAITED: [], WOKEN: []}
    if cpu is not None and busy is not None:
        prev = late_k - 1
        start = late_s[prev]
        ok = np.isfinite(start) & np.isfinite(cpu[prev]) & np.isfinite(busy[prev])
        need = SHARE_OF_DELAY * delay[late_k]
        by_cpu = start + cpu[prev] - period >= need
        by_wall = start + busy[prev] - period >= need
        for cause, mask in ((WORK, ok & by_cpu), (WAITED, ok & ~by_cpu & by_wall), (WOKEN, ok & ~by_cpu & ~by_wall)):
            picked[cause] = prev[mask].tolist()
            counts[cause] = int(mask.sum())
    return LateTickCauses(
        late=len(late_k),
        counts=counts,
        cpu_s={c: float(np.median(cpu[p])) for c, p in picked.items() if p and cpu is not None},
        busy_s={c: float(np.median(busy[p])) for c, p in picked.items() if p and busy is not None},
    )


def explain_late_ticks(
    lateness: np.ndarray | None,
    loop_cpu: np.ndarray | None,
    loop_busy: np.ndarray | None,
    context: Mapping[str, Any] | None,
    fps: float,
    *,
    timestamp: np.ndarray | None = None,
    late_threshold: float = LATE_THRESHOLD_S,
) -> str | None:
    """One short clause saying why the episode's ticks were late, or None when nothing recorded says.

    ``lateness``, ``loop_cpu``, ``loop_busy``: the episode's per-tick arrays (None where the
    file lacks them); ``context``: its ``timing_context`` attribute (any key may be missing);
    ``fps``: its control rate. See the module docstring for the rules and thresholds.
    """
    ctx = _Context.parse(context)
    causes = classify_late_ticks(lateness, loop_cpu, loop_busy, fps, timestamp=timestamp,
                                 late_threshold=late_threshold)
    dominant = causes.dominant if causes is not None else None
    if causes is None or dominant is None:
        return ctx.contention() or ctx.own_process() or ctx.priority(alone=True)
    count, known = causes.counts[dominant], causes.known
    if dominant == WORK:
        which = "each late one" if count == known else f"{count} of {known} late ones"
        return (f"the loop's own work overran: the tick before {which} took {_ms(causes.cpu_s[WORK])} of CPU "
                f"(period {_ms(1.0 / fps)}) - a slow device or policy")
    blamed = ctx.contention() or ctx.own_process()
    if blamed and (dominant == WOKEN or ctx.preempted(count)):
        return blamed
    if dominant == WAITED:
        which = "late ticks" if count == known else f"{count} of {known} late ticks"
        return (f"the loop waited (GIL, a device or the writer): work took {_ms(causes.busy_s[WAITED])} wall "
                f"but {_ms(causes.cpu_s[WAITED])} CPU before {which}")
    why = "no CPU contention recorded" if ctx.others is not None else "its work ended in time"
    return _join(f"the OS woke the loop late ({why})", ctx.priority())


@dataclass
class _Context:
    cpus: float | None = None
    load: float | None = None
    others: float | None = None
    process: float | None = None
    realtime: str | None = None
    loop_switches: float | None = None

    @classmethod
    def parse(cls, context: Mapping[str, Any] | None) -> _Context:
        if not isinstance(context, Mapping):
            return cls()  # absent, or a foreign file's value of another kind: nothing known
        loads = context.get("load_1m")
        loads = loads if isinstance(loads, (list, tuple)) else [loads]
        found = [v for v in (_number(x) for x in loads) if v is not None]
        cpus = _number(context.get("cpu_count"))
        realtime = context.get("realtime")
        return cls(
            cpus=cpus if cpus is not None and cpus >= 1 else None,
            load=max(found) if found else None,
            others=_number(context.get("others_cpu")),
            process=_number(context.get("process_cpu")),
            realtime=(realtime.strip() or None) if isinstance(realtime, str) else None,
            loop_switches=_number(context.get("loop_involuntary_switches")),
        )

    def preempted(self, ticks: int) -> bool:
        """Whether the control thread may have been kept off the CPU before ``ticks`` late ticks."""
        return self.loop_switches is None or self.loop_switches >= PREEMPTED_PER_TICK * ticks

    def contention(self) -> str | None:
        """The contention clause, when other processes left the loop without a free CPU."""
        if self.cpus is None:
            return None
        loaded = self.load is not None and self.load >= self.cpus + LOAD_EXCESS
        load = f" (load {self.load:.1f})" if self.load is not None else ""
        if self.others is not None:
            idle = self.cpus - self.others - (self.process or 0.0)
            if self.others < OTHERS_MIN_CPUS or not (idle < IDLE_CPUS or loaded):
                return None
            said = f"other processes kept {self.others:.1f} of {_count(self.cpus)} CPUs busy{load}"
        elif loaded:
            said = f"load {self.load:.1f} on {_count(self.cpus)} CPUs"
        else:
            return None
        return _join(f"late ticks coincide with CPU contention: {said}", self.priority())

    def own_process(self) -> str | None:
        """The clause for a recorder whose own threads kept its CPUs busy."""
        if self.cpus is None or self.process is None or self.process < self.cpus - IDLE_CPUS:
            return None
        return (f"the recorder itself kept {self.process:.1f} of {_count(self.cpus)} CPUs busy (cameras, "
                "encoding, writing) - fewer or smaller cameras, or more CPUs")

    def priority(self, alone: bool = False) -> str | None:
        """What the loop's priority adds: that it had none, and where the fix is documented."""
        rt = self.realtime
        if rt is None or rt.startswith("simulated"):
            return None
        if rt.startswith(("SCHED_FIFO", "SCHED_RR")):
            return None if alone else f"recorded with {rt}"
        # The recorder writes "off (--no-rt)", "normal (WHY)" or "nice -10 (real-time WHY)", maybe
        # followed by ", memory ...": said as "recorded [at nice -10] without real-time priority (WHY...)".
        m = re.fullmatch(r"(?:normal|off|(nice -?\d+))(?: \((?:real-time )?(.+?)\))?(?:, (.+))?", rt)
        at, why = (f" at {m[1]}" if m[1] else "", ", ".join(w for w in (m[2], m[3]) if w)) if m else ("", rt)
        see = f" - see {RT_DOCS}" if "not permitted" in rt else ""
        return f"recorded{at} without real-time priority" + (f" ({why})" if why else "") + see


def _column(values: np.ndarray | None, n: int) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.shape != (n,) or arr.dtype.kind not in "fiu":
        return None
    return arr.astype(np.float64)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def _count(cpus: float) -> str:
    return f"{cpus:g}"


def _ms(seconds: float) -> str:
    ms = 1000.0 * seconds
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _join(*parts: str | None) -> str:
    return "; ".join(p for p in parts if p)
