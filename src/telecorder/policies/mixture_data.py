"""The data of a mixture of robots, as the trainers read it (:func:`load_mixture`).

Each dataset keeps its own loader and so its own normalization (Octo and OpenVLA normalize per
dataset too). Its samples are read into memory as for the single-robot trainers, then padded to
the mixture's widths (the action width of :class:`~telecorder.loaders.embodiment.MixtureLayout`,
which :class:`~telecorder.loaders.MixtureDataset` pads to as well): the state feature by feature
(each state feature padded to its widest robot's, so that the object pose has the same place for
every robot whatever its joint count) with zeros and a one-hot embodiment id appended, the action
chunk with zeros that the loss masks out (per dimension, ``action_dim_is_pad``, as well as per
padded row). Batches draw a dataset by its mixture weight (``"steps"``: in proportion to its
samples; ``"uniform"``: each dataset alike; or given weights, Octo's recipe), then a sample of it.

Shared by the BC trainer (:mod:`.train_mixture`) and the VLA's (:mod:`.vla.train_mixture`). Only
the state variant trains on mixtures: camera slots shared by robots with different cameras are
the loaders' (``MixtureDataset``), not yet these models'.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..datasets.dataset import Dataset
from ..errors import TelecorderError, missing_extra
from ..loaders.embodiment import MixtureLayout, component_layout
from ..loaders.mixture_spec import mixture_weights
from ..loaders.torch_dataset import TorchDataset
from .base import PolicySpec
from .embodiments import MAX_EMBODIMENTS, EmbodimentEntry, model_input, place_state
from .training_data import (
    ACTION_NORMALIZE,
    STATE_NORMALIZE,
    choose_inputs,
    kept_stats,
    nonfinite,
    open_datasets,
    preload,
    split,
    usable,
)

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["PADDED_STATE_KEY", "MixtureData", "load_mixture", "masked_l1"]

#: The state key of a mixture model's padded input (what its inner spec names; no dataset has it).
PADDED_STATE_KEY = "mixture.padded_state"


@dataclass
class MixtureData:
    """The datasets of a mixture, their loaders and the padded samples, in memory."""

    opened: list[Dataset]
    loaders: list[TorchDataset]
    keys_of: list[tuple[str, ...]]
    split_of: list[tuple[list[int], list[int]]]
    layout: MixtureLayout
    slots: list[tuple[int, ...]]  # per dataset: where its state values go in the padded state
    state_width: int
    comp_weights: list[float]
    train: dict[str, Any]
    val: dict[str, Any] | None
    load_s: float

    @property
    def count(self) -> int:
        return len(self.layout.embodiments)

    @cached_property
    def state_real(self) -> torch.Tensor:
        """``[embodiments, state_width]``: which padded state dimensions each robot really has."""
        real = torch.zeros(self.count, self.state_width, dtype=torch.bool)
        for k, eid in enumerate(self.layout.ids):
            real[eid, list(self.slots[k])] = True
        return real

    def noisy_input(self, data: dict[str, Any], idx: torch.Tensor, noise: float, g: torch.Generator) -> torch.Tensor:
        """The model input of samples ``idx``: their padded state (with noise on the real dimensions only, so
        the padding stays the zeros a robot of that width sends) and the one-hot embodiment id."""
        state = data["state"][idx]
        emb = data["embodiment_id"][idx]
        if noise > 0:
            state = state + noise * torch.randn(state.shape, generator=g) * self.state_real[emb]
        return model_input(state, emb, self.count)

    def entries(self, horizon: int) -> list[EmbodimentEntry]:
        out = []
        for emb in self.layout.embodiments:
            k = self.layout.ids.index(emb.id)
            d, ds = self.loaders[k], self.opened[k]
            spec = PolicySpec(action_dim=emb.action_dim, horizon=horizon, state_keys=self.keys_of[k], history=1,
                              fps=ds.info.fps, state_normalizer=d.state_normalizer, action_names=emb.action_names)
            out.append(EmbodimentEntry(emb.name, emb.id, spec, d.action_normalizer, emb.state_dim, self.slots[k]))
        return out

    def inner_spec(self, horizon: int) -> PolicySpec:
        """The spec of the model over the padded layout (its state: padded state + one-hot id)."""
        return PolicySpec(action_dim=self.layout.action_dim, horizon=horizon, state_keys=(PADDED_STATE_KEY,),
                          history=1, fps=self.opened[0].info.fps)

    def summary(self, weights: str | Sequence[float]) -> dict[str, Any]:
        total = sum(self.comp_weights)
        return {"weights": weights if isinstance(weights, str) else [float(w) for w in weights],
                "sampling_weights": [float(w) / total for w in self.comp_weights],
                "layout": self.layout.describe(), "state_width": self.state_width,
                "datasets": [{"path": str(ds.root.resolve()),
                              "embodiment": self.layout.embodiments[self.layout.ids[k]].name,
                              "train_episodes": len(self.split_of[k][0]), "val_episodes": len(self.split_of[k][1]),
                              "train_samples": len(self.loaders[k]), "usable_episodes": len(usable(ds))}
                             for k, ds in enumerate(self.opened)]}


def load_mixture(
    dataset_paths: Sequence[str | Path], *, weights: str | Sequence[float], names: Sequence[str | None] | None,
    obs: str, horizon: int, val_episodes: int | None, state_keys: Sequence[str] | None, skip_nonfinite: bool,
    max_episodes: int | None, state_normalize: str = STATE_NORMALIZE, paraphrase: str = "recorded",
    paraphrase_seed: int = 0,
) -> MixtureData:
    """Open, split, normalize (each dataset its own) and read every sample of the datasets, padded."""
    t0 = time.monotonic()
    if obs != "state":
        raise TelecorderError("--mixture trains the state variant only (--obs state): the models' cameras are "
                              "per robot, not shared camera slots")
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
        checked = list(dict.fromkeys([*keys, "action"]))
        bad = nonfinite([ds], checked, skip_nonfinite)[0]
        train_eps, val_eps = split(ds, val_episodes, set(bad), max_episodes)
        common: dict[str, Any] = dict(cameras=[], image_size=None, history=1, horizon=horizon,
                                      normalize=ACTION_NORMALIZE, state_normalize=state_normalize, state_key=list(keys))
        if bad:
            # Normalize with the statistics of the episodes kept, as the single-robot trainers do.
            common["stats"] = kept_stats([ds], [train_eps + val_eps], checked)
        loaders.append(TorchDataset(ds.root, episodes=train_eps, paraphrase=paraphrase,
                                    paraphrase_seed=paraphrase_seed, **common))
        vals.append(TorchDataset(ds.root, episodes=val_eps, **common) if val_eps else None)
        keys_of.append(keys)
        split_of.append((train_eps, val_eps))
    layout = MixtureLayout([component_layout(d, k, names[k]) for k, d in enumerate(loaders)])
    slots, state_width = _state_slots([(ds.info, keys) for ds, keys in zip(opened, keys_of, strict=True)])
    comp_weights = mixture_weights([len(d) for d in loaders], weights)
    if not any(w > 0 and len(d) for w, d in zip(comp_weights, loaders, strict=True)):
        raise TelecorderError("no dataset with a positive mixture weight has training samples")

    def padded(parts: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        out: dict[str, list[Any]] = {k: [] for k in ("state", "action", "action_is_pad", "action_dim_is_pad",
                                                      "embodiment_id", "weight", "step_index")}
        instructions: list[str] = []
        for k, d in parts:
            n, eid = d["n"], layout.ids[k]
            out["state"].append(place_state(d["state"], slots[k], state_width))
            out["action"].append(torch.nn.functional.pad(d["action"], (0, layout.action_dim - d["action"].shape[-1])))
            out["action_is_pad"].append(d["action_is_pad"])
            mask = torch.arange(layout.action_dim) >= layout.embodiments[eid].action_dim
            out["action_dim_is_pad"].append(mask.expand(n, -1))
            out["embodiment_id"].append(torch.full((n,), eid, dtype=torch.int64))
            # A dataset's share of the batches is its mixture weight, spread over its samples by their own weights.
            w = d["weight"].double()
            out["weight"].append(w / w.sum().clamp_min(1e-12) * comp_weights[k])
            out["step_index"].append(d["step_index"])
            instructions += d["instruction"]
        data: dict[str, Any] = {k: torch.cat(v) for k, v in out.items()}
        data["instruction"] = instructions
        data["n"] = sum(d["n"] for _, d in parts)
        return data

    train = padded([(k, preload(d, 0)) for k, d in enumerate(loaders) if len(d)])
    val_parts = [(k, preload(v, 0)) for k, v in enumerate(vals) if v is not None and len(v)]
    return MixtureData(opened, loaders, keys_of, split_of, layout, slots, state_width, comp_weights, train,
                       padded(val_parts) if val_parts else None, time.monotonic() - t0)


def masked_l1(pred: torch.Tensor, action: torch.Tensor, row_pad: torch.Tensor, dim_pad: torch.Tensor) -> torch.Tensor:
    """L1 over the real rows and real action dimensions of each sample."""
    v = ((~row_pad)[..., None] & (~dim_pad)[:, None, :]).to(pred.dtype)
    return ((pred - action).abs() * v).sum() / v.sum().clamp_min(1.0)


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
