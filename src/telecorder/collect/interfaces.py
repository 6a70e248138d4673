"""The three device interfaces the recorder talks to: a robot, a teleop front-end, cameras.

Each hardware family implements one of these in its own module; the recorder knows
nothing else about devices. All times are ``time.monotonic_ns()`` nanoseconds, the one
clock of a recording session.
"""

from __future__ import annotations

import contextlib
import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..datasets.features import FeatureSpec


class Event(enum.Enum):
    """Operator (or script) requests that change the flow of a session."""

    SAVE_EPISODE = "save"  # end the episode now and keep it
    DISCARD_EPISODE = "discard"  # drop this episode and record it again
    STOP = "stop"  # save the current episode and end the session
    INTERVENE = "intervene"  # the operator takes over from a policy, or hands back (a toggle)
    # Skip this instruction (it cannot be done in this layout): nothing is saved, the next one comes.
    SKIP_TASK = "skip"


# Events that end the episode in progress; the others go to the teleop device.
EPISODE_EVENTS = frozenset({Event.SAVE_EPISODE, Event.DISCARD_EPISODE, Event.STOP, Event.SKIP_TASK})


@dataclass
class Frame:
    """A camera image (RGB uint8) with the time it was captured and the camera's frame counter."""

    image: np.ndarray
    capture_ns: int
    index: int


@dataclass
class TeleopOutput:
    action: np.ndarray
    events: set[Event] = field(default_factory=set)
    # Extra per-step features the device records next to the action (e.g. ``action_eef``).
    extra: dict[str, np.ndarray] = field(default_factory=dict)


class Robot(ABC):
    """The follower: what is commanded and what is measured."""

    robot_type: str

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def features(self) -> list[FeatureSpec]:
        """Numeric features this robot records: ``observation.state`` and ``action`` at least."""

    @abstractmethod
    def observe(self) -> dict[str, np.ndarray]:
        """Measured state, keyed by feature name."""

    @abstractmethod
    def act(self, action: np.ndarray) -> np.ndarray:
        """Send a command; returns the command actually sent (after clamping), which is recorded."""

    def reset(self, seed: int | None = None) -> None:  # noqa: B027 - real robots are reset by people
        """Bring the scene to a fresh start between episodes (a no-op on hardware)."""

    def success(self) -> bool | None:
        """Whether the task was achieved, where the robot can tell (a simulator); None if unknown."""
        return None

    def set_task(self, task: Any) -> None:  # noqa: B027 - only a simulator checks tasks
        """The next episode's task, before its reset: a ``telecorder.sim.tasks.Task`` whose success check a
        simulator runs, or None (free text, or no task list)."""

    def counters(self) -> dict[str, int]:
        """Running counts of communication trouble (timeouts, CRC errors...), stored per episode."""
        return {}

    def scene_attrs(self) -> dict[str, Any]:
        """Episode attributes that let ``telecorder replay`` restore the scene the first tick sees.

        A simulator gives its seed and full state; a real robot's scene is set up by people: none.
        """
        return {}

    @abstractmethod
    def disconnect(self) -> None: ...


class Teleop(ABC):
    """A front-end that turns an operator (or a script) into actions."""

    device_type: str

    @abstractmethod
    def connect(self) -> None: ...

    def start_episode(self) -> None:  # noqa: B027 - most devices need no per-episode state
        """Called when an episode starts (after the robot was reset)."""

    def set_task(self, task: Any, instruction: str = "") -> None:  # noqa: B027 - a person reads the instruction
        """The next episode's task, before the robot's reset: a ``telecorder.sim.tasks.Task`` (a scripted
        expert plans for it) or None, and the instruction text verbatim (a policy is conditioned on it)."""

    # True when the follower is moved by hand and the action is the next measured state
    # (kinesthetic teaching); the writer fills the action column from the states at the end.
    action_from_next_state: bool = False

    @abstractmethod
    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        """The action for this tick, given the latest observation."""

    def counters(self) -> dict[str, int]:
        """Running counts of communication trouble, stored per episode."""
        return {}

    def features(self) -> list[FeatureSpec]:
        """Features this device records besides the robot's (the keys of ``TeleopOutput.extra``)."""
        return []

    # True for a device the follower keeps following between episodes (a leader arm, as in GELLO
    # and LeRobot): the session goes on reading it and commanding the follower through the reset
    # period, so the next episode starts with the follower where the operator holds the device.
    follows_between_episodes: bool = False

    # True for a device that looks at the cameras (a policy): it gets each tick's frames.
    uses_frames: bool = False

    def see_frames(self, frames: dict[str, Frame | Future[Frame]]) -> None:  # noqa: B027 - most ignore frames
        """This tick's frames, just before ``read``; a synchronous camera's may still be in the making."""

    def handle_events(self, events: set[Event]) -> None:  # noqa: B027 - only some devices take operator keys
        """Operator events that do not end the episode (``INTERVENE``), from the session's keys."""

    def episode_summary(self) -> dict[str, Any]:
        """Per-episode numbers this device kept (e.g. human steps), stored in the index and the file."""
        return {}

    @abstractmethod
    def disconnect(self) -> None: ...


class Camera(ABC):
    """A source of frames captured in its own thread.

    The recorder takes the newest frame of a camera each tick, except from a synchronous
    camera (a rendered sim camera), which it asks for a capture of the tick's own state.
    """

    name: str
    width: int
    height: int
    fps: float
    # A free-running camera delivers frames on its own clock; a triggered one (the sim's) follows the loop.
    free_running: bool = True
    # A synchronous camera captures on request (``request``): one frame per tick that asks, showing
    # the state of that tick and stamped with its time, so it never repeats or drops a frame.
    synchronous: bool = False

    @abstractmethod
    def start(self) -> None:
        """Open the device and begin capturing; returns once the first frame arrived."""

    @abstractmethod
    def latest(self) -> Frame:
        """The newest frame; raises CameraError if the camera stopped delivering."""

    @abstractmethod
    def stop(self) -> None: ...

    def request(self, tick_ns: int) -> Future[Frame]:
        """A synchronous camera's capture of the scene as it is now, stamped ``tick_ns``.

        Returns at once; the frame (or the CameraError that prevented it) arrives in the future.
        May block when captures are queued faster than they are made (backpressure).
        """
        raise NotImplementedError(f"{self.describe()} captures on its own clock; take latest() instead")

    def wait_for_frame(self, after_ns: int, timeout_s: float = 2.0) -> Frame:
        """The first frame captured at or after ``after_ns`` (or the newest one at the timeout).

        Used at the start of an episode so that its first step never shows the scene
        as it was before the reset.
        """
        deadline = time.monotonic() + timeout_s
        frame = self.latest()
        while frame.capture_ns < after_ns and time.monotonic() < deadline:
            time.sleep(0.002)
            frame = self.latest()
        return frame

    def recent_capture_ns(self) -> list[int]:
        """Capture times of the last few frames, for locking the control loop's phase to the camera."""
        return []

    def describe(self) -> str:
        return f"camera {self.name!r}"


def connect_all(parts: Sequence[Robot | Teleop]) -> None:
    """Connect every part (two arms of a pair), or none: on a failure, disconnect those already
    connected (their buses and emulators) before raising, since a session only disconnects what connected."""
    try:
        for part in parts:
            part.connect()
    except BaseException:
        for part in parts:
            with contextlib.suppress(Exception):
                part.disconnect()
        raise
