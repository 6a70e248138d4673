"""Policy commands: ``train`` the reference behavioral-cloning policy and ``eval`` a policy's
closed-loop success rate in simulation. torch and MuJoCo are imported inside the handlers."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..errors import TelecorderError
from .arg_types import _positive_float, _size

TRAIN_EXAMPLES = """\
examples:
  # state-only policy (joint state + object pose), 3000 steps: a few minutes on a CPU
  telecorder train demos/ --out policies/bc_state

  # from the cameras (resized to 96x96) + joint state, chunks of 20 actions
  telecorder train demos/ --out policies/bc_images --obs images --cameras front,wrist --max-minutes 20

  # HG-DAgger: demonstrations plus intervention rollouts; human-labelled steps weigh 5x, policy
  # steps 1x (--policy-weight 0 keeps only the human-labelled steps)
  telecorder train demos/ rollouts1/ rollouts2/ --out policies/round2 --intervention-weight 5

  # the reference VLA (instruction + two cameras + state, transformer encoder) with a
  # flow-matching action expert, 30 minutes on a CPU; then per task on the cubes suite
  telecorder train multitask/ --policy vla --head flow --obs images --max-minutes 30 --out policies/vla_flow
  telecorder eval policies/vla_flow --scene cubes --tasks cubes --episodes-per-task 10 --execute-steps 3

  # autoregressive action tokens: 256 uniform bins per dimension (RT-2/OpenVLA) or FAST (pi0-FAST);
  # state-only (joint state + every object's pose): minutes on a CPU
  telecorder train multitask/ --policy vla --head bins --obs state --out policies/vla_bins_state
  telecorder train multitask/ --policy vla --head bins --bins quantile --obs state --out policies/vla_quantile

