"""PyTorch loader over any dataset the loaders read: native, LeRobot v2/v3, RLDS/Open X-Embodiment.

:class:`TorchDataset` serves one sample per (episode, step): a short history of camera frames
and states, and a chunk of future actions, normalized with the dataset's statistics.

Nothing but the episode list is read when a dataset is built, so start-up costs the same for
ten episodes or ten thousand. Episodes are opened on first use inside the process that reads
them (a DataLoader worker), because file handles and decoders must not cross a ``fork``; an
opened episode holds its numeric columns, and frames are decoded only for the steps a sample
shows.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..datasets.model_inputs import concat_state
from ..errors import DatasetError, missing_extra
from .base import EpisodeSource, LoadedEpisode, nonfinite_episodes
from .finite import finite_summary_problem, first_nonfinite, nonfinite_message
from .normalization import MODE_KEYS, NORMALIZE_MODES, make_normalizer, make_state_normalizer
from .source import open_source
from .tasks import PARAPHRASE_MODES, Paraphrases, check_paraphrase_mode

try:
    import torch
    from torch.utils.data import Dataset as _TorchBase
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["NORMALIZE_MODES", "PARAPHRASE_MODES", "ActionTokenizer", "TorchDataset"]

PAD_MODES = ("repeat_last", "zero")
INTERVENTION_KEY = "intervention"


class ActionTokenizer(Protocol):
    """What ``TorchDataset(tokenizer=...)`` needs: normalized actions in, token ids out.

    ``encode`` receives the sample's whole action chunk, already normalized, as a float32
    array of shape ``[horizon, action_dim]`` (padded rows included; mask them with
    ``action_is_pad``) and returns the ids to train on, e.g. a 256-bin discretizer's ids.
    """

    def encode(self, actions: np.ndarray) -> list[int]: ...


@dataclass
class _OpenEpisode:
    loaded: LoadedEpisode
    state: np.ndarray  # normalized, float32 [T, D]
    action: np.ndarray  # normalized, float32 [T, A]
    instruction: str
    intervention: np.ndarray | None  # bool [T], None when the episode has no such feature
    task_id: str = ""
    users: int = 0  # samples being read from it now (decode threads); it is closed only at 0


class _ProcessState:
    """What one process (the main one or a DataLoader worker) holds open: episodes, a thread pool."""

    def __init__(self) -> None:
        self.episodes: OrderedDict[int, _OpenEpisode] = OrderedDict()
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None


def _holds(summary: Any, names: Iterable[str]) -> bool:
    """Whether a statistics summary has every one of ``names``, all finite (``count`` may be absent)."""
    names = list(names)
    return (isinstance(summary, Mapping) and all(summary.get(n) is not None for n in names)
            and finite_summary_problem(summary, names) is None)


def _nothing_to_load(root: Path, records: Sequence[Mapping[str, Any]], chosen: bool) -> str:
    """Why a loader would hold no sample, as one line naming the dataset."""
    if not records:
        return (f"no episodes in {root}: its episode index lists none (an empty or damaged index); "
                "record or convert episodes into it, or restore the index")
    how = "the episodes chosen are" if chosen else f"all {len(records)} episode(s) are"
    return (f"no episodes in {root} to load: {how} empty or marked bad "
            "(exclude_bad=False keeps the bad ones)")


def _intervention_flags(values: np.ndarray | None) -> np.ndarray | None:
    """Per-step ``intervention`` flags (bool ``[T]``) from the feature's column."""
    if values is None:
        return None
    a = np.asarray(values)
    return a.reshape(len(a), -1).astype(bool).any(axis=1)


