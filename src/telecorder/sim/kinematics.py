"""Forward/inverse kinematics of a site on a MuJoCo model.

Works on its own :class:`mujoco.MjData`, so it can run in a teleoperation or conversion thread
while a :class:`~telecorder.sim.env.SimEnv` steps the same model elsewhere. Every public method
is additionally serialised by an internal lock, making a single instance safe to share.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._deps import _require_mujoco
from .env import SimModelError

mujoco = _require_mujoco()

__all__ = ["IKResult", "Kinematics", "chain_joints", "load_kinematic_model", "rotation_error"]


@dataclass
class IKResult:
    """Outcome of :meth:`Kinematics.ik`.

    ``q`` is the best configuration found (within joint limits, never NaN) even when
    ``success`` is False; errors are the remaining distance in metres and angle in radians.
    """

    q: np.ndarray
    success: bool
    pos_error: float
    rot_error: float
    iterations: int


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector (axis * angle, rad) taking ``current`` to ``target``.

    This is the error that pairs with MuJoCo's angular Jacobian: both are world-frame
    angular velocities.
    """
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (target @ current.T).ravel())
    if quat[0] < 0:  # same rotation, take the short way round
        quat = -quat
    sin_half = np.linalg.norm(quat[1:])
    if sin_half < 1e-12:
        return np.zeros(3)
    angle = 2.0 * np.arctan2(sin_half, quat[0])
    return quat[1:] * (angle / sin_half)


