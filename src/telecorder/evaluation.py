"""Closed-loop evaluation: a policy runs episodes in simulation through ``collect --device policy``.

Nothing here runs a policy another way: each episode is recorded by the same session,
recorder and runner as ``collect``, so the rollouts are an ordinary dataset (viewable,
and fit to go back into training) and what is measured is what a user would deploy.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TelecorderError


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for z = 1.96); sound at 0% and 100% too."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EvalConfig:
    policy: str
    episodes: int = 20
    seed: int = 0
    out: Path | None = None
    robot_model: Path | None = None
    episode_time_s: float = 10.0
    fps: float | None = None
    realtime: bool = False
    camera_size: tuple[int, int] | None = None  # (width, height); None: the policy's image size
    task: str | None = None
    execute_steps: int | None = None
    ensemble: float | None = None
    intervene: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate(cfg: EvalConfig, console: Any = None) -> dict[str, Any]:
    """Run ``cfg.episodes`` closed-loop episodes and return the success rate and what the loop measured."""
    from rich.console import Console

    from .collect.factory import DeviceConfig, make_devices
    from .collect.session import RecordingSession, SessionConfig
    from .policies.loading import load_policy

    if cfg.episodes < 1:
        raise TelecorderError("--episodes must be at least 1")
    keep = cfg.out is not None
    if keep and cfg.out.exists() and any(cfg.out.iterdir()):
        raise TelecorderError(f"{cfg.out} exists and is not empty; choose a new --out folder for the rollouts")
    # The policy's spec says which cameras, image size and state the sim must provide; the session
    # then runs this same loaded policy (and closes it).
    policy = load_policy(cfg.policy)
    spec = policy.spec
    fps = cfg.fps or spec.fps or 30.0
    size = cfg.camera_size
    if size is None:
        size = (spec.image_size[1], spec.image_size[0]) if spec.image_size else (640, 480)
    out = cfg.out if keep else Path(tempfile.mkdtemp(prefix="telecorder-eval-")) / "rollouts"
    console = console or Console(quiet=True)
    try:
        robot, teleop, cameras = make_devices(DeviceConfig(
            robot="sim", device="policy", robot_model=cfg.robot_model, fps=fps, seed=cfg.seed,
            sim_cameras=list(spec.cameras), camera_size=size, camera_fps=fps, policy=policy,
            intervene=cfg.intervene, task=cfg.task if cfg.task is not None else "pick up the cube",
            execute_steps=cfg.execute_steps, ensemble=cfg.ensemble, realtime=cfg.realtime,
            env_state="observation.environment_state" in spec.state_keys,
        ))
        session = RecordingSession(robot, teleop, cameras, SessionConfig(
            out=out, episodes=cfg.episodes, episode_time_s=cfg.episode_time_s, reset_time_s=0.0,
            task=cfg.task if cfg.task is not None else "pick up the cube", fps=fps, seed=cfg.seed,
            realtime=cfg.realtime,
        ), console=console)
        summary = session.run()
        records = summary.saved
    finally:
        if not keep:
            shutil.rmtree(out.parent, ignore_errors=True)
    successes = sum(1 for r in records if r.get("success"))
    n = len(records)
    lo, hi = wilson_interval(successes, n)
    ticks = sum(int(r.get("length", 0)) for r in records)
    outcomes = summary.outcomes
    return {
        "policy": str(cfg.policy),
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "seed": cfg.seed,
        "clock": "wall" if cfg.realtime else "simulation",
        "fps": fps,
        "steps": ticks,
        "held_ticks": sum(int(r.get("policy_held_ticks") or 0) for r in records),
        "human_steps": sum(int(r.get("human_steps") or 0) for r in records),
        "late_ticks": sum(o.late_ticks for o in outcomes),
        "ticks_on_time": (1 - sum(o.late_ticks + o.missed_ticks for o in outcomes) / max(1, ticks)),
        "per_episode": [bool(r.get("success")) for r in records],
        "rollouts": str(out) if keep else None,
    }
