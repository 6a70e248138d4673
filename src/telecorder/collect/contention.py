"""How busy the machine was while an episode recorded, so that ``doctor`` can say why ticks came late.

Measured between the episode's first and last tick: the CPU time every process spent on
the CPUs this recorder may use (``/proc/stat``), the recorder's own share of it, the
1-minute load, and involuntary context switches (times the kernel took the CPU away)
of the process and of the control thread. The difference of the first two is the work
of other processes: "other processes kept 1.9 of 2 CPUs busy" is the cause of late
ticks a user can act on. Where ``/proc`` is not readable the fields are left out.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (idle and iowait are not busy)


def _busy_ticks(cpus: set[int]) -> int | None:
    try:
        with open("/proc/stat") as f:
            total = 0
            for line in f:
                name, _, rest = line.partition(" ")
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                    continue
                values = rest.split()
                total += sum(int(values[i]) for i in _BUSY_FIELDS if i < len(values))
            return total
    except (OSError, ValueError):
        return None


def _process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class ContentionMeter:
    """``start()`` from the control thread before the first tick, ``stop()`` from it after the last."""

    def __init__(self) -> None:
        self.cpus = os.sched_getaffinity(0)
        self._hz = os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._busy0 = _busy_ticks(self.cpus)
        self._proc0 = _process_cpu_s()
        self._load0 = _load()
        self._ivcsw0 = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        self._thread_ivcsw0 = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw

    def stop(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        busy1 = _busy_ticks(self.cpus)
        process_cpu = (_process_cpu_s() - self._proc0) / wall
        out: dict[str, Any] = {
            "cpu_count": len(self.cpus),
            "process_cpu": round(process_cpu, 3),
            "involuntary_switches": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - self._ivcsw0,
            "loop_involuntary_switches": resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw - self._thread_ivcsw0,
        }
        load1 = _load()
        if self._load0 is not None and load1 is not None:
            out["load_1m"] = [self._load0, load1]
        if self._busy0 is not None and busy1 is not None:
            # Jiffies are coarse (10 ms): a short episode's figure is rough, never below zero.
            all_busy = (busy1 - self._busy0) / self._hz / wall
            out["others_cpu"] = round(max(0.0, all_busy - process_cpu), 3)
        return out
