"""LeRobot rows whose timestamps run a constant offset (at most one frame) off their video.

LeRobot finds the frame of a row at ``from_timestamp + timestamp`` in the camera's mp4, the
nearest one within ``tolerance_s`` (``decode_video_frames`` in ``lerobot/datasets/video_utils.py``;
its default tolerance is 1e-4 s). Some v2.0 writers numbered the timestamps from one frame
period (first row 0.05 s at 20 fps) while the encoder put the first frame at 0: the mp4 holds
exactly one frame per row, yet by timestamp row k lands on frame k + 1 and the last row on no
frame at all. LeRobot itself fails there (``FrameTimestampError`` on the last row) and shows
every other row the next row's frame. Such an episode is detected here: the table's timestamps
and the video's frame times differ by one constant offset of at most one frame period, and
every row shifted by it finds its own frame in the episode's part of the file. The readers then
map rows to frames by that offset and say so; ``strict_timestamps`` keeps the refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..base import ConversionError

#: Episode metadata key the reader sets when it mapped rows by an offset: camera -> seconds.
OFFSET_KEY = "video_timestamp_offset_s"
STRICT_HINT = "--strict-timestamps (strict_timestamps=True) refuses such data"


def frame_times(path: Path) -> np.ndarray:
    """Presentation times (s) of every frame of ``path``'s first video stream, sorted; read from
    the packets, nothing is decoded."""
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            if not container.streams.video:
                raise ConversionError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            base = float(stream.time_base)
            pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size]
    except av.error.FFmpegError as e:
        raise ConversionError(f"{path}: cannot be decoded as video ({e})") from e
    return np.sort(np.asarray(pts, dtype=np.float64) * base)


def _all_found(wanted: np.ndarray, times: np.ndarray, tolerance: float) -> bool:
    if times.size == 0:
        return False
    i = np.searchsorted(times, wanted)
    right = times[np.minimum(i, times.size - 1)]
    left = times[np.maximum(i - 1, 0)]
    nearest = np.minimum(np.abs(right - wanted), np.abs(left - wanted))
    return bool(np.all(nearest <= tolerance))


def episode_frame_times(times: np.ndarray, row: Mapping[str, Any], key: str, is_v3: bool,
                        tolerance: float) -> np.ndarray:
    """The frames of ``times`` that belong to one episode: all of a v2 file; in a v3 file those in
    ``[from_timestamp, to_timestamp)`` of the episode's row (half-open: the next episode starts there)."""
    if not is_v3:
        return times
    lo, hi = row.get(f"videos/{key}/from_timestamp"), row.get(f"videos/{key}/to_timestamp")
    keep = np.ones(times.size, bool)
    if lo is not None:
        keep &= times >= float(lo) - tolerance
    if hi is not None:
        keep &= times < float(hi) - tolerance
    return times[keep]


def find_offset(wanted: np.ndarray, times: np.ndarray, fps: float, tolerance: float) -> float | None:
    """The constant offset (s) to subtract from ``wanted`` (the rows' times in the file) so that
    each finds a frame of ``times`` (the episode's frames) within ``tolerance``: 0.0 when they
    already do, None when no offset of at most one frame period does."""
    wanted = np.asarray(wanted, dtype=np.float64)
    if wanted.size == 0 or _all_found(wanted, times, tolerance):
        return 0.0
    if times.size == 0 or not np.all(np.isfinite(wanted)) or wanted.size > times.size:
        return None
    period = 1.0 / fps
    # The first row goes with one of the episode's first two frames; anything else is more than
    # a constant one-frame slip and stays an error.
    for first in times[:2]:
        d = float(wanted[0] - first)
        if abs(d) <= tolerance or abs(d) > period + tolerance:
            continue
        if _all_found(wanted - d, times, tolerance):
            return d
    return None


def offset_note(offsets: Mapping[int, Mapping[str, float]]) -> str:
    """One line for a report: which episodes were mapped by which offset."""
    from ...datasets.stats import format_ranges

    by_ms: dict[float, list[int]] = {}
    for episode, cams in offsets.items():
        for d in cams.values():
            by_ms.setdefault(round(1000 * d, 1), []).append(int(episode))
    parts = [f"{ms:+.1f} ms in episode(s) {format_ranges(sorted(set(eps)))}" for ms, eps in sorted(by_ms.items())]
    return ("LeRobot timestamps run a constant offset off their videos (" + "; ".join(parts) + "): each row "
            f"was given its own frame by that offset instead of the next row's; {STRICT_HINT}")
