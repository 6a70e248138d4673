"""What a model sees, built one way for training and for deployment.

The PyTorch loader and the policy runner in ``collect`` both turn recorded (or live)
steps into model inputs with these functions, so an image is resized with the same
interpolation and a state is concatenated and normalized in the same order whether it
comes from a file or from a robot: training and deployment cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from ..errors import DatasetError


def model_image(rgb: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` frame as the model takes it: ``(3, h, w)`` uint8.

    ``image_size`` is ``(height, width)``; ``None`` keeps the frame's size. Downscaling
    uses ``INTER_AREA`` (no aliasing), as the loader always has.
    """
    if image_size is not None and tuple(rgb.shape[:2]) != tuple(image_size):
        h, w = image_size
        rgb = cv2.resize(rgb, (int(w), int(h)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def concat_state(values: Mapping[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """The model's state vector(s): the features ``keys``, flattened and concatenated in order.

    ``values[k]`` is one step ``(D_k,)`` or a run of steps ``(T, D_k)``; the result is
    ``(sum D_k,)`` or ``(T, sum D_k)`` float64.
    """
    missing = [k for k in keys if k not in values]
    if missing:
        raise DatasetError(f"no feature {missing[0]!r} in the observation (it has {sorted(values)})")
    parts = [np.asarray(values[k], dtype=np.float64) for k in keys]
    if parts[0].ndim <= 1:
        return np.concatenate([p.reshape(-1) for p in parts])
    return np.concatenate([p.reshape(len(p), -1) for p in parts], axis=1)


def concat_summaries(stats: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Per-feature statistics of ``meta/stats.json`` merged into one summary for ``concat_state``.

    Every per-dimension list (mean, std, min, max, q01, q99, ...) is concatenated in ``keys``
    order, so a normalizer built from the result normalizes each part with its own numbers.
    """
    features = stats.get("features", stats)
    summaries = []
    for k in keys:
        s = features.get(k)
        if not s or s.get("count", 1) == 0:
            raise DatasetError(f"meta/stats.json has no statistics for {k!r}; recompute the statistics")
        summaries.append(s)
    merged: dict[str, Any] = {"count": min(int(s.get("count", 0)) for s in summaries)}
    for name in ("mean", "std", "min", "max", "q01", "q99", "p01", "p99"):
        if all(s.get(name) is not None for s in summaries):
            merged[name] = [float(v) for s in summaries for v in np.asarray(s[name], dtype=np.float64).reshape(-1)]
    return merged
