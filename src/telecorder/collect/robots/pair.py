"""Two follower arms as one robot (ALOHA style): left and right, each on its own bus.

Every numeric feature is both arms' concatenated, left first, with each dimension's name
prefixed by its arm (``left_shoulder_pan`` ... ``right_gripper``), the layout of the sim's
``bimanual`` scene; an action is split at the left arm's width and each half goes to its arm.
Communication counters are kept per arm (``left.timeouts``, ``right.timeouts``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ...datasets.features import FeatureSpec
from ...errors import DeviceError
from ..interfaces import Robot, connect_all

ARMS = ("left", "right")


class RobotPair(Robot):
    def __init__(self, robots: Sequence[Robot], *, names: Sequence[str] = ARMS,
                 robot_type: str = "dynamixel_bimanual") -> None:
        if len(robots) != len(names) or len(set(names)) != len(names):
            raise ValueError(f"one distinct name per arm: {len(robots)} arms, names {list(names)}")
        self.robots, self.names, self.robot_type = list(robots), list(names), robot_type
        per_arm = [{f.name: f for f in r.features()} for r in self.robots]
        keys = list(per_arm[0])
        for name, feats in zip(self.names[1:], per_arm[1:], strict=True):
            if list(feats) != keys:
                raise ValueError(f"the {name} arm records {sorted(feats)}, the {self.names[0]} arm {sorted(keys)}: "
                                 "a pair records the same features on both arms")
        self._features = [self._joined([feats[k] for feats in per_arm]) for k in keys]
        self.widths = [int(feats["action"].shape[0]) for feats in per_arm]

    def _joined(self, parts: list[FeatureSpec]) -> FeatureSpec:
        first = parts[0]
        if first.kind != "numeric" or len(first.shape) != 1 or any(p.shape[1:] != first.shape[1:] for p in parts):
            raise ValueError(f"feature {first.name!r}: only 1-D numeric features can be joined across arms")
        names = None
        if all(p.names is not None for p in parts):
            names = tuple(f"{arm}_{n}" for arm, p in zip(self.names, parts, strict=True) for n in p.names or ())
        return replace(first, shape=(sum(p.shape[0] for p in parts),), names=names)

    def connect(self) -> None:
        connect_all(self.robots)

    def features(self) -> list[FeatureSpec]:
        return list(self._features)

    def reset(self, seed: int | None = None) -> None:
        for robot in self.robots:
            robot.reset(seed)

    def observe(self) -> dict[str, np.ndarray]:
        parts = [robot.observe() for robot in self.robots]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def act(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action)
        if action.shape != (sum(self.widths),):
            raise DeviceError(f"the {' and '.join(self.names)} arms take {sum(self.widths)} action values, "
                              f"got shape {action.shape}")
        sent, start = [], 0
        for robot, width in zip(self.robots, self.widths, strict=True):
            sent.append(robot.act(action[start:start + width]))
            start += width
        return np.concatenate(sent)

    def counters(self) -> dict[str, int]:
        return {f"{name}.{k}": v for name, robot in zip(self.names, self.robots, strict=True)
                for k, v in robot.counters().items()}

    def disconnect(self) -> None:
        errors: list[BaseException] = []
        for robot in self.robots:
            try:
                robot.disconnect()
            except Exception as e:  # every arm is let go, whatever the other did
                errors.append(e)
        if errors:
            raise errors[0]
