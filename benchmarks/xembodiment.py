"""Cross-embodiment benchmark: does one policy trained on two robots do as well as one policy per robot?

The two robots are the built-in single arm (6-D, the ``pick`` scene: pick up the cube) and the
built-in bimanual pair (12-D, the ``bimanual`` scene: hand the cube from the left gripper to the
right). Every step goes through the CLI a user runs (``collect``, ``telecorder train``,
``telecorder eval``), with fixed seeds:

1. 50 scripted demonstrations of each (``--env-state``, state only).
2. One BC policy per robot, ``--steps N`` each (default 10,000).
3. One BC policy on both (``--mixture uniform``: half the batches from each robot), ``2N`` steps:
   the same total number of steps, so each robot's data is seen as often as by its own policy.
4. Each policy evaluated on its robot(s), 50 episodes each, with seeds no demonstration used.

Target: the mixed policy within 10 points of the per-robot policy on each robot (no negative
transfer). Results go to ``benchmarks/results/xembodiment.json`` and a Markdown table is printed.

    python benchmarks/xembodiment.py                 # BC, about 5 minutes on 2 cores
    python benchmarks/xembodiment.py --steps 3000    # shorter training
    python benchmarks/xembodiment.py --policy vla --head l1 --steps 2000   # the reference VLA (results key "vla_l1")
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
BIN = Path(sys.executable).parent
EVAL_SEED = 1000
ROBOTS = {"single_arm": ("pick", 10.0), "bimanual": ("bimanual", 12.0)}
POLICY: list[str] = []  # extra 'telecorder train' options of --policy


def sh(*args: object) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-2000:]}")
    return proc.stdout


def demos(out: Path, scene: str, episodes: int, seconds: float) -> Path:
    if not out.exists():
        sh(BIN / "collect", "--device", "scripted", "--robot", "sim", "--scene", scene, "--no-realtime",
           "--env-state", "--sim-cameras", "none", "--episodes", episodes, "--episode-time", seconds, "--seed", 0,
           "--out", out)
    return out


def train(out: Path, datasets: list[Path], steps: int, *extra: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    sh(BIN / "telecorder", "train", *datasets, "--out", out, "--overwrite", "--obs", "state", "--steps", steps,
       "--val-episodes", 0, *POLICY, *extra)
    meta = json.loads((out / "policy.json").read_text())
    return {"train_s": round(time.perf_counter() - t0, 1), "steps": steps,
            "final_train_loss": meta["training"].get("final_train_loss")}


def evaluate(policy: Path, scene: str, seconds: float, episodes: int) -> dict[str, Any]:
    result = json.loads(sh(BIN / "telecorder", "eval", policy, "--scene", scene, "--episodes", episodes,
                           "--episode-time", seconds, "--seed", EVAL_SEED, "--json"))
    return {k: result[k] for k in ("success_rate", "successes", "episodes", "ci95")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", type=int, default=50, help="demonstrations per robot (default 50)")
    ap.add_argument("--steps", type=int, default=10_000, help="training steps of each per-robot policy")
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--work", type=Path, help="keep datasets and checkpoints here (default: a temp folder)")
    ap.add_argument("--policy", choices=("bc", "vla"), default="bc")
    ap.add_argument("--head", choices=("l1", "flow"), default="l1", help="--policy vla: the action head")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/xembodiment.json"))
    args = ap.parse_args()
    if args.policy == "vla":
        POLICY.extend(["--policy", "vla", "--head", args.head])
    work = args.work or Path(tempfile.mkdtemp(prefix="telecorder-xe-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = {name: demos(work / f"{name}{args.demos}", scene, args.demos, seconds)
            for name, (scene, seconds) in ROBOTS.items()}
    run: dict[str, Any] = {"demos_per_robot": args.demos, "eval_episodes": args.eval_episodes,
                           "eval_seed": EVAL_SEED, "machine_cores": os.cpu_count(),
                           "demos_s": round(time.perf_counter() - t0, 1), "per_robot": {}, "mixed": {}}
    # BC results at the top level (as first published); another policy's under its own key.
    everything = json.loads(args.json.read_text()) if args.json.exists() else {}
    key = None if args.policy == "bc" else f"vla_{args.head}"
    results = run
    for name, (scene, seconds) in ROBOTS.items():
        row = train(work / f"{args.policy}_{name}", [data[name]], args.steps)
        row.update(evaluate(work / f"{args.policy}_{name}", scene, seconds, args.eval_episodes))
        results["per_robot"][name] = row
        print(f"{name}: own policy {row['success_rate']:.0%} {row['ci95']}", flush=True)
    mixed = work / f"{args.policy}_mixed"
    results["mixed"]["training"] = train(mixed, list(data.values()), 2 * args.steps, "--mixture", "uniform")
    for name, (scene, seconds) in ROBOTS.items():
        row = evaluate(mixed, scene, seconds, args.eval_episodes)
        results["mixed"][name] = row
        own = results["per_robot"][name]["success_rate"]
        row["points_vs_own"] = round(100 * (row["success_rate"] - own), 1)
        row["within_10_points"] = row["success_rate"] >= own - 0.10
        print(f"{name}: mixed policy {row['success_rate']:.0%} {row['ci95']} ({row['points_vs_own']:+.0f} points)",
              flush=True)
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    if key is None:
        everything.update(results)
    else:
        everything[key] = results
    args.json.write_text(json.dumps(everything, indent=2) + "\n")
    print("\n| robot | own policy | mixed policy | difference |\n|---|---|---|---|")
    for name in ROBOTS:
        own, mix = results["per_robot"][name], results["mixed"][name]
        print(f"| {name} | {own['success_rate']:.0%} | {mix['success_rate']:.0%} | {mix['points_vs_own']:+.0f} points |")


if __name__ == "__main__":
    main()
