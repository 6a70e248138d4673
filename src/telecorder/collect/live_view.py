"""The live view: one window with the instruction, the camera feeds, the episode status and the key map.

The instruction of the episode (a task list's, or ``--task``) is drawn in large type above
the cameras, before the episode (``next: ...``) and while it runs, so that the person at the
robot always sees what to do.

pygame has one display per process, so this window is also where the keyboard device's
keys arrive: the view's thread owns the window, pumps its events, turns the session keys
of the active :class:`~.key_bindings.Controls` into session events (:meth:`LiveView.poll`)
and hands every other key to :class:`WindowKeys`, which the keyboard device reads. It also
pumps often enough (every few ms) that a gamepad's state stays fresh while it is open.

Drawing runs at a low rate (10 Hz by default) and only ever reads the newest frame of each
camera, so the view can skip frames but never holds the control loop.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import CameraError, TelecorderError, missing_extra
from .interfaces import Camera, Event
from .key_bindings import TERMINAL, Controls

_STATUS_H = 28
_BANNER_H = 52  # the instruction band above the cameras
_BANNER_FONT = 40
_LINE_H = 22  # key map line pitch; the font is 20 px, so lines never touch
_PUMP_S = 0.005  # event pump period: key and joystick state stay fresh between drawn frames
_BACKGROUND = (20, 20, 24)
_KEYMAP_BG = (32, 32, 40)

# The window's X11 WM_CLASS, which window-manager rules (and xdotool) match; SDL reads it only if
# set before pygame is first imported, hence here.
os.environ.setdefault("SDL_VIDEO_X11_WMCLASS", "telecorder")
# With a window open SDL drops joystick input while that window lacks focus, and an operator
# watching the view may well have the terminal focused; SDL reads this when joysticks start.
os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")

_active_lock = threading.Lock()
_active: LiveView | None = None


def active_view() -> LiveView | None:
    """The live view whose window is open in this process, if any (pygame has one display)."""
    return _active


def display_missing() -> str | None:
    """Why no window can open here, when the environment already says so; None if one may."""
    driver = os.environ.get("SDL_VIDEODRIVER", "")
    if driver in ("dummy", "offscreen"):
        return f"SDL_VIDEODRIVER={driver} draws into memory, not on a screen"
    if sys.platform.startswith("linux") and not driver and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display here (DISPLAY and WAYLAND_DISPLAY are unset, e.g. an ssh session without -X)"
    return None


class WindowKeys:
    """Keys held in the live view's window, shared with the keyboard device (thread-safe).

    A key pressed and released between two reads (a tap) still counts as held for one read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._tapped: set[str] = set()

    def press(self, key: str) -> None:
        with self._lock:
            self._held.add(key)
            self._tapped.add(key)

    def release(self, key: str) -> None:
        with self._lock:
            self._held.discard(key)

    def release_all(self) -> None:
        """Focus moved away: releases made in another window never arrive, so forget every key."""
        with self._lock:
            self._held.clear()
            self._tapped.clear()

    def take(self) -> set[str]:
        """Keys down now or tapped since the last call."""
        with self._lock:
            keys = self._held | self._tapped
            self._tapped.clear()
        return keys


@dataclass
class ViewLayout:
    size: tuple[int, int]
    tiles: list[tuple[int, int, int, int]]  # x, y, w, h per camera
    status: tuple[int, int, int, int]
    keymap: tuple[int, int, int, int]
    banner: tuple[int, int, int, int] | None = None  # the instruction, above the cameras


