"""``doctor`` on RLDS/TFDS (Open X-Embodiment), ALOHA/ACT and robomimic: each episode read whole
through the format's own reader, then checked like a native one.

These formats keep an episode in one record or file, frames included, so reading it is the
check of its files (a truncated shard, a corrupt JPEG, fields of different lengths are the
reader's errors). With ``--frames none`` the readers are opened without cameras and no frame
is decoded. What the formats declare about their episodes is checked against what they hold:
robomimic's ``num_samples`` and ``total``, our sidecars' totals, and the action and proprio
statistics an Open X-Embodiment ``dataset_statistics.json`` carries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...datasets.doctor import EpisodeCheck
from ...datasets.features import DatasetInfo
from ...datasets.stats import FeatureStats
from .. import open_reader
from ..base import ConversionError, FormatReader
from .checks import check_numbers, check_timing, compare_stats, global_stats_file, problem

# What the OXE writer (and Octo/OpenVLA) call the statistics next to an RLDS dataset, and which
# of our features each block describes.
OXE_STATS_FILE = "dataset_statistics.json"
OXE_FEATURES = {"action": "action", "proprio": "observation.state"}


class ReaderSource:
    """An RLDS, ALOHA or robomimic dataset opened for checking."""

    def __init__(self, root: Path, fmt: str, decode_frames: str) -> None:
        self.root = Path(root)
        self.format_name = fmt
        self.full: FormatReader = open_reader(self.root, fmt)
        # Without cameras the readers neither read nor decode frames.
        self.reader = open_reader(self.root, fmt, cameras=[]) if decode_frames == "none" else self.full
        self._info: DatasetInfo | None = None

    @property
    def info(self) -> DatasetInfo:
        if self._info is None:
            self._info = self.full.info
        return self._info

    def close(self) -> None:
        for reader in {id(self.full): self.full, id(self.reader): self.reader}.values():
            close = getattr(reader, "close", None)
            if close is not None:
                close()

    def _episode_path(self, idx: int) -> Path:
        if self.format_name == "rlds":
            return Path(self.full.data_dir)  # type: ignore[attr-defined]
        if self.format_name == "robomimic":
            return Path(self.full.file)  # type: ignore[attr-defined]
        from ..aloha.schema import episode_files

        return episode_files(self.root).get(idx, self.root / f"episode_{idx}.hdf5")

    def _where(self, idx: int) -> str:
        path = self._episode_path(idx)
        if self.format_name == "rlds":
            return f"{path} episode {idx}"
        return f"{path} demo_{idx}" if self.format_name == "robomimic" else str(path)

    # -- metadata -----------------------------------------------------------------------------

    def jobs(self) -> tuple[list[tuple[int, dict[str, Any]]], list[str], list[str]]:
        lengths: dict[int, int] = {}
        errors: list[str] = []
        if self.format_name == "robomimic":
            lengths, errors = _robomimic_lengths(Path(self.full.file))  # type: ignore[attr-defined]
        jobs = [(i, {"format": self.format_name, **({"length": lengths[i]} if i in lengths else {})})
                for i in self.full.episode_indices()]
        return jobs, errors, []

    def after(self, checks: list[EpisodeCheck]) -> list[str]:
        """Warnings on the dataset's declared totals, once every episode was read."""
        if any(c.finite_rows is None and not c.steps for c in checks):
            return []  # an unreadable episode already explains any difference
        steps = sum(c.steps for c in checks)
        declared = self.info.total_frames
        if self.format_name == "robomimic":
            declared = _robomimic_total(Path(self.full.file))  # type: ignore[attr-defined]
        if declared and declared != steps:
            where = self.full.file if self.format_name == "robomimic" else self._sidecar_path()  # type: ignore[attr-defined]
            return [f"{where}: says the dataset has {declared} steps, its episodes have {steps}"]
        return []

    def _sidecar_path(self) -> Path:
        from ..base import SIDECAR

        folder = Path(self.full.data_dir) if self.format_name == "rlds" else self.root  # type: ignore[attr-defined]
        return folder / SIDECAR

    def global_stats(self) -> tuple[Any, list[str]]:
        if self.format_name != "rlds":
            return None, []
        return global_stats_file(Path(self.full.data_dir) / OXE_STATS_FILE,  # type: ignore[attr-defined]
                                 "statistics")

    def global_names(self, doc: dict[str, Any]) -> list[str]:
        return [OXE_FEATURES[k] for k in OXE_FEATURES if k in doc and OXE_FEATURES[k] in self.info.features]

    def compare_global(self, doc: dict[str, Any], totals: dict[str, FeatureStats | None],
                       checks: list[EpisodeCheck]) -> list[str]:
        """An OXE ``dataset_statistics.json`` against every episode's action and proprio values."""
        episodes, steps = len(checks), sum(c.steps for c in checks)
        path = Path(self.full.data_dir) / OXE_STATS_FILE  # type: ignore[attr-defined]
        out = []
        for key, name in OXE_FEATURES.items():
            fs = totals.get(name)
            if key in doc and fs is not None:
                line = compare_stats(doc[key], fs, f"{path}: {key} ({name})")
                if line:
                    out.append(line)
        for key, have in (("num_transitions", steps), ("num_trajectories", episodes)):
            value = doc.get(key)
            if value is not None and value != have:
                out.append(f"{path}: {key} is {value!r:.40}, the dataset has {have}")
        return out

    # -- one episode --------------------------------------------------------------------------

    def check_episode(self, idx: int, record: dict[str, Any],
                      decode_frames: str) -> tuple[EpisodeCheck, dict[str, FeatureStats] | None]:
        check = EpisodeCheck(index=idx, path=self._episode_path(idx))
        where = self._where(idx)
        try:
            episode = self.reader.read_episode(idx)
        except Exception as e:  # a doctor reports what it cannot read and goes on
            check.errors.append(problem(e, where))
            check.finite_rows = None
            return check, None
        try:
            return check, self._check(check, episode, record, where)
        except Exception as e:
            check.errors.append(problem(e, where))
            check.finite_rows = None
            return check, None

    def _check(self, check: EpisodeCheck, episode: Any, record: dict[str, Any],
               where: str) -> dict[str, FeatureStats] | None:
        n = len(episode)
        check.steps = n
        declared = record.get("length")
        if declared is not None and declared != n:
            check.errors.append(f"{where}: {n} steps, its num_samples attribute says {declared}")
        if n == 0:
            check.errors.append(f"{where}: episode has no steps")
            return None
        stats = check_numbers(check, episode.data, where)
        clock = episode.metadata.get("clock")
        check_timing(check, np.asarray(episode.timestamp, np.float64), self.info.fps, where=where,
                     image_timestamp={c: t for c, t in episode.image_timestamp.items() if len(t) == n},
                     frame_index={c: f for c, f in episode.frame_index.items() if len(f) == n},
                     lateness=episode.tick_lateness,
                     clock=clock if isinstance(clock, str) else self.info.clock)
        return stats


def _robomimic_lengths(file: Path) -> tuple[dict[int, int], list[str]]:
    """``num_samples`` of each ``demo_<i>`` (where the attribute is a whole number)."""
    from ..foreign_hdf5 import DAMAGE, open_foreign

    out: dict[int, int] = {}
    try:
        with open_foreign(file, "robomimic HDF5 file") as f:
            data = f["data"]
            for key in data:
                if not key.startswith("demo_") or not key[5:].isdigit():
                    continue
                value = data[key].attrs.get("num_samples")
                if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
                    out[int(key[5:])] = int(value)
    except (ConversionError, *DAMAGE):
        return {}, []  # the reader says what is wrong, episode by episode
    return out, []


def _robomimic_total(file: Path) -> int | None:
    from ..foreign_hdf5 import DAMAGE, open_foreign

    try:
        with open_foreign(file, "robomimic HDF5 file") as f:
            value = f["data"].attrs.get("total")
    except (ConversionError, *DAMAGE):
        return None
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) else None
