"""The pose-stream file format: JSON lines of VR controller samples, and a replaying source.

One line per instant: ``t`` (seconds since the recording started) and ``left``/``right`` keys,
each with a 4x4 pose in the OpenXR stage frame (metres), ``squeeze``, ``trigger``, ``buttons``
and ``valid``. ``telecorder vr-record`` writes it; tests and replays read it.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ....errors import TelecorderError

__all__ = ["HANDS", "ControllerSample", "PoseStreamError", "PoseStreamSource", "load_pose_stream",
           "write_pose_stream"]

HANDS = ("left", "right")


class PoseStreamError(TelecorderError, ValueError):
    """A pose-stream file that cannot be replayed: names the file (and line) and what is wrong.

    Also a ValueError, which is what a bad sample raised before this class existed."""


@dataclass
class ControllerSample:
    """One hand's controller state at time ``t`` (seconds).

    ``pose`` is the 4x4 controller pose in the OpenXR stage frame (metres); ``valid`` is False
    when the runtime lost tracking, in which case ``pose`` may be NaN.
    """

    t: float
    hand: str
    pose: np.ndarray
    squeeze: float = 0.0
    trigger: float = 0.0
    buttons: dict[str, bool] = field(default_factory=dict)
    valid: bool = True

    @property
    def usable(self) -> bool:
        """Tracked and finite: the only poses the mapping may follow."""
        return bool(self.valid) and bool(np.all(np.isfinite(self.pose)))

    def to_json(self) -> dict[str, Any]:
        return {
            "pose": [float(v) for v in np.asarray(self.pose, dtype=float).ravel()],
            "squeeze": float(self.squeeze),
            "trigger": float(self.trigger),
            "buttons": {k: bool(v) for k, v in self.buttons.items()},
            "valid": bool(self.valid),
        }


def _parse_hand(t: float, hand: str, raw: Any) -> ControllerSample:
    if not isinstance(raw, dict):
        raise ValueError(f"{hand!r} must be an object, got {type(raw).__name__}")
    valid = raw.get("valid", True)
    if not isinstance(valid, bool):
        raise ValueError(f"{hand}.valid must be true or false")
    if raw.get("pose") is None:
        # A lost controller may carry no pose at all; that is only meaningful when flagged.
        if valid:
            raise ValueError(f"{hand}.pose is missing")
        pose = np.full((4, 4), np.nan)
    else:
        try:
            pose = np.asarray(raw["pose"], dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{hand}.pose is not numeric: {exc}") from None
        if pose.size != 16 or pose.shape not in ((16,), (4, 4)):
            raise ValueError(
                f"{hand}.pose must be 16 numbers or a 4x4 matrix, got shape {pose.shape}"
            )
        pose = pose.reshape(4, 4)
    values = {}
    for key in ("squeeze", "trigger"):
        v = raw.get(key, 0.0)
        # NaN would reach the gripper command: a tracked controller's analog values are finite.
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{hand}.{key} must be a finite number")
        values[key] = float(v)
    buttons = raw.get("buttons", {})
    if not isinstance(buttons, dict) or not all(isinstance(b, bool) for b in buttons.values()):
        raise ValueError(f"{hand}.buttons must map names to true/false")
    return ControllerSample(t=t, hand=hand, pose=pose, buttons=dict(buttons), valid=valid, **values)


def _parse_line(text: str) -> list[ControllerSample]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    t = obj.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise ValueError("'t' (seconds) is missing or not a finite number")
    unknown = set(obj) - {"t", *HANDS}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; expected 't', 'left', 'right'")
    return [_parse_hand(float(t), hand, obj[hand]) for hand in HANDS if hand in obj]


def load_pose_stream(path: str | os.PathLike[str]) -> list[ControllerSample]:
    """All samples of a pose stream, both hands, in time order (blank lines are skipped)."""
    path = Path(path)
    samples: list[ControllerSample] = []
    lineno = 0
    try:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    samples.extend(_parse_line(line))
                except ValueError as exc:
                    raise PoseStreamError(f"{path}:{lineno}: bad pose sample: {exc}") from None
    except UnicodeDecodeError as exc:
        raise PoseStreamError(f"{path}:{lineno}: bad pose sample: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise PoseStreamError(f"{path}: cannot read the pose stream ({exc.strerror or exc}); give the JSON-lines "
                              "file 'telecorder vr-record' wrote") from None
    # Stable sort: a stream recorded slightly out of order still replays monotonically.
    samples.sort(key=lambda s: s.t)
    return samples


def write_pose_stream(path: str | os.PathLike[str], samples: Iterable[ControllerSample]) -> None:
    """Write samples as JSON lines; samples of both hands sharing a ``t`` share a line."""
    lines: dict[float, dict[str, Any]] = {}
    for s in samples:
        if s.hand not in HANDS:
            raise ValueError(f"hand must be one of {HANDS}, got {s.hand!r}")
        lines.setdefault(float(s.t), {"t": float(s.t)})[s.hand] = s.to_json()
    with Path(path).open("w", encoding="utf-8") as f:
        for t in sorted(lines):
            f.write(json.dumps(lines[t]) + "\n")


class PoseStreamSource:
    """Replays one hand of a recorded pose stream against the wall clock (or another clock).

    ``t`` in the stream is seconds since the recording started, so :meth:`current` returns the
    latest sample with ``t <= elapsed``, ``elapsed`` counted from :meth:`start`. ``clock``
    (seconds) replaces the wall clock, e.g. by the simulation's time under ``--no-realtime``.
    """

    def __init__(self, path: str | os.PathLike[str], hand: str = "right",
                 clock: Callable[[], float] | None = None) -> None:
        if hand not in HANDS:
            raise ValueError(f"hand must be one of {HANDS}, got {hand!r}")
        self.path = Path(path)
        self.hand = hand
        self.samples = [s for s in load_pose_stream(self.path) if s.hand == hand]
        self._times = [s.t for s in self.samples]
        self._clock = clock or (lambda: time.monotonic_ns() / 1e9)
        self._start: float | None = None

    def start(self) -> None:
        self._start = self._clock()

    def elapsed(self) -> float:
        if self._start is None:
            raise RuntimeError("PoseStreamSource.start() was not called")
        return self._clock() - self._start

    def sample_at(self, elapsed: float) -> ControllerSample | None:
        """Latest sample with ``t <= elapsed``; None before the first one."""
        # A microsecond of slack: a simulated clock sums its steps in floating point, and a sample
        # stamped exactly on a tick must not slip to the next one.
        i = bisect.bisect_right(self._times, elapsed + 1e-6)
        return self.samples[i - 1] if i else None

    def current(self) -> ControllerSample | None:
        return self.sample_at(self.elapsed())

    def finished(self) -> bool:
        """Whether the last sample has been reached (it then stays the current one)."""
        return not self.samples or self.elapsed() >= self._times[-1]
