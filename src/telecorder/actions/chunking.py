"""Action chunks and observation history windows, with padding at episode ends.

Conventions (as LeRobot's ``action_is_pad``): index helpers return ``pad_mask`` that is
True where the index had to be clamped (padding); :func:`make_chunks` returns ``mask``
True where the action is real.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ActionError

__all__ = ["PAD_MODES", "chunk_indices", "history_indices", "make_chunks"]

PAD_MODES = ("repeat_last", "zero")


def chunk_indices(length: int, start: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``start .. start + horizon - 1`` clamped to the episode, and the pad mask.

    Past the episode end the last step repeats (``pad_mask`` True there).
    """
    if length <= 0 or horizon <= 0:
        raise ActionError(f"length and horizon must be positive, got {length} and {horizon}")
    if not 0 <= start < length:
        raise ActionError(f"start {start} is outside the episode of {length} steps")
    idx = start + np.arange(horizon)
    return np.minimum(idx, length - 1), idx >= length


def history_indices(start: int, history: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``history`` steps ending at ``start`` (oldest first), clamped at step 0.

    Before the episode start the first step repeats (``pad_mask`` True there).
    """
    if history <= 0 or start < 0:
        raise ActionError(f"history must be positive and start non-negative, got {history}, {start}")
    idx = start - history + 1 + np.arange(history)
    return np.maximum(idx, 0), idx < 0


def make_chunks(
    actions: np.ndarray, horizon: int, pad: str | Sequence[str] = "repeat_last"
) -> tuple[np.ndarray, np.ndarray]:
    """One chunk per step of an episode: ``chunks[t] = actions[t : t + horizon]``.

    ``actions`` is (T, D); returns ``chunks`` (T, horizon, D) and ``mask`` (T, horizon),
    True where the action is real.  Steps past the episode end are padded per ``pad``:
    ``"repeat_last"`` holds the last action (right for absolute targets: the robot
    stays put), ``"zero"`` writes 0 (right for delta/velocity actions: no motion).  A
    list gives one mode per dimension, e.g. repeat for joints and zero for deltas.
    """
    a = np.asarray(actions)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ActionError(f"make_chunks expects a non-empty (T, D) array, got shape {a.shape}")
    if horizon <= 0:
        raise ActionError(f"horizon must be positive, got {horizon}")
    n, dim = a.shape
    modes = [pad] * dim if isinstance(pad, str) else list(pad)
    if len(modes) != dim:
        raise ActionError(f"pad lists {len(modes)} modes for {dim} action dimensions")
    unknown = sorted(set(modes) - set(PAD_MODES))
    if unknown:
        raise ActionError(f"unknown pad mode(s) {unknown}; choose from {list(PAD_MODES)}")
    idx = np.arange(n)[:, None] + np.arange(horizon)[None, :]
    mask = idx < n
    chunks = a[np.minimum(idx, n - 1)]
    zero_dims = np.array([m == "zero" for m in modes])
    if zero_dims.any():
        # (T, H, 1) & (D,) -> which entries are padding in a zero-padded dimension.
        chunks = np.where(~mask[..., None] & zero_dims, np.zeros((), a.dtype), chunks)
    return chunks, mask
