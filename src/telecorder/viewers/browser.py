"""Interactive episode browser: step through cameras, plots and timing of a dataset.

Any format telecorder reads opens through :mod:`.sources`: only the episode on screen is read,
and only the frames shown are decoded (through a small LRU cache), except for formats read
through a converter (ALOHA, robomimic), which load one whole episode at a time. Only native
datasets can be written to (marking an episode bad); every other format is read-only here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..datasets.dataset import mark_bad
from ..datasets.sync import LATE_THRESHOLD_S, analyze_timing
from ..errors import DatasetError
from .layout import (
    PLOT_FEATURES,
    CameraView,
    Layout,
    ViewState,
    compute_layout,
    render_view,
    require_pygame,
    x_to_step,
)
from .sources import LoadedEpisode, open_any

if TYPE_CHECKING:
    import pygame

RATES = (0.25, 0.5, 1.0, 2.0, 4.0)
CACHE_FRAMES = 96
BAD_REASON = "marked in viewer"


class EpisodeBrowser:
    """State and input handling of the viewer; ``render`` draws it, ``run`` opens a window.

    >>> b = EpisodeBrowser("demos/")
    >>> b.handle_event(event); surface = b.render()
    """

    def __init__(self, path: str | Path, episode: int | None = None, size: tuple[int, int] = (1280, 800),
                 fmt: str | None = None) -> None:
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        self.source = open_any(self.path, fmt)
        if not self.source.indices:
            self.source.close()
            raise DatasetError(f"{self.path}: the dataset has no episodes to show")
        self.step = 0
        self.rate = 1.0
        self.playing = False
        self.status = ""
        self.running = True
        self._cache: OrderedDict[tuple[int, str, int], np.ndarray | str] = OrderedDict()
        self._dragging = False
        self._play_time = 0.0
        self._surface: Any = None
        self._layout: Layout | None = None
        self._episode: LoadedEpisode | None = None
        self._load_error: str | None = None
        start = self.source.indices[0] if episode is None else episode
        if start not in self.source.indices:
            self.source.close()
            raise DatasetError(f"{self.path}: no episode {start} ({_episodes(self.source.indices)})")
        self.open_episode(start)

    # -- episode and cursor ---------------------------------------------------------------

    @property
    def episode_index(self) -> int:
        return self._index

    @property
    def length(self) -> int:
        return len(self._episode.timestamp) if self._episode is not None else 0

    def open_episode(self, index: int) -> None:
        if self._episode is not None:
            self._episode.close()
        self._index = index
        self.step = 0
        self.playing = False
        self._cache.clear()
        try:
            self._episode = self.source.load(index, PLOT_FEATURES)
            self._load_error = None
        except DatasetError as e:
            # A damaged episode is shown as such; the user can still page to the next one.
            self._episode = None
            self._load_error = str(e)
        self._late = self._late_steps()
        self._sync = self._sync_summary()

    def seek(self, step: int) -> None:
        self.step = int(np.clip(step, 0, max(self.length - 1, 0)))
        if self._episode is not None and self.length:
            self._play_time = float(self._episode.timestamp[self.step])

    def advance(self, dt: float) -> None:
        """Move playback on by ``dt`` seconds of wall time, following the recorded timestamps."""
        if not self.playing or self._episode is None or not self.length:
            return
        ts = self._episode.timestamp
        self._play_time += dt * self.rate
        step = int(np.searchsorted(ts, self._play_time, side="right")) - 1
        self.step = int(np.clip(step, 0, self.length - 1))
        if self._play_time >= ts[-1]:
            self.step = self.length - 1
            self.playing = False

    def _late_steps(self) -> np.ndarray:
        ep = self._episode
        if ep is None or not len(ep.timestamp):
            return np.zeros(0, np.int64)
        if ep.tick_lateness is not None and len(ep.tick_lateness) == len(ep.timestamp):
            lateness = np.asarray(ep.tick_lateness, dtype=np.float64)
        else:
            ts = ep.timestamp
            lateness = ts - ts[0] - np.arange(len(ts)) / self.source.info.fps
        return np.flatnonzero(lateness > LATE_THRESHOLD_S)

    def _sync_summary(self) -> str:
        ep = self._episode
        if ep is None or len(ep.timestamp) < 2:
            return ""
        rep = analyze_timing(ep.timestamp, self.source.info.fps, tick_lateness=ep.tick_lateness)
        return (f"achieved {rep.achieved_fps:.1f} fps, {rep.late_ticks} late, "
                f"{rep.missed_ticks} missed ticks (max {rep.max_lateness * 1000:.0f} ms)")

    # -- frames -----------------------------------------------------------------------------

    def frame(self, camera: str, step: int) -> np.ndarray | str:
        """Decoded frame, or the reason there is none; remembered in a small LRU cache."""
        key = (self._index, camera, step)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        ep = self._episode
        value: np.ndarray | str
        if ep is None:
            value = self._load_error or "episode could not be read"
        elif camera in ep.missing:
            value = ep.missing[camera]
        else:
            try:
                value = ep.frame(camera, step)
            except (DatasetError, KeyError, IndexError, ValueError, OSError) as e:
                value = str(e) or type(e).__name__
        self._cache[key] = value
        while len(self._cache) > CACHE_FRAMES:
            self._cache.popitem(last=False)
        return value

    def prefetch(self, budget_s: float = 0.005) -> int:
        """Decode frames the cursor will reach next, within ``budget_s``; returns how many."""
        deadline = time.perf_counter() + budget_s
        done = 0
        # While playing, the next steps matter; when paused, one step either way.
        ahead = range(1, 9) if self.playing else (1, -1, 2, -2)
        for offset in ahead:
            step = self.step + offset
            if not 0 <= step < self.length:
                continue
            for cam in self.source.info.cameras:
                if (self._index, cam, step) not in self._cache:
                    self.frame(cam, step)
                    done += 1
                if time.perf_counter() > deadline:
                    return done
        return done

    # -- input ------------------------------------------------------------------------------

    def handle_event(self, event: Any) -> None:
        pg = require_pygame()
        if event.type == pg.QUIT:
            self.running = False
        elif event.type == pg.KEYDOWN:
            self._key(pg, event.key, getattr(event, "mod", 0))
        elif event.type == pg.MOUSEBUTTONDOWN and getattr(event, "button", 1) == 1:
            if self._on_timeline(event.pos):
                self._dragging = True
                self._scrub(event.pos[0])
        elif event.type == pg.MOUSEMOTION and self._dragging:
            self._scrub(event.pos[0])
        elif event.type == pg.MOUSEBUTTONUP and getattr(event, "button", 1) == 1:
            self._dragging = False

    def _key(self, pg: Any, key: int, mod: int) -> None:
        big = max(round(self.source.info.fps), 1) if mod & pg.KMOD_SHIFT else 1
        if key == pg.K_RIGHT:
            self.seek(self.step + big)
        elif key == pg.K_LEFT:
            self.seek(self.step - big)
        elif key == pg.K_HOME:
            self.seek(0)
        elif key == pg.K_END:
            self.seek(self.length - 1)
        elif key == pg.K_SPACE:
            if not self.playing and self.step >= self.length - 1:
                self.seek(0)
            self.playing = not self.playing
            self.seek(self.step)
        elif key in (pg.K_PLUS, pg.K_EQUALS, pg.K_KP_PLUS):
            self.rate = RATES[min(RATES.index(self.rate) + 1, len(RATES) - 1)]
        elif key in (pg.K_MINUS, pg.K_KP_MINUS):
            self.rate = RATES[max(RATES.index(self.rate) - 1, 0)]
        elif key == pg.K_PAGEDOWN:
            self._page(+1)
        elif key == pg.K_PAGEUP:
            self._page(-1)
        elif key == pg.K_d:
            self.toggle_bad()
        elif key in (pg.K_ESCAPE, pg.K_q):
            self.running = False

    def _page(self, delta: int) -> None:
        pos = self.source.indices.index(self._index)
        new = int(np.clip(pos + delta, 0, len(self.source.indices) - 1))
        if new != pos:
            self.open_episode(self.source.indices[new])
            self.status = ""

    def _on_timeline(self, pos: tuple[int, int]) -> bool:
        x, y, w, h = self._current_layout().timeline
        return x <= pos[0] < x + w and y <= pos[1] < y + h

    def _scrub(self, px: float) -> None:
        x, _, w, _ = self._current_layout().timeline
        self.playing = False
        self.seek(x_to_step(px, self.length, x, w))

    def _current_layout(self) -> Layout:
        if self._layout is None:
            self._layout = compute_layout(self.size, [a for _, a in self._aspects()], len(PLOT_FEATURES))
        return self._layout

    @property
    def bad(self) -> bool:
        return bool(self.source.record(self._index).get("bad", False))

    def toggle_bad(self) -> None:
        """Mark the current episode bad in the index, or unmark it (native datasets only)."""
        if not self.source.writable:
            self.status = f"{self.source.format} dataset is read-only here: convert it to mark episodes bad"
            return
        want = not self.bad
        try:
            rec = mark_bad(self.path, self._index, bad=want, reason=BAD_REASON if want else None)
        except (DatasetError, OSError) as e:
            self.status = f"could not mark episode {self._index}: {e}"
            return
        current = self.source.record(self._index)
        current.clear()
        current.update(rec)
        self.status = f"episode {self._index} {'marked bad' if want else 'unmarked'}"

    # -- drawing ----------------------------------------------------------------------------

    def _aspects(self) -> list[tuple[str, float]]:
        out = []
        for spec in self.source.info.image_features:
            h, w = spec.shape[0], spec.shape[1]
            out.append((spec.camera, w / h if h else 4 / 3))
        return out

    def view_state(self) -> ViewState:
        ep = self._episode
        timestamp = ep.timestamp if ep is not None else np.zeros(0)
        cameras = []
        for cam, aspect in self._aspects():
            if not len(timestamp):
                cameras.append(CameraView(cam, error=self._load_error or "empty episode", aspect=aspect))
                continue
            value = self.frame(cam, self.step)
            age = None
            if ep is not None and cam in ep.image_timestamp:
                age = float(timestamp[self.step] - ep.image_timestamp[cam][self.step]) * 1000
            if isinstance(value, str):
                cameras.append(CameraView(cam, error=value, age_ms=age, aspect=aspect))
            else:
                cameras.append(CameraView(cam, frame=value, age_ms=age, aspect=aspect))
        rec = self.source.record(self._index)
        metadata = dict(ep.metadata) if ep is not None else {}
        if "success" in rec and "success" not in metadata:
            metadata["success"] = rec["success"]
        info = self.source.info
        return ViewState(
            cameras=cameras,
            timestamp=timestamp,
            step=self.step,
            series=dict(ep.series) if ep is not None else {},
            dim_names={f.name: list(f.names) for f in info.numeric_features if f.names},
            metadata=metadata,
            fps=info.fps,
            late_steps=self._late,
            rate=self.rate,
            playing=self.playing,
            bad=bool(rec.get("bad", False)),
            bad_reason=rec.get("bad_reason"),
            episode_index=self._index,
            episode_pos=self.source.indices.index(self._index),
            episode_count=len(self.source.indices),
            source=f"{self.path.name} ({self.source.format})",
            status=self.status or (self._load_error or ""),
            sync_summary=self._sync,
        )

    def render(self) -> pygame.Surface:
        pg = require_pygame()
        if self._surface is None or self._surface.get_size() != self.size:
            self._surface = pg.Surface(self.size)
        self._layout = render_view(self._surface, self.view_state())
        return self._surface

    def screenshot(self, out: str | Path, episode: int | None = None, step: int | None = None) -> Path:
        """Render the view of ``episode`` at ``step`` offscreen and save it as a PNG."""
        pg = require_pygame()
        if episode is not None and episode != self._index:
            if episode not in self.source.indices:
                raise DatasetError(f"{self.path}: no episode {episode} ({_episodes(self.source.indices)})")
            self.open_episode(episode)
        if step is not None:
            if not 0 <= step < max(self.length, 1):
                raise DatasetError(f"{self.path}: episode {self._index} has no step {step} ({self.length} steps)")
            self.seek(step)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        pg.image.save(self.render(), str(out))
        return out

    def run(self, fps: int = 60) -> None:
        """Open the window and browse until it is closed (Esc or q)."""
        pg = require_pygame()
        pg.display.init()
        try:
            window = pg.display.set_mode(self.size, pg.RESIZABLE)
            caption = ""
            clock = pg.time.Clock()
            last = time.perf_counter()
            while self.running:
                if self.caption() != caption:  # where the browser is, for the taskbar and window tools
                    caption = self.caption()
                    pg.display.set_caption(caption)
                for event in pg.event.get():
                    if event.type == pg.VIDEORESIZE:
                        self.size = (max(event.w, 320), max(event.h, 240))
                        window = pg.display.set_mode(self.size, pg.RESIZABLE)
                        self._layout = None
                    else:
                        self.handle_event(event)
                now = time.perf_counter()
                self.advance(now - last)
                last = now
                window.blit(self.render(), (0, 0))
                pg.display.flip()
                # Spend what is left of the frame decoding what comes next.
                self.prefetch(max(0.0, 1.0 / fps - (time.perf_counter() - now)) * 0.5)
                clock.tick(fps)
        finally:
            self.close()
            pg.display.quit()

    def caption(self) -> str:
        """The window title: dataset, format, episode and step."""
        pos = self.source.indices.index(self._index) + 1
        return (f"telecorder view {self.path.name} ({self.source.format}): episode {self._index} "
                f"({pos}/{len(self.source.indices)}), step {min(self.step + 1, self.length)}/{self.length}")

    def close(self) -> None:
        if self._episode is not None:
            self._episode.close()
            self._episode = None
        self.source.close()


def _episodes(indices: list[int]) -> str:
    return f"episodes {indices[0]}..{indices[-1]}" if len(indices) > 12 else f"episodes: {indices}"


def screenshot(path: str | Path, out: str | Path, episode: int | None = None, step: int = 0,
               size: tuple[int, int] = (1280, 800), fmt: str | None = None) -> Path:
    """Save the viewer's layout for ``episode`` at ``step`` of the dataset at ``path`` as a PNG (no window)."""
    browser = EpisodeBrowser(path, episode=episode, size=size, fmt=fmt)
    try:
        return browser.screenshot(out, step=step)
    finally:
        browser.close()
