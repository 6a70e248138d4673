"""Replay fidelity: how far replayed states drift from recorded ones, per teleop device.

Records a few episodes on the simulated arm with each device through ``collect`` (the
scripted expert on simulated time, the emulated leader arm over the real dynamixel_sdk
and the bus emulator at wall-clock pace, and a VR controller pose stream), replays each
episode with ``telecorder replay`` in its restored scene, and prints the drift of the
measured joint states (radians; gripper 0..1) per joint: the median of the episodes' p50,
the largest p95 and the largest max, with how often the replay's task outcome matched the
recording's. Two corrupted copies of the scripted recording (actions one tick late, arm
actions in degrees) show what a real fidelity problem looks like next to those numbers.

    python benchmarks/replay_drift.py                 # 3 episodes per device
    python benchmarks/replay_drift.py --episodes 5 --json benchmarks/results/replay_drift.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
from rich.console import Console
from rich.table import Table

from telecorder.datasets import Dataset
from telecorder.replay.player import ReplayConfig, replay

BIN = Path(sys.executable).parent
COMMON = ["--robot", "sim", "--sim-cameras", "none", "--reset-time", "0", "--env-state"]


def collect(out: Path, *args: str) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run([str(BIN / "collect"), *COMMON, *args, "--out", str(out)], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"collect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def vr_stream(path: Path, seconds: float = 6.0) -> None:
    """A controller that clutches, sweeps a horizontal arc and a dip, and pulls the trigger half way."""
    from telecorder.collect.devices.vr import ControllerSample, write_pose_stream

    samples = []
    for k in range(int(seconds * 90)):
        t = k / 90
        pose = np.eye(4)
        pose[:3, 3] = [0.1, 1.2, -0.3]
        s = max(0.0, t - 0.5)
        pose[0, 3] += 0.06 * np.sin(0.8 * s)
        pose[1, 3] -= 0.05 * (1 - np.cos(0.6 * s))
        pose[2, 3] -= 0.04 * np.sin(0.5 * s)
        trigger = 1.0 if 2.5 <= t < 4.5 else 0.0
        samples.append(ControllerSample(t=t, hand="right", pose=pose, squeeze=1.0 if t >= 0.5 else 0.0,
                                        trigger=trigger))
    write_pose_stream(path, samples)


def corrupt(src: Path, dst: Path, how: str) -> Path:
    shutil.copytree(src, dst)
    for path in sorted((dst / "episodes").glob("episode_*.h5")):
        with h5py.File(path, "r+") as f:
            a = f["action"][:]
            if how == "one tick late":
                a = np.concatenate([a[:1], a[:-1]])
            else:
                a[:, :5] = np.rad2deg(a[:, :5])
            f["action"][:] = a
    return dst


def measure(dataset: Path) -> dict:
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    # Simulated time: the physics per action is the same as at wall-clock pace, only faster.
    reports = [replay(ReplayConfig(dataset=dataset, episode=i, realtime=False), quiet)
               for i in Dataset.open(dataset).episode_indices]
    d = [r["drift"]["observation.state"] for r in reports]
    return {
        "episodes": len(reports),
        "steps": sum(r["steps"] for r in reports),
        "names": d[0]["names"],
        "p50": np.median([x["p50"] for x in d], axis=0).tolist(),
        "p95": np.max([x["p95"] for x in d], axis=0).tolist(),
        "max": np.max([x["max"] for x in d], axis=0).tolist(),
        "success_recorded": [r["success"]["recorded"] for r in reports],
        "success_replayed": [r["success"]["replayed"] for r in reports],
        "scene": reports[0]["scene"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    n = str(args.episodes)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        collect(root / "scripted", "--device", "scripted", "--episodes", n, "--episode-time", "8", "--no-realtime",
                "--seed", "1")
        collect(root / "leader", "--device", "leader_arm", "--emulate", "--episodes", n, "--episode-time", "6",
                "--seed", "2")
        vr_stream(root / "stream.jsonl")
        collect(root / "vr", "--device", "vr", "--pose-stream", str(root / "stream.jsonl"), "--episodes", n,
                "--episode-time", "6", "--no-realtime", "--seed", "3")
        for name, folder in (("scripted", "scripted"), ("leader arm (emulated)", "leader"), ("vr pose stream", "vr")):
            results[name] = measure(root / folder)
        for how in ("one tick late", "arm in degrees"):
            results[f"scripted, actions {how}"] = measure(corrupt(root / "scripted", root / how.replace(" ", "_"), how))
    table = Table(title="replay drift of observation.state (replayed - recorded): rad, gripper 0..1")
    for col in ("recording", "joint", "p50", "p95", "max", "success rec -> replay"):
        table.add_column(col, justify="left" if col in ("recording", "joint") else "right")
    for name, r in results.items():
        outcome = ", ".join(f"{_yn(a)}->{_yn(b)}" for a, b in zip(r["success_recorded"], r["success_replayed"],
                                                                 strict=True))
        for i, joint in enumerate(r["names"]):
            first = i == 0
            table.add_row(f"{name} ({r['episodes']} ep, {r['steps']} steps)" if first else "", joint,
                          f"{r['p50'][i]:.2e}", f"{r['p95'][i]:.2e}", f"{r['max'][i]:.2e}", outcome if first else "")
        table.add_section()
    Console(width=140).print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


def _yn(value: bool | None) -> str:
    return {True: "y", False: "n", None: "?"}[value]


if __name__ == "__main__":
    main()
