"""Exporters: MP4, GIF and contact sheet of an episode, read back to check what was written."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import h5py
import numpy as np
import pytest
from conftest import make_info, write_dataset

from telecorder.errors import DatasetError
from telecorder.viewers.export import camera_grid, contact_sheet, export_gif, export_mp4, plot_strip


@pytest.fixture
def two_cams(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    write_dataset(root, make_info(cameras=("front", "wrist"), fps=20.0), [24, 9])
    return root


def _decode(path: Path) -> tuple[list[np.ndarray], av.video.stream.VideoStream, float]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        return frames, stream, float(stream.average_rate)


def test_mp4_has_every_step_at_the_recorded_fps(two_cams, tmp_path):
    out = tmp_path / "ep0.mp4"
    assert export_mp4(two_cams, 0, out, width=640) == 24
    frames, _, rate = _decode(out)
    assert len(frames) == 24
    assert rate == pytest.approx(20.0)
    h, w = frames[0].shape[:2]
    # Two 64x48 cameras side by side at 320 px each (240 high) plus a 128 px plot strip.
    assert (w, h) == (640, 240 + 128)
    assert w % 2 == 0 and h % 2 == 0
    # The cursor moves: the plot strip differs between the first and last frame.
    assert np.abs(frames[0][250:].astype(int) - frames[-1][250:].astype(int)).max() > 50


def test_mp4_without_plot_and_odd_width(two_cams, tmp_path):
    out = tmp_path / "ep1.mp4"
    assert export_mp4(two_cams, 1, out, width=501, plot=False) == 9
    frames, _, _ = _decode(out)
    assert len(frames) == 9
    assert frames[0].shape[:2] == (188, 500)


def test_gif_opens_with_the_strided_frame_count(two_cams, tmp_path):
    out = tmp_path / "ep0.gif"
    # 20 fps is over the 10 fps GIF cap: every second step, played at 10 fps.
    assert export_gif(two_cams, 0, out, max_width=320) == 12
    frames, _, rate = _decode(out)
    assert len(frames) == 12
    assert rate == pytest.approx(10.0)
    assert frames[0].shape[1] == 320
    assert export_gif(two_cams, 0, tmp_path / "s5.gif", stride=5) == 5
    assert len(_decode(tmp_path / "s5.gif")[0]) == 5


def test_contact_sheet_size_and_tiles(two_cams, tmp_path):
    out = tmp_path / "sheet.png"
    sheet = contact_sheet(two_cams, 0, out, frames_per_camera=6, tile_width=160)
    png = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(png, sheet)
    th = 120  # 160 wide at the cameras' 4:3
    assert sheet.shape[1] == 6 * 160
    title_h = sheet.shape[0] - 2 * th - max(80, 960 // 6)
    assert 20 <= title_h <= 80
    tiles = [
        sheet[title_h + r * th + 30:title_h + (r + 1) * th - 2, j * 160 + 2:(j + 1) * 160 - 2]
        for r in range(2) for j in range(6)
    ]
    for tile in tiles:
        assert tile.std() > 10
    # Frames encode their step: the first and last tile of a camera row differ, and so do the rows.
    assert np.abs(tiles[0].astype(int) - tiles[5].astype(int)).mean() > 20
    assert np.abs(tiles[0].astype(int) - tiles[6].astype(int)).mean() > 20


def test_corrupt_frame_becomes_a_grey_tile(two_cams, tmp_path):
    with h5py.File(two_cams / "episodes/episode_000000.h5", "r+") as f:
        f["observation/images/front"][0] = np.frombuffer(b"not a jpeg at all", np.uint8)
    out = tmp_path / "ep0.mp4"
    assert export_mp4(two_cams, 0, out, width=640, plot=False) == 24
    frames, _, _ = _decode(out)
    tile = frames[0][60:200, 20:300].astype(int)
    assert np.abs(tile - 110).max() < 40 and tile.std() < 30  # mostly flat grey with the reason in dark text
    assert frames[1][60:200, 20:300].std() > 10  # the next step's frame is back
    assert contact_sheet(two_cams, 0, tmp_path / "sheet.png").shape[1] == 8 * 200
    assert export_gif(two_cams, 0, tmp_path / "ep0.gif") == 12


def test_not_a_dataset_or_missing_episode(two_cams, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a telecorder dataset"):
        export_mp4(tmp_path / "empty", 0, tmp_path / "x.mp4")
    with pytest.raises(DatasetError, match="no episode 7"):
        contact_sheet(two_cams, 7, tmp_path / "x.png")
    with pytest.raises(DatasetError, match="no episode 7"):
        export_gif(two_cams, 7, tmp_path / "x.gif")
    assert not (tmp_path / "x.mp4").exists()


def test_camera_grid_and_plot_strip_shapes():
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:, :, 1] = 200
    grid = camera_grid({"a": rgb, "b": "lost", "c": None}, 600)
    assert grid.shape == (2 * 225, 600, 3)  # 2x2 grid, tiles of 300x225
    assert grid[100, 150, 1] == 200 and grid[100, 450, 1] == 110
    vals = np.stack([np.sin(np.linspace(0, 6, 50)), np.cos(np.linspace(0, 6, 50))], axis=1)
    vals[10, 0] = np.nan
    plain = plot_strip(vals, ["x", "y"], None, 400, 100)
    cursor = plot_strip(vals, ["x", "y"], 25, 400, 100)
    assert plain.shape == (100, 400, 3)
    changed = np.flatnonzero(np.any(plain != cursor, axis=(0, 2)))
    assert changed.min() >= 190 and changed.max() <= 210
