"""Recording benchmark: control-loop timing, camera sync, save latency and writer capacity.

Scenario A: three 640x480 cameras at 30 fps (video files through cv2.VideoCapture) plus
the MuJoCo arm at 30 Hz for 60 s. Scenario B: two cameras with the control loop at
100 Hz. Then the writer's ingest capacity (JPEG + HDF5, frames/s) against the bare
``cv2.imencode`` rate on the same frames in the same run.

Each scenario runs without and with the recorder's real-time priority
(``SessionConfig.realtime_priority``), one after the other under the same load, so the two
columns compare like with like. The load beside them is N busy loops (``--hogs``) or a real
``telecorder train`` run (``--beside train``), both kept at normal priority.

    python benchmarks/record.py                        # full run, quiet (about 5 minutes)
    python benchmarks/record.py --duration 10          # quicker
    python benchmarks/record.py --hogs 2               # beside two `python -c "while 1: pass"`
    python benchmarks/record.py --beside train         # beside an image-BC `telecorder train` run
    python benchmarks/record.py --priority off         # one mode only (on | off | both)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

os.environ.setdefault("MUJOCO_GL", "egl")

from telecorder.collect.cameras.opencv import CameraSpec, OpenCVCamera
from telecorder.collect.devices.scripted import ScriptedTeleop
from telecorder.collect.robots.sim import SimRobot
from telecorder.collect.session import RecordingSession, SessionConfig
from telecorder.datasets.async_writer import AsyncEpisodeWriter, Step
from telecorder.datasets.dataset import Dataset, DatasetWriter
from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature
from telecorder.datasets.sync import analyze_timing

BIN = Path(sys.executable).parent
MODES = {"off": [False], "on": [True], "both": [False, True]}
# What an episode's timing_context says about the run, copied into each result row.
CONTEXT_KEYS = ("realtime", "cpu_pin", "others_cpu", "process_cpu", "load_1m", "involuntary_switches",
                "loop_involuntary_switches")
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# The trainer beside the scenarios: a few images episodes, steps enough to outlast any run (it is killed).
TRAIN_STEPS = 10_000_000
_PROGRESS = re.compile(r"(\d+)/(\d+)")


def scene_frame(k: int, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera-like frame: textured background, moving objects, sensor noise (JPEG sizes like real scenes)."""
    h, w = base.shape[:2]
    img = base.copy()
    cx, cy = int(w / 2 + 200 * np.cos(k / 15)), int(h / 2 + 120 * np.sin(k / 11))
    cv2.circle(img, (cx, cy), 40, (220, 40, 40), -1)
    cv2.rectangle(img, (50 + (k * 3) % 400, 300), (120 + (k * 3) % 400, 380), (30, 200, 60), -1)
    cv2.putText(img, f"frame {k}", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    noise = rng.integers(-6, 7, img.shape)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def scene_frames(n: int, w: int = 640, h: int = 480, seed: int = 0) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 0.3 + yy * 0.1) % 255, (yy * 0.4) % 255, 128 + 60 * np.sin(xx / 23.0)], -1)
    base = (base + rng.integers(0, 40, (h, w, 3))).astype(np.uint8)
    for k in range(n):
        yield scene_frame(k, base, rng)


def make_video(path: Path, frames: Iterable[np.ndarray], fps: float = 30.0) -> Path:
    vw = None
    for f in frames:
        if vw is None:
            h, w = f.shape[:2]
            vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    assert vw is not None
    vw.release()
    return path


