"""One frame of the episode viewer, drawn onto any pygame Surface.

The interactive window, the headless screenshot and the video exporter all call
:func:`render_view`, so what a user sees while browsing is exactly what gets saved.
Everything here is pure drawing: the caller gathers the data into a :class:`ViewState`.

::

    +-----------------------------------------------+
    |  camera grid (each camera at its aspect ratio) |
    +-----------------------------------------------+
    |  timeline (cursor, late ticks in red)          |
    +-------------------------------+---------------+
    |  observation.state plot       |  text panel   |
    |  action plot                  |               |
    +-------------------------------+---------------+
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import missing_extra

if TYPE_CHECKING:
    import pygame

BACKGROUND = (24, 24, 28)
PANEL = (34, 34, 40)
TEXT = (225, 225, 230)
DIM_TEXT = (150, 150, 160)
PLACEHOLDER = (70, 30, 70)
LATE = (230, 50, 50)
CURSOR = (250, 220, 60)
BAD = (220, 40, 40)
PLOT_FEATURES = ("observation.state", "action")
# Distinct enough on a dark background for up to ~10 dimensions; more cycle.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (160, 160, 160), (188, 189, 34), (23, 190, 207),
)


def require_pygame() -> Any:
    """Import pygame on first use so that the rest of telecorder works without it."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError as e:
        raise missing_extra("pygame", "viewer") from e
    if not pygame.font.get_init():
        pygame.font.init()
        _FONTS.clear()
    if not _QUIT_HOOK:
        # Fonts made before a pygame.quit() point at freed memory, even once pygame is initialised
        # again: rendering with one crashes. pygame forgets its quit hooks when it quits, so the hook
        # is set again after each.
        pygame.register_quit(_forget_fonts)
        _QUIT_HOOK.append(True)
    return pygame


def _forget_fonts() -> None:
    _FONTS.clear()
    _QUIT_HOOK.clear()


@dataclass
class CameraView:
    """One camera at the cursor: its frame, or why there is none."""

    name: str
    frame: np.ndarray | None = None
    error: str | None = None
    age_ms: float | None = None
    # Width / height of the stream, so a placeholder takes the same tile as the real frames.
    aspect: float = 4 / 3


