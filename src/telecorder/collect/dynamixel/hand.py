"""What a person's hand does to a torque-off servo chain: joint angles over time, looping.

A leader arm is moved by hand with its torque off; the emulator makes the present
positions of such servos follow one of these trajectories. Angles are physical joint
angles in radians (0 rad = 2048 ticks), before drive-mode reversal and homing offset.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

# A pick-and-place by a 6-joint arm plus gripper: (time s, arm joints rad, gripper rad).
# Arm joints: base yaw, shoulder, elbow, wrist pitch, wrist roll, extra wrist joint.
_OPEN, _CLOSED = 0.8, 0.05
_KEYFRAMES: tuple[tuple[float, tuple[float, ...], float], ...] = (
    (0.0, (0.0, -0.30, 0.60, 0.30, 0.00, 0.00), _CLOSED),  # home
    (1.0, (0.5, 0.20, 0.30, 0.60, 0.30, 0.10), _OPEN),  # above the object, opening
    (2.0, (0.5, 0.45, 0.15, 0.75, 0.30, 0.10), _OPEN),  # down to it
    (2.6, (0.5, 0.45, 0.15, 0.75, 0.30, 0.10), _CLOSED),  # grasp
    (3.6, (0.5, 0.10, 0.50, 0.50, 0.30, 0.10), _CLOSED),  # lift
    (5.0, (-0.5, 0.20, 0.30, 0.60, -0.30, -0.10), _CLOSED),  # carry above the target
    (5.8, (-0.5, 0.45, 0.15, 0.75, -0.30, -0.10), _CLOSED),  # lower
    (6.4, (-0.5, 0.45, 0.15, 0.75, -0.30, -0.10), _OPEN),  # release
    (7.2, (-0.3, 0.00, 0.50, 0.40, 0.00, 0.00), _OPEN),  # retreat
    (8.0, (0.0, -0.30, 0.60, 0.30, 0.00, 0.00), _CLOSED),  # home again (= first keyframe)
)


class HandMotion:
    """Joint trajectories keyed by servo ID, sampled at ``times`` and repeated with the last time as period.

    ``smooth`` eases in and out of every sample (zero velocity at each one, as a hand
    pausing at waypoints); otherwise samples are joined linearly, which suits densely
    recorded trajectories.
    """

    def __init__(self, times: Sequence[float], joints: Mapping[int, Sequence[float]], *, smooth: bool = False,
                 source: str = "hand motion") -> None:
        t = np.asarray(times, dtype=float)
        if t.ndim != 1 or len(t) == 0:
            raise ValueError(f"{source}: needs at least one time sample")
        if not np.all(np.isfinite(t)) or t[0] < 0 or np.any(np.diff(t) <= 0):
            raise ValueError(f"{source}: times must be finite, start at or after 0 and strictly increase")
        if not joints:
            raise ValueError(f"{source}: no joints")
        self.times = t
        self.joints: dict[int, np.ndarray] = {}
        for sid, values in joints.items():
            v = np.asarray(values, dtype=float)
            if v.shape != t.shape:
                raise ValueError(f"{source}: joint {sid} has {v.size} samples but there are {t.size} times")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{source}: joint {sid} has a NaN or infinite angle")
            self.joints[int(sid)] = v
        self.smooth = smooth
        self.period = float(t[-1])

    @property
    def ids(self) -> list[int]:
        return sorted(self.joints)

    @classmethod
    def builtin(cls, ids: Iterable[int]) -> HandMotion:
        """An 8 s pick-and-place of an arm whose last servo (highest ID) is the gripper.

        The first servos take the base, shoulder, elbow, wrist pitch, wrist roll and an
        extra wrist joint, in ID order; any further ones sway gently.
        """
        order = sorted(set(int(i) for i in ids))
        if not order:
            raise ValueError("builtin hand motion: no servo IDs")
        times = [k[0] for k in _KEYFRAMES]
        arm_ids = order[:-1] if len(order) > 1 else order
        joints: dict[int, list[float]] = {}
        for j, sid in enumerate(arm_ids):
            if j < len(_KEYFRAMES[0][1]):
                joints[sid] = [k[1][j] for k in _KEYFRAMES]
            else:
                joints[sid] = [0.2 * math.sin(2 * math.pi * t / times[-1] + j) - 0.2 * math.sin(j) for t in times]
        if len(order) > 1:
            joints[order[-1]] = [k[2] for k in _KEYFRAMES]
        return cls(times, joints, smooth=True, source="builtin hand motion")

    @classmethod
    def from_file(cls, path: str | Path) -> HandMotion:
        """Load a trajectory from CSV (``t,1,2,...`` header, one column per servo ID) or JSON.

        JSON: ``{"t": [...], "joints": {"1": [...], "2": [...]}}``. Angles in radians.
        """
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError(f"{path}: cannot read hand motion file ({e.strerror or e})") from e
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            return cls._from_json(text, str(path))
        return cls._from_csv(text, str(path))

    @classmethod
    def _from_json(cls, text: str, source: str) -> HandMotion:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from e
        if not isinstance(doc, dict) or "t" not in doc or not isinstance(doc.get("joints"), dict):
            raise ValueError(f'{source}: expected {{"t": [...], "joints": {{"1": [...], ...}}}}')
        try:
            joints = {int(k): [float(x) for x in v] for k, v in doc["joints"].items()}
            times = [float(x) for x in doc["t"]]
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: servo IDs must be integers and samples numbers ({e})") from e
        return cls(times, joints, source=source)

    @classmethod
    def _from_csv(cls, text: str, source: str) -> HandMotion:
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if not rows:
            raise ValueError(f"{source}: empty hand motion file")
        header = [c.strip() for c in rows[0]]
        if len(header) < 2 or header[0].lower() != "t":
            raise ValueError(f"{source}: first row must be a header like 't,1,2,3' (time, then servo IDs)")
        try:
            ids = [int(c) for c in header[1:]]
        except ValueError as e:
            raise ValueError(f"{source}: header columns after 't' must be servo IDs ({e})") from e
        if len(set(ids)) != len(ids):
            raise ValueError(f"{source}: a servo ID appears twice in the header")
        times: list[float] = []
        cols: list[list[float]] = [[] for _ in ids]
        for n, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise ValueError(f"{source}: line {n} has {len(row)} values, expected {len(header)}")
            try:
                values = [float(c) for c in row]
            except ValueError as e:
                raise ValueError(f"{source}: line {n}: {e}") from e
            times.append(values[0])
            for col, v in zip(cols, values[1:], strict=True):
                col.append(v)
        return cls(times, dict(zip(ids, cols, strict=True)), source=source)

    def position(self, servo_id: int, t: float) -> float:
        """Joint angle (rad) of a servo at ``t`` seconds after the motion started."""
        values = self.joints[servo_id]
        if len(values) == 1 or self.period <= 0:
            return float(values[0])
        t = t % self.period
        if not self.smooth:
            return float(np.interp(t, self.times, values))
        k = int(np.searchsorted(self.times, t, side="right")) - 1
        k = min(max(k, 0), len(values) - 2)
        t0, t1 = self.times[k], self.times[k + 1]
        u = min(max((t - t0) / (t1 - t0), 0.0), 1.0)
        u = u * u * (3.0 - 2.0 * u)
        return float(values[k] + (values[k + 1] - values[k]) * u)

    def velocity(self, servo_id: int, t: float, dt: float = 1e-3) -> float:
        """Joint velocity (rad/s), by central difference."""
        return (self.position(servo_id, t + dt) - self.position(servo_id, t - dt)) / (2 * dt)