def record_scenario(tmp: Path, videos: list[Path], fps: float, duration: float, priority: bool,
                    beside: BesideWork | None = None) -> dict:
    out = tmp / f"ds_{int(fps)}hz_{'rt' if priority else 'nort'}"
    robot = SimRobot(fps=fps, seed=0)
    teleop = ScriptedTeleop(robot, script="sweep", seed=0)
    cams = [OpenCVCamera.from_spec(CameraSpec.parse(f"cam{i}={v},loop")) for i, v in enumerate(videos)]
    cfg = SessionConfig(out=out, episodes=1, episode_time_s=duration, reset_time_s=0, task="bench", fps=fps,
                        realtime_priority=priority)
    session = RecordingSession(robot, teleop, cams, cfg, console=Console(quiet=True))
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    loaded = beside is not None and bool(beside.procs)
    other0 = beside.cpu_seconds() if loaded else 0.0
    summary = session.run()
    cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
    other = (beside.cpu_seconds() - other0) if loaded else 0.0
    if beside is not None:
        beside.check()
    ds = Dataset.open(out)
    with ds.episode(ds.episode_indices[0]) as ep:
        row = timing_row(ep, fps)
    row.update({
        "cameras": len(videos),
        "cpu_pct_of_one_core": round(100 * cpu / wall, 1),
        "beside_cpu_cores": round(other / wall, 2) if loaded else None,
        "save_latency_s": round(summary.save_latency_s[0], 3) if summary.save_latency_s else None,
        "writer_max_queue": summary.writer_max_queue,
        "episode_mb": round(ds.size_bytes() / 1e6, 1),
    })
    shutil.rmtree(out, ignore_errors=True)
    return row


def timing_row(ep: Any, fps: float) -> dict[str, Any]:
    """The timing figures of one recorded episode (an open EpisodeReader), as both benchmarks report them."""
    lateness = ep.tick_lateness()
    sync = analyze_timing(
        ep.timestamps(), fps, {c: ep.image_timestamps(c) for c in ep.cameras},
        {c: ep.frame_indices(c) for c in ep.cameras}, lateness,
    )
    if lateness is None:
        raise SystemExit(f"{ep.path}: no /timing/tick_lateness (not a wall-clock recording?)")
    cams = list(sync.cameras.values())
    row: dict[str, Any] = {
        "control_hz": fps,
        "duration_s": round(sync.duration, 3),
        "steps": sync.steps,
        "achieved_hz": round(sync.achieved_fps, 3),
        "ticks_on_time_pct": round(100 * float(np.mean(lateness <= 0.002)), 3),
        "lateness_p99_ms": round(1000 * float(np.percentile(lateness, 99)), 3),
        "lateness_max_ms": round(1000 * float(np.max(lateness)), 3),
        "missed_ticks": sync.missed_ticks,
        "repeated_frames": sum(c.repeated for c in cams),
        "expected_repeats": sum(c.expected_repeats(sync.steps, fps) for c in cams),
        "dropped_frames": sum(c.skipped for c in cams),
        "frame_age_p50_ms": round(1000 * statistics.median(c.age_p50 for c in cams), 2) if cams else None,
        "frame_age_p99_ms": round(1000 * max(c.age_p99 for c in cams), 2) if cams else None,
    }
    context = ep.attrs.get("timing_context") or {}
    row.update({k: context[k] for k in CONTEXT_KEYS if isinstance(context, dict) and k in context})
    return row


