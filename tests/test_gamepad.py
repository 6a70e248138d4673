"""Gamepad and keyboard teleop input, driven through SDL itself.

The gamepad is an SDL virtual joystick attached through the very SDL library pygame loaded,
so the code under test reads it through the same joystick API and event pump as real hardware.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
pygame = pytest.importorskip("pygame")

from telecorder.collect.devices.gamepad import (  # noqa: E402
    EEFVelocityCommand,
    GamepadInput,
    GamepadMapping,
    KeyboardInput,
)
from telecorder.collect.devices.keyboard import parse_keys  # noqa: E402
from telecorder.collect.interfaces import Event  # noqa: E402
from telecorder.collect.key_bindings import (  # noqa: E402
    ALL_CONTROLS,
    GAMEPAD,
    KEYBOARD,
    XBOX_BUTTONS,
    Controls,
    controls_for,
    key_label,
    terminal_bytes,
)
from telecorder.collect.live_view import LiveView, active_view  # noqa: E402
from telecorder.errors import DeviceError  # noqa: E402

SDL_JOYSTICK_TYPE_GAMECONTROLLER = 1
AXIS_MIN, AXIS_MAX = -32768, 32767
M = GamepadMapping()


@pytest.fixture
def pg() -> Iterator[object]:
    pygame.display.init()
    pygame.joystick.init()
    yield pygame
    pygame.event.clear()
    pygame.quit()


def _loaded_sdl() -> ctypes.CDLL | None:
    """The SDL2 shared library pygame has mapped into this process, not merely one on disk.

    A second copy of SDL would hold its own joystick list, invisible to pygame.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libSDL2-2" in line or "/libSDL2.so" in line}
    except OSError:
        return None
    paths = {p for p in paths if os.path.exists(p)}
    if len(paths) != 1:
        return None
    sdl = ctypes.CDLL(paths.pop())
    sdl.SDL_JoystickAttachVirtual.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    sdl.SDL_JoystickAttachVirtual.restype = ctypes.c_int
    sdl.SDL_JoystickDetachVirtual.argtypes = [ctypes.c_int]
    sdl.SDL_JoystickOpen.argtypes = [ctypes.c_int]
    sdl.SDL_JoystickOpen.restype = ctypes.c_void_p
    sdl.SDL_JoystickClose.argtypes = [ctypes.c_void_p]
    sdl.SDL_JoystickSetVirtualAxis.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int16]
    sdl.SDL_JoystickSetVirtualButton.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint8]
    sdl.SDL_GetError.restype = ctypes.c_char_p
    return sdl


class VirtualPad:
    def __init__(self, sdl: ctypes.CDLL, index: int, handle: int) -> None:
        self.sdl, self.index, self.handle = sdl, index, handle
        self.attached = True

    def axis(self, axis: int, value: int) -> None:
        assert self.sdl.SDL_JoystickSetVirtualAxis(self.handle, axis, value) == 0

    def button(self, button: int, down: bool) -> None:
        assert self.sdl.SDL_JoystickSetVirtualButton(self.handle, button, int(down)) == 0

    def detach(self) -> None:
        if self.attached:
            self.sdl.SDL_JoystickClose(self.handle)
            self.sdl.SDL_JoystickDetachVirtual(self.index)
            self.attached = False


