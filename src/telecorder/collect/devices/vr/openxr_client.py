"""A VR headset's controllers read through an OpenXR runtime (pyopenxr, imported on first use)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ....errors import DeviceError
from .pose_stream import HANDS, ControllerSample

__all__ = ["OpenXRClient"]

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
        _check_manifest(Path(env))
        return
    if sys.platform.startswith("win"):
        return  # the Windows loader reads the registry; let xrCreateInstance decide
    found = next((p for p in _runtime_manifest_candidates() if p.is_file()), None)
    if found is None:
        raise DeviceError(
            "no OpenXR runtime found (XR_RUNTIME_JSON is unset and there is no "
            f"openxr/1/active_runtime.json); {_RUNTIME_HINT}"
        )
    _check_manifest(found)


def _check_manifest(manifest: Path) -> None:
    """The manifest must parse and name a library that exists (a deleted build, a moved cache)."""
    try:
        lib = json.loads(manifest.read_text(encoding="utf-8"))["runtime"]["library_path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeviceError(
            f"{manifest} is not an OpenXR runtime manifest (no runtime.library_path: {exc}); "
            f"{_RUNTIME_HINT}"
        ) from None
    path = Path(str(lib))
    if "/" not in str(lib) and "\\" not in str(lib):
        return  # a bare file name: the dynamic linker searches its own paths
    if not path.is_absolute():
        path = manifest.parent / path
    if not path.is_file():
        raise DeviceError(
            f"the OpenXR runtime manifest {manifest} names {path}, which does not exist: reinstall "
            "or rebuild the runtime (for telecorder's Monado build: make vr-runtime)"
        )


def _runtime_label() -> str:
    """The runtime's name and manifest as the loader will pick it, for error messages."""
    env = os.environ.get("XR_RUNTIME_JSON")
    manifest = Path(env) if env else next(
        (p for p in _runtime_manifest_candidates() if p.is_file()), None
    )
    if manifest is None:
        return "(active runtime)"
    try:
        name = json.loads(manifest.read_text(encoding="utf-8"))["runtime"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"({manifest})"
    return f"{name!r} ({manifest})"


def _text(raw: Any) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


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
    # Index controllers (also what Monado's remote driver exposes) have a/b on both
    # hands and no menu button for applications (the system button belongs to the runtime):
    # there, discarding an episode is the terminal's "r" key.
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
        self.runtime_name = ""  # e.g. "Monado(XRT) by Collabora et al ..." once open
        self.system_name = ""  # the headset, e.g. "Remote HMD"
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
        self._closing = False
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
                f"the OpenXR runtime {_runtime_label()} does not offer XR_MND_headless; telecorder "
                "reads the controllers in a headless session (no rendering), which Monado provides: "
                "export XR_RUNTIME_JSON=/usr/share/openxr/1/openxr_monado.json (scripts/vr_runtime.sh "
                "in the telecorder repository builds one)"
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
        props = xr.get_instance_properties(self._instance)
        self.runtime_name = _text(props.runtime_name)
        self.system_name = _text(xr.get_system_properties(self._instance, system_id).system_name)
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
                elif (self._state in (xr.SessionState.EXITING, xr.SessionState.LOSS_PENDING)
                      and not self._closing):
                    raise DeviceError(f"the OpenXR session ended ({self._state.name})")
            elif kind == xr.StructureType.EVENT_DATA_INSTANCE_LOSS_PENDING and not self._closing:
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
        # Input follows once the runtime gives the session focus (at once for Monado headless; a
        # headset may wait until it is worn): a short grace so the first samples carry input.
        focus_deadline = min(deadline, time.monotonic() + 1.0)
        while self._state != self._xr.SessionState.FOCUSED and time.monotonic() < focus_deadline:
            self._poll_events()
            time.sleep(0.01)

    def close(self) -> None:
        xr = self._xr
        if xr is None:
            return
        # Destroying the instance releases every child handle; the session is ended first so
        # the runtime sees a clean exit rather than a lost client. A running session may only be
        # ended once the runtime has moved it to STOPPING, which it does after an exit request.
        self._closing = True
        if self._session is not None and self._running:
            with contextlib.suppress(xr.XrException, DeviceError):
                xr.request_exit_session(self._session)
                deadline = time.monotonic() + 2.0
                while self._running and time.monotonic() < deadline:
                    self._poll_events()  # ends the session on STOPPING
                    time.sleep(0.005)
        self._running = False
        if self._instance is not None:
            with contextlib.suppress(xr.XrException):
                xr.destroy_instance(self._instance)
        self._instance = self._session = self._action_set = self._stage = None
        self._state = None
        self._closing = False
        self._actions.clear()
        self._spaces.clear()

    def interaction_profiles(self) -> dict[str, str | None]:
        """The controller profile the runtime bound per hand (e.g. valve/index_controller), None
        while a hand has no bound controller. Known after the first :meth:`sample`."""
        if self._session is None:
            raise DeviceError("OpenXRClient.interaction_profiles() called before open()")
        xr = self._xr
        out: dict[str, str | None] = {}
        for hand in HANDS:
            state = xr.get_current_interaction_profile(self._session, self._hand_paths[hand])
            path = state.interaction_profile
            out[hand] = xr.path_to_string(self._instance, path) if path else None
        return out

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
        # Only a FOCUSED session receives input (another app or the runtime's menu may hold it):
        # until then both hands read as untracked, so the clutch mapping holds the arm still.
        focused = self._running and self._state == xr.SessionState.FOCUSED
        if focused:
            try:
                xr.sync_actions(
                    self._session,
                    xr.ActionsSyncInfo(
                        active_action_sets=[xr.ActiveActionSet(self._action_set, xr.NULL_PATH)]
                    ),
                )
            except xr.SessionNotFocused:
                focused = False  # focus moved between the event poll and the sync
        if not focused:
            for hand in HANDS:
                out[hand] = ControllerSample(
                    now_ns / 1e9, hand, np.full((4, 4), np.nan), valid=False
                )
            return out
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
