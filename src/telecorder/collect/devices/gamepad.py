"""Gamepad and keyboard teleoperation: operator input turned into end-effector velocity commands.

These devices only produce velocities; integrating them into an end-effector target and
solving IK is the job of the module that drives the robot, so the same input works for any
arm. Frames and signs (right-handed, robot base frame):

* linear: +x forward, +y left, +z up (m/s)
* angular: roll about +x, pitch about +y, yaw about +z (rad/s). With these signs
  "+pitch" tips the tool nose down, "+roll" lowers its right side, "+yaw" turns it left.
* gripper_delta: opening per second, positive opens.

Gamepad (default mapping, the SDL joystick layout of an Xbox-style pad on Linux; pygame docs
"Xbox 360 Controller"): left stick drives x (up = forward) and y (left = +y), right stick
vertical drives z (up = up). Y toggles rotation mode, in which the left stick drives pitch (up =
nose down) and roll (right = +roll) and the right stick horizontal drives yaw (left = +yaw).
The shoulders LB/RB move down/up in both modes, so height can be corrected while rotating;
the triggers close (RT) and open (LT) the gripper proportionally. A saves the episode,
B discards it, Start stops the session, X takes over from a policy or hands back. On two arms
(``switch_arms``) the right stick's click hands the pad to the other arm.

Keyboard (while held, in the live view's window): w/s x, a/d y, r/f z, q/e yaw (q = left),
up/down arrows pitch (up = nose down, like pushing a stick forward), right/left arrows roll,
space opens and c closes the gripper; Enter saves, Backspace discards, Esc stops; on two arms
Tab hands the keys to the other arm.

Every binding lives in :mod:`.key_bindings`, which the live view's key map and ``--help`` show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import DeviceError, missing_extra
from ..interfaces import Event
from ..key_bindings import (
    KEYBOARD,
    PAD_ARM_BUTTON,
    PAD_DOWN_BUTTON,
    PAD_ROTATION_BUTTON,
    PAD_SESSION_BUTTONS,
    PAD_UP_BUTTON,
    XBOX_BUTTONS,
    Controls,
)
from ..live_view import active_view


def _pygame() -> Any:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError:
        raise missing_extra("pygame", "viewer") from None
    return pygame


def _init_event_pump(pygame: Any) -> None:
    """Initialise what ``pygame.event.pump`` needs; it refuses to run without a video subsystem."""
    if pygame.display.get_init():
        return
    try:
        pygame.display.init()
    except pygame.error:
        # A headless robot PC has no display server, yet joystick state only refreshes through
        # the event pump; SDL's dummy video driver is enough for that.
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        pygame.display.init()


@dataclass
class EEFVelocityCommand:
    """One tick of operator input: end-effector velocities in the robot base frame."""

    linear: np.ndarray = field(default_factory=lambda: np.zeros(3))  # m/s: +x fwd, +y left, +z up
    angular: np.ndarray = field(default_factory=lambda: np.zeros(3))  # rad/s: roll, pitch, yaw
    gripper_delta: float = 0.0  # per second, positive opens
    events: set[Event] = field(default_factory=set)
    switch_arm: bool = False  # the arm key/button went down: drive the other arm (two arms)


@dataclass
class GamepadMapping:
    """Where each control sits on the SDL joystick; indices are pygame joystick axis/button numbers.

    Sticks follow the SDL convention (up and left read negative); list an axis in
    ``inverted_axes`` for a pad that reports it the other way round. Triggers rest at -1
    and read +1 when fully pulled.
    """

    left_x: int = 0
    left_y: int = 1
    left_trigger: int = 2
    right_x: int = 3
    right_y: int = 4
    right_trigger: int = 5
    save_button: int = XBOX_BUTTONS[PAD_SESSION_BUTTONS[Event.SAVE_EPISODE]]  # A
    discard_button: int = XBOX_BUTTONS[PAD_SESSION_BUTTONS[Event.DISCARD_EPISODE]]  # B
    intervene_button: int = XBOX_BUTTONS[PAD_SESSION_BUTTONS[Event.INTERVENE]]  # X: take over / hand back
    rotation_button: int = XBOX_BUTTONS[PAD_ROTATION_BUTTON]  # Y
    down_button: int = XBOX_BUTTONS[PAD_DOWN_BUTTON]  # LB
    up_button: int = XBOX_BUTTONS[PAD_UP_BUTTON]  # RB
    stop_button: int = XBOX_BUTTONS[PAD_SESSION_BUTTONS[Event.STOP]]  # Start
    skip_button: int = XBOX_BUTTONS[PAD_SESSION_BUTTONS[Event.SKIP_TASK]]  # Back: skip the instruction
    arm_button: int = XBOX_BUTTONS[PAD_ARM_BUTTON]  # right stick click: the other arm (two arms)
    inverted_axes: frozenset[int] = frozenset()


def _stick(x: float, y: float, deadzone: float) -> tuple[float, float]:
    """Radial dead zone rescaled so output starts at 0 at its edge and reaches 1 at full deflection.

    Radial rather than per-axis so that pushing straight ahead does not drift sideways.
    """
    mag = float(np.hypot(x, y))
    if mag <= deadzone:
        return 0.0, 0.0
    scale = min(1.0, (mag - deadzone) / (1.0 - deadzone)) / mag
    return x * scale, y * scale


def _trigger(value: float, deadzone: float) -> float:
    """Trigger pull in [0, 1] from its raw [-1, 1] range, dead zone removed and rescaled."""
    pull = (value + 1.0) / 2.0
    if pull <= deadzone:
        return 0.0
    return min(1.0, (pull - deadzone) / (1.0 - deadzone))


class GamepadInput:
    """A game controller read through pygame's joystick API, polled once per control tick.

    ``switch_arms``: the pad drives one of two arms, and ``arm_button`` asks for the other
    (it must then exist on the pad); otherwise that button does nothing.
    """

    device_type = "gamepad"

    def __init__(self, index: int = 0, mapping: GamepadMapping | None = None, deadzone: float = 0.1,
                 max_linear: float = 0.15, max_angular: float = 0.8, max_gripper: float = 1.0,
                 switch_arms: bool = False) -> None:
        if not 0.0 <= deadzone < 1.0:
            raise ValueError(f"deadzone must be in [0, 1), got {deadzone}")
        self.index = index
        self.mapping = mapping or GamepadMapping()
        self.deadzone = deadzone
        self.max_linear = max_linear
        self.max_angular = max_angular
        self.max_gripper = max_gripper
        self.switch_arms = switch_arms
        self.rotation_mode = False
        self._joystick: Any = None
        self._instance_id = -1
        self._buttons: dict[int, bool] = {}
        # A trigger may read 0 (half pulled) until its first report after connecting; it is
        # ignored until seen at rest so that the gripper does not creep on its own.
        self._trigger_armed: dict[int, bool] = {}

    def open(self) -> None:
        pygame = _pygame()
        _init_event_pump(pygame)
        pygame.joystick.init()
        if active_view() is None:  # the view's thread pumps when it is open (SDL wants the window's thread)
            pygame.event.pump()
        count = pygame.joystick.get_count()
        if count == 0:
            raise DeviceError("no gamepad found (pygame sees 0 joysticks); plug one in or use --device keyboard")
        if not 0 <= self.index < count:
            raise DeviceError(f"no gamepad at index {self.index} (pygame sees {count} joysticks: 0..{count - 1})")
        joystick = pygame.joystick.Joystick(self.index)
        joystick.init()
        m = self.mapping
        needed_axes = max(m.left_x, m.left_y, m.left_trigger, m.right_x, m.right_y, m.right_trigger) + 1
        needed_buttons = max(m.save_button, m.discard_button, m.rotation_button, m.down_button,
                             m.up_button, m.stop_button, *((m.arm_button,) if self.switch_arms else ())) + 1
        if joystick.get_numaxes() < needed_axes or joystick.get_numbuttons() < needed_buttons:
            raise DeviceError(
                f"gamepad {joystick.get_name()!r} has {joystick.get_numaxes()} axes and "
                f"{joystick.get_numbuttons()} buttons; the mapping needs {needed_axes} and {needed_buttons}"
            )
        self._joystick = joystick
        self._instance_id = joystick.get_instance_id()
        self.rotation_mode = False
        # A button already held when the device opens is not a press.
        self._buttons = {b: bool(joystick.get_button(b)) for b in range(joystick.get_numbuttons())}
        self._trigger_armed = {m.left_trigger: False, m.right_trigger: False}

    @property
    def name(self) -> str:
        return self._joystick.get_name() if self._joystick is not None else ""

    def _axis(self, axis: int) -> float:
        value = float(self._joystick.get_axis(axis))
        return -value if axis in self.mapping.inverted_axes else value

    def _pressed(self, button: int) -> bool:
        """True on the tick a button goes down (edge-triggered, so holding it fires once)."""
        down = bool(self._joystick.get_button(button))
        was = self._buttons.get(button, False)
        self._buttons[button] = down
        return down and not was

    def _trigger_pull(self, axis: int) -> float:
        value = self._axis(axis)
        if not self._trigger_armed.get(axis, True):
            if value > -0.5:
                return 0.0
            self._trigger_armed[axis] = True
        return _trigger(value, self.deadzone)

    def read(self) -> EEFVelocityCommand:
        if self._joystick is None:
            raise DeviceError("gamepad is not open; call open() first")
        pygame = _pygame()
        # Only removal events are taken off the queue (the live view leaves them there). With the
        # view open its thread pumps SDL, which must happen on the thread that owns the window.
        for ev in pygame.event.get(pygame.JOYDEVICEREMOVED, pump=active_view() is None):
            if ev.instance_id == self._instance_id:
                self._joystick = None
                raise DeviceError("gamepad disconnected; plug it back in and restart, or use --device keyboard")
        m = self.mapping
        cmd = EEFVelocityCommand()
        if self._pressed(m.rotation_button):
            self.rotation_mode = not self.rotation_mode
        for button, event in ((m.save_button, Event.SAVE_EPISODE), (m.discard_button, Event.DISCARD_EPISODE),
                              (m.stop_button, Event.STOP), (m.intervene_button, Event.INTERVENE),
                              (m.skip_button, Event.SKIP_TASK)):
            if self._pressed(button):
                cmd.events.add(event)
        cmd.switch_arm = self.switch_arms and self._pressed(m.arm_button)
        lx, ly = _stick(self._axis(m.left_x), self._axis(m.left_y), self.deadzone)
        rx, ry = _stick(self._axis(m.right_x), self._axis(m.right_y), self.deadzone)
        # SDL sticks read negative when pushed up or left.
        if self.rotation_mode:
            cmd.angular[:] = (lx, -ly, -rx)
            cmd.angular *= self.max_angular
            vertical = 0.0
        else:
            cmd.linear[:2] = (-ly, -lx)
            vertical = -ry
        vertical += float(self._joystick.get_button(m.up_button)) - float(self._joystick.get_button(m.down_button))
        cmd.linear[2] = np.clip(vertical, -1.0, 1.0)
        cmd.linear *= self.max_linear
        grip = self._trigger_pull(m.left_trigger) - self._trigger_pull(m.right_trigger)
        cmd.gripper_delta = grip * self.max_gripper
        return cmd

    def close(self) -> None:
        if self._joystick is not None:
            self._joystick.quit()
            self._joystick = None

    def __enter__(self) -> GamepadInput:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class KeyboardInput:
    """Keys held in the live view's window drive the end effector at fixed speeds.

    The window is the live view's (pygame has one display, and a window of its own would
    show nothing): its thread hands the keys to this device, session keys go to the session.
    Without a live view the keys come from pygame's event queue, which only ``pygame.event.post``
    fills (scripts, tests): ``collect`` therefore always opens the view for this device.
    ``switch_arms``: the keys drive one of two arms, and the controls' ``arm_key`` asks for the other.
    """

    device_type = "keyboard"

    def __init__(self, step_linear: float = 0.1, step_angular: float = 0.5, step_gripper: float = 1.0,
                 controls: Controls = KEYBOARD, switch_arms: bool = False) -> None:
        self.step_linear = step_linear
        self.step_angular = step_angular
        self.step_gripper = step_gripper
        self.controls = controls
        self.switch_arms = switch_arms
        self._arm_key_down = False
        self._motion = controls.motion_keys()
        self._session = controls.session_keys()
        self._window: object = None
        self._held: set[str] = set()
        self._open = False

    @property
    def in_window(self) -> bool:
        """True when the keys come from the live view's window."""
        return self._window is not None

    def open(self) -> None:
        view = active_view()
        if view is not None:
            if not view.controls.motion:
                raise DeviceError(
                    f"the live view is open with the {view.controls.device} key map, whose keys would not reach "
                    "the keyboard device; open it with controls=key_bindings.KEYBOARD"
                )
            self._window = view.keys
        else:
            self._window = None
            _init_event_pump(_pygame())
        self._held.clear()
        self._arm_key_down = False
        self._open = True

    def _queued_keys(self, cmd: EEFVelocityCommand) -> set[str]:
        """Keys down from pygame's own event queue (no live view); session keys become events."""
        pygame = _pygame()
        tapped: set[str] = set()
        # Key state comes from the event stream rather than key.get_pressed() so that events
        # posted by scripts and tests count the same as real keys.
        for ev in pygame.event.get((pygame.KEYDOWN, pygame.KEYUP, pygame.QUIT, pygame.WINDOWFOCUSLOST)):
            if ev.type == pygame.KEYDOWN:
                name = pygame.key.name(ev.key)
                if name in self._session:
                    cmd.events.add(self._session[name])
                else:
                    self._held.add(name)
                    tapped.add(name)
            elif ev.type == pygame.KEYUP:
                self._held.discard(pygame.key.name(ev.key))
            elif ev.type == pygame.QUIT:
                cmd.events.add(Event.STOP)
            else:
                # Key releases made while another window has focus never arrive; without this a
                # key held when focus moved would keep the arm moving.
                self._held.clear()
                tapped.clear()
        return self._held | tapped

    def read(self) -> EEFVelocityCommand:
        if not self._open:
            raise DeviceError("keyboard input is not open; call open() first")
        cmd = EEFVelocityCommand()
        keys = self._window.take() if self._window is not None else self._queued_keys(cmd)
        if self.switch_arms:
            # On the key's way down only: held, it would hand the keys back and forth every tick.
            down = bool(self.controls.arm_key) and self.controls.arm_key in keys
            cmd.switch_arm, self._arm_key_down = down and not self._arm_key_down, down
        gripper = 0
        for name in keys:
            m = self._motion.get(name)
            if m is None:
                continue
            if m.quantity == "linear":
                cmd.linear[m.axis] += m.sign * self.step_linear
            elif m.quantity == "angular":
                cmd.angular[m.axis] += m.sign * self.step_angular
            else:
                gripper += m.sign
        cmd.gripper_delta = gripper * self.step_gripper
        return cmd

    def close(self) -> None:
        self._held.clear()
        self._window = None
        self._open = False

    def __enter__(self) -> KeyboardInput:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
