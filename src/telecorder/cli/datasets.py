"""Commands that look at or change a dataset: ``info``, ``stats``, ``doctor``, ``view``, ``export``
and ``edit``. What info/stats/doctor print lives in :mod:`.reports`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console

from ..errors import TelecorderError

INFO_EXAMPLES = """\
examples:
  telecorder info demos/
  telecorder info demos/ --episodes      # one line per episode
  telecorder info demos/ --json
  telecorder info ~/lerobot/G1-train/    # LeRobot v2/v3, RLDS/OXE, ALOHA, robomimic: read in place
"""


DOCTOR_EXAMPLES = """\
examples:
  telecorder doctor demos/               # validate every episode, print the sync report
  telecorder doctor demos/ --frames all  # also decode every stored frame
  telecorder doctor demos/ --repair      # salvage interrupted episodes, rebuild index and stats
  telecorder doctor demos/ --json > report.json
  telecorder doctor demos/ --runner beam --beam-options '--direct_num_workers=2'   # checks on Apache Beam
  telecorder doctor ~/lerobot/G1-train/  # LeRobot v2/v3, RLDS/OXE, ALOHA, robomimic: checked in place, read-only

exit status: 0 no errors, 1 errors found (or warnings with --strict), 2 not a dataset.
"""


VIEW_EXAMPLES = """\
examples:
  telecorder view demos/                       # browse: arrows step, shift = 1 s, space play, PgUp/PgDn episodes, d bad
  telecorder view demos/ --episode 3 --step 40 --screenshot view.png   # headless, same layout
  telecorder view bridge_dataset/1.0.0/        # any format telecorder reads (read-only: no d)
"""


EXPORT_EXAMPLES = """\
examples:
  telecorder export demos/ --episode 0 --mp4 ep0.mp4
  telecorder export demos/ --episode 0 --contact-sheet ep0.png --frames 8
  telecorder export demos/ --episode 0 --gif ep0.gif
  telecorder export ~/lerobot/G1-train/ --episode 2 --mp4 ep2.mp4   # other formats too
"""


EDIT_EXAMPLES = """\
examples:
  telecorder edit merge demos_mon/ demos_tue/ --out demos_all/
  telecorder edit delete-episodes demos/ 3,7-9 --out demos_clean/
  telecorder edit delete-episodes demos/ 3,7-9 --in-place
  telecorder edit split demos/ --val-fraction 0.1 --out-train demos_train/ --out-val demos_val/
  telecorder edit set-task demos/ --episodes 0-4 "pick up the red cube"
  telecorder edit set-task demos/ --from-file tasks.csv        # rows: episodes,task  (e.g. 5-9,"stack, then push")
  telecorder edit remove-feature demos/ observation.images.wrist --in-place

