"""The optimization loop every trainer here shares: warm-up and cosine schedule, a wall-clock budget,
periodic validation, a loss history and progress callbacks.

A trainer gives a function that draws one batch and returns its loss, and one that returns the
validation loss; this module does the rest the same way for the BC policy and every VLA head.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import missing_extra
from .training_data import step_budget

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

ProgressFn = Callable[[int, int, float, float | None], None]


@dataclass
class LoopResult:
    steps: int  # steps run (fewer than planned when a budget cut the run)
    planned: int
    warmup: int
    train_s: float
    losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    val_loss: float | None = None

    def summary(self) -> dict[str, Any]:
        """The keys every training summary has."""
        tail = max(1, min(50, self.steps // 10))
        return {"steps": self.steps, "planned_steps": self.planned, "initial_train_loss": self.losses[0],
                "final_train_loss": float(np.mean(self.losses[-tail:])), "final_val_loss": self.val_loss,
                "history": self.history, "train_time_s": round(self.train_s, 3),
                "steps_per_s": round(self.steps / max(self.train_s, 1e-9), 2)}


def fit(model: torch.nn.Module, opt: torch.optim.Optimizer, batch_loss: Callable[[], torch.Tensor], *,
        steps: int, warmup_max: int, t0: float, max_minutes: float | None = None,
        validate: Callable[[], float] | None = None, eval_every: int | None = None,
        on_progress: ProgressFn | None = None, clip: Iterable[torch.nn.Parameter] | None = None) -> LoopResult:
    """Run ``steps`` optimizer steps of ``batch_loss()``; the learning rate warms up linearly for
    ``min(warmup_max, steps // 20)`` steps, then decays to 0 on a cosine. ``max_minutes`` bounds the
    wall time from ``t0`` (loading included): after the first steps the step count is cut to what fits
    at the rate measured, and the schedule follows the cut. ``clip``: parameters whose gradient norm is
    clipped at 1. The model is left in eval mode."""
    warmup = min(warmup_max, max(1, steps // 20))
    budget_s = None if max_minutes is None else max(1.0, 60.0 * max_minutes)
    clipped = None if clip is None else list(clip)
    result = LoopResult(steps=steps, planned=steps, warmup=warmup, train_s=0.0)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    every = eval_every or max(1, steps // 20)
    model.train()
    t_train = time.monotonic()
    step = 0
    while step < steps:
        if budget_s is not None and step == min(50, steps // 10 + 1):
            steps = step_budget(step, steps, t_train, t0, budget_s)
            every = eval_every or max(1, steps // 20)
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clipped is not None:
            torch.nn.utils.clip_grad_norm_(clipped, 1.0)
        opt.step()
        sched.step()
        result.losses.append(float(loss.detach()))
        last = step + 1 == steps
        if validate is not None and ((step + 1) % every == 0 or last):
            model.eval()
            result.val_loss = validate()
            model.train()
        if (step + 1) % every == 0 or last:
            result.history.append({"step": step + 1, "train_loss": float(np.mean(result.losses[-every:])),
                                   "val_loss": result.val_loss})
        if on_progress is not None:
            on_progress(step + 1, steps, result.losses[-1], result.val_loss)
        step += 1
        if budget_s is not None and time.monotonic() - t0 > budget_s and step < steps:
            steps = step  # slower than measured (a busy machine): stop at the budget
    result.steps = steps
    result.train_s = time.monotonic() - t_train
    model.eval()
    return result
