"""Beam pipeline options from the command line, and the paths a Beam run can use."""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Sequence
from typing import Any

from ..errors import DatasetError, missing_extra

# Local default: every core, in processes (threads would share one GIL).
LOCAL_DEFAULTS = ("--direct_running_mode=multi_processing",)
_WORKER_FLAGS = ("direct_num_workers", "num_workers", "max_num_workers", "parallelism", "sdk_worker_parallelism")
_CLUSTER_GUESS = 32  # workers assumed for shard sizing when the options name none


class BeamError(DatasetError):
    """A Beam run that cannot start or did not finish; names what to do."""


def require_beam() -> Any:
    root = logging.getLogger()
    level = root.level
    # Beam warns on import about Google Cloud clients that a run without them does not use.
    root.setLevel(max(level, logging.ERROR))
    try:
        import apache_beam as beam
    except ImportError as e:
        raise missing_extra("apache-beam", "beam") from e
    finally:
        root.setLevel(level)
    return beam


def split_options(beam_options: str | Sequence[str] | None) -> list[str]:
    """``"--a=1 --b 2"`` or a list of such strings -> a flat argument list."""
    if not beam_options:
        return []
    if isinstance(beam_options, str):
        return shlex.split(beam_options)
    return [arg for item in beam_options for arg in shlex.split(item)]


def _flag(args: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def is_local(args: Sequence[str]) -> bool:
    runner = _flag(args, "runner")
    return runner is None or runner.lower() in ("direct", "directrunner", "prism", "prismrunner")


def pipeline_args(beam_options: str | Sequence[str] | None) -> list[str]:
    """The user's options, plus multi-process DirectRunner defaults for a local run that names none."""
    args = split_options(beam_options)
    if _flag(args, "default_sdk_harness_log_level") is None:
        args.append("--default_sdk_harness_log_level=ERROR")  # workers' start-up chatter is not the user's business
    if is_local(args):
        if _flag(args, "direct_running_mode") is None:
            args += list(LOCAL_DEFAULTS)
        if _flag(args, "direct_num_workers") is None:
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return args


def pipeline_options(beam_options: str | Sequence[str] | None) -> Any:
    require_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    args = pipeline_args(beam_options)
    options = PipelineOptions(args)
    # Unknown flags are kept by PipelineOptions and silently ignored; a typo must not be.
    known = set(options.get_all_options(drop_default=False))
    unknown = [a for a in args if a.startswith("--") and _name(a) not in known]
    if unknown:
        raise BeamError(f"--beam-options: unknown Beam option(s) {', '.join(unknown)} "
                        "(see `python -m apache_beam.runners.runner --help`, or the runner's documentation)")
    return options


def _name(arg: str) -> str:
    return arg[2:].split("=", 1)[0]


def beam_worker_count(beam_options: str | Sequence[str] | None) -> int:
    """How many workers the run will have, for sizing shards: the options' own count, else
    this machine's cores locally, else a cluster-sized guess."""
    args = pipeline_args(beam_options)
    for name in _WORKER_FLAGS:
        value = _flag(args, name)
        if value is not None and re.fullmatch(r"\d+", value) and int(value) > 0:
            return int(value)
    return (os.cpu_count() or 1) if is_local(args) else _CLUSTER_GUESS
