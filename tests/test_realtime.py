"""Real-time scheduling of the recorder: tiers, restoration, children, --cpu, and the refusal path.

The scheduling tests need the right to use SCHED_FIFO (root or CAP_SYS_NICE, as in CI) and skip
with that reason elsewhere; the refusal test drops the right with setpriv/prlimit itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from rich.console import Console

from telecorder.collect.realtime import (
    RealtimeError,
    RealtimeRequest,
    RealtimeScope,
    fix_line,
    missing_rights,
)

FIFO, RR, OTHER = os.SCHED_FIFO, os.SCHED_RR, os.SCHED_OTHER
RESET = os.SCHED_RESET_ON_FORK


def _rt_permitted() -> bool:
    tid = threading.get_native_id()
    before = os.sched_getscheduler(tid), os.sched_getparam(tid)
    try:
        os.sched_setscheduler(tid, FIFO, os.sched_param(1))
    except PermissionError:
        return False
    os.sched_setscheduler(tid, *before)
    return True


needs_rt = pytest.mark.skipif(not _rt_permitted(), reason="real-time priority not permitted here "
                              "(needs root or CAP_SYS_NICE, as CI has)")


def sched(tid: int) -> tuple[int, int]:
    return os.sched_getscheduler(tid) & ~RESET, os.sched_getparam(tid).sched_priority


class Parked:
    """A named Python thread that waits until released."""

    def __init__(self, name: str) -> None:
        self.go = threading.Event()
        self.thread = threading.Thread(target=self.go.wait, name=name, daemon=True)
        self.thread.start()

    @property
    def tid(self) -> int:
        return self.thread.native_id

    def stop(self) -> None:
        self.go.set()
        self.thread.join()


@needs_rt
def test_scope_raises_every_python_thread_in_tiers_and_restores_them():
    names = ["tc-cam-front", "tc-sim-render", "dxl-emulator /dev/pts/3", "tc-writer", "tc-encode_0",
             "tc-live-view"]
    parked = {n: Parked(n) for n in names}
    me = threading.get_native_id()
    try:
        with RealtimeScope(RealtimeRequest(lock_memory=False)) as scope:
            assert scope.description == "SCHED_FIFO 50"
            assert sched(me) == (FIFO, 50)
            assert os.sched_getscheduler(me) & RESET  # children of this thread start normal
            got = {n: sched(p.tid) for n, p in parked.items()}
            assert got == {"tc-cam-front": (RR, 49), "tc-sim-render": (RR, 49), "dxl-emulator /dev/pts/3": (RR, 49),
                           "tc-writer": (RR, 48), "tc-encode_0": (RR, 48), "tc-live-view": (RR, 47)}
            late = Parked("tc-encode_1")  # a pool that starts a thread mid-episode
            assert sched(late.tid) == (OTHER, 0)
            scope.refresh()
            assert sched(late.tid) == (RR, 48)
        for p in [*parked.values(), late]:
            assert sched(p.tid) == (OTHER, 0)
        assert sched(me) == (OTHER, 0)
        late.stop()
    finally:
        for p in parked.values():
            p.stop()


@needs_rt
def test_child_processes_started_while_recording_run_at_normal_priority():
    with RealtimeScope(RealtimeRequest(lock_memory=False)):
        child = subprocess.Popen([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                                 stdout=subprocess.PIPE, text=True)
        out, _ = child.communicate(timeout=60)
    assert int(out) == OTHER


@needs_rt
def test_a_chrt_priority_is_kept_and_the_tiers_go_below_it():
    me = threading.get_native_id()
    cam = Parked("tc-cam-side")
    os.sched_setscheduler(me, FIFO, os.sched_param(20))
    try:
        with RealtimeScope(RealtimeRequest(lock_memory=False)) as scope:
            assert scope.description == "SCHED_FIFO 20"
            assert sched(cam.tid) == (RR, 19)
        assert sched(me) == (FIFO, 20)  # as chrt left it
    finally:
        os.sched_setscheduler(me, OTHER, os.sched_param(0))
        cam.stop()


def test_cpu_outside_the_allowed_set_is_refused_in_one_line():
    bad = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(RealtimeError, match=rf"--cpu {bad}: this process may run on CPUs .* only"):
        RealtimeRequest(cpu=bad)


def test_disabled_scope_changes_nothing():
    me = threading.get_native_id()
    before = sched(me)
    with RealtimeScope(RealtimeRequest(enabled=False)) as scope:
        assert sched(me) == before
        assert scope.description == "off (--no-rt)"


def test_the_warning_names_what_is_missing_and_the_fix():
    line = fix_line(["not permitted: no CAP_SYS_NICE, RLIMIT_RTPRIO 0"])
    assert "\n" not in line
    assert "/etc/security/limits.d/" in line and "rtprio 95" in line and "memlock unlimited" in line
    assert f"setcap cap_sys_nice,cap_ipc_lock+ep {os.path.realpath(sys.executable)}" in line
    assert "chrt -f 50" in line and "--no-rt" in line
    assert missing_rights().startswith("not permitted")


# -- through a recording session ----------------------------------------------------------------------


def _probe_robot(fps: float = 30.0):
    from telecorder.collect.robots.sim import SimRobot

    class ProbeRobot(SimRobot):
        """Notes the control thread's scheduling and CPUs, and the writer thread's, at every tick."""

        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.seen: list[tuple] = []

        def observe(self):
            writer = [t.native_id for t in threading.enumerate() if t.name == "tc-writer"]
            me = threading.get_native_id()
            self.seen.append((sched(me), os.sched_getaffinity(me), sched(writer[0]) if writer else None))
            return super().observe()

    return ProbeRobot(fps=fps, seed=3)


def _session(tmp_path: Path, robot, **cfg):
    from telecorder.collect.devices.scripted import ScriptedTeleop
    from telecorder.collect.session import RecordingSession, SessionConfig

    config = SessionConfig(out=tmp_path / "ds", episodes=2, episode_time_s=0.5, reset_time_s=0, task="pick",
                           fps=30.0, **cfg)
    return RecordingSession(robot, ScriptedTeleop(robot, seed=3), [], config, console=Console(quiet=True))


def _contexts(root: Path) -> list[dict]:
    out = []
    for p in sorted((root / "episodes").glob("episode_*.h5")):
        with h5py.File(p, "r") as f:
            raw = f.attrs["timing_context"]
            out.append(json.loads(raw[len("json:"):] if raw.startswith("json:") else raw))
            assert f["timing/loop_cpu"].shape == f["timestamp"].shape
    return out


@needs_rt
def test_episodes_record_at_real_time_priority_and_the_file_says_so(tmp_path):
    pytest.importorskip("mujoco")
    robot = _probe_robot()
    me = threading.get_native_id()
    _session(tmp_path, robot, cpu=0).run()
    assert robot.seen and {s[0] for s in robot.seen} == {(FIFO, 50)}
    assert {frozenset(s[1]) for s in robot.seen} == {frozenset({0})}
    assert {s[2] for s in robot.seen if s[2] is not None} == {(RR, 48)}
    # Between episodes and after the session: normal again, on every CPU it had.
    assert sched(me) == (OTHER, 0)
    assert os.sched_getaffinity(me) == os.sched_getaffinity(0)
    ctx = _contexts(tmp_path / "ds")
    assert len(ctx) == 2
    for c in ctx:
        assert c["realtime"].startswith("SCHED_FIFO 50") and c["cpu_pin"] == 0
        assert c["cpu_count"] == len(os.sched_getaffinity(0))
        assert c["others_cpu"] >= 0 and c["process_cpu"] > 0 and c["involuntary_switches"] >= 0


def test_no_rt_and_simulated_time_record_at_normal_priority(tmp_path):
    pytest.importorskip("mujoco")
    robot = _probe_robot()
    _session(tmp_path / "a", robot, realtime_priority=False).run()
    assert {s[0] for s in robot.seen} == {(OTHER, 0)}
    assert [c["realtime"] for c in _contexts(tmp_path / "a" / "ds")] == ["off (--no-rt)"] * 2
    robot = _probe_robot()
    _session(tmp_path / "b", robot, realtime=False).run()
    assert {s[0] for s in robot.seen} == {(OTHER, 0)}
    assert [c["realtime"] for c in _contexts(tmp_path / "b" / "ds")] == ["simulated time"] * 2


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("prlimit"),
                    reason="drops the real-time right with setpriv and prlimit, which needs root")
def test_without_the_right_one_warning_with_the_fix_and_the_episodes_still_record(tmp_path):
    pytest.importorskip("mujoco")
    cmd = ["prlimit", "--rtprio=0", "--nice=0", "setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice",
           sys.executable, "-m", "telecorder.cli", "collect", "--device", "scripted", "--robot", "sim",
           "--sim-cameras", "none", "--episodes", "2", "--episode-time", "0.5", "--reset-time", "0"]
    env = {**os.environ, "COLUMNS": "80"}
    run = subprocess.run([*cmd, "--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    warnings = [ln for ln in run.stdout.splitlines() if "real-time scheduling:" in ln]
    assert len(warnings) == 1, run.stdout  # once per process, however many episodes; one line however wide
    assert "not permitted: no CAP_SYS_NICE, RLIMIT_RTPRIO 0" in warnings[0]
    assert "rtprio 95" in warnings[0] and "--no-rt" in warnings[0]
    assert all(c["realtime"].startswith("normal (not permitted") for c in _contexts(tmp_path / "a"))
    quiet = subprocess.run([*cmd, "--no-rt", "--out", str(tmp_path / "b")], capture_output=True, text=True,
                           timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "real-time scheduling" not in quiet.stdout
    assert [c["realtime"] for c in _contexts(tmp_path / "b")] == ["off (--no-rt)"] * 2


def test_collect_refuses_a_cpu_it_may_not_use(tmp_path):
    bad = max(os.sched_getaffinity(0)) + 1
    run = subprocess.run([sys.executable, "-m", "telecorder.cli", "collect", "--device", "scripted", "--robot", "sim",
                          "--sim-cameras", "none", "--episodes", "1", "--cpu", str(bad), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert f"--cpu {bad}: this process may run on CPUs" in run.stdout + run.stderr
    assert not (tmp_path / "x").exists()


@needs_rt
def test_mesa_software_rasterizer_threads_render_at_capture_priority(tmp_path):
    pytest.importorskip("mujoco")
    from telecorder.collect.cameras.sim import SimCameraRig
    from telecorder.collect.devices.scripted import ScriptedTeleop
    from telecorder.collect.robots.sim import SimRobot
    from telecorder.collect.session import RecordingSession, SessionConfig

    seen: dict[int, tuple[int, int]] = {}

    class Probe(SimRobot):
        def observe(self):
            for tid in os.listdir("/proc/self/task"):
                try:
                    comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
                    if comm.startswith("llvmpipe-"):
                        seen[int(tid)] = sched(int(tid))
                except OSError:
                    pass
            return super().observe()

    robot = Probe(fps=30.0, seed=2)
    rig = SimCameraRig(robot, ["front"], 64, 48, 30.0)
    cfg = SessionConfig(out=tmp_path / "ds", episodes=1, episode_time_s=0.5, reset_time_s=0, task="pick")
    RecordingSession(robot, ScriptedTeleop(robot, seed=2), rig.cameras(), cfg, console=Console(quiet=True)).run()
    if not seen:
        pytest.skip("the sim cameras render without Mesa's llvmpipe here (a GPU driver)")
    assert set(seen.values()) == {(RR, 49)}


# -- where ticks fall between camera frames -----------------------------------------------------------

class GridCamera:
    """Capture times of a free-running camera on a grid (phase, period, jitter): only what aligned_start reads."""

    free_running, synchronous = True, False

    def __init__(self, phase_ms: float, period_ms: float = 1000 / 30, jitter_ms: float = 0.0) -> None:
        k = np.arange(100, 108)
        wobble = jitter_ms * np.where(k % 2, 1.0, -1.0) / 2
        self.caps = [int((phase_ms + kk * period_ms + w) * 1e6) for kk, w in zip(k, wobble, strict=True)]

    def recent_capture_ns(self) -> list[int]:
        return list(self.caps)


PERIOD_NS = round(1e9 / 30)


def _ages_ms(cams, t0: int) -> list[float]:
    out = []
    for cam in cams:
        phase = float(np.median(np.asarray(cam.caps) % PERIOD_NS))
        out.append(((t0 - phase) % PERIOD_NS) / 1e6)
    return out


def test_ticks_come_shortly_after_the_frames_never_on_them():
    from telecorder.collect.recorder import aligned_start

    now = 10_000_000_000
    one = [GridCamera(5.0)]
    t0 = aligned_start(one, now, PERIOD_NS)
    assert now <= t0 < now + PERIOD_NS
    assert 2.0 <= _ages_ms(one, t0)[0] <= 2.6  # 2 ms margin, on a 1/64-period grid
    three = [GridCamera(0.0), GridCamera(6.0), GridCamera(12.0)]
    ages = _ages_ms(three, aligned_start(three, now, PERIOD_NS))
    assert all(a >= 2.0 for a in ages) and all(PERIOD_NS / 1e6 - a >= 2.0 for a in ages)
    assert max(ages) < 15.0, ages  # just after the last camera, not half a period away
    # A jittery camera (frames 0.75 ms off its phase) gets a wider margin: 4x that.
    shaky = [GridCamera(5.0, jitter_ms=1.5)]
    assert 3.0 <= _ages_ms(shaky, aligned_start(shaky, now, PERIOD_NS))[0] <= 3.6
    # Cameras at another rate repeat or skip by arithmetic: no alignment.
    assert aligned_start([GridCamera(5.0, period_ms=1000 / 15)], now, PERIOD_NS) == now
    # Phases all around the period: no phase is 2 ms from all of them, so the farthest wins.
    crowded = [GridCamera(p) for p in np.arange(0.0, 33.0, 3.0)]
    ages = _ages_ms(crowded, aligned_start(crowded, now, PERIOD_NS))
    assert min(min(a, PERIOD_NS / 1e6 - a) for a in ages) >= 1.0