class Kinematics:
    """Kinematics of ``site`` with respect to a chain of hinge/slide ``joints``.

    Args:
        model: compiled MuJoCo model (only read, never modified).
        site: name of the end-effector site; its z axis is the tool direction on the built-in
            arm.
        joints: joint names, in the order of ``q``. Default: the hinge joints driven by
            actuators, in actuator order (i.e. the arm without the gripper's finger slides).

    Joints not listed stay at the model's ``qpos0``.
    """

    def __init__(
        self, model: mujoco.MjModel, site: str = "ee_site", joints: list[str] | None = None
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self._lock = threading.Lock()
        self.site_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        if self.site_id < 0:
            raise SimModelError(f"the model has no site named {site!r}")
        self.site = site

        if joints is None:
            joints = _actuated_hinges(model)
            if not joints:
                raise SimModelError("the model has no actuated hinge joints")
        ids = []
        for name in joints:
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid < 0:
                raise SimModelError(f"the model has no joint named {name!r}")
            if int(model.jnt_type[jid]) not in _ONE_DOF_JOINTS:
                raise SimModelError(f"joint {name!r} is not a hinge or slide joint")
            ids.append(jid)
        self.joint_names: list[str] = list(joints)
        self._qadr = model.jnt_qposadr[ids].astype(np.intp)
        self._dofadr = model.jnt_dofadr[ids].astype(np.intp)
        limited = model.jnt_limited[ids].astype(bool)
        self.lower = np.where(limited, model.jnt_range[ids, 0], -np.inf)
        self.upper = np.where(limited, model.jnt_range[ids, 1], np.inf)

        key = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, "home")
        qpos = model.key_qpos[key] if key >= 0 else model.qpos0
        #: Default IK seed: the ``home`` keyframe if the model has one, else ``qpos0``.
        self.home = np.clip(qpos[self._qadr], self.lower, self.upper)

        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    @property
    def n(self) -> int:
        return len(self.joint_names)

    def clip(self, q: np.ndarray) -> np.ndarray:
        """``q`` clipped to the joint limits."""
        return np.clip(q, self.lower, self.upper)

    # ------------------------------------------------------------------ forward

    def _set(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.n,):
            raise ValueError(f"q must have shape ({self.n},), got {q.shape}")
        self.data.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, self.data)

    def _site_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            self.data.site_xpos[self.site_id].copy(),
            self.data.site_xmat[self.site_id].reshape(3, 3).copy(),
        )

    def _site_jacobian(self) -> np.ndarray:
        # mj_jac* read the com-based frames that mj_comPos fills in after mj_kinematics.
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
        return np.vstack([self._jacp[:, self._dofadr], self._jacr[:, self._dofadr]])

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Site position (3,) and rotation matrix (3, 3) in the world frame at joint values ``q``."""
        with self._lock:
            self._set(q)
            return self._site_pose()

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """Site Jacobian (6, n): rows are world-frame linear then angular velocity per joint."""
        with self._lock:
            self._set(q)
            return self._site_jacobian()

    # ------------------------------------------------------------------ inverse

    def ik(
        self,
        target_pos: Sequence[float] | np.ndarray,
        target_rot: np.ndarray | None = None,
        q0: np.ndarray | None = None,
        *,
        max_iters: int = 100,
        tol_pos: float = 1e-4,
        tol_rot: float = 1e-3,
        damping: float = 1e-2,
        rot_weight: float = 1.0,
        max_step: float = 0.2,
        rest_pose: np.ndarray | None = None,
        nullspace_gain: float = 0.0,
        restarts: int = 0,
    ) -> IKResult:
        """Damped-least-squares IK for the site to reach ``target_pos`` (and ``target_rot``).

        Args:
            target_pos: world position (3,) in metres.
            target_rot: optional world rotation matrix (3, 3); position-only IK when None.
            q0: initial guess (default :attr:`home`). For teleoperation pass the current
                joints: the solution then stays on the same arm configuration branch.
            max_iters: iteration budget per attempt.
            tol_pos / tol_rot: success thresholds (m / rad).
            damping: DLS factor lambda in ``dq = J^T (J J^T + lambda^2 I)^-1 e``; larger is
                more robust near singularities but converges more slowly.
            rot_weight: metres of position error one radian of orientation error is worth.
            max_step: largest per-iteration change of any joint (rad or m).
            rest_pose / nullspace_gain: pull redundant freedom toward ``rest_pose`` without
                disturbing the task (only matters when the task leaves freedom).
            restarts: extra attempts from random in-limit seeds (deterministic) when the first
                attempt fails; each may land on another arm configuration branch.

        Joint limits are enforced at every iteration. An unreachable target returns the
        closest configuration found with ``success=False``.
        """
        target_pos = np.asarray(target_pos, dtype=np.float64).reshape(3)
        if target_rot is not None:
            target_rot = np.asarray(target_rot, dtype=np.float64).reshape(3, 3)
        if not np.all(np.isfinite(target_pos)) or (
            target_rot is not None and not np.all(np.isfinite(target_rot))
        ):
            raise ValueError("IK target contains NaN/inf")
        start = self.home if q0 is None else np.asarray(q0, dtype=np.float64)
        if start.shape != (self.n,):
            raise ValueError(f"q0 must have shape ({self.n},), got {start.shape}")
        if rest_pose is not None:
            rest_pose = np.asarray(rest_pose, dtype=np.float64)
        start = np.nan_to_num(start, nan=0.0)

        with self._lock:
            solve = functools.partial(
                self._solve,
                target_pos,
                target_rot,
                max_iters=max_iters,
                tol_pos=tol_pos,
                tol_rot=tol_rot,
                damping=damping,
                rot_weight=rot_weight,
                max_step=max_step,
                rest_pose=rest_pose,
                nullspace_gain=nullspace_gain,
            )
            best = solve(self.clip(start))
            if not best.success and restarts > 0:
                rng = np.random.default_rng(0)
                lo = np.where(np.isfinite(self.lower), self.lower, -np.pi)
                hi = np.where(np.isfinite(self.upper), self.upper, np.pi)
                total_iters = best.iterations
                for _ in range(restarts):
                    res = solve(rng.uniform(lo, hi))
                    total_iters += res.iterations
                    if _score(res, rot_weight) < _score(best, rot_weight) or res.success:
                        best = res
                    if best.success:
                        break
                best.iterations = total_iters
        return best

    def _solve(
        self,
        target_pos: np.ndarray,
        target_rot: np.ndarray | None,
        q: np.ndarray,
        *,
        max_iters: int,
        tol_pos: float,
        tol_rot: float,
        damping: float,
        rot_weight: float,
        max_step: float,
        rest_pose: np.ndarray | None,
        nullspace_gain: float,
    ) -> IKResult:
        use_rot = target_rot is not None
        use_null = rest_pose is not None and nullspace_gain > 0.0
        lam2 = damping * damping
        lower, upper = self.lower, self.upper
        best_q, best_score, best_errs, best_it = q, np.inf, (np.inf, np.inf), 0
        for it in range(max_iters + 1):
            self._set(q)
            e_pos = target_pos - self.data.site_xpos[self.site_id]
            pos_err = math.sqrt(e_pos @ e_pos)
            if use_rot:
                e_rot = rotation_error(target_rot, self.data.site_xmat[self.site_id].reshape(3, 3))
                rot_err = math.sqrt(e_rot @ e_rot)
            else:
                rot_err = 0.0
            score = pos_err + rot_weight * rot_err
            if score < best_score:
                best_q, best_score, best_errs, best_it = q, score, (pos_err, rot_err), it
            if pos_err <= tol_pos and rot_err <= tol_rot:
                return IKResult(q.copy(), True, pos_err, rot_err, it)
            if it == max_iters:
                break

            jac = self._site_jacobian()
            if use_rot:
                jac[3:] *= rot_weight
                err = np.concatenate([e_pos, rot_weight * e_rot])
            else:
                jac = jac[:3]
                err = e_pos
            free = np.ones(self.n, dtype=bool)
            jac_pinv = None
            # Joints pinned at a limit and pushed further out are taken out of the solve, so
            # the remaining joints make up for them instead of the step being wasted in clip().
            while True:
                dq = np.zeros(self.n)
                if not free.any():
                    jac_pinv = None
                    break
                dq[free], jac_pinv = _dls_step(jac[:, free], err, lam2, use_null)
                pinned = ((q <= lower) & (dq < 0)) | ((q >= upper) & (dq > 0))
                if not pinned.any():
                    break
                free &= ~pinned
            if use_null and jac_pinv is not None:
                null = np.eye(int(free.sum())) - jac_pinv @ jac[:, free]
                dq[free] += null @ (nullspace_gain * (rest_pose - q)[free])
            biggest = np.abs(dq).max()
            if biggest > max_step:
                dq *= max_step / biggest
            q = np.minimum(np.maximum(q + dq, lower), upper)
        return IKResult(best_q.copy(), False, best_errs[0], best_errs[1], best_it)


def _dls_step(
    jac: np.ndarray, err: np.ndarray, lam2: float, want_pinv: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Damped least-squares step, and (on request) the damped pseudo-inverse."""
    jjt = jac @ jac.T
    jjt.flat[:: jjt.shape[0] + 1] += lam2
    if not want_pinv:
        return jac.T @ np.linalg.solve(jjt, err), None
    pinv = jac.T @ np.linalg.inv(jjt)
    return pinv @ err, pinv


