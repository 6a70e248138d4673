"""Data-format commands: ``convert`` between native, RLDS/OXE, LeRobot, ALOHA and robomimic, and
``tokenizer`` (fit and measure FAST action tokenizers)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from ..errors import TelecorderError
from .arg_types import _positive_float, _positive_int, _size

if TYPE_CHECKING:
    from ..converters.transform import ConvertOptions

CONVERT_EXAMPLES = """\
examples:
  telecorder convert demos/ demos_rlds/ --to rlds                 # TFDS/RLDS, readable by tfds.builder_from_directory
  telecorder convert demos/ demos_oxe/ --to oxe --image-size 256x256 --cameras front:image,wrist:wrist_image
  telecorder convert demos/ demos_oxe/ --to oxe --val-fraction 0.1 --binarize-gripper  # Octo/OpenVLA: train + val
  telecorder convert demos/ demos_lerobot/ --to lerobot --codec av1 --workers 2
  telecorder convert lerobot_ds/ native/ --to native --episodes 0-9,15 --skip-bad
  telecorder convert lerobot_ds/ native/ --to native --cameras cam_high --skip-missing-cameras
  telecorder convert episodes_hdf5/ demos/ --to native --from aloha --fps 30
  telecorder convert demos/ act_data/ --to aloha --fps 50 --episode-length 400   # ACT: 50 Hz, equal lengths
  telecorder convert bimanual/ act_data/ --to aloha --camera-map top=top     # keep ACT sim's camera name
  telecorder convert single/ bimanual/ mix_oxe/ --to oxe --mixture weights.json  # Octo make_interleaved_dataset
  telecorder convert demos/ rm/ --to robomimic             # actions scaled into [-1, 1], statistics stored
  telecorder convert demos/ demos_rlds/ --to rlds --workers 2        # shards written in parallel, merged
  telecorder convert demos/ demos_rlds/ --to rlds --runner beam --beam-options '--direct_num_workers=2'

formats: native, rlds, oxe (write only), lerobot (v2.0/v2.1/v3.0 in, v3.0 out), aloha, robomimic.
"""


TOKENIZER_EXAMPLES = """\
examples:
  telecorder tokenizer fit demos/ --kind fast --chunk-seconds 1 --out tok/
  telecorder tokenizer report demos/ --tokenizer tok/
  telecorder tokenizer report demos/ --tokenizer tok/ --json
