"""The MuJoCo arm as a follower robot, and its rendered cameras as camera devices.

Physics advances by one control period per command, so the simulated follower
moves in step with the control loop and its state holds still between commands.
Cameras render in a thread of their own, triggered (like a hardware-triggered camera)
each time the state changes and at most at the camera's frame rate: every frame shows
exactly a state the follower reports, and render time never lands in the control
loop. The snapshot time is the frame's capture time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..datasets.features import FeatureSpec
from ..errors import CameraError
from .interfaces import Camera, Frame, Robot

BUILTIN_ROBOT_TYPE = "telecorder_sim_arm"


class SimRobot(Robot):
    def __init__(self, model_path: str | Path | None = None, *, fps: float = 30.0, seed: int | None = None) -> None:
        from ..sim.env import SimEnv

        self.env = SimEnv(model_path, control_dt=1.0 / fps, seed=seed)
        self.builtin = model_path is None
        self._listeners: list[Callable[[], None]] = []
        self.robot_type = BUILTIN_ROBOT_TYPE if self.builtin else f"mujoco:{Path(model_path).stem}"

    def connect(self) -> None:
        self.env.reset()

    def features(self) -> list[FeatureSpec]:
        names = tuple(self.env.joint_names)
        if self.builtin:
            state_unit = "measured joint positions in radians; gripper normalized 0 = closed, 1 = open"
            action_unit = (
                "absolute joint position targets in radians; gripper 0 = closed, 1 = open; "
                "the command issued after observing this step"
            )
        else:
            grip = "; an actuator named 'gripper' is normalized 0 = closed, 1 = open" if "gripper" in names else ""
            state_unit = f"measured positions of the actuated joints, in the model's units{grip}"
            action_unit = f"actuator targets in the model's units{grip}; the command issued after observing this step"
        return [
            FeatureSpec("observation.state", "float32", (len(names),), names=names, unit=state_unit),
            FeatureSpec("action", "float32", (len(names),), names=names, unit=action_unit),
        ]

    def observe(self) -> dict[str, np.ndarray]:
        return {"observation.state": self.env.joint_positions().astype(np.float32)}

    def act(self, action: np.ndarray) -> np.ndarray:
        sent = np.clip(np.asarray(action, dtype=np.float64), self.env.action_low, self.env.action_high)
        self.env.apply_action(sent)
        self._state_changed()
        return sent.astype(np.float32)

    def reset(self, seed: int | None = None) -> None:
        self.env.reset(seed)
        self._state_changed()

    def on_state_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quickly, from the control thread) whenever the simulated state moved."""
        self._listeners.append(callback)

    def _state_changed(self) -> None:
        for cb in self._listeners:
            cb()

    def success(self) -> bool | None:
        return bool(self.env.is_success()) if self.env.has_task else None

    def disconnect(self) -> None:
        self.env.close()


class SimCameraRig:
    """Renders every camera of a simulation from one state snapshot per frame, in its own thread."""

    def __init__(self, robot: SimRobot, names: list[str], width: int, height: int, fps: float) -> None:
        missing = [n for n in names if n not in robot.env.camera_names]
        if missing:
            raise CameraError(
                f"sim model has no camera {', '.join(map(repr, missing))}; it has {robot.env.camera_names}"
            )
        self.robot, self.names, self.width, self.height, self.fps = robot, names, width, height, fps
        self._lock = threading.Lock()
        self._latest: dict[str, Frame] = {}
        self._failure: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._users = 0
        self._trigger = threading.Event()
        self.frames_rendered = 0
        robot.on_state_change(self._trigger.set)

    def cameras(self) -> list[SimCamera]:
        return [SimCamera(self, n) for n in self.names]

    def acquire(self) -> None:
        self._users += 1
        if self._thread is not None:
            return
        self._stop.clear()
        self._trigger.set()
        self._thread = threading.Thread(target=self._render_loop, name="tc-sim-render", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30.0  # the first EGL context can take seconds to create
        while time.monotonic() < deadline:
            with self._lock:
                if self._failure or len(self._latest) == len(self.names):
                    break
            time.sleep(0.01)
        with self._lock:
            if self._failure:
                raise CameraError(self._failure)
            if len(self._latest) < len(self.names):
                raise CameraError("sim cameras delivered no frame within 30 s (is offscreen rendering working?)")

    def release(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._thread is not None:
            self._stop.set()
            self._trigger.set()
            self._thread.join(timeout=5.0)
            self._thread = None

    def _render_loop(self) -> None:
        try:
            from ..sim.render import SimRenderer

            renderer = SimRenderer(self.robot.env.model, self.width, self.height)
        except Exception as e:
            with self._lock:
                self._failure = f"sim cameras: offscreen rendering failed: {e}"
            return
        period_ns = int(1e9 / self.fps)
        next_due = 0
        index = 0
        try:
            while not self._stop.is_set():
                self._trigger.wait(0.1)
                if self._stop.is_set():
                    break
                delay = (next_due - time.monotonic_ns()) / 1e9
                if delay > 0:
                    # Control runs faster than the camera: leave the trigger pending until a frame is due.
                    time.sleep(min(delay, 0.1))
                    continue
                if not self._trigger.is_set():
                    continue
                self._trigger.clear()
                qpos, _, _ = self.robot.env.snapshot()
                captured = time.monotonic_ns()
                # A tenth of a period of slack keeps a camera at the control rate from skipping a trigger on jitter.
                next_due = captured + period_ns - period_ns // 10
                images = {name: renderer.render(qpos, name) for name in self.names}
                frames = {name: Frame(img, captured, index) for name, img in images.items()}
                index += 1
                with self._lock:
                    self._latest.update(frames)
                    self.frames_rendered = index
        except Exception as e:
            with self._lock:
                self._failure = f"sim cameras: rendering failed: {e}"
        finally:
            renderer.close()

    def latest(self, name: str) -> Frame:
        with self._lock:
            failure, frame = self._failure, self._latest.get(name)
        if failure:
            raise CameraError(failure)
        if frame is None:
            raise CameraError(f"sim camera {name!r}: not started")
        return frame


class SimCamera(Camera):
    free_running = False

    def __init__(self, rig: SimCameraRig, name: str) -> None:
        self.rig, self.name = rig, name
        self.width, self.height, self.fps = rig.width, rig.height, rig.fps

    def describe(self) -> str:
        return f"sim camera {self.name!r}"

    def start(self) -> None:
        self.rig.acquire()

    def latest(self) -> Frame:
        return self.rig.latest(self.name)

    def stop(self) -> None:
        self.rig.release()
