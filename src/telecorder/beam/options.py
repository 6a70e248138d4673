"""Beam pipeline options from the command line, and the paths a Beam run can use.

``--runner`` takes Beam's own names (``direct``, ``DirectRunner``, ``flink``, ``spark``,
``prism``, ``dataflow``...), ``dask``/``DaskRunner`` (Beam has the runner but no short name for
it) or a ``module.Class`` path; it is resolved to the class path here, and the runner's module
is imported before the options are checked, because runners such as Dask register their
options only when imported. Every ``--flag`` must be one that a registered options class
defines, by the name the user types (Beam's ``--dask_client_address`` is stored as ``address``).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import re
import shlex
from collections.abc import Sequence
from typing import Any

from ..errors import DatasetError, missing_extra

# Local default: every core, in processes (threads would share one GIL).
LOCAL_DEFAULTS = ("--direct_running_mode=multi_processing",)
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
# Beam's Dask runner puts 128 elements in a partition (one task) unless told otherwise; our
# elements are whole shards or episodes, so one each is what spreads them over the workers.
DASK_DEFAULTS = ("--dask_partition_size=1",)
_DASK_CLUSTER_FLAGS = ("dask_client_address", "dask_scheduler_file")
# Beam's runners that run in this machine's processes (StandardOptions.LOCAL_RUNNERS).
_LOCAL_RUNNERS = ("BundleBasedDirectRunner", "DirectRunner", "SwitchingDirectRunner", "FnApiRunner", "PrismRunner",
                  "TestDirectRunner")
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


def _with_flag(args: Sequence[str], name: str, value: str) -> list[str]:
    """``args`` with every ``--name`` set to ``value`` (in either spelling)."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == f"--{name}" and i + 1 < len(args):
            out.append(f"--{name}={value}")
            skip = True
        elif arg.startswith(f"--{name}="):
            out.append(f"--{name}={value}")
        else:
            out.append(arg)
    return out


def resolve_runner(name: str) -> str:
    """A ``--runner`` value -> the runner's ``module.Class`` path, as Beam resolves it (the class
    name or the name without "Runner", any case), plus ``dask``/``DaskRunner``."""
    require_beam()
    from apache_beam.options.pipeline_options import StandardOptions

    known = {path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS}
    known["daskrunner"] = DASK_RUNNER
    key = name.strip().lower()
    path = known.get(key) or known.get(key + "runner")
    if path is not None:
        return path
    if "." in name.strip(".") and all(part.isidentifier() for part in name.split(".")):
        return name
    raise BeamError(f"--beam-options: unknown Beam runner {name!r} (direct, prism, dask, flink, spark, dataflow, "
                    "portable, another of Beam's runner class names, or a runner class as module.Class)")


def _runner_class(args: Sequence[str]) -> str:
    runner = _flag(args, "runner")
    return (runner or "DirectRunner").rsplit(".", 1)[-1]


def is_dask(args: Sequence[str]) -> bool:
    return _runner_class(args) == "DaskRunner"


def is_local(args: Sequence[str]) -> bool:
    """Whether the workers are processes of this machine (they see its temporary folder): the
    direct runners, and Dask with no cluster named (it then starts a local one)."""
    if is_dask(args):
        return all(_flag(args, name) is None for name in _DASK_CLUSTER_FLAGS)
    return _runner_class(args) in _LOCAL_RUNNERS


def pipeline_args(beam_options: str | Sequence[str] | None) -> list[str]:
    """The user's options with ``--runner`` as a class path, plus multi-process DirectRunner
    defaults for a local run that names none."""
    args = split_options(beam_options)
    runner = _flag(args, "runner")
    if runner is not None:
        args = _with_flag(args, "runner", resolve_runner(runner))
    if _flag(args, "default_sdk_harness_log_level") is None:
        args.append("--default_sdk_harness_log_level=ERROR")  # workers' start-up chatter is not the user's business
    if is_local(args) and not is_dask(args):
        if _flag(args, "direct_running_mode") is None:
            args += list(LOCAL_DEFAULTS)
        if _flag(args, "direct_num_workers") is None:
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return args


def import_runner(args: Sequence[str]) -> None:
    """Import the named runner's module, so that the options it defines are registered; one
    line naming what to install when it cannot be."""
    path = _flag(args, "runner")
    if path is None or "." not in path:
        return
    module, cls = path.rsplit(".", 1)
    if path == DASK_RUNNER:
        try:
            import dask.distributed  # noqa: F401  (Beam's module would fail later, less clearly)
        except ImportError as e:
            raise missing_extra("dask[distributed]", "beam") from e
        # A local cluster's scheduler and workers run in this process and log each step at INFO.
        quiet = logging.getLogger("distributed")
        quiet.setLevel(max(quiet.getEffectiveLevel(), logging.WARNING))
    try:
        found = getattr(importlib.import_module(module), cls, None)
    except ImportError as e:
        raise ImportError(f"--beam-options: the runner {cls} cannot be loaded: {e}") from e
    if found is None:
        raise BeamError(f"--beam-options: {module} has no runner {cls}")


class _Recorder(argparse.ArgumentParser):
    """Takes every option the options classes add; only their flag names are used."""

    def add_value_provider_argument(self, *args: Any, **kwargs: Any) -> Any:
        return self.add_argument(*args, **kwargs)


def known_flags() -> set[str]:
    """Every ``--flag`` that Beam's registered options classes define (those imported so far),
    as the user types it; collected the way Beam collects them when it parses."""
    require_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    parser = _Recorder(add_help=False, allow_abbrev=False, conflict_handler="resolve")
    seen: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        try:
            cls._add_argparse_args(parser)
        except Exception:  # a third-party class that cannot describe itself adds no flags
            continue
    return {flag for flag in parser._option_string_actions if flag.startswith("--")}


def pipeline_options(beam_options: str | Sequence[str] | None) -> Any:
    require_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    args = pipeline_args(beam_options)
    import_runner(args)
    # Unknown flags are kept by PipelineOptions and silently ignored; a typo must not be.
    known = known_flags()
    # (Beam before 2.64 has no partition options, and put one element in each partition.)
    if is_dask(args) and "--dask_partition_size" in known and all(
            _flag(args, name) is None for name in ("dask_partition_size", "dask_npartitions")):
        args += list(DASK_DEFAULTS)
    unknown = [a for a in args if a.startswith("--") and a != "--" and a.split("=", 1)[0] not in known]
    if unknown:
        close = [m for a in unknown for m in difflib.get_close_matches(a.split("=", 1)[0], known, n=1)]
        hint = f"did you mean {', '.join(close)}?" if close else "see the runner's documentation"
        raise BeamError(f"--beam-options: unknown Beam option(s) {', '.join(unknown)} ({hint})")
    return PipelineOptions(args)


def beam_worker_count(beam_options: str | Sequence[str] | None) -> int:
    """How many workers the run will have, for sizing shards: the options' own count, else
    this machine's cores locally, else a cluster-sized guess."""
    args = pipeline_args(beam_options)
    for name in _WORKER_FLAGS:
        value = _flag(args, name)
        if value is not None and re.fullmatch(r"\d+", value) and int(value) > 0:
            return int(value)
    return (os.cpu_count() or 1) if is_local(args) else _CLUSTER_GUESS
