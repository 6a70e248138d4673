"""``info``, ``stats``, ``view`` and ``export`` on datasets of other formats, read in place.

On the shared samples (LeRobot v2.1 G1, Octo's Bridge RLDS) and on one small dataset written by
our writers as LeRobot v3.0, ALOHA and robomimic, and by hand as LeRobot v2.0 and v2.1 (our
writer writes v3.0 only; the RLDS writer needs TensorFlow: test_foreign_browse_tf.py). Every
command leaves the source folder as it was; damaged metadata is one line and exit status 2;
``view`` reads only the episode it shows; a window under Xvfb steps through an episode.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pygame")

from conftest import SHARED, make_info, write_dataset
from lerobot_v20_meta import write_v20_meta

from telecorder.cli import main
from telecorder.converters.pipeline import ConvertOptions, convert
from telecorder.converters.video import VideoEncoder
from telecorder.datasets.dataset import Dataset
from telecorder.viewers.browser import EpisodeBrowser

LENGTHS = [12, 20, 7]
TASK = "stack the blocks"
G1 = SHARED / "samples" / "YifanTian07_G1-policy-train"
BRIDGE = SHARED / "samples" / "octo-models_octo" / "tests" / "debug_dataset" / "bridge_dataset"
needs_g1 = pytest.mark.skipif(not G1.is_dir(), reason=f"the LeRobot v2.1 sample is not at {G1}")
needs_bridge = pytest.mark.skipif(not BRIDGE.is_dir(), reason=f"the Bridge RLDS sample is not at {BRIDGE}")
HAND_LENGTH = 9  # steps of each episode of the hand-made LeRobot v2.0/v2.1 folders


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    root = Path(root)
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Exit status, standard output and error of a command run in this process; runs of whitespace
    (rich wraps lines at the terminal width) are one space."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, " ".join(out.out.split()), out.err


def one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error:") and "Traceback" not in err, err
    for f in fragments:
        assert f in err.replace("\n", ""), (f, err)


def hand_made_lerobot(root: Path, version: str, episodes: int = 3) -> Path:
    """A LeRobot v2.x folder as LeRobot lays it out: one Parquet file and one mp4 per episode; frame
    k of episode e has red level 7 * k + e (the step, readable back from a decoded frame)."""
    write_v20_meta(root, episodes=episodes, n=HAND_LENGTH, fps=10.0, camera_hw=(48, 64))
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = version
    (root / "meta/info.json").write_text(json.dumps(info))
    rng = np.random.default_rng(3)
    stats = []
    for e in range(episodes):
        n = HAND_LENGTH
        state = rng.normal(size=(n, 3)).astype(np.float32)
        action = rng.normal(size=(n, 3)).astype(np.float32)
        table = pa.table({
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.ravel()), 3),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(action.ravel()), 3),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / 10.0),
            "frame_index": pa.array(np.arange(n)),
            "episode_index": pa.array(np.full(n, e, np.int64)),
            "index": pa.array(np.arange(n) + e * n),
            "task_index": pa.array(np.zeros(n, np.int64)),
        })
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / f"data/chunk-000/episode_{e:06d}.parquet")
        with VideoEncoder(root / f"videos/chunk-000/observation.images.top/episode_{e:06d}.mp4", 64, 48, 10.0) as enc:
            for k in range(n):
                frame = np.zeros((48, 64, 3), np.uint8)
                frame[..., 0] = 7 * k + e
                frame[..., 1] = 90
                enc.append(frame)
        stats.append({"episode_index": e, "stats": {
            name: {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
                   "std": v.std(0).tolist(), "count": [n]} for name, v in (("observation.state", state),
                                                                         ("action", action))}})
    if version == "v2.1":  # what LeRobot's v2.0 -> v2.1 converter writes: per-episode stats, no stats.json
        (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
    return root


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same episodes as native and in each format our writers write without TensorFlow,
    plus hand-made LeRobot v2.0 and v2.1 folders."""
    base = tmp_path_factory.mktemp("foreign")
    native = base / "native"
    write_dataset(native, make_info(cameras=("front", "wrist")), LENGTHS, task=TASK)
    out = {"native": native}
    for fmt in ("lerobot", "aloha", "robomimic"):
        out[fmt] = base / fmt
        convert(native, out[fmt], ConvertOptions(to=fmt))
    out["lerobot_v20"] = hand_made_lerobot(base / "v20", "v2.0")
    out["lerobot_v21"] = hand_made_lerobot(base / "v21", "v2.1")
    return out


