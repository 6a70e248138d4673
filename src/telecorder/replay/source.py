"""One recorded episode as a replay reads it (telecorder or LeRobot), and whether a robot takes its actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..collect.interfaces import Robot
from ..datasets.features import DatasetInfo, FeatureSpec
from ..errors import DatasetError, TelecorderError

STATE = "observation.state"
ENV_STATE = "observation.environment_state"
# Words in an action feature's unit that mean it is not an absolute joint position target.
_NOT_JOINT_POSITIONS = ("delta", "velocit", "end effector", "end-effector", "eef", "cartesian", "torque",
                        "current", "pwm")




@dataclass
class RecordedEpisode:
    """What a replay needs of one recorded episode, whatever format it came from."""

    dataset: Path
    index: int
    info: DatasetInfo
    action: np.ndarray
    states: dict[str, np.ndarray]
    timestamps: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return float(self.info.fps)

    def __len__(self) -> int:
        return len(self.action)


def load_episode(dataset: Path, index: int) -> RecordedEpisode:
    """Episode ``index`` of a telecorder or LeRobot dataset: actions, states and what it stored."""
    from ..loaders.source import detect_format

    dataset = Path(dataset)
    fmt = detect_format(dataset)
    if fmt == "native":
        from ..datasets.dataset import Dataset

        ds = Dataset.open(dataset)
        with ds.episode(index) as reader:
            names = [n for n in ("action", STATE, ENV_STATE) if n in ds.info.features]
            columns = {n: reader.numeric(n) for n in names}
            attrs, timestamps = reader.attrs, reader.timestamps()
        info = ds.info
    elif fmt == "lerobot":
        from ..converters.lerobot.reader import LeRobotReader

        lr = LeRobotReader(dataset)
        if index not in lr.episode_indices():
            raise DatasetError(f"{dataset}: no episode {index}")
        info = lr.info
        names = [n for n in ("action", STATE, ENV_STATE) if n in info.features]
        columns, attrs = lr.episode_columns(index, names)
        timestamps = columns.pop("timestamp", None)
        attrs = dict(attrs)
    else:
        raise DatasetError(f"{dataset}: replay reads telecorder and LeRobot datasets; convert this {fmt} dataset "
                           "first ('telecorder convert')")
    if "action" not in columns:
        raise DatasetError(f"{dataset}: the dataset has no 'action' feature, so there is nothing to replay")
    action = np.asarray(columns.pop("action"), dtype=np.float64)
    if action.ndim != 2 or len(action) == 0:
        raise DatasetError(f"{dataset}: episode {index} has no actions to replay (shape {action.shape})")
    if not np.all(np.isfinite(action)):
        bad = int(np.flatnonzero(~np.isfinite(action).all(axis=1))[0])
        raise DatasetError(f"{dataset}: episode {index} has a non-finite action at step {bad}; "
                           "'telecorder doctor' finds such episodes")
    return RecordedEpisode(dataset, index, info, action, {k: np.asarray(v) for k, v in columns.items()},
                           timestamps, attrs)


def check_action_space(ep: RecordedEpisode, robot: Robot, robot_name: str) -> list[str]:
    """Refuse actions the robot does not take (count, names, kind, units); notes on what is assumed."""
    feats = {f.name: f for f in robot.features()}
    theirs, ours = ep.info.features["action"], feats["action"]
    where = f"{ep.dataset} episode {ep.index}"
    fix = "replay it on the robot it was recorded with (--robot, --robot-model)"
    if tuple(theirs.shape) != tuple(ours.shape):
        raise TelecorderError(
            f"{where}: the actions have {_describe(theirs)} and {robot_name} takes {_describe(ours)}; {fix}"
        )
    if theirs.names and ours.names and tuple(theirs.names) != tuple(ours.names):
        raise TelecorderError(f"{where}: the actions are for joints {list(theirs.names)} and {robot_name} has "
                              f"{list(ours.names)}; {fix}")
    unit = (theirs.unit or "").lower()
    if any(w in unit for w in _NOT_JOINT_POSITIONS):
        raise TelecorderError(f"{where}: the actions are not absolute joint positions ({theirs.unit!r}); "
                              "replay sends joint position targets only")
    if ("degree" in unit) != ("degree" in (ours.unit or "").lower()):
        raise TelecorderError(f"{where}: the actions are in other units than {robot_name} takes "
                              f"({theirs.unit!r} vs {ours.unit!r}); convert them first")
    notes = []
    if not unit:
        notes.append(f"the dataset does not say what its actions mean; they are sent as {ours.unit!r}")
    if theirs.names is None and ours.names:
        notes.append(f"the dataset does not name its action dimensions; they are taken as {list(ours.names)}")
    return notes


def _describe(spec: FeatureSpec) -> str:
    n = spec.shape[0] if spec.shape else 1
    return f"{n} dimension(s)" + (f" ({', '.join(spec.names)})" if spec.names else "")
