"""The reference VLA on the cubes suite: every head trained from our loaders, evaluated per task.

Every step is the CLI a user runs (``collect``, ``telecorder train --policy vla``, ``telecorder eval``):

1. Data: ``collect --device scripted --scene cubes --tasks cubes --task-order balanced`` records
   ``--demos`` demonstrations (recorded paraphrases, two 96x96 cameras, every object's pose), and
   50 single-task ``pick`` demonstrations for the single-task anchor.
2. Per head (``--heads``) and observation (``--obs``): ``telecorder train --policy vla --head H``
   (images: within ``--minutes``; state: ``--state-steps``), then ``telecorder eval --scene cubes
   --tasks cubes --episodes-per-task N`` on reset seeds no demonstration used (``--seed 1000``),
   with recorded and with held-out paraphrases: mean success over tasks, grounding, per family,
   inference time per chunk (p50/p99), decisions per second, held ticks, invalid chunks, and the
   tokens per chunk of ``bins`` vs ``fast``.
3. The instruction must matter: the best checkpoint hears another task's instruction
   (``--instructions wrong``) and an empty one (``blank``) on the same seeds; confusion matrices.
4. Data efficiency: the best head trained on the first 50 / 100 demonstrations too.
5. Single task: each head on 50 ``pick`` demonstrations, 50 evaluation episodes (the anchor of
   ``benchmarks/bc.py``: our BC 92%, LeRobot's ACT 35%).
6. Wall clock: the best checkpoint at 30 Hz on the wall clock (``--realtime``) for a few episodes:
   ticks on time and held ticks with the model in the loop.
7. Paired layouts: the three pick tasks recorded on the same 20 layouts (one session per task,
   same ``--seed``), a state-only ``l1`` VLA with 1-s chunks, evaluated on those layouts with the
   asked, a wrong and a blank instruction, and on 20-per-task layouts never seen.

Results go to ``benchmarks/results/vla.json`` (saved after every run) and Markdown tables are printed.

    python benchmarks/vla.py --obs state                 # the state-only variants (about an hour on 2 cores)
    python benchmarks/vla.py --obs images --minutes 30   # the image variants (2-3 hours per head incl. eval)
    python benchmarks/vla.py --only tables               # print the tables of the saved results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEADS = ("bins", "fast", "flow", "l1")
PARTS = ("heads", "instructions", "efficiency", "single", "realtime", "paired", "tables")
COLOURS = ("red", "green", "blue")
EVAL_SEED = 1000
# Success is measured executing whole chunks (10 actions, 3 decisions per second at 30 Hz): the
# scripted expert starts every motion slowly from rest, and a policy that executes only the first 3
# actions of a chunk predicted at rest (all within a 256-bin token of the resting pose, or nearly so
# for the continuous heads) stays at rest. The 10-decisions-per-second loop is measured on the wall
# clock with --execute-steps 3 (part "realtime").
EXECUTE_STEPS = 10
REALTIME_EXECUTE_STEPS = 3


def sh(*args: Any) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-2000:]}")
    return proc.stdout


def record(out: Path, episodes: int, *, cubes: bool = True) -> Path:
    if (out / "meta" / "info.json").exists():
        return out
    scene = ["--scene", "cubes", "--tasks", "cubes", "--task-order", "balanced", "--episode-time", "30"] if cubes \
        else ["--task", "pick up the cube", "--episode-time", "10"]
    sh(BIN / "collect", "--device", "scripted", "--robot", "sim", *scene, "--no-realtime", "--env-state",
       "--sim-cameras", "front,wrist", "--camera-size", "96x96", "--episodes", str(episodes), "--seed", "0",
       "--out", out)
    return out


def train(data: Path, out: Path, head: str, obs: str, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    if not (out / "policy.json").exists():
        budget = ["--max-minutes", str(args.minutes), "--steps", "100000"] if obs == "images" \
            else ["--steps", str(args.state_steps)]
        sh(BIN / "telecorder", "train", data, "--policy", "vla", "--head", head, "--obs", obs, "--out", out,
           "--overwrite", "--layers", str(args.layers), "--early-weight", str(args.early_weight), *budget, *extra)
    t = json.loads((out / "policy.json").read_text())["training"]
    keep = ("parameters", "steps", "steps_per_s", "train_time_s", "wall_time_s", "final_train_loss", "final_val_loss",
            "action_tokens_per_chunk", "instruction_vocab", "train_samples", "max_minutes")
    return {k: t.get(k) for k in keep}


def evaluate(policy: Path, *extra: str, tasks: bool = True) -> dict[str, Any]:
    t0 = time.perf_counter()
    scope = ["--scene", "cubes", "--tasks", "cubes"] if tasks else []
    execute = [] if "--execute-steps" in extra else ["--execute-steps", str(EXECUTE_STEPS)]
    out = json.loads(sh(BIN / "telecorder", "eval", policy, "--robot", "sim", *scope, "--seed", str(EVAL_SEED),
                        *execute, "--json", *extra).strip().splitlines()[-1])
    out["eval_s"] = round(time.perf_counter() - t0, 1)
    out.pop("per_episode", None)
    out.pop("reset_seeds", None)
    return out


def summary(ev: dict[str, Any]) -> dict[str, Any]:
    keys = ("success_rate", "ci95", "grounding", "wrong_object", "families", "task_ids", "episodes", "held_ticks",
            "invalid_chunks", "inference_ms_p50", "inference_ms_p99", "decisions_hz", "steps", "eval_s", "confusion",
            "heard_confusion", "followed_heard", "ticks_on_time", "late_ticks")
    return {k: ev.get(k) for k in keys if k in ev}


def best_key(results: dict[str, Any], obs: str) -> str | None:
    rows = {k: v for k, v in results.get("heads", {}).items() if k.endswith(f"/{obs}") and "recorded" in v}
    return max(rows, key=lambda k: rows[k]["recorded"]["success_rate"]) if rows else None


def pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def tables(r: dict[str, Any]) -> str:
    lines = ["| head | obs | params | train | success (recorded) | 95% interval | grounding | held-out paraphrases | "
             "inference p50 / p99 | decisions/s | invalid chunks | tokens/chunk |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in r.get("heads", {}).items():
        head, obs = key.split("/")
        t, rec, held = row.get("train", {}), row.get("recorded", {}), row.get("heldout", {})
        ci = rec.get("ci95")
        tok = t.get("action_tokens_per_chunk")
        tokens = "" if not tok else f"{tok['mean']:.1f} of {tok['raw_values_per_chunk']}"
        lines.append(
            f"| {head} | {obs} | {t.get('parameters', 0) / 1e6:.2f} M | {t.get('steps')} steps, "
            f"{(t.get('wall_time_s') or 0) / 60:.0f} min | **{pct(rec.get('success_rate'))}** | "
            f"{'' if not ci else f'{100 * ci[0]:.0f}-{100 * ci[1]:.0f}%'} | {pct(rec.get('grounding'))} | "
            f"{pct(held.get('success_rate'))} (grounding {pct(held.get('grounding'))}) | "
            f"{rec.get('inference_ms_p50', '-')} / {rec.get('inference_ms_p99', '-')} ms | "
            f"{rec.get('decisions_hz', '-')} | {rec.get('invalid_chunks', '-')} | "
            f"{tokens} |")
    lines.append("")
    fam_rows = [(k, row["recorded"]["families"]) for k, row in r.get("heads", {}).items()
                if row.get("recorded", {}).get("families")]
    if fam_rows:
        fams = list(fam_rows[0][1])
        lines += ["| head / obs | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
        lines += [f"| {k} | " + " | ".join(pct(f.get(x, {}).get("success_rate")) for x in fams) + " |"
                  for k, f in fam_rows]
        lines.append("")
    ins = r.get("instructions")
    if ins:
        lines += [f"Instruction ablation of {ins['checkpoint']} (success of the asked task, same seeds):", "",
                  "| instruction heard | success | grounding (moved the asked object) | moved the heard object |",
                  "|---|---|---|---|"]
        for mode in ("asked", "wrong", "blank"):
            row = ins.get(mode)
            if row:
                lines.append(f"| {mode} | {pct(row.get('success_rate'))} | {pct(row.get('grounding'))} | "
                             f"{pct(row.get('followed_heard'))} |")
        lines.append("")
        for mode in ("asked", "wrong", "blank"):
            conf = (ins.get(mode) or {}).get("heard_confusion" if mode == "wrong" else "confusion")
            if conf:
                title = "heard" if mode == "wrong" else "asked"
                lines += [f"{mode}: {title} object (rows) vs moved object (columns)", "",
                          "| | " + " | ".join(conf["cols"]) + " |", "|---|" + "---|" * len(conf["cols"])]
                lines += [f"| {row} | " + " | ".join(str(c) for c in counts) + " |"
                          for row, counts in zip(conf["rows"], conf["counts"], strict=False)]
                lines.append("")
    eff = r.get("efficiency")
    if eff:
        lines += [f"Data efficiency of {eff['head']} ({eff['obs']}):", "", "| demos | success | grounding |",
                  "|---|---|---|"]
        lines += [f"| {n} | {pct(row.get('success_rate'))} | {pct(row.get('grounding'))} |"
                  for n, row in eff["rows"].items()]
        lines.append("")
    single = r.get("single")
    if single:
        lines += ["Single task (pick, 50 demos, 50 episodes):", "", "| head | obs | success | 95% interval |",
                  "|---|---|---|---|"]
        for key, row in single.items():
            head, obs = key.split("/")
            ci = row.get("ci95") or [0, 0]
            lines.append(f"| {head} | {obs} | {pct(row.get('success_rate'))} | {100 * ci[0]:.0f}-{100 * ci[1]:.0f}% |")
        lines.append("")
    pr = r.get("paired")
    if pr:
        lines += [f"Paired layouts (pick red/green/blue, {pr['demos']} demonstrations on {pr['layouts']} layouts, "
                  "state-only l1, 1-s chunks):", "", "| evaluated on | instruction heard | success | grounding | "
                  "moved the heard cube |", "|---|---|---|---|---|"]
        for key, label in (("recorded_layouts_asked", ("recorded layouts", "asked")),
                           ("recorded_layouts_wrong", ("recorded layouts", "wrong")),
                           ("recorded_layouts_blank", ("recorded layouts", "blank")),
                           ("new_layouts", ("new layouts", "asked"))):
            row = pr.get(key) or {}
            lines.append(f"| {label[0]} | {label[1]} | {pct(row.get('success_rate'))} | {pct(row.get('grounding'))} | "
                         f"{pct(row.get('followed_heard'))} |")
        lines.append("")
    rt = r.get("realtime")
    if rt:
        lines += [f"Wall clock, {rt['checkpoint']} at 30 Hz, a chunk every {REALTIME_EXECUTE_STEPS} ticks: ticks on time "
                  f"{pct(rt.get('ticks_on_time'))}, held ticks {rt.get('held_ticks')} of {rt.get('steps')}, "
                  f"inference p50/p99 {rt.get('inference_ms_p50')}/{rt.get('inference_ms_p99')} ms, "
                  f"{rt.get('decisions_hz')} decisions/s.", ""]
    return "\n".join(lines)


def paired(work: Path, layouts: int = 20) -> dict[str, Any]:
    """The pick tasks on shared layouts: does the policy read the instruction where only it differs?"""
    demos = []
    for colour in COLOURS:
        demos.append(work / f"paired_{colour}")
        if not (demos[-1] / "meta" / "info.json").exists():
            sh(BIN / "collect", "--device", "scripted", "--robot", "sim", "--scene", "cubes", "--tasks",
               f"pick up the {colour} cube", "--no-realtime", "--sim-cameras", "none", "--env-state",
               "--episodes", str(layouts), "--episode-time", "10", "--seed", "0", "--out", demos[-1])
    ckpt = work / "vla_l1_paired"
    if not (ckpt / "policy.json").exists():
        sh(BIN / "telecorder", "train", *demos, "--policy", "vla", "--head", "l1", "--obs", "state", "--steps", "2000",
           "--horizon", "30", "--layers", "2", "--early-weight", "5", "--val-episodes", "0", "--out", ckpt)
    tasks = ["--tasks", "pick_red;pick_green;pick_blue", "--episode-time", "10"]
    out: dict[str, Any] = {"layouts": layouts, "demos": 3 * layouts}
    for mode in ("asked", "wrong", "blank"):
        out[f"recorded_layouts_{mode}"] = summary(evaluate(ckpt, *tasks, "--episodes-per-task", "6", "--seed", "0",
                                                           "--instructions", mode))
    out["new_layouts"] = summary(evaluate(ckpt, *tasks, "--episodes-per-task", "10"))
    return out


def save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    ap.add_argument("--obs", nargs="+", choices=("state", "images"), default=["state"])
    ap.add_argument("--demos", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget of an image model")
    ap.add_argument("--state-steps", type=int, default=3000)
    ap.add_argument("--layers", type=int, default=3, help="encoder layers")
    ap.add_argument("--early-weight", type=float, default=5.0)
    ap.add_argument("--episodes-per-task", type=int, default=10)
    ap.add_argument("--paraphrases", nargs="+", choices=("recorded", "heldout"), default=["recorded", "heldout"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/telecorder-vla"), help="datasets and checkpoints")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/vla.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {}
    results.update({"machine_cores": os.cpu_count(), "eval_seed": EVAL_SEED, "execute_steps": EXECUTE_STEPS,
                    "episodes_per_task": args.episodes_per_task, "demos": args.demos, "state_steps": args.state_steps,
                    "layers": args.layers, "early_weight": args.early_weight, "image_minutes": args.minutes})
    per_task = ["--episodes-per-task", str(args.episodes_per_task)]
    if set(args.only) - {"tables", "single"}:
        data = record(args.work / f"cubes{args.demos}", args.demos)
    if "heads" in args.only:
        for obs in args.obs:
            for head in args.heads:
                key = f"{head}/{obs}"
                ckpt = args.work / f"vla_{head}_{obs}"
                row = results.setdefault("heads", {}).setdefault(key, {})
                row["train"] = train(data, ckpt, head, obs, args)
                for split in args.paraphrases:
                    row[split] = summary(evaluate(ckpt, *per_task, "--paraphrases", split))
                    save(args.json, results)
                    print(f"{key} {split}: {pct(row[split]['success_rate'])} grounding "
                          f"{pct(row[split]['grounding'])}", flush=True)
    best = {obs: best_key(results, obs) for obs in args.obs}
    if "instructions" in args.only and best.get(args.obs[0]):
        key = best[args.obs[0]]
        head, obs = key.split("/")
        ckpt = args.work / f"vla_{head}_{obs}"
        ins: dict[str, Any] = {"checkpoint": key, "asked": results["heads"][key]["recorded"]}
        for mode in ("wrong", "blank"):
            ins[mode] = summary(evaluate(ckpt, *per_task, "--instructions", mode))
            results["instructions"] = ins
            save(args.json, results)
    if "efficiency" in args.only and best.get(args.obs[0]):
        key = best[args.obs[0]]
        head, obs = key.split("/")
        eff: dict[str, Any] = {"head": head, "obs": obs, "rows": {}}
        for n in (50, 100):
            ckpt = args.work / f"vla_{head}_{obs}_{n}"
            train(data, ckpt, head, obs, args, "--max-episodes", str(n))
            eff["rows"][str(n)] = summary(evaluate(ckpt, *per_task))
            results["efficiency"] = eff
            save(args.json, results)
        eff["rows"][str(args.demos)] = results["heads"][key]["recorded"]
        save(args.json, results)
    if "single" in args.only:
        pick = record(args.work / "pick50", 50, cubes=False)
        for obs in args.obs:
            for head in args.heads:
                ckpt = args.work / f"vla_{head}_{obs}_pick"
                train(pick, ckpt, head, obs, args)
                row = summary(evaluate(ckpt, "--episodes", "50", tasks=False))
                results.setdefault("single", {})[f"{head}/{obs}"] = row
                save(args.json, results)
    if "paired" in args.only:
        results["paired"] = paired(args.work)
        save(args.json, results)
    if "realtime" in args.only and best.get(args.obs[0]):
        key = best[args.obs[0]]
        head, obs = key.split("/")
        rt = summary(evaluate(args.work / f"vla_{head}_{obs}", "--episodes-per-task", "1", "--realtime",
                              "--execute-steps", str(REALTIME_EXECUTE_STEPS),
                              "--tasks", "pick_red;bin_green;stack_blue_on_red"))
        results["realtime"] = {"checkpoint": key, **rt}
        save(args.json, results)
    print(tables(results))


if __name__ == "__main__":
    main()
