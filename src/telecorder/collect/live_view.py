"""``collect --display``: a window with the camera feeds and the session status while recording.

It runs in a thread of its own at a low rate (10 Hz by default) and only ever reads the
newest frame of each camera, so it can skip frames but never holds the control loop.
Keys in the window are the terminal's: n / right = save, r / left = re-record, q / Esc =
save and quit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import cv2
import numpy as np

from ..errors import CameraError, missing_extra
from .interfaces import Camera, Event

_STATUS_H = 28


class LiveView:
    def __init__(self, cameras: Sequence[Camera], *, fps: float = 10.0, width: int = 960) -> None:
        self.cameras, self.fps, self.width = list(cameras), fps, width
        self.status = "starting"
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.frames_drawn = 0

    def __enter__(self) -> LiveView:
        self._thread = threading.Thread(target=self._run, name="tc-live-view", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def set_status(self, text: str) -> None:
        self.status = text

    def poll(self) -> set[Event]:
        with self._lock:
            events, self._events = set(self._events), []
        return events

    def _layout(self) -> tuple[int, int, int]:
        n = max(1, len(self.cameras))
        cols = min(n, 3)
        rows = (n + cols - 1) // cols
        tile_w = self.width // cols
        tile_h = int(tile_w * 3 / 4)
        return cols, tile_w, rows * tile_h + _STATUS_H

    def _run(self) -> None:
        try:
            import pygame
        except ImportError:
            self.error = str(missing_extra("pygame", "viewer"))
            return
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            pygame.display.init()
            pygame.font.init()
            cols, tile_w, height = self._layout()
            screen = pygame.display.set_mode((self.width, height))
            pygame.display.set_caption("telecorder collect")
            font = pygame.font.Font(None, 22)
        except Exception as e:  # no display: recording goes on without the window
            self.error = f"live view unavailable ({e})"
            return
        keys = {pygame.K_n: Event.SAVE_EPISODE, pygame.K_RIGHT: Event.SAVE_EPISODE,
                pygame.K_r: Event.DISCARD_EPISODE, pygame.K_LEFT: Event.DISCARD_EPISODE,
                pygame.K_q: Event.STOP, pygame.K_ESCAPE: Event.STOP}
        period = 1.0 / self.fps
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                for event in pygame.event.get():
                    ev = keys.get(event.key) if event.type == pygame.KEYDOWN else None
                    if event.type == pygame.QUIT:
                        ev = Event.STOP
                    if ev is not None:
                        with self._lock:
                            self._events.append(ev)
                screen.fill((20, 20, 24))
                tile_h = int(tile_w * 3 / 4)
                for k, cam in enumerate(self.cameras):
                    x, y = (k % cols) * tile_w, (k // cols) * tile_h
                    try:
                        img = cam.latest().image
                        # cv2 resizes without the GIL; the control thread keeps running meanwhile.
                        small = cv2.resize(img, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
                        screen.blit(pygame.surfarray.make_surface(np.ascontiguousarray(small.swapaxes(0, 1))), (x, y))
                    except CameraError as e:
                        screen.blit(font.render(str(e)[:80], True, (230, 120, 120)), (x + 6, y + 6))
                    screen.blit(font.render(cam.name, True, (255, 255, 255)), (x + 6, y + tile_h - 20))
                screen.blit(font.render(self.status, True, (230, 230, 230)), (8, height - _STATUS_H + 6))
                pygame.display.flip()
                self.frames_drawn += 1
                self._stop.wait(max(0.0, period - (time.monotonic() - t0)))
        finally:
            pygame.display.quit()
