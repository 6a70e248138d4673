"""VR-controller teleoperation: pose streams, the clutch mapping to end-effector targets, OpenXR.

Three layers, each usable without the next:

* the pose stream, JSON lines of controller samples (one line per instant, ``left``/``right``
  keys, poses as 4x4 matrices in the OpenXR stage frame, metres), which is what
  ``telecorder vr-record`` writes and what tests and replays read;
* :class:`VRMapping`, the pure function from controller samples to end-effector targets
  (clutch, axis change, scale, buttons), testable without any headset;
* :class:`OpenXRClient`, which reads a real headset through pyopenxr (``xr``, an optional
  dependency imported on first use).

Buttons (rising edges only, so holding a button fires once): ``a`` saves the episode, ``b``
re-centres (re-anchors the controller and the robot at their current poses), ``menu`` or ``y``
discards the episode, ``x`` takes over from a policy (or hands back). Touch controllers put ``x``/``y`` on the left hand and ``a``/``b`` on the
right, so a left-hand operator has discard on ``y`` and nothing on ``x``.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from telecorder.collect.interfaces import Event
from telecorder.errors import DeviceError

__all__ = [
    "AXIS_PRESETS",
    "HANDS",
    "ControllerSample",
    "MappingOutput",
    "OpenXRClient",
    "PoseStreamSource",
    "VRMapping",
    "load_pose_stream",
    "write_pose_stream",
]

HANDS = ("left", "right")

# OpenXR stage: right-handed, +Y up, -Z forward (so +X right). Robot base: +X forward, +Y left,
# +Z up. Row i says which OpenXR axis gives robot axis i: forward = -Z, left = -X, up = +Y.
AXIS_PRESETS: dict[str, np.ndarray] = {
    "openxr_to_robot": np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "identity": np.eye(3),
}

SAVE_BUTTONS = frozenset({"a"})
RECENTRE_BUTTONS = frozenset({"b"})
DISCARD_BUTTONS = frozenset({"menu", "y"})
INTERVENE_BUTTONS = frozenset({"x"})

_RUNTIME_HINT = (
    "install an OpenXR runtime (e.g. Monado) and point XR_RUNTIME_JSON at its manifest, "
    "e.g. export XR_RUNTIME_JSON=/usr/share/openxr/1/openxr_monado.json"
)


def _require_xr() -> Any:
    try:
        import xr
    except ImportError as exc:
        raise ImportError(
            "pyopenxr is not installed; install it with: pip install 'telecorder[vr]'"
        ) from exc
    return xr


# --------------------------------------------------------------------------- pose stream


@dataclass
class ControllerSample:
    """One hand's controller state at time ``t`` (seconds).

    ``pose`` is the 4x4 controller pose in the OpenXR stage frame (metres); ``valid`` is False
    when the runtime lost tracking, in which case ``pose`` may be NaN.
    """

    t: float
    hand: str
    pose: np.ndarray
    squeeze: float = 0.0
    trigger: float = 0.0
    buttons: dict[str, bool] = field(default_factory=dict)
    valid: bool = True

    @property
    def usable(self) -> bool:
        """Tracked and finite: the only poses the mapping may follow."""
        return bool(self.valid) and bool(np.all(np.isfinite(self.pose)))

    def to_json(self) -> dict[str, Any]:
        return {
            "pose": [float(v) for v in np.asarray(self.pose, dtype=float).ravel()],
            "squeeze": float(self.squeeze),
            "trigger": float(self.trigger),
            "buttons": {k: bool(v) for k, v in self.buttons.items()},
            "valid": bool(self.valid),
        }


def _parse_hand(t: float, hand: str, raw: Any) -> ControllerSample:
    if not isinstance(raw, dict):
        raise ValueError(f"{hand!r} must be an object, got {type(raw).__name__}")
    valid = raw.get("valid", True)
    if not isinstance(valid, bool):
        raise ValueError(f"{hand}.valid must be true or false")
    if raw.get("pose") is None:
        # A lost controller may carry no pose at all; that is only meaningful when flagged.
        if valid:
            raise ValueError(f"{hand}.pose is missing")
        pose = np.full((4, 4), np.nan)
    else:
        try:
            pose = np.asarray(raw["pose"], dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{hand}.pose is not numeric: {exc}") from None
        if pose.size != 16 or pose.shape not in ((16,), (4, 4)):
            raise ValueError(
                f"{hand}.pose must be 16 numbers or a 4x4 matrix, got shape {pose.shape}"
            )
        pose = pose.reshape(4, 4)
    values = {}
    for key in ("squeeze", "trigger"):
        v = raw.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{hand}.{key} must be a number")
        values[key] = float(v)
    buttons = raw.get("buttons", {})
    if not isinstance(buttons, dict) or not all(isinstance(b, bool) for b in buttons.values()):
        raise ValueError(f"{hand}.buttons must map names to true/false")
    return ControllerSample(t=t, hand=hand, pose=pose, buttons=dict(buttons), valid=valid, **values)


def _parse_line(text: str) -> list[ControllerSample]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    t = obj.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise ValueError("'t' (seconds) is missing or not a finite number")
    unknown = set(obj) - {"t", *HANDS}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; expected 't', 'left', 'right'")
    return [_parse_hand(float(t), hand, obj[hand]) for hand in HANDS if hand in obj]


def load_pose_stream(path: str | os.PathLike[str]) -> list[ControllerSample]:
    """All samples of a pose stream, both hands, in time order (blank lines are skipped)."""
    path = Path(path)
    samples: list[ControllerSample] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                samples.extend(_parse_line(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: bad pose sample: {exc}") from None
    # Stable sort: a stream recorded slightly out of order still replays monotonically.
    samples.sort(key=lambda s: s.t)
    return samples


def write_pose_stream(path: str | os.PathLike[str], samples: Iterable[ControllerSample]) -> None:
    """Write samples as JSON lines; samples of both hands sharing a ``t`` share a line."""
    lines: dict[float, dict[str, Any]] = {}
    for s in samples:
        if s.hand not in HANDS:
            raise ValueError(f"hand must be one of {HANDS}, got {s.hand!r}")
        lines.setdefault(float(s.t), {"t": float(s.t)})[s.hand] = s.to_json()
    with Path(path).open("w", encoding="utf-8") as f:
        for t in sorted(lines):
            f.write(json.dumps(lines[t]) + "\n")


class PoseStreamSource:
    """Replays one hand of a recorded pose stream against the wall clock (or another clock).

    ``t`` in the stream is seconds since the recording started, so :meth:`current` returns the
    latest sample with ``t <= elapsed``, ``elapsed`` counted from :meth:`start`. ``clock``
    (seconds) replaces the wall clock, e.g. by the simulation's time under ``--no-realtime``.
    """

    def __init__(self, path: str | os.PathLike[str], hand: str = "right",
                 clock: Callable[[], float] | None = None) -> None:
        if hand not in HANDS:
            raise ValueError(f"hand must be one of {HANDS}, got {hand!r}")
        self.path = Path(path)
        self.hand = hand
        self.samples = [s for s in load_pose_stream(self.path) if s.hand == hand]
        self._times = [s.t for s in self.samples]
        self._clock = clock or (lambda: time.monotonic_ns() / 1e9)
        self._start: float | None = None

    def start(self) -> None:
        self._start = self._clock()

    def elapsed(self) -> float:
        if self._start is None:
            raise RuntimeError("PoseStreamSource.start() was not called")
        return self._clock() - self._start

    def sample_at(self, elapsed: float) -> ControllerSample | None:
        """Latest sample with ``t <= elapsed``; None before the first one."""
        # A microsecond of slack: a simulated clock sums its steps in floating point, and a sample
        # stamped exactly on a tick must not slip to the next one.
        i = bisect.bisect_right(self._times, elapsed + 1e-6)
        return self.samples[i - 1] if i else None

    def current(self) -> ControllerSample | None:
        return self.sample_at(self.elapsed())

    def finished(self) -> bool:
        """Whether the last sample has been reached (it then stays the current one)."""
        return not self.samples or self.elapsed() >= self._times[-1]


# --------------------------------------------------------------------------- mapping


@dataclass
class MappingOutput:
    """End-effector target in the robot base frame, gripper opening (0 closed, 1 open)."""

    position: np.ndarray
    rotation: np.ndarray
    gripper: float
    events: set[Event]
    engaged: bool


def _axes_matrix(axes: str | np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    if isinstance(axes, str):
        if axes not in AXIS_PRESETS:
            raise ValueError(f"unknown axes preset {axes!r}; choose from {sorted(AXIS_PRESETS)}")
        return AXIS_PRESETS[axes].copy()
    a = np.asarray(axes, dtype=float)
    if a.shape != (3, 3) or not np.all(np.isfinite(a)):
        raise ValueError(f"axes must be a finite 3x3 matrix, got shape {a.shape}")
    if not np.allclose(a @ a.T, np.eye(3), atol=1e-6) or not np.isclose(
        np.linalg.det(a), 1.0, atol=1e-6
    ):
        # A reflection would turn right-handed rotations into left-handed ones.
        raise ValueError("axes must be a rotation matrix (orthonormal, determinant +1)")
    return a


class VRMapping:
    """Clutched relative mapping from one controller to an end-effector target.

    While the clutch (squeeze >= ``clutch_threshold``) is held, the target follows the
    controller's motion since the clutch was pressed, rotated into the robot frame by ``axes``
    and scaled by ``scale``; released, the target stays where it was, so the operator can move
    their hand back without moving the robot (like lifting a mouse).

    On tracking loss (``valid`` False or a non-finite pose) the last command is held; when
    tracking returns with the clutch still held, the controller is re-anchored at its new pose
    and the robot side at the held target, so the gap never becomes a jump.
    """

    def __init__(
        self,
        scale: float = 1.0,
        axes: str | np.ndarray | Sequence[Sequence[float]] = "openxr_to_robot",
        clutch_threshold: float = 0.5,
    ) -> None:
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale}")
        self.scale = float(scale)
        self.axes = _axes_matrix(axes)
        self.clutch_threshold = float(clutch_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget anchors, held target and button history (e.g. at the start of an episode)."""
        self.engaged = False
        self._anchor_ctrl: np.ndarray | None = None
        self._anchor_robot_pos = np.zeros(3)
        self._anchor_robot_rot = np.eye(3)
        self._target_pos: np.ndarray | None = None
        self._target_rot: np.ndarray | None = None
        self._gripper = 1.0
        self._prev_buttons: dict[str, bool] = {}
        self._reanchor_from_target = False

    def _anchor(self, ctrl_pose: np.ndarray, robot_pos: np.ndarray, robot_rot: np.ndarray) -> None:
        self._anchor_ctrl = ctrl_pose.copy()
        self._anchor_robot_pos = robot_pos.copy()
        self._anchor_robot_rot = robot_rot.copy()

    def update(
        self,
        sample: ControllerSample | None,
        robot_eef_pos: np.ndarray,
        robot_eef_rot: np.ndarray,
    ) -> MappingOutput:
        robot_pos = np.asarray(robot_eef_pos, dtype=float).reshape(3)
        robot_rot = np.asarray(robot_eef_rot, dtype=float).reshape(3, 3)
        if self._target_pos is None or self._target_rot is None:
            # Until the first clutch the target is where the robot was when we started.
            self._target_pos, self._target_rot = robot_pos.copy(), robot_rot.copy()
        events: set[Event] = set()
        if sample is None:
            return self._output(events)

        # Buttons are digital inputs that stay meaningful while the pose is not tracked.
        pressed = {
            name
            for name, down in sample.buttons.items()
            if down and not self._prev_buttons.get(name)
        }
        self._prev_buttons = dict(sample.buttons)
        if pressed & SAVE_BUTTONS:
            events.add(Event.SAVE_EPISODE)
        if pressed & DISCARD_BUTTONS:
            events.add(Event.DISCARD_EPISODE)
        if pressed & INTERVENE_BUTTONS:
            events.add(Event.INTERVENE)

        if not sample.usable:
            if self.engaged:
                self._reanchor_from_target = True
            return self._output(events)

        if math.isfinite(sample.trigger):
            self._gripper = float(np.clip(1.0 - sample.trigger, 0.0, 1.0))
        clutch = math.isfinite(sample.squeeze) and sample.squeeze >= self.clutch_threshold
        pose = np.asarray(sample.pose, dtype=float)
        if not clutch:
            self.engaged = False
            self._reanchor_from_target = False
            return self._output(events)

        if not self.engaged or pressed & RECENTRE_BUTTONS:
            self._anchor(pose, robot_pos, robot_rot)
        elif self._reanchor_from_target:
            self._anchor(pose, self._target_pos, self._target_rot)
        self.engaged = True
        self._reanchor_from_target = False

        assert self._anchor_ctrl is not None
        a = self.axes
        d_pos = pose[:3, 3] - self._anchor_ctrl[:3, 3]
        r_delta = pose[:3, :3] @ self._anchor_ctrl[:3, :3].T
        self._target_pos = self._anchor_robot_pos + self.scale * (a @ d_pos)
        self._target_rot = (a @ r_delta @ a.T) @ self._anchor_robot_rot
        return self._output(events)

    def _output(self, events: set[Event]) -> MappingOutput:
        assert self._target_pos is not None and self._target_rot is not None
        return MappingOutput(
            position=self._target_pos.copy(),
            rotation=self._target_rot.copy(),
            gripper=self._gripper,
            events=events,
            engaged=self.engaged,
        )


