"""PyTorch loaders over native telecorder datasets, for behavioural-cloning and VLA training.

:class:`TorchDataset` serves one sample per (episode, step) of a dataset folder: a short
history of camera frames and states, and a chunk of future actions, normalized with the
dataset's ``meta/stats.json``. :class:`MixtureDataset` samples from several such datasets
by weight, each keeping its own statistics.

Nothing is opened when a dataset is built: the sample index comes from the lengths in
``meta/episodes.jsonl``, so start-up costs the same for ten episodes or ten thousand.
Episode files are opened on first use inside the process that reads them (a DataLoader
worker), because HDF5 handles must not cross a ``fork``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import DatasetError, missing_extra
from .dataset import Dataset
from .episode_file import EpisodeReader
from .features import read_json
from .images import decode_image
from .model_inputs import concat_state, concat_summaries, model_image

try:
    import torch
    from torch.utils.data import Dataset as _TorchBase
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["ActionTokenizer", "MixtureDataset", "TorchDataset"]

NORMALIZE_MODES = ("q99", "mean_std", "min_max", "none")
PAD_MODES = ("repeat_last", "zero")
INTERVENTION_KEY = "intervention"
_EPS = 1e-8


class ActionTokenizer(Protocol):
    """What ``TorchDataset(tokenizer=...)`` needs: normalized actions in, token ids out.

    ``encode`` receives the sample's whole action chunk, already normalized, as a float32
    array of shape ``[horizon, action_dim]`` (padded rows included; mask them with
    ``action_is_pad``) and returns the ids to train on, e.g. a 256-bin discretizer's ids.
    """

    def encode(self, actions: np.ndarray) -> list[int]: ...


# -- normalization ---------------------------------------------------------------------


class _BoundsNormalizer:
    """Fallback for when ``telecorder.actions.normalize`` is unavailable.

    Same conventions as that module: ``q99`` is OpenVLA's BOUNDS_Q99 (clipped to [-1, 1]),
    ``min_max`` maps [min, max] to [-1, 1] unclipped, ``mean_std`` standardizes; a
    dimension with equal bounds normalizes to 0 and masked-out ones (False) pass through.
    """

    def __init__(self, mode: str, summary: dict[str, Any], mask: np.ndarray | None) -> None:
        self.mode = mode
        self.mask = mask
        if mode == "mean_std":
            self.a, self.b = np.asarray(summary["mean"], np.float64), np.asarray(summary["std"], np.float64)
        elif mode == "min_max":
            self.a, self.b = np.asarray(summary["min"], np.float64), np.asarray(summary["max"], np.float64)
        elif mode == "q99":
            self.a, self.b = np.asarray(summary["q01"], np.float64), np.asarray(summary["q99"], np.float64)

    def _masked(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return y if self.mask is None else np.where(self.mask, y, x)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.mode == "none":
            return x
        if self.mode == "mean_std":
            y = (x - self.a) / (self.b + _EPS)
        else:
            y = 2.0 * (x - self.a) / (self.b - self.a + _EPS) - 1.0
            if self.mode == "q99":
                y = np.clip(y, -1.0, 1.0)
            y = np.where(self.b == self.a, 0.0, y)
        return self._masked(x, y)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, np.float64)
        if self.mode == "none":
            return y
        if self.mode == "mean_std":
            x = y * (self.b + _EPS) + self.a
        else:
            x = np.where(self.b == self.a, self.a, 0.5 * (y + 1.0) * (self.b - self.a + _EPS) + self.a)
        return self._masked(y, x)


def make_normalizer(stats: dict[str, Any], feature: str, mode: str, mask: Sequence[bool] | None = None) -> Any:
    """A normalizer for ``feature`` from the JSON dict of ``meta/stats.json``.

    Uses :class:`telecorder.actions.normalize.Normalizer` when that module is importable,
    so training and inference share one implementation; otherwise an equivalent local one.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalization {mode!r} (use one of {', '.join(NORMALIZE_MODES)})")
    mask_arr = None if mask is None else np.asarray(mask, dtype=bool)
    summary = stats.get("features", {}).get(feature) if mode != "none" else {}
    if mode != "none" and (not summary or summary.get("count", 0) == 0):
        raise DatasetError(
            f"meta/stats.json has no statistics for {feature!r}; cannot normalize it with {mode!r} "
            "(recompute the statistics, or pass normalize='none')"
        )
    try:
        from ..actions.normalize import Normalizer
    except ImportError:
        return _BoundsNormalizer(mode, summary, mask_arr)
    return Normalizer.from_dataset_stats(stats, feature=feature, mode=mode, mask=mask_arr)


