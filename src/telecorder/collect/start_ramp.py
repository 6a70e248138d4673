"""The safety of the first seconds of driving a follower from a stream of joint targets.

Used by leader-arm teleoperation and by ``telecorder replay``, so both start the same way:

1. on the first tick the follower must be near where the stream says it starts
   (``start_tolerance`` per joint, in the state's units, radians on our arms); otherwise a
   DeviceError names the joint, because snapping a follower to a distant pose is how arms
   hit tables;
2. the offset between the follower and that start is taken out linearly over ``ramp_s``;
3. no command moves any joint more than ``max_step`` from the previous command (one limit
   for every joint, or one per joint).

The start reference is the live target itself for a leader arm (the follower ramps onto the
leader, wherever it moves meanwhile), and the recorded first state for a replay (the
offset decays while the recorded actions play, so a follower standing exactly where the
recording began gets the recorded actions unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DeviceError


class StartRamp:
    def __init__(
        self,
        names: Sequence[str],
        *,
        fps: float,
        start_tolerance: float = 0.6,
        ramp_s: float = 1.0,
        max_step: float | np.ndarray = 0.25,
        source: str = "the target",
        remedy: str = "move the follower to the start pose first",
    ) -> None:
        self.names = list(names)
        self.start_tolerance, self.max_step = start_tolerance, max_step
        self.ramp_ticks = max(1, int(ramp_s * fps))
        self.source, self.remedy = source, remedy
        self.reset()

    def reset(self, *, check: bool = True, reference: np.ndarray | None = None) -> None:
        """Start over on the next tick: check (unless ``check`` is False) and ramp again.

        ``reference``: where the stream starts; None means the first target itself.
        """
        self._check = check
        self._reference = None if reference is None else np.asarray(reference, dtype=np.float64)
        self._tick = 0
        self._start: np.ndarray | None = None
        self._last: np.ndarray | None = None

    @property
    def started(self) -> bool:
        return self._start is not None

    def command(self, target: np.ndarray, follower: np.ndarray) -> np.ndarray:
        """The command to send this tick for ``target``, given the follower's measured position."""
        target = np.asarray(target, dtype=np.float64)
        if self._start is None:
            follower = np.asarray(follower, dtype=np.float64)
            if self._check:
                self.check(target if self._reference is None else self._reference, follower)
            self._start = follower.copy()
            self._last = follower.copy()
        assert self._last is not None
        self._tick += 1
        alpha = min(1.0, self._tick / self.ramp_ticks)
        reference = target if self._reference is None else self._reference
        # (1 - alpha) * start + alpha * target for a leader; target + a decaying offset for a replay.
        goal = target + (1 - alpha) * (self._start - reference)
        command = self._last + np.clip(goal - self._last, -self.max_step, self.max_step)
        self._last = command
        return command

    def check(self, start: np.ndarray, follower: np.ndarray) -> None:
        gap = np.abs(np.asarray(start, dtype=np.float64) - follower)
        worst = int(np.argmax(gap))
        if gap[worst] > self.start_tolerance:
            raise DeviceError(
                f"{self.source} and follower differ by {gap[worst]:.2f} rad on joint "
                f"{self.names[worst]!r} (limit {self.start_tolerance:g}); {self.remedy}"
            )