# --------------------------------------------------------------------------- OpenXR


def _runtime_manifest_candidates() -> list[Path]:
    """Where the OpenXR loader looks for ``active_runtime.json`` on Linux, in its order."""
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    dirs = [home, *(Path(d) for d in os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":") if d)]
    dirs += [Path("/etc")]
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share")
    dirs += [data_home]
    dirs += [
        Path(d)
        for d in os.environ.get("XDG_DATA_DIRS", "/usr/local/share:/usr/share").split(":")
        if d
    ]
    return [d / "openxr" / "1" / "active_runtime.json" for d in dirs]


def _check_runtime_present() -> None:
    """Fail early with a useful message rather than the loader's multi-line stderr dump."""
    env = os.environ.get("XR_RUNTIME_JSON")
    if env:
        if not Path(env).is_file():
            raise DeviceError(
                f"no OpenXR runtime: XR_RUNTIME_JSON={env} does not exist; {_RUNTIME_HINT}"
            )
        return
    if sys.platform.startswith("win"):
        return  # the Windows loader reads the registry; let xrCreateInstance decide
    if not any(p.is_file() for p in _runtime_manifest_candidates()):
        raise DeviceError(
            "no OpenXR runtime found (XR_RUNTIME_JSON is unset and there is no "
            f"openxr/1/active_runtime.json); {_RUNTIME_HINT}"
        )


