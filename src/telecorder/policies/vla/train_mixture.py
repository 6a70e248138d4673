"""Train the reference VLA on datasets of different robots (``telecorder train --policy vla --mixture ...``).

The data are :func:`~..mixture_data.load_mixture`'s (each dataset its own normalization, the
state padded feature by feature, a one-hot embodiment id, action chunks padded to the widest
robot). The model is the single-robot VLA's with three differences: its state tokens follow the
padded layout (one token per state feature, one per object of an object-pose feature, and one
for the embodiment id); the loss masks the padded action dimensions; and only the continuous
heads (``l1``, ``flow``) train on mixtures: a 256-bin or FAST token sequence would code the
padded dimensions too, and FAST's compression depends on the chunk's width.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...actions.normalize import Normalizer
from ...errors import TelecorderError, missing_extra
from ..embodiments import MixturePolicy
from ..loop import ProgressFn, fit
from ..mixture_data import load_mixture
from ..training_data import check_out
from ..weights import MODEL_FILE, POLICY_FILE
from .checkpoint import save_vla_policy
from .config import VLAConfig
from .model import VLAModel
from .policy import VLAPolicy
from .text import TEXT_FILE
from .train import DEFAULTS, STATE_NORMALIZE, fit_instructions, state_token_groups

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["MIXTURE_HEADS", "train_vla_mixture"]

MIXTURE_HEADS = ("l1", "flow")


def _state_groups(md: Any) -> tuple[tuple[int, ...], ...]:
    """The VLA's state tokens over the padded layout: each dataset's own groups moved to its slots (the
    same feature lands on the same slots for every robot), merged, and the one-hot id as the last token."""
    groups: dict[tuple[int, ...], None] = {}
    for ds, keys, slots in zip(md.opened, md.keys_of, md.slots, strict=True):
        for g in state_token_groups(ds.info, keys):
            groups[tuple(slots[i] for i in g)] = None
    merged: list[set[int]] = []
    for g in groups:  # a narrower robot's group is inside a wider one's: one token for both
        for m in merged:
            if m & set(g):
                m.update(g)
                break
        else:
            merged.append(set(g))
    return (*(tuple(sorted(m)) for m in merged), tuple(range(md.state_width, md.state_width + md.count)))


def train_vla_mixture(
    dataset_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    weights: str | Sequence[float] = "steps",
    names: Sequence[str | None] | None = None,
    head: str = "flow",
    obs: str = "state",
    steps: int = DEFAULTS["steps"],
    horizon: int = DEFAULTS["horizon"],
    val_episodes: int | None = None,
    batch_size: int | None = None,
    lr: float = DEFAULTS["lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    width: int = DEFAULTS["width"],
    layers: int = DEFAULTS["layers"],
    decoder_layers: int = DEFAULTS["decoder_layers"],
    attention_heads: int = DEFAULTS["attention_heads"],
    flow_steps: int = DEFAULTS["flow_steps"],
    flow_repeats: int = DEFAULTS["flow_repeats"],
    paraphrase: str = "random",
    seed: int = 0,
    state_noise: float = DEFAULTS["state_noise"],
    state_keys: Sequence[str] | None = None,
    skip_nonfinite: bool = False,
    max_episodes: int | None = None,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
    num_threads: int | None = 1,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Train one VLA :class:`~..embodiments.MixturePolicy` on several datasets (robots); save it to ``out_dir``.

    The arguments are :func:`~..train_mixture.train_bc_mixture`'s and :func:`.train.train_vla`'s.
    """
    t0 = time.monotonic()
    if head not in MIXTURE_HEADS:
        raise TelecorderError(f"--head {head} does not train on mixtures: its action tokens would code the padded "
                              f"dimensions of the narrower robots; use --head {' or '.join(MIXTURE_HEADS)}")
    if steps < 1 or horizon < 1:
        raise TelecorderError(f"steps and horizon must be >= 1, got {steps} and {horizon}")
    out = Path(out_dir)
    check_out(out, overwrite)
    torch.set_num_threads(max(1, int(num_threads or 1)))
    md = load_mixture(dataset_paths, weights=weights, names=names, obs=obs, horizon=horizon,
                      val_episodes=val_episodes, state_keys=state_keys, skip_nonfinite=skip_nonfinite,
                      max_episodes=max_episodes, state_normalize=STATE_NORMALIZE, paraphrase=paraphrase,
                      paraphrase_seed=seed)
    train, val = md.train, md.val
    text, _ = fit_instructions(md.opened, train, val)

    torch.manual_seed(seed)
    cfg = VLAConfig(
        state_dim=md.state_width + md.count, action_dim=md.layout.action_dim, horizon=horizon, head=head,
        text_vocab=text.vocab_size, max_text_tokens=text.max_tokens, width=width, layers=layers,
        attention_heads=attention_heads, decoder_layers=decoder_layers, action_vocab=0, max_action_tokens=0,
        flow_steps=flow_steps, state_groups=_state_groups(md),
    )
    model = VLAModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    batch = int(batch_size or DEFAULTS["batch_size"]["state"])

    def loss_of(data: dict[str, Any], idx: torch.Tensor, noise: float) -> torch.Tensor:
        return model.loss(md.noisy_input(data, idx, noise, g), {}, data["text"][idx], data["text_mask"][idx],
                          data["action"][idx], data["action_is_pad"][idx], generator=g, flow_repeats=flow_repeats,
                          action_dim_is_pad=data["action_dim_is_pad"][idx])

    def batch_loss() -> torch.Tensor:
        return loss_of(train, torch.multinomial(train["weight"], batch, replacement=True, generator=g), state_noise)

    def validate() -> float:
        with torch.no_grad():
            return float(loss_of(val, torch.arange(min(val["n"], 1024)), 0.0))

    run = fit(model, opt, batch_loss, steps=steps, warmup_max=200, t0=t0, max_minutes=max_minutes,
              validate=None if val is None else validate, eval_every=None, on_progress=on_progress,
              clip=model.parameters())

    inner = VLAPolicy(model, md.inner_spec(horizon), Normalizer("none"), text, None, num_threads=None)
    policy = MixturePolicy(inner, md.entries(horizon), md.state_width)
    summary: dict[str, Any] = {
        "policy": "vla", "head": head, "obs": obs, "parameters": sum(p.numel() for p in model.parameters()),
        **run.summary(), "batch_size": batch, "lr": lr, "weight_decay": weight_decay,
        "schedule": f"linear warm-up {run.warmup} steps, cosine decay to 0; gradients clipped at norm 1",
        "loss": {"l1": "L1 on normalized actions", "flow": f"flow matching, {flow_repeats} noise draws per sample"}[head]
        + "; padded chunk rows and padded action dimensions masked",
        "state_noise": state_noise, "paraphrase": paraphrase, "instruction_vocab": text.vocab_size,
        "instruction_tokens": text.max_tokens, "state_tokens": len(cfg.groups_of_state),
        "normalization": {"state": STATE_NORMALIZE, "action": "min_max", "per": "dataset"},
        "mixture": md.summary(weights), "train_samples": train["n"], "val_samples": 0 if val is None else val["n"],
        "seed": seed, "load_time_s": round(md.load_s, 3), "wall_time_s": round(time.monotonic() - t0, 3),
        "torch_version": torch.__version__,
    }
    save_vla_policy(out, inner, summary, embodiments=policy)
    summary["out"] = str(out)
    summary["files"] = [POLICY_FILE, MODEL_FILE, TEXT_FILE]
    return summary
