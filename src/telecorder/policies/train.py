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

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TelecorderError, missing_extra
from .base import PolicySpec
from .bc import OBS_VARIANTS, BCConfig, BCModel, BCPolicy
from .checkpoint import MODEL_FILE, POLICY_FILE, save_bc_policy
from .loop import ProgressFn, fit
from .training_data import (
    ACTION_NORMALIZE,
    STATE_NORMALIZE,
    check_out,
    choose_inputs,
    load_training_data,
    open_datasets,
    random_shift,
    sample_indices,
)

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["DEFAULTS", "train_bc"]
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
    max_episodes: int | None = None,
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

    ``max_episodes`` keeps the first N usable episodes of the first dataset (a data-efficiency curve).

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
    check_out(out, overwrite)
    if num_threads is None:
        num_threads = 2 if obs == "images" else 1
    torch.set_num_threads(max(1, int(num_threads)))

    opened = open_datasets(dataset_path)
    ds = opened[0]
    info = ds.info
    state_keys, cams, size = choose_inputs(ds, obs, cameras, image_size, state_keys)
    batch = int(batch_size or DEFAULTS["batch_size"][obs])
    data = load_training_data(
        opened, state_keys=state_keys, cameras=cams, image_size=size, horizon=horizon, val_episodes=val_episodes,
        intervention_weight=intervention_weight, policy_weight=policy_weight, skip_nonfinite=skip_nonfinite,
        max_cache_gb=max_cache_gb, t0=t0, max_episodes=max_episodes)
    train, val, train_ds = data.train, data.val, data.loader
    train_eps, val_eps, nonfinite, extra_ds = data.train_episodes, data.val_episodes, data.nonfinite, data.extra_loaders
    cache_bytes = data.cache_bytes
    state_dim = int(train["state"].shape[1])
    action_dim = int(train["action"].shape[2])
    load_s = data.load_s

    torch.manual_seed(seed)
    cfg = BCConfig(state_dim=state_dim, action_dim=action_dim, horizon=horizon, cameras=tuple(cams), image_size=size)
    model = BCModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)

    def batch_loss() -> torch.Tensor:
        idx = sample_indices(train, batch, g)
        images = {c: v[idx] for c, v in train["images"].items()}
        if augment and images and DEFAULTS["shift_pixels"]:
            images = {c: random_shift(v, DEFAULTS["shift_pixels"], g) for c, v in images.items()}
        state = train["state"][idx]
        if state_noise > 0:
            # Noise on the (normalized) state: the policy learns to act from states near the demonstrations',
            # which is where its own errors take it in closed loop.
            state = state + state_noise * torch.randn(state.shape, generator=g)
        return _masked_l1(model(state, images), train["action"][idx], train["action_is_pad"][idx])

    run = fit(model, opt, batch_loss, steps=steps, warmup_max=100, t0=t0, max_minutes=max_minutes,
              validate=None if val is None else lambda: _evaluate(model, val), eval_every=eval_every,
              on_progress=on_progress)
    steps = run.steps

    spec = PolicySpec(
        action_dim=action_dim, horizon=horizon, state_keys=state_keys, cameras=tuple(cams), image_size=size,
        history=1, fps=info.fps, state_normalizer=train_ds.state_normalizer,
        action_names=info.features[train_ds.action_key].names,
    )
    policy = BCPolicy(model, spec, train_ds.action_normalizer, num_threads=num_threads)
    summary: dict[str, Any] = {
        "obs": obs,
        **run.summary(),
        "max_minutes": max_minutes,
        "batch_size": batch,
        "lr": lr,
        "weight_decay": weight_decay,
        "schedule": f"linear warm-up {run.warmup} steps, cosine decay to 0",
        "loss": "L1 on normalized actions, padded chunk rows masked",
        "augment": f"random shift +-{DEFAULTS['shift_pixels']} px" if augment and cams else None,
        "state_noise": state_noise,
        "normalization": {"state": STATE_NORMALIZE, "action": ACTION_NORMALIZE},
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
        "wall_time_s": round(time.monotonic() - t0, 3),
        "frame_cache_bytes": cache_bytes,
        "torch_version": torch.__version__,
    }
    save_bc_policy(out, policy, summary)
    summary["out"] = str(out)
    summary["files"] = [POLICY_FILE, MODEL_FILE]
    return summary
