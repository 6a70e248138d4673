"""Real-time scheduling for the record loop: priority, locked memory and an optional core.

A robot PC is rarely idle, and Linux's fair scheduler shares a core between the record
loop and a browser or a training job: a tick then wakes a few milliseconds late. Real-time
robot stacks hold their loop with the OS instead, and so does this: while an episode is
recorded in real time, :class:`RealtimeScope` puts the recorder's threads in the
``SCHED_FIFO``/``SCHED_RR`` classes, which run before every normal process.

Why every Python thread and not the loop alone: a thread needs the GIL to run Python. A
loop at real-time priority that wakes while a normal-priority writer thread holds the GIL
waits until that thread runs again, and beside busy processes that is a scheduler slice
later (priority inversion). So every Python thread of the recorder is raised, in tiers:

==========  =====================================================  ===========
tier        threads                                                priority
==========  =====================================================  ===========
control     the thread that records (observe, teleop, act)         base (50)
capture     cameras, sim rendering (and Mesa's llvmpipe), the bus   base - 1
work        writer, JPEG encoders, policy inference, keys          base - 2
view        the live view                                          base - 3
==========  =====================================================  ===========

The control thread is ``SCHED_FIFO``; the tiers below are ``SCHED_RR`` so that threads of
one tier share their cores by time slice. When the loop wakes it preempts any of them,
and one holding the GIL hands it over within Python's switch interval (the recorder sets
0.5 ms), as it keeps running. Threads native code starts on its own (torch's OpenMP pool)
never hold the GIL and stay normal, so a policy's inference cannot starve the machine;
the exception is Mesa's software rasterizer (``llvmpipe-N``), which draws the sim cameras'
frames that the loop waits for.
Threads started during an episode are raised at the next :meth:`RealtimeScope.refresh`
(the loop calls it twice a second). Every promoted thread carries
``SCHED_RESET_ON_FORK``, so no child process inherits real-time priority.

Where real-time priority is not permitted (no root, no ``CAP_SYS_NICE``,
``RLIMIT_RTPRIO`` 0, a cgroup without a real-time budget) the scope lowers the threads'
nice value as far as ``RLIMIT_NICE`` lets it and reports, once, what is missing and the
exact fix. Memory is locked (``mlockall`` with ``MCL_ONFAULT``: pages are locked as they
are touched, nothing is prefaulted) so that the loop never waits for a page to come back
from swap. Everything is undone when the episode ends: between episodes, and in any other
command, the process runs at normal priority.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import getpass
import os
import resource
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import TelecorderError

DEFAULT_PRIORITY = 50
# Niceness asked for where real-time priority is refused (RLIMIT_NICE may allow less).
FALLBACK_NICE = -10

_CAPTURE_PREFIXES = ("tc-cam-", "tc-sim-render", "dxl-emulator")
# Native threads raised with the capture tier, by the name they give the kernel: Mesa's software
# rasterizer draws the sim cameras' frames, which the loop waits for.
_NATIVE_CAPTURE_COMMS = ("llvmpipe-",)
_VIEW_PREFIXES = ("tc-live-view",)
_CAP_IPC_LOCK, _CAP_SYS_NICE = 14, 23
_MCL_CURRENT, _MCL_FUTURE, _MCL_ONFAULT = 1, 2, 4
# One warning per process, however many sessions and episodes.
_warned: set[str] = set()


class RealtimeError(TelecorderError):
    """A real-time request that cannot mean anything here (a core this process may not use)."""


@dataclass(frozen=True)
class RealtimeRequest:
    """What the recorder asks of the OS while it records in real time."""

    enabled: bool = True
    priority: int = DEFAULT_PRIORITY
    cpu: int | None = None
    lock_memory: bool = True

    def __post_init__(self) -> None:
        if not 4 <= self.priority <= 99:
            raise RealtimeError(f"real-time priority must be 4..99, got {self.priority}")
        if self.cpu is not None:
            allowed = sorted(os.sched_getaffinity(0))
            if self.cpu not in allowed:
                raise RealtimeError(f"--cpu {self.cpu}: this process may run on CPUs {','.join(map(str, allowed))} only; "
                                    f"pick one of those")


@dataclass
class _Saved:
    policy: int
    priority: int
    nice: int


@dataclass
class RealtimeScope:
    """Raises the recorder's threads while an episode records; ``with scope:`` once per episode.

    ``warn`` gets, once per process, the line saying what is missing and how to fix it.
    ``description`` (after entering) says what was applied, for the episode's attributes.
    """

    request: RealtimeRequest = field(default_factory=RealtimeRequest)
    warn: Callable[[str], None] | None = None
    description: str = ""
    _saved: dict[int, _Saved] = field(default_factory=dict, repr=False)
    _mode: str = field(default="", repr=False)  # "rt", "nice" or "" (nothing applied)
    _base: int = field(default=DEFAULT_PRIORITY, repr=False)
    _nice: int = field(default=0, repr=False)
    _control_tid: int = field(default=0, repr=False)
    _affinity: set[int] | None = field(default=None, repr=False)
    _locked: bool = field(default=False, repr=False)

    def __enter__(self) -> RealtimeScope:
        self._saved.clear()
        self._mode, self._locked, self._affinity = "", False, None
        if not self.request.enabled:
            self.description = "off (--no-rt)"
            return self
        self._control_tid = threading.get_native_id()
        missing = self._raise_control()
        if self._mode:
            self.refresh()
        if self.request.cpu is not None:
            self._affinity = os.sched_getaffinity(self._control_tid)
            os.sched_setaffinity(self._control_tid, {self.request.cpu})
        memory_note = self._lock_memory() if self.request.lock_memory else None
        self.description = self._describe(missing, memory_note)
        problems = [p for p in (missing, memory_note) if p]
        if problems and self.warn is not None:
            line = fix_line(problems)
            if line not in _warned:
                _warned.add(line)
                self.warn(line)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._locked:
            _libc().munlockall()
            self._locked = False
        if self._affinity is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self._control_tid, self._affinity)
            self._affinity = None
        for tid, saved in self._saved.items():
            # A thread that ended meanwhile is gone (ESRCH); raising back a chrt priority may be refused.
            with contextlib.suppress(OSError):
                if self._mode == "rt":
                    os.sched_setscheduler(tid, saved.policy, os.sched_param(saved.priority))
                else:
                    os.setpriority(os.PRIO_PROCESS, tid, saved.nice)
        self._saved.clear()
        self._mode = ""

    @property
    def active(self) -> bool:
        return bool(self._mode)

    def refresh(self) -> None:
        """Raise the threads started since the last call (a lazily started encoder pool)."""
        if not self._mode:
            return
        threads = [(t.native_id, t.name) for t in threading.enumerate()] + _native_capture_threads()
        for tid, name in threads:
            if tid is None or tid in self._saved or tid == self._control_tid:
                continue
            offset, view = _tier(name)
            try:
                saved = _Saved(os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority,
                               os.getpriority(os.PRIO_PROCESS, tid))
                if self._mode == "rt":
                    os.sched_setscheduler(tid, os.SCHED_RR | os.SCHED_RESET_ON_FORK,
                                          os.sched_param(max(1, self._base - offset)))
                elif not view:
                    os.setpriority(os.PRIO_PROCESS, tid, self._nice)
            except OSError:
                continue  # the thread ended between the listing and the call
            self._saved[tid] = saved

    def _raise_control(self) -> str | None:
        """Put the control thread at the top; returns what is missing when real time is refused."""
        tid = self._control_tid
        saved = _Saved(os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority,
                       os.getpriority(os.PRIO_PROCESS, tid))
        base = self.request.priority
        if saved.policy & ~os.SCHED_RESET_ON_FORK in (os.SCHED_FIFO, os.SCHED_RR) and saved.priority:
            # Started under chrt: stay at the priority given (raising it may need more rights).
            base = min(base, saved.priority)
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(base))
        except PermissionError:
            missing = missing_rights()
            nice = max(FALLBACK_NICE, 20 - resource.getrlimit(resource.RLIMIT_NICE)[0])
            if nice < saved.nice:
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
                    self._saved[tid], self._mode, self._nice = saved, "nice", nice
            return missing
        self._saved[tid], self._mode, self._base = saved, "rt", base
        return None

    def _lock_memory(self) -> str | None:
        soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        # Under a finite limit, MCL_FUTURE would make allocations fail once the process outgrows it.
        unlimited = soft == resource.RLIM_INFINITY or _has_capability(_CAP_IPC_LOCK)
        if unlimited and _libc().mlockall(_MCL_CURRENT | _MCL_FUTURE | _MCL_ONFAULT) == 0:
            self._locked = True
            return None
        if not swap_in_use():
            return None  # nothing can be swapped out: locking would change nothing, no need to warn
        limit = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KiB"
        return f"memory not locked (RLIMIT_MEMLOCK {limit}, swap in use)"

    def _describe(self, missing: str | None, memory_note: str | None) -> str:
        if self._mode == "rt":
            text = f"SCHED_FIFO {self._base}"
        elif self._mode == "nice":
            text = f"nice {self._nice} (real-time {missing})"
        else:
            text = f"normal ({missing})" if missing else "normal"
        if self._locked:
            text += ", memory locked"
        elif memory_note:
            text += f", {memory_note}"
        if self.request.cpu is not None:
            text += f", control loop on CPU {self.request.cpu}"
        return text


def _native_capture_threads() -> list[tuple[int, str]]:
    out = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue  # ended meanwhile
        if comm.startswith(_NATIVE_CAPTURE_COMMS):
            out.append((int(tid), "tc-cam-native"))
    return out


def _tier(name: str) -> tuple[int, bool]:
    """How far below the control thread a thread runs, and whether it is the live view."""
    if name.startswith(_CAPTURE_PREFIXES):
        return 1, False
    if name.startswith(_VIEW_PREFIXES):
        return 3, True
    return 2, False


def missing_rights() -> str:
    """Why this process may not use real-time priority, in a few words."""
    soft = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
    has_cap = _has_capability(_CAP_SYS_NICE)
    if os.geteuid() == 0 and has_cap:
        return "not permitted: the process's cgroup has no real-time budget (cpu.rt_runtime_us 0)"
    parts = [] if has_cap else ["no CAP_SYS_NICE"]
    parts.append(f"RLIMIT_RTPRIO {'unlimited' if soft == resource.RLIM_INFINITY else soft}")
    return "not permitted: " + ", ".join(parts)


def fix_line(problems: list[str]) -> str:
    """One warning line: what is missing and the exact fix (like the USB latency-timer warning)."""
    user = _user()
    python = os.path.realpath(sys.executable)
    return (
        f"real-time scheduling: {'; '.join(problems)}. Ticks may come late while other work runs. Fix: add "
        f"'{user} - rtprio 95' and '{user} - memlock unlimited' to /etc/security/limits.d/99-telecorder.conf "
        f"and log in again, or run 'sudo setcap cap_sys_nice,cap_ipc_lock+ep {python}', or start the recorder "
        f"with 'sudo chrt -f 50 ...' (a container needs --cap-add SYS_NICE --ulimit rtprio=95); "
        f"--no-rt records without it and hides this warning"
    )


def swap_in_use() -> bool:
    try:
        with open("/proc/swaps") as f:
            return len(f.read().strip().splitlines()) > 1
    except OSError:
        return False


def _has_capability(bit: int) -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class _Libc:
    def __init__(self) -> None:
        self._lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def mlockall(self, flags: int) -> int:
        return int(self._lib.mlockall(ctypes.c_int(flags)))

    def munlockall(self) -> int:
        return int(self._lib.munlockall())


_LIBC: _Libc | None = None


def _libc() -> _Libc:
    global _LIBC
    if _LIBC is None:
        _LIBC = _Libc()
    return _LIBC
