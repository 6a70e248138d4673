"""The episode viewer, headless: layout of a screenshot, keys, bad marking, damaged data."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import h5py
import numpy as np
import pytest

pygame = pytest.importorskip("pygame")

from conftest import make_info, write_dataset  # noqa: E402

from telecorder.datasets.async_writer import AsyncEpisodeWriter, Step  # noqa: E402
from telecorder.datasets.dataset import DatasetWriter  # noqa: E402
from telecorder.errors import DatasetError  # noqa: E402
from telecorder.viewers import EpisodeBrowser, screenshot  # noqa: E402
from telecorder.viewers.layout import PLACEHOLDER  # noqa: E402

FPS = 10.0


def solid_frame(step: int, camera: int) -> np.ndarray:
    """Camera 0 red, camera 1 green; brightness encodes the step."""
    img = np.zeros((48, 64, 3), np.uint8)
    img[..., camera] = 60 + 10 * step
    return img


def write_solid(root: Path, lengths: list[int], encoding: str = "png") -> None:
    info = make_info(cameras=("front", "wrist"), encoding=encoding, fps=FPS)
    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw, encode_threads=1)
        try:
            for n in lengths:
                writer.begin({"task": "pick", "language_instruction": "pick the cube"})
                for i in range(n):
                    writer.add(Step(
                        timestamp=i / FPS,
                        numeric={"observation.state": np.full(4, i, np.float32),
                                 "action": np.full(4, -i, np.float32)},
                        frames={c: solid_frame(i, j) for j, c in enumerate(info.cameras)},
                        frame_time={c: i / FPS - 0.004 for c in info.cameras},
                        frame_index={c: i for c in info.cameras},
                        lateness=0.01 if i == 3 else 0.0,
                    ))
                writer.end({"success": True}, {"task": "pick", "success": True}).result(timeout=30)
        finally:
            writer.close()


@pytest.fixture
def solid(tmp_path: Path) -> Path:
    root = tmp_path / "solid"
    write_solid(root, [15, 8, 5])
    return root


def key(k: int, mod: int = 0) -> pygame.event.Event:
    return pygame.event.Event(pygame.KEYDOWN, key=k, mod=mod)


def centre(rect: tuple[int, int, int, int]) -> tuple[int, int]:
    return rect[0] + rect[2] // 2, rect[1] + rect[3] * 2 // 3


def test_screenshot_shows_each_camera_at_its_place(solid: Path, tmp_path: Path) -> None:
    out = screenshot(solid, tmp_path / "shot.png", episode=0, step=7, size=(1000, 700))
    img = pygame.image.load(str(out))
    assert img.get_size() == (1000, 700)
    b = EpisodeBrowser(solid, size=(1000, 700))
    b.seek(7)
    b.render()
    front, wrist = b._current_layout().cameras
    # Side by side in the top half, each at the streams' 4:3 aspect.
    assert front[0] + front[2] <= wrist[0] and front[1] + front[3] <= 700 * 0.55
    for rect in (front, wrist):
        assert abs(rect[2] / rect[3] - 64 / 48) < 0.05
    level = 60 + 10 * 7
    r, g, bl, _ = img.get_at(centre(front))
    assert abs(r - level) <= 3 and g <= 3 and bl <= 3
    r, g, bl, _ = img.get_at(centre(wrist))
    assert abs(g - level) <= 3 and r <= 3 and bl <= 3
    b.close()


def test_keys_move_cursor_switch_episodes_and_mark_bad(solid: Path) -> None:
    b = EpisodeBrowser(solid)
    b.handle_event(key(pygame.K_RIGHT))
    assert b.step == 1
    b.handle_event(key(pygame.K_RIGHT, pygame.KMOD_LSHIFT))
    assert b.step == 1 + int(FPS)
    b.handle_event(key(pygame.K_END))
    assert b.step == 14
    b.handle_event(key(pygame.K_HOME))
    assert b.step == 0
    b.handle_event(key(pygame.K_EQUALS))
    assert b.rate == 2.0
    b.handle_event(key(pygame.K_MINUS))
    b.handle_event(key(pygame.K_MINUS))
    assert b.rate == 0.5
    b.handle_event(key(pygame.K_PAGEDOWN))
    assert b.episode_index == 1 and b.step == 0 and b.length == 8
    b.render()

    def index_line() -> dict:
        lines = (solid / "meta" / "episodes.jsonl").read_text().splitlines()
        return next(r for r in map(json.loads, lines) if r["episode_index"] == 1)

    b.handle_event(key(pygame.K_d))
    assert index_line()["bad"] is True and b.view_state().bad
    b.render()
    b.handle_event(key(pygame.K_d))
    assert "bad" not in index_line() and not b.view_state().bad
    b.handle_event(key(pygame.K_PAGEUP))
    assert b.episode_index == 0
    b.handle_event(key(pygame.K_PAGEUP))
    assert b.episode_index == 0
    b.close()


def test_playback_follows_timestamps_and_scrubbing(solid: Path) -> None:
    b = EpisodeBrowser(solid)
    b.handle_event(key(pygame.K_SPACE))
    assert b.playing
    b.advance(0.35)
    assert b.step == 3
    b.handle_event(key(pygame.K_EQUALS))
    b.advance(0.3)  # 0.6 s of episode time at 2x
    assert b.step == 9
    b.advance(10.0)
    assert b.step == 14 and not b.playing
    assert b.prefetch(1.0) > 0
    b.render()
    x, y, w, h = b._current_layout().timeline
    b.handle_event(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(x, y + h // 2), button=1))
    assert b.step == 0
    b.handle_event(pygame.event.Event(pygame.MOUSEMOTION, pos=(x + w // 2, y + h // 2), buttons=(1, 0, 0)))
    assert b.step == 7
    b.handle_event(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=(x + w // 2, y + h // 2), button=1))
    b.handle_event(pygame.event.Event(pygame.MOUSEMOTION, pos=(x + w, y + h // 2), buttons=(0, 0, 0)))
    assert b.step == 7
    state = b.view_state()
    assert list(state.late_steps) == [3]
    assert [round(c.age_ms) for c in state.cameras] == [4, 4]
    b.close()


def test_corrupt_frame_and_missing_stream_show_placeholders(solid: Path, tmp_path: Path) -> None:
    path = solid / "episodes" / "episode_000000.h5"
    with h5py.File(path, "r+") as f:
        f["observation/images/front"][4] = np.frombuffer(b"not an image at all", np.uint8)
    b = EpisodeBrowser(solid, size=(1000, 700))
    surf = b.render()
    b.seek(4)
    surf = b.render()
    front, wrist = b._current_layout().cameras
    assert surf.get_at((front[0] + front[2] - 4, front[1] + front[3] - 4))[:3] == PLACEHOLDER
    assert surf.get_at(centre(wrist))[:3] == (0, 60 + 10 * 4, 0)
    assert "cannot be decoded" in b.view_state().cameras[0].error
    b.handle_event(key(pygame.K_RIGHT))
    assert b.view_state().cameras[0].error is None

    path = solid / "episodes" / "episode_000001.h5"
    with h5py.File(path, "r+") as f:
        del f["observation/images/wrist"]
    b.handle_event(key(pygame.K_PAGEDOWN))
    surf = b.render()
    wrist = b._current_layout().cameras[1]
    assert surf.get_at((wrist[0] + wrist[2] - 4, wrist[1] + wrist[3] - 4))[:3] == PLACEHOLDER
    assert "missing" in b.view_state().cameras[1].error
    b.close()


def test_unreadable_episode_file_keeps_browser_alive(solid: Path) -> None:
    (solid / "episodes" / "episode_000001.h5").write_bytes(b"truncated")
    b = EpisodeBrowser(solid)
    b.handle_event(key(pygame.K_PAGEDOWN))
    b.render()
    assert b.length == 0 and "HDF5" in b.view_state().status
    b.handle_event(key(pygame.K_RIGHT))
    b.handle_event(key(pygame.K_PAGEDOWN))
    assert b.episode_index == 2 and b.length == 5
    b.close()


def test_not_a_dataset_is_a_dataset_error(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    with pytest.raises(DatasetError):
        EpisodeBrowser(folder)
    with pytest.raises(DatasetError, match="no such"):
        EpisodeBrowser(tmp_path / "nowhere")


def test_foreign_source_is_read_only(tmp_path: Path) -> None:
    lerobot = pytest.importorskip("telecorder.converters.lerobot")
    from telecorder.converters import open_reader
    from telecorder.converters.pipeline import ConvertOptions, convert

    src = tmp_path / "native"
    write_dataset(src, make_info(cameras=("front",)), [6])
    dst = tmp_path / "lr"
    convert(src, dst, ConvertOptions(to="lerobot"))
    assert isinstance(open_reader(dst), lerobot.LeRobotReader)
    b = EpisodeBrowser(dst)
    b.handle_event(key(pygame.K_END))
    assert b.step == 5
    b.handle_event(key(pygame.K_d))
    assert "read-only" in b.status and not b.view_state().bad
    assert b.view_state().cameras[0].frame is not None
    b.render()
    b.close()


def test_views_render_after_pygame_was_quit_in_between(solid: Path, tmp_path: Path) -> None:
    # Another window (or the program embedding the viewer) may quit pygame between two views;
    # fonts cached before it must not be used after (that crashed the process).
    first = screenshot(solid, tmp_path / "a.png", episode=0, step=1, size=(640, 480))
    pygame.quit()
    pygame.init()  # as a window test does after: the font module is up again, the old fonts are not
    second = screenshot(solid, tmp_path / "b.png", episode=0, step=1, size=(640, 480))
    assert pygame.image.load(str(first)).get_size() == pygame.image.load(str(second)).get_size() == (640, 480)