def view_layout(n_cameras: int, n_keymap_lines: int, width: int = 960, instruction: bool = False) -> ViewLayout:
    """Where the view draws what: the instruction band (if any), camera tiles (up to 3 a row, 4:3), the
    status line, the key map."""
    tiles = []
    banner = (0, 0, width, _BANNER_H) if instruction else None
    y = _BANNER_H if instruction else 0
    if n_cameras:
        cols = min(n_cameras, 3)
        tile_w = width // cols
        tile_h = tile_w * 3 // 4
        tiles = [((k % cols) * tile_w, y + (k // cols) * tile_h, tile_w, tile_h) for k in range(n_cameras)]
        y += ((n_cameras + cols - 1) // cols) * tile_h
    status = (0, y, width, _STATUS_H)
    keymap = (0, y + _STATUS_H, width, n_keymap_lines * _LINE_H + 8)
    return ViewLayout((width, keymap[1] + keymap[3]), tiles, status, keymap, banner)


class LiveView:
    """The window, drawn and pumped by a thread of its own; use as a context manager."""

    def __init__(self, cameras: Sequence[Camera], *, fps: float = 10.0, width: int = 960,
                 controls: Controls = TERMINAL, title: str = "telecorder collect", instruction: bool = False) -> None:
        self.cameras, self.fps, self.width, self.controls = list(cameras), fps, width, controls
        self.status = "starting"
        # Whether the window has the instruction band (its size is fixed when it opens), and its text.
        self.has_instruction = instruction
        self.instruction = ""
        self.title = title
        self.keys = WindowKeys()
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._opened = threading.Event()  # set once the window is open, or failed to open
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.driver = ""
        self.frames_drawn = 0

    @property
    def visible(self) -> bool:
        """True when the window is on a screen (not SDL's dummy or offscreen driver)."""
        return self.error is None and self.driver not in ("", "dummy", "offscreen")

    def layout(self) -> ViewLayout:
        return view_layout(len(self.cameras), len(self.controls.map_lines()), self.width, self.has_instruction)

    def __enter__(self) -> LiveView:
        self._thread = threading.Thread(target=self._run, name="tc-live-view", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def wait_open(self, timeout_s: float = 60.0) -> bool:
        """Wait until the window opened (True) or could not (False, reason in ``error``)."""
        if not self._opened.wait(timeout_s):
            self.error = f"the window did not open within {timeout_s:g} s"
        return self.error is None

    def set_status(self, text: str) -> None:
        self.status = text

    def set_instruction(self, text: str) -> None:
        """The instruction drawn large above the cameras (a window opened with ``instruction=True``)."""
        self.instruction = text

    def set_title(self, text: str) -> None:
        """The window title; the view applies it on its next frame."""
        self.title = text

    def poll(self) -> set[Event]:
        with self._lock:
            events, self._events = set(self._events), []
        return events

    def _run(self) -> None:
        global _active
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
        except ImportError:
            self.error = str(missing_extra("pygame", "viewer"))
            self._opened.set()
            return
        missing = display_missing()
        if missing is not None and not os.environ.get("SDL_VIDEODRIVER"):
            # Without a display SDL would try other video back ends (a console's KMS device).
            self.error = missing
            self._opened.set()
            return
        with _active_lock:
            if _active is not None:
                self.error = "another live view is open in this process (pygame has one display)"
                self._opened.set()
                return
            _active = self
        try:
            pygame.display.init()
            pygame.font.init()
            layout = self.layout()
            screen = pygame.display.set_mode(layout.size)
            pygame.display.set_caption(self.title)
            font = pygame.font.Font(None, 20)
            self._big_font = pygame.font.Font(None, _BANNER_FONT)
            self.driver = pygame.display.get_driver()
        except Exception as e:
            self.error = f"the window could not open ({e})"
            with _active_lock:
                if _active is self:
                    _active = None
            pygame.display.quit()
            self._opened.set()
            return
        self._opened.set()
        try:
            self._loop(pygame, screen, font, layout)
        finally:
            with _active_lock:
                _active = None
            pygame.display.quit()

    def _loop(self, pygame: object, screen: object, font: object, layout: ViewLayout) -> None:
        session = self.controls.session_keys()
        period = 1.0 / self.fps
        next_draw = 0.0
        caption = self.title
        removed = pygame.JOYDEVICEREMOVED  # left in the queue for the gamepad, which reads it
        while not self._stop.is_set():
            for event in pygame.event.get(exclude=removed):
                ev = None
                if event.type == pygame.KEYDOWN:
                    name = _key_name(pygame, event.key)
                    ev = session.get(name)
                    if ev is None:
                        self.keys.press(name)
                elif event.type == pygame.KEYUP:
                    self.keys.release(_key_name(pygame, event.key))
                elif event.type == pygame.WINDOWFOCUSLOST:
                    self.keys.release_all()
                elif event.type == pygame.QUIT:
                    ev = Event.STOP
                if ev is not None:
                    with self._lock:
                        self._events.append(ev)
            now = time.monotonic()
            if now >= next_draw:
                next_draw = now + period
                if self.title != caption:
                    caption = self.title
                    pygame.display.set_caption(caption)
                self._draw(pygame, screen, font, layout)
                pygame.display.flip()
                self.frames_drawn += 1
            self._stop.wait(_PUMP_S)

    def _draw(self, pygame: object, screen: object, font: object, layout: ViewLayout) -> None:
        screen.fill(_BACKGROUND)
        for cam, (x, y, w, h) in zip(self.cameras, layout.tiles, strict=True):
            try:
                img = cam.latest().image
                # cv2 resizes without the GIL; the control thread keeps running meanwhile.
                small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
                screen.blit(pygame.surfarray.make_surface(np.ascontiguousarray(small.swapaxes(0, 1))), (x, y))
            except CameraError as e:
                screen.blit(font.render(str(e)[:90], True, (230, 120, 120)), (x + 6, y + 6))
            screen.blit(font.render(cam.name, True, (255, 255, 255)), (x + 6, y + h - 20))
        if layout.banner is not None and self.instruction:
            bx, by, bw, bh = layout.banner
            text = self._big_font.render(self.instruction, True, (255, 235, 140))
            if text.get_width() > bw - 16:
                # A long instruction shrinks to fit the band rather than being cut off.
                h = max(12, text.get_height() * (bw - 16) // text.get_width())
                text = pygame.transform.smoothscale(text, (bw - 16, h))
            screen.blit(text, (bx + 8, by + (bh - text.get_height()) // 2))
        sx, sy, _, _ = layout.status
        screen.blit(font.render(self.status, True, (230, 230, 230)), (sx + 8, sy + 7))
        kx, ky, kw, kh = layout.keymap
        pygame.draw.rect(screen, _KEYMAP_BG, (kx, ky, kw, kh))
        for i, line in enumerate(self.controls.map_lines()):
            screen.blit(font.render(line, True, (200, 220, 255)), (kx + 8, ky + 6 + i * _LINE_H))


def _key_name(pygame: object, key: int) -> str:
    name = pygame.key.name(key)
    return "return" if name == "enter" else name  # the keypad's Enter saves like the main one


def open_live_view(cameras: Sequence[Camera], controls: Controls, display: bool, warn: object,
                   instruction: bool = False) -> LiveView | None:
    """Open the window a session needs: with the cameras when ``display``, keys only when the device needs it.

    ``instruction``: the window has the band that shows the episode's instruction.
    A device that reads its keys from the window (the keyboard) cannot be steered without one,
    so that is an error, raised before anything is recorded. Any other device records on
    without the view after ``warn(message)``.
    """
    if not (display or controls.needs_window):
        return None
    # A keys-only window (the keyboard device with --no-display) still shows the instruction.
    view = LiveView(cameras if display else [], controls=controls,
                    title=f"telecorder collect ({controls.device})", instruction=instruction)
    view.__enter__()
    opened = view.wait_open()
    if opened and (view.visible or not controls.needs_window):
        return view
    view.close()
    reason = view.error or f"SDL_VIDEODRIVER={view.driver} draws into memory, not on a screen"
    if controls.needs_window:
        raise TelecorderError(
            f"--device {controls.device} reads its keys from the live view window, and {reason}. "
            "Run collect at the robot's desktop, or over 'ssh -X' (X forwarding), or use a device that needs "
            "no window: --device gamepad, leader_arm, vr or scripted"
        )
    warn(f"no live view ({reason}); recording without it")
    return None
