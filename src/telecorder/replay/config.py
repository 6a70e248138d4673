"""What ``telecorder replay`` is asked to do: the dataset and episode, the robot, the pace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .source import RecordedEpisode

# The slowest replay: one hundredth of the recorded rate (each action held 100 periods). Slower
# is no slow motion but a stalled arm, and the durations derived from it overflow.
MIN_SPEED = 0.01


@dataclass
class ReplayConfig:
    dataset: Path
    episode: int
    robot: str = "sim"
    robot_model: Path | None = None
    port: str | None = None
    calibration: Path | None = None
    baudrate: int = 1_000_000
    emulate: bool = False
    out: Path | None = None
    realtime: bool = True
    start_tolerance: float = 0.6
    ramp_s: float = 1.0
    max_step: float = 0.25
    # Fraction of the recorded rate to replay at (slow motion for a first run on hardware),
    # from MIN_SPEED to 1.
    speed: float = 1.0

    def rate(self, ep: RecordedEpisode) -> float:
        """The control rate of the replay in Hz."""
        return ep.fps * self.speed
