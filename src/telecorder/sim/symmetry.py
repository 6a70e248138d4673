"""One reading for each physical pose of a cube: its orientation modulo the cube's 24 rotational symmetries.

A cube turned by 90 degrees about any face axis looks, and is grasped, exactly as before,
yet its quaternion is a different one; a learner that gets raw quaternions must learn
that every such pair means the same thing (an eighth harmonic of the yaw, for a cube
resting on a table). Reporting the equivalent orientation nearest the identity removes
that: the same physical pose always reads the same, and nearby poses read nearby,
except across the boundaries where two equivalents are equally near (a 45-degree yaw).
"""

from __future__ import annotations

import itertools

import numpy as np


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of wxyz quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ])


def _cube_group() -> np.ndarray:
    s = np.sqrt(0.5)
    generators = [np.array([s, s, 0, 0]), np.array([s, 0, s, 0]), np.array([s, 0, 0, s])]
    group = [np.array([1.0, 0, 0, 0])]
    for _ in range(4):
        for g, h in itertools.product(list(group), generators):
            q = quat_mul(g, h)
            q = q if q[np.flatnonzero(np.abs(q) > 1e-9)[0]] > 0 else -q
            if not any(np.allclose(q, p, atol=1e-9) for p in group):
                group.append(q)
    return np.array(group)


CUBE_SYMMETRIES = _cube_group()
assert len(CUBE_SYMMETRIES) == 24


def canonical_cube_quat(quat: np.ndarray) -> np.ndarray:
    """The equivalent orientation (wxyz, w >= 0) of a cube nearest the identity."""
    q = np.asarray(quat, dtype=np.float64)
    candidates = np.array([quat_mul(q, g) for g in CUBE_SYMMETRIES])
    best = candidates[int(np.argmax(np.abs(candidates[:, 0])))]
    return best if best[0] >= 0 else -best