class TorchDataset(_TorchBase):
    """Map-style dataset: item ``i`` is one step of one episode, with history and action chunk.

    ``path`` is a native telecorder dataset, a LeRobot v2.0/v2.1/v3.0 folder or an RLDS/TFDS
    folder (Open X-Embodiment exports included), read in place: nothing is converted first.
    ``format`` skips detection; ``split`` picks the RLDS split (default ``"train"``).

    Each item is a dict:

    * ``images.<camera>``: uint8 ``[history, 3, h, w]`` RGB, decoded in the reading process and
      resized with ``cv2.INTER_AREA`` to ``image_size`` (``(height, width)``; ``None`` keeps
      the stored size). JPEGs wanted at a fraction of their size are decoded at reduced scale
      by libjpeg first; LeRobot video frames are found by timestamp, as LeRobot does;
    * ``state``: float32 ``[history, D]``, normalized; ``state_is_pad``: bool ``[history]``,
      True for steps before the episode start (those repeat the first state and frame);
    * ``action``: float32 ``[horizon, A]``, normalized, starting at the current step;
      ``action_is_pad``: bool ``[horizon]``, True past the episode end, where rows repeat
      the last action (``pad="repeat_last"``) or are zero in normalized units (``"zero"``);
    * ``language_instruction`` (str): the episode's instruction as recorded, or with
      ``paraphrase="random"`` one of its task's recorded paraphrases (see below);
      ``task_id`` (str, "" when the episode has none); ``episode_index`` and ``step_index``
      (int64 tensors);
    * ``action_tokens``: int64 ids from ``tokenizer.encode(normalized action chunk)`` when a
      tokenizer is given (see :class:`ActionTokenizer`);
    * ``intervention``: bool scalar tensor, True where a human acted in an episode recorded
      with a policy in the loop (the per-step feature ``intervention``; False when absent);
      ``weight``: float32 scalar tensor, the sample's weight (see below).

    ``state_key`` is one feature or a sequence of features concatenated in order (the
    ``state_keys`` of a policy); a concatenation is normalized with one normalizer whose
    parts use each feature's own statistics. ``state_normalize`` is the state's mode (None:
    the same as ``normalize``, which applies to actions).

    Statistics: ``stats`` (a ``meta/stats.json``-style dict) when given, so that several
    datasets trained together share one normalization; otherwise the dataset's own file
    (native ``meta/stats.json``; LeRobot ``meta/stats.json`` when it holds what the modes
    need), otherwise computed from the numeric columns of every episode, merged the way the
    native store merges its own.

    ``intervention_weight`` / ``policy_weight`` weight the steps of intervention data
    (HG-DAgger): a human-labelled step weighs ``intervention_weight`` (default 1), a
    policy-acted one ``policy_weight``, a step of an episode without the feature 1.0. Steps
    of weight 0 are left out of the index (``policy_weight=0`` keeps only human-labelled
    steps). :meth:`sample_weights` gives the weights for a ``WeightedRandomSampler``. Only
    with a weight option given does construction read the episodes' ``intervention``.
    With ``policy_weight=0`` the policy's actions are no labels at all: chunk rows the policy
    produced (after a hand-back) are marked in ``action_is_pad``.

    ``normalize_mask`` (one bool per action dimension, False = leave raw, e.g. a gripper)
    applies to actions; states are normalized in every dimension. ``episodes`` selects
    episode numbers (as in the index); ``exclude_bad`` drops index records marked
    ``"bad": true``. ``max_open_files`` bounds the episodes each process keeps open.

    ``decode_threads`` > 1 reads the samples of a batch on that many threads of the reading
    process (the DataLoader fetches a batch through :meth:`__getitems__`); OpenCV and PyAV
    decode outside the GIL, so on few cores ``num_workers=0, decode_threads=2`` uses both
    cores without moving every frame through a worker's shared memory (about 1 ms of page
    faults per 640x480 sample pair on a 2-core VM).

    A NaN/inf in the state or action is a :class:`DatasetError` naming the file, episode, step and
    feature (when the episode is opened, or at construction where statistics are computed from the
    columns); ``skip_nonfinite`` reads every episode's numeric columns at construction and leaves
    out those holding one (:attr:`skipped_nonfinite` says which and why; the statistics are then
    computed from the episodes kept unless ``stats`` is given). Statistics that are not finite are
    never used. ``strict_timestamps`` makes a LeRobot source refuse rows whose timestamps run a
    constant offset (at most one frame) off their video, which are otherwise mapped to their own
    frames by that offset, with a warning (see ``converters/lerobot/timing.py``).

    Language augmentation: ``paraphrase="random"`` serves, per item, one of the recorded
    paraphrases of the sample's task (the dataset's info ``extra["tasks"]``, kept by every export
    we write), drawn from a generator seeded by ``(paraphrase_seed, epoch, item)``: reproducible
    in any process or worker count, different across items; :meth:`set_epoch` draws afresh.
    An episode whose task has no known paraphrases keeps its instruction. Held-out paraphrases
    are never served. The default, ``"recorded"``, serves the instruction verbatim.
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
        format: str | None = None,
        split: str | None = None,
        decode_threads: int = 0,
        skip_nonfinite: bool = False,
        strict_timestamps: bool = False,
        paraphrase: str = "recorded",
        paraphrase_seed: int = 0,
    ) -> None:
        self.paraphrase = check_paraphrase_mode(paraphrase)
        self.paraphrase_seed = int(paraphrase_seed)
        self.epoch = 0
        if history < 1 or horizon < 1:
            raise ValueError(f"history and horizon must be >= 1, got {history} and {horizon}")
        if pad not in PAD_MODES:
            raise ValueError(f"unknown pad {pad!r} (use one of {', '.join(PAD_MODES)})")
        for mode in (normalize, state_normalize):
            if mode is not None and mode not in NORMALIZE_MODES:
                raise ValueError(f"unknown normalization {mode!r} (use one of {', '.join(NORMALIZE_MODES)})")
        self.source: EpisodeSource = open_source(path, format, cameras=cameras, split=split,
                                                 strict_timestamps=strict_timestamps)
        self.root = self.source.root
        info = self.info = self.source.info
        # Plain dicts of text: pickled to spawned workers with the rest of the dataset.
        self._paraphrases = Paraphrases.from_info(info) if self.paraphrase == "random" else Paraphrases()
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
        self._frame_size = {
            f.camera: self.image_size or (int(f.shape[0]), int(f.shape[1])) for f in info.image_features
        }
        self.history, self.horizon, self.pad = int(history), int(horizon), pad
        self.state_key = state_key if isinstance(state_key, str) else self.state_keys
        self.action_key = action_key
        self.tokenizer = tokenizer
        self.max_open_files = max(1, int(max_open_files))
        self.decode_threads = max(0, int(decode_threads))

        records = self.source.records
        if episodes is not None:
            wanted = {int(e) for e in episodes}
            missing = wanted - {int(r["episode_index"]) for r in records}
            if missing:
                raise DatasetError(f"{self.root}: no episode(s) {sorted(missing)} in the index")
            records = [r for r in records if int(r["episode_index"]) in wanted]
        if exclude_bad:
            records = [r for r in records if not r.get("bad", False)]
        records = [r for r in records if int(r.get("length", 0)) > 0]
        if not records:
            raise DatasetError(_nothing_to_load(self.root, self.source.records, episodes is not None))
        self.source.check_episodes([int(r["episode_index"]) for r in records])

        self.normalize_mode = normalize
        self.state_normalize_mode = normalize if state_normalize is None else state_normalize
        #: Episodes left out for non-finite values (``skip_nonfinite``): episode -> why.
        self.skipped_nonfinite: dict[int, str] = {}
        if skip_nonfinite:
            keys = list(dict.fromkeys((*self.state_keys, action_key)))
            bad = nonfinite_episodes(self.source, [int(r["episode_index"]) for r in records], keys)
            if bad and len(bad) == len(records):
                raise DatasetError(f"{self.root}: every one of the {len(bad)} episode(s) holds non-finite values, "
                                   f"nothing is left to load; the first: {next(iter(bad.values()))}")
            self.skipped_nonfinite = bad
            records = [r for r in records if int(r["episode_index"]) not in bad]
            if stats is None and bad:
                # The dataset's own file counts the episodes left out (or is NaN from them).
                stats = self.source.computed_stats(keys, episodes=[int(r["episode_index"]) for r in records])
        if stats is None:
            stats = self._statistics()
        self.stats = stats
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
        self._numeric_keys = tuple(dict.fromkeys((*self.state_keys, action_key)))
        if self.has_intervention:
            self._numeric_keys += (INTERVENTION_KEY,)
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
        # Open episodes per process id: a forked worker inherits the parent's entries but
        # never touches (or closes) them, since file handles are not fork-safe.
        self._state: dict[int, _ProcessState] = {}

    @property
    def dataset(self) -> Any:
        """The native :class:`~telecorder.datasets.Dataset` (native sources only)."""
        return getattr(self.source, "dataset", None)

    def _statistics(self) -> dict[str, Any]:
        """The dataset's own statistics where they hold (finite) what the modes need, per feature;
        the rest computed from the columns (a LeRobot v2.0 ``stats.json`` has no ``count``, some
        lack quantiles: its values are used and only what it lacks is computed)."""
        own = self.source.own_stats()
        if self.source.format_name == "native":
            return own  # a missing feature is reported by the normalizer, naming meta/stats.json
        need: dict[str, set[str]] = {}
        for keys, mode in ((self.state_keys, self.state_normalize_mode), ((self.action_key,), self.normalize_mode)):
            for k in keys:
                need.setdefault(k, set()).update(MODE_KEYS[mode])
        features = dict(own.get("features", {}))
        lacking = [k for k, names in need.items() if names and not _holds(features.get(k), names)]
        if lacking:
            computed = self.source.computed_stats(lacking).get("features", {})
            for k in lacking:
                mine = features.get(k) if isinstance(features.get(k), Mapping) else {}
                usable = {n: v for n, v in mine.items() if finite_summary_problem(mine, [n]) is None}
                features[k] = {**computed[k], **usable}
        return {**own, "features": features}

    def _step_weights(self, rec: dict[str, Any]) -> np.ndarray:
        """Weight of every step of one episode, from its ``intervention`` column."""
        ep = self.source.load(int(rec["episode_index"]), [INTERVENTION_KEY])
        try:
            flags = _intervention_flags(ep.numeric.get(INTERVENTION_KEY))
        finally:
            ep.close()
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

    def set_epoch(self, epoch: int) -> None:
        """Draw other paraphrases (``paraphrase="random"``) from now on; as ``MixtureDataset.set_epoch``."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_state"] = {}  # spawned workers open their own files
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

    def _process(self) -> _ProcessState:
        pid = os.getpid()
        state = self._state.get(pid)
        if state is None:
            # setdefault: two decode threads of a process starting at once get the same state.
            state = self._state.setdefault(pid, _ProcessState())
        return state

    def _acquire(self, pos: int) -> _OpenEpisode:
        proc = self._process()
        with proc.lock:
            ep = proc.episodes.get(pos)
            if ep is None:
                ep = proc.episodes[pos] = self._open_episode(pos)
                # Least recently used first, never one a decode thread is reading now.
                idle = [k for k, e in proc.episodes.items() if e.users == 0 and k != pos]
                for k in idle[: max(0, len(proc.episodes) - self.max_open_files)]:
                    proc.episodes.pop(k).loaded.close()
            proc.episodes.move_to_end(pos)
            ep.users += 1
            return ep

    def _release(self, ep: _OpenEpisode) -> None:
        with self._process().lock:
            ep.users -= 1

    def _open_episode(self, pos: int) -> _OpenEpisode:
        rec = self.records[pos]
        loaded = self.source.load(int(rec["episode_index"]), self._numeric_keys)
        try:
            if isinstance(self.state_key, str):
                raw_state = loaded.numeric[self.state_key]
            else:
                raw_state = concat_state({k: loaded.numeric[k] for k in self.state_keys}, self.state_keys)
            found = first_nonfinite(loaded.numeric, dict.fromkeys((*self.state_keys, self.action_key)))
            if found is not None:
                where = self.source.episode_location(int(rec["episode_index"]))
                raise DatasetError(nonfinite_message(where, int(rec["episode_index"]), found))
            state = self.state_normalizer.normalize(raw_state).astype(np.float32)
            action = self.action_normalizer.normalize(loaded.numeric[self.action_key]).astype(np.float32)
            intervention = _intervention_flags(loaded.numeric.get(INTERVENTION_KEY))
        except BaseException:
            loaded.close()
            raise
        return _OpenEpisode(loaded, state.reshape(len(state), -1), action.reshape(len(action), -1),
                            loaded.instruction or str(rec.get("task") or ""), intervention,
                            getattr(loaded, "task_id", "") or "")

    def _frames(self, ep: _OpenEpisode, camera: str, hist: np.ndarray) -> np.ndarray:
        h, w = self._frame_size[camera]
        out = np.empty((len(hist), 3, h, w), np.uint8)
        done: dict[int, int] = {}
        for k, s in enumerate(hist.tolist()):
            if s in done:  # padded history repeats frame 0: decode each distinct step once
                out[k] = out[done[s]]
                continue
            frame = ep.loaded.frame(camera, s, (h, w), out=out[k])
            if frame.shape != (3, h, w):
                raise DatasetError(f"{self.root}: camera {camera!r} step {s} gave a {frame.shape} frame")
            if frame is not out[k] and not np.shares_memory(frame, out[k]):
                out[k] = frame
            done[s] = k
        return out

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The samples of one batch, read on ``decode_threads`` threads (the DataLoader calls this)."""
        if self.decode_threads <= 1 or len(indices) <= 1:
            return [self[i] for i in indices]
        proc = self._process()
        if proc.pool is None:
            proc.pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="telecorder-decode")
        return list(proc.pool.map(self.__getitem__, indices))

    def __getitem__(self, i: int) -> dict[str, Any]:
        pos, step, weight = self._locate(int(i))
        ep = self._acquire(pos)
        try:
            sample = self._sample(ep, pos, step, weight)
            if self.paraphrase == "random":
                key = (self.paraphrase_seed, self.epoch, int(i) % len(self))
                sample["language_instruction"] = self._paraphrases.draw(ep.task_id, ep.instruction, key)
            return sample
        finally:
            self._release(ep)

    def _sample(self, ep: _OpenEpisode, pos: int, step: int, weight: float) -> dict[str, Any]:
        episode_index = self.episode_indices[pos]
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
            out[f"images.{cam}"] = torch.from_numpy(self._frames(ep, cam, hist))
        out["state"] = torch.from_numpy(np.ascontiguousarray(ep.state[hist]))
        out["state_is_pad"] = torch.from_numpy(state_is_pad)
        out["action"] = torch.from_numpy(np.ascontiguousarray(action, dtype=np.float32))
        out["action_is_pad"] = torch.from_numpy(action_is_pad)
        out["language_instruction"] = ep.instruction
        out["task_id"] = ep.task_id
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
        """Close the episodes, decoders and threads this process opened."""
        proc = self._state.pop(os.getpid(), None)
        if proc is not None:
            if proc.pool is not None:
                proc.pool.shutdown()
            for ep in proc.episodes.values():
                ep.loaded.close()
        self.source.close()
