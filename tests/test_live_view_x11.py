"""The live view on a real X server: Xvfb, synthetic key presses through XTEST (xdotool), screenshots (xwd).

``collect --device keyboard`` runs as a person would start it, with DISPLAY set and no
SDL_VIDEODRIVER override; the test finds its window, holds keys in it and checks what the
recorded episodes say, and that the window shows the cameras and the key map. The
screenshot is kept as ``live_view.png`` in the test's tmp folder (its path is printed).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_cli import tool

from telecorder.collect.key_bindings import KEYBOARD, help_text
from telecorder.collect.live_view import _BACKGROUND, _KEYMAP_BG, view_layout

X_TOOLS = ("Xvfb", "xdotool", "xwd")
needs_x = pytest.mark.skipif(any(shutil.which(t) is None for t in X_TOOLS),
                             reason=f"needs {', '.join(X_TOOLS)} (setup.sh installs xvfb, xdotool and x11-apps)")


def test_collect_help_shows_the_bindings_the_devices_use():
    from telecorder.cli import COLLECT_EXAMPLES

    # cli/collect.py carries the paragraph as text (importing the devices for every command would be slow).
    assert COLLECT_EXAMPLES.endswith(help_text()), "paste key_bindings.help_text() into cli.COLLECT_EXAMPLES"
    assert "Enter save" in help_text() and "r/f up/down" in help_text()


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    """A private X server; Xvfb picks a free display number itself (-displayfd) and reports it when ready."""
    if any(shutil.which(t) is None for t in X_TOOLS):
        pytest.skip(f"needs {', '.join(X_TOOLS)} (setup.sh installs xvfb, xdotool and x11-apps)")
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(w)
    number = b""
    deadline = time.monotonic() + 60
    while not number.endswith(b"\n") and time.monotonic() < deadline and proc.poll() is None:
        if select.select([r], [], [], 1.0)[0]:
            chunk = os.read(r, 16)
            if not chunk:
                break
            number += chunk
    os.close(r)
    if not number.strip().isdigit():
        proc.kill()
        raise AssertionError(f"Xvfb did not start: {proc.communicate()[1].decode(errors='replace')[-2000:]}")
    try:
        yield f":{number.decode().strip()}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _x(display: str, *args: str, timeout: float = 60) -> str:
    env = {**os.environ, "DISPLAY": display, "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"xdotool {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


def _wait_title(display: str, wid: str, text: str, proc: subprocess.Popen, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    title = ""
    while time.monotonic() < deadline:
        title = _x(display, "getwindowname", wid)
        if text in title:
            return title
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"window title never said {text!r} (last: {title!r}; collect exit {proc.poll()})")


def read_xwd(data: bytes) -> np.ndarray:
    """An XWD dump (X11 XWDFileHeader, big-endian fields) as an RGB array, for TrueColor 24/32-bit screens."""
    h = np.frombuffer(data[:100], ">u4").astype(int)
    header_size, width, height = h[0], h[4], h[5]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = h[7], h[11], h[12], h[19]
    assert h[1] == 7 and h[3] == 24 and bits_per_pixel in (24, 32), f"unexpected XWD header {h[:20].tolist()}"
    step = bits_per_pixel // 8
    start = header_size + ncolors * 12
    rows = np.frombuffer(data[start:start + bytes_per_line * height], np.uint8).reshape(height, bytes_per_line)
    px = rows[:, : width * step].reshape(height, width, step)
    # LSB first: B G R (X); MSB first: (X) R G B.
    return np.ascontiguousarray(px[..., 2::-1] if byte_order == 0 else px[..., -3:])


def _screenshot(display: str, wid: str) -> np.ndarray:
    proc = subprocess.run(["xwd", "-id", wid, "-silent"], capture_output=True, timeout=60,
                          env={**os.environ, "DISPLAY": display})
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return read_xwd(proc.stdout)


def _crop(img: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = rect
    return img[y:y + h, x:x + w].astype(np.int32)


def _tiles_drawn(img: np.ndarray, layout) -> bool:
    """Every camera tile shows an image: varied pixels, not the black of an empty window."""
    return all(_crop(img, t).std() > 10 and _crop(img, t).mean() > 30 for t in layout.tiles)


def _ink_bands(region: np.ndarray, background: tuple[int, int, int]) -> tuple[float, int]:
    """Share of text pixels in a region of flat background, and how many separate rows of text they form."""
    ink = np.abs(region - np.array(background)).sum(axis=2) > 90
    rows = ink.any(axis=1)
    bands = int(rows[0]) + int(np.count_nonzero(rows[1:] & ~rows[:-1]))
    return float(ink.mean()), bands


def _collect_env(display: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SDL_VIDEODRIVER", "WAYLAND_DISPLAY")}
    return {**env, "DISPLAY": display, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "COLUMNS": "120"}


def _eef(ds_path: Path, episode: int) -> tuple[np.ndarray, np.ndarray]:
    from telecorder.datasets import Dataset
    from telecorder.sim import Kinematics, SimEnv

    env = SimEnv()
    kin = Kinematics(env.model)
    with Dataset.open(ds_path).episode(episode) as ep:
        state = ep.numeric("observation.state").astype(np.float64)
        cmd = ep.numeric("action_eef").astype(np.float64)
    measured = np.array([kin.fk(np.delete(s, env.gripper_index))[0] for s in state])
    return measured, cmd


def _hold(display: str, key: str, seconds: float) -> None:
    _x(display, "keydown", key)
    time.sleep(seconds)
    _x(display, "keyup", key)


@needs_x
@pytest.mark.slow
def test_keyboard_steers_in_the_live_window_of_a_real_x_server(xvfb, tmp_path):
    pytest.importorskip("mujoco")
    pytest.importorskip("pygame")
    out = tmp_path / "kb"
    log = (tmp_path / "collect.log").open("w")
    proc = subprocess.Popen(
        [tool("collect"), "--device", "keyboard", "--robot", "sim", "--episodes", "2", "--episode-time", "120",
         "--reset-time", "60", "--fps", "20", "--camera-size", "160x120", "--seed", "3", "--out", str(out)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_collect_env(xvfb))
    try:
        wid = _x(xvfb, "search", "--sync", "--class", "telecorder", timeout=120).split()[0]
        _wait_title(xvfb, wid, "episode 1/2 recording", proc)
        # What a person sees: both sim cameras, the status line, the keyboard's key map.
        layout = view_layout(2, len(KEYBOARD.map_lines()))
        deadline = time.monotonic() + 60
        img = _screenshot(xvfb, wid)
        while not _tiles_drawn(img, layout) and time.monotonic() < deadline:
            time.sleep(0.2)
            img = _screenshot(xvfb, wid)
        shot = tmp_path / "live_view.png"
        import cv2

        cv2.imwrite(str(shot), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        print(f"live view screenshot: {shot}")
        assert img.shape[:2] == layout.size[::-1], "the window has the live view's layout"
        assert _tiles_drawn(img, layout), f"camera tiles are blank; see {shot}"
        share, bands = _ink_bands(_crop(img, layout.keymap), _KEYMAP_BG)
        assert 0.005 < share < 0.3, f"key map text area looks empty or flooded ({share:.3f}); see {shot}"
        assert bands == len(KEYBOARD.map_lines()), f"{bands} lines of key map text drawn; see {shot}"
        assert _ink_bands(_crop(img, layout.status), _BACKGROUND)[1] == 1, f"no status line; see {shot}"

        _x(xvfb, "windowfocus", "--sync", wid)
        _hold(xvfb, "w", 1.5)  # forward
        _hold(xvfb, "r", 1.0)  # up: once 're-record' in the status line, now a motion key
        _hold(xvfb, "q", 1.0)  # yaw left: once 'quit'
        time.sleep(0.5)
        assert proc.poll() is None and "episode 1/2 recording" in _x(xvfb, "getwindowname", wid), \
            "a motion key ended the episode"
        _x(xvfb, "key", "Return")  # save
        _wait_title(xvfb, wid, "reset the scene", proc)
        _x(xvfb, "key", "Return")  # start the next episode now
        _wait_title(xvfb, wid, "episode 2/2 recording", proc)
        _x(xvfb, "key", "BackSpace")  # re-record it
        _wait_title(xvfb, wid, "reset the scene", proc)
        _x(xvfb, "key", "Return")
        _wait_title(xvfb, wid, "episode 2/2 recording", proc)
        _hold(xvfb, "s", 1.0)  # back
        _x(xvfb, "key", "Escape")  # save and quit
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "collect.log").read_text()
    assert "discarded; recording it again" in text and "2 episode(s) saved" in text, text

    measured, cmd = _eef(out, 0)
    d_cmd = cmd[-1] - cmd[0]
    d_cmd[3:6] = (d_cmd[3:6] + np.pi) % (2 * np.pi) - np.pi  # angles: the shortest way round
    # w for 1.5 s and r for 1 s at 0.1 m/s, q for 1 s at 0.5 rad/s; nothing else was pressed.
    assert d_cmd[0] > 0.05 and d_cmd[2] > 0.03 and d_cmd[5] > 0.15, d_cmd
    assert abs(d_cmd[1]) < 0.02 and abs(d_cmd[3]) < 0.05 and abs(d_cmd[4]) < 0.05, d_cmd
    moved = measured[-1] - measured[0]
    assert moved[0] > 0.03 and moved[2] > 0.02, moved
    # The second episode (re-recorded, then saved by Esc) went back.
    measured, cmd = _eef(out, 1)
    assert cmd[-1, 0] - cmd[0, 0] < -0.03 and measured[-1, 0] - measured[0, 0] < -0.01


def _no_display_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    cmd = [tool("collect"), "--device", "keyboard", "--robot", "sim", "--episodes", "1", "--sim-cameras", "none",
           "--out", str(tmp_path / "nobody")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**clean, "COLUMNS": "200", **env})


@pytest.mark.slow
def test_keyboard_without_a_display_is_refused_before_recording(tmp_path):
    pytest.importorskip("mujoco")
    pytest.importorskip("pygame")
    over_ssh = _no_display_run(tmp_path)
    assert over_ssh.returncode == 2, over_ssh.stdout + over_ssh.stderr
    msg = " ".join(over_ssh.stderr.split())
    assert "--device keyboard reads its keys from the live view window" in msg
    assert "DISPLAY and WAYLAND_DISPLAY are unset" in msg and "ssh -X" in msg and "--device gamepad" in msg
    assert msg.count("error:") == 1 and "Traceback" not in over_ssh.stderr
    dummy = _no_display_run(tmp_path, SDL_VIDEODRIVER="dummy")
    assert dummy.returncode == 2 and "SDL_VIDEODRIVER=dummy" in " ".join(dummy.stderr.split())
    assert not (tmp_path / "nobody").exists(), "nothing may be recorded"


@needs_x
def test_keyboard_with_no_display_still_gets_a_keys_only_window(xvfb, monkeypatch):
    pytest.importorskip("pygame")
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    from telecorder.collect.live_view import active_view, open_live_view

    warnings: list[str] = []
    view = open_live_view(["not a camera: never drawn"], KEYBOARD, False, warnings.append)
    try:
        assert view is not None and view.visible and not warnings
        assert active_view() is view and view.cameras == []
        assert view.layout().size == view_layout(0, len(KEYBOARD.map_lines())).size
    finally:
        if view is not None:
            view.close()
    assert active_view() is None


@needs_x
@pytest.mark.slow
def test_gamepad_steers_with_the_live_view_pumping_its_events(xvfb, tmp_path, monkeypatch):
    """With the view open only its thread pumps SDL; the pad's state must still reach the control loop."""
    pytest.importorskip("mujoco")
    pygame = pytest.importorskip("pygame")
    sys.path.insert(0, str(Path(__file__).parent))
    from rich.console import Console
    from test_gamepad import AXIS_MIN, M, attach_virtual_pad

    # After that import: test_gamepad sets SDL_VIDEODRIVER=dummy for its own tests.
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)

    from telecorder.collect.factory import DeviceConfig, make_devices
    from telecorder.collect.session import RecordingSession, SessionConfig

    pygame.quit()  # a display another test initialised (dummy driver) would stand in for the X window
    pygame.joystick.init()
    pad = attach_virtual_pad(at_rest=False)
    seen: dict[str, object] = {}
    try:
        for axis in (M.left_x, M.right_x, M.right_y):
            pad.axis(axis, 0)
        pad.axis(M.left_trigger, AXIS_MIN)
        pad.axis(M.right_trigger, AXIS_MIN)
        robot, teleop, cameras = make_devices(DeviceConfig(device="gamepad", sim_cameras=["front"],
                                                           camera_size=(96, 72), fps=20))
        session = RecordingSession(robot, teleop, cameras, SessionConfig(
            out=tmp_path / "pad", episodes=1, episode_time_s=1.5, reset_time_s=0, fps=20, display=True),
            console=Console(quiet=True))
        connect = teleop.connect

        def connect_and_look() -> None:
            from telecorder.collect.live_view import active_view

            view = active_view()
            seen.update(visible=view is not None and view.visible, controls=view and view.controls.device)
            connect()
            # Pushed once the pad is open: the new position has to come through the view's pumping.
            pad.axis(M.left_y, AXIS_MIN)  # stick forward: +x

        teleop.connect = connect_and_look
        session.run()
    finally:
        with contextlib.suppress(Exception):
            pad.detach()
        pygame.quit()
    assert seen == {"visible": True, "controls": "gamepad"}
    _, cmd = _eef(tmp_path / "pad", 0)
    assert cmd[-1, 0] - cmd[0, 0] > 0.1, "the stick's state did not reach the control loop"


def test_xwd_reader_on_a_known_image():
    """The XWD parser against a hand-built 2x2 dump in both byte orders."""
    def dump(byte_order: int) -> bytes:
        name = b"w\x00"
        header = [100 + len(name), 7, 2, 24, 2, 2, 0, byte_order, 32, byte_order, 32, 32, 8, 4,
                  0xFF0000, 0xFF00, 0xFF, 8, 256, 0, 2, 2, 0, 0, 0]
        pixels = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]
        body = b"".join(bytes((b, g, r, 0)) if byte_order == 0 else bytes((0, r, g, b)) for r, g, b in pixels)
        return np.array(header, ">u4").tobytes() + name + body

    for order in (0, 1):
        img = read_xwd(dump(order))
        assert img.tolist() == [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]]

