"""The ``telecorder`` command and the ``collect`` entry point: argument parsing only.

Each command group has a module of its own (its parser, examples and handler): collect.py
(collect, emulate, vr-record, calibrate), datasets.py (info, stats, doctor, view, export, edit),
convert.py (convert, tokenizer), policies.py (train, eval) and replay.py. This module assembles
the top-level parser and turns errors into exit codes. Handlers import their heavy modules
(torch, TensorFlow, MuJoCo, devices) themselves, so building the parser loads none of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..errors import TelecorderError
from .collect import (
    COLLECT_EXAMPLES,
    add_calibrate_parser,
    add_collect_arguments,
    add_collect_parser,
    add_emulate_parser,
    add_vr_record_parser,
    run_collect,
)
from .convert import add_convert_parser, add_tokenizer_parser
from .datasets import (
    add_doctor_parser,
    add_edit_parser,
    add_export_parser,
    add_info_parser,
    add_stats_parser,
    add_view_parser,
)
from .policies import add_eval_parser, add_train_parser
from .replay import add_replay_parser

__all__ = ["COLLECT_EXAMPLES", "EXIT_ERROR", "EXIT_PROBLEMS", "Console", "build_parser", "collect_main", "main"]

EXIT_ERROR = 2
EXIT_PROBLEMS = 1


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

    # The order here is the order 'telecorder --help' lists the commands in.
    add_collect_parser(sub, fmt)
    add_info_parser(sub, fmt)
    add_stats_parser(sub, fmt)
    add_doctor_parser(sub, fmt)
    add_convert_parser(sub, fmt)
    add_view_parser(sub, fmt)
    add_export_parser(sub, fmt)
    add_tokenizer_parser(sub, fmt)
    add_train_parser(sub, fmt)
    add_emulate_parser(sub, fmt)
    add_vr_record_parser(sub, fmt)
    add_calibrate_parser(sub, fmt)
    add_eval_parser(sub, fmt)
    add_replay_parser(sub, fmt)
    add_edit_parser(sub, fmt)
    return parser


def _error_line(err: Console, e: BaseException) -> None:
    # Escaped: a path or an extra's name in brackets ("telecorder[beam]") is text, not markup.
    # One line however long: a terminal wraps it, a log keeps it whole.
    err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)


def _run(func: Callable[[argparse.Namespace, Console], int], args: argparse.Namespace) -> int:
    console = Console(stderr=False)
    err = Console(stderr=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return func(args, console)
    except TelecorderError as e:
        _error_line(err, e)
        return EXIT_ERROR
    except (ValueError, ImportError) as e:
        # Bad arguments and missing optional extras are the user's to fix, not bugs: no traceback.
        if os.environ.get("TELECORDER_DEBUG"):
            raise
        _error_line(err, e)
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def _glue_beam_options(argv: Sequence[str]) -> list[str]:
    """``--beam-options '--a=1 --b=2'`` as users write it: argparse would take the value, which
    starts with dashes, for an option of its own."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] == "--beam-options" and i + 1 < len(args):
            out.append(f"--beam-options={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_glue_beam_options(sys.argv[1:] if argv is None else argv))
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
