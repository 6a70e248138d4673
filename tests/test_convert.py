"""The convert pipeline: transforms, atomic output, bad episodes, workers, and round trips per format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_info, write_dataset
from test_cli import run, tool

from telecorder.converters import ConversionError, detect_format, open_reader
from telecorder.converters.pipeline import (
    ConvertOptions,
    convert,
    parse_cameras,
    parse_episode_ranges,
)
from telecorder.datasets import Dataset
from telecorder.datasets.stats import format_ranges


@pytest.fixture
def source(tmp_path):
    info = make_info(cameras=("front", "wrist"))
    root = tmp_path / "src"
    steps = write_dataset(root, info, [12, 20, 9, 15], task="stack the blocks")
    return root, steps


def test_parsers():
    assert parse_episode_ranges("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_cameras("front:image,wrist") == {"front": "image", "wrist": "wrist"}
    with pytest.raises(ValueError, match="0-9,15"):
        parse_episode_ranges("a-b")


def test_native_to_native_with_transforms(source, tmp_path):
    root, steps = source
    dst = tmp_path / "out"
    report = convert(root, dst, ConvertOptions(to="native", episodes=[1, 3], image_size=(32, 24),
                                               cameras={"front": "image"}, fps=15))
    assert report.episodes == 2 and dst.is_dir() and not (tmp_path / ".out.partial").exists()
    ds = Dataset.open(dst)
    assert ds.info.cameras == ["image"] and ds.info.fps == 15
    assert ds.info.features["observation.images.image"].shape == (24, 32, 3)
    assert [r["source_episode_index"] for r in ds.records] == [1, 3]
    with ds.episode(0) as ep:
        # 20 steps at 30 Hz span 0.633 s: at 15 Hz that is ticks 0..9, each the step at or before it.
        assert len(ep) == 10
        state = np.stack([s.numeric["observation.state"] for s in steps[1]])
        np.testing.assert_array_equal(ep.numeric("observation.state"), state[::2])
        assert ep.frame("image", 3).shape == (24, 32, 3)
        assert ep.attrs["task"] == "stack the blocks"


def test_existing_destination_needs_overwrite(source, tmp_path):
    root, _ = source
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="pass --overwrite"):
        convert(root, dst, ConvertOptions(to="native"))
    assert (dst / "keep.txt").exists()
    convert(root, dst, ConvertOptions(to="native", overwrite=True))
    assert len(Dataset.open(dst)) == 4


def test_bad_episode_stops_or_is_skipped_and_listed(source, tmp_path):
    root, _ = source
    ep = root / "episodes/episode_000002.h5"
    ep.write_bytes(ep.read_bytes()[:1500])
    with pytest.raises(ConversionError, match=r"episode_000002\.h5"):
        convert(root, tmp_path / "strict", ConvertOptions(to="native"))
    assert not (tmp_path / "strict").exists(), "a failed conversion leaves nothing under the destination name"
    report = convert(root, tmp_path / "lenient", ConvertOptions(to="native", skip_bad=True))
    assert report.episodes == 3 and [i for i, _ in report.skipped] == [2]
    assert "episode_000002.h5" in report.skipped[0][1]


def test_workers_give_the_same_result(source, tmp_path):
    root, _ = source
    convert(root, tmp_path / "w1", ConvertOptions(to="native", workers=1))
    convert(root, tmp_path / "w2", ConvertOptions(to="native", workers=2))
    a, b = Dataset.open(tmp_path / "w1"), Dataset.open(tmp_path / "w2")
    assert len(a) == len(b) == 4
    for i in a.episode_indices:
        with a.episode(i) as x, b.episode(i) as y:
            np.testing.assert_array_equal(x.numeric("action"), y.numeric("action"))
            np.testing.assert_array_equal(x.frame("wrist", 5), y.frame("wrist", 5))


def test_resume_keeps_converted_episodes(source, tmp_path):
    root, _ = source
    dst = tmp_path / "out"
    # An interrupted run left two converted episodes in its work folder.
    def interrupt(done: int, total: int, frames: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(root, dst, ConvertOptions(to="native"), on_episode=interrupt)
    report = convert(root, dst, ConvertOptions(to="native", resume=True))
    assert report.resumed == 2 and report.episodes == 2
    assert [r["source_episode_index"] for r in Dataset.open(dst).records] == [0, 1, 2, 3]


def test_unknown_source_is_a_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x/readme.txt").write_text("hi")
    with pytest.raises(ConversionError, match="not a dataset telecorder recognises"):
        detect_format(tmp_path / "x")


def test_convert_cli(source, tmp_path):
    root, _ = source
    proc = run(tool("telecorder"), "convert", str(root), str(tmp_path / "c"), "--to", "native", "--episodes", "0-1",
               "--image-size", "32x24", check=True)
    assert "wrote 2 episode(s)" in proc.stdout
    bad = run(tool("telecorder"), "convert", str(root), str(tmp_path / "c"), "--to", "native")
    assert bad.returncode == 2 and "--overwrite" in bad.stderr and "Traceback" not in bad.stderr
    info = json.loads(run(tool("telecorder"), "info", str(tmp_path / "c"), "--json", check=True).stdout)
    assert info["episodes"] == 2


ROUND_TRIP_FORMATS = ["native", "lerobot", pytest.param("rlds", marks=pytest.mark.tf), "aloha", "robomimic"]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("fmt", ROUND_TRIP_FORMATS)
def test_round_trip_native_to_format_and_back(fmt, tmp_path):
    if fmt == "rlds":
        pytest.importorskip("tensorflow_datasets", reason="the rlds extra is not installed")
    info = make_info(cameras=("front", "wrist"))
    src = tmp_path / "src"
    steps = write_dataset(src, info, [14, 9], task="put the cube in the bowl")
    mid, back = tmp_path / f"as_{fmt}", tmp_path / "back"
    convert(src, mid, ConvertOptions(to=fmt))
    assert detect_format(mid) == fmt
    convert(mid, back, ConvertOptions(to="native"))
    orig, again = Dataset.open(src), Dataset.open(back)
    assert len(again) == len(orig) == 2
    assert sorted(again.info.cameras) == ["front", "wrist"]
    for k, i in enumerate(orig.episode_indices):
        with orig.episode(i) as a, again.episode(again.episode_indices[k]) as b:
            assert len(a) == len(b) == len(steps[k])
            for name in ("observation.state", "action"):
                np.testing.assert_allclose(b.numeric(name), a.numeric(name), rtol=0, atol=1e-6)
            np.testing.assert_allclose(b.timestamps(), a.timestamps(), atol=1e-6)
            assert b.attrs.get("task") == "put the cube in the bowl"
            for cam in ("front", "wrist"):
                for step in (0, len(a) - 1):
                    assert _psnr(a.frame(cam, step), b.frame(cam, step)) >= 35
    reader = open_reader(mid)
    assert len(reader.episode_indices()) == 2


SAMPLES = Path(__file__).resolve().parents[2] / "shared/samples"
G1 = SAMPLES / "YifanTian07_G1-policy-train"
BRIDGE = SAMPLES / "octo-models_octo/tests/debug_dataset/bridge_dataset/1.0.0"


def _fan_out(native: Path, tmp_path: Path, formats: list[str]) -> None:
    """Convert a native dataset to each format and back, checking the numbers survive."""
    orig = Dataset.open(native)
    for fmt in formats:
        convert(native, tmp_path / fmt, ConvertOptions(to=fmt))
        back = tmp_path / f"{fmt}_back"
        convert(tmp_path / fmt, back, ConvertOptions(to="native"))
        again = Dataset.open(back)
        assert len(again) == len(orig), fmt
        with orig.episode(orig.episode_indices[0]) as a, again.episode(again.episode_indices[0]) as b:
            np.testing.assert_allclose(b.numeric("action"), a.numeric("action"), atol=1e-6, err_msg=fmt)
            assert b.attrs.get("task") == a.attrs.get("task"), fmt


@pytest.mark.slow
def test_real_lerobot_sample_converts_to_native_and_every_format(tmp_path):
    if not G1.exists():
        pytest.skip(f"sample datasets not found at {G1} (../shared is absent)")
    native = tmp_path / "g1"
    report = convert(G1, native, ConvertOptions(to="native", episodes=[0, 1, 2], image_size=(160, 120),
                                                skip_bad=True))
    # The sample ships videos for episodes 1 and 2 only: episode 0 is reported, the others convert.
    assert report.episodes == 2 and [i for i, _ in report.skipped] == [0]
    assert "episode_000000.mp4" in report.skipped[0][1]
    ds = Dataset.open(native)
    assert ds.info.features["action"].shape == (26,) and ds.info.cameras == ["cam_high"]
    assert ds.records[0]["task"] == "Pick up the yellow bottle on the table."
    _fan_out(native, tmp_path, ["lerobot", "aloha", "robomimic"])


@pytest.mark.tf
@pytest.mark.slow
def test_real_samples_convert_to_rlds_and_oxe(tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="the rlds extra is not installed")
    if not BRIDGE.exists() or not G1.exists():
        pytest.skip("sample datasets not found (../shared is absent)")
    bridge = tmp_path / "bridge"
    report = convert(BRIDGE, bridge, ConvertOptions(to="native", episodes=list(range(6))))
    assert report.episodes == 6
    ds = Dataset.open(bridge)
    assert sorted(ds.info.cameras) == ["image_0", "image_1", "image_2", "image_3"]
    assert ds.info.features["action"].shape == (7,)
    _fan_out(bridge, tmp_path / "b", ["rlds", "lerobot", "aloha", "robomimic"])
    g1 = tmp_path / "g1"
    convert(G1, g1, ConvertOptions(to="native", episodes=[1], image_size=(160, 120)))
    _fan_out(g1, tmp_path / "g", ["rlds"])
    oxe = tmp_path / "oxe"
    convert(g1, oxe, ConvertOptions(to="oxe", writer_options={"action_space": "joint"}))
    assert list(oxe.rglob("dataset_statistics.json"))


def test_exclude_bad_leaves_marked_episodes_out(source, tmp_path):
    from telecorder.datasets.dataset import mark_bad

    root, _ = source
    mark_bad(root, 2, reason="bad grasp")
    run(tool("telecorder"), "convert", str(root), str(tmp_path / "clean"), "--to", "native", "--exclude-bad",
        check=True)
    assert [r["source_episode_index"] for r in Dataset.open(tmp_path / "clean").records] == [0, 1, 3]


# -- camera selection happens in the reader ----------------------------------------------------


def _corrupt_native_camera(root: Path, camera: str) -> None:
    """Overwrite every stored frame of ``camera`` with bytes no image decoder accepts."""
    import h5py

    for path in sorted((root / "episodes").glob("*.h5")):
        with h5py.File(path, "r+") as f:
            frames = f[f"observation/images/{camera}"]
            for i in range(frames.shape[0]):
                frames[i] = np.frombuffer(b"garbage!" * 4, np.uint8)


@pytest.mark.parametrize("workers", [1, 2])
def test_native_unselected_camera_is_never_decoded(source, tmp_path, workers):
    root, _ = source
    _corrupt_native_camera(root, "wrist")
    with pytest.raises(ConversionError, match=r"camera 'wrist' step 0: stored image bytes cannot be decoded"):
        convert(root, tmp_path / "all", ConvertOptions(to="native", episodes=[0]))
    report = convert(root, tmp_path / "front", ConvertOptions(to="native", cameras={"front": "image"},
                                                              workers=workers))
    assert report.episodes == 4
    ds = Dataset.open(tmp_path / "front")
    assert ds.info.cameras == ["image"]
    with ds.episode(1) as ep:
        assert len(ep) == 20 and ep.frame("image", 19).shape == (48, 64, 3)
    with pytest.raises(ConversionError, match=r"no camera 'side'; it has \['front', 'wrist'\]"):
        convert(root, tmp_path / "side", ConvertOptions(to="native", cameras={"side": "side"}))


@pytest.mark.parametrize("fmt", ["aloha", "robomimic"])
def test_hdf5_formats_never_open_an_unselected_camera(fmt, source, tmp_path):
    import h5py

    root, _ = source
    mid = tmp_path / fmt
    convert(root, mid, ConvertOptions(to=fmt, episodes=[0, 1], writer_options={"compress": True}
                                      if fmt == "aloha" else {}))
    # The second episode loses its wrist camera; the schema comes from the first, which keeps it.
    if fmt == "aloha":
        path, loc = mid / "episode_1.hdf5", "observations/images/wrist"
    else:
        path, loc = next(mid.glob("*.hdf5")), "data/demo_1/obs/robot0_eye_in_hand_image"
    with h5py.File(path, "r+") as f:
        del f[loc]
    with pytest.raises(ConversionError, match="wrist"):
        convert(mid, tmp_path / "all", ConvertOptions(to="native"))
    report = convert(mid, tmp_path / "front", ConvertOptions(to="native", cameras={"front": "front"}))
    assert report.episodes == 2 and Dataset.open(tmp_path / "front").info.cameras == ["front"]
    with pytest.raises(ConversionError, match=r"no camera 'side'"):
        convert(mid, tmp_path / "side", ConvertOptions(to="native", cameras={"side": "side"}))


@pytest.mark.tf
def test_rlds_unselected_camera_is_never_decoded(source, tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="the rlds extra is not installed")
    import tensorflow as tf

    root, _ = source
    mid = tmp_path / "rlds"
    convert(root, mid, ConvertOptions(to="rlds", episodes=[0, 1]))
    shards = sorted(mid.rglob("*.tfrecord*"))
    assert shards
    for shard in shards:
        records = []
        for raw in tf.data.TFRecordDataset(str(shard)):
            example = tf.train.Example.FromString(raw.numpy())
            frames = example.features.feature["steps/observation/wrist"].bytes_list.value
            assert len(frames) > 0
            for i in range(len(frames)):
                frames[i] = b"not a jpeg"
            records.append(example.SerializeToString())
        with tf.io.TFRecordWriter(str(shard)) as w:
            for r in records:
                w.write(r)
    with pytest.raises(ConversionError, match=r"observation/wrist"):
        convert(mid, tmp_path / "all", ConvertOptions(to="native"))
    report = convert(mid, tmp_path / "front", ConvertOptions(to="native", cameras={"front": "front"}))
    assert report.episodes == 2 and Dataset.open(tmp_path / "front").info.cameras == ["front"]


def _lerobot_without_wrist_videos(source, tmp_path) -> Path:
    root, _ = source
    lerobot = tmp_path / "lerobot"
    convert(root, lerobot, ConvertOptions(to="lerobot", episodes=[0, 1, 2]))
    for mp4 in (lerobot / "videos/observation.images.wrist").rglob("*.mp4"):
        mp4.unlink()
    return lerobot


def test_lerobot_camera_without_any_video(source, tmp_path):
    lerobot = _lerobot_without_wrist_videos(source, tmp_path)
    with pytest.raises(ConversionError, match=r"camera\(s\) 'wrist' declared in the dataset have no video file for "
                                              r"any of the 3 episode\(s\).*--cameras front.*--skip-missing-cameras"):
        convert(lerobot, tmp_path / "a", ConvertOptions(to="native"))
    assert not (tmp_path / "a").exists() and not (tmp_path / ".a.partial").exists()
    report = convert(lerobot, tmp_path / "b", ConvertOptions(to="native", cameras={"front": "front"}))
    assert report.episodes == 3 and report.cameras_left_out == {}
    report = convert(lerobot, tmp_path / "c", ConvertOptions(to="native", skip_missing_cameras=True))
    assert report.episodes == 3
    assert report.cameras_left_out == {"wrist": "no video for 3 of 3 episode(s) (0-2)"}
    ds = Dataset.open(tmp_path / "c")
    assert ds.info.cameras == ["front"] and ds.info.extra["source_cameras_left_out"] == report.cameras_left_out


def test_cli_skip_missing_cameras_lists_what_it_left_out(source, tmp_path):
    lerobot = _lerobot_without_wrist_videos(source, tmp_path)
    bad = run(tool("telecorder"), "convert", str(lerobot), str(tmp_path / "x"), "--to", "native")
    assert bad.returncode == 2 and "'wrist'" in bad.stderr and "--cameras front" in bad.stderr
    assert "Traceback" not in bad.stderr
    ok = run(tool("telecorder"), "convert", str(lerobot), str(tmp_path / "x"), "--to", "native",
             "--skip-missing-cameras", check=True)
    assert "wrote 3 episode(s)" in ok.stdout and "left out camera 'wrist': no video for 3 of 3" in ok.stdout


def test_format_ranges():
    assert format_ranges([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert parse_episode_ranges(format_ranges([3, 9, 10, 11])) == [3, 9, 10, 11]


def test_g1_sample_converts_with_existing_cameras_or_skipping_missing_ones(tmp_path):
    if not G1.exists():
        pytest.skip(f"sample datasets not found at {G1} (../shared is absent)")
    with pytest.raises(ConversionError, match=r"camera 'cam_high' has no video for 98 of 100 episode\(s\) "
                                              r"\(0,3-99\); convert the episodes that have it \(--episodes 1-2\)"):
        convert(G1, tmp_path / "all", ConvertOptions(to="native"))
    with pytest.raises(ConversionError, match=r"'cam_high' declared in the dataset have no video file for any of "
                                              r"the 2 episode\(s\)"):
        convert(G1, tmp_path / "none", ConvertOptions(to="native", episodes=[0, 3]))
    report = convert(G1, tmp_path / "cam", ConvertOptions(to="native", episodes=[2], cameras={"cam_high": "top"},
                                                          image_size=(80, 60)))
    assert report.episodes == 1 and Dataset.open(tmp_path / "cam").info.cameras == ["top"]
    proc = run(tool("telecorder"), "convert", str(G1), str(tmp_path / "skip"), "--to", "native",
               "--episodes", "0-4", "--skip-missing-cameras", check=True)
    assert "wrote 5 episode(s)" in proc.stdout
    assert "left out camera 'cam_high': no video for 3 of 5 episode(s) (0,3-4)" in proc.stdout
    ds = Dataset.open(tmp_path / "skip")
    assert ds.info.cameras == [] and ds.info.features["action"].shape == (26,)
