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
    # An interrupted run left two converted episodes in the partial folder.
    convert(root, tmp_path / "first_two", ConvertOptions(to="native", episodes=[0, 1]))
    (tmp_path / "first_two").rename(tmp_path / ".out.partial")
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
