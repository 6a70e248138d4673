"""What every trainer here reads first: the datasets, their split, and every sample in memory.

``telecorder train`` (the BC policy and the VLA, every head) takes its samples from
:class:`~telecorder.loaders.TorchDataset`, the loader any other trainer would use, so the
state layout, normalization and image resizing are those the policy runner reproduces at
deployment. They are read once and kept in memory as tensors (decoded, resized frames
included), so a training step costs only the model's passes, not a JPEG decode per sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.dataset import Dataset
from ..errors import DatasetError, TelecorderError, missing_extra
from ..loaders.base import nonfinite_episodes
from ..loaders.native import NativeSource
from .bc import ENV_STATE_KEY

try:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, default_collate
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

from ..loaders.torch_dataset import ActionTokenizer, TorchDataset

STATE_KEY = "observation.state"
STATE_NORMALIZE = "mean_std"
ACTION_NORMALIZE = "min_max"
TOKEN_PAD = -100  # action_tokens past a sequence's end (the cross-entropy's ignore index)


def usable(ds: Dataset) -> list[int]:
    return sorted(int(r["episode_index"]) for r in ds.records if not r.get("bad", False) and int(r.get("length", 0)) > 0)


def split(ds: Dataset, val_episodes: int | None, exclude: set[int] | frozenset[int] = frozenset(),
          max_episodes: int | None = None) -> tuple[list[int], list[int]]:
    """Training and validation episodes: the last ``val_episodes`` by number are held out (10% by default)
    of the first ``max_episodes`` usable ones (all by default)."""
    kept = [e for e in usable(ds) if e not in exclude][:max_episodes]
    if not kept:
        why = f" or holding NaN/inf ({len(exclude)} left out by --skip-nonfinite)" if exclude else ""
        raise DatasetError(f"{ds.root}: no usable episodes (all empty or marked bad{why})")
    if val_episodes is None:
        val_episodes = max(1, round(0.1 * len(kept))) if len(kept) >= 2 else 0
    if val_episodes < 0 or val_episodes >= len(kept):
        raise TelecorderError(
            f"--val-episodes {val_episodes}: the dataset has {len(kept)} usable episode(s) and at "
            "least one must remain for training"
        )
    cut = len(kept) - val_episodes
    return kept[:cut], kept[cut:]


def _collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """The default collate, with ``action_tokens`` of different lengths padded with ``TOKEN_PAD``."""
    tokens = [b.pop("action_tokens") for b in batch] if "action_tokens" in batch[0] else None
    out = default_collate(batch)
    if tokens is not None:
        width = max(len(t) for t in tokens)
        pad = torch.full((len(tokens), width), TOKEN_PAD, dtype=torch.int64)
        for i, t in enumerate(tokens):
            pad[i, : len(t)] = t
        out["action_tokens"] = pad
    return out


def preload(ds: TorchDataset, workers: int) -> dict[str, Any]:
    """Every sample of ``ds`` as stacked tensors (frames decoded and resized once); ``instruction`` is
    the list of the samples' instructions, ``action_tokens`` (with a tokenizer) is padded with ``TOKEN_PAD``."""
    n = len(ds)
    out: dict[str, list[Any]] = {}
    keys = ["state", "action", "action_is_pad", "weight", "step_index", *[f"images.{c}" for c in ds.cameras]]
    if ds.tokenizer is not None:
        keys.append("action_tokens")
    instructions: list[str] = []
    loader = DataLoader(ds, batch_size=256, shuffle=False, num_workers=workers, collate_fn=_collate)
    for batch in loader:
        for k in keys:
            out.setdefault(k, []).append(batch[k])
        instructions += list(batch["language_instruction"])
    data: dict[str, Any] = {}
    for k, v in out.items():
        if k == "action_tokens":
            width = max(t.shape[1] for t in v)
            v = [F.pad(t, (0, width - t.shape[1]), value=TOKEN_PAD) for t in v]
        data[k] = torch.cat(v)
    data["state"] = data["state"][:, -1]  # history 1
    data["images"] = {c: data.pop(f"images.{c}")[:, -1] for c in ds.cameras}
    data["instruction"] = instructions
    data["n"] = n
    return data


def concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1:
        return parts[0]
    out: dict[str, Any] = {}
    for k in parts[0]:
        if k in ("images", "n", "instruction"):
            continue
        if k == "action_tokens":
            width = max(p[k].shape[1] for p in parts)
            out[k] = torch.cat([F.pad(p[k], (0, width - p[k].shape[1]), value=TOKEN_PAD) for p in parts])
        else:
            out[k] = torch.cat([p[k] for p in parts])
    out["images"] = {c: torch.cat([p["images"][c] for p in parts]) for c in parts[0]["images"]}
    out["instruction"] = [s for p in parts for s in p["instruction"]]
    out["n"] = sum(p["n"] for p in parts)
    return out


def check_compatible(first: Dataset, other: Dataset, keys: list[str], cameras: list[str]) -> None:
    for key in keys:
        a, b = first.info.features.get(key), other.info.features.get(key)
        if b is None:
            raise DatasetError(f"{other.root}: no feature {key!r}, which {first.root} has; datasets trained "
                               "together need the same features")
        if a is not None and tuple(a.shape) != tuple(b.shape):
            raise DatasetError(f"{other.root}: {key!r} has shape {tuple(b.shape)}, {first.root} has {tuple(a.shape)}")
        if a is not None and a.names and b.names and tuple(a.names) != tuple(b.names):
            raise DatasetError(f"{other.root}: {key!r} names its dimensions {list(b.names)}, {first.root} "
                               f"{list(a.names)}; datasets trained together must agree")
    missing = [c for c in cameras if c not in other.info.cameras]
    if missing:
        raise DatasetError(f"{other.root}: no camera(s) {missing}, which training uses")
    if abs(other.info.fps - first.info.fps) > 1e-6:
        raise DatasetError(f"{other.root}: recorded at {other.info.fps:g} Hz, {first.root} at {first.info.fps:g} Hz; "
                           "resample one (telecorder convert --fps) before training on both")


def nonfinite(datasets: list[Dataset], keys: list[str], skip: bool) -> list[dict[int, str]]:
    """Per dataset, its usable episodes whose ``keys`` hold NaN/inf (episode -> where); an error
    naming the first unless ``skip``. Read before anything trains: one NaN makes every weight NaN."""
    out = []
    for d in datasets:
        source = NativeSource(d.root)
        try:
            bad = nonfinite_episodes(source, usable(d), keys)
        finally:
            source.close()
        if bad and not skip:
            raise DatasetError(f"{len(bad)} episode(s) of {d.root} hold NaN/inf values; the first: "
                               f"{next(iter(bad.values()))}")
        out.append(bad)
    return out


def kept_stats(datasets: list[Dataset], kept: list[list[int]], keys: list[str]) -> dict[str, Any]:
    """Statistics of ``keys`` over the episodes kept, merged across datasets (the datasets' own
    files count the episodes --skip-nonfinite left out)."""
    from ..datasets.stats import DatasetStats

    merged = DatasetStats()
    for d, episodes in zip(datasets, kept, strict=True):
        source = NativeSource(d.root)
        try:
            merged = merged.merge(DatasetStats.from_json_dict(source.computed_stats(keys, episodes=episodes)))
        finally:
            source.close()
    return merged.to_json_dict()


def _merged_stats(datasets: list[Dataset]) -> dict[str, Any]:
    merged = None
    for d in datasets:
        s = d.stats()
        if s is None:
            raise DatasetError(f"{d.root}: no meta/stats.json; repair it (telecorder doctor --repair)")
        merged = s if merged is None else merged.merge(s)
    assert merged is not None
    return merged.to_json_dict()


