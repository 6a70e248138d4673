"""Train one BC policy on datasets of different robots (``telecorder train A B --mixture ...``).

The data are :func:`~.mixture_data.load_mixture`'s: each dataset its own normalization, the state
padded feature by feature with a one-hot embodiment id, the action chunk padded to the widest
robot's with the padded dimensions and rows masked out of the L1 loss. The checkpoint is a BC
checkpoint of the model over the padded layout (actions left normalized) plus the list of
embodiments (name = robot type, spec, state slots, action normalizer); :mod:`.embodiments` loads
it, and a runner picks the embodiment of the robot it drives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..actions.normalize import Normalizer
from ..errors import TelecorderError, missing_extra
from .bc import BCConfig, BCModel, BCPolicy
from .checkpoint import save_bc_policy
from .embodiments import MixturePolicy
from .loop import ProgressFn, fit
from .mixture_data import load_mixture, masked_l1
from .training_data import ACTION_NORMALIZE, STATE_NORMALIZE, check_out
from .weights import MODEL_FILE, POLICY_FILE

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["train_bc_mixture"]

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
    """Train one BC :class:`MixturePolicy` on several datasets (robots); save it to ``out_dir``.

    ``weights``: ``"steps"``, ``"uniform"`` or one number per dataset; ``names``: the embodiment
    name of each dataset (default: its robot type). ``val_episodes`` holds out the last episodes
    of every dataset (None: 10% of each). Returns the training summary saved in ``policy.json``.
    """
    t0 = time.monotonic()
    if steps < 1 or horizon < 1:
        raise TelecorderError(f"steps and horizon must be >= 1, got {steps} and {horizon}")
    out = Path(out_dir)
    check_out(out, overwrite)
    torch.set_num_threads(max(1, int(num_threads or 1)))
    md = load_mixture(dataset_paths, weights=weights, names=names, obs=obs, horizon=horizon,
                      val_episodes=val_episodes, state_keys=state_keys, skip_nonfinite=skip_nonfinite,
                      max_episodes=max_episodes)
    train, val = md.train, md.val

    torch.manual_seed(seed)
    cfg = BCConfig(state_dim=md.state_width + md.count, action_dim=md.layout.action_dim, horizon=horizon)
    model = BCModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)

    def loss_of(data: dict[str, Any], idx: torch.Tensor, noise: float) -> torch.Tensor:
        pred = model(md.noisy_input(data, idx, noise, g), {})
        return masked_l1(pred, data["action"][idx], data["action_is_pad"][idx], data["action_dim_is_pad"][idx])

    def batch_loss() -> torch.Tensor:
        return loss_of(train, torch.multinomial(train["weight"], batch_size, replacement=True, generator=g),
                       state_noise)

    def validate() -> float:
        with torch.no_grad():
            return float(loss_of(val, torch.arange(min(val["n"], 4096)), 0.0))

    run = fit(model, opt, batch_loss, steps=steps, warmup_max=100, t0=t0, max_minutes=max_minutes,
              validate=None if val is None else validate, eval_every=None, on_progress=on_progress)

    inner = BCPolicy(model, md.inner_spec(horizon), Normalizer("none"), num_threads=None)
    policy = MixturePolicy(inner, md.entries(horizon), md.state_width)
    summary: dict[str, Any] = {
        "obs": obs, **run.summary(), "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
        "schedule": f"linear warm-up {run.warmup} steps, cosine decay to 0",
        "loss": "L1 on normalized actions, padded chunk rows and padded action dimensions masked",
        "state_noise": state_noise, "normalization": {"state": STATE_NORMALIZE, "action": ACTION_NORMALIZE,
                                                      "per": "dataset"},
        "mixture": md.summary(weights), "train_samples": train["n"], "val_samples": 0 if val is None else val["n"],
        "seed": seed, "load_time_s": round(md.load_s, 3), "wall_time_s": round(time.monotonic() - t0, 3),
        "torch_version": torch.__version__,
    }
    save_bc_policy(out, inner, summary, embodiments=policy)
    summary["out"] = str(out)
    summary["files"] = [POLICY_FILE, MODEL_FILE]
    return summary
