"""The native store: round trips, statistics, resume rules, crash safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import kill, make_info, start_recorder, synthetic_frame, write_dataset

from telecorder.datasets.dataset import Dataset, DatasetWriter
from telecorder.datasets.doctor import check_dataset, repair_dataset
from telecorder.datasets.stats import FeatureStats
from telecorder.errors import DatasetError, SchemaMismatchError


def test_round_trip_numeric_exact_and_frames_close(small_dataset):
    root, info, written = small_dataset
    ds = Dataset.open(root)
    assert len(ds) == 3 and ds.num_frames == 12 + 20 + 7
    assert ds.info.features == info.features
    for idx, steps in zip(ds.episode_indices, written, strict=True):
        with ds.episode(idx) as ep:
            assert len(ep) == len(steps)
            np.testing.assert_array_equal(ep.timestamps(), [s.timestamp for s in steps])
            for name in ("observation.state", "action"):
                np.testing.assert_array_equal(ep.numeric(name), np.stack([s.numeric[name] for s in steps]))
            for k, cam in enumerate(info.cameras):
                np.testing.assert_array_equal(ep.image_timestamps(cam), [s.frame_time[cam] for s in steps])
                np.testing.assert_array_equal(ep.frame_indices(cam), np.arange(len(steps)))
                for i in (0, len(steps) - 1):
                    err = np.abs(ep.frame(cam, i).astype(int) - synthetic_frame(i, k).astype(int))
                    assert err.mean() < 2.0, f"JPEG frame {cam}/{i} too far from the original"
            attrs = ep.attrs
            assert attrs["task"] == attrs["language_instruction"] == "stack the blocks"
            assert attrs["episode_index"] == idx and attrs["fps"] == 30.0
    rec = ds.records[0]
    assert rec["file"] == "episodes/episode_000000.h5" and rec["length"] == 12


def test_png_is_lossless(tmp_path):
    info = make_info(encoding="png")
    written = write_dataset(tmp_path / "ds", info, [5])
    with Dataset.open(tmp_path / "ds").episode(0) as ep:
        for i, step in enumerate(written[0]):
            np.testing.assert_array_equal(ep.frame("front", i), step.frames["front"])


def test_stats_json_equals_stats_of_concatenation(small_dataset):
    root, _, written = small_dataset
    stats = Dataset.open(root).stats()
    for name in ("observation.state", "action"):
        all_rows = np.concatenate([np.stack([s.numeric[name] for s in steps]) for steps in written])
        direct = FeatureStats.from_array(all_rows).summary()
        merged = stats[name].summary()
        assert merged["count"] == direct["count"] == len(all_rows)
        for key in ("min", "max", "q01", "q99"):
            np.testing.assert_array_equal(merged[key], direct[key])
        for key in ("mean", "std"):
            np.testing.assert_allclose(merged[key], direct[key], rtol=1e-9)


def test_existing_dataset_needs_resume(small_dataset):
    root, info, _ = small_dataset
    with pytest.raises(DatasetError, match="--resume"):
        DatasetWriter(root, info)


def test_resume_appends_with_next_index(small_dataset):
    root, _, _ = small_dataset
    write_dataset(root, make_info(cameras=("front", "wrist")), [4], resume=True)
    ds = Dataset.open(root)
    assert ds.episode_indices == [0, 1, 2, 3]
    assert ds.info.total_episodes == 4 and ds.info.total_frames == 12 + 20 + 7 + 4
    assert ds.stats()["action"].count == 12 + 20 + 7 + 4


@pytest.mark.parametrize(
    "changed, expected",
    [
        (dict(dim=5), "feature 'action'"),
        (dict(fps=50.0), "fps 30 vs 50"),
        (dict(robot_type="other_arm"), "robot"),
        (dict(cameras=("front",)), "missing feature 'observation.images.wrist'"),
    ],
)
def test_resume_with_mismatched_schema_is_refused(small_dataset, changed, expected):
    root, _, _ = small_dataset
    before = (root / "meta/episodes.jsonl").read_text()
    kwargs = dict(cameras=("front", "wrist"))
    kwargs.update(changed)
    with pytest.raises(SchemaMismatchError, match=expected):
        DatasetWriter(root, make_info(**kwargs), resume=True)
    assert (root / "meta/episodes.jsonl").read_text() == before


def test_second_writer_on_same_folder_is_refused(small_dataset):
    root, info, _ = small_dataset
    with DatasetWriter(root, info, resume=True), pytest.raises(DatasetError, match=rf"being modified by process {os.getpid()} \(record into it"):
        DatasetWriter(root, info, resume=True)


def test_non_empty_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="not a telecorder dataset"):
        DatasetWriter(tmp_path, make_info())


def test_sigkill_mid_episode_keeps_earlier_episodes_and_repair_salvages(tmp_path):
    root = tmp_path / "ds"
    kill(start_recorder(root))

    ds = Dataset.open(root)
    assert ds.episode_indices == [0, 1] and ds.info.total_episodes == 2
    for i in ds.episode_indices:
        with ds.episode(i) as ep:
            assert len(ep) == (10, 15)[i]
    assert ds.stats()["action"].count == 25
    assert not (root / "episodes/episode_000002.h5").exists()
    partials = list((root / "episodes").glob(".*.partial.h5"))
    assert len(partials) == 1

    report = check_dataset(root)
    assert not report.ok and any("unfinished episode" in e for e in report.all_errors)

    actions = repair_dataset(root)
    assert any("salvaged" in a or "moved" in a for a in actions), actions
    print(actions)
    after = check_dataset(root)
    assert after.ok, after.all_errors
    ds = Dataset.open(root)
    if "salvaged" in actions[0]:
        assert ds.episode_indices == [0, 1, 2]
        rec = ds.records[2]
        assert rec["recovered"] is True and rec["length"] > 0 and rec["task"] == "interrupted"
        with ds.episode(2) as ep:
            assert ep.attrs["recovered"] is True
            ep.frame("front", len(ep) - 1)
    else:
        assert ds.episode_indices == [0, 1]
        assert list((root / "episodes/.unrecoverable").iterdir())


def test_truncated_episode_file_gives_clear_error(small_dataset):
    root, _, _ = small_dataset
    path = root / "episodes/episode_000001.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError, match=r"episode_000001\.h5: cannot be read as HDF5"):
        Dataset.open(root).episode(1)
    report = check_dataset(root)
    assert not report.ok
    assert [e.index for e in report.episodes if e.errors] == [1]


def test_missing_dataset_in_file_and_nan_are_reported(small_dataset):
    root, _, _ = small_dataset
    with h5py.File(root / "episodes/episode_000000.h5", "r+") as f:
        f["action"][3, 1] = np.nan
    with h5py.File(root / "episodes/episode_000002.h5", "r+") as f:
        del f["observation/state"]
    report = check_dataset(root)
    errors = "\n".join(report.all_errors)
    assert "action has 1 NaN/inf values (first at step 3)" in errors
    assert "/observation/state is missing" in errors


def test_corrupt_frame_is_reported(small_dataset):
    root, _, _ = small_dataset
    with h5py.File(root / "episodes/episode_000000.h5", "r+") as f:
        f["observation/images/front"][0] = np.frombuffer(b"not a jpeg at all", np.uint8)
    report = check_dataset(root)
    assert any("cannot be decoded" in e for e in report.all_errors)


def test_wrong_format_version_is_refused(small_dataset):
    root, _, _ = small_dataset
    info = json.loads((root / "meta/info.json").read_text())
    info["format_version"] = "9.0"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"format_version '9\.0' is not supported"):
        Dataset.open(root)


def test_index_line_torn_by_crash_is_repaired(small_dataset):
    root, _, _ = small_dataset
    index = root / "meta/episodes.jsonl"
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    report = check_dataset(root)
    assert not report.ok
    repair_dataset(root)
    assert check_dataset(root).ok
    assert Dataset.open(root).episode_indices == [0, 1, 2]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MB tmpfs: a real full disk, not a mocked error (needs root, as CI has)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_is_a_clear_error_and_earlier_episodes_survive(tiny_disk):
    from telecorder.datasets.async_writer import AsyncEpisodeWriter, Step

    root = tiny_disk / "ds"
    info = make_info(cameras=("front",), encoding="png")
    write_dataset(root, info, [10, 10])
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(8)]
    with DatasetWriter(root, info, resume=True) as dw:
        writer = AsyncEpisodeWriter(dw, flush_interval_s=0.01)
        writer.begin({"task": "fill the disk"})
        with pytest.raises(DatasetError, match="no space left on device") as exc:
            for i in range(100_000):  # ~10 KB per frame: 4 MB fills within a few hundred steps
                writer.add(Step(timestamp=i / 30, numeric={"observation.state": np.zeros(4, np.float32),
                                                           "action": np.zeros(4, np.float32)},
                                frames={"front": noise[i % 8]}, frame_time={"front": i / 30},
                                frame_index={"front": i}))
                time.sleep(0.0005)
        assert "intact" in str(exc.value)
        writer.close()
    ds = Dataset.open(root)
    assert ds.episode_indices == [0, 1]
    for i in (0, 1):
        with ds.episode(i) as ep:
            assert len(ep) == 10
    assert not list((root / "episodes").glob(".*partial*")), "the failed episode's partial file is removed"
    assert check_dataset(root).ok


def test_mark_bad_changes_only_the_index(small_dataset):
    from telecorder.datasets.dataset import mark_bad

    root, _, _ = small_dataset
    before = (root / "episodes/episode_000001.h5").read_bytes()
    rec = mark_bad(root, 1, reason="dropped the cube")
    assert rec["bad"] is True and rec["bad_reason"] == "dropped the cube"
    ds = Dataset.open(root)
    assert [r.get("bad", False) for r in ds.records] == [False, True, False]
    assert (root / "episodes/episode_000001.h5").read_bytes() == before
    mark_bad(root, 1, bad=False)
    assert not any(r.get("bad") for r in Dataset.open(root).records)
    with pytest.raises(DatasetError, match="no episode 7"):
        mark_bad(root, 7)


def test_discarding_a_large_episode_closes_cleanly(tmp_path):
    """Ctrl-C or the re-record key discards the episode in progress. With more than HDF5's metadata
    cache holds (300 noisy 640x480 frames), closing it re-reads evicted metadata; a stand-in that did
    not hold the file's bytes crashed the process. Run apart, so that a crash fails this test only."""
    script = f"""
import numpy as np
from pathlib import Path
from telecorder.datasets.async_writer import AsyncEpisodeWriter, Step
from telecorder.datasets.dataset import DatasetWriter
from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature
root = Path({str(tmp_path / "ds")!r})
info = DatasetInfo.create([FeatureSpec("observation.state", "float32", (6,)), FeatureSpec("action", "float32", (6,)),
                           image_feature("cam0", 480, 640)], fps=30, robot_type="b")
dw = DatasetWriter(root, info)
w = AsyncEpisodeWriter(dw, encode_threads=2)
z = np.zeros(6, np.float32)
frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
w.begin({{"task": "kept"}})
for i in range(5):
    w.add(Step(timestamp=i / 30, numeric={{"observation.state": z, "action": z}}, frames={{"cam0": frame}},
               frame_time={{"cam0": i / 30}}, frame_index={{"cam0": i}}))
w.end({{}}, {{}}).result()
w.begin({{"task": "discarded"}})
for i in range(300):
    w.add(Step(timestamp=i / 30, numeric={{"observation.state": z, "action": z}}, frames={{"cam0": frame}},
               frame_time={{"cam0": i / 30}}, frame_index={{"cam0": i}}))
w.discard()
w.close()
dw.close()
print("closed")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "closed" in run.stdout, (run.returncode, run.stderr[-2000:])
    ds = Dataset.open(tmp_path / "ds")
    assert ds.episode_indices == [0]
    assert not list((tmp_path / "ds" / "episodes").glob(".*partial*"))
    assert check_dataset(tmp_path / "ds").ok