def make_state_normalizer(stats: dict[str, Any], keys: Sequence[str], mode: str) -> Any:
    """One normalizer for the concatenation of ``keys`` (see ``concat_state``), each part
    normalized with its own statistics from ``meta/stats.json``."""
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalization {mode!r} (use one of {', '.join(NORMALIZE_MODES)})")
    from ..actions.normalize import Normalizer

    if mode == "none":
        return Normalizer("none")
    return Normalizer(mode, concat_summaries(stats, keys))


# -- per-process episode cache ---------------------------------------------------------


@dataclass
class _OpenEpisode:
    reader: EpisodeReader
    state: np.ndarray  # normalized, float32 [T, D]
    action: np.ndarray  # normalized, float32 [T, A]
    instruction: str
    intervention: np.ndarray | None  # bool [T], None when the episode has no such feature


class TorchDataset(_TorchBase):
    """Map-style dataset: item ``i`` is one step of one episode, with history and action chunk.

    Each item is a dict:

    * ``images.<camera>``: uint8 ``[history, 3, h, w]`` RGB, decoded from the stored JPEG/PNG
      in the reading process and resized with ``cv2.INTER_AREA`` to ``image_size``
      (``(height, width)``; ``None`` keeps the stored size);
    * ``state``: float32 ``[history, D]``, normalized; ``state_is_pad``: bool ``[history]``,
      True for steps before the episode start (those repeat the first state and frame);
    * ``action``: float32 ``[horizon, A]``, normalized, starting at the current step;
      ``action_is_pad``: bool ``[horizon]``, True past the episode end, where rows repeat
      the last action (``pad="repeat_last"``) or are zero in normalized units (``"zero"``);
    * ``language_instruction`` (str), ``episode_index`` and ``step_index`` (int64 tensors);
    * ``action_tokens``: int64 ids from ``tokenizer.encode(normalized action chunk)`` when a
      tokenizer is given (see :class:`ActionTokenizer`).

    * ``intervention``: bool scalar tensor, True where a human acted in an episode recorded
      with a policy in the loop (the per-step feature ``intervention``; False when absent);
      ``weight``: float32 scalar tensor, the sample's weight (see below).

    ``state_key`` is one feature or a sequence of features concatenated in order (the
    ``state_keys`` of a policy); a concatenation is normalized with one normalizer whose
    parts use each feature's own statistics. ``state_normalize`` is the state's mode (None:
    the same as ``normalize``, which applies to actions).

    ``intervention_weight`` / ``policy_weight`` weight the steps of intervention data
    (HG-DAgger): a human-labelled step weighs ``intervention_weight`` (default 1), a
    policy-acted one ``policy_weight``, a step of an episode without the feature 1.0. Steps
    of weight 0 are left out of the index (``policy_weight=0`` keeps only human-labelled
    steps). :meth:`sample_weights` gives the weights for a ``WeightedRandomSampler``. Only
    with a weight option given does construction read the episode files' ``intervention``.
    With ``policy_weight=0`` the policy's actions are no labels at all: chunk rows the policy
    produced (after a hand-back) are marked in ``action_is_pad``.

    ``normalize_mask`` (one bool per action dimension, False = leave raw, e.g. a gripper)
    applies to actions; states are normalized in every dimension. ``episodes`` selects
    episode numbers (as in the index); ``exclude_bad`` drops index records marked
    ``"bad": true``. ``max_open_files`` bounds the HDF5 files each process keeps open.
    ``stats`` (the JSON dict of a ``meta/stats.json``) replaces the dataset's own statistics,
    so that several datasets trained together share one normalization.
    """

    def __init__(
        self,
        path: str | Path,
        cameras: Sequence[str] | None = None,
        image_size: tuple[int, int] | None = (224, 224),
        history: int = 1,
        horizon: int = 1,
        normalize: str = "q99",
        normalize_mask: Sequence[bool] | None = None,
        tokenizer: ActionTokenizer | None = None,
        episodes: Iterable[int] | None = None,
        exclude_bad: bool = True,
        pad: str = "repeat_last",
        state_key: str | Sequence[str] = "observation.state",
        action_key: str = "action",
        max_open_files: int = 16,
        state_normalize: str | None = None,
        intervention_weight: float | None = None,
        policy_weight: float = 1.0,
        stats: Mapping[str, Any] | None = None,
    ) -> None:
        if history < 1 or horizon < 1:
            raise ValueError(f"history and horizon must be >= 1, got {history} and {horizon}")
        if pad not in PAD_MODES:
            raise ValueError(f"unknown pad {pad!r} (use one of {', '.join(PAD_MODES)})")
        self.dataset = Dataset.open(path)
        self.root = self.dataset.root
        info = self.dataset.info
        self.cameras = list(info.cameras if cameras is None else cameras)
        unknown = [c for c in self.cameras if c not in info.cameras]
        if unknown:
            raise DatasetError(f"{self.root}: no camera(s) {unknown} (has {info.cameras})")
        if isinstance(state_key, str):
            self.state_keys: tuple[str, ...] = (state_key,)
        else:
            self.state_keys = tuple(str(k) for k in state_key)
            if not self.state_keys:
                raise ValueError("state_key: give at least one feature")
        for key in (*self.state_keys, action_key):
            if key not in info.features:
                raise DatasetError(f"{self.root}: no feature {key!r} (has {sorted(info.features)})")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.history, self.horizon, self.pad = int(history), int(horizon), pad
        self.state_key = state_key if isinstance(state_key, str) else self.state_keys
        self.action_key = action_key
        self.tokenizer = tokenizer
        self.max_open_files = max(1, int(max_open_files))

        records = self.dataset.records
        if episodes is not None:
            wanted = {int(e) for e in episodes}
            missing = wanted - {int(r["episode_index"]) for r in records}
            if missing:
                raise DatasetError(f"{self.root}: no episode(s) {sorted(missing)} in the index")
            records = [r for r in records if int(r["episode_index"]) in wanted]
        if exclude_bad:
            records = [r for r in records if not r.get("bad", False)]
        records = [r for r in records if int(r.get("length", 0)) > 0]

        if stats is None:
            stats_path = self.root / "meta" / "stats.json"
            stats = read_json(stats_path) if stats_path.exists() else {}
        self.normalize_mode = normalize
        self.state_normalize_mode = normalize if state_normalize is None else state_normalize
        if isinstance(state_key, str):
            self.state_normalizer = make_normalizer(stats, state_key, self.state_normalize_mode)
        else:
            self.state_normalizer = make_state_normalizer(stats, self.state_keys, self.state_normalize_mode)
        self.action_normalizer = make_normalizer(stats, action_key, normalize, normalize_mask)

        for name, w in (("intervention_weight", intervention_weight), ("policy_weight", policy_weight)):
            if w is not None and not (np.isfinite(w) and w >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {w}")
        self.intervention_weight = None if intervention_weight is None else float(intervention_weight)
        self.policy_weight = float(policy_weight)
        self.has_intervention = INTERVENTION_KEY in info.features
        # Per episode: the steps kept and their weights; None = every step, weight 1.
        self._keep: list[np.ndarray] | None = None
        self._weights: list[np.ndarray] | None = None
        if self.has_intervention and (self.intervention_weight is not None or self.policy_weight != 1.0):
            self._keep, self._weights, kept_records = [], [], []
            for rec in records:
                w = self._step_weights(rec)
                keep = np.flatnonzero(w > 0)
                if keep.size:
                    kept_records.append(rec)
                    self._keep.append(keep)
                    self._weights.append(w[keep])
            records = kept_records
            lengths = np.array([k.size for k in self._keep], dtype=np.int64)
        else:
            lengths = np.array([int(r["length"]) for r in records], dtype=np.int64)
        self.records = records
        self.episode_indices = [int(r["episode_index"]) for r in records]
        self._ends = np.cumsum(lengths)
        # Open readers per process id: a forked worker inherits the parent's entries but
        # never touches (or closes) them, since HDF5 handles are not fork-safe.
        self._readers: dict[int, OrderedDict[int, _OpenEpisode]] = {}

    def _step_weights(self, rec: dict[str, Any]) -> np.ndarray:
        """Weight of every step of one episode, from its ``intervention`` column."""
        path = self.dataset.episode_path(int(rec["episode_index"]))
        with EpisodeReader(path, self.dataset.info) as reader:
            flags = _intervention_flags(reader)
        if flags is None:
            return np.ones(int(rec["length"]), dtype=np.float64)
        # A human-labelled step is a demonstration: weight 1 unless told otherwise, whatever the
        # policy steps weigh (policy_weight=0 must keep the corrections, not drop everything).
        human = 1.0 if self.intervention_weight is None else self.intervention_weight
        return np.where(flags, human, self.policy_weight).astype(np.float64)

    def sample_weights(self) -> np.ndarray:
        """Weight of every item (float64, ``len(self)``), for a ``WeightedRandomSampler``."""
        if self._weights is None:
            return np.ones(len(self), dtype=np.float64)
        return np.concatenate(self._weights) if self._weights else np.zeros(0, dtype=np.float64)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = {}  # spawned workers open their own files
        return state

    def locate(self, i: int) -> tuple[int, int]:
        """(episode number, step) of item ``i``."""
        pos, step, _ = self._locate(i)
        return self.episode_indices[pos], step

    def _locate(self, i: int) -> tuple[int, int, float]:
        """(position in ``records``, step, weight) of item ``i``."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        pos = int(np.searchsorted(self._ends, i, side="right"))
        start = int(self._ends[pos - 1]) if pos else 0
        if self._keep is None or self._weights is None:
            return pos, i - start, 1.0
        return pos, int(self._keep[pos][i - start]), float(self._weights[pos][i - start])

    def _episode(self, pos: int) -> _OpenEpisode:
        cache = self._readers.setdefault(os.getpid(), OrderedDict())
        ep = cache.get(pos)
        if ep is not None:
            cache.move_to_end(pos)
            return ep
        rec = self.records[pos]
        path = self.dataset.episode_path(int(rec["episode_index"]))
        reader = EpisodeReader(path, self.dataset.info)
        try:
            if isinstance(self.state_key, str):
                raw_state = reader.numeric(self.state_key)
            else:
                raw_state = concat_state({k: reader.numeric(k) for k in self.state_keys}, self.state_keys)
            state = self.state_normalizer.normalize(raw_state).astype(np.float32)
            intervention = _intervention_flags(reader) if self.has_intervention else None
            action = self.action_normalizer.normalize(reader.numeric(self.action_key)).astype(np.float32)
            attrs = reader.attrs
            if len(reader) != int(rec["length"]):
                raise DatasetError(f"{path}: {len(reader)} steps, but meta/episodes.jsonl says {rec['length']}")
        except BaseException:
            reader.close()
            raise
        instruction = str(attrs.get("language_instruction") or attrs.get("task") or rec.get("task") or "")
        ep = _OpenEpisode(reader, state.reshape(len(state), -1), action.reshape(len(action), -1), instruction,
                          intervention)
        cache[pos] = ep
        while len(cache) > self.max_open_files:
            _, old = cache.popitem(last=False)
            old.reader.close()
        return ep

    def _image(self, reader: EpisodeReader, camera: str, step: int) -> np.ndarray:
        rgb = decode_image(reader.encoded_frame(camera, step), where=f"{reader.path} camera {camera!r} step {step}")
        return model_image(rgb, self.image_size)

    def __getitem__(self, i: int) -> dict[str, Any]:
        pos, step, weight = self._locate(int(i))
        episode_index = self.episode_indices[pos]
        ep = self._episode(pos)
        length = len(ep.action)

        hist = np.arange(step - self.history + 1, step + 1)
        state_is_pad = hist < 0
        hist = np.maximum(hist, 0)
        chunk = np.arange(step, step + self.horizon)
        action_is_pad = chunk >= length
        if self.policy_weight == 0 and ep.intervention is not None:
            # Learning from corrections only: the policy's own actions later in the chunk (after a
            # hand-back) are no labels either, so they are masked like padding.
            action_is_pad = action_is_pad | ~ep.intervention[np.minimum(chunk, length - 1)]
        action = ep.action[np.minimum(chunk, length - 1)]
        if self.pad == "zero":
            action = np.where(action_is_pad[:, None], np.float32(0), action)

        out: dict[str, Any] = {}
        for cam in self.cameras:
            # Padded history repeats frame 0: decode each distinct step once.
            frames = {int(s): self._image(ep.reader, cam, int(s)) for s in np.unique(hist)}
            out[f"images.{cam}"] = torch.from_numpy(np.stack([frames[int(s)] for s in hist]))
        out["state"] = torch.from_numpy(np.ascontiguousarray(ep.state[hist]))
        out["state_is_pad"] = torch.from_numpy(state_is_pad)
        out["action"] = torch.from_numpy(np.ascontiguousarray(action, dtype=np.float32))
        out["action_is_pad"] = torch.from_numpy(action_is_pad)
        out["language_instruction"] = ep.instruction
        out["episode_index"] = torch.tensor(episode_index, dtype=torch.int64)
        out["step_index"] = torch.tensor(step, dtype=torch.int64)
        out["intervention"] = torch.tensor(bool(ep.intervention is not None and ep.intervention[step]))
        out["weight"] = torch.tensor(weight, dtype=torch.float32)
        if self.tokenizer is not None:
            encode = getattr(self.tokenizer, "encode", self.tokenizer)
            out["action_tokens"] = torch.as_tensor(list(encode(action)), dtype=torch.int64)
        return out

    def denormalize_action(self, action: Any) -> Any:
        """Normalized actions (tensor or array, last dim = action dim) back in robot units.

        A tensor comes back as a tensor of the same dtype and device; for a policy's output
        at inference time.
        """
        if isinstance(action, torch.Tensor):
            raw = self.action_normalizer.unnormalize(action.detach().cpu().double().numpy())
            return torch.as_tensor(np.asarray(raw), dtype=action.dtype, device=action.device)
        return np.asarray(self.action_normalizer.unnormalize(np.asarray(action)))

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        return np.asarray(self.action_normalizer.normalize(np.asarray(action)), dtype=np.float32)

    def close(self) -> None:
        """Close the episode files this process opened."""
        for ep in self._readers.pop(os.getpid(), OrderedDict()).values():
            ep.reader.close()


def _intervention_flags(reader: EpisodeReader) -> np.ndarray | None:
    """The episode's per-step ``intervention`` flags (bool ``[T]``), None when it has none."""
    try:
        a = np.asarray(reader.numeric(INTERVENTION_KEY))
    except DatasetError:
        return None
    return a.reshape(len(a), -1).astype(bool).any(axis=1)


class MixtureDataset(_TorchBase):
    """Several datasets sampled by weight, as Octo mixes its training sets.

    Map-style with a fixed ``length`` (default: the components' total): item ``i`` draws
    a component with probability proportional to its weight and then a uniform item of
    it, from a generator seeded by ``(seed, epoch, i)``. Items are therefore reproducible
    whatever the DataLoader's worker count or shuffling; call :meth:`set_epoch` to draw
    fresh samples each epoch. Each component keeps its own normalization statistics;
    items gain ``dataset_index`` (int64 tensor). For the default collate, components
    must produce the same keys and shapes (same cameras, image size, history, horizon).
    """

    def __init__(
        self,
        components: Sequence[tuple[Any, float]],
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        if not components:
            raise ValueError("MixtureDataset needs at least one (dataset, weight) pair")
        self.datasets = [d for d, _ in components]
        weights = np.array([float(w) for _, w in components], dtype=np.float64)
        if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError(f"mixture weights must be finite, >= 0 and not all zero, got {weights.tolist()}")
        for d, w in zip(self.datasets, weights, strict=True):
            if w > 0 and len(d) == 0:
                raise ValueError("a component with positive weight has no samples")
        self.weights = weights / weights.sum()
        self._cdf = np.cumsum(self.weights)
        self.seed = int(seed)
        self.epoch = 0
        self.length = int(length) if length is not None else sum(len(d) for d in self.datasets)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def choose(self, i: int) -> tuple[int, int]:
        """(component, item within it) that item ``i`` stands for."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        k = min(int(np.searchsorted(self._cdf, rng.random(), side="right")), len(self.datasets) - 1)
        while self.weights[k] == 0:  # float round-off at the top of the cdf
            k -= 1
        return k, int(rng.integers(len(self.datasets[k])))

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, j = self.choose(int(i))
        item = dict(self.datasets[k][j])
        item["dataset_index"] = torch.tensor(k, dtype=torch.int64)
        return item