@dataclass
class ViewState:
    """Everything one rendered frame shows."""

    cameras: list[CameraView]
    timestamp: np.ndarray
    step: int
    series: dict[str, np.ndarray] = field(default_factory=dict)
    dim_names: dict[str, list[str]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    fps: float = 30.0
    late_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rate: float = 1.0
    playing: bool = False
    bad: bool = False
    bad_reason: str | None = None
    episode_index: int = 0
    episode_pos: int = 0
    episode_count: int = 1
    source: str = ""
    status: str = ""
    sync_summary: str = ""

    @property
    def length(self) -> int:
        return len(self.timestamp)


@dataclass
class Layout:
    """Where each part of the view goes, as (x, y, w, h) tuples; also used for mouse hit tests."""

    cameras: list[tuple[int, int, int, int]]
    timeline: tuple[int, int, int, int]
    plots: list[tuple[int, int, int, int]]
    text: tuple[int, int, int, int]


def compute_layout(size: tuple[int, int], aspects: list[float], n_plots: int = 2) -> Layout:
    """Split a surface of ``size`` into camera tiles, timeline, plots and text panel."""
    w, h = size
    pad = 6
    cam_h = int(h * 0.55)
    timeline = (pad, cam_h + pad, w - 2 * pad, 28)
    bottom_y = timeline[1] + timeline[3] + pad
    bottom_h = max(h - bottom_y - pad, 1)
    text_w = max(int(w * 0.3), 200)
    plot_w = max(w - text_w - 3 * pad, 1)
    n_plots = max(n_plots, 1)
    plot_h = max((bottom_h - (n_plots - 1) * pad) // n_plots, 1)
    plots = [(pad, bottom_y + k * (plot_h + pad), plot_w, plot_h) for k in range(n_plots)]
    text = (pad * 2 + plot_w, bottom_y, text_w, bottom_h)
    return Layout(_camera_grid((pad, pad, w - 2 * pad, cam_h - pad), aspects, pad), timeline, plots, text)


def _camera_grid(area: tuple[int, int, int, int], aspects: list[float], pad: int) -> list[tuple[int, int, int, int]]:
    n = len(aspects)
    if n == 0:
        return []
    ax, ay, aw, ah = area
    best: tuple[float, int] | None = None
    # The column count that gives the smallest tile the most area wins: no camera gets tiny.
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        cw, ch = (aw - (cols - 1) * pad) / cols, (ah - (rows - 1) * pad) / rows
        smallest = min(_fit(a, cw, ch)[0] * _fit(a, cw, ch)[1] for a in aspects)
        if best is None or smallest > best[0]:
            best = (smallest, cols)
    assert best is not None
    cols = best[1]
    rows = math.ceil(n / cols)
    cw, ch = (aw - (cols - 1) * pad) / cols, (ah - (rows - 1) * pad) / rows
    rects = []
    for i, a in enumerate(aspects):
        r, c = divmod(i, cols)
        tw, th = _fit(a, cw, ch)
        x = ax + c * (cw + pad) + (cw - tw) / 2
        y = ay + r * (ch + pad) + (ch - th) / 2
        rects.append((int(x), int(y), int(tw), int(th)))
    return rects


def _fit(aspect: float, w: float, h: float) -> tuple[float, float]:
    if aspect <= 0 or not math.isfinite(aspect):
        aspect = 4 / 3
    return (w, w / aspect) if w / aspect <= h else (h * aspect, h)


_FONTS: dict[int, Any] = {}
_QUIT_HOOK: list[bool] = []


def font(size: int) -> Any:
    pg = require_pygame()
    if size not in _FONTS:
        _FONTS[size] = pg.font.Font(None, size)
    return _FONTS[size]


def render_view(surface: pygame.Surface, state: ViewState) -> Layout:
    """Draw the whole view for ``state`` onto ``surface``; returns where each part went."""
    pg = require_pygame()
    series = [name for name in PLOT_FEATURES if name in state.series]
    layout = compute_layout(surface.get_size(), [c.aspect for c in state.cameras], len(series) or 1)
    surface.fill(BACKGROUND)
    for cam, rect in zip(state.cameras, layout.cameras, strict=True):
        _draw_camera(pg, surface, cam, rect)
    _draw_timeline(pg, surface, state, layout.timeline)
    if series:
        for name, rect in zip(series, layout.plots, strict=True):
            _draw_plot(pg, surface, name, state.series[name], state.dim_names.get(name, []), state.step, rect)
    else:
        pg.draw.rect(surface, PANEL, layout.plots[0])
        _text(surface, "no observation.state / action in this episode", layout.plots[0][:2], DIM_TEXT, offset=(8, 8))
    _draw_text_panel(pg, surface, state, layout.text)
    return layout


def _draw_camera(pg: Any, surface: pygame.Surface, cam: CameraView, rect: tuple[int, int, int, int]) -> None:
    x, y, w, h = rect
    if w <= 0 or h <= 0:
        return
    if cam.frame is not None:
        frame = np.ascontiguousarray(cam.frame[..., :3], dtype=np.uint8)
        img = pg.image.frombuffer(frame.tobytes(), (frame.shape[1], frame.shape[0]), "RGB")
        if img.get_size() != (w, h):
            img = pg.transform.smoothscale(img, (w, h))
        surface.blit(img, (x, y))
    else:
        pg.draw.rect(surface, PLACEHOLDER, rect)
        lines = _wrap(cam.error or "no frame", font(18), w - 16)
        for k, line in enumerate(lines[: max((h - 40) // 18, 1)]):
            _text(surface, line, (x + 8, y + 32 + 18 * k), TEXT, size=18)
    label = cam.name if cam.age_ms is None else f"{cam.name}  age {cam.age_ms:.0f} ms"
    label_img = font(20).render(label, True, TEXT)
    backdrop = pg.Surface((label_img.get_width() + 8, label_img.get_height() + 4))
    backdrop.fill((0, 0, 0))
    backdrop.set_alpha(150)
    surface.blit(backdrop, (x, y))
    surface.blit(label_img, (x + 4, y + 2))


def _draw_timeline(pg: Any, surface: pygame.Surface, state: ViewState, rect: tuple[int, int, int, int]) -> None:
    x, y, w, h = rect
    pg.draw.rect(surface, PANEL, rect)
    n = state.length
    if n == 0:
        _text(surface, "empty episode", (x + 8, y + 6), DIM_TEXT)
        return
    bar_y, bar_h = y + 4, h - 8
    cursor_x = step_to_x(state.step, n, x, w)
    pg.draw.rect(surface, (70, 90, 130), (x, bar_y, max(cursor_x - x, 0), bar_h))
    for s in state.late_steps:
        lx = step_to_x(int(s), n, x, w)
        pg.draw.line(surface, LATE, (lx, y), (lx, y + 7))
    pg.draw.line(surface, CURSOR, (cursor_x, y), (cursor_x, y + h - 1), 3)
    t = float(state.timestamp[state.step] - state.timestamp[0])
    label = f"step {state.step}/{n - 1}   t = {t:.2f} s"
    _text(surface, label, (x + 8, y + 7), TEXT)


def step_to_x(step: int, n: int, x: int, w: int) -> int:
    return x + (round(step * (w - 1) / (n - 1)) if n > 1 else 0)


def x_to_step(px: float, n: int, x: int, w: int) -> int:
    """The step under horizontal position ``px`` of a timeline at ``x`` with width ``w``."""
    if n <= 1 or w <= 1:
        return 0
    return int(np.clip(round((px - x) * (n - 1) / (w - 1)), 0, n - 1))


def _draw_plot(pg: Any, surface: pygame.Surface, name: str, values: np.ndarray, names: list[str], step: int,
               rect: tuple[int, int, int, int]) -> None:
    x, y, w, h = rect
    pg.draw.rect(surface, PANEL, rect)
    data = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    n, dims = data.shape
    _text(surface, name, (x + 6, y + 4), DIM_TEXT)
    if n == 0 or w < 20 or h < 30:
        return
    top, height = y + 22, h - 28
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    # At most one point per pixel column: a 30 s episode has more steps than the plot has pixels.
    idx = np.unique(np.linspace(0, n - 1, min(n, w)).astype(np.int64))
    xs = x + (idx * (w - 1) / max(n - 1, 1))
    for d in range(dims):
        col = data[idx, d]
        ok = np.isfinite(col)
        if ok.sum() < 2:
            continue
        ys = top + height - (col[ok] - lo) / (hi - lo) * (height - 1)
        pg.draw.lines(surface, PALETTE[d % len(PALETTE)], False, np.column_stack([xs[ok], ys]).tolist())
    cx = step_to_x(min(step, n - 1), n, x, w)
    pg.draw.line(surface, CURSOR, (cx, top), (cx, top + height))
    _text(surface, f"{hi:.3g}", (x + w - 60, y + 4), DIM_TEXT, size=16)
    _text(surface, f"{lo:.3g}", (x + w - 60, y + h - 14), DIM_TEXT, size=16)
    # Legend along the top, swatch then name, as many as fit.
    lx = x + 6 + font(20).size(name)[0] + 16
    for d in range(dims):
        label = names[d] if d < len(names) else f"[{d}]"
        value = data[min(step, n - 1), d]
        text = f"{label} {value:.3g}"
        tw = font(16).size(text)[0]
        if lx + 14 + tw > x + w - 70:
            break
        pg.draw.rect(surface, PALETTE[d % len(PALETTE)], (lx, y + 6, 10, 10))
        _text(surface, text, (lx + 13, y + 5), TEXT, size=16)
        lx += 14 + tw + 10


def _draw_text_panel(pg: Any, surface: pygame.Surface, state: ViewState, rect: tuple[int, int, int, int]) -> None:
    x, y, w, h = rect
    pg.draw.rect(surface, PANEL, rect)
    md = state.metadata
    lines: list[tuple[str, tuple[int, int, int]]] = []
    if state.bad:
        lines.append(("BAD" + (f": {state.bad_reason}" if state.bad_reason else ""), BAD))
    lines.append((f"episode {state.episode_index}  ({state.episode_pos + 1}/{state.episode_count})", TEXT))
    task = md.get("language_instruction") or md.get("task")
    if task:
        lines.append((f"task: {task}", TEXT))
    if md.get("task") and md.get("language_instruction") and md["task"] != md["language_instruction"]:
        lines.append((f"(task {md['task']})", DIM_TEXT))
    success = md.get("success")
    lines.append((f"success: {'-' if success is None else success}", TEXT))
    duration = float(state.timestamp[-1] - state.timestamp[0]) if state.length > 1 else 0.0
    lines.append((f"length: {state.length} steps, {duration:.2f} s", TEXT))
    lines.append((f"fps: {state.fps:g}", TEXT))
    if state.sync_summary:
        lines.append((state.sync_summary, DIM_TEXT))
    for cam in state.cameras:
        age = "-" if cam.age_ms is None else f"{cam.age_ms:.1f} ms"
        lines.append((f"{cam.name} frame age: {age}", TEXT if cam.error is None else BAD))
    lines.append((f"{'playing' if state.playing else 'paused'}  rate {state.rate:g}x", TEXT))
    if state.source:
        lines.append((state.source, DIM_TEXT))
    if state.status:
        lines.append((state.status, CURSOR))
    lines.append(("</>: step  shift: 1 s  space: play  +/-: rate", DIM_TEXT))
    lines.append(("PgUp/PgDn: episode  d: mark bad", DIM_TEXT))
    yy = y + 6
    for line, color in lines:
        size = 30 if line.startswith("BAD") and color == BAD else 20
        for part in _wrap(line, font(size), w - 12):
            if yy + size > y + h:
                return
            _text(surface, part, (x + 6, yy), color, size=size)
            yy += size - 2


def _wrap(text: str, f: Any, width: int) -> list[str]:
    words, lines, current = text.split(), [], ""
    for word in words:
        trial = f"{current} {word}" if current else word
        if f.size(trial)[0] <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines or [""]


def _text(surface: pygame.Surface, text: str, pos: tuple[int, int], color: tuple[int, int, int], size: int = 20,
          offset: tuple[int, int] = (0, 0)) -> None:
    img = font(size).render(text, True, color)
    surface.blit(img, (pos[0] + offset[0], pos[1] + offset[1]))
