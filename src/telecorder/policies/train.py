"""Train the reference behavioral-cloning policy on a native dataset (``telecorder train``).

The samples come from :class:`~telecorder.loaders.TorchDataset`, the loader
any other trainer would use, so the state layout, normalization and image resizing are
the ones the policy runner reproduces at deployment. They are read once and kept in
memory as tensors (decoded, resized frames included: 50 episodes x 200 steps x 2 cameras
at 96x96 is about 0.55 GB), so a training step costs only the model's forward and
backward passes, not a JPEG decode per sample.

Defaults: states ``mean_std``, actions ``min_max`` (exactly invertible); an action chunk
of ``horizon`` steps with padded rows masked out of an L1 loss; AdamW (weight decay 1e-4)
with a linear warm-up and a cosine decay; random +-4 pixel shifts of the camera frames
(``images`` only); a held-out set of the last ``val_episodes`` episodes by number. All
random draws come from generators seeded with ``seed``: a run is reproducible on the
same machine and thread count.

``num_threads`` defaults to 1 for ``state`` and 2 for ``images``. Measured on 2 cores: the
state MLP is too small to gain from a second thread (and with the cores busy with other
work it ran 3-20x slower, the threads spin-waiting on each other); the image CNN ran at
7.4 steps/s with 2 threads vs 5.0 with 1 on free cores, but 1.2 vs 2.3 on busy ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.dataset import Dataset
from ..errors import DatasetError, TelecorderError, missing_extra
from ..loaders.base import nonfinite_episodes
from ..loaders.native import NativeSource
from .base import PolicySpec
from .bc import ENV_STATE_KEY, OBS_VARIANTS, BCConfig, BCModel, BCPolicy
from .checkpoint import MODEL_FILE, POLICY_FILE, save_bc_policy

try:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

from ..loaders.torch_dataset import TorchDataset

__all__ = ["DEFAULTS", "train_bc"]

STATE_KEY = "observation.state"
STATE_NORMALIZE = "mean_std"
ACTION_NORMALIZE = "min_max"
DEFAULTS: dict[str, Any] = {
    "steps": 3000,
    "horizon": 20,
    "batch_size": {"state": 256, "images": 64},
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "image_size": (96, 96),
    "shift_pixels": 4,
    # Noise (in normalized units) on the training states. Measured on the sim task, state policy,
    # 50 demos, 50 evaluation episodes: 0 -> 76-84% success (4 runs), 0.02 -> 78%, 0.05 -> 88-92%
    # (3 runs), 0.1 -> 80%.
    "state_noise": 0.05,
}
ProgressFn = Callable[[int, int, float, float | None], None]


def _usable(ds: Dataset) -> list[int]:
    return sorted(int(r["episode_index"]) for r in ds.records if not r.get("bad", False) and int(r.get("length", 0)) > 0)


def _split(ds: Dataset, val_episodes: int | None, exclude: set[int] | frozenset[int] = frozenset()
           ) -> tuple[list[int], list[int]]:
    usable = [e for e in _usable(ds) if e not in exclude]
    if not usable:
        why = f" or holding NaN/inf ({len(exclude)} left out by --skip-nonfinite)" if exclude else ""
        raise DatasetError(f"{ds.root}: no usable episodes (all empty or marked bad{why})")
    if val_episodes is None:
        val_episodes = max(1, round(0.1 * len(usable))) if len(usable) >= 2 else 0
    if val_episodes < 0 or val_episodes >= len(usable):
        raise TelecorderError(
            f"--val-episodes {val_episodes}: the dataset has {len(usable)} usable episode(s) and at "
            "least one must remain for training"
        )
    cut = len(usable) - val_episodes
    return usable[:cut], usable[cut:]


def _preload(ds: TorchDataset, workers: int) -> dict[str, Any]:
    """Every sample of ``ds`` as stacked tensors (frames decoded and resized once)."""
    n = len(ds)
    out: dict[str, list[torch.Tensor]] = {}
    keys = ["state", "action", "action_is_pad", "weight", *[f"images.{c}" for c in ds.cameras]]
    loader = DataLoader(ds, batch_size=256, shuffle=False, num_workers=workers)
    for batch in loader:
        for k in keys:
            out.setdefault(k, []).append(batch[k])
    data: dict[str, Any] = {k: torch.cat(v) for k, v in out.items()}
    data["state"] = data["state"][:, -1]  # history 1
    data["images"] = {c: data.pop(f"images.{c}")[:, -1] for c in ds.cameras}
    data["n"] = n
    return data


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1:
        return parts[0]
    out: dict[str, Any] = {k: torch.cat([p[k] for p in parts]) for k in parts[0] if k not in ("images", "n")}
    out["images"] = {c: torch.cat([p["images"][c] for p in parts]) for c in parts[0]["images"]}
    out["n"] = sum(p["n"] for p in parts)
    return out


def _check_compatible(first: Dataset, other: Dataset, keys: list[str], cameras: list[str]) -> None:
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


def _nonfinite(datasets: list[Dataset], keys: list[str], skip: bool) -> list[dict[int, str]]:
    """Per dataset, its usable episodes whose ``keys`` hold NaN/inf (episode -> where); an error
    naming the first unless ``skip``. Read before anything trains: one NaN makes every weight NaN."""
    out = []
    for d in datasets:
        source = NativeSource(d.root)
        try:
            bad = nonfinite_episodes(source, _usable(d), keys)
        finally:
            source.close()
        if bad and not skip:
            raise DatasetError(f"{len(bad)} episode(s) of {d.root} hold NaN/inf values; the first: "
                               f"{next(iter(bad.values()))}")
        out.append(bad)
    return out


def _kept_stats(datasets: list[Dataset], kept: list[list[int]], keys: list[str]) -> dict[str, Any]:
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


def _random_shift(img: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """DrQ-style augmentation: each image shifted by up to ``pad`` pixels (edges repeated)."""
    b, c, h, w = img.shape
    x = F.pad(img.float(), (pad, pad, pad, pad), mode="replicate")
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    return x[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def _masked_l1(pred: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
    valid = (~is_pad).to(pred.dtype)[..., None]
    return ((pred - target).abs() * valid).sum() / (valid.sum() * pred.shape[-1]).clamp_min(1.0)


def _evaluate(model: BCModel, data: dict[str, Any], limit: int = 4096, batch: int = 256) -> float:
    n = data["n"]
    idx = torch.from_numpy(np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(np.int64)))
    total, count = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, len(idx), batch):
            i = idx[s:s + batch]
            pred = model(data["state"][i], {c: v[i] for c, v in data["images"].items()})
            pad = data["action_is_pad"][i]
            valid = float((~pad).sum()) * pred.shape[-1]
            total += float(_masked_l1(pred, data["action"][i], pad)) * valid
            count += valid
    return total / max(count, 1.0)


def train_bc(
    dataset_path: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    obs: str = "state",
    steps: int = DEFAULTS["steps"],
    horizon: int = DEFAULTS["horizon"],
    val_episodes: int | None = None,
    batch_size: int | None = None,
    lr: float = DEFAULTS["lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    image_size: tuple[int, int] = DEFAULTS["image_size"],
    cameras: Sequence[str] | None = None,
    seed: int = 0,
    intervention_weight: float | None = None,
    policy_weight: float = 1.0,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
    eval_every: int | None = None,
    augment: bool = True,
    num_threads: int | None = None,
    max_cache_gb: float = 8.0,
    max_minutes: float | None = None,
    state_noise: float = DEFAULTS["state_noise"],
    state_keys: Sequence[str] | None = None,
    skip_nonfinite: bool = False,
) -> dict[str, Any]:
    """Train a :class:`BCPolicy` on the dataset at ``dataset_path``; save it to ``out_dir``.

    ``obs="state"``: the joint state plus ``observation.environment_state`` (the object
    pose), no cameras (``state_keys`` chooses other numeric features, e.g. the joint state
    alone for a dataset without object poses); ``obs="images"``: ``cameras`` (default: all) resized to
    ``image_size`` = ``(height, width)`` plus ``observation.state``. ``batch_size`` None:
    256 for state, 64 for images. ``val_episodes`` None: 10% of the episodes (at least
    one when there are two or more). ``on_progress(step, steps, train_loss, val_loss)``
    is called after every step. Returns the training summary saved in ``policy.json``.

    ``dataset_path`` may be several datasets with the same features (e.g. demonstrations
    plus DAgger rollouts): they train together under one normalization, from their merged
    statistics; validation episodes come from the first. ``max_minutes`` bounds the training
    loop's wall time: the step count is cut to what fits (measured after the first steps),
    and the learning-rate schedule follows the cut. ``state_noise`` is the standard deviation
    of Gaussian noise added to the normalized training states (DART-like robustness: the
    policy learns to act from states near the demonstrations', where its own errors lead).

    An episode whose state or action holds NaN/inf is an error naming its file, episode and
    step (before anything trains); ``skip_nonfinite`` leaves such episodes out instead, lists them
    in the summary (``skipped_nonfinite``) and normalizes with statistics of the episodes kept.
    """
    t0 = time.monotonic()
    if obs not in OBS_VARIANTS:
        raise TelecorderError(f"unknown --obs {obs!r} (use one of {', '.join(OBS_VARIANTS)})")
    if steps < 1 or horizon < 1:
        raise TelecorderError(f"steps and horizon must be >= 1, got {steps} and {horizon}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise TelecorderError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    if num_threads is None:
        num_threads = 2 if obs == "images" else 1
    torch.set_num_threads(max(1, int(num_threads)))

    paths = [dataset_path] if isinstance(dataset_path, (str, Path)) else list(dataset_path)
    if not paths:
        raise TelecorderError("give at least one dataset to train on")
    opened = [Dataset.open(p) for p in paths]
    ds = opened[0]
    info = ds.info
    if obs == "state":
        if cameras:
            raise TelecorderError("--cameras applies to --obs images; --obs state uses no cameras")
        if state_keys is None and ENV_STATE_KEY not in info.features:
            raise DatasetError(
                f"{ds.root}: no feature {ENV_STATE_KEY!r} (the object pose), which --obs state needs; "
                "record with the environment state, train with --obs images, or choose the state "
                f"yourself (--state-keys {STATE_KEY} for the joint state alone)"
            )
        state_keys = tuple(state_keys or (STATE_KEY, ENV_STATE_KEY))
        cams: list[str] = []
        size: tuple[int, int] | None = None
    else:
        state_keys = tuple(state_keys or (STATE_KEY,))
        cams = list(info.cameras if cameras is None else cameras)
        if not cams:
            raise DatasetError(f"{ds.root}: no cameras, which --obs images needs; train with --obs state")
        size = (int(image_size[0]), int(image_size[1]))
    missing = [k for k in state_keys if k not in info.features]
    if missing:
        raise DatasetError(f"{ds.root}: no feature {missing[0]!r} for the state (numeric features: "
                           f"{[f.name for f in info.numeric_features]})")
    batch = int(batch_size or DEFAULTS["batch_size"][obs])
    for other in opened[1:]:
        _check_compatible(ds, other, [*state_keys, "action"], cams)
    checked = list(dict.fromkeys([*state_keys, "action"]))
    nonfinite = _nonfinite(opened, checked, skip_nonfinite)
    train_eps, val_eps = _split(ds, val_episodes, set(nonfinite[0]))
    extra_eps = [[e for e in _usable(o) if e not in bad] if bad else None for o, bad in zip(opened[1:], nonfinite[1:],
                                                                                           strict=True)]
    if any(nonfinite):
        kept = [train_eps + val_eps, *[e if e is not None else _usable(o) for o, e in zip(opened[1:], extra_eps,
                                                                                         strict=True)]]
        merged_stats: dict[str, Any] | None = _kept_stats(opened, kept, checked)
    else:
        merged_stats = _merged_stats(opened) if len(opened) > 1 else None

    common: dict[str, Any] = dict(
        cameras=cams, image_size=size, history=1, horizon=horizon, normalize=ACTION_NORMALIZE,
        state_normalize=STATE_NORMALIZE, state_key=list(state_keys), intervention_weight=intervention_weight,
        policy_weight=policy_weight, stats=merged_stats,
    )
    train_ds = TorchDataset(ds.root, episodes=train_eps, **common)
    extra_ds = [TorchDataset(o.root, episodes=e, **common) for o, e in zip(opened[1:], extra_eps, strict=True)]
    val_ds = TorchDataset(ds.root, episodes=val_eps, **common) if val_eps else None
    if len(train_ds) + sum(len(e) for e in extra_ds) == 0:
        raise DatasetError(f"{ds.root}: no training samples left (every step has weight 0?)")
    n_all = len(train_ds) + sum(len(e) for e in extra_ds) + (len(val_ds) if val_ds is not None else 0)
    cache_bytes = n_all * len(cams) * 3 * (size[0] * size[1] if size else 0)
    if cache_bytes > max_cache_gb * 2**30:
        raise TelecorderError(
            f"the decoded frames would take {cache_bytes / 2**30:.1f} GiB of memory (limit {max_cache_gb} GiB); "
            "use a smaller --image-size, fewer --cameras or fewer episodes"
        )
    workers = 2 if cams and n_all > 2000 else 0
    train = _concat([_preload(d, workers) for d in (train_ds, *extra_ds) if len(d)])
    val = _preload(val_ds, workers) if val_ds is not None and len(val_ds) else None
    state_dim = int(train["state"].shape[1])
    action_dim = int(train["action"].shape[2])
    load_s = time.monotonic() - t0

    torch.manual_seed(seed)
    cfg = BCConfig(state_dim=state_dim, action_dim=action_dim, horizon=horizon, cameras=tuple(cams), image_size=size)
    model = BCModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = min(100, max(1, steps // 20))

    planned = steps
    budget_s = None if max_minutes is None else max(1.0, 60.0 * max_minutes)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    g = torch.Generator().manual_seed(seed)
    weights = train["weight"].double()
    uniform = bool((weights == weights[0]).all())
    every = eval_every or max(1, steps // 20)
    history: list[dict[str, Any]] = []
    losses: list[float] = []
    val_loss: float | None = None
    model.train()
    t_train = time.monotonic()
    step = 0
    while step < steps:
        if budget_s is not None and step == min(50, steps // 10 + 1):
            # Cut the run to the steps that fit the budget at the rate measured so far.
            rate = step / max(1e-6, time.monotonic() - t_train)
            left = budget_s - (time.monotonic() - t0)  # the budget covers loading the data too
            steps = max(step + 1, min(steps, step + int(rate * left)))
            every = eval_every or max(1, steps // 20)
        if uniform:
            idx = torch.randint(0, train["n"], (batch,), generator=g)
        else:
            idx = torch.multinomial(weights, batch, replacement=True, generator=g)
        images = {c: v[idx] for c, v in train["images"].items()}
        if augment and images and DEFAULTS["shift_pixels"]:
            images = {c: _random_shift(v, DEFAULTS["shift_pixels"], g) for c, v in images.items()}
        state = train["state"][idx]
        if state_noise > 0:
            # Noise on the (normalized) state: the policy learns to act from states near the demonstrations',
            # which is where its own errors take it in closed loop.
            state = state + state_noise * torch.randn(state.shape, generator=g)
        pred = model(state, images)
        loss = _masked_l1(pred, train["action"][idx], train["action_is_pad"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if val is not None and ((step + 1) % every == 0 or step + 1 == steps):
            model.eval()
            val_loss = _evaluate(model, val)
            model.train()
        if (step + 1) % every == 0 or step + 1 == steps:
            history.append({"step": step + 1, "train_loss": float(np.mean(losses[-every:])), "val_loss": val_loss})
        if on_progress is not None:
            on_progress(step + 1, steps, losses[-1], val_loss)
        step += 1
        if budget_s is not None and time.monotonic() - t0 > budget_s and step < steps:
            steps = step  # slower than measured (a busy machine): stop at the budget
    train_s = time.monotonic() - t_train
    model.eval()

    spec = PolicySpec(
        action_dim=action_dim, horizon=horizon, state_keys=state_keys, cameras=tuple(cams), image_size=size,
        history=1, fps=info.fps, state_normalizer=train_ds.state_normalizer,
        action_names=info.features[train_ds.action_key].names,
    )
    policy = BCPolicy(model, spec, train_ds.action_normalizer, num_threads=num_threads)
    tail = max(1, min(50, steps // 10))
    summary: dict[str, Any] = {
        "obs": obs,
        "steps": steps,
        "planned_steps": planned,
        "max_minutes": max_minutes,
        "batch_size": batch,
        "lr": lr,
        "weight_decay": weight_decay,
        "schedule": f"linear warm-up {warmup} steps, cosine decay to 0",
        "loss": "L1 on normalized actions, padded chunk rows masked",
        "augment": f"random shift +-{DEFAULTS['shift_pixels']} px" if augment and cams else None,
        "state_noise": state_noise,
        "normalization": {"state": STATE_NORMALIZE, "action": ACTION_NORMALIZE},
        "initial_train_loss": losses[0],
        "final_train_loss": float(np.mean(losses[-tail:])),
        "final_val_loss": val_loss,
        "history": history,
        "dataset": str(ds.root.resolve()),
        "extra_datasets": [str(o.root.resolve()) for o in opened[1:]],
        "train_episodes": train_eps,
        "val_episodes": val_eps,
        "train_samples": train["n"],
        "extra_episodes": sum(len(e.records) for e in extra_ds),
        "val_samples": 0 if val is None else val["n"],
        "skipped_nonfinite": {str(d.root): {str(e): why for e, why in bad.items()}
                              for d, bad in zip(opened, nonfinite, strict=True) if bad},
        "intervention_weight": intervention_weight,
        "policy_weight": policy_weight,
        "seed": seed,
        "num_threads": num_threads,
        "load_time_s": round(load_s, 3),
        "train_time_s": round(train_s, 3),
        "steps_per_s": round(steps / max(train_s, 1e-9), 2),
        "wall_time_s": round(time.monotonic() - t0, 3),
        "frame_cache_bytes": cache_bytes,
        "torch_version": torch.__version__,
    }
    save_bc_policy(out, policy, summary)
    summary["out"] = str(out)
    summary["files"] = [POLICY_FILE, MODEL_FILE]
    return summary
