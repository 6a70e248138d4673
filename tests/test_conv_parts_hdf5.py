"""ALOHA and robomimic written in parts (``part=True``) and merged: the same dataset as one writer's."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_conv_hdf5 import act_norm_stats, robomimic_or_skip

from telecorder.converters import aloha, robomimic
from telecorder.converters.aloha import AlohaReader, AlohaWriter, length_fit_summary
from telecorder.converters.base import SIDECAR, ConversionError
from telecorder.converters.parts import (
    PART_STATS,
    PARTS_DIR,
    merged_part_stats,
    part_path,
    read_part_stats,
)
from telecorder.converters.robomimic import RobomimicReader, RobomimicWriter
from telecorder.datasets.episode_file import Episode
from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature
from telecorder.datasets.stats import DatasetStats

FPS = 20.0
H, W = 48, 64
LENGTHS = (9, 6, 12, 7, 10, 5, 8)
SIZES = (3, 1, 3)  # episodes per part, in order


def make_info() -> DatasetInfo:
    names = tuple(f"j{i}" for i in range(5))
    return DatasetInfo.create(
        [
            FeatureSpec("observation.state", "float32", (5,), names=names, unit="rad"),
            FeatureSpec("action", "float32", (5,), names=names, unit="rad, absolute targets"),
            image_feature("front", H, W),
        ],
        fps=FPS,
        robot_type="test_arm",
    )


def make_episodes() -> list[Episode]:
    rng = np.random.default_rng(7)
    episodes = []
    for k, n in enumerate(LENGTHS):
        ts = np.arange(n) / FPS + rng.uniform(0, 1e-3, n)
        action = rng.normal(size=(n, 5)).astype(np.float32)
        # Each dimension's extremes lie in a different part, so no part alone knows the dataset's range.
        action[:, 0] += 3.0 * (k == 0) - 2.0 * (k == 3)
        action[:, 1] *= 1 + 4 * (k == 6)
        action[:, 4] = 0.25  # never moves: scaled to 0
        y, x = np.mgrid[0:H, 0:W]
        episodes.append(Episode(
            index=100 + k,
            timestamp=ts,
            data={"observation.state": rng.normal(size=(n, 5)).astype(np.float32), "action": action},
            image_timestamp={"front": ts - 0.003},
            frame_index={"front": np.arange(n) + 3 * k},
            tick_lateness=rng.uniform(0, 1e-3, n).astype(np.float32),
            metadata={"task": f"task {k % 2}", "language_instruction": f"task {k % 2}", "success": k % 3 != 1},
            images={"front": [((x * 3 + y * 2 + 9 * t + 30 * k) % 256).astype(np.uint8)[..., None].repeat(3, -1)
                              for t in range(n)]},
        ))
    return episodes


def write_whole(cls: type, root: Path, episodes: list[Episode], **options: object) -> None:
    writer = cls(root, make_info(), **options)
    for ep in episodes:
        writer.write_episode(ep)
    writer.close()


def write_parts(cls: type, work: Path, episodes: list[Episode], sizes: tuple[int, ...] = SIZES,
                **options: object) -> list[Path]:
    parts, start = [], 0
    for k, size in enumerate(sizes):
        parts.append(part_path(work, k))
        write_whole(cls, parts[-1], episodes[start:start + size], part=True, encode_threads=1, **options)
        start += size
    assert start == len(episodes)
    return parts



def assert_same_hdf5(got: Path, want: Path) -> None:
    """Same groups, datasets (values, dtype, chunks, filters) and attributes."""
    with h5py.File(got, "r") as g, h5py.File(want, "r") as w:
        items: dict[str, list] = {"got": [], "want": []}
        g.visit(items["got"].append)
        w.visit(items["want"].append)
        assert sorted(items["got"]) == sorted(items["want"])
        for name in ["", *items["want"]]:
            a, b = (g[name], w[name]) if name else (g, w)
            assert _same_attrs(a.attrs, b.attrs), name
            if isinstance(b, h5py.Dataset):
                assert (a.dtype, a.shape, a.chunks, a.compression) == (b.dtype, b.shape, b.chunks, b.compression), name
                np.testing.assert_array_equal(a[()], b[()], err_msg=name)


def _same_attrs(a: h5py.AttributeManager, b: h5py.AttributeManager) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def assert_same_episode(got: Episode, want: Episode) -> None:
    assert len(got) == len(want)
    for name, arr in want.data.items():
        assert got.data[name].dtype == arr.dtype, name
        np.testing.assert_array_equal(got.data[name], arr, err_msg=name)
    np.testing.assert_array_equal(got.timestamp, want.timestamp)
    np.testing.assert_array_equal(got.image_timestamp["front"], want.image_timestamp["front"])
    np.testing.assert_array_equal(got.frame_index["front"], want.frame_index["front"])
    np.testing.assert_array_equal(got.tick_lateness, want.tick_lateness)
    for a, b in zip(got.images["front"], want.images["front"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert got.metadata == want.metadata


def sidecar(root: Path) -> dict:
    return json.loads((root / SIDECAR).read_text())


# -- ALOHA ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("episode_length", "compress"), [(None, False), (8, True)])
def test_aloha_parts_merge_into_the_sequential_dataset(tmp_path: Path, episode_length: int | None,
                                                       compress: bool) -> None:
    episodes = make_episodes()
    options = {"compress": compress} | ({"episode_length": episode_length} if episode_length else {})
    write_whole(AlohaWriter, tmp_path / "whole", episodes, **options)
    work = tmp_path / "work"
    parts = write_parts(AlohaWriter, work, episodes, **options)
    # ALOHA keeps no statistics; a part says so rather than leaving the file out.
    assert read_part_stats(parts[0]).features == {}
    first_file = parts[2] / "episode_0.hdf5"
    inode = first_file.stat().st_ino
    aloha.merge_parts(work, parts, make_info(), options, merged_part_stats(parts))

    assert sorted(p.name for p in work.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert not (work / PARTS_DIR).exists()
    assert (work / "episode_4.hdf5").stat().st_ino == inode  # renamed, not copied
    for i in range(len(episodes)):
        assert_same_hdf5(work / f"episode_{i}.hdf5", tmp_path / "whole" / f"episode_{i}.hdf5")
    assert sidecar(work) == sidecar(tmp_path / "whole")
    assert [e["source_index"] for e in sidecar(work)["episodes"].values()] == [ep.index for ep in episodes]

    reader = AlohaReader(work)
    assert reader.episode_indices() == list(range(len(episodes)))
    assert reader.info == AlohaReader(tmp_path / "whole").info
    whole = AlohaReader(tmp_path / "whole")
    for i in reader.episode_indices():
        assert_same_episode(reader.read_episode(i), whole.read_episode(i))
    if not compress:
        assert_same_episode(reader.read_episode(5), episodes[5])
    if episode_length:
        # the report convert prints, and ACT's stacking of whole episodes, on the merged folder
        assert length_fit_summary(work) == length_fit_summary(tmp_path / "whole")
        assert "3 padded, 3 cut" in length_fit_summary(work)
        assert tuple(act_norm_stats(work, len(episodes))["shape"]) == (len(episodes), episode_length, 5)


def test_aloha_merge_names_a_missing_or_corrupt_episode_file(tmp_path: Path) -> None:
    episodes = make_episodes()
    work = tmp_path / "work"
    parts = write_parts(AlohaWriter, work, episodes)
    (parts[2] / "episode_1.hdf5").unlink()
    with pytest.raises(ConversionError, match=r"part-00002: episode_1\.hdf5 is missing"):
        aloha.merge_parts(work, parts, make_info(), {}, None)
    # Checked before anything moved: the other parts are as they were.
    assert (parts[0] / "episode_0.hdf5").is_file() and not (work / "episode_0.hdf5").exists()

    parts = write_parts(AlohaWriter, tmp_path / "work2", episodes)
    (parts[1] / "episode_0.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(ConversionError, match=r"part-00001: episode_0\.hdf5 cannot be read as HDF5"):
        aloha.merge_parts(tmp_path / "work2", parts, make_info(), {}, None)


def test_aloha_merge_refuses_parts_written_differently(tmp_path: Path) -> None:
    episodes = make_episodes()
    work = tmp_path / "work"
    parts = write_parts(AlohaWriter, work, episodes)
    write_whole(AlohaWriter, parts[1], episodes[3:4], part=True, compress=True)  # rewritten, compressed
    with pytest.raises(ConversionError, match=r"part-00001: compress is True, but part-00000 has False"):
        aloha.merge_parts(work, parts, make_info(), {}, None)
    other = DatasetInfo.create([*make_info().features.values()], fps=FPS * 2, robot_type="test_arm")
    with pytest.raises(ConversionError, match=r"part-00000/telecorder_meta\.json: written with another schema.*fps"):
        aloha.merge_parts(work, parts, other, {}, None)
    write_whole(AlohaWriter, parts[1], episodes[3:4], part=True)
    (parts[2] / SIDECAR).unlink()
    with pytest.raises(ConversionError, match=r"part-00002: no aloha telecorder_meta\.json"):
        aloha.merge_parts(work, parts, make_info(), {}, None)


# -- robomimic ------------------------------------------------------------------------------


@pytest.mark.parametrize(("actions", "compress"), [("normalized", True), ("raw", False)])
def test_robomimic_parts_merge_into_the_sequential_file(tmp_path: Path, actions: str, compress: bool) -> None:
    episodes = make_episodes()
    options = {"actions": actions, "valid_fraction": 0.3, "split_seed": 3, "compress": compress}
    write_whole(RobomimicWriter, tmp_path / "whole", episodes, **options)
    work = tmp_path / "work"
    parts = write_parts(RobomimicWriter, work, episodes, **options)
    part_stats = read_part_stats(parts[0])
    if actions == "normalized":
        # a part stores what the merge scales by: the exact range of its own actions
        raw = np.concatenate([e.data["action"] for e in episodes[:3]]).astype(np.float64)
        np.testing.assert_array_equal(part_stats["action"].min, raw.min(axis=0))
        np.testing.assert_array_equal(part_stats["action"].max, raw.max(axis=0))
    else:
        assert part_stats.features == {}
    robomimic.merge_parts(work, parts, make_info(), options, merged_part_stats(parts))

    assert sorted(p.name for p in work.iterdir()) == ["demo.hdf5", SIDECAR]
    assert_same_hdf5(work / "demo.hdf5", tmp_path / "whole" / "demo.hdf5")
    assert sidecar(work) == sidecar(tmp_path / "whole")
    with h5py.File(work / "demo.hdf5", "r") as f:
        assert list(f["data"]) == [f"demo_{i}" for i in range(len(episodes))]  # HDF5 lists by name: 0..6 < 10
        assert f["data"].attrs["total"] == sum(LENGTHS)
        assert f["data/demo_5/obs/agentview_image"].compression == ("gzip" if compress else None)
        valid = [d.decode() for d in f["mask/valid"][()]]
        assert len(valid) == 2  # round(0.3 * 7) over the whole dataset, not per part
        stored = np.concatenate([f[f"data/demo_{i}/actions"][()] for i in range(len(episodes))])
    if actions == "normalized":
        assert np.abs(stored).max() <= 1.0 and 0.97 < np.abs(stored[:, :4]).max(axis=0).min() < 0.99
        assert np.all(stored[:, 4] == 0.0)

    reader = RobomimicReader(work)
    assert reader.episode_indices() == list(range(len(episodes)))
    for got, want in zip(reader, episodes, strict=True):
        assert_same_episode(got, want)  # actions mapped back to the float32 radians bit for bit


def test_robomimic_merge_without_stats_reads_the_parts(tmp_path: Path) -> None:
    episodes = make_episodes()
    write_whole(RobomimicWriter, tmp_path / "whole", episodes)
    parts = write_parts(RobomimicWriter, tmp_path / "work", episodes, sizes=(2, 0, 5))  # an empty part too
    robomimic.merge_parts(tmp_path / "work", parts, make_info(), {}, None)
    assert_same_hdf5(tmp_path / "work" / "demo.hdf5", tmp_path / "whole" / "demo.hdf5")
    assert not (tmp_path / "work" / PARTS_DIR).exists()


def test_robomimic_sequence_dataset_reads_the_merged_file(tmp_path: Path) -> None:
    robomimic_or_skip()
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    episodes = make_episodes()
    parts = write_parts(RobomimicWriter, tmp_path / "work", episodes)
    robomimic.merge_parts(tmp_path / "work", parts, make_info(), {}, merged_part_stats(parts))
    path = tmp_path / "work" / "demo.hdf5"
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["state"], "rgb": ["agentview_image"]}})
    ds = SequenceDataset(
        hdf5_path=str(path), obs_keys=("state", "agentview_image"), dataset_keys=("actions", "rewards", "dones"),
        seq_length=4, pad_seq_length=True, hdf5_cache_mode="low_dim", filter_by_attribute="train",
    )
    with h5py.File(path, "r") as f:
        train = [d.decode() for d in f["mask/train"][()]]
        expected = sum(int(f[f"data/{d}"].attrs["num_samples"]) for d in train)
    assert len(train) == 6 and len(ds) == expected
    for i in (0, len(ds) - 1):
        item = ds[i]
        assert item["actions"].shape == (4, 5) and np.abs(item["actions"]).max() <= 1.0
        assert item["obs"]["agentview_image"].shape == (4, H, W, 3)
    ds.close_and_delete_hdf5_handle()


def test_robomimic_merge_names_a_bad_part(tmp_path: Path) -> None:
    episodes = make_episodes()
    work = tmp_path / "work"
    parts = write_parts(RobomimicWriter, work, episodes)
    (parts[1] / "demo.hdf5").write_bytes(b"garbage")
    with pytest.raises(ConversionError, match=r"part-00001: demo\.hdf5 cannot be read as HDF5"):
        robomimic.merge_parts(work, parts, make_info(), {}, None)
    assert not (work / "demo.hdf5").exists()  # nothing written before every part was checked
    (parts[1] / "demo.hdf5").unlink()
    with pytest.raises(ConversionError, match=r"part-00001: demo\.hdf5 is missing"):
        robomimic.merge_parts(work, parts, make_info(), {}, None)

    parts = write_parts(RobomimicWriter, tmp_path / "w2", episodes)
    with h5py.File(parts[2] / "demo.hdf5", "a") as f:
        del f["data/demo_1"]
    with pytest.raises(ConversionError, match=r"part-00002: demo\.hdf5 /data/demo_1: no such group"):
        robomimic.merge_parts(tmp_path / "w2", parts, make_info(), {}, None)

    # A sequential write in a part's place has scaled its actions already: it must not be merged.
    parts = write_parts(RobomimicWriter, tmp_path / "w3", episodes)
    write_whole(RobomimicWriter, parts[1], episodes[3:4])
    with pytest.raises(ConversionError, match=r"part-00001/telecorder_meta\.json: not written with part=True"):
        robomimic.merge_parts(tmp_path / "w3", parts, make_info(), {}, None)


def test_robomimic_merge_needs_the_action_range(tmp_path: Path) -> None:
    parts = write_parts(RobomimicWriter, tmp_path / "work", make_episodes())
    for part in parts:
        (part / PART_STATS).unlink()
    with pytest.raises(ConversionError, match=r"part-00000/part_stats\.json: the part has no statistics"):
        robomimic.merge_parts(tmp_path / "work", parts, make_info(), {}, None)
    with pytest.raises(ConversionError, match=r"no 'action' range"):
        robomimic.merge_parts(tmp_path / "work", parts, make_info(), {}, DatasetStats({}))
    one_part = DatasetStats.from_arrays({"action": make_episodes()[0].data["action"]})
    with pytest.raises(ConversionError, match=r"count 9 actions, their demos hold 57"):
        robomimic.merge_parts(tmp_path / "work", parts, make_info(), {}, one_part)


# -- through the pipeline -------------------------------------------------------------------


@pytest.mark.parametrize(("to", "options"), [("aloha", {"episode_length": 8}), ("robomimic", {})])
def test_sharded_convert_equals_one_writer(tmp_path: Path, to: str, options: dict) -> None:
    from telecorder.converters.pipeline import ConvertOptions, convert

    write_whole(AlohaWriter, tmp_path / "src", make_episodes())
    one = convert(tmp_path / "src", tmp_path / "one", ConvertOptions(to=to, writer_options=options))
    sharded = convert(tmp_path / "src", tmp_path / "sharded",
                      ConvertOptions(to=to, writer_options=options, workers=2, shard_episodes=3))
    assert one.episodes == sharded.episodes == len(LENGTHS)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == names
    for name in names:
        if name.endswith(".hdf5"):
            assert_same_hdf5(tmp_path / "sharded" / name, tmp_path / "one" / name)
    assert sidecar(tmp_path / "sharded") == sidecar(tmp_path / "one")
