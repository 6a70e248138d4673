"""Multi-task benchmark: the cubes scene's experts, multi-task recording, and per-task evaluation.

1. Expert success per task: the scripted expert of each of the 18 ``cubes`` tasks on seeds
   0..49 (``run_expert_episode``; target >= 98% per task).
2. Recording: ``collect --scene cubes --tasks cubes --task-order balanced`` with the scripted
   expert, ``--no-realtime`` and two 96x96 cameras, 100 episodes: episodes per minute, and the
   time to record the dataset on simulated time against real time. Real time is estimated, not
   run (it would take the whole simulated duration): the simulated seconds of the episodes plus
   the 2 s reset pause a wall-clock session waits between episodes.
3. Per-task evaluation: the expert as a ``module:factory`` policy
   (``benchmarks.task_policies:expert``) through ``telecorder eval --tasks cubes``, per task
   against the expert's own success in (1): it must score like the recording.

Results go to ``benchmarks/results/tasks.json`` and Markdown tables are printed.

    python benchmarks/tasks.py           # everything (about 8 minutes on 2 cores)
    python benchmarks/tasks.py --quick   # 5 seeds per task, 18 recorded episodes, 1 eval episode per task
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
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESET_PAUSE_S = 2.0  # collect's default --reset-time: the pause between episodes on the wall clock
EVAL_SEED = 1000


def sh(*args: Any) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-2000:]}")
    return proc.stdout


def expert_success(seeds: int) -> dict[str, Any]:
    """Each task's expert on seeds 0..seeds-1, in-process (the same code the scripted device runs)."""
    from telecorder.sim.env import SimEnv
    from telecorder.sim.scenes import scene_model
    from telecorder.sim.task_expert import run_expert_episode
    from telecorder.sim.tasks import get_suite

    suite = get_suite("cubes")
    env = SimEnv(scene_model("cubes"))
    rows: dict[str, Any] = {}
    t0 = time.perf_counter()
    for task in suite.tasks:
        t1 = time.perf_counter()
        ok = [bool(run_expert_episode(env, task, seed)) for seed in range(seeds)]
        rows[task.task_id] = {"family": task.family, "episodes": seeds, "successes": sum(ok),
                              "success_rate": sum(ok) / seeds, "failed_seeds": [s for s, g in enumerate(ok) if not g],
                              "seconds": round(time.perf_counter() - t1, 1)}
        print(f"expert {task.task_id}: {sum(ok)}/{seeds}", flush=True)
    return {"seeds": seeds, "tasks": rows, "seconds": round(time.perf_counter() - t0, 1)}


def recording(episodes: int, work: Path) -> dict[str, Any]:
    """A balanced multi-task dataset with the scripted expert on simulated time, two 96x96 cameras."""
    out = work / "multitask"
    t0 = time.perf_counter()
    sh(BIN / "collect", "--device", "scripted", "--robot", "sim", "--scene", "cubes", "--tasks", "cubes",
       "--task-order", "balanced", "--no-realtime", "--sim-cameras", "front,wrist", "--camera-size", "96x96",
       "--episodes", str(episodes), "--episode-time", "30", "--seed", "0", "--out", out)
    wall = time.perf_counter() - t0
    index = [json.loads(line) for line in (out / "meta" / "episodes.jsonl").read_text().splitlines() if line.strip()]
    simulated = sum(float(r.get("duration_s") or 0.0) for r in index)
    per_task: dict[str, int] = {}
    for r in index:
        key = str(r.get("task_id") or r.get("task"))
        per_task[key] = per_task.get(key, 0) + 1
    realtime_est = simulated + RESET_PAUSE_S * max(0, len(index) - 1)
    return {
        "episodes": len(index),
        "successes": sum(1 for r in index if r.get("success")),
        "wall_s": round(wall, 1),
        "episodes_per_minute": round(60 * len(index) / wall, 1),
        "simulated_s": round(simulated, 1),
        "realtime_estimate_s": round(realtime_est, 1),
        "realtime_is_estimate": True,
        "speedup": round(realtime_est / wall, 1) if wall > 0 else None,
        "episodes_per_task": per_task,
        "cameras": "front, wrist at 96x96",
    }


