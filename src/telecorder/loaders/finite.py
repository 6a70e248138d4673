"""Non-finite values (NaN, inf) in the numeric columns a loader trains on.

One NaN in a state or action reaches every weight of a network in one optimizer step, and a
training run then "succeeds" with a useless checkpoint. The loaders check every episode's
columns when they read them: an error names the file, the episode, the step and the feature;
``skip_nonfinite`` leaves the affected episodes out instead (and says how many).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

SKIP_HINT = ("fix or drop that episode (telecorder doctor lists every one), or leave such episodes out "
             "(telecorder train --skip-nonfinite; skip_nonfinite=True in Python)")


@dataclass(frozen=True)
class NonFinite:
    """Where an episode's columns first hold a non-finite value, and how many it holds."""

    feature: str
    step: int
    dim: int
    value: float
    values: int  # non-finite values in the feature over the episode
    steps: int  # steps with at least one of them

    @property
    def kind(self) -> str:
        return "NaN" if np.isnan(self.value) else ("+inf" if self.value > 0 else "-inf")


def first_nonfinite(columns: Mapping[str, Any], keys: Iterable[str] | None = None) -> NonFinite | None:
    """The first non-finite value in ``columns`` (features in ``keys`` order), None if all are finite."""
    for name in (columns if keys is None else keys):
        if name not in columns:
            continue
        a = np.asarray(columns[name])
        if a.dtype.kind not in "fc" or a.size == 0:
            continue  # integers and booleans are always finite
        flat = a.reshape(len(a), -1) if a.ndim else a.reshape(1, 1)
        bad = ~np.isfinite(flat)
        if not bad.any():
            continue
        rows = np.flatnonzero(bad.any(axis=1))
        step = int(rows[0])
        dim = int(np.flatnonzero(bad[step])[0])
        return NonFinite(name, step, dim, float(np.real(flat[step, dim])), int(bad.sum()), int(rows.size))
    return None


def nonfinite_message(where: object, episode: int, found: NonFinite, hint: str = SKIP_HINT) -> str:
    """One line naming the file, episode, step and feature of ``found``."""
    more = (f"; {found.values} non-finite value(s) in {found.steps} step(s) of this episode"
            if found.values > 1 else "")
    return (f"{where}: episode {episode}, step {found.step}: {found.feature!r} is {found.kind} "
            f"(dimension {found.dim}{more}); training on it would make the weights NaN: {hint}")


def finite_summary_problem(summary: Mapping[str, Any], keys: Iterable[str]) -> str | None:
    """The first of ``keys`` in a statistics summary whose values are not all finite numbers."""
    for k in keys:
        value = summary.get(k)
        if value is None:
            continue
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return f"{k!r} is not a list of numbers"
        if not np.isfinite(arr).all():
            return f"{k!r} holds non-finite values"
    return None