def attach_virtual_pad(*, at_rest: bool = True) -> VirtualPad:
    """An SDL virtual Xbox pad, opened; skips the test where this SDL cannot make one.

    SDL lays a virtual controller out in GameController order and starts its axes 4 and 5
    (triggers there) at -32768; ``at_rest`` sets the raw indices to the default mapping's
    resting pad instead: sticks centred, triggers released.
    """
    sdl = _loaded_sdl()
    if sdl is None:
        pytest.skip("cannot locate the one SDL2 library pygame loaded in /proc/self/maps")
    index = sdl.SDL_JoystickAttachVirtual(SDL_JOYSTICK_TYPE_GAMECONTROLLER, 6, 11, 1)
    if index < 0:
        pytest.skip(f"SDL_JoystickAttachVirtual failed: {sdl.SDL_GetError().decode(errors='replace')}")
    handle = sdl.SDL_JoystickOpen(index)
    if not handle:
        sdl.SDL_JoystickDetachVirtual(index)
        pytest.skip(f"SDL_JoystickOpen on the virtual joystick failed: {sdl.SDL_GetError().decode(errors='replace')}")
    vp = VirtualPad(sdl, index, handle)
    if at_rest:
        for axis in (M.left_x, M.left_y, M.right_x, M.right_y):
            vp.axis(axis, 0)
        vp.axis(M.left_trigger, AXIS_MIN)
        vp.axis(M.right_trigger, AXIS_MIN)
    return vp


@pytest.fixture
def pad(pg: object) -> Iterator[VirtualPad]:
    vp = attach_virtual_pad()
    yield vp
    vp.detach()


def _zero(cmd: EEFVelocityCommand) -> bool:
    return not cmd.linear.any() and not cmd.angular.any() and cmd.gripper_delta == 0.0 and not cmd.events


