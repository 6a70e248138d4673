"""Writing ALOHA / ACT episode folders (layout in :mod:`.schema`) that ACT trains on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...atomic import write_json_atomic
from ...datasets.episode_file import Episode
from ...datasets.features import CLOCK_SIMULATION, DatasetInfo
from ...datasets.stats import DatasetStats
from ..base import SIDECAR, ConversionError, FormatWriter
from ..fixed_length import fit_episode
from ..hdf5_common import (
    DERIVED_ATTR,
    EXTRAS,
    FEATURE_ATTR,
    episode_arrays,
    plain_metadata,
    task_attrs,
    write_extras,
)
from ..parts import PART_STATS
from .schema import (
    COMPRESS_LEN,
    DEFAULT_JPEG_QUALITY,
    IMAGES,
    IS_PAD,
    LENGTH_FIT_ATTR,
    ORIGINAL_LENGTH_ATTR,
    STANDARD,
    encode_act_jpeg,
    feature_location,
)

#: robot_type of recordings made in MuJoCo: the built-in arm, the bimanual pair of it, any other model,
#: ACT's sim (our reader).
SIM_ROBOT_TYPES = ("telecorder_sim_arm", "telecorder_sim_bimanual", "aloha_sim")
SIM_ROBOT_PREFIX = "mujoco:"


def recorded_in_sim(info: DatasetInfo) -> tuple[bool, str]:
    """Whether the source was recorded in a simulator, and why we think so.

    ACT reads the root ``sim`` attribute to choose how actions line up with observations: on a
    real robot (``sim`` False) it starts each action chunk one step early, to make up for the
    follower lagging the leader; in simulation the command of step t is applied at step t, as in
    our recordings on the sim arm. So a simulated source must say True: an ALOHA source's own
    attribute, a recording on simulated time, or a sim robot.
    """
    recorded = info.extra.get("sim")
    if isinstance(recorded, bool):
        return recorded, f"the source's sim attribute ({recorded})"
    if info.clock == CLOCK_SIMULATION:
        return True, f"recorded on the {CLOCK_SIMULATION} clock"
    robot = info.robot_type or ""
    if robot in SIM_ROBOT_TYPES or robot.startswith(SIM_ROBOT_PREFIX):
        return True, f"robot_type {robot!r} is a simulated robot"
    return False, f"robot_type {robot!r} on the {info.clock} clock: a real robot"


class AlohaWriter(FormatWriter):
    """Writes ``episode_0.hdf5``, ``episode_1.hdf5``, ... that ACT's ``EpisodicDataset`` loads.

    Options: ``compress`` (JPEG rows like aloha's ``record_episodes.py --compress``; default False),
    ``jpeg_quality`` (default 50, aloha's), ``sim`` (the root ``sim`` attribute ACT reads; default
    :func:`recorded_in_sim` of the source), ``episode_length`` (every episode padded
    by holding its last step, or cut, to exactly this many steps: ACT stacks whole episodes; each
    file records its original length and whether it was padded or cut). Episodes are numbered from
    0 without gaps, as ACT expects; the source index is kept in the sidecar.

    ``part`` (default False): write one part of a sharded conversion (see ``parts.py``); the part is
    an ordinary ALOHA folder plus an empty ``part_stats.json`` (ALOHA keeps no statistics), and
    :func:`.merge.merge_parts` renames its files into the global numbering. ``encode_threads`` is accepted
    for the pipeline's sake: JPEG rows are already encoded on the calling thread.
    """

    format_name = "aloha"

    def __init__(self, path: Path, info: DatasetInfo, **options: Any) -> None:
        super().__init__(path, info, **options)
        self.compress = bool(options.get("compress", False))
        self.jpeg_quality = int(options.get("jpeg_quality", DEFAULT_JPEG_QUALITY))
        if not 1 <= self.jpeg_quality <= 100:
            raise ConversionError(f"{self.path}: jpeg_quality must be within 1..100, not {self.jpeg_quality}")
        sim = options.get("sim")
        self.sim, self.sim_reason = (bool(sim), "set by the caller") if sim is not None else recorded_in_sim(info)
        self.part = bool(options.get("part", False))
        self.encode_threads = options.get("encode_threads")
        length = options.get("episode_length")
        self.episode_length = None if length is None else int(length)
        if self.episode_length is not None and self.episode_length < 1:
            raise ConversionError(f"{self.path}: episode_length must be at least 1 step, not {self.episode_length}")
        for name in ("observation.state", "action"):
            spec = info.features.get(name)
            if spec is None or spec.is_image or len(spec.shape) != 1:
                have = ", ".join(info.features) or "none"
                raise ConversionError(
                    f"{self.path}: ACT episodes need a 1-D {name!r} feature "
                    f"({STANDARD[name]}); the source has: {have}"
                )
        self._locations = {s.name: feature_location(s.name) for s in info.numeric_features}
        self._episodes: dict[str, dict[str, Any]] = {}
        self._frames = 0
        self._closed = False
        self.path.mkdir(parents=True, exist_ok=True)

    def write_episode(self, episode: Episode) -> None:
        file = self.path / f"episode_{len(self._episodes)}.hdf5"
        fit = None
        if self.episode_length is not None:
            episode, fit = fit_episode(episode, self.episode_length, self.info.fps)
        numeric, frames = episode_arrays(episode, self.info, str(file))
        meta = plain_metadata(episode.metadata, f"{file}: episode {episode.index}")
        try:
            with h5py.File(file, "w") as f:
                self._write(f, episode, numeric, frames)
                if fit is not None:
                    f.attrs[ORIGINAL_LENGTH_ATTR] = fit.original_length
                    f.attrs[LENGTH_FIT_ATTR] = fit.how
                    is_pad = np.arange(len(episode)) >= fit.original_length
                    f.create_dataset(f"{EXTRAS}/{IS_PAD}", data=is_pad)
        except BaseException:
            file.unlink(missing_ok=True)
            raise
        entry = {"source_index": int(episode.index), "length": len(episode), "metadata": meta}
        if fit is not None:
            entry.update(fit.to_dict())
        self._episodes[file.name] = entry
        self._frames += len(episode)

    def _write(self, f: h5py.File, episode: Episode, numeric: dict[str, np.ndarray],
               frames: dict[str, np.ndarray]) -> None:
        n = len(episode)
        f.attrs["sim"] = self.sim
        f.attrs["compress"] = self.compress
        # The instruction where ACT-style loaders (and h5py users) see it, without our sidecar.
        f.attrs.update(task_attrs(episode.metadata))
        for name, arr in numeric.items():
            ds = f.create_dataset(self._locations[name], data=arr)
            ds.attrs[FEATURE_ATTR] = name
        if "observation.velocity" not in numeric:
            # ACT's get_norm_stats reads /observations/qvel; zeros keep it loading, and the marker
            # (and the sidecar's feature list) keep us from reading them back as measurements.
            state = numeric["observation.state"]
            ds = f.create_dataset(STANDARD["observation.velocity"], data=np.zeros_like(state))
            ds.attrs[DERIVED_ATTR] = "zeros: the source has no joint velocities"
        cams = list(frames)
        f.require_group(IMAGES)
        if self.compress and cams:
            encoded = {c: [encode_act_jpeg(fr, self.jpeg_quality) for fr in frames[c]] for c in cams}
            lengths = np.array([[len(b) for b in encoded[c]] for c in cams])
            padded = int(lengths.max())
            for c in cams:
                rows = np.zeros((n, padded), np.uint8)
                for t, buf in enumerate(encoded[c]):
                    rows[t, : len(buf)] = buf
                f.create_dataset(f"{IMAGES}/{c}", data=rows, chunks=(1, padded))
            # float32 like aloha's (it creates the dataset without a dtype); lengths stay exact.
            ds = f.create_dataset(COMPRESS_LEN, data=lengths.astype(np.float32))
            ds.attrs["camera_names"] = json.dumps(cams)
        else:
            for c in cams:
                f.create_dataset(f"{IMAGES}/{c}", data=frames[c], chunks=(1, *frames[c].shape[1:]))
        write_extras(f, episode, cams)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        info = replace(self.info, total_episodes=len(self._episodes), total_frames=self._frames)
        write_json_atomic(self.path / SIDECAR, {
            "format": self.format_name,
            "info": info.to_dict(),
            "locations": self._locations,
            "compress": self.compress,
            "sim": {"value": self.sim, "why": self.sim_reason},
            "jpeg_quality": self.jpeg_quality if self.compress else None,
            "episode_length": self.episode_length,
            "episodes": self._episodes,
        })
        if self.part:
            write_json_atomic(self.path / PART_STATS, DatasetStats({}).to_json_dict())
