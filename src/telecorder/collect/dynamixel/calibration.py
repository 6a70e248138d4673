"""Calibration of a Dynamixel arm: from raw servo angles to the robot's joint convention.

For each joint, ``calibrated = sign * raw - offset`` (radians). The offset is found
GELLO-style: with the arm held in a known pose, it is the multiple of pi/2 that brings
the reading closest to the known angle (servo horns are mounted in quarter turns),
refined by the remaining difference. The gripper is measured open and closed and
normalized to 0 = closed, 1 = open. A leader and a follower calibrated to the same
known pose agree on joint angles, so mapping one to the other is the identity in
calibrated space.

Files are JSON (never pickle), saved under ``$XDG_CONFIG_HOME/telecorder/calibration``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import write_json_atomic
from ...errors import TelecorderError

FORMAT = "telecorder-calibration/1"
QUARTER_TURN = math.pi / 2


class CalibrationError(TelecorderError):
    """A calibration file or pose file that cannot be used."""


@dataclass
class JointCalibration:
    id: int
    name: str
    sign: int = 1
    offset: float = 0.0
    range_min: float = -math.pi
    range_max: float = math.pi


@dataclass
class GripperCalibration:
    id: int
    open: float  # raw radians when fully open
    closed: float  # raw radians when fully closed

    def normalize(self, raw: float) -> float:
        span = self.open - self.closed
        return float(np.clip((raw - self.closed) / span, 0.0, 1.0)) if span else 0.0

    def to_raw(self, value: float) -> float:
        return self.closed + float(np.clip(value, 0.0, 1.0)) * (self.open - self.closed)


@dataclass
class ArmCalibration:
    arm: str  # "leader" or "follower"
    joints: list[JointCalibration]
    gripper: GripperCalibration | None = None
    known_pose: list[float] = field(default_factory=list)
    model: str | None = None

    @property
    def ids(self) -> list[int]:
        return [j.id for j in self.joints] + ([self.gripper.id] if self.gripper else [])

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.joints] + (["gripper"] if self.gripper else [])

    @property
    def lower(self) -> np.ndarray:
        return np.array([j.range_min for j in self.joints] + ([0.0] if self.gripper else []))

    @property
    def upper(self) -> np.ndarray:
        return np.array([j.range_max for j in self.joints] + ([1.0] if self.gripper else []))

    def to_calibrated(self, raw: np.ndarray) -> np.ndarray:
        """Raw servo radians (in ``ids`` order) -> joint angles, gripper normalized last."""
        raw = np.asarray(raw, dtype=np.float64)
        out = np.array([j.sign * raw[k] - j.offset for k, j in enumerate(self.joints)])
        if self.gripper is not None:
            out = np.append(out, self.gripper.normalize(raw[len(self.joints)]))
        return out

    def to_raw(self, calibrated: np.ndarray) -> np.ndarray:
        cal = np.asarray(calibrated, dtype=np.float64)
        out = np.array([(cal[k] + j.offset) * j.sign for k, j in enumerate(self.joints)])
        if self.gripper is not None:
            out = np.append(out, self.gripper.to_raw(cal[len(self.joints)]))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "arm": self.arm,
            "model": self.model,
            "known_pose": list(self.known_pose),
            "joints": [asdict(j) for j in self.joints],
            "gripper": asdict(self.gripper) if self.gripper else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "calibration") -> ArmCalibration:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CalibrationError(f"{source}: not a telecorder calibration file (format {found!r})")
        try:
            joints = [_checked_joint(JointCalibration(**j)) for j in d["joints"]]
            grip = GripperCalibration(**d["gripper"]) if d.get("gripper") else None
            if grip is not None:
                _check_number(grip.open, "gripper open")
                _check_number(grip.closed, "gripper closed")
                _check_id(grip.id)
            known = [_check_number(x, "known_pose") for x in d.get("known_pose", [])]
            return cls(arm=str(d["arm"]), joints=joints, gripper=grip, known_pose=known, model=d.get("model"))
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"{source}: invalid calibration ({e}); run 'telecorder calibrate' again") from e

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: Path) -> ArmCalibration:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise CalibrationError(
                f"{path}: no calibration file; create it with 'telecorder calibrate --arm ... --port ...'"
            ) from e
        except OSError as e:
            raise CalibrationError(f"{path}: cannot be read ({e.strerror or e})") from e
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise CalibrationError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(data, source=str(path))


def _check_number(value: Any, what: str) -> float:
    # A NaN or a string offset would turn every joint command into NaN (or a crash) at run time.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return float(value)


def _check_id(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 252:
        raise ValueError(f"servo id must be an integer 0-252, not {value!r}")


def _checked_joint(j: JointCalibration) -> JointCalibration:
    _check_id(j.id)
    if not isinstance(j.name, str):
        raise ValueError(f"joint name must be text, not {j.name!r}")
    if j.sign not in (1, -1) or isinstance(j.sign, bool):
        raise ValueError(f"joint {j.name!r}: sign must be 1 or -1, not {j.sign!r}")
    for what in ("offset", "range_min", "range_max"):
        _check_number(getattr(j, what), f"joint {j.name!r} {what}")
    return j


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "telecorder" / "calibration"


def default_path(arm: str) -> Path:
    return config_dir() / f"{arm}.json"


def quarter_turn_offsets(raw: Sequence[float], known: Sequence[float], signs: Sequence[int]) -> np.ndarray:
    """Offsets so that ``sign * raw - offset == known``, snapped to the nearest quarter turn.

    Horns sit at multiples of 90 degrees; snapping absorbs how far the arm was from the
    known pose when it was measured, as long as that is under 45 degrees per joint.
    """
    raw, known, signs = (np.asarray(x, dtype=np.float64) for x in (raw, known, signs))
    exact = signs * raw - known
    return np.round(exact / QUARTER_TURN) * QUARTER_TURN


def calibrate(
    arm: str,
    ids: Sequence[int],
    names: Sequence[str],
    known_pose_raw: Sequence[float],
    known_pose: Sequence[float],
    *,
    signs: Sequence[int] | None = None,
    gripper_open_raw: float | None = None,
    gripper_closed_raw: float | None = None,
    range_raw: tuple[Sequence[float], Sequence[float]] | None = None,
    model: str | None = None,
) -> ArmCalibration:
    """Build a calibration from measurements. The last id is the gripper when its open/closed are given."""
    has_gripper = gripper_open_raw is not None and gripper_closed_raw is not None
    n_joints = len(ids) - (1 if has_gripper else 0)
    if len(known_pose) != n_joints or len(names) != n_joints:
        raise CalibrationError(
            f"{n_joints} arm joints (ids {list(ids[:n_joints])}) but {len(known_pose)} known-pose angles "
            f"and {len(names)} names"
        )
    signs = list(signs) if signs is not None else [1] * n_joints
    if len(signs) != n_joints or any(s not in (1, -1) for s in signs):
        raise CalibrationError(f"signs must be {n_joints} values of 1 or -1, got {signs}")
    offsets = quarter_turn_offsets(known_pose_raw[:n_joints], known_pose, signs)
    joints = []
    for k in range(n_joints):
        lo, hi = -math.pi, math.pi
        if range_raw is not None:
            a = signs[k] * range_raw[0][k] - offsets[k]
            b = signs[k] * range_raw[1][k] - offsets[k]
            lo, hi = float(min(a, b)), float(max(a, b))
        joints.append(JointCalibration(id=int(ids[k]), name=str(names[k]), sign=int(signs[k]),
                                       offset=float(offsets[k]), range_min=lo, range_max=hi))
    gripper = None
    if has_gripper:
        if abs(gripper_open_raw - gripper_closed_raw) < math.radians(5):
            raise CalibrationError("gripper open and closed readings differ by under 5 degrees; measure them again")
        gripper = GripperCalibration(id=int(ids[-1]), open=float(gripper_open_raw), closed=float(gripper_closed_raw))
    return ArmCalibration(arm=arm, joints=joints, gripper=gripper, known_pose=[float(x) for x in known_pose],
                          model=model)


@dataclass
class PoseFile:
    """The non-interactive form of ``telecorder calibrate`` (``--pose-file``).

    ``known_pose``: joint angles (rad, robot convention) the arm is held in while calibrating;
    ``names``/``signs``: per arm joint; ``gripper``: raw open/closed radians;
    ``range``: raw min/max per arm joint (default: +-pi around the known pose).
    """

    known_pose: list[float]
    names: list[str]
    signs: list[int] | None = None
    gripper_open: float | None = None
    gripper_closed: float | None = None
    range_min: list[float] | None = None
    range_max: list[float] | None = None

    @classmethod
    def load(cls, path: Path) -> PoseFile:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            if not isinstance(d, dict):
                raise TypeError(f"the file holds a JSON {type(d).__name__}, not an object")
            grip = d.get("gripper") or {}
            rng = d.get("range") or {}
            pf = cls(
                known_pose=[float(x) for x in d["known_pose"]],
                names=[str(x) for x in d.get("names", [f"joint{i + 1}" for i in range(len(d["known_pose"]))])],
                signs=[int(s) for s in d["signs"]] if "signs" in d else None,
                gripper_open=float(grip["open"]) if "open" in grip else None,
                gripper_closed=float(grip["closed"]) if "closed" in grip else None,
                range_min=[float(x) for x in rng["min"]] if "min" in rng else None,
                range_max=[float(x) for x in rng["max"]] if "max" in rng else None,
            )
            numbers = [*pf.known_pose, *(pf.range_min or []), *(pf.range_max or []),
                       *(v for v in (pf.gripper_open, pf.gripper_closed) if v is not None)]
            if not all(math.isfinite(v) for v in numbers):
                raise ValueError("angles must be finite numbers (found NaN or infinity)")
            n = len(pf.known_pose)
            for what, values in (("names", pf.names), ("signs", pf.signs), ("range min", pf.range_min),
                                 ("range max", pf.range_max)):
                if values is not None and len(values) != n:
                    raise ValueError(f"{len(values)} {what} for {n} known_pose angles")
        except FileNotFoundError as e:
            raise CalibrationError(f"{path}: pose file not found") from e
        except OSError as e:
            raise CalibrationError(f"{path}: pose file cannot be read ({e.strerror or e})") from e
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RecursionError,
                OverflowError) as e:
            raise CalibrationError(
                f"{path}: invalid pose file ({type(e).__name__}: {e}); expected JSON with 'known_pose' "
                "(and optional 'names', 'signs', 'gripper': {'open', 'closed'}, 'range': {'min', 'max'})"
            ) from e
        return pf
