"""The recorder with real devices: OpenCV cameras on video files, the MuJoCo follower."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from telecorder.collect.cameras.opencv import CameraSpec, OpenCVCamera
from telecorder.collect.cameras.sim import SimCameraRig
from telecorder.collect.devices.keyboard import parse_keys
from telecorder.collect.interfaces import Event
from telecorder.collect.robots.sim import SimRobot
from telecorder.collect.session import RecordingSession, SessionConfig
from telecorder.datasets.dataset import Dataset
from telecorder.datasets.doctor import check_dataset
from telecorder.errors import CameraError

pytest.importorskip("mujoco")


def make_video(path: Path, frames: int, fps: float = 30.0, size: tuple[int, int] = (160, 120)) -> Path:
    """A video whose frame k shows k in its pixel values, written with OpenCV's own encoder."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for k in range(frames):
        img = np.full((h, w, 3), (k * 5) % 256, np.uint8)
        cv2.putText(img, str(k), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
        writer.write(img)
    writer.release()
    return path


def sim_session(out: Path, cameras, episodes: int, episode_time: float, fps: float = 30.0) -> RecordingSession:
    from telecorder.collect.devices.scripted import ScriptedTeleop
    from telecorder.collect.robots.sim import SimRobot

    robot = SimRobot(fps=fps, seed=1)
    teleop = ScriptedTeleop(robot, seed=1)
    cfg = SessionConfig(out=out, episodes=episodes, episode_time_s=episode_time, reset_time_s=0, task="pick", fps=fps)
    return RecordingSession(robot, teleop, cameras, cfg, console=Console(quiet=True))


def test_opencv_camera_and_sim_robot_stay_in_sync(tmp_path):
    video = make_video(tmp_path / "cam.avi", 60)
    cams = [OpenCVCamera.from_spec(CameraSpec.parse(f"side={video},loop"))]
    summary = sim_session(tmp_path / "ds", cams, episodes=2, episode_time=1.5).run()
    assert len(summary.saved) == 2

    ds = Dataset.open(tmp_path / "ds")
    assert ds.info.cameras == ["side"]
    assert ds.info.features["observation.images.side"].shape == (120, 160, 3)
    period = 1 / 30
    for ep in ds:
        with ep:
            n = len(ep)
            assert n == 45
            ts = ep.timestamps()
            cap = ep.image_timestamps("side")
            idx = ep.frame_indices("side")
            assert np.all(np.diff(ts) > 0)
            assert np.all(np.diff(cap) >= 0), "capture times must never go backwards"
            assert np.all(np.diff(idx) >= 0)
            age = ts - cap
            assert age.min() >= 0, "a frame cannot be used before it was captured"
            # The newest frame is used: typically under a period old. How old at worst depends on how the
            # host schedules the camera thread (benchmarks/record.py measures it); a frame left over from
            # another episode or a stuck camera would be far older than this bound.
            assert np.median(age) < period, f"median frame age {np.median(age) * 1000:.1f} ms"
            assert age.max() < 0.5, f"frame age up to {age.max() * 1000:.1f} ms"
            # The recorded image is the one the camera delivered at that index (value encodes k mod 60).
            k = int(idx[n // 2]) % 60
            assert abs(float(ep.frame("side", n // 2)[5:20, 100:150].mean()) - (k * 5) % 256) < 6
            state = ep.numeric("observation.state")
            action = ep.numeric("action")
            assert state.shape == action.shape == (n, 6)
    report = check_dataset(tmp_path / "ds")
    assert report.ok, report.all_errors


def test_camera_file_ending_mid_episode_is_a_clear_error_and_earlier_episodes_survive(tmp_path):
    video = make_video(tmp_path / "short.avi", 45)  # 1.5 s: ends during the second episode
    cams = [OpenCVCamera.from_spec(CameraSpec.parse(f"side={video}"))]
    session = sim_session(tmp_path / "ds", cams, episodes=3, episode_time=1.0)
    with pytest.raises(CameraError, match=r"camera 'side' .*video file ended after 45 frames"):
        session.run()
    ds = Dataset.open(tmp_path / "ds")
    assert ds.episode_indices == [0]
    with ds.episode(0) as ep:
        assert len(ep) == 30
    assert not list((tmp_path / "ds/episodes").glob(".*partial*"))
    assert check_dataset(tmp_path / "ds").ok


def test_unopenable_camera_is_a_clear_error(tmp_path):
    cam = OpenCVCamera("front", str(tmp_path / "nope.mp4"))
    with pytest.raises(CameraError, match=r"camera 'front' .*nope.mp4.*no such file"):
        cam.start()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(CameraError, match="camera 'front'"):
        OpenCVCamera("front", str(junk)).start()


def test_camera_spec_parsing():
    spec = CameraSpec.parse("wrist=/dev/video2,size=640x480,fps=60")
    assert (spec.name, spec.source, spec.width, spec.height, spec.fps, spec.loop) == (
        "wrist", "/dev/video2", 640, 480, 60.0, False
    )
    assert CameraSpec.parse("top=0").source == 0
    assert CameraSpec.parse("top=clip.mp4,loop").loop
    with pytest.raises(ValueError, match="NAME=SOURCE"):
        CameraSpec.parse("clip.mp4")
    with pytest.raises(ValueError, match="unknown option"):
        CameraSpec.parse("top=clip.mp4,speed=2")


def test_terminal_key_parsing():
    assert parse_keys(b"n") == [Event.SAVE_EPISODE]
    assert parse_keys(b"\x1b[C\x1b[D") == [Event.SAVE_EPISODE, Event.DISCARD_EPISODE]
    assert parse_keys(b"\x1b") == [Event.STOP]
    assert parse_keys(b"Q") == [Event.STOP]
    assert parse_keys(b"\x1b[Ax") == []
    assert parse_keys(b"i") == [Event.INTERVENE]


def test_frozen_network_camera_is_detected_within_a_second():
    """A real MJPEG-over-HTTP camera on localhost that stops sending but keeps the connection open."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()

    class Stream(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for k in range(20):
                    _, buf = cv2.imencode(".jpg", np.full((120, 160, 3), k * 10, np.uint8))
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(buf)
                                     + buf.tobytes() + b"\r\n")
                    self.wfile.flush()
                    time.sleep(1 / 30)
                release.wait(10)  # frozen: nothing more, connection still open
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    cam = OpenCVCamera("net", url, stall_timeout_s=1.0)
    try:
        cam.start()
        assert (cam.width, cam.height) == (160, 120)
        last_new = time.monotonic()
        last_index = -1
        with pytest.raises(CameraError, match=r"camera 'net' \(http://127\.0\.0\.1:\d+/stream\.mjpg\): no new frame"):
            while time.monotonic() - last_new < 5:
                frame = cam.latest()
                if frame.index != last_index:
                    last_index, last_new = frame.index, time.monotonic()
                time.sleep(0.01)
        assert time.monotonic() - last_new < 1.3, "the stall must be reported within about a second"
        assert last_index >= 10
    finally:
        release.set()
        cam.stop()
        server.shutdown()


def test_live_view_draws_and_takes_keys(tmp_path, monkeypatch):
    pygame = pytest.importorskip("pygame")
    import time

    from telecorder.collect.live_view import LiveView

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    video = make_video(tmp_path / "cam.avi", 60)
    cam = OpenCVCamera.from_spec(CameraSpec.parse(f"side={video},loop"))
    cam.start()
    try:
        with LiveView([cam], fps=20) as view:
            deadline = time.monotonic() + 5
            while view.frames_drawn < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert view.error is None and view.frames_drawn >= 5
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_n))
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_q))
            events: set[Event] = set()
            while not events and time.monotonic() < deadline:
                time.sleep(0.05)
                events |= view.poll()
            assert events == {Event.SAVE_EPISODE, Event.STOP}
    finally:
        cam.stop()


@pytest.mark.slow
def test_collect_with_display_records_normally(tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    from telecorder.collect.devices.scripted import ScriptedTeleop

    robot = SimRobot(seed=2)
    cams = SimCameraRig(robot, ["front"], 96, 72, 30).cameras()
    cfg = SessionConfig(out=tmp_path / "ds", episodes=1, episode_time_s=2, reset_time_s=0, fps=30, display=True)
    # What the live view sees: the newest frame, which follows the recording's captures.
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                seen.add(cams[0].latest().index)
            except CameraError:
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        summary = RecordingSession(robot, ScriptedTeleop(robot, seed=2), cams, cfg, console=Console(quiet=True)).run()
    finally:
        done.set()
        watcher.join()
    assert len(summary.saved) == 1 and summary.saved[0]["length"] == 60
    assert len(seen) >= 5, f"the newest frame should move on during the episode, saw {sorted(seen)}"


class LoggingSimRobot(SimRobot):
    """A SimRobot that keeps the full simulation state (qpos) of every observation, in order."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.observed_qpos: list[np.ndarray] = []

    def observe(self):
        self.observed_qpos.append(self.env.snapshot()[0])
        return super().observe()


def record_sim(tmp_path: Path, *, episodes: int = 1, episode_time: float = 1.5, fps: float = 30.0,
               size: tuple[int, int] = (96, 72), camera_fps: float | None = None, seed: int = 4):
    from telecorder.collect.devices.scripted import ScriptedTeleop

    robot = LoggingSimRobot(fps=fps, seed=seed)
    rig = SimCameraRig(robot, ["front", "wrist"], size[0], size[1], camera_fps or fps)
    cfg = SessionConfig(out=tmp_path / "ds", episodes=episodes, episode_time_s=episode_time, reset_time_s=0,
                        task="pick", fps=fps, image_encoding="png")
    session = RecordingSession(robot, ScriptedTeleop(robot, seed=seed), rig.cameras(), cfg, console=Console(quiet=True))
    return robot, session


def test_sim_cameras_show_exactly_the_state_of_each_tick(tmp_path):
    """Each step's frame of each sim camera is the render of that step's own state: no repeats, no drops."""
    from telecorder.sim.render import SimRenderer

    robot, session = record_sim(tmp_path, episodes=2)
    summary = session.run()
    assert len(summary.saved) == 2
    ds = Dataset.open(tmp_path / "ds")
    renderer = SimRenderer(robot.env.model, 96, 72)
    observed = iter(robot.observed_qpos)
    try:
        for ep in ds:
            with ep:
                n = len(ep)
                assert n > 10
                ts = ep.timestamps()
                qpos = [next(observed) for _ in range(n)]
                for cam in ("front", "wrist"):
                    idx = ep.frame_indices(cam)
                    assert np.array_equal(np.diff(idx), np.ones(n - 1)), f"{cam}: frame counter {idx}"
                    # The capture time is the tick's own time: the frame shows the state observed then.
                    assert np.array_equal(ep.image_timestamps(cam), ts)
                    moved = 0
                    for i in range(n):
                        frame = ep.frame(cam, i)
                        assert np.array_equal(frame, renderer.render(qpos[i], cam)), f"{cam} step {i}"
                        if i and not np.array_equal(frame, ep.frame(cam, i - 1)):
                            moved += 1
                    assert moved > n // 2, "the arm should move in most steps (else the check above proves little)"
                # Both cameras of a step come from one snapshot.
                assert np.array_equal(ep.frame_indices("front"), ep.frame_indices("wrist"))
        assert next(observed, None) is None
    finally:
        renderer.close()
    for outcome in summary.outcomes:
        assert outcome.repeated_frames == {"front": 0, "wrist": 0}
        assert outcome.dropped_frames == {"front": 0, "wrist": 0}
    report = check_dataset(tmp_path / "ds", decode_frames="none")
    for ep in report.episodes:
        for cs in ep.sync.cameras.values():
            assert (cs.repeated, cs.skipped, cs.age_max) == (0, 0, 0.0)
        assert not [w for w in ep.warnings if "camera" in w], ep.warnings


def test_slow_sim_rendering_makes_ticks_late_and_never_drops_a_frame(tmp_path, monkeypatch):
    """Backpressure: rendering three times slower than the loop holds the loop (recorded), every tick keeps its frame."""
    from telecorder.sim.render import SimRenderer

    real_render = SimRenderer.render

    def slow_render(self, qpos, camera):
        time.sleep(0.05)  # two cameras: 100 ms per capture against a 33 ms period
        return real_render(self, qpos, camera)

    monkeypatch.setattr(SimRenderer, "render", slow_render)
    robot, session = record_sim(tmp_path, episode_time=2.0)
    summary = session.run()
    outcome = summary.outcomes[0]
    assert outcome.missed_ticks > 0 and outcome.late_ticks > 0
    ds = Dataset.open(tmp_path / "ds")
    with ds.episode(ds.episode_indices[0]) as ep:
        n = len(ep)
        assert n == outcome.steps == len(robot.observed_qpos)
        for cam in ("front", "wrist"):
            assert np.array_equal(np.diff(ep.frame_indices(cam)), np.ones(n - 1))
            assert np.array_equal(ep.image_timestamps(cam), ep.timestamps())
    report = check_dataset(tmp_path / "ds", decode_frames="none")
    assert any("missed tick" in w for w in report.all_warnings), report.all_warnings


def test_control_loop_stall_opens_no_gap_in_sim_frame_numbers(tmp_path, monkeypatch):
    """A tick held up for longer than the cameras wait before rendering previews: still one frame per step."""
    from telecorder.collect.devices.scripted import ScriptedTeleop

    real_read = ScriptedTeleop.read
    calls = {"n": 0}

    def stalling_read(self, observation):
        calls["n"] += 1
        if calls["n"] in (10, 20):
            time.sleep(3 * SimCameraRig.IDLE_AFTER_S)  # e.g. a bus timeout: long enough for previews to start
        return real_read(self, observation)

    monkeypatch.setattr(ScriptedTeleop, "read", stalling_read)
    _, session = record_sim(tmp_path, episode_time=1.5)
    summary = session.run()
    assert summary.outcomes[0].missed_ticks > 0
    ds = Dataset.open(tmp_path / "ds")
    with ds.episode(ds.episode_indices[0]) as ep:
        for cam in ("front", "wrist"):
            assert np.array_equal(np.diff(ep.frame_indices(cam)), np.ones(len(ep) - 1))
    assert summary.outcomes[0].dropped_frames == {"front": 0, "wrist": 0}


def test_sim_camera_slower_than_the_loop_repeats_frames_as_expected(tmp_path):
    _, session = record_sim(tmp_path, fps=30.0, camera_fps=15.0, episode_time=1.0)
    session.run()
    ds = Dataset.open(tmp_path / "ds")
    with ds.episode(ds.episode_indices[0]) as ep:
        n = len(ep)
        idx = ep.frame_indices("front")
        # Every other tick captures; the ticks between reuse its frame (capture time and all).
        assert np.array_equal(idx - idx[0], np.arange(n) // 2)
        cap, ts = ep.image_timestamps("front"), ep.timestamps()
        assert np.array_equal(cap, ts[(np.arange(n) // 2) * 2])
    report = check_dataset(tmp_path / "ds", decode_frames="none")
    assert not [w for w in report.all_warnings if "camera" in w], report.all_warnings


def test_sim_render_failure_mid_episode_is_a_camera_error_and_earlier_episodes_survive(tmp_path, monkeypatch):
    from telecorder.sim.render import SimRenderer

    real_render = SimRenderer.render
    calls = {"n": 0}

    def failing_render(self, qpos, camera):
        calls["n"] += 1
        if calls["n"] > 2 * 60:  # two cameras: past the first episode's 45 captures, within the second
            raise RuntimeError("GL context lost")
        return real_render(self, qpos, camera)

    monkeypatch.setattr(SimRenderer, "render", failing_render)
    _, session = record_sim(tmp_path, episodes=3)
    with pytest.raises(CameraError, match="GL context lost"):
        session.run()
    ds = Dataset.open(tmp_path / "ds")
    assert ds.episode_indices == [0]
    assert check_dataset(tmp_path / "ds").ok


def test_sim_camera_latest_follows_resets_between_episodes():
    """Outside a recording (the live view between episodes) the rig renders state changes by itself."""
    robot = SimRobot(seed=5)
    robot.connect()
    (cam,) = SimCameraRig(robot, ["front"], 64, 48, 30).cameras()
    cam.start()
    try:
        first = cam.latest()
        robot.reset(6)
        deadline = time.monotonic() + 10
        while cam.latest().capture_ns == first.capture_ns and time.monotonic() < deadline:
            time.sleep(0.01)
        after = cam.latest()
        assert after.capture_ns > first.capture_ns
        assert not np.array_equal(after.image, first.image), "the cube moved with the reset"
        # A request captures the state as it is at the request, stamped with the time given;
        # previews do not advance the frame counter, captures do.
        frames = [cam.request(123 + i).result(timeout=10) for i in range(3)]
        assert [f.capture_ns for f in frames] == [123, 124, 125]
        assert [f.index for f in frames] == [after.index + 1, after.index + 2, after.index + 3]
        assert np.array_equal(frames[0].image, after.image)
    finally:
        cam.stop()
    with pytest.raises(CameraError, match="not started"):
        cam.request(456)