class BesideWork:
    """Processes that load the machine beside a scenario, at normal priority, killed with their groups."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.procs: list[subprocess.Popen] = []
        self.logs: dict[int, Path] = {}

    def start(self, cmd: list[str], log: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed by the child's exit)
        try:
            # Own session: one killpg takes the process and anything it started (DataLoader workers).
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=_child_setup, start_new_session=True,
                                    env={**os.environ, **(env or {})})
        finally:
            if log:
                out.close()
        self.procs.append(proc)
        if log:
            self.logs[proc.pid] = log
        return proc

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system, all threads) the processes used so far."""
        total = 0.0
        for p in self.procs:
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
        return total

    def check(self) -> None:
        """Fail loudly when a process beside the scenario stopped: the figures would not be 'beside' it."""
        for p in self.procs:
            if p.poll() is not None:
                tail = _tail(self.logs[p.pid], 2000) if p.pid in self.logs else ""
                raise SystemExit(f"{self.label}: {' '.join(map(str, p.args))} exited ({p.returncode}) during the "
                                 f"benchmark\n{tail}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        self.procs.clear()


def _child_setup() -> None:
    _normal_priority()
    # Dies with this benchmark even when it is killed without running its finally blocks.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def record_train_demos(out: Path, episodes: int = 3) -> Path:
    """A small sim dataset (two 96x96 cameras, simulated time) for the training runs beside the scenarios."""
    if not (out / "meta" / "info.json").exists():
        sh(BIN / "collect", "--device", "scripted", "--robot", "sim", "--no-realtime", "--env-state",
           "--sim-cameras", "front,wrist", "--camera-size", "96x96", "--episodes", str(episodes),
           "--episode-time", "8", "--reset-time", "0", "--seed", "0", "--out", out)
    return out


def start_training(beside: BesideWork, demos: Path, work: Path, console: Console, timeout_s: float = 300) -> None:
    """Start an image-BC `telecorder train` run (default threads) and return once its optimizer steps."""
    log = work / "train_beside.log"
    proc = beside.start([str(BIN / "telecorder"), "train", str(demos), "--out", str(work / "train_beside"),
                         "--obs", "images", "--steps", str(TRAIN_STEPS), "--val-episodes", "0", "--overwrite"], log,
                        # Its progress bar then refreshes into the log ("N/TRAIN_STEPS"), which tells when it steps.
                        env={"TTY_COMPATIBLE": "1", "NO_COLOR": "1"})
    console.print(f"started telecorder train (pid {proc.pid}); waiting for its first steps")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        beside.check()
        done = [int(a) for a, b in _PROGRESS.findall(_tail(log)) if int(b) == TRAIN_STEPS]
        if done and max(done) >= 10:
            console.print(f"training runs ({max(done)} steps after {time.monotonic() - t0:.0f} s)")
            return
        time.sleep(0.5)
    raise SystemExit(f"telecorder train did not start stepping within {timeout_s:.0f} s:\n{_tail(log, 2000)}")


def _tail(path: Path, size: int = 4096) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode(errors="replace")


@contextlib.contextmanager
def beside_work(kind: str, hogs: int, work: Path, console: Console) -> Iterator[BesideWork]:
    """The load the scenarios run beside; every process is killed on the way out, error or Ctrl-C included."""
    beside = BesideWork(f"{hogs} busy loop(s)" if kind == "hogs" else "telecorder train")
    try:
        if kind == "hogs":
            for _ in range(hogs):
                beside.start([sys.executable, "-c", "while 1: pass"])
        else:
            start_training(beside, record_train_demos(work / "train_demos"), work, console)
        yield beside
    finally:
        beside.stop()


def sh(*args: object) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          preexec_fn=_normal_priority)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-2000:]}")
    return proc.stdout


def raise_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the finally blocks kill what this started."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def writer_capacity(tmp: Path, frames: list[np.ndarray], n_frames: int, repeats: int = 3, quality: int = 90) -> dict:
    """Frames/s through the writer (encode + HDF5) vs bare cv2.imencode on one core, same frames.

    The two are measured alternately, ``repeats`` times, and medians are reported.
    """
    bare, ours = [], []
    for r in range(repeats):
        bare.append(_bare_encode_rate(frames, n_frames, quality))
        ours.append(_writer_rate(tmp / f"capacity{r}", frames, n_frames, quality))
    b, o = statistics.median(bare), statistics.median(ours)
    return {"frames": n_frames, "repeats": repeats, "bare_imencode_fps": round(b, 1), "writer_fps": round(o, 1),
            "ratio": round(o / b, 3)}


def _bare_encode_rate(frames: list[np.ndarray], n_frames: int, quality: int) -> float:
    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    t0 = time.perf_counter()
    for i in range(n_frames):
        cv2.imencode(".jpg", bgr[i % len(bgr)], (cv2.IMWRITE_JPEG_QUALITY, quality))
    return n_frames / (time.perf_counter() - t0)


def _writer_rate(root: Path, frames: list[np.ndarray], n_frames: int, quality: int) -> float:
    h, w = frames[0].shape[:2]
    info = DatasetInfo.create(
        [FeatureSpec("observation.state", "float32", (6,)), FeatureSpec("action", "float32", (6,)),
         image_feature("cam0", h, w)],
        fps=30, robot_type="bench", jpeg_quality=quality,
    )
    dw = DatasetWriter(root, info)
    writer = AsyncEpisodeWriter(dw, encode_threads=2, max_queue=64)
    zeros = np.zeros(6, np.float32)
    t0 = time.perf_counter()
    writer.begin({"task": "capacity"})
    for i in range(n_frames):
        writer.add(Step(timestamp=i / 30, numeric={"observation.state": zeros, "action": zeros},
                        frames={"cam0": frames[i % len(frames)]}, frame_time={"cam0": i / 30}, frame_index={"cam0": i}))
    writer.end({}, {}).result()
    rate = n_frames / (time.perf_counter() - t0)
    writer.close()
    dw.close()
    shutil.rmtree(root, ignore_errors=True)
    return rate


