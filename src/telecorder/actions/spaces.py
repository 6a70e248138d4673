"""Action-space conversions: delta joints, rotation representations, gripper conventions.

All functions are vectorized over leading dimensions (``(..., 3)`` angles,
``(..., 4)`` quaternions, ``(..., 3, 3)`` matrices, ``(..., 6)`` rotation-6D) and
compute in float64.

Rotation conventions
--------------------
* Matrices rotate column vectors (``v' = R @ v``), right-handed.
* Euler order strings follow scipy's ``Rotation.from_euler``: lowercase = extrinsic
  (rotations about the fixed world axes, applied in the order written), uppercase =
  intrinsic (about the moving body axes).  So extrinsic ``"xyz"`` with angles
  ``(a, b, c)`` is ``Rz(c) @ Ry(b) @ Rx(a)`` (roll-pitch-yaw as ROS/URDF use it), and
  intrinsic ``"ZYX"`` with ``(a, b, c)`` is ``Rz(a) @ Ry(b) @ Rx(c)`` (yaw-pitch-roll).
  All 12 Tait-Bryan orders (three distinct axes) are supported; returned angles lie in
  ``(-pi, pi]`` with the middle angle in ``[-pi/2, pi/2]``.  At gimbal lock (middle
  angle ``+-pi/2``) the first angle (the last one for intrinsic orders) is set to 0.
* Quaternions are unit, scalar-first ``wxyz`` unless a function says ``xyzw``
  (scipy / ROS order); returned quaternions have ``w >= 0``.
* Rotation-6D (Zhou et al. 2019) is the first two **columns** of the matrix,
  concatenated: ``(r00, r10, r20, r01, r11, r21)``; it maps back by Gram-Schmidt, so
  any 6-vector with independent halves gives a valid rotation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ActionError

__all__ = [
    "euler_to_matrix",
    "euler_to_quat",
    "flip_gripper",
    "matrix_to_euler",
    "matrix_to_quat",
    "matrix_to_rot6d",
    "quat_to_euler",
    "quat_to_matrix",
    "rescale_gripper",
    "rot6d_to_matrix",
    "to_absolute",
    "to_delta",
    "wxyz_to_xyzw",
    "xyzw_to_wxyz",
]

_AXES = {"x": 0, "y": 1, "z": 2}
# Below this |cos(middle angle)| the first and last angles are not separable.
_GIMBAL_EPS = 1e-9


# -- joint deltas ---------------------------------------------------------------------


def _delta_mask(mask: Sequence[bool] | None, dim: int) -> np.ndarray:
    if mask is None:
        return np.ones(dim, dtype=bool)
    m = np.asarray(mask, dtype=bool).reshape(-1)
    if m.size != dim:
        raise ActionError(f"mask has {m.size} entries for {dim} action dimensions")
    return m


def _align_states(actions: np.ndarray, states: np.ndarray) -> np.ndarray:
    # A chunk (..., H, D) against one state per chunk (..., D): insert the horizon axis.
    if actions.ndim == states.ndim + 1:
        return states[..., None, :]
    return states


def to_delta(
    actions: np.ndarray, states: np.ndarray, mask: Sequence[bool] | None = None
) -> np.ndarray:
    """Absolute targets -> deltas ``actions - states`` on dims where ``mask`` is True.

    ``states`` broadcasts against ``actions``; a chunk ``(..., H, D)`` with states
    ``(..., D)`` is taken relative to that one state (as pi0's delta actions are).
    Dims with ``mask`` False (e.g. the gripper) stay absolute.
    """
    a = np.asarray(actions, dtype=np.float64)
    s = _align_states(a, np.asarray(states, dtype=np.float64))
    return np.where(_delta_mask(mask, a.shape[-1]), a - s, a)


def to_absolute(
    deltas: np.ndarray, states: np.ndarray, mask: Sequence[bool] | None = None
) -> np.ndarray:
    """Inverse of :func:`to_delta`."""
    d = np.asarray(deltas, dtype=np.float64)
    s = _align_states(d, np.asarray(states, dtype=np.float64))
    return np.where(_delta_mask(mask, d.shape[-1]), d + s, d)


# -- rotations ------------------------------------------------------------------------


def _axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros((*angle.shape, 3, 3))
    i, j = (axis + 1) % 3, (axis + 2) % 3
    out[..., axis, axis] = 1.0
    out[..., i, i] = c
    out[..., j, j] = c
    out[..., j, i] = s
    out[..., i, j] = -s
    return out


def _parse_order(order: str) -> tuple[list[int], bool]:
    """Axis indices in extrinsic application order, and whether angles are reversed."""
    if len(order) != 3 or not (order.islower() or order.isupper()):
        raise ActionError(f"euler order must be 3 axes, all lower or all upper case: {order!r}")
    axes = [_AXES.get(c.lower(), -1) for c in order]
    if -1 in axes or len(set(axes)) != 3:
        raise ActionError(f"euler order {order!r}: use three distinct axes of x, y, z")
    if order.isupper():
        # Intrinsic A-B-C equals extrinsic C-B-A with the angles reversed.
        return axes[::-1], True
    return axes, False


def euler_to_matrix(angles: np.ndarray, order: str = "xyz") -> np.ndarray:
    """Euler angles (..., 3) in radians -> rotation matrices (..., 3, 3)."""
    ang = np.asarray(angles, dtype=np.float64)
    if ang.shape[-1:] != (3,):
        raise ActionError(f"euler angles need a last dimension of 3, got shape {ang.shape}")
    axes, rev = _parse_order(order)
    if rev:
        ang = ang[..., ::-1]
    r = _axis_rotation(axes[0], ang[..., 0])
    r = _axis_rotation(axes[1], ang[..., 1]) @ r
    return _axis_rotation(axes[2], ang[..., 2]) @ r


def matrix_to_euler(matrix: np.ndarray, order: str = "xyz") -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> Euler angles (..., 3); see the module docstring."""
    m = _as_matrix(matrix)
    (i, j, k), rev = _parse_order(order)
    # +1 for cyclic axis orders (xyz, yzx, zxy), -1 for the others.
    sign = 1.0 if (j - i) % 3 == 1 else -1.0
    cb = np.hypot(m[..., i, i], m[..., j, i])
    b = np.arctan2(-sign * m[..., k, i], cb)
    locked = cb < _GIMBAL_EPS
    a = np.where(locked, 0.0, np.arctan2(sign * m[..., k, j], m[..., k, k]))
    c = np.where(
        locked,
        np.arctan2(-sign * m[..., i, j], m[..., j, j]),
        np.arctan2(sign * m[..., j, i], m[..., i, i]),
    )
    out = np.stack([a, b, c], axis=-1)
    return out[..., ::-1].copy() if rev else out


def _as_matrix(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ActionError(f"rotation matrices need shape (..., 3, 3), got {m.shape}")
    return m


def _as_quat(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ActionError(f"quaternions need a last dimension of 4, got shape {q.shape}")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if (norm < 1e-12).any():
        raise ActionError("zero-length quaternion")
    return q / norm


def quat_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) wxyz (normalized first) -> rotation matrices (..., 3, 3)."""
    w, x, y, z = np.moveaxis(_as_quat(quat_wxyz), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def matrix_to_quat(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) wxyz with ``w >= 0``."""
    m = _as_matrix(matrix)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Shepperd's method: of the four ways to recover the quaternion, use the one with the
    # largest pivot, which avoids dividing by a near-zero component.
    four_sq = np.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22],
        axis=-1,
    )
    best = np.argmax(four_sq, axis=-1)[..., None]
    piv = np.sqrt(np.maximum(np.take_along_axis(four_sq, best, -1), 0.0)) * 2.0  # = 4 |q_best|
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s21, s02, s10 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]
    cands = np.stack(
        [
            np.stack([four_sq[..., 0], d21, d02, d10], -1),
            np.stack([d21, four_sq[..., 1], s10, s02], -1),
            np.stack([d02, s10, four_sq[..., 2], s21], -1),
            np.stack([d10, s02, s21, four_sq[..., 3]], -1),
        ],
        axis=-2,
    )
    q = np.take_along_axis(cands, best[..., None], -2)[..., 0, :] / piv
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    return np.roll(np.asarray(q), -1, axis=-1)


def xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    return np.roll(np.asarray(q), 1, axis=-1)


def euler_to_quat(angles: np.ndarray, order: str = "xyz") -> np.ndarray:
    """Euler angles (..., 3) -> quaternions (..., 4) wxyz."""
    return matrix_to_quat(euler_to_matrix(angles, order))


def quat_to_euler(quat_wxyz: np.ndarray, order: str = "xyz") -> np.ndarray:
    """Quaternions (..., 4) wxyz -> Euler angles (..., 3)."""
    return matrix_to_euler(quat_to_matrix(quat_wxyz), order)


def matrix_to_rot6d(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> rotation-6D (..., 6): first column, then second."""
    m = _as_matrix(matrix)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def rot6d_to_matrix(r6: np.ndarray) -> np.ndarray:
    """Rotation-6D (..., 6) -> rotation matrices (..., 3, 3) by Gram-Schmidt."""
    r = np.asarray(r6, dtype=np.float64)
    if r.shape[-1:] != (6,):
        raise ActionError(f"rotation-6D needs a last dimension of 6, got shape {r.shape}")
    a1, a2 = r[..., :3], r[..., 3:]
    n1 = np.linalg.norm(a1, axis=-1, keepdims=True)
    b1 = a1 / n1
    a2p = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    n2 = np.linalg.norm(a2p, axis=-1, keepdims=True)
    if (n1 < 1e-12).any() or (n2 < 1e-12).any():
        raise ActionError("degenerate rotation-6D: the two columns are zero or parallel")
    b2 = a2p / n2
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


# -- gripper --------------------------------------------------------------------------


def flip_gripper(x: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Swap open/closed within ``value_range``: ``low + high - x`` (1 = open <-> 1 = closed)."""
    low, high = value_range
    return low + high - np.asarray(x, dtype=np.float64)


def rescale_gripper(
    x: np.ndarray, from_range: tuple[float, float], to_range: tuple[float, float]
) -> np.ndarray:
    """Linear map of ``from_range`` onto ``to_range`` (e.g. (0, 0.08) m -> (-1, 1)).

    A reversed ``to_range`` such as ``(1, 0)`` also flips the convention.
    """
    f0, f1 = from_range
    t0, t1 = to_range
    if f0 == f1:
        raise ActionError(f"from_range {from_range} is empty")
    return t0 + (np.asarray(x, dtype=np.float64) - f0) * ((t1 - t0) / (f1 - f0))
