"""How well an episode's streams line up in time: the numbers behind ``doctor``'s sync report.

Every step records when its tick ran and, per camera, when the frame used at that
step was captured and the camera's own frame counter. From those we derive the
control rate actually achieved, late and missed ticks, the age of each frame when it
was used, and frames that were used twice (repeated) or never used (skipped).

On simulated time (``clock="simulation"``) every tick runs on its schedule by
construction, so lateness is not a measurement there and is reported as none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from .features import CLOCK_MONOTONIC, CLOCK_SIMULATION

LATE_THRESHOLD_S = 0.002


@dataclass
class CameraSync:
    camera: str
    age_p50: float
    age_p99: float
    age_max: float
    repeated: int
    skipped: int
    non_monotonic: int
    camera_fps: float

    def expected_repeats(self, steps: int, control_fps: float) -> int:
        """Repeats that follow from a camera slower than the control loop, and so are no fault."""
        if self.camera_fps <= 0 or self.camera_fps >= control_fps:
            return 0
        return round(steps * (1 - self.camera_fps / control_fps))

    def expected_skips(self, steps: int, control_fps: float) -> int:
        """Frames a camera faster than the control loop delivers that no step can use."""
        if self.camera_fps <= control_fps:
            return 0
        return round(steps * (self.camera_fps / control_fps - 1))


@dataclass
class SyncReport:
    steps: int
    duration: float
    target_fps: float
    achieved_fps: float
    late_ticks: int
    max_lateness: float
    missed_ticks: int
    non_monotonic: int
    cameras: dict[str, CameraSync] = field(default_factory=dict)
    clock: str = CLOCK_MONOTONIC

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> SyncReport:
        cameras = {name: CameraSync(**c) for name, c in d.get("cameras", {}).items()}
        return cls(**{**d, "cameras": cameras})


def analyze_timing(
    timestamp: np.ndarray,
    fps: float,
    image_timestamp: Mapping[str, np.ndarray] | None = None,
    frame_index: Mapping[str, np.ndarray] | None = None,
    tick_lateness: np.ndarray | None = None,
    late_threshold: float = LATE_THRESHOLD_S,
    clock: str = CLOCK_MONOTONIC,
) -> SyncReport:
    """Summarize the timing of one episode (all times in seconds on the recorder's clock, ``clock``)."""
    ts = np.asarray(timestamp, dtype=np.float64)
    n = len(ts)
    period = 1.0 / fps
    dt = np.diff(ts)
    duration = float(ts[-1] - ts[0]) if n > 1 else 0.0
    achieved = (n - 1) / duration if duration > 0 else 0.0
    # A gap of 1.5 periods or more means the loop skipped at least one slot of its schedule.
    missed = int(np.sum(np.maximum(np.round(dt / period) - 1, 0))) if n > 1 else 0
    if tick_lateness is not None and len(tick_lateness):
        lateness = np.asarray(tick_lateness, dtype=np.float64)
    else:
        lateness = ts - ts[0] - np.arange(n) * period if n else np.zeros(0)
    if clock == CLOCK_SIMULATION:
        lateness = np.zeros(n)
    report = SyncReport(
        steps=n,
        duration=duration,
        target_fps=float(fps),
        achieved_fps=float(achieved),
        late_ticks=int(np.sum(lateness > late_threshold)),
        max_lateness=float(lateness.max()) if n else 0.0,
        missed_ticks=missed,
        non_monotonic=int(np.sum(dt <= 0)),
        clock=clock,
    )
    frame_index = frame_index or {}
    for cam, cam_ts in (image_timestamp or {}).items():
        cam_ts = np.asarray(cam_ts, dtype=np.float64)
        age = ts - cam_ts
        idx = np.asarray(frame_index.get(cam, np.arange(n)), dtype=np.int64)
        step = np.diff(idx)
        # The camera's own counter over its capture times gives its rate, also for frames never used.
        span = cam_ts[-1] - cam_ts[0] if n > 1 else 0.0
        cam_fps = (idx[-1] - idx[0]) / span if span > 0 else 0.0
        report.cameras[cam] = CameraSync(
            camera=cam,
            age_p50=float(np.percentile(age, 50)) if n else 0.0,
            age_p99=float(np.percentile(age, 99)) if n else 0.0,
            age_max=float(age.max()) if n else 0.0,
            repeated=int(np.sum(step == 0)),
            skipped=int(np.sum(np.maximum(step - 1, 0))),
            non_monotonic=int(np.sum(step < 0)),
            camera_fps=float(cam_fps),
        )
    return report