def _normal_priority() -> None:
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, 0, 0)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def default_json(beside: str, hogs: int) -> Path:
    name = "record_train.json" if beside == "train" else f"record_hogs{hogs}.json" if hogs else "record.json"
    return Path("benchmarks/results") / name


def mode_name(priority: bool) -> str:
    return "on" if priority else "off"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per scenario and mode (default 60)")
    ap.add_argument("--capacity-frames", type=int, default=900, help="frames for the writer capacity test")
    ap.add_argument("--hogs", type=int, default=0, help="busy processes running beside the scenarios (default 0)")
    ap.add_argument("--beside", choices=("hogs", "train"), default="hogs",
                    help="the load beside the scenarios: --hogs busy loops (default), or a `telecorder train` run "
                         "(image BC on a few sim episodes the benchmark records first, CPU, default threads)")
    ap.add_argument("--priority", choices=tuple(MODES), default="both",
                    help="run the recorder without (off) and/or with (on) real-time priority (default both)")
    ap.add_argument("--json", type=Path, default=None,
                    help="where to write the results (default benchmarks/results/record.json, record_hogsN.json "
                         "or record_train.json)")
    args = ap.parse_args(argv)
    if args.beside == "train" and args.hogs:
        ap.error("--hogs and --beside train are separate runs: give one")
    modes = MODES[args.priority]
    args.json = args.json or default_json(args.beside, args.hogs)
    raise_on_sigterm()
    console = Console()
    load = args.beside if args.beside == "train" else f"{args.hogs} busy process(es)"
    tmp = Path(tempfile.mkdtemp(prefix="tc-bench-"))
    a: dict[str, dict] = {}
    b: dict[str, dict] = {}
    try:
        # 10 s per file: a looping file camera stalls briefly when it rewinds, so rewind rarely.
        videos = [make_video(tmp / f"cam{i}.avi", scene_frames(300, seed=i)) for i in range(3)]
        capacity_frames = list(scene_frames(60))
        # Capacity first: the scenarios leave gigabytes of dirty pages that the kernel flushes for a while after.
        console.print("writer capacity (3 alternating runs)")
        cap = writer_capacity(tmp, capacity_frames, args.capacity_frames)
        # The load runs at normal priority even when this benchmark runs under 'chrt' (children inherit it).
        with beside_work(args.beside, args.hogs, tmp, console) as beside:
            for priority in modes:
                console.print(f"scenario A: 3 cameras, 30 Hz, {args.duration:g} s, priority {mode_name(priority)}, "
                              f"beside {load}")
                a[mode_name(priority)] = record_scenario(tmp, videos, 30.0, args.duration, priority, beside)
            for priority in modes:
                console.print(f"scenario B: 2 cameras, 100 Hz, {args.duration:g} s, priority {mode_name(priority)}, "
                              f"beside {load}")
                b[mode_name(priority)] = record_scenario(tmp, videos[:2], 100.0, args.duration, priority, beside)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title=f"record benchmark beside {load} ({os.cpu_count()} cores, Python {sys.version.split()[0]})",
                  caption="A: 3 cameras @ 30 Hz, B: 2 cameras @ 100 Hz; on/off: the recorder's real-time priority")
    table.add_column("metric", no_wrap=True)
    columns = [(f"{s} {m}", rows[m]) for s, rows in (("A", a), ("B", b)) for m in rows]
    for title, _ in columns:
        table.add_column(title, justify="right")
    for key in dict.fromkeys(k for _, row in columns for k in row):
        table.add_row(key, *(str(row.get(key, "-")) for _, row in columns))
    console.print(table)
    console.print(
        f"writer capacity: {cap['writer_fps']} frames/s (JPEG q90 + HDF5, 640x480, 2 encode threads) vs bare "
        f"cv2.imencode {cap['bare_imencode_fps']} frames/s on one core: ratio {cap['ratio']:.2f} (medians of 3)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"beside": args.beside, "hogs": args.hogs if args.beside == "hogs" else 0, "duration_s": args.duration,
              "cores": os.cpu_count(), "priority_modes": [mode_name(p) for p in modes],
              "scenario_a": a, "scenario_b": b, "writer_capacity": cap}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