OURS = ("lerobot", "aloha", "robomimic")
ALL = (*OURS, "lerobot_v20", "lerobot_v21")


@pytest.mark.parametrize("name", ALL)
def test_info_json_on_every_format(formats, capsys, name):
    root = formats[name]
    before = snapshot(root)
    code, out, err = cli(capsys, "info", root, "--json", "--episodes")
    assert code == 0, err
    s = json.loads(out)
    fmt = name.split("_")[0]
    assert s["format"] == fmt and s["path"] == str(root)
    if name.startswith("lerobot_"):
        assert s["format_version"] == "v" + name[-2] + "." + name[-1]
        assert (s["episodes"], s["frames"], s["fps"]) == (3, 3 * HAND_LENGTH, 10.0)
        assert s["tasks"] == {"fold": 3} and s["robot_type"] == "koch"
        assert s["features"]["action"]["shape"] == [3] and s["features"]["action"]["names"] == ["a", "b", "c"]
        assert s["features"]["observation.images.top"]["shape"] == [48, 64, 3]
        assert s["camera_storage"] == {"top": "video"}
    else:
        assert s["format_version"] == ("v3.0" if fmt == "lerobot" else None)
        assert (s["episodes"], s["frames"], s["fps"]) == (3, sum(LENGTHS), 30.0)
        assert [e["length"] for e in s["episode_list"]] == LENGTHS
        assert s["tasks"] == {TASK: 3} and s["robot_type"] == "test_arm"
        # Success travels in our sidecar: episodes 0 and 2 succeeded.
        assert s["success_rate"] == pytest.approx(2 / 3)
        assert s["features"]["action"]["names"] == ["j0", "j1", "j2", "j3"]
        assert s["features"]["observation.images.front"]["shape"] == [48, 64, 3]
    assert s["duration_s"] == pytest.approx(s["frames"] / s["fps"])
    assert s["size_bytes"] == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert s["notes"]["frames"]
    code, out, err = cli(capsys, "info", root)
    assert code == 0 and "features" in out and "tasks" in out, err
    assert snapshot(root) == before


def _native_stats(formats) -> dict:
    return Dataset.open(formats["native"]).stats().summary()


