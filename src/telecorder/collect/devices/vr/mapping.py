"""The clutch mapping from VR controller samples to end-effector targets, without any headset.

Buttons (from :mod:`telecorder.collect.key_bindings`; rising edges only, so holding a button fires once): ``a`` saves the episode, ``b``
re-centres (re-anchors the controller and the robot at their current poses), ``menu`` or ``y``
discards the episode, ``x`` takes over from a policy (or hands back). Touch controllers put
``x``/``y`` on the left hand and ``a``/``b`` on the right, so a left-hand operator has discard
on ``y`` and nothing on ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...interfaces import Event
from ...key_bindings import VR_RECENTRE_BUTTONS, VR_SESSION_BUTTONS
from .pose_stream import ControllerSample

__all__ = ["AXIS_PRESETS", "MappingOutput", "VRMapping"]

# OpenXR stage: right-handed, +Y up, -Z forward (so +X right). Robot base: +X forward, +Y left,
# +Z up. Row i says which OpenXR axis gives robot axis i: forward = -Z, left = -X, up = +Y.
AXIS_PRESETS: dict[str, np.ndarray] = {
    "openxr_to_robot": np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "identity": np.eye(3),
}

SAVE_BUTTONS = frozenset(VR_SESSION_BUTTONS[Event.SAVE_EPISODE])
RECENTRE_BUTTONS = frozenset(VR_RECENTRE_BUTTONS)
DISCARD_BUTTONS = frozenset(VR_SESSION_BUTTONS[Event.DISCARD_EPISODE])
INTERVENE_BUTTONS = frozenset(VR_SESSION_BUTTONS[Event.INTERVENE])


@dataclass
class MappingOutput:
    """End-effector target in the robot base frame, gripper opening (0 closed, 1 open)."""

    position: np.ndarray
    rotation: np.ndarray
    gripper: float
    events: set[Event]
    engaged: bool


def _axes_matrix(axes: str | np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    if isinstance(axes, str):
        if axes not in AXIS_PRESETS:
            raise ValueError(f"unknown axes preset {axes!r}; choose from {sorted(AXIS_PRESETS)}")
        return AXIS_PRESETS[axes].copy()
    a = np.asarray(axes, dtype=float)
    if a.shape != (3, 3) or not np.all(np.isfinite(a)):
        raise ValueError(f"axes must be a finite 3x3 matrix, got shape {a.shape}")
    if not np.allclose(a @ a.T, np.eye(3), atol=1e-6) or not np.isclose(
        np.linalg.det(a), 1.0, atol=1e-6
    ):
        # A reflection would turn right-handed rotations into left-handed ones.
        raise ValueError("axes must be a rotation matrix (orthonormal, determinant +1)")
    return a


class VRMapping:
    """Clutched relative mapping from one controller to an end-effector target.

    While the clutch (squeeze >= ``clutch_threshold``) is held, the target follows the
    controller's motion since the clutch was pressed, rotated into the robot frame by ``axes``
    and scaled by ``scale``; released, the target stays where it was, so the operator can move
    their hand back without moving the robot (like lifting a mouse).

    On tracking loss (``valid`` False or a non-finite pose) the last command is held; when
    tracking returns with the clutch still held, the controller is re-anchored at its new pose
    and the robot side at the held target, so the gap never becomes a jump.
    """

    def __init__(
        self,
        scale: float = 1.0,
        axes: str | np.ndarray | Sequence[Sequence[float]] = "openxr_to_robot",
        clutch_threshold: float = 0.5,
    ) -> None:
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale}")
        self.scale = float(scale)
        self.axes = _axes_matrix(axes)
        self.clutch_threshold = float(clutch_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget anchors, held target and button history (e.g. at the start of an episode)."""
        self.engaged = False
        self._anchor_ctrl: np.ndarray | None = None
        self._anchor_robot_pos = np.zeros(3)
        self._anchor_robot_rot = np.eye(3)
        self._target_pos: np.ndarray | None = None
        self._target_rot: np.ndarray | None = None
        self._gripper = 1.0
        self._prev_buttons: dict[str, bool] = {}
        self._reanchor_from_target = False

    def _anchor(self, ctrl_pose: np.ndarray, robot_pos: np.ndarray, robot_rot: np.ndarray) -> None:
        self._anchor_ctrl = ctrl_pose.copy()
        self._anchor_robot_pos = robot_pos.copy()
        self._anchor_robot_rot = robot_rot.copy()

    def update(
        self,
        sample: ControllerSample | None,
        robot_eef_pos: np.ndarray,
        robot_eef_rot: np.ndarray,
    ) -> MappingOutput:
        robot_pos = np.asarray(robot_eef_pos, dtype=float).reshape(3)
        robot_rot = np.asarray(robot_eef_rot, dtype=float).reshape(3, 3)
        if self._target_pos is None or self._target_rot is None:
            # Until the first clutch the target is where the robot was when we started.
            self._target_pos, self._target_rot = robot_pos.copy(), robot_rot.copy()
        events: set[Event] = set()
        if sample is None:
            return self._output(events)

        # Buttons are digital inputs that stay meaningful while the pose is not tracked.
        pressed = {
            name
            for name, down in sample.buttons.items()
            if down and not self._prev_buttons.get(name)
        }
        self._prev_buttons = dict(sample.buttons)
        if pressed & SAVE_BUTTONS:
            events.add(Event.SAVE_EPISODE)
        if pressed & DISCARD_BUTTONS:
            events.add(Event.DISCARD_EPISODE)
        if pressed & INTERVENE_BUTTONS:
            events.add(Event.INTERVENE)

        if not sample.usable:
            if self.engaged:
                self._reanchor_from_target = True
            return self._output(events)

        if math.isfinite(sample.trigger):
            self._gripper = float(np.clip(1.0 - sample.trigger, 0.0, 1.0))
        clutch = math.isfinite(sample.squeeze) and sample.squeeze >= self.clutch_threshold
        pose = np.asarray(sample.pose, dtype=float)
        if not clutch:
            self.engaged = False
            self._reanchor_from_target = False
            return self._output(events)

        if not self.engaged or pressed & RECENTRE_BUTTONS:
            self._anchor(pose, robot_pos, robot_rot)
        elif self._reanchor_from_target:
            self._anchor(pose, self._target_pos, self._target_rot)
        self.engaged = True
        self._reanchor_from_target = False

        assert self._anchor_ctrl is not None
        a = self.axes
        d_pos = pose[:3, 3] - self._anchor_ctrl[:3, 3]
        r_delta = pose[:3, :3] @ self._anchor_ctrl[:3, :3].T
        self._target_pos = self._anchor_robot_pos + self.scale * (a @ d_pos)
        self._target_rot = (a @ r_delta @ a.T) @ self._anchor_robot_rot
        return self._output(events)

    def _output(self, events: set[Event]) -> MappingOutput:
        assert self._target_pos is not None and self._target_rot is not None
        return MappingOutput(
            position=self._target_pos.copy(),
            rotation=self._target_rot.copy(),
            gripper=self._gripper,
            events=events,
            engaged=self.engaged,
        )