def test_gamepad_sticks_deadzone_and_full_deflection(pad: VirtualPad) -> None:
    with GamepadInput(index=pad.index, deadzone=0.1, max_linear=0.15, max_angular=0.8) as gp:
        assert gp.name
        assert _zero(gp.read())
        # Inside the dead zone: nothing.
        pad.axis(M.left_x, int(0.08 * AXIS_MAX))
        pad.axis(M.left_y, int(-0.05 * AXIS_MAX))
        assert _zero(gp.read())
        # Full up on the left stick: full speed forward, no sideways drift.
        pad.axis(M.left_x, 0)
        pad.axis(M.left_y, AXIS_MIN)
        cmd = gp.read()
        np.testing.assert_allclose(cmd.linear, [0.15, 0.0, 0.0], atol=1e-4)
        # Full left: +y. Half right: rescaled from the dead zone's edge.
        pad.axis(M.left_y, 0)
        pad.axis(M.left_x, AXIS_MIN)
        np.testing.assert_allclose(gp.read().linear, [0.0, 0.15, 0.0], atol=1e-4)
        pad.axis(M.left_x, AXIS_MAX // 2)
        np.testing.assert_allclose(gp.read().linear, [0.0, -0.15 * (0.5 - 0.1) / 0.9, 0.0], atol=1e-3)
        # Right stick up: +z; shoulders add the same vertical command, clipped to the maximum.
        pad.axis(M.left_x, 0)
        pad.axis(M.right_y, AXIS_MIN)
        np.testing.assert_allclose(gp.read().linear, [0.0, 0.0, 0.15], atol=1e-4)
        pad.button(M.up_button, True)
        np.testing.assert_allclose(gp.read().linear, [0.0, 0.0, 0.15], atol=1e-4)
        pad.axis(M.right_y, 0)
        pad.button(M.up_button, False)
        pad.button(M.down_button, True)
        np.testing.assert_allclose(gp.read().linear, [0.0, 0.0, -0.15], atol=1e-6)
        pad.button(M.down_button, False)
        assert _zero(gp.read())


def test_gamepad_triggers_drive_gripper(pad: VirtualPad) -> None:
    with GamepadInput(index=pad.index, max_gripper=2.0) as gp:
        assert gp.read().gripper_delta == 0.0
        pad.axis(M.left_trigger, AXIS_MAX)
        assert gp.read().gripper_delta == pytest.approx(2.0, abs=1e-3)
        pad.axis(M.left_trigger, AXIS_MIN)
        pad.axis(M.right_trigger, AXIS_MAX)
        assert gp.read().gripper_delta == pytest.approx(-2.0, abs=1e-3)


def test_gamepad_ignores_trigger_until_seen_at_rest(pg: object) -> None:
    vp = attach_virtual_pad(at_rest=False)
    try:
        with GamepadInput(index=vp.index) as gp:
            # Axes of a fresh device read 0, which for a trigger would be half pulled.
            assert gp.read().gripper_delta == 0.0
            vp.axis(M.left_trigger, AXIS_MIN)
            assert gp.read().gripper_delta == 0.0
            vp.axis(M.left_trigger, AXIS_MAX)
            assert gp.read().gripper_delta == pytest.approx(1.0, abs=1e-3)
    finally:
        vp.detach()


def test_gamepad_buttons_are_edge_triggered(pad: VirtualPad) -> None:
    with GamepadInput(index=pad.index) as gp:
        for button, event in ((M.save_button, Event.SAVE_EPISODE), (M.discard_button, Event.DISCARD_EPISODE),
                              (M.stop_button, Event.STOP)):
            pad.button(button, True)
            assert gp.read().events == {event}
            assert gp.read().events == set()  # still held: no repeat
            pad.button(button, False)
            assert gp.read().events == set()
            pad.button(button, True)
            assert gp.read().events == {event}
            pad.button(button, False)
            gp.read()


def test_gamepad_button_held_at_open_does_not_fire(pad: VirtualPad) -> None:
    pad.button(M.save_button, True)
    pygame.event.pump()
    with GamepadInput(index=pad.index) as gp:
        assert gp.read().events == set()
        pad.button(M.save_button, False)
        gp.read()
        pad.button(M.save_button, True)
        assert gp.read().events == {Event.SAVE_EPISODE}


def test_gamepad_rotation_mode_toggles(pad: VirtualPad) -> None:
    with GamepadInput(index=pad.index, max_linear=0.15, max_angular=0.8) as gp:
        pad.axis(M.left_y, AXIS_MIN)
        assert not gp.rotation_mode
        np.testing.assert_allclose(gp.read().linear, [0.15, 0, 0], atol=1e-4)
        pad.button(M.rotation_button, True)
        cmd = gp.read()
        assert gp.rotation_mode
        np.testing.assert_allclose(cmd.linear, 0.0)
        np.testing.assert_allclose(cmd.angular, [0.0, 0.8, 0.0], atol=1e-4)  # stick up: +pitch
        pad.button(M.rotation_button, False)
        pad.axis(M.left_y, 0)
        pad.axis(M.left_x, AXIS_MAX)
        pad.axis(M.right_x, AXIS_MIN)
        cmd = gp.read()
        assert gp.rotation_mode  # releasing the button does not toggle back
        np.testing.assert_allclose(cmd.angular, [0.8, 0.0, 0.8], atol=1e-4)  # right: +roll, left: +yaw
        pad.button(M.up_button, True)
        np.testing.assert_allclose(gp.read().linear, [0, 0, 0.15], atol=1e-6)  # height still adjustable
        pad.button(M.up_button, False)
        pad.button(M.rotation_button, True)
        cmd = gp.read()
        assert not gp.rotation_mode
        np.testing.assert_allclose(cmd.angular, 0.0)
        np.testing.assert_allclose(cmd.linear, [0.0, -0.15, 0.0], atol=1e-4)


def test_gamepad_inverted_axis(pad: VirtualPad) -> None:
    mapping = GamepadMapping(inverted_axes=frozenset({M.left_y}))
    with GamepadInput(index=pad.index, mapping=mapping) as gp:
        pad.axis(M.left_y, AXIS_MIN)
        np.testing.assert_allclose(gp.read().linear, [-0.15, 0, 0], atol=1e-4)


def test_gamepad_unplugged_while_reading(pad: VirtualPad) -> None:
    with GamepadInput(index=pad.index) as gp:
        gp.read()
        pad.detach()
        with pytest.raises(DeviceError, match="disconnected"):
            gp.read()


def test_no_gamepad(pg: object) -> None:
    pygame.event.pump()
    if pygame.joystick.get_count():
        pytest.skip("a joystick is attached to this machine")
    with pytest.raises(DeviceError) as info:
        GamepadInput().open()
    assert str(info.value) == (
        "no gamepad found (pygame sees 0 joysticks); plug one in or use --device keyboard"
    )


def test_gamepad_mapping_larger_than_device(pad: VirtualPad) -> None:
    with pytest.raises(DeviceError, match="the mapping needs"):
        GamepadInput(index=pad.index, mapping=GamepadMapping(stop_button=20)).open()


def _key(kind: int, key: int) -> None:
    pygame.event.post(pygame.event.Event(kind, key=key, mod=0, unicode="", scancode=0))


def test_keyboard_held_keys(pg: object) -> None:
    with KeyboardInput(step_linear=0.1, step_angular=0.5, step_gripper=2.0) as kb:
        assert _zero(kb.read())
        _key(pygame.KEYDOWN, pygame.K_w)
        _key(pygame.KEYDOWN, pygame.K_a)
        cmd = kb.read()
        np.testing.assert_allclose(cmd.linear, [0.1, 0.1, 0.0])
        # Still held on later ticks with no new events.
        np.testing.assert_allclose(kb.read().linear, [0.1, 0.1, 0.0])
        _key(pygame.KEYUP, pygame.K_a)
        _key(pygame.KEYDOWN, pygame.K_f)
        _key(pygame.KEYDOWN, pygame.K_q)
        _key(pygame.KEYDOWN, pygame.K_UP)
        _key(pygame.KEYDOWN, pygame.K_LEFT)
        _key(pygame.KEYDOWN, pygame.K_SPACE)
        cmd = kb.read()
        np.testing.assert_allclose(cmd.linear, [0.1, 0.0, -0.1])
        np.testing.assert_allclose(cmd.angular, [-0.5, 0.5, 0.5])
        assert cmd.gripper_delta == 2.0
        # Opposite keys cancel.
        _key(pygame.KEYDOWN, pygame.K_c)
        _key(pygame.KEYDOWN, pygame.K_s)
        cmd = kb.read()
        assert cmd.gripper_delta == 0.0 and cmd.linear[0] == 0.0
        for k in (pygame.K_w, pygame.K_s, pygame.K_f, pygame.K_q, pygame.K_UP, pygame.K_LEFT, pygame.K_SPACE,
                  pygame.K_c):
            _key(pygame.KEYUP, k)
        assert _zero(kb.read())


def test_keyboard_episode_keys(pg: object) -> None:
    with KeyboardInput() as kb:
        assert not kb.in_window  # no live view: keys come from pygame's queue
        _key(pygame.KEYDOWN, pygame.K_RETURN)
        assert kb.read().events == {Event.SAVE_EPISODE}
        assert kb.read().events == set()
        _key(pygame.KEYUP, pygame.K_RETURN)
        # The terminal's n / r / q are nothing, a move and a turn here: never a session event.
        for key in (pygame.K_n, pygame.K_r, pygame.K_q):
            _key(pygame.KEYDOWN, key)
        cmd = kb.read()
        assert cmd.events == set() and cmd.linear[2] > 0 and cmd.angular[2] > 0
        for key in (pygame.K_n, pygame.K_r, pygame.K_q):
            _key(pygame.KEYUP, key)
        assert _zero(kb.read())
        _key(pygame.KEYDOWN, pygame.K_BACKSPACE)
        assert kb.read().events == {Event.DISCARD_EPISODE}
        _key(pygame.KEYDOWN, pygame.K_ESCAPE)
        assert kb.read().events == {Event.STOP}
        pygame.event.post(pygame.event.Event(pygame.QUIT))
        assert kb.read().events == {Event.STOP}
        _key(pygame.KEYDOWN, pygame.K_i)  # take over from a policy / hand back
        assert kb.read().events == {Event.INTERVENE}


def test_keyboard_focus_loss_releases_keys(pg: object) -> None:
    with KeyboardInput() as kb:
        _key(pygame.KEYDOWN, pygame.K_d)
        assert kb.read().linear[1] < 0
        pygame.event.post(pygame.event.Event(pygame.WINDOWFOCUSLOST))
        assert _zero(kb.read())


def test_keyboard_tap_moves_for_one_tick(pg: object) -> None:
    with KeyboardInput(step_linear=0.1) as kb:
        _key(pygame.KEYDOWN, pygame.K_w)
        _key(pygame.KEYUP, pygame.K_w)  # pressed and released between two ticks
        np.testing.assert_allclose(kb.read().linear, [0.1, 0.0, 0.0])
        assert _zero(kb.read())


def _until(check: Callable[[], object], what: str, timeout_s: float = 30.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def no_display() -> Iterator[None]:
    """pygame without a display: the live view's thread opens it, in its thread."""
    pygame.quit()
    yield
    pygame.quit()


def test_keyboard_reads_keys_from_the_live_view_window(no_display: None) -> None:
    """The view owns the window: motion keys reach the device, session keys the session, never both."""
    with LiveView([], controls=KEYBOARD) as view:
        assert view.wait_open() and active_view() is view
        with KeyboardInput(step_linear=0.1, step_angular=0.5) as kb:
            assert kb.in_window
            _key(pygame.KEYDOWN, pygame.K_w)
            _key(pygame.KEYDOWN, pygame.K_q)
            cmd = _until(lambda: (c := kb.read()).linear[0] > 0 and c, "w to reach the device")
            _until(lambda: kb.read().angular[2] > 0, "q to reach the device")
            _key(pygame.KEYDOWN, pygame.K_RETURN)
            _key(pygame.KEYDOWN, pygame.K_i)
            events: set[Event] = set()
            _until(lambda: (events.update(view.poll()), len(events) == 2)[1], "Enter and i to reach the session")
            assert events == {Event.SAVE_EPISODE, Event.INTERVENE}
            assert kb.read().events == set() and cmd.events == set()
            pygame.event.post(pygame.event.Event(pygame.WINDOWFOCUSLOST))
            _until(lambda: _zero(kb.read()), "focus loss to release the held keys")
            assert view.poll() == set(), "w and q are motion keys, never session events"
    assert active_view() is None


def test_keyboard_refuses_a_view_without_its_key_map(no_display: None) -> None:
    with LiveView([]) as view:  # the terminal's map: r re-records there
        assert view.wait_open()
        with pytest.raises(DeviceError, match="key map"):
            KeyboardInput().open()


@pytest.mark.parametrize("controls", ALL_CONTROLS, ids=lambda c: c.device)
def test_session_keys_never_collide_with_motion_keys(controls: Controls, pg: object) -> None:
    session = [k for keys in controls.session.values() for k in keys]
    assert len(session) == len(set(session)), "a key bound to two session events"
    assert not set(session) & set(controls.motion_keys()), "a session key moves the arm"
    assert len(controls.motion_keys()) == len(controls.motion), "a motion key bound twice"
    # Every name is a key pygame knows, and the terminal can tell the session keys apart.
    for key in [*session, *controls.motion_keys()]:
        assert pygame.key.key_code(key) and pygame.key.name(pygame.key.key_code(key)) == key
    seqs = [seq for k in session for seq in terminal_bytes(k)]
    assert len(seqs) == len(set(seqs))
    # What the terminal reads and what the window shows are the same bindings.
    for key, event in controls.session_keys().items():
        assert parse_keys(terminal_bytes(key)[0], controls) == [event]
        assert key_label(key) in " ".join(controls.map_lines())
    for m in controls.motion:
        assert parse_keys(terminal_bytes(m.key)[0], controls) == []


def test_gamepad_session_buttons_never_collide_with_motion_buttons() -> None:
    m = GamepadMapping()
    session = [m.save_button, m.discard_button, m.stop_button, m.intervene_button]
    assert len(set(session)) == 4 and not set(session) & {m.rotation_button, m.down_button, m.up_button}
    assert {b: XBOX_BUTTONS[name] for b, name in zip(session, ("A", "B", "Start", "X"), strict=True)} == \
        {b: b for b in session}, "the mapping's buttons are the ones the key map names"


def test_controls_per_device() -> None:
    assert controls_for("keyboard") is KEYBOARD and controls_for("gamepad") is GAMEPAD
    assert controls_for("policy", "keyboard") is KEYBOARD and controls_for("policy", "expert").device == "terminal"
    assert controls_for("leader_arm").session[Event.SAVE_EPISODE] == ("n", "right")
    assert KEYBOARD.needs_window and not GAMEPAD.needs_window
    assert KEYBOARD.view_by_default and GAMEPAD.view_by_default and not controls_for("scripted").view_by_default


def test_read_before_open() -> None:
    with pytest.raises(DeviceError):
        GamepadInput().read()
    with pytest.raises(DeviceError):
        KeyboardInput().read()


@pytest.mark.slow
def test_gamepad_without_a_display_records_with_a_warning(pad: VirtualPad, tmp_path, monkeypatch) -> None:
    """A headless robot PC with a pad: the joystick still steers, so the session records and says why no view."""
    pytest.importorskip("mujoco")
    import io

    from rich.console import Console

    from telecorder.collect.factory import DeviceConfig, make_devices
    from telecorder.collect.session import RecordingSession, SessionConfig
    from telecorder.datasets import Dataset

    for var in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    pad.axis(M.left_y, AXIS_MIN)  # stick forward: +x
    robot, teleop, cameras = make_devices(DeviceConfig(device="gamepad", sim_cameras=[], fps=20))
    out = io.StringIO()
    RecordingSession(robot, teleop, cameras, SessionConfig(out=tmp_path / "pad", episodes=1, episode_time_s=1.0,
                                                           reset_time_s=0, fps=20, display=True),
                     console=Console(file=out, width=200)).run()
    text = " ".join(out.getvalue().split())
    assert "warning: no live view (there is no display here (DISPLAY and WAYLAND_DISPLAY are unset" in text
    assert "recording without it" in text and active_view() is None
    with Dataset.open(tmp_path / "pad").episode(0) as ep:
        eef = ep.numeric("action_eef")
    assert eef[-1, 0] - eef[0, 0] > 0.05, "the stick steered without the view"


def test_gamepad_with_the_live_view_open_reads_what_the_view_pumps(no_display: None) -> None:
    """With the view open only its thread pumps SDL: stick moves and an unplug must still reach the pad."""
    with LiveView([], controls=GAMEPAD) as view:
        assert view.wait_open()
        pygame.joystick.init()
        vp = attach_virtual_pad()
        try:
            with GamepadInput(index=vp.index) as gp:
                _until(lambda: _zero(gp.read()), "the pad at rest")
                vp.axis(M.left_y, AXIS_MIN)
                _until(lambda: gp.read().linear[0] > 0.1, "the stick's new position")
                vp.button(M.save_button, True)
                _until(lambda: gp.read().events == {Event.SAVE_EPISODE}, "the A press")
                vp.detach()
                with pytest.raises(DeviceError, match="disconnected"):
                    _until(lambda: gp.read() and False, "the unplug", timeout_s=30)
        finally:
            vp.detach()


def test_one_live_view_per_process(no_display: None) -> None:
    with LiveView([], controls=KEYBOARD) as first:
        assert first.wait_open()
        with LiveView([]) as second:
            assert not second.wait_open() and "another live view" in (second.error or "")
        drawn = first.frames_drawn
        _until(lambda: first.frames_drawn > drawn + 2, "the first view to keep drawing")
        assert active_view() is first and pygame.display.get_init()