"""


def run_convert(args: argparse.Namespace, console: Console) -> int:
    sources: list[Path] = list(args.src)
    if len(sources) > 1 or args.mixture is not None:
        return _run_mixture(args, console, sources)
    _convert_one(args, console, sources[0], args.dst, _options(args, sources))
    return 0


def _options(args: argparse.Namespace, sources: list[Path]) -> ConvertOptions:
    from ..converters.pipeline import ConvertOptions, parse_cameras, parse_episode_ranges
    from ..converters.transform import parse_camera_map

    writer_options = {k: v for k, v in {
        "codec": args.codec, "file_format": args.file_format, "compress": args.compress or None,
        "action_space": args.action_space, "robot_model": args.robot_model,
        "language_embeddings": args.language_embeddings,
        "binarize_gripper": True if args.binarize_gripper else None,
        "episode_length": args.episode_length, "actions": args.robomimic_actions, "sim": args.aloha_sim,
    }.items() if v is not None}
    if args.episode_length is not None and args.to != "aloha":
        raise TelecorderError("--episode-length: only ALOHA output (--to aloha) has fixed-length episodes")
    if args.aloha_sim is not None and args.to != "aloha":
        raise TelecorderError("--aloha-sim/--no-aloha-sim: only for ALOHA output (--to aloha)")
    if args.beam_options and args.runner != "beam":
        raise TelecorderError("--beam-options: add --runner beam")
    if args.robomimic_actions is not None and args.to != "robomimic":
        raise TelecorderError("--robomimic-actions: only for robomimic output (--to robomimic)")
    reader_options: dict[str, object] = {"tabular_only": True} if args.tabular_only else {}
    if args.strict_timestamps:
        reader_options["strict_timestamps"] = True
    if args.exclude_bad:
        from ..converters import detect_format

        if any((getattr(args, "from") or detect_format(src)) != "native" for src in sources):
            raise TelecorderError("--exclude-bad: only native datasets carry bad-episode marks")
        reader_options["exclude_bad"] = True
    if args.camera_map and args.cameras:
        raise TelecorderError("--cameras selects and renames, --camera-map only renames: give one of them")
    return ConvertOptions(
        to=args.to,
        src_format=getattr(args, "from"),
        episodes=parse_episode_ranges(args.episodes) if args.episodes else None,
        image_size=args.image_size,
        fps=args.fps,
        cameras=parse_cameras(args.cameras) if args.cameras else None,
        rename_cameras=parse_camera_map(args.camera_map) if args.camera_map else None,
        workers=args.workers,
        overwrite=args.overwrite,
        resume=args.resume,
        skip_bad=args.skip_bad,
        skip_missing_cameras=args.skip_missing_cameras,
        val_fraction=args.val_fraction or 0.0,
        runner=args.runner,
        beam_options=list(args.beam_options or []),
        shard_episodes=args.shard_episodes,
        reader_options=reader_options,
        writer_options=writer_options,
    )


def _convert_one(args: argparse.Namespace, console: Console, src: Path, dst: Path, opts: ConvertOptions) -> Path:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..runners import convert  # the runner --runner names executes the shards

    columns = (TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=None, rate="")
        t0 = time.perf_counter()

        def on_episode(done: int, total: int, frames: int) -> None:
            rate = frames / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, completed=done, total=total, rate=f"{rate:.0f} frames/s")

        report = convert(src, dst, opts, on_episode=on_episode)
    console.print(
        f"wrote {report.episodes} episode(s), {report.frames} frames to {report.output} as {args.to} "
        f"in {report.seconds:.1f} s ({report.frames_per_s:.0f} frames/s)"
        + (f"; {report.resumed} converted before were kept" if report.resumed else ""), highlight=False)
    for cam, why in report.cameras_left_out.items():
        console.print(f"[yellow]left out camera[/] {escape(repr(cam))}: {escape(str(why))}", highlight=False)
    if report.timestamp_offsets:
        from ..converters.lerobot.timing import offset_note

        console.print(f"[yellow]note[/] {escape(offset_note(report.timestamp_offsets))}", highlight=False)
    for _, reason in report.skipped:
        console.print(f"[yellow]skipped[/] {escape(str(reason))}", highlight=False)
    if args.episode_length is not None:
        from ..converters.aloha import length_fit_summary

        console.print(length_fit_summary(report.output), highlight=False)
    return Path(report.output)


def _run_mixture(args: argparse.Namespace, console: Console, sources: list[Path]) -> int:
    """Several sources into one folder of OXE datasets plus Octo's mixture (see converters.rlds.oxe_mixture)."""
    import os

    if len(sources) < 2:
        raise TelecorderError("--mixture: give several source datasets (telecorder convert A B ... OUT --to oxe)")
    if args.to != "oxe":
        raise TelecorderError(f"several sources are converted only --to oxe (one Octo mixture), not --to {args.to}; "
                              "convert them one at a time")
    for flag, given in (("--episodes", args.episodes), ("--language-embeddings", args.language_embeddings),
                        ("--resume", args.resume)):
        if given:
            raise TelecorderError(f"{flag}: for one source at a time; convert that dataset on its own")
    resolved = [os.path.abspath(s) for s in sources]
    twice = sorted({str(s) for s, r in zip(sources, resolved, strict=True) if resolved.count(r) > 1})
    if twice:
        raise TelecorderError(f"{', '.join(twice)}: given more than once")
    from ..converters.rlds.oxe_mixture import MIXTURE_FILE, dataset_names, widest, write_mixture

    names = dataset_names(sources)
    weights = _mixture_weights(args.mixture, sources)
    out: Path = args.dst
    if out.exists() and not out.is_dir():
        raise TelecorderError(f"{out}: exists and is not a folder")
    folders = [out / name for name in names]
    taken = [str(p) for p in (*folders, out / MIXTURE_FILE) if p.exists()]
    if taken and not args.overwrite:
        raise TelecorderError(f"{', '.join(taken)} exist(s); pass --overwrite to replace them")
    opts = _options(args, sources)
    for src, folder in zip(sources, folders, strict=True):
        _convert_one(args, console, src, folder, opts)
    path = write_mixture(out, folders, weights)
    pad = ", ".join(f"{k}={v}" for k, v in widest(folders).items())
    how = "by training steps" if weights is None else "uniform" if args.mixture == "uniform" else f"from {args.mixture}"
    console.print(f"Octo mixture of {len(folders)} datasets ({', '.join(names)}; weights {how}) in {path}: "
                  f"make_interleaved_dataset(**mixture, train=True, shuffle_buffer_size=N, "
                  f"traj_transform_kwargs=dict({pad}, ...))", highlight=False)
    return 0


