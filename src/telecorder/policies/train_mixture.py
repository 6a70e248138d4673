"""Train one BC policy on datasets of different robots (``telecorder train A B --mixture ...``).

Each dataset keeps its own loader and so its own normalization (Octo and OpenVLA normalize
per dataset too). Its samples are read into memory as for the single-robot trainer, then
padded to the mixture's widths (the layout of :class:`~telecorder.loaders.embodiment.MixtureLayout`,
the same widths :class:`~telecorder.loaders.MixtureDataset` pads to): the state feature by feature
(each state feature padded to its widest robot's, so that the object pose has the same place for
every robot whatever its joint count) with zeros and a one-hot embodiment id appended, the action chunk with zeros that the L1 loss masks out (per
dimension, ``action_dim_is_pad``, as well as per padded row). Batches draw a dataset by its
mixture weight and then a sample of it (``"steps"``: in proportion to its samples; ``"uniform"``:
each dataset alike; or given weights, Octo's recipe).

The checkpoint is a BC checkpoint whose ``policy.json`` also lists the embodiments (name =
robot type, widths, specs and normalizers) and the mixture; :mod:`.embodiments` loads it, and
a runner picks the embodiment of the robot it drives.

Only the state variant (``--obs state``) trains on mixtures here: camera slots shared by
robots with different cameras are the loaders' (``MixtureDataset``), not yet this model's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..errors import TelecorderError, missing_extra
from ..loaders.embodiment import MixtureLayout, component_layout
from ..loaders.mixture_spec import mixture_weights
from ..loaders.torch_dataset import TorchDataset
from .base import POLICY_FORMAT, PolicySpec
from .bc import BCConfig, BCModel
from .embodiments import MAX_EMBODIMENTS, EmbodimentEntry, MixtureBCPolicy, model_input, place_state
from .loop import ProgressFn, fit
from .training_data import (
    ACTION_NORMALIZE,
    STATE_NORMALIZE,
    check_out,
    choose_inputs,
    kept_stats,
    nonfinite,
    open_datasets,
    preload,
    split,
    usable,
)
from .weights import MODEL_FILE, POLICY_FILE, save_weights

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["train_bc_mixture"]


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[-1]))


def train_bc_mixture(
    dataset_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    weights: str | Sequence[float] = "steps",
    names: Sequence[str | None] | None = None,
    obs: str = "state",
    steps: int = 3000,
    horizon: int = 20,
    val_episodes: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    state_noise: float = 0.05,
    state_keys: Sequence[str] | None = None,
    skip_nonfinite: bool = False,
    max_episodes: int | None = None,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
    num_threads: int | None = 1,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Train one :class:`MixtureBCPolicy` on several datasets (robots); save it to ``out_dir``.

    ``weights``: ``"steps"``, ``"uniform"`` or one number per dataset; ``names``: the embodiment
    name of each dataset (default: its robot type). ``val_episodes`` holds out the last episodes
    of every dataset (None: 10% of each). Returns the training summary saved in ``policy.json``.
    """
    t0 = time.monotonic()
    if obs != "state":
        raise TelecorderError("--mixture trains the state variant only (--obs state): the BC model's cameras are "
                              "per robot, not shared camera slots")
    if steps < 1 or horizon < 1:
        raise TelecorderError(f"steps and horizon must be >= 1, got {steps} and {horizon}")
    out = Path(out_dir)
    check_out(out, overwrite)
    torch.set_num_threads(max(1, int(num_threads or 1)))
    opened = open_datasets(dataset_paths)
    if len(opened) > MAX_EMBODIMENTS:
        raise TelecorderError(f"{len(opened)} datasets in one mixture; at most {MAX_EMBODIMENTS}")
    names = list(names) if names is not None else [None] * len(opened)

    loaders: list[TorchDataset] = []
    vals: list[TorchDataset | None] = []
    keys_of: list[tuple[str, ...]] = []
    split_of: list[tuple[list[int], list[int]]] = []
    for ds in opened:
        keys, _, _ = choose_inputs(ds, obs, None, (96, 96), state_keys)
        bad = nonfinite([ds], list(dict.fromkeys([*keys, "action"])), skip_nonfinite)[0]
        train_eps, val_eps = split(ds, val_episodes, set(bad), max_episodes)
        common: dict[str, Any] = dict(cameras=[], image_size=None, history=1, horizon=horizon,
                                      normalize=ACTION_NORMALIZE, state_normalize=STATE_NORMALIZE, state_key=list(keys))
        if bad:
            # Normalize with the statistics of the episodes kept, as the single-robot trainer does.
            common["stats"] = kept_stats([ds], [train_eps + val_eps], list(dict.fromkeys([*keys, "action"])))
        loaders.append(TorchDataset(ds.root, episodes=train_eps, **common))
        vals.append(TorchDataset(ds.root, episodes=val_eps, **common) if val_eps else None)
        keys_of.append(keys)
        split_of.append((train_eps, val_eps))
    layout = MixtureLayout([component_layout(d, k, names[k]) for k, d in enumerate(loaders)])
    count = len(layout.embodiments)
    slots, state_width = _state_slots([(ds.info, keys) for ds, keys in zip(opened, keys_of, strict=True)])
    comp_weights = mixture_weights([len(d) for d in loaders], weights)
    if not any(w > 0 and len(d) for w, d in zip(comp_weights, loaders, strict=True)):
        raise TelecorderError("no dataset with a positive mixture weight has training samples")

    def padded(parts: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        state, action, row_pad, dim_pad, emb, weight = [], [], [], [], [], []
        for k, d in parts:
            n = d["n"]
            eid = layout.ids[k]
            state.append(place_state(d["state"], slots[k], state_width))
            action.append(_pad(d["action"], layout.action_dim))
            row_pad.append(d["action_is_pad"])
            mask = torch.arange(layout.action_dim) >= layout.embodiments[eid].action_dim
            dim_pad.append(mask.expand(n, -1))
            emb.append(torch.full((n,), eid, dtype=torch.int64))
            # A dataset's share of the batches is its mixture weight, spread over its samples by their own weights.
            w = d["weight"].double()
            weight.append(w / w.sum().clamp_min(1e-12) * comp_weights[k])
        return {"state": torch.cat(state), "action": torch.cat(action), "action_is_pad": torch.cat(row_pad),
                "action_dim_is_pad": torch.cat(dim_pad), "embodiment_id": torch.cat(emb),
                "weight": torch.cat(weight), "n": sum(d["n"] for _, d in parts)}

    train = padded([(k, preload(d, 0)) for k, d in enumerate(loaders) if len(d)])
    val_parts = [(k, preload(v, 0)) for k, v in enumerate(vals) if v is not None and len(v)]
    val = padded(val_parts) if val_parts else None
    load_s = time.monotonic() - t0

    torch.manual_seed(seed)
    cfg = BCConfig(state_dim=state_width + count, action_dim=layout.action_dim, horizon=horizon)
    model = BCModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    # Which state dimensions are real, per embodiment: noise must leave the padding at the zeros a robot sends.
    state_real = torch.zeros(count, state_width, dtype=torch.bool)
    for k, eid in enumerate(layout.ids):
        state_real[eid, list(slots[k])] = True

    def loss_of(data: dict[str, Any], idx: torch.Tensor, noise: float) -> torch.Tensor:
        state = data["state"][idx]
        if noise > 0:
            state = state + noise * torch.randn(state.shape, generator=g) * state_real[data["embodiment_id"][idx]]
        x = model_input(state, data["embodiment_id"][idx], count)
        pred = model(x, {})
        valid = (~data["action_is_pad"][idx])[..., None] & (~data["action_dim_is_pad"][idx])[:, None, :]
        v = valid.to(pred.dtype)
        return ((pred - data["action"][idx]).abs() * v).sum() / v.sum().clamp_min(1.0)

    def batch_loss() -> torch.Tensor:
        idx = torch.multinomial(train["weight"], batch_size, replacement=True, generator=g)
        return loss_of(train, idx, state_noise)

    def validate() -> float:
        with torch.no_grad():
            idx = torch.arange(min(val["n"], 4096))
            return float(loss_of(val, idx, 0.0))

    run = fit(model, opt, batch_loss, steps=steps, warmup_max=100, t0=t0, max_minutes=max_minutes,
              validate=None if val is None else validate, eval_every=None, on_progress=on_progress)

    entries = []
    for emb in layout.embodiments:
        k = layout.ids.index(emb.id)
        d, ds = loaders[k], opened[k]
        spec = PolicySpec(action_dim=emb.action_dim, horizon=horizon, state_keys=keys_of[k], history=1,
                          fps=ds.info.fps, state_normalizer=d.state_normalizer, action_names=emb.action_names)
        entries.append(EmbodimentEntry(emb.name, emb.id, spec, d.action_normalizer, emb.state_dim, slots[k]))
    policy = MixtureBCPolicy(model, entries, state_width, num_threads=None)
    summary: dict[str, Any] = {
        "obs": obs, **run.summary(), "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
        "schedule": f"linear warm-up {run.warmup} steps, cosine decay to 0",
        "loss": "L1 on normalized actions, padded chunk rows and padded action dimensions masked",
        "state_noise": state_noise, "normalization": {"state": STATE_NORMALIZE, "action": ACTION_NORMALIZE,
                                                      "per": "dataset"},
        "mixture": {"weights": weights if isinstance(weights, str) else [float(w) for w in weights],
                    "sampling_weights": [float(w) / sum(comp_weights) for w in comp_weights],
                    "layout": layout.describe(),
                    "datasets": [{"path": str(ds.root.resolve()), "embodiment": layout.embodiments[layout.ids[k]].name,
                                  "train_episodes": len(split_of[k][0]), "val_episodes": len(split_of[k][1]),
                                  "train_samples": len(loaders[k]), "usable_episodes": len(usable(ds))}
                                 for k, ds in enumerate(opened)]},
        "train_samples": train["n"], "val_samples": 0 if val is None else val["n"], "seed": seed,
        "load_time_s": round(load_s, 3), "wall_time_s": round(time.monotonic() - t0, 3),
        "torch_version": torch.__version__,
    }
    save_mixture_policy(out, policy, summary)
    summary["out"] = str(out)
    summary["files"] = [POLICY_FILE, MODEL_FILE]
    return summary


def _state_slots(parts: list[tuple[Any, tuple[str, ...]]]) -> tuple[list[tuple[int, ...]], int]:
    """Each dataset's place for each of its state values, and the padded width: every state feature
    (in order of first appearance) gets the width of its widest dataset."""
    widths: dict[str, int] = {}
    for info, keys in parts:
        for key in keys:
            widths[key] = max(widths.get(key, 0), int(math.prod(info.features[key].shape)))
    offsets, start = {}, 0
    for key, width in widths.items():
        offsets[key], start = start, start + width
    slots = []
    for info, keys in parts:
        slots.append(tuple(offsets[key] + i for key in keys for i in range(int(math.prod(info.features[key].shape)))))
    return slots, start


def save_mixture_policy(out_dir: Path, policy: MixtureBCPolicy, training: dict[str, Any]) -> Path:
    """A BC checkpoint (the first embodiment's spec at the top, so older readers see a valid one) plus the
    ``embodiments`` list and the padded state width."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first = policy.embodiments[0]
    meta = {
        "format": POLICY_FORMAT, "kind": "bc", "spec": first.spec.to_dict(), "model": policy.model.cfg.to_dict(),
        "action_normalizer": first.action_normalizer.to_dict(),
        "embodiments": [e.to_dict() for e in policy.embodiments], "state_width": policy.state_width,
        "weights": save_weights(out_dir, policy.model), "training": training,
    }
    write_json_atomic(out_dir / POLICY_FILE, meta)
    return out_dir
