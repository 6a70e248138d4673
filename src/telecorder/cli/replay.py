"""The ``replay`` command: send a recorded episode's actions to a robot and report the drift."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from .arg_types import _positive_float

REPLAY_EXAMPLES = """\
examples:
  # replay episode 3 on the sim arm in its recorded scene, and see how far the states drift
  telecorder replay demos/ --episode 3 --robot sim

  # as fast as the simulation runs, as JSON (per joint p50/p95/max drift, task success)
  telecorder replay demos/ --episode 3 --no-realtime --json

  # keep the replay as a dataset of its own (view it, or compare it with the original)
  telecorder replay demos/ --episode 3 --out replayed/

  # on the real follower arm (it must stand near the episode's start pose), at half speed first
  telecorder replay demos/ --episode 3 --robot dynamixel --port /dev/ttyUSB1 --speed 0.5
  telecorder replay demos/ --episode 3 --robot dynamixel --port /dev/ttyUSB1
  telecorder replay demos/ --episode 3 --robot dynamixel --emulate   # the emulated arm, no hardware

Ctrl-C stops the replay (the arm holds where it stands); with --out nothing is kept then.
exit status: 0 replayed, 2 refused (wrong action space, arm too far from the start pose, ...).
"""


def run_replay(args: argparse.Namespace, console: Console) -> int:
    import json

    from ..replay.drift import print_report
    from ..replay.player import ReplayConfig, replay

    cfg = ReplayConfig(
        dataset=args.dataset, episode=args.episode, robot=args.robot, robot_model=args.robot_model, port=args.port,
        calibration=args.calibration, baudrate=args.baudrate, emulate=args.emulate, out=args.out,
        realtime=not args.no_realtime, start_tolerance=args.start_tolerance, speed=args.speed,
    )
    # With --json, stdout carries the report only: progress and session lines go to stderr.
    report = replay(cfg, Console(stderr=True) if args.json else console)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, console)
    return 130 if report["interrupted"] else 0


def add_replay_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("replay", help="send a recorded episode's actions to a robot and measure the drift",
                       description="Send one episode's recorded actions to the sim or a Dynamixel arm at the "
                       "recorded rate, with the start check and ramp of teleoperation, and report how far the "
                       "measured states drift from the recorded ones (per joint p50/p95/max) and whether the task "
                       "still succeeds. Records nothing unless --out is given.",
                       epilog=REPLAY_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path, help="a telecorder or LeRobot dataset folder")
    p.add_argument("--episode", type=int, required=True, help="episode number to replay")
    p.add_argument("--robot", default="sim", choices=["sim", "dynamixel"], help="follower robot (default sim)")
    p.add_argument("--robot-model", type=Path, help="MJCF of your own arm for --robot sim (the recording's)")
    p.add_argument("--port", "--follower-port", dest="port", help="--robot dynamixel: the follower's serial port")
    p.add_argument("--calibration", "--follower-calibration", dest="calibration", type=Path,
                   help="follower calibration JSON (default: config dir)")
    p.add_argument("--baudrate", type=int, default=1_000_000, help="bus baud rate (default 1000000)")
    p.add_argument("--emulate", action="store_true", help="--robot dynamixel: use the built-in emulated arm")
    p.add_argument("--start-tolerance", type=_positive_float, default=0.6,
                   help="how far (rad per joint) the arm may stand from the episode's first state (default 0.6)")
    p.add_argument("--speed", type=_positive_float, default=1.0,
                   help="fraction of the recorded rate, e.g. 0.5 for half speed on a first run (default 1)")
    p.add_argument("--no-realtime", action="store_true",
                   help="sim only: run on simulated time, as fast as physics allows (the drift is the same)")
    p.add_argument("--out", type=Path, help="record the replay as a dataset here (default: record nothing)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=run_replay)