def _mixture_weights(mixture: str | None, sources: list[Path]) -> list[float] | None:
    """One weight per source from ``--mixture`` (None: by steps): ``uniform``, or the file ``train
    --mixture`` reads (loaders.mixture_spec), which must list exactly these datasets."""
    if mixture in (None, "steps"):
        return None
    if mixture == "uniform":
        return [1.0] * len(sources)
    from ..loaders.mixture_spec import read_mixture_file

    entries = read_mixture_file(mixture)
    weights = {e.path.resolve(): e.weight for e in entries}
    given = [Path(s).resolve() for s in sources]
    missing = [str(s) for s, r in zip(sources, given, strict=True) if r not in weights]
    extra = [str(e.path) for e in entries if e.path.resolve() not in given]
    if missing or extra:
        raise TelecorderError(
            f"--mixture {mixture}: " + "; ".join(
                ([f"gives no weight for {', '.join(missing)}"] if missing else [])
                + ([f"lists {', '.join(extra)}, not among the datasets given"] if extra else []))
            + " (its paths are relative to its own folder)")
    return [weights[r] for r in given]


def run_tokenizer(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.table import Table

    from ..actions.fit_report import fit_fast, report

    if args.action == "fit":
        if args.out is None:
            raise TelecorderError("tokenizer fit needs --out DIR")
        result = fit_fast(args.dataset, args.out, chunk_seconds=args.chunk_seconds, vocab_size=args.vocab_size,
                          scale=args.scale)
        console.print(f"FAST tokenizer fitted on {result['chunks']} chunks of {result['horizon']} x "
                      f"{result['action_dim']}; saved to {result['out']}", highlight=False)
        return 0
    if args.tokenizer is None:
        raise TelecorderError("tokenizer report needs --tokenizer DIR (made by 'telecorder tokenizer fit')")
    r = report(args.dataset, args.tokenizer)
    if args.json:
        console.print_json(json.dumps(r))
        return 0
    console.print(
        f"{r['chunks']} chunks of {r['horizon']} steps x {r['action_dim']} dims: FAST "
        f"{r['tokens_per_chunk_mean']:.1f} tokens per chunk (p99 {r['tokens_per_chunk_p99']:.0f}) vs "
        f"{r['naive_tokens_per_chunk']} naive 256-bin tokens: {r['compression_vs_naive']:.1f}x fewer; "
        f"encode {r['encode_chunks_per_s']:.0f} / decode {r['decode_chunks_per_s']:.0f} chunks/s", highlight=False)
    table = Table(title="reconstruction error in the action's units")
    for col in ("dimension", "RMSE", "max"):
        table.add_column(col)
    for name in r["rmse"]:
        table.add_row(name, f"{r['rmse'][name]:.4f}", f"{r['max_abs_error'][name]:.4f}")
    console.print(table)
    return 0


def add_convert_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("convert", help="convert between native, RLDS/OXE, LeRobot, ALOHA and robomimic",
                       description="Convert a dataset into another format; the source format is detected. "
                       "Output is built next to DST and moved into place when complete.",
                       epilog=CONVERT_EXAMPLES, formatter_class=fmt)
    p.add_argument("src", type=Path, nargs="+",
                   help="the dataset to convert; several with --to oxe make one Octo mixture in DST")
    p.add_argument("dst", type=Path)
    p.add_argument("--to", required=True, choices=["native", "rlds", "oxe", "lerobot", "aloha", "robomimic"])
    p.add_argument("--from", dest="from", choices=["native", "rlds", "lerobot", "aloha", "robomimic"],
                   help="source format (default: detected)")
    p.add_argument("--episodes", help="episodes to convert, e.g. 0-9,15")
    p.add_argument("--image-size", type=_size, help="resize frames to WIDTHxHEIGHT (area or Lanczos)")
    p.add_argument("--fps", type=_positive_float, help="resample to this control rate by timestamps")
    p.add_argument("--cameras", help="select/rename cameras: front:image,wrist:wrist_image; the others are never "
                   "read")
    p.add_argument("--camera-map", metavar="NAME=CAMERA,...",
                   help="rename cameras, keeping the others: cam_high=top,cam_left_wrist=left_wrist (ALOHA output "
                   "of two arms names top/left_wrist/right_wrist so by default)")
    p.add_argument("--mixture", metavar="steps|uniform|FILE.json",
                   help="several sources --to oxe: Octo's sampling weights by training steps (default), uniform, or "
                   "from the JSON file train --mixture reads ({\"demos/\": 1.0, \"bimanual/\": 0.5}, paths relative "
                   "to the file), which must list the same datasets")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="parallel processes; above 1 each converts and writes a shard of episodes, merged at the end")
    p.add_argument("--runner", choices=["local", "beam"], default="local",
                   help="local processes (default), or an Apache Beam pipeline (pip install 'telecorder[beam]')")
    p.add_argument("--beam-options", action="append", metavar="'--OPT=V ...'",
                   help="Beam pipeline options, e.g. '--direct_num_workers=2 --direct_running_mode=multi_processing' "
                   "or '--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp'")
    p.add_argument("--shard-episodes", type=_positive_int, metavar="N",
                   help="episodes per shard when sharded (default: 8 shards per worker, at most 64 episodes each)")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("--resume", action="store_true", help="native output: keep episodes an interrupted run converted")
    p.add_argument("--skip-bad", action="store_true", help="convert the rest when an episode is bad, and list it")
    p.add_argument("--exclude-bad", action="store_true", help="leave out episodes marked bad (in the viewer)")
    p.add_argument("--tabular-only", action="store_true", help="LeRobot source: numeric data only, no videos")
    p.add_argument("--strict-timestamps", action="store_true",
                   help="LeRobot source: refuse rows whose timestamps run a constant offset (up to one frame) off "
                   "their video, instead of giving each row its own frame by that offset")
    p.add_argument("--skip-missing-cameras", action="store_true",
                   help="leave out cameras whose video files are missing for some of the episodes, and list them")
    p.add_argument("--codec", choices=["h264", "av1"], help="LeRobot output video codec (default h264)")
    p.add_argument("--file-format", choices=["tfrecord", "array_record"], help="RLDS output shard format")
    p.add_argument("--compress", action="store_true", help="ALOHA output: JPEG-compressed image rows (robomimic: gzip the observations)")
    p.add_argument("--action-space", choices=["eef", "joint"], help="OXE output: EEF deltas (default) or joints")
    p.add_argument("--robot-model", type=Path, help="OXE output: MJCF/URDF for forward kinematics")
    p.add_argument("--language-embeddings", type=Path, help="OXE output: .npy with one embedding per episode")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help="RLDS/OXE output: whole episodes to a 'val' split (deterministic), e.g. 0.1")
    p.add_argument("--binarize-gripper", action="store_true",
                   help="OXE output: gripper action 0 = closed / 1 = open, split at 0.5 (Octo/OpenVLA convention)")
    p.add_argument("--episode-length", type=_positive_int, metavar="N",
                   help="ALOHA output: every episode exactly N steps, padded by holding its last step or cut "
                   "(ACT stacks whole episodes); each file records its original length")
    p.add_argument("--aloha-sim", action=argparse.BooleanOptionalAction, default=None,
                   help="ALOHA output: the 'sim' attribute ACT reads (real robot: ACT shifts actions one step); "
                   "default from the source (sim clock or a simulated robot)")
    p.add_argument("--robomimic-actions", choices=["normalized", "raw"],
                   help="robomimic output: actions scaled per dimension into [-1, 1] with the statistics stored "
                   "(default), or raw robot units")
    p.set_defaults(func=run_convert)


def add_tokenizer_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("tokenizer", help="fit and measure action tokenizers (FAST)",
                       description="Fit the FAST (DCT + BPE) action tokenizer on a dataset's actions, or report "
                       "tokens per chunk against naive 256-bin tokens, reconstruction error and throughput.",
                       epilog=TOKENIZER_EXAMPLES, formatter_class=fmt)
    p.add_argument("action", choices=["fit", "report"])
    p.add_argument("dataset", type=Path)
    p.add_argument("--kind", choices=["fast"], default="fast")
    p.add_argument("--chunk-seconds", type=_positive_float, default=1.0)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--scale", type=_positive_float, default=10.0, help="DCT coefficient scale before rounding")
    p.add_argument("--out", type=Path, help="fit: where to save the tokenizer")
    p.add_argument("--tokenizer", type=Path, help="report: a fitted tokenizer folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_tokenizer)
