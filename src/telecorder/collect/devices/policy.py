"""``collect --device policy [--intervene DEVICE]``: a policy as the teleop device, a person as its backup."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ...errors import TelecorderError
from ..interfaces import Robot, Teleop


def policy_devices(
    cfg: Any,
    cleanups: list[Callable[[], None]],
    build_pair: Callable[[Any, list[Callable[[], None]]], tuple[Robot, Teleop]],
    build_follower: Callable[[Any, list[Callable[[], None]]], Robot],
) -> tuple[Robot, Teleop]:
    """The follower and the policy runner (wrapped for interventions when ``cfg.intervene`` is set).

    ``cfg.policy`` is a reference for :func:`load_policy`, or a :class:`Policy` already loaded.
    """
    from ...policies.base import Policy
    from ...policies.loading import load_policy
    from .intervention import (
        INTERVENERS,
        ExpertCorrector,
        InterventionTeleop,
    )
    from .policy_runner import PolicyRunner

    if not cfg.policy:
        raise TelecorderError("--device policy needs --policy DIR (a checkpoint 'telecorder train' wrote) "
                              "or --policy module:factory (your own Policy)")
    if cfg.intervene is not None and cfg.intervene not in INTERVENERS:
        raise TelecorderError(f"--intervene {cfg.intervene}: choose one of {', '.join(INTERVENERS)}")
    policy = cfg.policy if isinstance(cfg.policy, Policy) else load_policy(cfg.policy)
    cleanups.append(policy.close)
    human: Teleop | None = None
    if cfg.intervene in (None, "expert"):
        robot = build_follower(cfg, cleanups)
        if cfg.intervene == "expert":
            env = getattr(robot, "env", None)
            if env is None or not env.has_task:
                raise TelecorderError("--intervene expert corrects with the scripted expert of the built-in sim task; "
                                      "use --robot sim without --robot-model")
            human = ExpertCorrector(robot, seed=cfg.seed)
    else:
        robot, human = build_pair(dataclasses.replace(cfg, device=cfg.intervene), cleanups)
    action = next((f for f in robot.features() if f.name == "action"), None)
    choose = getattr(policy, "for_robot", None)
    if callable(choose):
        # A policy of several robots: the part trained for this one (refused, naming the known ones, otherwise).
        policy = choose(getattr(robot, "robot_type", None), None if action is None else action.names)
    env = getattr(robot, "env", None)
    success = robot.success if env is not None and env.has_task else None
    runner = PolicyRunner(
        policy,
        fps=cfg.fps,
        task=cfg.task,
        realtime=cfg.realtime,
        execute_steps=cfg.execute_steps,
        ensemble=cfg.ensemble,
        action_dim=None if action is None else int(action.shape[0]),
        success=success,
    )
    if human is None:
        return robot, runner
    return robot, InterventionTeleop(runner, human, kind=cfg.intervene, fps=cfg.fps,
                                     gripper_index=getattr(env, "gripper_index", None))