def random_shift(img: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """DrQ-style augmentation: each image shifted by up to ``pad`` pixels (edges repeated)."""
    b, c, h, w = img.shape
    x = F.pad(img.float(), (pad, pad, pad, pad), mode="replicate")
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    return x[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


@dataclass
class TrainingData:
    """The opened datasets, the split, the in-memory samples and the loader that normalized them."""

    datasets: list[Dataset]
    state_keys: tuple[str, ...]
    cameras: list[str]
    image_size: tuple[int, int] | None
    train_episodes: list[int]
    val_episodes: list[int]
    nonfinite: list[dict[int, str]]
    loader: TorchDataset  # the first dataset's training loader: its normalizers are the policy's
    extra_loaders: list[TorchDataset]
    train: dict[str, Any]
    val: dict[str, Any] | None
    cache_bytes: int
    load_s: float

    def loaders(self) -> list[TorchDataset]:
        return [self.loader, *self.extra_loaders]


def open_datasets(dataset_path: str | Path | Sequence[str | Path]) -> list[Dataset]:
    paths = [dataset_path] if isinstance(dataset_path, (str, Path)) else list(dataset_path)
    if not paths:
        raise TelecorderError("give at least one dataset to train on")
    return [Dataset.open(p) for p in paths]


def choose_inputs(ds: Dataset, obs: str, cameras: Sequence[str] | None, image_size: tuple[int, int],
                  state_keys: Sequence[str] | None) -> tuple[tuple[str, ...], list[str], tuple[int, int] | None]:
    """The state features, cameras and frame size ``--obs`` (``state`` | ``images``) means for ``ds``."""
    info = ds.info
    if obs == "state":
        if cameras:
            raise TelecorderError("--cameras applies to --obs images; --obs state uses no cameras")
        if state_keys is None and ENV_STATE_KEY not in info.features:
            raise DatasetError(
                f"{ds.root}: no feature {ENV_STATE_KEY!r} (the object pose), which --obs state needs; "
                "record with the environment state (collect --env-state), train with --obs images, or choose "
                f"the state yourself (--state-keys {STATE_KEY} for the joint state alone)"
            )
        keys = tuple(state_keys or (STATE_KEY, ENV_STATE_KEY))
        cams: list[str] = []
        size: tuple[int, int] | None = None
    else:
        keys = tuple(state_keys or (STATE_KEY,))
        cams = list(info.cameras if cameras is None else cameras)
        if not cams:
            raise DatasetError(f"{ds.root}: no cameras, which --obs images needs; train with --obs state")
        size = (int(image_size[0]), int(image_size[1]))
    missing = [k for k in keys if k not in info.features]
    if missing:
        raise DatasetError(f"{ds.root}: no feature {missing[0]!r} for the state (numeric features: "
                           f"{[f.name for f in info.numeric_features]})")
    return keys, cams, size


def load_training_data(
    opened: list[Dataset], *, state_keys: tuple[str, ...], cameras: list[str], image_size: tuple[int, int] | None,
    horizon: int, val_episodes: int | None, intervention_weight: float | None, policy_weight: float,
    skip_nonfinite: bool, max_cache_gb: float, t0: float, max_episodes: int | None = None,
    fit_tokenizer: Callable[[np.ndarray], ActionTokenizer] | None = None,
    paraphrase: str = "recorded", paraphrase_seed: int = 0, state_normalize: str = STATE_NORMALIZE,
) -> TrainingData:
    """Check, split, normalize and read every sample of ``opened`` (training) and of the first dataset's
    held-out episodes (validation).

    ``fit_tokenizer`` receives the training samples' normalized action chunks ``[N, horizon, A]`` (read
    first, without frames) and returns the tokenizer that the loaders then give ``action_tokens`` with.
    ``paraphrase="random"`` gives each training sample one of its task's recorded paraphrases."""
    ds = opened[0]
    for other in opened[1:]:
        check_compatible(ds, other, [*state_keys, "action"], cameras)
    checked = list(dict.fromkeys([*state_keys, "action"]))
    bad = nonfinite(opened, checked, skip_nonfinite)
    if max_episodes is not None and max_episodes < 1:
        raise TelecorderError(f"--max-episodes {max_episodes}: give at least 1")
    train_eps, val_eps = split(ds, val_episodes, set(bad[0]), max_episodes)
    extra_eps = [[e for e in usable(o) if e not in b] if b else None for o, b in zip(opened[1:], bad[1:], strict=True)]
    if any(bad):
        kept = [train_eps + val_eps, *[e if e is not None else usable(o) for o, e in zip(opened[1:], extra_eps,
                                                                                        strict=True)]]
        merged_stats: dict[str, Any] | None = kept_stats(opened, kept, checked)
    else:
        merged_stats = _merged_stats(opened) if len(opened) > 1 else None

    common: dict[str, Any] = dict(
        cameras=cameras, image_size=image_size, history=1, horizon=horizon, normalize=ACTION_NORMALIZE,
        state_normalize=state_normalize, state_key=list(state_keys), intervention_weight=intervention_weight,
        policy_weight=policy_weight, stats=merged_stats,
    )
    if fit_tokenizer is not None:
        chunks = action_chunks([(ds, train_eps), *[(o, e) for o, e in zip(opened[1:], extra_eps, strict=True)]],
                               {**common, "cameras": [], "image_size": None})
        common["tokenizer"] = fit_tokenizer(chunks)
    train_ds = TorchDataset(ds.root, episodes=train_eps, paraphrase=paraphrase, paraphrase_seed=paraphrase_seed,
                            **common)
    extra_ds = [TorchDataset(o.root, episodes=e, paraphrase=paraphrase, paraphrase_seed=paraphrase_seed, **common)
                for o, e in zip(opened[1:], extra_eps, strict=True)]
    val_ds = TorchDataset(ds.root, episodes=val_eps, **common) if val_eps else None
    if len(train_ds) + sum(len(e) for e in extra_ds) == 0:
        raise DatasetError(f"{ds.root}: no training samples left (every step has weight 0?)")
    n_all = len(train_ds) + sum(len(e) for e in extra_ds) + (len(val_ds) if val_ds is not None else 0)
    cache_bytes = n_all * len(cameras) * 3 * (image_size[0] * image_size[1] if image_size else 0)
    if cache_bytes > max_cache_gb * 2**30:
        raise TelecorderError(
            f"the decoded frames would take {cache_bytes / 2**30:.1f} GiB of memory (limit {max_cache_gb} GiB); "
            "use a smaller --image-size, fewer --cameras or fewer episodes"
        )
    workers = 2 if cameras and n_all > 2000 else 0
    train = concat([preload(d, workers) for d in (train_ds, *extra_ds) if len(d)])
    val = preload(val_ds, workers) if val_ds is not None and len(val_ds) else None
    return TrainingData(opened, state_keys, cameras, image_size, train_eps, val_eps, bad, train_ds, extra_ds, train,
                        val, cache_bytes, time.monotonic() - t0)


def action_chunks(parts: list[tuple[Dataset, list[int] | None]], loader_args: dict[str, Any]) -> np.ndarray:
    """Every normalized action chunk ``[N, horizon, A]`` of the given episodes (None: all usable), read
    with ``loader_args`` (no cameras): what an action tokenizer (quantile bins, FAST) is fitted on."""
    chunks = []
    for d, eps in parts:
        ds = TorchDataset(d.root, episodes=eps if eps is not None else usable(d), **loader_args)
        try:
            if len(ds):
                chunks += [b["action"].numpy() for b in DataLoader(ds, batch_size=1024, collate_fn=_collate)]
        finally:
            ds.close()
    return np.concatenate(chunks).astype(np.float64)


def sample_indices(train: dict[str, Any], batch: int, g: torch.Generator) -> torch.Tensor:
    """A batch of sample indices: uniform, or by the samples' weights when they differ."""
    weights = train["weight"].double()
    if bool((weights == weights[0]).all()):
        return torch.randint(0, train["n"], (batch,), generator=g)
    return torch.multinomial(weights, batch, replacement=True, generator=g)


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise TelecorderError(f"{out} exists and is not empty; choose another --out or pass --overwrite")


def step_budget(step: int, steps: int, t_train: float, t0: float, budget_s: float | None) -> int:
    """The step count cut to what fits ``budget_s`` (from ``t0``, loading included) at the rate measured so far."""
    if budget_s is None:
        return steps
    rate = step / max(1e-6, time.monotonic() - t_train)
    left = budget_s - (time.monotonic() - t0)
    return max(step + 1, min(steps, step + int(rate * left)))
