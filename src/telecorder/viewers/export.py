"""Episodes as things to look at without telecorder: an MP4, an animated GIF, a contact sheet PNG.

Every picture is drawn with OpenCV and numpy only, so exports run on a headless machine
(no display, no SDL). One step of an episode is drawn as a grid of its cameras, optionally
above a strip plot of the action with a cursor at the current step.

::

    export_mp4("demos/", 3, "ep3.mp4")
    export_gif("demos/", 3, "ep3.gif", max_width=480)
    contact_sheet("demos/", 3, "ep3.png", frames_per_camera=8)

Any format telecorder reads can be exported (``fmt`` names it, else it is detected): only the
exported episode is read, through :mod:`.sources`; nothing is written into the dataset.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ..converters.video import VideoEncoder, frame_rate
from ..datasets.dataset import Dataset
from ..datasets.episode_file import EpisodeReader
from ..datasets.features import DatasetInfo
from ..errors import DatasetError
from .sources import READ_ERRORS, AnySource, LoadedEpisode, NativeSource, open_any

__all__ = ["camera_grid", "contact_sheet", "export_gif", "export_mp4", "plot_strip"]

FONT = cv2.FONT_HERSHEY_SIMPLEX
BACKGROUND = (24, 24, 24)
MISSING_GREY = (110, 110, 110)
# Tableau-10: neighbouring dimensions stay distinguishable, also for most colour-blind viewers.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
_DEFAULT_ASPECT = 3 / 4  # height / width of a tile when no camera tells us better
_GIF_MAX_FPS = 10  # browsers clamp faster GIFs unevenly; real-time playback needs <= ~10 fps

FrameOrReason = np.ndarray | str | None


# --------------------------------------------------------------------------- drawing


def _label(img: np.ndarray, text: str, org: tuple[int, int], scale: float,
           color: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Text on a dark box, so it stays readable over any image content."""
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    x, y = org
    cv2.rectangle(img, (x - 2, y - th - 3), (x + tw + 2, y + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(img, text, (x, y), FONT, scale, color, thick, cv2.LINE_AA)


def _font_scale(width: int) -> float:
    return float(np.clip(width / 640, 0.3, 0.8))


def _fit(img: np.ndarray, tw: int, th: int) -> np.ndarray:
    """``img`` scaled to fit (tw, th), centred on a black tile: aspect ratio is kept."""
    h, w = img.shape[:2]
    s = min(tw / w, th / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(img, (nw, nh), interpolation=interp)
    tile = np.zeros((th, tw, 3), np.uint8)
    y0, x0 = (th - nh) // 2, (tw - nw) // 2
    tile[y0:y0 + nh, x0:x0 + nw] = resized
    return tile


def _grey_tile(tw: int, th: int, reason: str) -> np.ndarray:
    tile = np.full((th, tw, 3), MISSING_GREY, np.uint8)
    scale = _font_scale(tw) * 0.8
    # A long decoder message is wrapped onto as many lines as the tile holds.
    max_chars = max(8, int(tw / (scale * 20)))
    words, lines, line = reason.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > max_chars:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    if line:
        lines.append(line)
    step = int(30 * scale) + 4
    for i, text in enumerate(lines[: max(1, (th - 20) // step)]):
        cv2.putText(tile, text, (6, 40 + i * step), FONT, scale, (30, 30, 30), 1, cv2.LINE_AA)
    return tile


def _grid_shape(n: int) -> tuple[int, int]:
    cols = max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def _tile_aspect(frames: Mapping[str, FrameOrReason]) -> float:
    aspects = [f.shape[0] / f.shape[1] for f in frames.values() if isinstance(f, np.ndarray) and f.ndim == 3]
    return max(aspects) if aspects else _DEFAULT_ASPECT


def camera_grid(frames: Mapping[str, FrameOrReason], width: int, *, tile_aspect: float | None = None) -> np.ndarray:
    """The cameras of one step side by side (RGB uint8), each labelled with its name.

    A value that is a string or None stands for a frame that could not be read: it becomes
    a grey tile showing that reason. Tiles share one size, ``tile_aspect`` (height / width)
    or else the tallest frame's; give it when drawing many steps so that a missing frame
    never changes the grid's size.
    """
    if not frames:
        h = max(2, round(width * _DEFAULT_ASPECT))
        out = np.full((h, width, 3), MISSING_GREY, np.uint8)
        _label(out, "no cameras", (8, 24), _font_scale(width))
        return out
    rows, cols = _grid_shape(len(frames))
    tw = width // cols
    th = max(2, round(tw * (tile_aspect or _tile_aspect(frames))))
    out = np.zeros((rows * th, width, 3), np.uint8)
    scale = _font_scale(tw) * 0.8
    for k, (name, f) in enumerate(frames.items()):
        r, c = divmod(k, cols)
        if isinstance(f, np.ndarray) and f.ndim == 3 and f.shape[2] == 3 and f.size:
            tile = _fit(f.astype(np.uint8, copy=False), tw, th)
        else:
            tile = _grey_tile(tw, th, f if isinstance(f, str) else "frame missing")
        _label(tile, name, (6, 6 + int(24 * scale)), scale)
        out[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
    return out


class _PlotFrame:
    """Where step ``t`` lands on a plot strip: shared by the plot and the cursors drawn on it."""

    def __init__(self, n: int, width: int, height: int) -> None:
        self.n = n
        self.left, self.right = 6, width - 6
        self.top, self.bottom = 6 + int(22 * _font_scale(width)), height - 6

    def x(self, t: np.ndarray | int) -> np.ndarray | int:
        span = max(1, self.n - 1)
        pos = self.left + np.asarray(t, dtype=np.float64) * (self.right - self.left) / span
        return np.rint(pos).astype(np.int32) if np.ndim(pos) else round(float(pos))


def _draw_cursor(img: np.ndarray, frame: _PlotFrame, step: int, color: tuple[int, int, int] = (255, 255, 255)) -> None:
    x = frame.x(step)
    cv2.line(img, (x, frame.top), (x, frame.bottom), color, 1, cv2.LINE_AA)


def plot_strip(values: np.ndarray, names: Sequence[str] | None, cursor: int | None, width: int,
               height: int) -> np.ndarray:
    """Line plot (RGB uint8, ``height`` x ``width``) of ``values`` (T, D), one coloured line per dimension.

    All dimensions share one y axis so that their relative size is visible; a legend of
    ``names`` runs along the top, and ``cursor`` (a step) is drawn as a vertical line.
    Non-finite values leave a gap instead of wrecking the scale.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    values = values.reshape(len(values), -1)
    n, d = values.shape
    names = list(names) if names is not None else []
    names += [f"{i}" for i in range(len(names), d)]
    img = np.full((height, width, 3), BACKGROUND, np.uint8)
    pf = _PlotFrame(n, width, height)
    finite = np.isfinite(values)
    if n and finite.any():
        lo, hi = float(values[finite].min()), float(values[finite].max())
        if hi - lo < 1e-9:
            lo, hi = lo - 1.0, hi + 1.0
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        xs = pf.x(np.arange(n))
        ys = np.rint(pf.bottom - (values - lo) / (hi - lo) * (pf.bottom - pf.top))
        for j in range(d):
            color = PALETTE[j % len(PALETTE)]
            ok = finite[:, j]
            # One polyline per run of finite samples: a NaN is a gap, not a spike.
            edges = np.flatnonzero(np.diff(np.r_[0, ok.astype(np.int8), 0]))
            for a, b in zip(edges[::2], edges[1::2], strict=True):
                pts = np.stack([xs[a:b], ys[a:b, j].astype(np.int32)], axis=1).reshape(-1, 1, 2)
                cv2.polylines(img, [pts], False, color, 1, cv2.LINE_AA)
    scale = _font_scale(width) * 0.6
    x = 8
    for j, name in enumerate(names[:d]):
        color = PALETTE[j % len(PALETTE)]
        (tw, th), _ = cv2.getTextSize(name, FONT, scale, 1)
        if x + 18 + tw > width:
            break
        y = 4 + th
        cv2.line(img, (x, y - th // 2), (x + 12, y - th // 2), color, 2)
        cv2.putText(img, name, (x + 16, y), FONT, scale, (230, 230, 230), 1, cv2.LINE_AA)
        x += 28 + tw
    if cursor is not None and n:
        _draw_cursor(img, pf, int(np.clip(cursor, 0, n - 1)))
    return img


# --------------------------------------------------------------------------- episodes


class _ForeignEpisode:
    """An episode of another format, with the part of :class:`EpisodeReader`'s interface that
    drawing uses; closing it closes its dataset too."""

    def __init__(self, source: AnySource, loaded: LoadedEpisode) -> None:
        self.source = source
        self.loaded = loaded
        self.path = source.path
        self.attrs = loaded.metadata
        self.missing = loaded.missing
        self.cameras = [c for c in source.info.cameras if c not in loaded.missing]

    def __len__(self) -> int:
        return len(self.loaded)

    def fps(self, default: float) -> float:
        return float(default)

    def frame(self, camera: str, step: int) -> np.ndarray:
        try:
            return self.loaded.frame(camera, step)
        except DatasetError:
            raise
        except READ_ERRORS as e:
            raise DatasetError(f"{self.path}: episode {self.loaded.index} camera {camera!r} step {step}: {e}") from e

    def numeric(self, name: str) -> np.ndarray:
        if name not in self.loaded.series:
            raise DatasetError(f"{self.path}: episode {self.loaded.index} has no {name!r}")
        return self.loaded.series[name]

    def __enter__(self) -> _ForeignEpisode:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.loaded.close()
        finally:
            self.source.close()


_Episode = EpisodeReader | _ForeignEpisode


def _open(dataset: str | Path | Dataset, episode: int, fmt: str | None = None
          ) -> tuple[DatasetInfo, Path, _Episode]:
    if isinstance(dataset, Dataset):
        return dataset.info, dataset.root, dataset.episode(int(episode))
    source = open_any(dataset, fmt)
    try:
        if isinstance(source, NativeSource):
            ds = source.dataset
            return ds.info, ds.root, ds.episode(int(episode))
        # Only what is drawn: the action for the plot strip.
        return source.info, source.path, _ForeignEpisode(source, source.load(int(episode), ("action",)))
    except BaseException:
        source.close()
        raise


def _read_frames(ep: _Episode, cameras: Sequence[str], step: int) -> dict[str, FrameOrReason]:
    present = set(ep.cameras)
    missing = getattr(ep, "missing", {})
    out: dict[str, FrameOrReason] = {}
    for cam in cameras:
        if cam not in present:
            out[cam] = missing.get(cam) or f"camera {cam} not recorded"
            continue
        try:
            out[cam] = ep.frame(cam, step)
        except DatasetError:
            out[cam] = f"step {step}: corrupt frame"
    return out


def _cameras_and_aspect(info: DatasetInfo, ep: _Episode) -> tuple[list[str], float]:
    specs = info.image_features
    cameras = [s.camera for s in specs] or ep.cameras
    aspects = [s.shape[0] / s.shape[1] for s in specs if len(s.shape) == 3 and s.shape[1]]
    return cameras, max(aspects) if aspects else _DEFAULT_ASPECT


def _action(info: DatasetInfo, ep: _Episode) -> tuple[np.ndarray, list[str]] | None:
    """The action to plot, with one name per dimension; None when the dataset has none."""
    spec = info.features.get("action")
    if spec is None or spec.is_image:
        return None
    values = ep.numeric("action")
    values = values.reshape(len(values), -1)
    names = list(spec.names) if spec.names else [f"a{i}" for i in range(values.shape[1])]
    return values, names


def _even(n: int) -> int:
    return max(2, n - n % 2)


class _StepRenderer:
    """Draws step ``t`` of an open episode at a fixed size: camera grid, then the plot strip.

    The plot is drawn once; each step only copies it and adds the cursor.
    """

    def __init__(self, info: DatasetInfo, ep: _Episode, width: int, plot: bool) -> None:
        self.ep = ep
        self.width = _even(width)
        self.cameras, self.aspect = _cameras_and_aspect(info, ep)
        rows, cols = _grid_shape(max(1, len(self.cameras)))
        grid_h = rows * max(2, round((self.width // cols) * self.aspect))
        action = _action(info, ep) if plot else None
        self.plot: np.ndarray | None = None
        plot_h = 0
        if action is not None:
            plot_h = _even(max(60, self.width // 5))
            values, names = action
            self.plot = plot_strip(values, names, None, self.width, plot_h)
            self.plot_frame = _PlotFrame(len(values), self.width, plot_h)
        self.grid_h = grid_h
        self.height = _even(grid_h + plot_h + 1)

    def render(self, step: int) -> np.ndarray:
        out = np.zeros((self.height, self.width, 3), np.uint8)
        grid = camera_grid(_read_frames(self.ep, self.cameras, step), self.width, tile_aspect=self.aspect)
        gh, gw = grid.shape[:2]
        out[:gh, :gw] = grid
        if self.plot is not None:
            strip = self.plot.copy()
            _draw_cursor(strip, self.plot_frame, step)
            out[self.height - strip.shape[0]:] = strip
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(len(self.ep)):
            yield self.render(t)


def export_mp4(dataset: str | Path | Dataset, episode: int, out_path: str | Path, *, plot: bool = True,
               width: int = 960, codec: str = "h264", fmt: str | None = None) -> int:
    """Write episode ``episode`` as an MP4 at its recorded fps; returns the number of frames written.

    Each video frame is the step's camera grid, with the action plotted underneath and a
    cursor at the step when ``plot`` is set. Unreadable frames show as grey tiles.
    """
    info, _, ep = _open(dataset, episode, fmt)
    with ep:
        fps = ep.fps(info.fps)
        renderer = _StepRenderer(info, ep, width, plot)
        with VideoEncoder(Path(out_path), renderer.width, renderer.height, fps, codec=codec) as enc:
            for img in renderer:
                enc.append(img)
            return enc.frames


def _palette(samples: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A 256-colour palette fitted to ``samples`` and a 32x32x32 lookup from 5-bit RGB to its index.

    One palette for the whole GIF keeps colours from flickering between frames; the lookup
    makes quantising a frame one fancy-index instead of a nearest-colour search per pixel.
    """
    pixels = np.concatenate([s.reshape(-1, 3) for s in samples]).astype(np.float32)
    rng = np.random.default_rng(0)
    if len(pixels) > 20000:
        pixels = pixels[rng.choice(len(pixels), 20000, replace=False)]
    k = min(256, len(np.unique(pixels, axis=0)))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    cv2.setRNGSeed(0)
    _, _, centers = cv2.kmeans(pixels, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    centers = np.clip(np.rint(centers), 0, 255).astype(np.uint8)
    grid = (np.arange(32, dtype=np.float32) * 8 + 4)
    cube = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    c = centers.astype(np.float32)
    # |a-b|^2 = |a|^2 - 2ab + |b|^2 keeps the 32768x256 distance table a single matrix product.
    dist = (cube**2).sum(axis=1)[:, None] - 2 * cube @ c.T + (c**2).sum(axis=1)[None, :]
    lut = dist.argmin(axis=1).astype(np.uint8).reshape(32, 32, 32)
    argb = np.zeros((256, 4), np.uint8)
    argb[:, 0] = 255  # PyAV's pal8 palette rows are A, R, G, B
    argb[:k, 1:] = centers
    return argb, lut


def export_gif(dataset: str | Path | Dataset, episode: int, out_path: str | Path, *, max_width: int = 480,
               stride: int | None = None, plot: bool = True, fmt: str | None = None) -> int:
    """Write the episode as an animated GIF no wider than ``max_width``; returns the number of frames.

    Every ``stride``-th step is kept (by default enough to play at no more than 10 fps), and
    the GIF plays at real time. Encoded with FFmpeg's GIF encoder through PyAV, so no
    imaging library beyond OpenCV is needed.
    """
    info, _, ep = _open(dataset, episode, fmt)
    out_path = Path(out_path)
    with ep:
        fps = ep.fps(info.fps)
        if stride is None:
            stride = max(1, math.ceil(fps / _GIF_MAX_FPS))
        if stride < 1:
            raise ValueError(f"stride must be >= 1, not {stride}")
        renderer = _StepRenderer(info, ep, max_width, plot)
        steps = list(range(0, len(ep), stride))
        if not steps:
            raise DatasetError(f"{ep.path}: episode {episode} has no steps to export")
        # Drawing all frames first lets the palette see the whole episode; at GIF sizes
        # (<= 480 px wide, <= 10 fps) this is a few MB per minute of demonstration.
        images = [renderer.render(t) for t in steps]
        picks = np.linspace(0, len(images) - 1, min(len(images), 8)).round().astype(int)
        palette, lut = _palette([images[i] for i in picks])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        rate: Fraction = frame_rate(fps / stride)
        with av.open(str(out_path), "w", format="gif") as container:
            stream = container.add_stream("gif", rate=rate)
            stream.width, stream.height, stream.pix_fmt = renderer.width, renderer.height, "pal8"
            for k, img in enumerate(images):
                q = img >> 3
                idx = np.ascontiguousarray(lut[q[..., 0], q[..., 1], q[..., 2]])
                frame = av.VideoFrame.from_ndarray((idx, palette), format="pal8")
                frame.pts = k
                frame.time_base = 1 / rate
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        return len(images)


def contact_sheet(dataset: str | Path | Dataset, episode: int, out_path: str | Path,
                  frames_per_camera: int = 8, *, tile_width: int = 200, fmt: str | None = None) -> np.ndarray:
    """One PNG summarising an episode; returns the sheet (RGB).

    A title line (dataset, episode, task, length), then one row per camera of
    ``frames_per_camera`` evenly spaced frames labelled with their step, then the action
    plot with a marker at each of those steps.
    """
    if frames_per_camera < 1:
        raise ValueError(f"frames_per_camera must be >= 1, not {frames_per_camera}")
    info, root, ep = _open(dataset, episode, fmt)
    with ep:
        n = len(ep)
        if n == 0:
            raise DatasetError(f"{ep.path}: episode {episode} has no steps to show")
        cameras, aspect = _cameras_and_aspect(info, ep)
        steps = np.unique(np.linspace(0, n - 1, min(frames_per_camera, n)).round().astype(int)).tolist()
        k = len(steps)
        width = k * tile_width
        th = max(2, round(tile_width * aspect))
        # Readable at 1:1 even on small tiles; _font_scale would shrink it to a smudge.
        scale = max(0.45, _font_scale(tile_width))
        title_h = 16 + int(44 * _font_scale(width))
        attrs = ep.attrs
        task = str(attrs.get("task") or attrs.get("language_instruction") or "no task")
        rows = []
        for cam in cameras:
            row = np.zeros((th, width, 3), np.uint8)
            for j, t in enumerate(steps):
                f = _read_frames(ep, [cam], t)[cam]
                tile = _fit(f, tile_width, th) if isinstance(f, np.ndarray) else _grey_tile(tile_width, th, f or "")
                _label(tile, f"{cam}  t={t}", (4, 4 + int(22 * scale)), scale)
                cv2.rectangle(tile, (0, 0), (tile_width - 1, th - 1), (0, 0, 0), 1)
                row[:, j * tile_width:(j + 1) * tile_width] = tile
            rows.append(row)
        action = _action(info, ep)
        if action is not None:
            plot_h = max(80, width // 6)
            values, names = action
            strip = plot_strip(values, names, None, width, plot_h)
            pf = _PlotFrame(n, width, plot_h)
            for t in steps:
                _draw_cursor(strip, pf, t, color=(255, 215, 0))
                tw = cv2.getTextSize(str(t), FONT, scale * 0.9, 1)[0][0]
                x = min(pf.x(t) + 3, width - tw - 2)
                cv2.putText(strip, str(t), (x, plot_h - 8), FONT, scale * 0.9, (255, 215, 0), 1, cv2.LINE_AA)
            rows.append(strip)
        title = np.full((title_h, width, 3), BACKGROUND, np.uint8)
        text = f"{root.resolve().name}  episode {episode}  task: {task}  length: {n} steps ({n / info.fps:.1f} s)"
        tscale = _font_scale(width) * 0.9
        # Shrink a long title (long task strings) rather than cut it off.
        while tscale > 0.3 and cv2.getTextSize(text, FONT, tscale, 1)[0][0] > width - 16:
            tscale -= 0.05
        cv2.putText(title, text, (8, title_h - 12), FONT, tscale, (240, 240, 240), 1, cv2.LINE_AA)
        sheet = np.concatenate([title, *rows], axis=0)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise DatasetError(f"{out_path}: cannot write the contact sheet (unknown image extension or unwritable)")
    return sheet
