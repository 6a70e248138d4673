"""Small policies the policy-loop tests load as ``--policy toy_policies:NAME`` (module:factory)."""

from __future__ import annotations

import threading
import time

import numpy as np

from telecorder.policies import Policy, PolicySpec

ARM_DIM = 6  # the built-in sim arm: 5 joints + gripper


class Drift(Policy):
    """Heads the base joint away from wherever the arm is: strays from any sensible plan."""

    def __init__(self, delay_s: float = 0.0, horizon: int = 10, cameras: tuple[str, ...] = ()) -> None:
        self.spec = PolicySpec(action_dim=ARM_DIM, horizon=horizon, cameras=cameras,
                               image_size=(48, 64) if cameras else None)
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def predict(self, observation):
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        state = np.asarray(observation["state"][-1], dtype=np.float64)
        chunk = np.repeat(state[None], self.spec.horizon, axis=0)
        chunk[:, 0] += 1.0
        return chunk


class Hold(Policy):
    """Keeps the arm where it is: never does the task, never undoes what someone else did."""

    spec = PolicySpec(action_dim=ARM_DIM, horizon=10)

    def predict(self, observation):
        return np.repeat(np.asarray(observation["state"][-1], dtype=np.float64)[None], 10, axis=0)


def hold() -> Hold:
    return Hold()


def drift() -> Drift:
    return Drift()


def slow() -> Drift:
    """A policy far slower than the control period: 0.3 s per call (9 ticks at 30 Hz) for 20 ticks of actions."""
    return Drift(delay_s=0.3, horizon=20)


def not_a_policy() -> object:
    return object()