@pytest.mark.parametrize("name", ("aloha", "robomimic"))
def test_stats_computed_match_the_native_ones(formats, capsys, name):
    root = formats[name]
    before = snapshot(root)
    code, out, err = cli(capsys, "stats", root, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["computed"] and report["source"].startswith("computed")
    native = _native_stats(formats)
    for feature in ("observation.state", "action"):
        got, want = report["features"][feature], native[feature]
        assert got["count"] == want["count"] == sum(LENGTHS)
        for key in ("mean", "std", "min", "max", "q01", "q99"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7, err_msg=f"{feature} {key}")
    code, out, _ = cli(capsys, "stats", root)
    assert code == 0 and "statistics computed" in out and "│ j3 " in out
    assert snapshot(root) == before


def test_stats_of_lerobot_are_its_own(formats, capsys):
    code, out, err = cli(capsys, "stats", formats["lerobot"], "--json")
    assert code == 0, err
    report = json.loads(out)
    assert not report["computed"] and "meta/stats.json" in report["source"]
    native = _native_stats(formats)
    np.testing.assert_allclose(report["features"]["action"]["mean"], native["action"]["mean"], rtol=1e-6)
    assert "observation.images.front" not in report["features"]  # numeric features only
    # v2.1: per-episode statistics merged (pooled variance) give what the columns give.
    code, out, err = cli(capsys, "stats", formats["lerobot_v21"], "--json")
    own = json.loads(out)
    assert code == 0 and "episodes_stats.jsonl" in own["source"], err
    from telecorder.viewers.overview import computed_statistics
    from telecorder.viewers.sources import open_any

    src = open_any(formats["lerobot_v21"])
    computed = computed_statistics(src, src.numeric_names()).features
    for key in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(own["features"]["action"][key], computed["action"][key], rtol=1e-5, atol=1e-6)
    assert "q01" not in own["features"]["action"]  # v2.1 per-episode files hold none: not made up
    # v2.0 here has no statistics file: computed, and said so.
    code, out, _ = cli(capsys, "stats", formats["lerobot_v20"])
    assert code == 0 and "statistics computed" in out


@pytest.mark.parametrize("name", ALL)
def test_view_screenshot_shows_the_step_and_the_instruction(formats, capsys, tmp_path, name):
    root = formats[name]
    before = snapshot(root)
    b = EpisodeBrowser(root, episode=1)
    try:
        b.seek(3)
        state = b.view_state()
        frame = state.cameras[0].frame
        assert frame is not None, state.cameras[0].error
        # The red level encodes the step (7 per step; + episode on the hand-made ones): step 3 shown.
        want = 7 * 3 + (1 if name.startswith("lerobot_") else 0)
        assert abs(float(frame[..., 0].mean()) - want) < 3.5, (float(frame[..., 0].mean()), want)
        assert state.metadata["task"] == ("fold" if name.startswith("lerobot_") else TASK)
        assert state.episode_count == 3 and "read-only" not in b.status
        b.toggle_bad()
        assert "read-only" in b.status
    finally:
        b.close()
    code, _, err = cli(capsys, "view", root, "--episode", "1", "--step", "3", "--screenshot", tmp_path / "v.png")
    assert code == 0 and (tmp_path / "v.png").stat().st_size > 1000, err
    assert snapshot(root) == before


@pytest.mark.parametrize("name", ALL)
def test_export_each_format(formats, capsys, tmp_path, name):
    root = formats[name]
    before = snapshot(root)
    n = HAND_LENGTH if name.startswith("lerobot_") else LENGTHS[2]
    code, out, err = cli(capsys, "export", root, "--episode", "2", "--mp4", tmp_path / "e.mp4",
                         "--gif", tmp_path / "e.gif", "--contact-sheet", tmp_path / "e.png", "--frames", "4")
    assert code == 0, err
    assert f"({n} frames)" in out
    import cv2

    sheet = cv2.imread(str(tmp_path / "e.png"))
    assert sheet is not None and sheet.shape[1] == 4 * 200
    assert (tmp_path / "e.gif").stat().st_size > 0
    assert snapshot(root) == before


def test_export_shows_the_instruction(formats, tmp_path, monkeypatch):
    from telecorder.viewers import export

    texts = []
    real = export.cv2.putText

    def put_text(img, text, *args, **kwargs):
        texts.append(text)
        return real(img, text, *args, **kwargs)

    monkeypatch.setattr(export.cv2, "putText", put_text)
    for name in ("robomimic", "lerobot_v20"):
        export.contact_sheet(formats[name], 0, tmp_path / "s.png", 2)
    assert any(f"task: {TASK}" in t for t in texts) and any("task: fold" in t for t in texts), texts


def test_view_reads_only_the_episode_it_shows(formats, tmp_path):
    # Every other episode's files removed: opening episode 1 must not miss them.
    lerobot = tmp_path / "lr"
    shutil.copytree(formats["lerobot_v21"], lerobot)
    for e in (0, 2):
        (lerobot / f"data/chunk-000/episode_{e:06d}.parquet").unlink()
        (lerobot / f"videos/chunk-000/observation.images.top/episode_{e:06d}.mp4").unlink()
    aloha = tmp_path / "aloha"
    shutil.copytree(formats["aloha"], aloha)
    (aloha / "episode_0.hdf5").unlink()
    (aloha / "episode_2.hdf5").write_bytes(b"not HDF5")
    for root in (lerobot, aloha):
        b = EpisodeBrowser(root, episode=1)
        try:
            assert b.view_state().cameras[0].frame is not None and b.length > 0
            b._page(+1)  # a damaged neighbour is shown as such, not a crash
            assert b.view_state().status and b.view_state().cameras[0].frame is None
        finally:
            b.close()


def test_forced_and_wrong_format(formats, capsys):
    code, out, err = cli(capsys, "info", formats["lerobot"], "--format", "lerobot", "--json")
    assert code == 0 and json.loads(out)["format"] == "lerobot", err
    one_line_error(*cli(capsys, "info", formats["lerobot"], "--format", "rlds")[::2], "not an RLDS/TFDS dataset")
    one_line_error(*cli(capsys, "stats", formats["aloha"], "--format", "robomimic")[::2])
    one_line_error(*cli(capsys, "view", formats["robomimic"], "--format", "aloha", "--screenshot", "x.png")[::2])
    with pytest.raises(SystemExit):
        main(["export", str(formats["aloha"]), "--format", "csv", "--gif", "x.gif"])
    capsys.readouterr()


def _damage(tmp_path: Path, formats, name: str, how) -> Path:
    root = tmp_path / name
    shutil.copytree(formats[name], root)
    how(root)
    return root


DAMAGES = {
    "info.json not JSON": ("lerobot", lambda r: (r / "meta/info.json").write_text('{"codebase_version": "v3.0", ')),
    "fps of wrong type": ("lerobot_v21", lambda r: (r / "meta/info.json").write_text(
        (r / "meta/info.json").read_text().replace('"fps": 10.0', '"fps": "ten"'))),
    "episodes metadata truncated": ("lerobot", lambda r: [f.write_bytes(f.read_bytes()[:100])
                                                           for f in (r / "meta/episodes").rglob("*.parquet")]),
    "episodes.jsonl garbage": ("lerobot_v20", lambda r: (r / "meta/episodes.jsonl").write_text("{[\n")),
    "huge declared length": ("lerobot_v21", lambda r: (r / "meta/episodes.jsonl").write_text(
        (r / "meta/episodes.jsonl").read_text().replace('"length": 9', '"length": 1e300'))),
    "robomimic truncated": ("robomimic", lambda r: (r / "demo.hdf5").write_bytes((r / "demo.hdf5").read_bytes()[:3000])),
    "aloha sidecar wrong types": ("aloha", lambda r: (r / "telecorder_meta.json").write_text(
        '{"format": "aloha", "info": {"fps": [], "features": 7}, "episodes": 3}')),
}


@pytest.mark.parametrize("what", DAMAGES)
def test_damaged_metadata_is_one_line(formats, capsys, tmp_path, what):
    name, how = DAMAGES[what]
    root = _damage(tmp_path, formats, name, how)
    for args in (("info",), ("stats",), ("view", "--screenshot", tmp_path / "x.png"),
                 ("export", "--gif", tmp_path / "x.gif")):
        code, out, err = cli(capsys, args[0], root, *args[1:])
        if code == 0:  # only what the command reads is checked: then it must be fine
            assert args[0] != "info", (what, out)
            continue
        one_line_error(code, err)


def test_damaged_episode_data(formats, capsys, tmp_path):
    # Metadata intact, one episode's rows damaged: info (metadata only) works, stats and export
    # name the file, the viewer shows the damage.
    root = _damage(tmp_path, formats, "lerobot_v21", lambda r: (r / "data/chunk-000/episode_000001.parquet")
                   .write_bytes(b"PAR1 not parquet"))
    assert cli(capsys, "info", root)[0] == 0
    code, _, err = cli(capsys, "stats", root, "--format", "lerobot")
    assert code == 0, err  # its own statistics: no data file read
    (root / "meta/episodes_stats.jsonl").unlink()
    one_line_error(*cli(capsys, "stats", root)[::2], "episode_000001.parquet")
    one_line_error(*cli(capsys, "export", root, "--episode", "1", "--gif", tmp_path / "x.gif")[::2],
                   "episode_000001.parquet")
    assert cli(capsys, "view", root, "--episode", "1", "--screenshot", tmp_path / "v.png")[0] == 0
    # A NaN in the rows: statistics refuse it, naming the episode.
    nan = _damage(tmp_path, formats, "lerobot_v20", lambda r: None)
    path = nan / "data/chunk-000/episode_000002.parquet"
    table = pq.read_table(path)
    state = np.array(table["observation.state"].to_pylist(), np.float32)
    state[4, 1] = np.nan
    table = table.set_column(0, "observation.state", pa.FixedSizeListArray.from_arrays(pa.array(state.ravel()), 3))
    pq.write_table(table, path)
    one_line_error(*cli(capsys, "stats", nan)[::2], "episode 2", "NaN")


# --------------------------------------------------------------------------- shared samples


@needs_g1
def test_g1_lerobot_sample(capsys, tmp_path):
    before = snapshot(G1)
    code, out, err = cli(capsys, "info", G1, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert (s["format"], s["format_version"], s["robot_type"]) == ("lerobot", "v2.1", "Unitree_G1_Inspire")
    assert (s["episodes"], s["frames"], s["fps"]) == (100, 35965, 30.0)
    assert s["tasks"] == {"Pick up the yellow bottle on the table.": 100}
    assert s["features"]["action"]["shape"] == [26] and s["features"]["action"]["names"][0] == "kLeftShoulderPitch"
    assert s["features"]["observation.images.cam_high"]["shape"] == [480, 640, 3]
    code, out, err = cli(capsys, "stats", G1, "--json")
    report = json.loads(out)
    assert code == 0 and "episodes_stats.jsonl" in report["source"], err
    assert report["features"]["action"]["count"] == 35965
    # Episode 1 has its video; episode 0's was left out of the sample: shown as missing, not a failure.
    b = EpisodeBrowser(G1, episode=1)
    try:
        assert b.view_state().cameras[0].frame.shape == (480, 640, 3)
        assert b.view_state().metadata["task"] == "Pick up the yellow bottle on the table."
        b._page(-1)
        assert b.episode_index == 0 and "no video" in b.view_state().cameras[0].error
    finally:
        b.close()
    code, _, err = cli(capsys, "view", G1, "--episode", "2", "--step", "100", "--screenshot", tmp_path / "g1.png")
    assert code == 0, err
    code, out, err = cli(capsys, "export", G1, "--episode", "2", "--contact-sheet", tmp_path / "g1_sheet.png",
                         "--frames", "3")
    assert code == 0, err
    assert snapshot(G1) == before


@needs_bridge
def test_bridge_rlds_sample(capsys, tmp_path):
    before = snapshot(BRIDGE)
    for path in (BRIDGE, BRIDGE / "1.0.0"):  # the TFDS version folder or its parent
        code, out, err = cli(capsys, "info", path, "--json")
        assert code == 0, err
        s = json.loads(out)
        assert (s["format"], s["format_version"], s["episodes"], s["frames"]) == ("rlds", "1.0.0", 50, 500)
        assert s["splits"] == {"train": 25, "val": 25}
        assert s["fps"] is None and s["duration_s"] is None and "no control rate" in s["notes"]["fps"]
        assert sum(s["tasks"].values()) == 50 and "put carrot on plate" in s["tasks"]
        assert s["features"]["observation.state"]["shape"] == [7]
        assert s["features"]["observation.images.image_0"]["shape"] == [64, 64, 3]
    assert "tensorflow" not in sys.modules  # read without TensorFlow
    code, out, err = cli(capsys, "stats", BRIDGE, "--json")
    report = json.loads(out)
    assert code == 0 and report["computed"] and report["features"]["action"]["count"] == 500, err
    b = EpisodeBrowser(BRIDGE, episode=30)  # in the val split
    try:
        state = b.view_state()
        assert state.episode_count == 50 and state.metadata["rlds_split"] == "val"
        assert state.metadata["task"] and state.cameras[0].frame.shape == (64, 64, 3)
    finally:
        b.close()
    code, _, err = cli(capsys, "view", BRIDGE, "--episode", "3", "--screenshot", tmp_path / "bridge.png")
    assert code == 0, err
    code, out, err = cli(capsys, "export", BRIDGE, "--episode", "3", "--mp4", tmp_path / "b.mp4")
    assert code == 0 and "(10 frames)" in out, err
    assert snapshot(BRIDGE) == before


def test_rlds_damaged_features_json(capsys, tmp_path):
    if not BRIDGE.is_dir():
        pytest.skip(f"the Bridge RLDS sample is not at {BRIDGE}")
    root = tmp_path / "bridge"
    shutil.copytree(BRIDGE / "1.0.0", root)
    (root / "features.json").write_text('{"featuresDict": {"features": {"steps": []}}}')
    for cmd in ("info", "stats"):
        one_line_error(*cli(capsys, cmd, root)[::2], "features.json")
    shutil.copy(BRIDGE / "1.0.0" / "features.json", root / "features.json")
    (root / "dataset_info.json").write_text('{"name": "bridge_dataset", "splits": "all"}')
    one_line_error(*cli(capsys, "view", root, "--screenshot", tmp_path / "x.png")[::2], "dataset_info.json")


# --------------------------------------------------------------------------- a real window


X_TOOLS = ("Xvfb", "xdotool")


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """The live-view test's private X server (Xvfb -displayfd), started for this module."""
    if any(shutil.which(t) is None for t in X_TOOLS):
        pytest.skip(f"needs {', '.join(X_TOOLS)} (setup.sh installs xvfb and xdotool)")
    from test_live_view_x11 import xvfb

    with contextlib.contextmanager(getattr(xvfb, "__wrapped__", xvfb))() as name:
        yield name


def _xdotool(display: str, *args: str) -> str:
    proc = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DISPLAY": display})
    assert proc.returncode == 0, f"xdotool {args}: {proc.stderr}"
    return proc.stdout.strip()


def _view_window(display: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    """The viewer's window (found by its class: SDL sets the title as UTF-8, which ``search --name`` misses)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = subprocess.run(["xdotool", "search", "--class", "telecorder"], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "DISPLAY": display}).stdout.split()
        for wid in found:
            if _xdotool(display, "getwindowname", wid).startswith("telecorder view"):
                return wid
        time.sleep(0.2)
    raise AssertionError(f"no viewer window appeared (exit {proc.poll()})")


def _wait_title(display: str, wid: str, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    title = ""
    while time.monotonic() < deadline and proc.poll() is None:
        title = _xdotool(display, "getwindowname", wid)
        if text in title:
            return
        time.sleep(0.1)
    raise AssertionError(f"the title never said {text!r} (last {title!r}, exit {proc.poll()})")


@pytest.mark.parametrize("which", ("lerobot", "rlds"))
def test_view_window_steps_an_episode_and_closes(formats, display, tmp_path, which):
    if which == "rlds" and not BRIDGE.is_dir():
        pytest.skip(f"the Bridge RLDS sample is not at {BRIDGE}")
    root = formats["lerobot"] if which == "lerobot" else BRIDGE
    before = snapshot(root)
    env = {k: v for k, v in os.environ.items() if k not in ("SDL_VIDEODRIVER", "WAYLAND_DISPLAY")}
    log = (tmp_path / "view.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "telecorder"), "view", str(root)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**env, "DISPLAY": display})
    try:
        wid = _view_window(display, proc)
        _wait_title(display, wid, f"({which}): episode 0 (1/", proc)
        _wait_title(display, wid, "step 1/", proc)
        _xdotool(display, "windowfocus", "--sync", wid)
        for _ in range(3):
            _xdotool(display, "key", "Right")
        _wait_title(display, wid, "step 4/", proc)
        _xdotool(display, "key", "Next")  # PgDn: the next episode, from its first step
        _wait_title(display, wid, "episode 1 (2/", proc)
        _wait_title(display, wid, "step 1/", proc)
        _xdotool(display, "key", "End")
        _wait_title(display, wid, "step 10/10" if which == "rlds" else f"step {LENGTHS[1]}/{LENGTHS[1]}", proc)
        _xdotool(display, "key", "q")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert "Traceback" not in (tmp_path / "view.log").read_text()
    assert snapshot(root) == before
