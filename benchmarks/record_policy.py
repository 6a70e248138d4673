"""Policy-in-the-loop timing beside a training run: `collect --device policy` with an image policy.

The issue-25 target: `collect --device policy` with the image BC policy at 30 Hz, beside a
`telecorder train` run, keeps >= 99% of its ticks on time. Steps, all through the CLI a
user runs:

1. record a few scripted sim episodes on simulated time (two 96x96 cameras);
2. train a tiny image BC policy on them (a few optimizer steps: the timing depends on the
   network's size, not on how well it was trained);
3. start a `telecorder train` run on the same episodes (image BC, CPU, its default threads,
   normal priority) and wait until it steps;
4. record one episode with `collect --device policy --robot sim` on the wall clock at 30 Hz
   (both sim cameras rendered at --camera-size), without (`--no-rt`) and with the recorder's
   real-time priority, under the same load; then kill the trainer.

From each recorded episode: ticks on time (lateness <= 2 ms), lateness p99, missed ticks,
dropped frames and the policy's inference time (the episode's ``policy_inference_ms_*``).

    python benchmarks/record_policy.py                      # 60 s per mode (about 4 minutes)
    python benchmarks/record_policy.py --duration 20
    python benchmarks/record_policy.py --beside none        # quiet-machine reference
    python benchmarks/record_policy.py --beside hogs --hogs 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

os.environ.setdefault("MUJOCO_GL", "egl")

# Run as a script: benchmarks/ is on sys.path, and record.py holds the load and the timing figures.
from record import BIN, MODES, beside_work, raise_on_sigterm, record_train_demos, sh, timing_row

from telecorder.datasets.dataset import Dataset

POLICY_KEYS = ("policy_inference_ms_p50", "policy_inference_ms_p99", "policy_inference_ms_max", "policy_held_ticks",
               "policy_chunks")
EVAL_SEED = 1000


def train_tiny_policy(demos: Path, out: Path, steps: int) -> Path:
    if not (out / "policy.json").exists():
        sh(BIN / "telecorder", "train", demos, "--out", out, "--obs", "images", "--steps", str(steps),
           "--val-episodes", "0", "--overwrite")
    return out


def run_policy(policy: Path, out: Path, duration: float, fps: float, camera_size: str, priority: bool) -> dict:
    """One wall-clock episode with the policy driving the sim arm; its timing and inference figures."""
    shutil.rmtree(out, ignore_errors=True)
    sh(BIN / "collect", "--device", "policy", "--policy", policy, "--robot", "sim", "--sim-cameras", "front,wrist",
       "--camera-size", camera_size, "--fps", str(fps), "--episodes", "1", "--episode-time", str(duration),
       "--reset-time", "0", "--seed", str(EVAL_SEED), "--no-display", "--out", out,
       *(() if priority else ("--no-rt",)))
    ds = Dataset.open(out)
    with ds.episode(ds.episode_indices[0]) as ep:
        row = timing_row(ep, fps)
        attrs = ep.attrs
    row.update({k: attrs.get(k) for k in POLICY_KEYS})
    # A policy that succeeds ends its episode early (fewer ticks than asked): visible here.
    row["success"] = attrs.get("success")
    shutil.rmtree(out, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of the policy episode per mode (default 60)")
    ap.add_argument("--fps", type=float, default=30.0, help="control rate (default 30)")
    ap.add_argument("--camera-size", default="640x480", help="sim camera size of the policy episode (default 640x480, "
                    "as recordings are; the policy resizes to its 96x96)")
    ap.add_argument("--beside", choices=("train", "hogs", "none"), default="train",
                    help="the load beside the episodes: a `telecorder train` run (default), --hogs busy loops, or none")
    ap.add_argument("--hogs", type=int, default=2, help="busy loops for --beside hogs (default 2)")
    ap.add_argument("--priority", choices=tuple(MODES), default="both",
                    help="record without (off, collect --no-rt) and/or with (on) real-time priority (default both)")
    ap.add_argument("--policy", type=Path, default=None,
                    help="an image checkpoint to run instead of training a tiny one")
    ap.add_argument("--train-steps", type=int, default=20, help="optimizer steps of the tiny policy (default 20)")
    ap.add_argument("--work", type=Path, default=None, help="keep the demos and checkpoint here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/record_policy.json"))
    args = ap.parse_args(argv)
    raise_on_sigterm()
    console = Console()
    modes = MODES[args.priority]
    work = args.work or Path(tempfile.mkdtemp(prefix="tc-bench-policy-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    try:
        console.print("recording sim demos (simulated time)")
        demos = record_train_demos(work / "train_demos")
        policy = args.policy
        if policy is None:
            console.print(f"training a tiny image BC policy ({args.train_steps} steps)")
            policy = train_tiny_policy(demos, work / "policy", args.train_steps)
        kind, hogs = ("hogs", args.hogs) if args.beside == "hogs" else ("hogs", 0) if args.beside == "none" \
            else ("train", 0)
        with beside_work(kind, hogs, work, console) as beside:
            for priority in modes:
                mode = "on" if priority else "off"
                console.print(f"collect --device policy, {args.fps:g} Hz, {args.duration:g} s, priority {mode}, "
                              f"beside {beside.label}")
                cpu0, wall0 = beside.cpu_seconds(), time.perf_counter()
                row = run_policy(policy, work / f"rollout_{mode}", args.duration, args.fps, args.camera_size,
                                 priority)
                beside.check()
                # Over the whole collect run (its start-up included): the load was there all along.
                row["beside_cpu_cores"] = (round((beside.cpu_seconds() - cpu0) / (time.perf_counter() - wall0), 2)
                                           if beside.procs else None)
                rows[mode] = row
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"collect --device policy beside {args.beside} ({os.cpu_count()} cores)")
    table.add_column("metric", no_wrap=True)
    for mode in rows:
        table.add_column(f"priority {mode}", justify="right")
    for key in dict.fromkeys(k for row in rows.values() for k in row):
        table.add_row(key, *(str(row.get(key, "-")) for row in rows.values()))
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"beside": args.beside, "hogs": args.hogs if args.beside == "hogs" else 0, "duration_s": args.duration,
              "camera_size": args.camera_size, "cores": os.cpu_count(), "priority_modes": list(rows),
              "policy": "tiny image BC" if args.policy is None else str(args.policy), "episodes": rows}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