class _Timespec(ctypes.Structure):
    # pyopenxr declares ``timespec`` without fields, so the KHR conversion needs our own.
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _pose_matrix(posef: Any) -> np.ndarray:
    q, p = posef.orientation, posef.position
    x, y, z, w = q.x, q.y, q.z, q.w
    m = np.eye(4)
    m[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    m[:3, 3] = [p.x, p.y, p.z]
    return m


# action name -> (xr action type name, per-profile component paths under /user/hand/<hand>)
_BOOL_BUTTONS = ("a", "b", "x", "y", "menu")
_BINDINGS: dict[str, dict[str, dict[str, str]]] = {
    # The simple controller has only select and menu: select is the clutch there, because
    # moving the arm matters more than closing the gripper; it cannot drive the gripper.
    "/interaction_profiles/khr/simple_controller": {
        hand: {
            "grip_pose": "input/grip/pose",
            "aim_pose": "input/aim/pose",
            "squeeze": "input/select/click",
            "menu": "input/menu/click",
        }
        for hand in HANDS
    },
    "/interaction_profiles/oculus/touch_controller": {
        "left": {
            "grip_pose": "input/grip/pose",
            "aim_pose": "input/aim/pose",
            "squeeze": "input/squeeze/value",
            "trigger": "input/trigger/value",
            "x": "input/x/click",
            "y": "input/y/click",
            "menu": "input/menu/click",
        },
        "right": {
            "grip_pose": "input/grip/pose",
            "aim_pose": "input/aim/pose",
            "squeeze": "input/squeeze/value",
            "trigger": "input/trigger/value",
            "a": "input/a/click",
            "b": "input/b/click",
        },
    },
    "/interaction_profiles/valve/index_controller": {
        hand: {
            "grip_pose": "input/grip/pose",
            "aim_pose": "input/aim/pose",
            "squeeze": "input/squeeze/value",
            "trigger": "input/trigger/value",
            "a": "input/a/click",
            "b": "input/b/click",
        }
        for hand in HANDS
    },
}


class OpenXRClient:
    """Reads both controllers from an OpenXR runtime, poses in the STAGE space.

    Uses a headless session (``XR_MND_headless``, offered by Monado) so no window or graphics
    context is needed. ``pose`` picks which controller pose is reported: ``"grip"`` (the palm,
    the natural frame for holding a tool) or ``"aim"`` (the pointing ray).
    """

    def __init__(self, pose: str = "grip", ready_timeout_s: float = 5.0) -> None:
        if pose not in ("grip", "aim"):
            raise ValueError(f"pose must be 'grip' or 'aim', got {pose!r}")
        self.pose = pose
        self.ready_timeout_s = ready_timeout_s
        self.headless = False
        self._xr: Any = None
        self._instance: Any = None
        self._session: Any = None
        self._action_set: Any = None
        self._actions: dict[str, Any] = {}
        self._hand_paths: dict[str, Any] = {}
        self._spaces: dict[tuple[str, str], Any] = {}
        self._stage: Any = None
        self._state: Any = None
        self._running = False
        self._to_xr_time: Any = None
        self._from_xr_time: Any = None

    # -- lifecycle

    def open(self) -> None:
        xr = _require_xr()
        _check_runtime_present()
        self._xr = xr
        try:
            available = {
                p.extension_name.decode()
                if isinstance(p.extension_name, bytes)
                else p.extension_name
                for p in xr.enumerate_instance_extension_properties()
            }
        except xr.XrException as exc:
            raise DeviceError(
                f"the OpenXR runtime failed to list its extensions ({exc}); {_RUNTIME_HINT}"
            ) from None
        timespec_ext = "XR_KHR_convert_timespec_time"
        if timespec_ext not in available:
            raise DeviceError(
                f"the OpenXR runtime lacks {timespec_ext}, needed to timestamp controller poses "
                "on the recorder's clock"
            )
        self.headless = xr.MND_HEADLESS_EXTENSION_NAME in available
        if not self.headless:
            raise DeviceError(
                "the OpenXR runtime does not offer XR_MND_headless; telecorder opens a headless "
                "session (no rendering), which Monado provides: "
                "export XR_RUNTIME_JSON=/usr/share/openxr/1/openxr_monado.json"
            )
        try:
            self._instance = xr.create_instance(
                xr.InstanceCreateInfo(
                    application_info=xr.ApplicationInfo(
                        application_name="telecorder", engine_name="telecorder"
                    ),
                    enabled_extension_names=[timespec_ext, xr.MND_HEADLESS_EXTENSION_NAME],
                )
            )
        except xr.XrException as exc:
            raise DeviceError(
                f"could not create an OpenXR instance ({exc}); {_RUNTIME_HINT}"
            ) from None
        try:
            self._setup_clock()
            self._setup_session()
            self._setup_actions()
            self._wait_ready()
        except xr.XrException as exc:
            self.close()
            raise DeviceError(f"OpenXR session setup failed: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _setup_clock(self) -> None:
        xr = self._xr
        to_proto = ctypes.CFUNCTYPE(
            ctypes.c_int32, xr.Instance, ctypes.POINTER(_Timespec), ctypes.POINTER(xr.Time)
        )
        from_proto = ctypes.CFUNCTYPE(
            ctypes.c_int32, xr.Instance, xr.Time, ctypes.POINTER(_Timespec)
        )
        self._to_xr_time = ctypes.cast(
            xr.get_instance_proc_addr(self._instance, "xrConvertTimespecTimeToTimeKHR"), to_proto
        )
        self._from_xr_time = ctypes.cast(
            xr.get_instance_proc_addr(self._instance, "xrConvertTimeToTimespecTimeKHR"), from_proto
        )

    def monotonic_to_xr_time(self, monotonic_ns: int) -> int:
        """XrTime of a ``time.monotonic_ns()`` instant (both are CLOCK_MONOTONIC on Linux)."""
        ts = _Timespec(monotonic_ns // 1_000_000_000, monotonic_ns % 1_000_000_000)
        out = self._xr.Time()
        rc = self._to_xr_time(self._instance, ctypes.byref(ts), ctypes.byref(out))
        if rc < 0:
            raise DeviceError(f"xrConvertTimespecTimeToTimeKHR failed with XrResult {rc}")
        return int(out.value)

    def xr_time_to_monotonic(self, xr_time: int) -> int:
        ts = _Timespec()
        rc = self._from_xr_time(self._instance, self._xr.Time(xr_time), ctypes.byref(ts))
        if rc < 0:
            raise DeviceError(f"xrConvertTimeToTimespecTimeKHR failed with XrResult {rc}")
        return ts.tv_sec * 1_000_000_000 + ts.tv_nsec

    def _setup_session(self) -> None:
        xr = self._xr
        system_id = xr.get_system(
            self._instance, xr.SystemGetInfo(xr.FormFactor.HEAD_MOUNTED_DISPLAY)
        )
        # Headless: no graphics binding in ``next``.
        self._session = xr.create_session(self._instance, xr.SessionCreateInfo(system_id=system_id))
        spaces = set(xr.enumerate_reference_spaces(self._session))
        if xr.ReferenceSpaceType.STAGE.value not in {int(getattr(s, "value", s)) for s in spaces}:
            raise DeviceError(
                "the OpenXR runtime has no STAGE reference space; set up the play area (room "
                "setup) so that poses have a floor-level origin"
            )
        self._stage = xr.create_reference_space(
            self._session, xr.ReferenceSpaceCreateInfo(xr.ReferenceSpaceType.STAGE)
        )

    def _setup_actions(self) -> None:
        xr = self._xr
        self._hand_paths = {h: xr.string_to_path(self._instance, f"/user/hand/{h}") for h in HANDS}
        subpaths = [self._hand_paths[h] for h in HANDS]
        self._action_set = xr.create_action_set(
            self._instance,
            xr.ActionSetCreateInfo(
                action_set_name="telecorder", localized_action_set_name="telecorder teleop"
            ),
        )
        kinds = {
            "grip_pose": xr.ActionType.POSE_INPUT,
            "aim_pose": xr.ActionType.POSE_INPUT,
            "squeeze": xr.ActionType.FLOAT_INPUT,
            "trigger": xr.ActionType.FLOAT_INPUT,
            **dict.fromkeys(_BOOL_BUTTONS, xr.ActionType.BOOLEAN_INPUT),
        }
        for name, kind in kinds.items():
            self._actions[name] = xr.create_action(
                self._action_set,
                xr.ActionCreateInfo(
                    action_name=name,
                    action_type=kind,
                    subaction_paths=subpaths,
                    localized_action_name=name.replace("_", " "),
                ),
            )
        bound = 0
        for profile, per_hand in _BINDINGS.items():
            suggested = [
                xr.ActionSuggestedBinding(
                    self._actions[action],
                    xr.string_to_path(self._instance, f"/user/hand/{hand}/{comp}"),
                )
                for hand, comps in per_hand.items()
                for action, comp in comps.items()
            ]
            try:
                xr.suggest_interaction_profile_bindings(
                    self._instance,
                    xr.InteractionProfileSuggestedBinding(
                        interaction_profile=xr.string_to_path(self._instance, profile),
                        suggested_bindings=suggested,
                    ),
                )
                bound += 1
            except xr.XrException:
                continue  # a runtime may not know every profile; the others still apply
        if not bound:
            raise DeviceError("the OpenXR runtime accepted none of the controller bindings")
        xr.attach_session_action_sets(
            self._session, xr.SessionActionSetsAttachInfo(action_sets=[self._action_set])
        )
        for hand in HANDS:
            for kind in ("grip", "aim"):
                self._spaces[(hand, kind)] = xr.create_action_space(
                    self._session,
                    xr.ActionSpaceCreateInfo(
                        action=self._actions[f"{kind}_pose"], subaction_path=self._hand_paths[hand]
                    ),
                )

    def _poll_events(self) -> None:
        xr = self._xr
        while True:
            try:
                buf = xr.poll_event(self._instance)
            except xr.EventUnavailable:
                return
            kind = xr.StructureType(buf.type)
            if kind == xr.StructureType.EVENT_DATA_BUFFER:
                return  # nothing was written: the queue is empty
            if kind == xr.StructureType.EVENT_DATA_SESSION_STATE_CHANGED:
                event = ctypes.cast(
                    ctypes.byref(buf), ctypes.POINTER(xr.EventDataSessionStateChanged)
                ).contents
                self._state = xr.SessionState(event.state)
                if self._state == xr.SessionState.READY and not self._running:
                    xr.begin_session(
                        self._session,
                        xr.SessionBeginInfo(xr.ViewConfigurationType.PRIMARY_STEREO),
                    )
                    self._running = True
                elif self._state == xr.SessionState.STOPPING and self._running:
                    xr.end_session(self._session)
                    self._running = False
                elif self._state in (xr.SessionState.EXITING, xr.SessionState.LOSS_PENDING):
                    raise DeviceError(f"the OpenXR session ended ({self._state.name})")
            elif kind == xr.StructureType.EVENT_DATA_INSTANCE_LOSS_PENDING:
                raise DeviceError("the OpenXR runtime is shutting down (instance loss pending)")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._running:
            self._poll_events()
            if time.monotonic() > deadline:
                raise DeviceError(
                    f"the OpenXR session did not become ready within {self.ready_timeout_s:g} s "
                    "(is the headset connected and the runtime's service running?)"
                )
            time.sleep(0.01)

    def close(self) -> None:
        xr = self._xr
        if xr is None:
            return
        # Destroying the instance releases every child handle; the session is ended first so
        # the runtime sees a clean exit rather than a lost client.
        if self._session is not None and self._running:
            with contextlib.suppress(xr.XrException):
                xr.end_session(self._session)
        self._running = False
        if self._instance is not None:
            with contextlib.suppress(xr.XrException):
                xr.destroy_instance(self._instance)
        self._instance = self._session = self._action_set = self._stage = None
        self._actions.clear()
        self._spaces.clear()

    def __enter__(self) -> OpenXRClient:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading

    def sample(self) -> dict[str, ControllerSample]:
        """Both controllers now; ``t`` is ``time.monotonic()`` seconds."""
        if self._instance is None:
            raise DeviceError("OpenXRClient.sample() called before open()")
        xr = self._xr
        self._poll_events()
        now_ns = time.monotonic_ns()
        out: dict[str, ControllerSample] = {}
        if not self._running:
            for hand in HANDS:
                out[hand] = ControllerSample(
                    now_ns / 1e9, hand, np.full((4, 4), np.nan), valid=False
                )
            return out
        xr.sync_actions(
            self._session,
            xr.ActionsSyncInfo(
                active_action_sets=[xr.ActiveActionSet(self._action_set, xr.NULL_PATH)]
            ),
        )
        xr_time = self.monotonic_to_xr_time(now_ns)
        need = (
            xr.SpaceLocationFlags.POSITION_VALID_BIT | xr.SpaceLocationFlags.ORIENTATION_VALID_BIT
        )
        for hand in HANDS:
            sub = self._hand_paths[hand]

            def state(name: str, getter: Any, sub: Any = sub) -> Any:
                return getter(self._session, xr.ActionStateGetInfo(self._actions[name], sub))

            loc = xr.locate_space(self._spaces[(hand, self.pose)], self._stage, xr_time)
            valid = (int(loc.location_flags) & int(need)) == int(need)
            pose = _pose_matrix(loc.pose) if valid else np.full((4, 4), np.nan)
            out[hand] = ControllerSample(
                t=now_ns / 1e9,
                hand=hand,
                pose=pose,
                squeeze=float(state("squeeze", xr.get_action_state_float).current_state),
                trigger=float(state("trigger", xr.get_action_state_float).current_state),
                buttons={
                    b: bool(state(b, xr.get_action_state_boolean).current_state)
                    for b in _BOOL_BUTTONS
                },
                valid=valid,
            )
        return out

    def record_stream(
        self, out_path: str | os.PathLike[str], seconds: float | None = None, rate_hz: float = 90.0
    ) -> int:
        """Write a pose stream until ``seconds`` elapse (or Ctrl-C); returns the lines written.

        ``t`` is seconds since the recording started, the convention :class:`PoseStreamSource`
        replays. Each line is flushed as written so an interrupted recording stays readable.
        """
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        period = 1.0 / rate_hz
        count = 0
        start = time.monotonic()
        next_tick = start
        with Path(out_path).open("w", encoding="utf-8") as f:
            try:
                while seconds is None or time.monotonic() - start < seconds:
                    hands = self.sample()
                    t = next(iter(hands.values())).t - start
                    line: dict[str, Any] = {"t": t}
                    for hand, s in hands.items():
                        entry = s.to_json()
                        if not s.valid:
                            entry["pose"] = None  # NaN is not JSON
                        line[hand] = entry
                    f.write(json.dumps(line) + "\n")
                    f.flush()
                    count += 1
                    next_tick += period
                    time.sleep(max(0.0, next_tick - time.monotonic()))
            except KeyboardInterrupt:
                pass
        return count
