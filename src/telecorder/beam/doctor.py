"""``telecorder doctor --runner beam``: the per-episode checks as a Beam pipeline.

Episodes are checked in parallel by the workers (:func:`telecorder.datasets.doctor.check_episode`,
the very function the local doctor runs); the checks are combined into one list at the end and
written as JSON where the driver reads it back (a temporary folder here, ``--temp_location``
on a cluster). The dataset-level checks (index, statistics, totals) then run in the driver.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..converters.locations import check_path
from ..datasets.doctor import EpisodeCheck, EpisodeChecker, check_episode
from ..datasets.features import DatasetInfo
from ..errors import DatasetError
from .options import BeamError, is_local, pipeline_args, pipeline_options, require_beam
from .run import last_line, new_run, run_to_end

beam = require_beam()


class ChecksCombineFn(beam.CombineFn):
    """Episode checks (JSON text) -> one JSON list ordered by episode."""

    def create_accumulator(self) -> list[str]:
        return []

    def add_input(self, acc: list[str], check: str) -> list[str]:
        acc.append(check)
        return acc

    def merge_accumulators(self, accumulators: Iterable[list[str]]) -> list[str]:
        return [c for acc in accumulators for c in acc]

    def extract_output(self, acc: list[str]) -> str:
        checks = sorted((json.loads(c) for c in acc), key=lambda c: c["index"])
        return json.dumps(checks)


def _check(job: str, root: str, info: dict[str, Any], decode_frames: str, foreign: bool = False) -> str:
    idx, record = json.loads(job)
    if foreign:
        # Another format's episode (LeRobot, RLDS, ALOHA, robomimic): its own reader's checks.
        from ..converters.foreign_doctor import check_foreign_episode as check
    else:
        check = check_episode
    check = check(Path(root), DatasetInfo.from_dict(info), int(idx), record, decode_frames)
    return json.dumps(check.to_json_dict())


def _write(report: str, path: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as fh:
        fh.write(report.encode())


def beam_checker(beam_options: list[str], *, foreign: bool = False) -> EpisodeChecker:
    """An ``EpisodeChecker`` that runs the checks on Beam with these pipeline options
    (``foreign``: the episodes are of another format, checked by ``check_foreign_episode``)."""
    options = pipeline_options(beam_options)

    def run(root: Path, info: DatasetInfo, jobs: list[tuple[int, dict[str, Any]]],
            decode_frames: str) -> list[EpisodeCheck]:
        from apache_beam.io.filesystems import FileSystems

        check_path(root, "dataset")
        args = pipeline_args(beam_options)
        temp = options.get_all_options().get("temp_location")
        if temp is None and not is_local(args):
            raise BeamError("doctor --runner beam on a cluster needs --temp_location in --beam-options "
                            "(where the workers leave the combined report for this machine to read)")
        temp = temp or tempfile.gettempdir()
        out = FileSystems.join(temp, f"telecorder-doctor-{uuid.uuid4().hex}.json")

        def build(p: Any) -> None:
            _ = (
                p
                | "Episodes" >> beam.Create([json.dumps([idx, record]) for idx, record in jobs])
                | "Spread" >> beam.Reshuffle()
                | "Check" >> beam.Map(_check, str(Path(root).resolve()), info.to_dict(), decode_frames, foreign)
                | "Combine" >> beam.CombineGlobally(ChecksCombineFn())
                | "Write" >> beam.Map(_write, out)
            )

        try:
            run_to_end(beam.Pipeline(options=options), build, new_run())  # (checks write nothing)
        except DatasetError:
            raise
        except Exception as e:  # the runner's own (a cluster out of reach, a worker lost for good)
            raise BeamError(f"the Beam pipeline failed: {last_line(e)}") from e
        try:
            with FileSystems.open(out) as fh:
                checks = json.loads(fh.read())
            FileSystems.delete([out])
        except OSError as e:
            raise BeamError(f"the workers' report is not in --temp_location {temp} as seen from here ({last_line(e)}); "
                            "it must be a folder this machine and every worker share") from e
        return [EpisodeCheck.from_json_dict(c) for c in checks]

    return run