every edit builds a complete dataset in a hidden folder and puts it in place in one step:
a crash leaves the old dataset as it was. Episodes are renumbered 0..N-1 in the result and
keep where they came from (source_dataset, source_episode_index). 'telecorder doctor' passes
on every result.
"""


def run_info(args: argparse.Namespace, console: Console) -> int:
    from .reports import print_info

    print_info(console, args.dataset, per_episode=args.episodes, as_json=args.json, fmt=args.format)
    return 0


def run_stats(args: argparse.Namespace, console: Console) -> int:
    from .reports import print_stats

    print_stats(console, args.dataset, as_json=args.json, fmt=args.format)
    return 0


def run_doctor(args: argparse.Namespace, console: Console) -> int:
    from .reports import print_doctor

    if args.beam_options and args.runner != "beam":
        raise TelecorderError("--beam-options: add --runner beam")
    return print_doctor(console, args.dataset, repair=args.repair, frames=args.frames,
                        as_json=args.json, strict=args.strict, runner=args.runner,
                        beam_options=list(args.beam_options or []), fmt=getattr(args, "format", None))


def run_view(args: argparse.Namespace, console: Console) -> int:
    if args.screenshot is not None:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from ..viewers.browser import EpisodeBrowser

    browser = EpisodeBrowser(args.dataset, episode=args.episode, fmt=args.format)
    if args.screenshot is not None:
        try:
            browser.screenshot(args.screenshot, episode=args.episode, step=args.step)
        finally:
            browser.close()
        console.print(f"wrote {args.screenshot}", highlight=False)
        return 0
    browser.run()
    return 0


def run_export(args: argparse.Namespace, console: Console) -> int:
    from ..viewers import export

    if not (args.mp4 or args.gif or args.contact_sheet):
        raise TelecorderError("say what to export: --mp4 FILE, --gif FILE and/or --contact-sheet FILE")
    if args.mp4:
        n = export.export_mp4(args.dataset, args.episode, args.mp4, plot=not args.no_plot, fmt=args.format)
        console.print(f"wrote {args.mp4} ({n} frames)", highlight=False)
    if args.gif:
        export.export_gif(args.dataset, args.episode, args.gif, fmt=args.format)
        console.print(f"wrote {args.gif}", highlight=False)
    if args.contact_sheet:
        export.contact_sheet(args.dataset, args.episode, args.contact_sheet, frames_per_camera=args.frames,
                             fmt=args.format)
        console.print(f"wrote {args.contact_sheet}", highlight=False)
    return 0


def run_edit(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..datasets import edit

    ops = {
        "merge": lambda cb: edit.merge(args.datasets, args.out, progress=cb),
        "delete-episodes": lambda cb: edit.delete_episodes(
            args.dataset, edit.parse_episodes(args.episodes), out=args.out, in_place=args.in_place, progress=cb),
        "split": lambda cb: edit.split(args.dataset, val_fraction=args.val_fraction, out_train=args.out_train,
                                       out_val=args.out_val, seed=args.seed, progress=cb),
        "set-task": lambda cb: edit.set_task(
            args.dataset, _edit_tasks(args), out=args.out, progress=cb,
            episodes=edit.parse_episodes(args.episodes) if args.episodes else None),
        "remove-feature": lambda cb: edit.remove_features(args.dataset, args.features, out=args.out,
                                                          in_place=args.in_place, progress=cb),
    }
    if args.json:
        print(json.dumps(ops[args.op](None).to_dict()))
        return 0
    columns = (TextColumn(args.op), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=None)
        report = ops[args.op](lambda done, total: progress.update(task, completed=done, total=total))
    for name, path in report.outputs.items():
        console.print(f"{args.op}: {report.episodes[name]} episode(s), {report.frames[name]} frames in {path}"
                      + (f" ({name})" if name != "out" else ""), highlight=False)
    return 0


def _edit_tasks(args: argparse.Namespace) -> dict[int, str] | str:
    from ..datasets import edit

    if (args.task is None) == (args.from_file is None):
        raise TelecorderError("set-task: give the task text, or --from-file tasks.csv (not both)")
    if args.from_file is not None:
        if args.episodes:
            raise TelecorderError("set-task: --episodes goes with a task text; the file names its own episodes")
        return edit.read_task_file(args.from_file)
    return args.task


# The formats that have a reader (telecorder.viewers.sources.READABLE; kept here so that building
# the parser imports no reader).
READABLE_FORMATS = ("native", "lerobot", "rlds", "aloha", "robomimic")


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=READABLE_FORMATS, default=None,
                   help="the dataset's format (default: detected as 'convert' detects it); the dataset is only read")


class _IntermixedParser(argparse.ArgumentParser):
    """Options may come between positionals (``set-task DS --episodes 0-4 "text"``): plain argparse
    gives an optional positional nothing once an option follows the first one."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._inside:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def add_info_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("info", help="summarize a dataset", description="Summarize a dataset: episodes, frames, "
                       "duration, features, tasks, success rate, size on disk.", epilog=INFO_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path)
    _add_format(p)
    p.add_argument("--episodes", action="store_true", help="also list every episode")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run_info)


def add_stats_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("stats", help="per-feature statistics (mean, std, min, max, q01, q99)",
                       description="Print the dataset's per-feature statistics, merged episode by episode "
                       "(q01/q99 within 0.5% relative error).",
                       epilog="examples:\n  telecorder stats demos/\n  telecorder stats demos/ --json\n",
                       formatter_class=fmt)
    p.add_argument("dataset", type=Path)
    _add_format(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_stats)


def add_doctor_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("doctor", help="validate a dataset and report timing/sync",
                       description="Validate every episode (schema, timestamps, NaN/inf, frames) and report the "
                       "control rate, late ticks and per-camera frame age, repeats and drops.",
                       epilog=DOCTOR_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path)
    _add_format(p)
    p.add_argument("--repair", action="store_true", help="mend what can be mended, then check again")
    p.add_argument("--frames", choices=["none", "ends", "all"], default="ends",
                   help="which stored frames to decode (default: first and last of each camera)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--runner", choices=["local", "beam"], default="local",
                   help="check episodes in this process (default) or in an Apache Beam pipeline")
    p.add_argument("--beam-options", action="append", metavar="'--OPT=V ...'", help="Beam pipeline options")
    p.set_defaults(func=run_doctor)


