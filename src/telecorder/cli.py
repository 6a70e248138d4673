"""The ``telecorder`` command and the ``collect`` entry point: argument parsing only."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from . import __version__
from .errors import TelecorderError

EXIT_ERROR = 2
EXIT_PROBLEMS = 1

COLLECT_EXAMPLES = """\
examples:
  # 5 scripted pick-and-lift demos on the built-in MuJoCo arm, 2 rendered cameras
  collect --device scripted --robot sim --episodes 5 --episode-time 10 --out demos/

  # add a USB camera and a looping video file as extra cameras, record at 50 Hz
  collect --robot sim --device scripted --fps 50 --out demos/ \\
      --camera side=/dev/video0,size=640x480,fps=30 --camera top=clip.mp4,loop

  # your own MJCF arm driven by a smooth joint sweep, appended to an existing dataset
  collect --robot sim --robot-model my_arm.xml --script sweep --out arm_data/ --resume

keys while recording (in a terminal): n or -> save the episode, r or <- discard and
re-record it, q or Esc save it and quit. Ctrl-C discards the episode in progress;
every episode saved before stays intact.
"""

INFO_EXAMPLES = """\
examples:
  telecorder info demos/
  telecorder info demos/ --episodes      # one line per episode
  telecorder info demos/ --json
"""

DOCTOR_EXAMPLES = """\
examples:
  telecorder doctor demos/               # validate every episode, print the sync report
  telecorder doctor demos/ --frames all  # also decode every stored frame
  telecorder doctor demos/ --repair      # salvage interrupted episodes, rebuild index and stats
  telecorder doctor demos/ --json > report.json

exit status: 0 no errors, 1 errors found (or warnings with --strict), 2 not a dataset.
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 640x480, not {text!r}") from e


def add_collect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="scripted", help="teleop front-end (available: scripted)")
    p.add_argument("--robot", default="sim", help="follower robot (available: sim)")
    p.add_argument("--robot-model", type=Path, help="MJCF file of your own arm for --robot sim")
    p.add_argument("--script", default="expert", choices=["expert", "sweep"],
                   help="what --device scripted does: the pick-and-lift expert, or a joint sweep")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create (or append to with --resume)")
    p.add_argument("--resume", action="store_true", help="append to an existing dataset with the same schema")
    p.add_argument("--episodes", type=int, default=10, help="episodes to save (default 10)")
    p.add_argument("--episode-time", type=_positive_float, default=20.0, help="time limit per episode in s (default 20)")
    p.add_argument("--reset-time", type=float, default=2.0, help="pause between episodes in s (default 2)")
    p.add_argument("--task", default=None, help="task / language instruction stored with each episode")
    p.add_argument("--fps", type=_positive_float, default=30.0, help="control rate in Hz (default 30, up to 200)")
    p.add_argument("--camera", action="append", default=[], metavar="NAME=SOURCE[,size=WxH][,fps=F][,loop]",
                   help="an OpenCV camera: device index, /dev/videoN, video file or stream URL (repeatable)")
    p.add_argument("--sim-cameras", default=None,
                   help="comma-separated sim cameras to record (default: all of the model's; 'none' for none)")
    p.add_argument("--camera-size", type=_size, default=(640, 480), help="sim camera resolution (default 640x480)")
    p.add_argument("--camera-fps", type=_positive_float, default=30.0, help="sim camera frame rate (default 30)")
    p.add_argument("--image-format", choices=["jpeg", "png"], default="jpeg", help="frame encoding (png = lossless)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality 1-100 (default 90)")
    p.add_argument("--operator", default=None, help="operator name stored with each episode")
    p.add_argument("--seed", type=int, default=None, help="seed for scene randomization and the script")


