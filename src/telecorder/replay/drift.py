"""How far a replay's measured states drifted from the recording's, and how to show it.

Drift is ``|replayed[t] - recorded[t]|`` per dimension over the steps both have, where
``replayed[t]`` is what the follower measured at the replay's tick ``t`` (before action
``t`` was sent) and ``recorded[t]`` what it measured at the recording's tick ``t``. It is in
the feature's own units (radians for arm joints, 0..1 for a gripper, metres for the cube's
position). A clean replay of a simulated episode in its restored scene drifts by rounding
only; an action column off by one tick, or in the wrong units, shows up right away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def drift_stats(recorded: np.ndarray, replayed: np.ndarray, names: Sequence[str] | None) -> dict[str, Any]:
    """p50 / p95 / max of the absolute difference per dimension, over the steps both arrays have."""
    n = min(len(recorded), len(replayed))
    rec = np.asarray(recorded[:n], dtype=np.float64).reshape(n, -1)
    rep = np.asarray(replayed[:n], dtype=np.float64).reshape(n, -1)
    dims = rec.shape[1]
    labels = list(names) if names is not None and len(names) == dims else [f"dim{i}" for i in range(dims)]
    if n == 0:
        empty = [None] * dims
        return {"names": labels, "steps": 0, "p50": empty, "p95": empty, "max": empty}
    err = np.abs(rep - rec)
    return {
        "names": labels,
        "steps": n,
        "p50": np.percentile(err, 50, axis=0).tolist(),
        "p95": np.percentile(err, 95, axis=0).tolist(),
        "max": err.max(axis=0).tolist(),
    }


def worst(drift: dict[str, Any], stat: str = "max") -> float:
    """The largest ``stat`` over the dimensions of one feature's drift (0 when nothing was compared)."""
    values = [v for v in drift[stat] if v is not None]
    return float(max(values)) if values else 0.0


def print_report(report: dict[str, Any], console: Console) -> None:
    """The drift table and the verdict lines of a replay report (see :func:`replay.replay`)."""
    console.print(
        f"replayed episode {report['episode']} of {report['dataset']} on {report['robot']}: "
        f"{report['steps']} of {report['recorded_steps']} steps at {report['fps']:g} Hz"
        + (f" ({report['speed']:g} x the recorded rate)" if report.get("speed", 1) != 1 else ""),
        highlight=False,
    )
    if report.get("scene"):
        console.print(f"scene: {report['scene']}", highlight=False)
    for feature, d in report["drift"].items():
        unit = d.get("unit") or ""
        console.print(f"drift of {feature}, |replayed - recorded| over {d['steps']} steps:", highlight=False)
        table = Table()
        table.add_column("dimension")
        for col in ("p50", "p95", "max"):
            table.add_column(col, justify="right")
        for i, name in enumerate(d["names"]):
            table.add_row(name, *(_fmt(d[col][i]) for col in ("p50", "p95", "max")))
        console.print(table)
        if unit:
            console.print(f"  units: {unit}", highlight=False)
    success = report.get("success") or {}
    if success.get("replayed") is not None or success.get("recorded") is not None:
        console.print(
            f"task success: recorded {_yes_no(success.get('recorded'))}, replayed {_yes_no(success.get('replayed'))}",
            highlight=False,
        )
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/] {escape(str(note))}", highlight=False)
    if report.get("out"):
        console.print(f"the replay was recorded in {report['out']}", highlight=False)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]
