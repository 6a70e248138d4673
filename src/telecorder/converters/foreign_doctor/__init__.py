"""``telecorder doctor`` on the formats telecorder reads but did not record: LeRobot v2.0/v2.1/v3.0,
RLDS/TFDS (Open X-Embodiment), ALOHA/ACT and robomimic, read in place and never written to.

The report is the native doctor's :class:`~telecorder.datasets.doctor.DoctorReport`, one
:class:`~telecorder.datasets.doctor.EpisodeCheck` per episode, so the table, the JSON and the
exit status are the same. Which checks apply depends on what a format declares: see
:mod:`.lerobot` (lengths, the timestamp grid, videos frame by frame, statistics files) and
:mod:`.episodes` (RLDS, ALOHA, robomimic). ``repair`` is native only: a foreign dataset is
converted first.

:func:`check_foreign_episode` has the signature of the native per-episode check
(:func:`telecorder.datasets.doctor.check_episode`), for runners that map it over episodes
elsewhere (the ``record`` of each job says the format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ...datasets.doctor import DoctorReport, EpisodeCheck, EpisodeChecker
from ...datasets.features import DatasetInfo
from ...datasets.stats import FeatureStats
from ...errors import DatasetError
from .. import FORMATS, detect_format
from ..base import ConversionError
from .checks import merge_stats

__all__ = ["FOREIGN_FORMATS", "check_foreign", "check_foreign_episode", "doctor_format", "repair_refusal"]

FOREIGN_FORMATS = ("lerobot", "rlds", "aloha", "robomimic")
DECODE_CHOICES = ("none", "ends", "all")


class _Source(Protocol):
    root: Path
    format_name: str

    @property
    def info(self) -> DatasetInfo: ...
    def jobs(self) -> tuple[list[tuple[int, dict[str, Any]]], list[str], list[str]]: ...
    def check_episode(self, idx: int, record: dict[str, Any],
                      decode_frames: str) -> tuple[EpisodeCheck, dict[str, FeatureStats] | None]: ...
    def global_stats(self) -> tuple[Any, list[str]]: ...
    def global_names(self, doc: dict[str, Any]) -> list[str]: ...
    def compare_global(self, doc: dict[str, Any], totals: dict[str, FeatureStats | None],
                       checks: list[EpisodeCheck]) -> list[str]: ...
    def after(self, checks: list[EpisodeCheck]) -> list[str]: ...
    def close(self) -> None: ...


def doctor_format(path: str | Path, fmt: str | None = None) -> str:
    """``"native"`` or the foreign format of ``path``: ``fmt`` when given, else what ``convert``
    detects. A folder no format recognises goes to the native doctor, which names what is
    missing or damaged in it (a native dataset with a broken ``meta/info.json`` is one)."""
    if fmt is not None:
        if fmt not in FORMATS or FORMATS[fmt][1] is None:
            readable = ", ".join(n for n, entry in FORMATS.items() if entry[1] is not None)
            raise DatasetError(f"--format {fmt}: not a format telecorder reads ({readable})")
        return fmt
    path = Path(path)
    if not path.exists():
        return "native"
    try:
        return detect_format(path)
    except ConversionError:
        if path.is_dir() and not (path / "meta" / "info.json").exists() and not (path / "meta").is_dir():
            raise DatasetError(
                f"{path} is not a telecorder dataset (no meta/info.json), nor one of the formats telecorder "
                "reads (LeRobot v2/v3, RLDS/TFDS, ALOHA HDF5, robomimic); pass --format FORMAT if it is one"
            ) from None
        return "native"


def repair_refusal(path: str | Path, fmt: str) -> str:
    """The one line that refuses ``doctor --repair`` on a foreign dataset."""
    return (f"{path}: --repair mends telecorder datasets only, and this is a {fmt} dataset (doctor never writes "
            f"into it); convert it first (telecorder convert {path} OUT --to native), then check or repair OUT")


def open_source(root: str | Path, fmt: str, decode_frames: str = "ends") -> _Source:
    """The dataset at ``root`` opened for checking; ConversionError when not even its metadata reads."""
    if fmt not in FOREIGN_FORMATS:
        raise ConversionError(f"{root}: doctor checks {fmt!r} datasets natively, not as a foreign format")
    if decode_frames not in DECODE_CHOICES:
        raise ConversionError(f"--frames must be one of {', '.join(DECODE_CHOICES)}, not {decode_frames!r}")
    if fmt == "lerobot":
        from .lerobot import LeRobotSource

        return LeRobotSource(Path(root))
    from .episodes import ReaderSource

    return ReaderSource(Path(root), fmt, decode_frames)


def check_foreign(path: str | Path, fmt: str, *, decode_frames: str = "ends",
                  check_episodes: EpisodeChecker | None = None) -> DoctorReport:
    """Check a foreign dataset; ``decode_frames`` is ``none``, ``ends`` or ``all`` as natively.

    ``check_episodes`` runs the per-episode checks elsewhere (it is given ``jobs`` whose records
    :func:`check_foreign_episode` takes); the comparison with the dataset-wide statistics file
    needs every episode's statistics and is then left out, with a warning."""
    root = Path(path)
    src = open_source(root, fmt, decode_frames)
    try:
        report = DoctorReport(root=root, info=src.info)
        jobs, report.errors, report.warnings = src.jobs()
        doc, problems = src.global_stats()
        report.errors += problems
        names = src.global_names(doc) if doc is not None else []
        totals: dict[str, FeatureStats | None] = {}
        if check_episodes is None:
            checks = []
            for idx, record in jobs:
                check, stats = src.check_episode(idx, record, decode_frames)
                checks.append(check)
                merge_stats(totals, stats, names)
        else:
            checks = check_episodes(root, src.info, jobs, decode_frames)
            if names:
                report.warnings.append(f"{root}: the dataset's statistics file is compared with the data by the "
                                       "local runner only (each episode's own statistics were checked)")
                names = []
        report.episodes = sorted(checks, key=lambda c: c.index)
        if names:
            report.errors += src.compare_global(doc, totals, report.episodes)
        report.warnings += src.after(report.episodes)
    finally:
        src.close()
    return report


# One source kept open per process: a runner calls check_foreign_episode once per episode.
_OPEN: dict[tuple[str, str, str], _Source] = {}


def check_foreign_episode(root: Path, info: DatasetInfo, idx: int, record: dict[str, Any],
                          decode_frames: str) -> EpisodeCheck:
    """Every check of one episode of a foreign dataset (``record["format"]`` names the format);
    the same signature as :func:`telecorder.datasets.doctor.check_episode`."""
    key = (str(Path(root).resolve()), str(record.get("format")), decode_frames)
    src = _OPEN.get(key)
    if src is None:
        for old in _OPEN.values():
            old.close()
        _OPEN.clear()
        try:
            src = _OPEN[key] = open_source(root, str(record.get("format")), decode_frames)
        except DatasetError as e:
            return EpisodeCheck(index=idx, path=Path(root), errors=[str(e)], finite_rows=None)
    return src.check_episode(idx, record, decode_frames)[0]