def evaluation(episodes_per_task: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = json.loads(sh(BIN / "telecorder", "eval", "benchmarks.task_policies:expert", "--robot", "sim",
                           "--scene", "cubes", "--tasks", "cubes", "--episodes-per-task", str(episodes_per_task),
                           "--episode-time", "30", "--seed", str(EVAL_SEED), "--json").strip().splitlines()[-1])
    result["eval_s"] = round(time.perf_counter() - t0, 1)
    return result


def pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def tables(r: dict[str, Any]) -> str:
    lines: list[str] = []
    experts = r.get("experts", {}).get("tasks", {})
    ev = r.get("eval", {})
    if experts or ev:
        n = r.get("experts", {}).get("seeds", "-")
        k = ev.get("episodes_per_task", "-")
        lines += [f"| task | family | expert ({n} seeds) | eval through `telecorder eval` ({k} per task) | "
                  "95% interval | grounding |", "|---|---|---|---|---|---|"]
        by_id = ev.get("task_ids", {})
        for tid in dict.fromkeys([*experts, *by_id]):
            e, v = experts.get(tid, {}), by_id.get(tid, {})
            ci = v.get("ci95")
            lines.append(f"| {tid} | {e.get('family') or v.get('family')} | {pct(e.get('success_rate'))} | "
                         f"{pct(v.get('success_rate'))} | {'' if not ci else f'{100 * ci[0]:.0f}-{100 * ci[1]:.0f}%'}"
                         f" | {pct(v.get('grounding'))} |")
        if ev:
            lines.append(f"| **mean** | | {pct(_mean(experts))} | **{pct(ev.get('success_rate'))}** | | "
                         f"{pct(ev.get('grounding'))} |")
        lines.append("")
    if ev.get("families"):
        lines += ["| family | tasks | eval success | 95% interval | grounding |", "|---|---|---|---|---|"]
        for fam, row in ev["families"].items():
            lo, hi = row["ci95"]
            lines.append(f"| {fam} | {row['tasks']} | {pct(row['success_rate'])} | {100 * lo:.0f}-{100 * hi:.0f}% | "
                         f"{pct(row['grounding'])} |")
        lines.append("")
    rec = r.get("recording")
    if rec:
        lines += ["| recording (scripted expert, two 96x96 cameras) | value |", "|---|---|",
                  f"| episodes (successful) | {rec['episodes']} ({rec['successes']}) |",
                  f"| `--no-realtime`: wall time | {rec['wall_s']:.0f} s ({rec['episodes_per_minute']} episodes/min) |",
                  f"| real time (estimated: simulated time + 2 s resets) | {rec['realtime_estimate_s']:.0f} s |",
                  f"| speed-up | {rec['speedup']}x |", ""]
    return "\n".join(lines)


def _mean(rows: dict[str, Any]) -> float | None:
    rates = [row["success_rate"] for row in rows.values()]
    return sum(rates) / len(rates) if rates else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 seeds per task, 18 recorded episodes, 1 eval episode each")
    ap.add_argument("--only", nargs="+", choices=("experts", "recording", "eval"),
                    default=["experts", "recording", "eval"])
    ap.add_argument("--seeds", type=int, default=None, help="expert seeds per task (default 50; --quick 5)")
    ap.add_argument("--episodes", type=int, default=None, help="recorded episodes (default 100; --quick 18)")
    ap.add_argument("--eval-episodes", type=int, default=None, help="eval episodes per task (default 10; --quick 1)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/tasks.json")
    args = ap.parse_args()
    seeds = args.seeds or (5 if args.quick else 50)
    episodes = args.episodes or (18 if args.quick else 100)
    per_task = args.eval_episodes or (1 if args.quick else 10)
    results: dict[str, Any] = {"quick": args.quick, "machine_cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="telecorder-tasks-") as tmp:
        if "experts" in args.only:
            results["experts"] = expert_success(seeds)
            save(args.json, results)
        if "recording" in args.only:
            results["recording"] = recording(episodes, Path(tmp))
            save(args.json, results)
            rec = results["recording"]
            print(f"recorded {rec['episodes']} episodes in {rec['wall_s']} s ({rec['episodes_per_minute']}/min); "
                  f"real time would take ~{rec['realtime_estimate_s']} s (estimated)", flush=True)
        if "eval" in args.only:
            results["eval"] = evaluation(per_task)
            save(args.json, results)
    print(tables(results))


def save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
