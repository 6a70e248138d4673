"""Behavioral-cloning benchmark: does data recorded here train a policy that succeeds in closed loop?

On the built-in pick-and-lift task, with fixed seeds, every step through the CLI a user runs
(`collect`, `telecorder train`, `telecorder eval`):

1. BC on 50 scripted-expert demonstrations, ``--obs state`` (joint state + cube pose):
   success over 50 evaluation episodes (target >= 90%).
2. The same with ``--obs images`` (two 96x96 cameras + joint state), trained within a
   wall-clock budget (default 20 minutes on the 2-core machine; target >= 60%).
3. DAgger: a state policy trained on 10 demonstrations, then 3 rounds of 10
   ``--intervene expert`` rollouts added to the training set, against plain BC on the
   same total number of scripted episodes (10, 20, 30, 40).
4. Control-loop timing with the image policy in the loop at 30 Hz on the wall clock:
   ticks on time and ticks that held the last action.

Evaluation episodes use seeds no demonstration used. Results go to
``benchmarks/results/bc.json`` and a Markdown table is printed.

    python benchmarks/bc.py                     # everything (about 20 minutes on 2 cores)
    python benchmarks/bc.py --only state dagger # a subset
    python benchmarks/bc.py --image-minutes 5   # a smaller image-training budget
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
PARTS = ("state", "images", "dagger", "timing")
EVAL_SEED = 1000


def sh(*args: str) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-2000:]}")
    return proc.stdout


def demos(out: Path, episodes: int, cameras: str = "none") -> Path:
    if not out.exists():
        sh(BIN / "collect", "--device", "scripted", "--robot", "sim", "--no-realtime", "--env-state",
           "--sim-cameras", cameras, "--camera-size", "96x96", "--episodes", str(episodes), "--episode-time", "10",
           "--seed", "0", "--out", out)
    return out


def train(datasets: list[Path], out: Path, *extra: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    sh(BIN / "telecorder", "train", *datasets, "--out", out, "--overwrite", *extra)
    meta = json.loads((out / "policy.json").read_text())
    return {"train_s": round(time.perf_counter() - t0, 1), "final_train_loss": meta["training"].get("final_train_loss")}


def evaluate(policy: Path, episodes: int, *extra: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = json.loads(sh(BIN / "telecorder", "eval", policy, "--episodes", str(episodes),
                           "--seed", str(EVAL_SEED), "--json", *extra))
    result["eval_s"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--state-steps", type=int, default=3000)
    ap.add_argument("--image-minutes", type=float, default=20.0, help="wall-clock budget of image training")
    ap.add_argument("--work", type=Path, help="keep datasets and checkpoints here (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/bc.json"))
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="telecorder-bc-"))
    work.mkdir(parents=True, exist_ok=True)
    n_eval = args.eval_episodes
    results: dict[str, Any] = {"eval_episodes": n_eval, "eval_seed": EVAL_SEED, "machine_cores": os.cpu_count()}
    if args.json.exists():
        results = {**json.loads(args.json.read_text()), **results}

    t0 = time.perf_counter()
    demos50 = demos(work / "demos50", 50, "front,wrist")
    results["demos_s"] = round(time.perf_counter() - t0, 1)
    state_args = ("--obs", "state", "--steps", str(args.state_steps), "--val-episodes", "0")

    if "state" in args.only:
        row = train([demos50], work / "bc_state", *state_args)
        row.update(evaluate(work / "bc_state", n_eval))
        results["state"] = row
        save(args.json, results)
        print(f"state BC (50 demos): {row['success_rate']:.0%} {row['ci95']}", flush=True)

    if "dagger" in args.only:
        rounds: list[dict[str, Any]] = []
        training = [demos(work / "demos10", 10)]
        policy = work / "dagger_0"
        row = train(training, policy, *state_args)
        row.update(evaluate(policy, n_eval))
        plain = dict(row)
        rounds.append({"round": 0, "episodes": 10, "dagger": row["success_rate"], "bc": plain["success_rate"],
                       "dagger_ci95": row["ci95"], "bc_ci95": plain["ci95"], "human_steps": 0})
        for r in (1, 2, 3):
            rollouts = work / f"rollouts_{r}"
            sh(BIN / "collect", "--device", "policy", "--policy", policy, "--intervene", "expert", "--robot", "sim",
               "--no-realtime", "--env-state", "--sim-cameras", "none", "--episodes", "10", "--episode-time", "10",
               "--seed", str(100 + r), "--out", rollouts)
            human = sum(json.loads(line).get("human_steps", 0)
                        for line in (rollouts / "meta" / "episodes.jsonl").read_text().splitlines())
            training.append(rollouts)
            policy = work / f"dagger_{r}"
            # HG-DAgger: learn from the expert's corrections only, not from the policy's own actions.
            row = train(training, policy, *state_args, "--policy-weight", "0")
            row.update(evaluate(policy, n_eval))
            total = 10 + 10 * r
            bc = train([demos(work / f"demos{total}", total)], work / f"bc_{total}", *state_args)
            bc.update(evaluate(work / f"bc_{total}", n_eval))
            rounds.append({"round": r, "episodes": total, "dagger": row["success_rate"], "bc": bc["success_rate"],
                           "dagger_ci95": row["ci95"], "bc_ci95": bc["ci95"], "human_steps": human})
            print(f"DAgger round {r} ({total} episodes): {row['success_rate']:.0%} vs BC {bc['success_rate']:.0%}",
                  flush=True)
        results["dagger"] = rounds
        save(args.json, results)

    if "images" in args.only:
        row = train([demos50], work / "bc_images", "--obs", "images", "--image-size", "96x96",
                    "--val-episodes", "0", "--max-minutes", str(args.image_minutes))
        row.update(evaluate(work / "bc_images", n_eval))
        results["images"] = row
        save(args.json, results)
        print(f"image BC (50 demos): {row['success_rate']:.0%} {row['ci95']}", flush=True)

    if "timing" in args.only:
        policy = work / "bc_images"
        if not policy.exists():
            policy = work / "bc_state"
        if not policy.exists():
            train([demos50], policy, *state_args)
        row = evaluate(policy, 5, "--realtime")
        results["timing"] = {k: row[k] for k in ("policy", "episodes", "steps", "late_ticks", "held_ticks",
                                                 "ticks_on_time", "success_rate")}
        print(f"timing at 30 Hz: {row['ticks_on_time']:.2%} ticks on time, {row['held_ticks']} held "
              f"of {row['steps']}", flush=True)

    save(args.json, results)
    print(table(results))


def save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def table(r: dict[str, Any]) -> str:
    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.0f}%"

    def ci(x: Any) -> str:
        return "" if not x else f" ({100 * x[0]:.0f}-{100 * x[1]:.0f}%)"

    lines = ["| experiment | success | 95% interval | notes |", "|---|---|---|---|"]
    for key, label in (("state", "BC, state, 50 demos"), ("images", "BC, images 96x96, 50 demos")):
        if key in r:
            row = r[key]
            lines.append(f"| {label} | {pct(row['success_rate'])} | {ci(row['ci95'])} | "
                         f"train {row['train_s']} s, eval {row['eval_s']} s |")
    for row in r.get("dagger", []):
        lines.append(f"| DAgger round {row['round']} ({row['episodes']} episodes) | {pct(row['dagger'])} | "
                     f"{ci(row['dagger_ci95'])} | plain BC {pct(row['bc'])}{ci(row['bc_ci95'])}; "
                     f"expert steps {row['human_steps']} |")
    if "timing" in r:
        t = r["timing"]
        lines.append(f"| loop timing at 30 Hz ({t['policy']}) | {t['ticks_on_time']:.2%} on time | | "
                     f"held {t['held_ticks']} of {t['steps']} ticks, late {t['late_ticks']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
