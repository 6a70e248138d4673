"""Episodes of one fixed length, for trainers that stack whole episodes.

ACT's ``get_norm_stats`` (tonyzhaozh/act ``utils.py``) calls ``torch.stack`` on the qpos and action
arrays of all episodes, so every episode file must have the same number of steps; its
``EpisodicDataset`` also sizes each action chunk by the file's length. ALOHA's recorder gets there
by recording a fixed ``max_timesteps``, the operator holding still once the task is done. We do
the same after the fact: a short episode is padded by holding its last state, action and frames
(the robot at rest, so velocities read zero), a long one is cut to its first ``length`` steps.
Each episode says which happened, so a reader can drop the padding again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..datasets.episode_file import Episode
from .base import ConversionError

PADDED, CUT, UNCHANGED = "padded", "cut", "unchanged"

# Features that are zero, not held, while the robot stands still at its last pose.
AT_REST_ZERO = ("observation.velocity",)


@dataclass(frozen=True)
class LengthFit:
    """What fitting did to one episode."""

    original_length: int
    length: int

    @property
    def how(self) -> str:
        if self.length > self.original_length:
            return PADDED
        return CUT if self.length < self.original_length else UNCHANGED

    def to_dict(self) -> dict[str, Any]:
        return {"original_length": self.original_length, "length": self.length, "length_fit": self.how}


def _hold(arr: np.ndarray, extra: int) -> np.ndarray:
    return np.concatenate([arr, np.repeat(arr[-1:], extra, axis=0)])


def _ticks(times: np.ndarray, extra: int, fps: float) -> np.ndarray:
    # Padded steps keep the control rate, so timestamps stay increasing and evenly spaced.
    return np.concatenate([times, times[-1] + np.arange(1, extra + 1) / fps])


def fit_episode(episode: Episode, length: int, fps: float,
                zero_when_held: Collection[str] = AT_REST_ZERO) -> tuple[Episode, LengthFit]:
    """``episode`` with exactly ``length`` steps (held or cut), and what was done to it."""
    if length < 1:
        raise ConversionError(f"episode length must be at least 1 step, not {length}")
    n = len(episode)
    if n == 0:
        raise ConversionError(f"episode {episode.index} has no steps; it cannot be padded to {length}")
    fit = LengthFit(n, length)
    if fit.how == UNCHANGED:
        return episode, fit
    if fit.how == CUT:
        cut = Episode(
            index=episode.index,
            timestamp=np.asarray(episode.timestamp)[:length],
            data={k: np.asarray(v)[:length] for k, v in episode.data.items()},
            image_timestamp={c: np.asarray(v)[:length] for c, v in episode.image_timestamp.items()},
            frame_index={c: np.asarray(v)[:length] for c, v in episode.frame_index.items()},
            tick_lateness=None if episode.tick_lateness is None else np.asarray(episode.tick_lateness)[:length],
            metadata=dict(episode.metadata),
            images={c: list(frames[:length]) for c, frames in episode.images.items()},
        )
        return cut, fit
    extra = length - n
    data = {}
    for name, arr in episode.data.items():
        arr = np.asarray(arr)
        data[name] = (np.concatenate([arr, np.zeros((extra, *arr.shape[1:]), arr.dtype)])
                      if name in zero_when_held else _hold(arr, extra))
    lateness = episode.tick_lateness
    padded = Episode(
        index=episode.index,
        timestamp=_ticks(np.asarray(episode.timestamp, np.float64), extra, fps),
        data=data,
        image_timestamp={c: _ticks(np.asarray(v, np.float64), extra, fps) for c, v in episode.image_timestamp.items()},
        # The same camera frame is shown again, so its index is held too.
        frame_index={c: _hold(np.asarray(v), extra) for c, v in episode.frame_index.items()},
        tick_lateness=None if lateness is None else np.concatenate(
            [np.asarray(lateness), np.zeros(extra, np.asarray(lateness).dtype)]),
        metadata=dict(episode.metadata),
        images={c: list(frames) + [frames[-1]] * extra if len(frames) else list(frames)
                for c, frames in episode.images.items()},
    )
    return padded, fit