def run_collect(args: argparse.Namespace, console: Console) -> int:
    from .collect.factory import DeviceConfig, make_devices
    from .collect.opencv_camera import CameraSpec
    from .collect.session import RecordingSession, SessionConfig

    sim_cams = None
    if args.sim_cameras is not None:
        sim_cams = [] if args.sim_cameras == "none" else [c for c in args.sim_cameras.split(",") if c]
    try:
        specs = [CameraSpec.parse(c) for c in args.camera]
    except ValueError as e:
        raise TelecorderError(str(e)) from e
    robot, teleop, cameras = make_devices(
        DeviceConfig(
            robot=args.robot,
            device=args.device,
            robot_model=args.robot_model,
            script=args.script,
            fps=args.fps,
            seed=args.seed,
            sim_cameras=sim_cams,
            camera_size=args.camera_size,
            camera_fps=args.camera_fps,
            cameras=specs,
        )
    )
    task = args.task
    if task is None:
        task = "pick up the cube" if args.robot == "sim" and args.robot_model is None else ""
    session = RecordingSession(
        robot,
        teleop,
        cameras,
        SessionConfig(
            out=args.out,
            episodes=args.episodes,
            episode_time_s=args.episode_time,
            reset_time_s=args.reset_time,
            task=task,
            fps=args.fps,
            resume=args.resume,
            image_encoding=args.image_format,
            jpeg_quality=args.jpeg_quality,
            operator=args.operator,
            seed=args.seed,
        ),
        console=console,
    )
    session.run()
    return 0


def run_info(args: argparse.Namespace, console: Console) -> int:
    from .reports import print_info

    print_info(console, args.dataset, per_episode=args.episodes, as_json=args.json)
    return 0


def run_doctor(args: argparse.Namespace, console: Console) -> int:
    from .reports import print_doctor

    return print_doctor(console, args.dataset, repair=args.repair, frames=args.frames,
                        as_json=args.json, strict=args.strict)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="telecorder",
        description="Record robot teleoperation demonstrations and turn them into VLA training data.",
        formatter_class=fmt,
        epilog="run 'telecorder COMMAND --help' for a command's options and examples",
    )
    parser.add_argument("--version", action="version", version=f"telecorder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("collect", help="record episodes from a teleop device", description="Record episodes: "
                       "follower state, commanded actions and every camera, each sample with its capture time.",
                       epilog=COLLECT_EXAMPLES, formatter_class=fmt)
    add_collect_arguments(p)
    p.set_defaults(func=run_collect)

    p = sub.add_parser("info", help="summarize a dataset", description="Summarize a dataset: episodes, frames, "
                       "duration, features, tasks, success rate, size on disk.", epilog=INFO_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path)
    p.add_argument("--episodes", action="store_true", help="also list every episode")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run_info)

    p = sub.add_parser("doctor", help="validate a dataset and report timing/sync",
                       description="Validate every episode (schema, timestamps, NaN/inf, frames) and report the "
                       "control rate, late ticks and per-camera frame age, repeats and drops.",
                       epilog=DOCTOR_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path)
    p.add_argument("--repair", action="store_true", help="mend what can be mended, then check again")
    p.add_argument("--frames", choices=["none", "ends", "all"], default="ends",
                   help="which stored frames to decode (default: first and last of each camera)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_doctor)
    return parser


def _run(func: Callable[[argparse.Namespace, Console], int], args: argparse.Namespace) -> int:
    console = Console(stderr=False)
    err = Console(stderr=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return func(args, console)
    except TelecorderError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        return EXIT_ERROR
    except (ValueError, ImportError) as e:
        # Bad arguments and missing optional extras are the user's to fix, not bugs: no traceback.
        if os.environ.get("TELECORDER_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _run(args.func, args)


def collect_main(argv: Sequence[str] | None = None) -> int:
    """The ``collect`` entry point: the same as ``telecorder collect``."""
    parser = argparse.ArgumentParser(
        prog="collect",
        description="Record episodes (same as 'telecorder collect').",
        epilog=COLLECT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_collect_arguments(parser)
    return _run(run_collect, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
