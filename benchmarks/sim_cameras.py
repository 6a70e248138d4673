"""Sim camera benchmark: render throughput per size, and recordings with two rendered cameras.

Part 1, rendering alone (one render thread, as the camera rig has): camera pairs per
second flat out, and the CPU a pair costs when paced at 30 pairs/s, for each size.
Part 2, recordings at 30 Hz with the two built-in cameras (``front``, ``wrist``), as
``collect`` makes them: the scripted sweep, and the ``make demo`` set-up (emulated
leader arm over the Dynamixel bus emulator). Reported per run: late and missed ticks,
repeated and dropped frames (0 by construction: each tick's state is rendered), frame
age, process CPU, and the doctor warning count.

Timings on a shared machine are noisy: the load average is printed with each part,
and each recording scenario is repeated (``--repeats``).

    python benchmarks/sim_cameras.py                       # about 3 minutes
    python benchmarks/sim_cameras.py --sizes 640x480 --seconds 8 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from telecorder.collect.factory import DeviceConfig, make_devices
from telecorder.collect.session import RecordingSession, SessionConfig
from telecorder.datasets.doctor import check_dataset
from telecorder.sim.env import SimEnv
from telecorder.sim.render import SimRenderer

CAMERAS = ("front", "wrist")


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def render_throughput(size: tuple[int, int], seconds: float) -> dict:
    env = SimEnv(seed=0)
    qposes = []
    for _ in range(30):  # a moving arm, so no frame is a repeat of the one before
        env.apply_action(env.action_low + (env.action_high - env.action_low) * np.random.default_rng(len(qposes)).random(
            len(env.action_low)))
        qposes.append(env.snapshot()[0])
    r = SimRenderer(env.model, *size)
    try:
        for name in CAMERAS:
            r.render(qposes[0], name)  # first frames compile shaders
        # Flat out.
        pairs, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for name in CAMERAS:
                r.render(qposes[pairs % len(qposes)], name)
            pairs += 1
        flat_out = pairs / (time.perf_counter() - t0)
        # Paced at 30 pairs/s: CPU per pair (llvmpipe rasterises on every core) and latency.
        lat = []
        c0, t0 = time.process_time(), time.perf_counter()
        n = int(30 * seconds)
        for k in range(n):
            due = t0 + k / 30
            while (left := due - time.perf_counter()) > 0:
                time.sleep(left)
            a = time.perf_counter()
            for name in CAMERAS:
                r.render(qposes[k % len(qposes)], name)
            lat.append(time.perf_counter() - a)
        cpu = (time.process_time() - c0) / (time.perf_counter() - t0)
    finally:
        r.close()
    return {
        "size": f"{size[0]}x{size[1]}",
        "pairs_per_s_flat_out": round(flat_out, 1),
        "cpu_pct_of_one_core_at_30_pairs_per_s": round(100 * cpu, 1),
        "pair_latency_p50_ms": round(1000 * float(np.median(lat)), 2),
        "pair_latency_p99_ms": round(1000 * float(np.percentile(lat, 99)), 2),
    }


def record(tmp: Path, device: str, size: tuple[int, int], seconds: float, episodes: int, seed: int) -> dict:
    cfg = DeviceConfig(robot="sim", device=device, script="sweep", fps=30.0, seed=seed, camera_size=size,
                       emulate=device == "leader_arm")
    robot, teleop, cameras = make_devices(cfg)
    out = tmp / f"{device}_{size[0]}x{size[1]}_{seed}"
    session = RecordingSession(
        robot, teleop, cameras,
        SessionConfig(out=out, episodes=episodes, episode_time_s=seconds, reset_time_s=0, task="bench", fps=30.0,
                      seed=seed),
        console=Console(quiet=True),
    )
    load = os.getloadavg()[0]
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    summary = session.run()
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    report = check_dataset(out, decode_frames="none")
    syncs = [e.sync for e in report.episodes if e.sync is not None]
    steps = sum(s.steps for s in syncs)
    result = {
        "device": device,
        "size": f"{size[0]}x{size[1]}",
        "episodes": len(summary.saved),
        "steps": steps,
        "late_ticks": sum(s.late_ticks for s in syncs),
        "late_pct": round(100 * sum(s.late_ticks for s in syncs) / max(1, steps), 2),
        "max_lateness_ms": round(1000 * max(s.max_lateness for s in syncs), 1),
        "missed_ticks": sum(s.missed_ticks for s in syncs),
        "repeated_frames": sum(c.repeated for s in syncs for c in s.cameras.values()),
        "dropped_frames": sum(c.skipped for s in syncs for c in s.cameras.values()),
        "frame_age_max_ms": round(1000 * max(c.age_max for s in syncs for c in s.cameras.values()), 2),
        "cpu_pct_of_one_core": round(100 * cpu / wall, 1),
        "doctor_warnings": len(report.all_warnings),
        "load_avg_1min_before": round(load, 2),
    }
    shutil.rmtree(out, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x480,480x360,320x240", help="camera sizes (comma-separated)")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per episode / per render measurement")
    ap.add_argument("--episodes", type=int, default=2, help="episodes per recording")
    ap.add_argument("--repeats", type=int, default=2, help="recordings per scenario")
    ap.add_argument("--devices", default="scripted,leader_arm", help="recording set-ups: scripted, leader_arm")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/sim_cameras.json"))
    args = ap.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    console = Console()

    console.print(f"render throughput, 2 cameras, one render thread (load {os.getloadavg()[0]:.2f})")
    renders = [render_throughput(s, min(args.seconds, 4.0)) for s in sizes]
    table = Table(title=f"sim render, 2 cameras ({os.cpu_count()} cores)")
    table.add_column("metric")
    for row in renders:
        table.add_column(row["size"], justify="right")
    for key in list(renders[0])[1:]:
        table.add_row(key, *(str(row[key]) for row in renders))
    console.print(table)

    tmp = Path(tempfile.mkdtemp(prefix="tc-simcam-"))
    runs = []
    try:
        for device in [d for d in args.devices.split(",") if d]:
            for size in sizes:
                for rep in range(args.repeats):
                    console.print(f"recording: {device}, 2 cameras {size[0]}x{size[1]}, 30 Hz, "
                                  f"{args.episodes} x {args.seconds:g} s (run {rep + 1}/{args.repeats})")
                    runs.append(record(tmp, device, size, args.seconds, args.episodes, seed=rep))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title="recordings at 30 Hz with 2 sim cameras, one row per run")
    short = {"device": "set-up", "size": "size", "steps": "steps", "late_ticks": "late", "max_lateness_ms": "worst ms",
             "missed_ticks": "missed", "repeated_frames": "repeated", "dropped_frames": "dropped",
             "frame_age_max_ms": "age max ms", "cpu_pct_of_one_core": "CPU %", "doctor_warnings": "warnings",
             "load_avg_1min_before": "load"}
    for title in short.values():
        table.add_column(title, justify="left" if title in ("set-up", "size") else "right")
    for row in runs:
        table.add_row(*(str(row[key]) for key in short))
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cpu_count": os.cpu_count(), "render": renders, "recordings": runs}, indent=2)
                         + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