the folder gets policy.json (spec, normalizers, training summary) and model.safetensors (a VLA
also its tokenizers' files); 'collect --device policy' and 'telecorder eval' run it.
"""


EVAL_EXAMPLES = """\
examples:
  # success rate of a trained policy over 50 simulated episodes, with a 95% interval
  telecorder eval ckpt/ --robot sim --episodes 50 --seed 1000

  # keep the rollouts (a normal dataset: view it, or train on it) and print JSON
  telecorder eval ckpt/ --episodes 10 --out rollouts/ --json

  # your own policy class, at wall-clock pace as on hardware
  telecorder eval my_pkg.policies:make_policy --episodes 5 --realtime

  # per task on the three-cube scene: 10 episodes of each of the 18 tasks (episode k of every
  # task from the same scene), instructions from the held-out paraphrases, grounding per task
  telecorder eval ckpt/ --robot sim --scene cubes --tasks cubes --episodes-per-task 10 --paraphrases heldout

  # two tasks only (task ids or instructions), the rollouts kept as a dataset
  telecorder eval ckpt/ --scene cubes --tasks "pick_red;put the blue cube in the bin" --episodes-per-task 5 --out r/

  # does the instruction matter? the sim scores the asked task while the policy hears another
  # task's instruction (pick_red hears a pick_green one); the confusion matrix shows what moved
  telecorder eval ckpt/ --scene cubes --tasks cubes --episodes-per-task 10 --instructions wrong
"""


VLA_ONLY = {"head": "--head", "bins": "--bins", "flow_steps": "--flow-steps", "layers": "--layers",
            "width": "--width", "decoder_layers": "--decoder-layers", "paraphrase": "--paraphrase",
            "early_weight": "--early-weight"}


def _trainer(args: argparse.Namespace) -> tuple[object, dict[str, object]]:
    """The training function ``--policy`` names and its own defaults for the options left unset."""
    if args.policy == "bc":
        given = [flag for key, flag in VLA_ONLY.items() if getattr(args, key) is not None]
        if given:
            raise TelecorderError(f"{', '.join(given)}: option(s) of --policy vla; the BC policy has no such setting")
        from ..policies.train import DEFAULTS, train_bc

        return train_bc, {"steps": DEFAULTS["steps"], "horizon": DEFAULTS["horizon"], "lr": DEFAULTS["lr"]}
    from ..policies.vla.train import DEFAULTS as V
    from ..policies.vla.train import train_vla

    kw = {"steps": V["steps"], "horizon": V["horizon"], "lr": V["lr"], "head": args.head or "flow",
          "bins": args.bins or "uniform", "flow_steps": args.flow_steps or V["flow_steps"],
          "layers": args.layers or V["layers"], "width": args.width or V["width"],
          "decoder_layers": args.decoder_layers or V["decoder_layers"], "paraphrase": args.paraphrase or "random",
          "early_weight": args.early_weight or 1.0}
    if args.bins is not None and kw["head"] != "bins":
        raise TelecorderError(f"--bins applies to --head bins, not --head {kw['head']}")
    if args.flow_steps is not None and kw["head"] != "flow":
        raise TelecorderError(f"--flow-steps applies to --head flow, not --head {kw['head']}")
    return train_vla, kw


def _mixture_args(args: argparse.Namespace) -> dict[str, object]:
    """``--mixture``: the datasets, weights and names for the mixture trainer."""
    if args.mixture in ("steps", "uniform"):
        if len(args.dataset) < 1:
            raise TelecorderError("--mixture steps|uniform: give the datasets to mix")
        return {"dataset_paths": list(args.dataset), "weights": args.mixture, "names": None}
    from ..loaders.mixture_spec import read_mixture_file

    entries = read_mixture_file(args.mixture)
    if args.dataset:
        raise TelecorderError(f"--mixture {args.mixture} lists the datasets itself; leave them off the command line")
    return {"dataset_paths": [e.path for e in entries], "weights": [e.weight for e in entries],
            "names": [e.name for e in entries]}


def run_train(args: argparse.Namespace, console: Console) -> int:
    from rich import progress as rp

    mixture = _mixture_args(args) if args.mixture is not None else None
    if mixture is None and not args.dataset:
        raise TelecorderError("give the dataset folder(s) to train on (or --mixture FILE.json listing them)")
    train, defaults = _trainer(args)
    steps, horizon, lr = (defaults[k] if getattr(args, k) is None else getattr(args, k) for k in ("steps", "horizon", "lr"))
    extra = {k: v for k, v in defaults.items() if k not in ("steps", "horizon", "lr")}
    out = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise TelecorderError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    cameras = None if args.cameras is None else [c.strip() for c in args.cameras.split(",") if c.strip()]
    width, height = args.image_size
    with rp.Progress(rp.TextColumn("[bold]training"), rp.BarColumn(), rp.TextColumn("{task.completed}/{task.total}"),
                     rp.TextColumn("{task.fields[losses]}"), rp.TimeElapsedColumn(), rp.TimeRemainingColumn(),
                     console=console) as progress:
        task = progress.add_task("train", total=steps, losses="")

        def on_progress(step: int, total: int, loss: float, val_loss: float | None) -> None:
            if step % 10 and step != total:
                return
            text = f"loss {loss:.4f}" + ("" if val_loss is None else f"  val {val_loss:.4f}")
            progress.update(task, completed=step, total=total, losses=text)

        if mixture is not None:
            if args.cameras or args.intervention_weight is not None or args.policy_weight != 1.0:
                raise TelecorderError("--cameras, --intervention-weight and --policy-weight do not apply to --mixture")
            common = dict(
                **mixture, out_dir=args.out, obs=args.obs or "state", steps=steps, horizon=horizon,
                val_episodes=args.val_episodes, lr=lr, seed=args.seed,
                state_noise=args.state_noise, skip_nonfinite=args.skip_nonfinite, max_episodes=args.max_episodes,
                state_keys=None if args.state_keys is None else [k.strip() for k in args.state_keys.split(",")
                                                                 if k.strip()],
                on_progress=on_progress, overwrite=args.overwrite, num_threads=args.threads,
                max_minutes=args.max_minutes)
            if args.policy == "bc":
                from ..policies.train_mixture import train_bc_mixture

                summary = train_bc_mixture(**common, batch_size=args.batch_size or 256)
            else:
                from ..policies.vla.train_mixture import train_vla_mixture

                if args.early_weight is not None:
                    raise TelecorderError("--early-weight does not apply to --mixture")
                summary = train_vla_mixture(**common, batch_size=args.batch_size, **{
                    k: v for k, v in extra.items() if k in ("head", "flow_steps", "layers", "width", "decoder_layers",
                                                            "paraphrase")})
            _print_mixture(console, summary)
            return 0
        summary = train(  # type: ignore[operator]
            args.dataset, args.out, obs=args.obs or ("state" if args.policy == "bc" else "images"), steps=steps,
            horizon=horizon, val_episodes=args.val_episodes, batch_size=args.batch_size, lr=lr,
            image_size=(height, width),
            cameras=cameras, seed=args.seed, intervention_weight=args.intervention_weight,
            policy_weight=args.policy_weight, on_progress=on_progress, overwrite=args.overwrite,
            num_threads=args.threads, max_minutes=args.max_minutes, state_noise=args.state_noise,
            state_keys=None if args.state_keys is None else [k.strip() for k in args.state_keys.split(",") if k.strip()],
            skip_nonfinite=args.skip_nonfinite, max_episodes=args.max_episodes, **extra,
        )
    for root, bad in summary.get("skipped_nonfinite", {}).items():
        console.print(f"[yellow]left out[/] {len(bad)} episode(s) of {escape(str(root))} holding NaN/inf values "
                      f"(--skip-nonfinite): {escape(', '.join(bad))}", highlight=False)
    val = summary["final_val_loss"]
    console.print(
        f"trained {summary['steps']} steps on {summary['train_samples']} samples "
        f"({len(summary['train_episodes'])} episodes) in {summary['train_time_s']:.0f} s: train loss "
        f"{summary['initial_train_loss']:.4f} -> {summary['final_train_loss']:.4f}"
        + ("" if val is None else f", val loss {val:.4f} ({len(summary['val_episodes'])} episodes)")
        + f"; saved to {summary['out']}", highlight=False)
    if summary.get("policy") == "vla":
        tokens = summary.get("action_tokens_per_chunk")
        console.print(f"VLA, {summary['head']} head: {summary['parameters']:,} parameters, instruction vocabulary "
                      f"{summary['instruction_vocab']} pieces"
                      + ("" if not tokens else f", {tokens['mean']:.1f} action tokens per chunk (of "
                         f"{tokens['raw_values_per_chunk']} values)"), highlight=False)
    return 0


def _print_mixture(console: Console, summary: dict[str, object]) -> None:
    mix = summary["mixture"]
    parts = [f"{d['embodiment']} ({d['train_samples']} samples, weight {w:.2f})"
             for d, w in zip(mix["datasets"], mix["sampling_weights"], strict=True)]  # type: ignore[index]
    val = summary["final_val_loss"]
    console.print(f"trained {summary['steps']} steps on a mixture of {len(parts)} dataset(s): {'; '.join(parts)}; "
                  f"train loss {summary['initial_train_loss']:.4f} -> {summary['final_train_loss']:.4f}"
                  + ("" if val is None else f", val loss {val:.4f}") + f"; saved to {summary['out']}", highlight=False)


def run_eval(args: argparse.Namespace, console: Console) -> int:
    import json

    from ..evaluation import EvalConfig, evaluate

    if args.robot != "sim":
        raise TelecorderError("telecorder eval measures success in simulation: use --robot sim "
                              "(on hardware, run 'collect --device policy' and judge the episodes)")
    _check_task_options(args)
    randomize = frozenset(r.strip() for r in (args.randomize or "").split(",") if r.strip())
    cfg = EvalConfig(
        policy=args.policy, episodes=20 if args.episodes is None else args.episodes, seed=args.seed, out=args.out,
        robot_model=args.robot_model, episode_time_s=args.episode_time or (30.0 if args.tasks else 10.0),
        fps=args.fps, realtime=args.realtime,
        camera_size=args.camera_size, task=args.task, execute_steps=args.execute_steps, ensemble=args.ensemble,
        scene=args.scene, randomize=randomize, tasks=args.tasks,
        episodes_per_task=10 if args.episodes_per_task is None else args.episodes_per_task,
        paraphrases=args.paraphrases or "recorded", instructions=args.instructions or "asked",
    )
    if args.json:
        result = evaluate(cfg)
        print(json.dumps(result))
        return 0
    from rich.progress import Progress

    what = (f"{cfg.episodes_per_task} episodes of each task of --tasks {args.tasks}" if args.tasks
            else f"{cfg.episodes} episodes")
    with Progress(console=console, transient=True) as progress:
        progress.add_task(f"evaluating {args.policy} on {what}", total=None)
        result = evaluate(cfg)
    if args.tasks:
        _print_task_table(result, console)
        _print_confusion(result, console)
    lo, hi = result["ci95"]
    console.print(
        f"success rate {100 * result['success_rate']:.1f}% ({result['successes']}/{result['episodes']}), "
        f"95% interval {100 * lo:.1f}-{100 * hi:.1f}%; held ticks {result['held_ticks']} of {result['steps']}"
        + (f" ({result['invalid_chunks']} invalid chunk(s))" if result.get("invalid_chunks") else "")
        + (f"; rollouts in {result['rollouts']}" if result["rollouts"] else ""),
        highlight=False,
    )
    if result.get("inference_ms_p50") is not None:
        console.print(f"inference {result['inference_ms_p50']:.1f} ms p50, {result['inference_ms_p99']:.1f} ms p99 "
                      f"per chunk; {result['decisions_hz']:.1f} decisions/s at {result['fps']:g} Hz control",
                      highlight=False)
    return 0


def _check_task_options(args: argparse.Namespace) -> None:
    """Per-task options belong together: refuse a mix that would silently ignore one."""
    if args.tasks is None:
        for opt, value in (("--episodes-per-task", args.episodes_per_task), ("--paraphrases", args.paraphrases),
                           ("--instructions", args.instructions)):
            if value is not None:
                raise TelecorderError(f"{opt} goes with --tasks (e.g. --tasks cubes); without it, use --episodes")
        return
    if args.episodes is not None:
        raise TelecorderError("--episodes counts a single-task evaluation; with --tasks give --episodes-per-task N")
    if args.task is not None:
        raise TelecorderError("--task gives one instruction; with --tasks the instructions come from the task list")
    if args.episodes_per_task is not None and args.episodes_per_task < 1:
        raise TelecorderError("--episodes-per-task must be at least 1")


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.0f}%"


def _print_task_table(result: dict, console: Console) -> None:
    """Success (95% interval) and grounding per task and per family, then the mean over tasks."""
    from rich.table import Table

    table = Table(title=f"{result['policy']}: {result['episodes_per_task']} episode(s) per task, "
                        f"{result['paraphrases']} paraphrases, seed {result['seed']}")
    for col in ("task", "family", "n", "success", "95% CI", "grounding", "instructions"):
        table.add_column(col, justify="right" if col in ("n", "success", "grounding") else "left",
                         no_wrap=col != "instructions", min_width=12 if col == "instructions" else None)
    for tid, row in result["task_ids"].items():
        lo, hi = row["ci95"]
        texts = row["instructions"]
        table.add_row(tid, row["family"], str(row["episodes"]), _pct(row["success_rate"]),
                      f"{100 * lo:.0f}-{100 * hi:.0f}%", _pct(row["grounding"]),
                      texts[0] + (f" (+{len(texts) - 1})" if len(texts) > 1 else ""))
    table.add_section()
    for fam, row in result["families"].items():
        lo, hi = row["ci95"]
        table.add_row(f"[bold]{fam}[/]", fam, str(row["episodes"]), _pct(row["success_rate"]),
                      f"{100 * lo:.0f}-{100 * hi:.0f}%", _pct(row["grounding"]), f"{row['tasks']} task(s)")
    console.print(table)
    console.print(f"mean success over {len(result['task_ids'])} task(s) {_pct(result['success_rate'])}, grounding "
                  f"{_pct(result['grounding'])} ({result['wrong_object']} episode(s) moved another object)",
                  highlight=False)


def _print_confusion(result: dict, console: Console) -> None:
    """Which object moved for each asked object (and, with --instructions wrong, each heard one)."""
    from rich.table import Table

    mode = result.get("instructions", "asked")
    blocks = [("asked", result.get("confusion"))]
    if result.get("heard_confusion"):
        blocks.append(("heard", result["heard_confusion"]))
    for who, block in blocks:
        if not block or not block["rows"]:
            continue
        table = Table(title=f"{who} object (rows) x moved object (columns); the policy heard the "
                            f"{'asked' if mode == 'asked' else mode} instruction", title_justify="left")
        table.add_column(who)
        for col in block["cols"]:
            table.add_column(col, justify="right")
        for row, counts in zip(block["rows"], block["counts"], strict=True):
            table.add_row(row, *(str(c) for c in counts))
        console.print(table)
    if result.get("followed_heard") is not None:
        console.print(f"moved the heard object in {_pct(result['followed_heard'])} of the episodes", highlight=False)


def add_train_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("train", help="train the reference BC policy or the reference VLA on a dataset",
                       description="Train a policy that predicts chunks of actions and save a checkpoint folder; "
                       "whole episodes are held out for a validation loss. --policy bc (default): a small CNN + "
                       "MLP on the joint state and object pose (--obs state) or on camera frames and the joint "
                       "state (--obs images), L1 loss. --policy vla: a transformer over the instruction, image "
                       "tokens and a state token, with an action head: autoregressive 256-bin tokens (bins), "
                       "FAST tokens (fast), a flow-matching action expert (flow) or chunk regression (l1).",
                       epilog=TRAIN_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path, nargs="*",
                   help="dataset folder(s); several (demos + DAgger rollouts) train together under one normalization; "
                        "with --mixture, datasets of different robots")
    p.add_argument("--mixture", metavar="steps|uniform|FILE.json", default=None,
                   help="train one policy on datasets of different robots (action/state widths), each with its own "
                        "normalization, sampled by their steps, uniformly, or by the weights of a JSON file (Octo's "
                        "recipe: {\"demos/\": 1.0, \"bimanual/\": 0.5}, which may list the datasets itself); "
                        "--obs state; --policy bc, or --policy vla with --head l1 or flow")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to create")
    p.add_argument("--state-keys", metavar="A,B",
                   help="numeric features concatenated into the state (default: observation.state, plus "
                        "observation.environment_state for --obs state)")
    p.add_argument("--state-noise", type=float, default=0.05, metavar="SIGMA",
                   help="Gaussian noise on the normalized state in training, for robustness to the policy's own "
                        "drift (default 0.05; 0 turns it off)")
    p.add_argument("--max-minutes", type=_positive_float, default=None,
                   help="wall-clock budget: fewer steps if --steps would not fit (loading included)")
    p.add_argument("--obs", choices=["state", "images"], default=None,
                   help="what the policy sees: state (observation.state + observation.environment_state; the BC "
                        "default) or images (cameras + observation.state; the VLA default)")
    p.add_argument("--policy", choices=["bc", "vla"], default="bc", help="which model (default bc)")
    p.add_argument("--head", choices=["bins", "fast", "flow", "l1"], default=None,
                   help="--policy vla: the action head (default flow)")
    p.add_argument("--bins", choices=["uniform", "quantile"], default=None,
                   help="--head bins: 256 uniform bins over [-1, 1] (RT-2/OpenVLA; default) or quantile bins")
    p.add_argument("--flow-steps", type=int, default=None, help="--head flow: Euler steps at inference (default 10)")
    p.add_argument("--layers", type=int, default=None, help="--policy vla: encoder layers (default 3)")
    p.add_argument("--decoder-layers", type=int, default=None,
                   help="--policy vla: layers of the action expert / token decoder (default 2)")
    p.add_argument("--width", type=int, default=None, help="--policy vla: model width (default 128)")
    p.add_argument("--paraphrase", choices=["recorded", "random"], default=None,
                   help="--policy vla: each training sample's instruction as recorded, or one of its task's "
                        "recorded paraphrases (default random)")
    p.add_argument("--early-weight", type=_positive_float, default=None, metavar="W",
                   help="--policy vla: sample the first second of every episode W times as often (default 1). "
                        "There only the instruction tells tasks apart; later the arm's own motion gives the target "
                        "away and a model learns to follow it instead of the words")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 3000 bc, 4000 vla)")
    p.add_argument("--horizon", type=int, default=None, help="actions predicted per chunk (default 20 bc, 10 vla)")
    p.add_argument("--max-episodes", type=int, default=None,
                   help="train on the first N usable episodes of the (first) dataset only, e.g. for a data-efficiency "
                        "curve (default: all)")
    p.add_argument("--val-episodes", type=int, default=None,
                   help="episodes held out (the last by number) for the validation loss (default 10%%)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default 256 (state) or 64 (images) for bc, 128 or 32 for vla")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="peak AdamW learning rate (default 1e-3 bc, 5e-4 vla)")
    p.add_argument("--image-size", type=_size, default=(96, 96), metavar="WxH",
                   help="camera frames are resized to this (default 96x96)")
    p.add_argument("--cameras", default=None, help="comma-separated cameras for --obs images (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization and sampling (default 0)")
    p.add_argument("--intervention-weight", type=float, default=None,
                   help="sampling weight of human-labelled steps of intervention episodes (default 1)")
    p.add_argument("--policy-weight", type=float, default=1.0,
                   help="sampling weight of policy-acted steps (default 1; 0 drops them)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default 1 for --obs state, 2 for --obs images)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    p.add_argument("--skip-nonfinite", action="store_true",
                   help="leave out episodes whose state or action holds NaN/inf (default: refuse, naming the first)")
    p.set_defaults(func=run_train)


def add_eval_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("eval", help="closed-loop success rate of a policy in simulation",
                       description="Run a policy in closed loop through 'collect --device policy' on the sim "
                       "and print its success rate with a 95% (Wilson) interval.",
                       epilog=EVAL_EXAMPLES, formatter_class=fmt)
    p.add_argument("policy", help="checkpoint folder ('telecorder train' output) or module:factory")
    p.add_argument("--robot", default="sim", help="sim (the only robot that can tell success)")
    p.add_argument("--robot-model", type=Path, help="MJCF of your own arm (needs the task cube to score)")
    p.add_argument("--episodes", type=int, default=None, help="episodes to run (default 20; not with --tasks)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scene randomization (default 0)")
    p.add_argument("--out", type=Path, help="keep the rollouts as a dataset here (default: discarded)")
    p.add_argument("--episode-time", type=_positive_float, default=None,
                   help="time limit per episode in s (default 10; 30 with --tasks, whose placing tasks take longer)")
    p.add_argument("--fps", type=_positive_float, default=None, help="control rate (default: the policy's)")
    p.add_argument("--realtime", action="store_true", help="pace by the wall clock (default: simulated time)")
    p.add_argument("--camera-size", type=_size, default=None, help="sim camera size (default: the policy's)")
    p.add_argument("--task", default=None, help="language instruction given to the policy")
    p.add_argument("--execute-steps", type=int, default=None, help="actions of each chunk to run")
    p.add_argument("--ensemble", type=float, default=None, metavar="M", help="ACT temporal ensembling")
    p.add_argument("--scene", choices=["pick", "cubes", "bimanual"], default=None,
                   help="sim scene: pick (one cube, the default), cubes (three cubes and a bin; the default "
                        "with --tasks cubes) or bimanual (two arms hand a cube from left to right)")
    p.add_argument("--randomize", default=None, metavar="A,B",
                   help="seeded scene randomization at every reset: lighting, colors, camera")
    p.add_argument("--tasks", default=None, metavar="SPEC",
                   help="evaluate per task: a task suite (cubes), or ';'-separated task ids and instructions of it")
    p.add_argument("--episodes-per-task", type=int, default=None, metavar="N",
                   help="episodes of each task with --tasks (default 10); episode k of every task has the same scene")
    p.add_argument("--paraphrases", choices=["recorded", "heldout"], default=None,
                   help="with --tasks: instructions from the paraphrases used for recording (default) or the "
                        "held-out ones, cycled over a task's episodes")
    p.add_argument("--instructions", choices=["asked", "wrong", "blank"], default=None,
                   help="with --tasks: what the policy hears while the sim scores the asked task: its instruction "
                        "(default), another task's (same family, next object) or an empty one")
    p.add_argument("--json", action="store_true", help="print one JSON object (success_rate, episodes, ...; with "
                   "--tasks also grounding, tasks, task_ids, families, instructions, confusion)")
    p.set_defaults(func=run_eval)
