"""Per-dimension min/max scaling of actions into [-1, 1], and back.

robomimic's BC actors end in ``tanh`` and its ``get_dataset_info.py`` refuses a dataset whose actions
leave [-1, 1]; our actions are robot units (joint targets in radians, an elbow reaches 2.2). The
statistics travel with the dataset so that a policy's output can be mapped back to the robot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import ConversionError

if TYPE_CHECKING:
    from ..datasets.stats import FeatureStats

MODE = "min_max"
# The observed range is widened by this fraction of its span on each side: the extremes land at
# about +-0.98, which a tanh output can reach, and later data a little outside the range still fits.
DEFAULT_MARGIN = 0.01
FORMULA = "normalized = (action - offset) / scale; action = normalized * scale + offset"


@dataclass(frozen=True)
class ActionScaling:
    """``normalized = (action - offset) / scale``, per action dimension."""

    offset: np.ndarray
    scale: np.ndarray
    low: np.ndarray  # observed minimum, kept for the record
    high: np.ndarray  # observed maximum
    margin: float = DEFAULT_MARGIN

    @classmethod
    def from_range(cls, low: np.ndarray, high: np.ndarray, margin: float = DEFAULT_MARGIN) -> ActionScaling:
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if low.shape != high.shape or not (np.isfinite(low).all() and np.isfinite(high).all()) or (low > high).any():
            raise ConversionError(f"action range is not a finite [min, max] per dimension: {low} .. {high}")
        half = (high - low) / 2 * (1 + 2 * margin)
        # A dimension that never moves maps to 0 and back to its one value.
        scale = np.where(half > 0, half, 1.0)
        return cls((low + high) / 2, scale, low, high, float(margin))

    @classmethod
    def from_stats(cls, stats: FeatureStats, where: str, margin: float = DEFAULT_MARGIN) -> ActionScaling:
        """The scaling of the range in mergeable statistics (their min/max are exact, whatever the merging)."""
        if stats.count == 0:
            raise ConversionError(f"{where}: no action values to take a range from")
        return cls.from_range(stats.min.reshape(-1), stats.max.reshape(-1), margin)

    def normalize(self, action: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(action, np.float64) - self.offset) / self.scale, -1.0, 1.0)

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        return np.asarray(normalized, np.float64) * self.scale + self.offset

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": MODE,
            "range": [-1.0, 1.0],
            "formula": FORMULA,
            "offset": self.offset.tolist(),
            "scale": self.scale.tolist(),
            "min": self.low.tolist(),
            "max": self.high.tolist(),
            "margin": self.margin,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ActionScaling:
        """The record ``to_dict`` wrote; ConversionError naming ``where`` if it is not one."""
        try:
            if d["mode"] != MODE:
                raise ConversionError(f"{where}: action normalization mode {d['mode']!r} is not {MODE!r}")
            offset, scale = np.asarray(d["offset"], np.float64), np.asarray(d["scale"], np.float64)
            low = np.asarray(d.get("min", offset - scale), np.float64)
            high = np.asarray(d.get("max", offset + scale), np.float64)
            margin = float(d.get("margin", DEFAULT_MARGIN))
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{where}: action normalization record is incomplete or malformed ({e})") from e
        if offset.ndim != 1 or offset.shape != scale.shape or not (np.isfinite(offset).all() and (scale > 0).all()):
            raise ConversionError(f"{where}: action normalization needs one finite offset and positive scale "
                                  f"per action dimension, got {offset.shape} and {scale.shape}")
        return cls(offset, scale, low, high, margin)
