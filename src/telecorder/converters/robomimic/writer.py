"""Writing robomimic HDF5 files (layout in :mod:`.schema`) that robomimic's ``SequenceDataset`` trains on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...atomic import write_json_atomic
from ...datasets.episode_file import Episode
from ...datasets.features import IMAGE_PREFIX, DatasetInfo
from ...datasets.stats import DatasetStats, FeatureStats
from ..action_scaling import ActionScaling
from ..base import SIDECAR, ConversionError, FormatWriter
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
    ACTION_MODES,
    ACTIONS_ATTR,
    DEFAULT_CAMERA_KEYS,
    FIXED,
    FPS_ATTR,
    NO_SIMULATOR_ENV_TYPE,
    ROBOSUITE_ENV_TYPE,
    TASK_ATTR,
    obs_key,
    open_file,
    scale_actions,
    split_demos,
)


class RobomimicWriter(FormatWriter):
    """Writes ``<path>/demo.hdf5`` that robomimic's ``SequenceDataset`` trains on.

    Options: ``filename`` (default ``demo.hdf5``), ``valid_fraction`` (default 0.1; at least one
    validation demo once there are two), ``split_seed`` (default 0), ``camera_keys`` (camera ->
    obs key, over the defaults ``front``/``wrist``), ``next_obs`` (default True), ``compress``
    (gzip the obs, like robomimic's ``--compress``; default False), ``actions`` (``normalized``:
    scaled into [-1, 1] with the scaling stored, the default; ``raw``: robot units; data from a
    robosuite file stays raw unless asked), ``env_name``, ``env_type``, ``env_kwargs``
    (``env_args``; by default the source's when it was robomimic, else the robot type and type 0,
    no simulator).

    ``part`` (default False): write one part of a sharded conversion (see ``parts.py``). A part
    cannot know the action range of the whole dataset, so it stores its actions unscaled (as float64,
    like the demos of a sequential write before their scaling) and their exact per-dimension range in
    ``part_stats.json``; :func:`.merge.merge_parts` scales them while copying the demos into one file.
    ``encode_threads`` is accepted for the pipeline's sake: nothing here encodes on other threads.
    """

    format_name = "robomimic"

    def __init__(self, path: Path, info: DatasetInfo, **options: Any) -> None:
        super().__init__(path, info, **options)
        self.filename = str(options.get("filename", "demo.hdf5"))
        self.valid_fraction = float(options.get("valid_fraction", 0.1))
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConversionError(f"{self.path}: valid_fraction must be within [0, 1), not {self.valid_fraction}")
        self.split_seed = int(options.get("split_seed", 0))
        self.part = bool(options.get("part", False))
        self.encode_threads = options.get("encode_threads")
        self.next_obs = bool(options.get("next_obs", True))
        self.compression = "gzip" if options.get("compress") else None
        source_env = info.extra.get("robomimic_env_args")
        from_robosuite = isinstance(source_env, dict) and source_env.get("type") == ROBOSUITE_ENV_TYPE
        # robosuite's controllers take the actions as recorded; scaling them would break its rollouts.
        self.actions = str(options.get("actions") or ("raw" if from_robosuite else "normalized"))
        if self.actions not in ACTION_MODES:
            raise ConversionError(f"{self.path}: actions must be one of {ACTION_MODES}, not {self.actions!r}")
        self.env_args = self._env_args(options)
        if "action" not in info.features or info.features["action"].is_image:
            raise ConversionError(f"{self.path}: robomimic demos need an 'action' feature; the source has none")
        camera_keys = {**DEFAULT_CAMERA_KEYS, **dict(options.get("camera_keys") or {})}
        self._locations: dict[str, str] = {}
        for spec in info.features.values():
            key = obs_key(spec, camera_keys)
            if key is not None:
                loc = f"obs/{key}"
            elif spec.name in FIXED:
                loc = FIXED[spec.name]
            else:
                loc = f"{EXTRAS}/data/{spec.h5_path}"
            taken = [n for n, other in self._locations.items() if other == loc]
            if taken:
                raise ConversionError(f"{self.path}: features {taken[0]!r} and {spec.name!r} would both be {loc}")
            self._locations[spec.name] = loc
        self.file_path = self.path / self.filename
        self.path.mkdir(parents=True, exist_ok=True)
        self._file = open_file(self.file_path, "w")
        self._data = self._file.create_group("data")
        self._demos: dict[str, dict[str, Any]] = {}
        self._total = 0
        self._action_min: np.ndarray | None = None
        self._action_max: np.ndarray | None = None
        self._action_stats: FeatureStats | None = None  # part mode: what the merge scales by
        self._closed = False

    def _env_args(self, options: dict[str, Any]) -> dict[str, Any]:
        base = self.info.extra.get("robomimic_env_args")
        env = dict(base) if isinstance(base, dict) else {
            # env_kwargs go to the environment's constructor, so our description stays out of them.
            "env_name": self.info.robot_type, "type": NO_SIMULATOR_ENV_TYPE, "env_kwargs": {},
            "telecorder": {
                "robot_type": self.info.robot_type,
                "control_freq": float(self.info.fps),
                "actions": self.actions,
                "note": "type 0 is no robomimic environment class (not robosuite, gym or iGibson): train "
                        "with experiment.rollout.enabled=false, or map type 0 to your own EnvBase subclass",
            },
        }
        for opt, key in (("env_name", "env_name"), ("env_type", "type"), ("env_kwargs", "env_kwargs")):
            if options.get(opt) is not None:
                env[key] = options[opt]
        return env

    def write_episode(self, episode: Episode) -> None:
        demo = f"demo_{len(self._demos)}"
        where = f"{self.file_path}: {demo}"
        numeric, frames = episode_arrays(episode, self.info, where)
        meta = plain_metadata(episode.metadata, f"{where} (episode {episode.index})")
        if self.actions == "normalized":
            self._track_action_range(numeric["action"], f"{where} (episode {episode.index})")
            if self.part:
                stats = FeatureStats.from_array(numeric["action"], name="action")
                self._action_stats = stats if self._action_stats is None else self._action_stats.merge(stats)
        arrays = {**numeric, **{IMAGE_PREFIX + c: v for c, v in frames.items()}}
        try:
            self._write(self._data.create_group(demo), episode, arrays, meta)
        except BaseException:
            if demo in self._data:
                del self._data[demo]
            raise
        self._demos[demo] = {"source_index": int(episode.index), "length": len(episode), "metadata": meta}
        self._total += len(episode)

    def _track_action_range(self, action: np.ndarray, where: str) -> None:
        flat = action.reshape(len(action), -1).astype(np.float64)
        bad = ~np.isfinite(flat).all(axis=1)
        if bad.any():
            raise ConversionError(
                f"{where}: action is not finite at step {int(np.argmax(bad))}; normalized robomimic actions "
                "need finite values (fix the episode, leave it out with --episodes, or use --robomimic-actions raw)")
        lo, hi = flat.min(axis=0), flat.max(axis=0)
        self._action_min = lo if self._action_min is None else np.minimum(self._action_min, lo)
        self._action_max = hi if self._action_max is None else np.maximum(self._action_max, hi)

    def _normalize_actions(self) -> dict[str, Any] | str:
        """Rescale every demo's ``actions`` in place once the whole range is known; the record to store."""
        # A part's actions wait for the range of the whole dataset: the merge scales them.
        if self.actions == "raw" or self.part or self._action_min is None or self._action_max is None:
            return "raw"
        scaling = ActionScaling.from_range(self._action_min, self._action_max)
        for demo in self._demos:
            scale_actions(self._data[demo]["actions"], scaling)
        # The dtype the actions had, so that a reader without our sidecar maps back to the same values.
        return {**scaling.to_dict(), "dtype": self.info.features["action"].dtype}

    def _write(self, g: h5py.Group, episode: Episode, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        n = len(episode)
        g.attrs["num_samples"] = n
        task = meta.get("task") or meta.get("language_instruction")
        if task:
            g.attrs[TASK_ATTR] = str(task)
        # The verbatim instruction and task id per demo, readable without our sidecar.
        g.attrs.update(task_attrs(meta))
        for name, arr in arrays.items():
            loc = self._locations[name]
            if name == "action" and self.actions == "normalized":
                # float64 holds the scaled values finely enough that mapping back gives the source's
                # float32 actions bit for bit; robomimic casts to float32 for training anyway.
                arr = arr.astype(np.float64)
            big = arr.ndim >= 3
            opts = {"compression": self.compression} if self.compression and loc.startswith("obs/") else {}
            ds = g.create_dataset(loc, data=arr, chunks=(1, *arr.shape[1:]) if big else None, **opts)
            ds.attrs[FEATURE_ATTR] = name
            if self.next_obs and loc.startswith("obs/"):
                shifted = np.concatenate([arr[1:], arr[-1:]])
                g.create_dataset("next_" + loc, data=shifted, chunks=ds.chunks, **opts)

        def derived(loc: str, data: np.ndarray, why: str) -> None:
            if loc not in g:
                g.create_dataset(loc, data=data).attrs[DERIVED_ATTR] = why

        rewards = np.zeros(n, np.float64)
        rewards[-1] = 1.0 if meta.get("success") else 0.0
        derived("rewards", rewards, "sparse: 1 at the last step of a successful demo")
        dones = np.zeros(n, np.int64)
        dones[-1] = 1
        derived("dones", dones, "1 at the last step")
        if "observation.state" in arrays:
            derived("states", arrays["observation.state"], "copy of observation.state")
        write_extras(g, episode, self.info.cameras)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            actions = self._normalize_actions()
            self._data.attrs[ACTIONS_ATTR] = json.dumps(actions)
            self._data.attrs["total"] = self._total
            self._data.attrs["env_args"] = json.dumps(self.env_args)
            self._data.attrs[FPS_ATTR] = float(self.info.fps)
            train, valid = split_demos(list(self._demos), self.valid_fraction, self.split_seed)
            self._file.create_dataset("mask/train", data=np.array(train, dtype="S"))
            self._file.create_dataset("mask/valid", data=np.array(valid, dtype="S"))
        finally:
            self._file.close()
        info = replace(self.info, total_episodes=len(self._demos), total_frames=self._total)
        write_json_atomic(self.path / SIDECAR, {
            "format": self.format_name,
            "file": self.filename,
            "info": info.to_dict(),
            "locations": self._locations,
            "env_args": self.env_args,
            "actions": actions,
            "mask": {"train": train, "valid": valid},
            "demos": self._demos,
            # What the merge of parts needs to finish the dataset as the sequential writer would.
            **({"part": {"actions": self.actions, "valid_fraction": self.valid_fraction,
                         "split_seed": self.split_seed}} if self.part else {}),
        })
        if self.part:
            stats = {"action": self._action_stats} if self._action_stats is not None else {}
            write_json_atomic(self.path / PART_STATS, DatasetStats(stats).to_json_dict())