def add_view_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("view", help="browse episodes in a window (or save a screenshot)",
                       description="Episode browser: cameras, timeline, state/action plots, sync info; "
                       "mark bad episodes with d.", epilog=VIEW_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path)
    _add_format(p)
    p.add_argument("--episode", type=int, default=None)
    p.add_argument("--step", type=int, default=0, help="with --screenshot: the step to show")
    p.add_argument("--screenshot", type=Path, help="render headless and save a PNG instead of opening a window")
    p.set_defaults(func=run_view)


def add_export_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("export", help="export an episode as MP4, GIF or a PNG contact sheet",
                       epilog=EXPORT_EXAMPLES, formatter_class=fmt,
                       description="Export the camera grid of an episode (with an action plot strip).")
    p.add_argument("dataset", type=Path)
    _add_format(p)
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--mp4", type=Path)
    p.add_argument("--gif", type=Path)
    p.add_argument("--contact-sheet", type=Path)
    p.add_argument("--frames", type=int, default=8, help="contact sheet: frames per camera")
    p.add_argument("--no-plot", action="store_true", help="mp4: no action plot strip")
    p.set_defaults(func=run_export)


def add_edit_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("edit", help="merge, split, delete episodes, relabel tasks, remove features",
                       description="Edit native datasets: each edit is atomic, runs under the dataset lock, "
                       "recomputes statistics and keeps the index consistent.",
                       epilog=EDIT_EXAMPLES, formatter_class=fmt)
    ops = p.add_subparsers(dest="op", metavar="OPERATION", parser_class=_IntermixedParser)
    ops.required = True

    def op(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        q = ops.add_parser(name, help=help_text, description=help_text, formatter_class=fmt,
                           epilog=f"example:\n  {example}\n")
        q.add_argument("--json", action="store_true", help="print what was done as one JSON object")
        q.set_defaults(func=run_edit)
        return q

    q = op("merge", "episodes of several datasets with the same features into a new one",
           "telecorder edit merge demos_mon/ demos_tue/ --out demos_all/")
    q.add_argument("datasets", nargs="+", type=Path, help="datasets to merge, in this order")
    q.add_argument("--out", type=Path, required=True, help="new folder for the merged dataset")

    q = op("delete-episodes", "leave episodes out (renumbering the rest)",
           "telecorder edit delete-episodes demos/ 3,7-9 --in-place")
    q.add_argument("dataset", type=Path)
    q.add_argument("episodes", help="episode numbers and ranges, e.g. 3,7-9")
    q.add_argument("--out", type=Path, help="new folder for the result")
    q.add_argument("--in-place", action="store_true", help="replace the dataset itself (atomically)")

    q = op("split", "whole episodes into a training and a validation dataset, deterministically",
           "telecorder edit split demos/ --val-fraction 0.1 --out-train demos_train/ --out-val demos_val/")
    q.add_argument("dataset", type=Path)
    q.add_argument("--val-fraction", type=float, required=True, help="share of episodes for validation (0-1)")
    q.add_argument("--out-train", type=Path, required=True)
    q.add_argument("--out-val", type=Path, required=True)
    q.add_argument("--seed", type=int, default=0, help="seed of the episode shuffle (default 0)")

    q = op("set-task", "relabel language instructions (task and language_instruction), in place by default",
           'telecorder edit set-task demos/ --episodes 0-4 "pick up the red cube"')
    q.add_argument("dataset", type=Path)
    q.add_argument("task", nargs="?", help="the new instruction")
    q.add_argument("--episodes", help="episodes to relabel, e.g. 0-4 (default: all)")
    q.add_argument("--from-file", type=Path, help="CSV of episodes,task rows (a header line is allowed)")
    q.add_argument("--out", type=Path, help="write the result to a new folder instead")

    q = op("remove-feature", "drop cameras or numeric features from every episode",
           "telecorder edit remove-feature demos/ observation.images.wrist --out demos_front/")
    q.add_argument("dataset", type=Path)
    q.add_argument("features", nargs="+", help="feature names (a bare camera name works too)")
    q.add_argument("--out", type=Path, help="new folder for the result")
    q.add_argument("--in-place", action="store_true", help="replace the dataset itself (atomically)")