def _score(res: IKResult, rot_weight: float) -> float:
    return res.pos_error + rot_weight * res.rot_error


_ONE_DOF_JOINTS = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))


def load_kinematic_model(path: str | Path) -> mujoco.MjModel:
    """Compile an MJCF file for kinematics only (no cameras added, nothing simulated).

    Raises :class:`SimModelError` naming the file when it is missing or MuJoCo refuses it.
    """
    path = Path(path)
    if not path.is_file():
        raise SimModelError(f"{path}: model file not found")
    try:
        return mujoco.MjModel.from_xml_path(str(path))
    except Exception as exc:
        raise SimModelError(f"{path}: MuJoCo could not load the model: {exc}".rstrip()) from exc


def chain_joints(model: mujoco.MjModel, site: str = "ee_site") -> list[str]:
    """Names of the joints that move ``site``: those of its body and every ancestor, base first.

    These are exactly the joints whose Jacobian columns can be non-zero, i.e. what IK must
    know to place the site. Raises :class:`SimModelError` for a missing site, an unnamed joint,
    or a ball/free joint on the chain (IK here handles hinge and slide joints).
    """
    sid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
    if sid < 0:
        raise SimModelError(f"the model has no site named {site!r}")
    bodies = []
    body = int(model.site_bodyid[sid])
    while body > 0:
        bodies.append(body)
        body = int(model.body_parentid[body])
    names: list[str] = []
    for body in reversed(bodies):
        start, count = int(model.body_jntadr[body]), int(model.body_jntnum[body])
        for jid in range(start, start + count):
            name = model.joint(jid).name
            if int(model.jnt_type[jid]) not in _ONE_DOF_JOINTS:
                raise SimModelError(
                    f"joint {name or jid!r} on the chain to site {site!r} is a ball or free joint; "
                    "IK supports hinge and slide joints"
                )
            if not name:
                raise SimModelError(f"joint #{jid} on the chain to site {site!r} has no name; name it so "
                                    "it can be matched to a servo")
            names.append(name)
    return names


def _actuated_hinges(model: mujoco.MjModel) -> list[str]:
    names: list[str] = []
    for i in range(model.nu):
        if int(model.actuator_trntype[i]) != mujoco.mjtTrn.mjTRN_JOINT:
            continue
        jid = int(model.actuator_trnid[i, 0])
        if int(model.jnt_type[jid]) == mujoco.mjtJoint.mjJNT_HINGE:
            name = model.joint(jid).name
            if name and name not in names:
                names.append(name)
    return names
