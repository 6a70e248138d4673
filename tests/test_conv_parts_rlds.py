"""Sharded RLDS / OXE conversion: parts written with part=True and merged give the dataset one
writer gives, as real tensorflow-datasets and our reader see it, with the same statistics."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="the rlds extra (tensorflow-datasets) is not installed")
pytest.importorskip("mujoco", reason="OXE EEF actions need MuJoCo forward kinematics (the sim extra)")

from conftest import synthetic_frame
from test_conv_rlds import arm_info, psnr

from telecorder.converters.base import SIDECAR, ConversionError
from telecorder.converters.parts import (
    PART_STATS,
    PARTS_DIR,
    merged_part_stats,
    part_path,
    read_part_stats,
)
from telecorder.converters.rlds.merge import merge_parts as merge_rlds
from telecorder.converters.rlds.oxe import CONFIG_FILE, STATS_FILE, OXEWriter
from telecorder.converters.rlds.oxe_merge import merge_parts as merge_oxe
from telecorder.converters.rlds.reader import RLDSReader
from telecorder.converters.rlds.schema import episode_metadata_fields, import_tfds
from telecorder.converters.rlds.writer import RLDSWriter
from telecorder.datasets.episode_file import Episode
from telecorder.datasets.features import DatasetInfo
from telecorder.datasets.stats import DatasetStats

pytestmark = pytest.mark.tf

LENGTHS = (5, 4, 6, 3, 5, 4, 6)
VAL = (1, 4)
# Contiguous groups as the sharded pipeline cuts them; the last part has no val episode.
GROUPS = ((0, 3), (3, 5), (5, 7))
NAME = "arm_parts"
WRITERS = {"rlds": (RLDSWriter, merge_rlds), "oxe": (OXEWriter, merge_oxe)}
TASKS = ("pick up the red cube", "push the cube left", "lift the cube")


def make_episodes() -> list[Episode]:
    rng = np.random.default_rng(3)
    lo = np.array([-2.0, -1.5, -0.2, -1.8, -2.8, 0.0])
    hi = np.array([2.0, 1.8, 2.7, 1.8, 2.8, 1.0])
    out = []
    for k, n in enumerate(LENGTHS):
        state = rng.uniform(lo, hi, size=(n, 6)).astype(np.float32)
        action = np.clip(state + rng.normal(scale=0.1, size=(n, 6)), lo, hi).astype(np.float32)
        t = np.arange(n) / 30.0
        task = TASKS[k % len(TASKS)]
        out.append(
            Episode(
                index=k,
                timestamp=t,
                data={"observation.state": state, "action": action},
                image_timestamp={"front": t - 0.004, "wrist": t - 0.007},
                frame_index={"front": np.arange(n) + k, "wrist": 2 * np.arange(n)},
                tick_lateness=rng.uniform(0, 0.002, n).astype(np.float32),
                metadata={"task": task, "language_instruction": task, "success": k % 3 != 1, "operator": f"op{k}"},
                images={
                    "front": [synthetic_frame(i + k, 0) for i in range(n)],
                    "wrist": [synthetic_frame(2 * i + k, 1) for i in range(n)],
                },
            )
        )
    return out


def options(**extra) -> dict:
    return {"episodes_per_shard": 2, "val_episodes": list(VAL), "dataset_name": NAME, **extra}


def write(path: Path, info: DatasetInfo, episodes: list[Episode], fmt: str, **opts) -> None:
    w = WRITERS[fmt][0](path, info, **opts)
    for ep in episodes:
        w.write_episode(ep)
    w.close()


def write_parts(work: Path, info: DatasetInfo, episodes: list[Episode], fmt: str, groups=GROUPS, *,
                own_val: bool = False, **opts) -> list[Path]:
    """Parts of contiguous groups; ``own_val``: each part is told only its own val episodes (as the
    sharded pipeline does: a part without any then has no val split), else the whole list."""
    parts = []
    for k, (a, b) in enumerate(groups):
        parts.append(part_path(work, k))
        part_opts = dict(opts)
        if own_val:
            part_opts["val_episodes"] = [i for i in opts.get("val_episodes", ()) if a <= i < b]
        write(parts[-1], info, episodes[a:b], fmt, part=True, encode_threads=1, **part_opts)
    return parts


def merge(work: Path, parts: list[Path], info: DatasetInfo, fmt: str, **opts) -> None:
    WRITERS[fmt][1](work, parts, info, opts, merged_part_stats(parts))


def data_dir(root: Path, fmt: str) -> Path:
    return root / NAME / "1.0.0" if fmt == "oxe" else root


@pytest.fixture(scope="module")
def episodes() -> list[Episode]:
    return make_episodes()


@pytest.fixture(scope="module", params=sorted(WRITERS))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, episodes: list[Episode]) -> dict:
    """(a) one writer, (b) three parts merged in ``.NAME.partial`` and moved into place."""
    fmt = request.param
    root = tmp_path_factory.mktemp(f"parts_{fmt}")
    info = arm_info()
    seq = root / "seq" / "out"
    write(seq, info, episodes, fmt, **options())
    work = root / "sharded" / ".out.partial"
    parts = write_parts(work, info, episodes, fmt, own_val=True, **options())
    assert "val" not in json.loads((data_dir(parts[2], fmt) / SIDECAR).read_text())["splits"]
    part_stats = [json.loads((p / PART_STATS).read_text()) for p in parts]
    merge(work, parts, info, fmt, **options())
    dst = work.with_name("out")
    os.replace(work, dst)  # what the pipeline does once the merge is complete
    return {"fmt": fmt, "seq": seq, "dst": dst, "part_stats": part_stats}


def _tfds_episodes(path: Path, split: str) -> list[dict]:
    _, tfds = import_tfds()
    builder = tfds.builder_from_directory(str(path))
    ds = builder.as_dataset(split=split, shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1))
    return list(tfds.as_numpy(ds))


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def test_layout_shards_and_metadata(built: dict) -> None:
    tf, _ = import_tfds()
    fmt = built["fmt"]
    merged, seq = data_dir(built["dst"], fmt), data_dir(built["seq"], fmt)
    assert not (built["dst"] / PARTS_DIR).exists()
    info = json.loads((merged / "dataset_info.json").read_text())
    want = json.loads((seq / "dataset_info.json").read_text())
    assert info["name"] == NAME and info["fileFormat"] == "tfrecord"
    assert (merged / "features.json").read_text() == (seq / "features.json").read_text()
    names = sorted(p.name for p in merged.iterdir() if ".tfrecord-" in p.name)
    got_splits = {s["name"]: s for s in info["splits"]}
    assert list(got_splits) == ["train", "val"]
    # Train: parts hold episodes 0,2 | 3 | 5,6; val: 1 | 4 | none -> shards in part order.
    assert got_splits["train"]["shardLengths"] == ["2", "1", "2"] and got_splits["val"]["shardLengths"] == ["1", "1"]
    for split, s in got_splits.items():
        n = len(s["shardLengths"])
        files = [f"{NAME}-{split}.tfrecord-{i:05d}-of-{n:05d}" for i in range(n)]
        assert [f for f in names if f"-{split}." in f] == files
        # dataset_info.json's lengths are the records actually in each file.
        counts = [sum(1 for _ in tf.data.TFRecordDataset(str(merged / f))) for f in files]
        assert [str(c) for c in counts] == s["shardLengths"]
        seq_split = next(x for x in want["splits"] if x["name"] == split)
        assert s["numBytes"] == seq_split["numBytes"]  # the same examples, byte for byte
    side, seq_side = json.loads((merged / SIDECAR).read_text()), json.loads((seq / SIDECAR).read_text())
    assert side["splits"] == seq_side["splits"] == {"train": {"episodes": [0, 2, 3, 5, 6]}, "val": {"episodes": [1, 4]}}
    assert side == seq_side


def test_real_tfds_reads_the_same_episodes(built: dict, episodes: list[Episode]) -> None:
    fmt = built["fmt"]
    for split, ids in (("train", [0, 2, 3, 5, 6]), ("val", [1, 4])):
        got = _tfds_episodes(data_dir(built["dst"], fmt), split)
        want = _tfds_episodes(data_dir(built["seq"], fmt), split)
        assert [int(e["episode_metadata"]["episode_id"]) for e in got] == ids
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert _flat(g["episode_metadata"]).keys() == _flat(w["episode_metadata"]).keys()
            for key, value in _flat(g["episode_metadata"]).items():
                np.testing.assert_array_equal(value, _flat(w["episode_metadata"])[key], err_msg=key)
            g_steps, w_steps = list(g["steps"]), list(w["steps"])
            assert len(g_steps) == len(w_steps) == LENGTHS[int(g["episode_metadata"]["episode_id"])]
            for gs, ws in zip(g_steps, w_steps, strict=True):
                fg, fw = _flat(gs), _flat(ws)
                assert fg.keys() == fw.keys()
                for key in fg:  # images too: the same JPEG bytes decode to the same pixels
                    np.testing.assert_array_equal(fg[key], fw[key], err_msg=key)
        src = episodes[ids[0]]
        cam = "observation/front" if fmt == "rlds" else "observation/image"
        assert psnr(_flat(list(got[0]["steps"])[2])[cam], src.images["front"][2]) >= 35


def test_our_reader_reads_the_same_episodes_in_order(built: dict, episodes: list[Episode]) -> None:
    fmt = built["fmt"]
    merged, seq = RLDSReader(built["dst"]), RLDSReader(built["seq"])
    assert merged.split == "train,val"
    assert merged.episode_indices() == seq.episode_indices() == list(range(len(LENGTHS)))
    assert merged.info.to_dict() == seq.info.to_dict()
    cams = ("front", "wrist") if fmt == "rlds" else ("image", "wrist_image")
    for i, src in enumerate(episodes):
        a, b = merged.read_episode(i), seq.read_episode(i)
        assert a.metadata == b.metadata and a.metadata["operator"] == src.metadata["operator"]
        assert a.data.keys() == b.data.keys()
        for name in a.data:
            np.testing.assert_array_equal(a.data[name], b.data[name], err_msg=name)
        np.testing.assert_array_equal(a.data["observation.state"], src.data["observation.state"])
        np.testing.assert_array_equal(a.timestamp, src.timestamp)
        np.testing.assert_array_equal(a.tick_lateness, b.tick_lateness)
        for cam in cams:
            np.testing.assert_array_equal(np.stack(a.images[cam]), np.stack(b.images[cam]))
            np.testing.assert_array_equal(a.frame_index[cam], b.frame_index[cam])
            np.testing.assert_array_equal(a.image_timestamp[cam], b.image_timestamp[cam])
        assert min(psnr(x, y) for x, y in zip(a.images[cams[0]], src.images["front"], strict=True)) >= 35


def test_part_statistics(built: dict) -> None:
    for (a, b), stats in zip(GROUPS, built["part_stats"], strict=True):
        parsed = DatasetStats.from_json_dict(stats)
        if built["fmt"] == "rlds":
            assert len(parsed) == 0  # RLDS has no statistics file
        else:
            assert set(parsed) == {"action", "proprio"}
            assert parsed["action"].count == parsed["proprio"].count == sum(LENGTHS[a:b])
            assert parsed["action"].shape == (7,) and parsed["proprio"].shape == (6,)


@pytest.mark.parametrize("built", ["oxe"], indirect=True)
def test_oxe_statistics_and_config_written_once(built: dict) -> None:
    merged, seq = data_dir(built["dst"], "oxe"), data_dir(built["seq"], "oxe")
    got, want = json.loads((merged / STATS_FILE).read_text()), json.loads((seq / STATS_FILE).read_text())
    assert got.keys() == want.keys()
    assert got["num_transitions"] == want["num_transitions"] == sum(LENGTHS)
    assert got["num_trajectories"] == want["num_trajectories"] == len(LENGTHS)
    for key in ("action", "proprio"):
        assert got[key].keys() == want[key].keys()
        for stat in ("mean", "std", "max", "min", "q01", "q99", "p01", "p99"):
            np.testing.assert_allclose(got[key][stat], want[key][stat], rtol=1e-9, atol=1e-12, err_msg=f"{key} {stat}")
        # Exact quantiles from the parts' saved rows: the very numbers of a one-process run.
        assert got[key]["quantile_method"] == want[key]["quantile_method"] == "exact"
        assert (got[key]["q01"], got[key]["q99"]) == (want[key]["q01"], want[key]["q99"])
    assert got["action"]["mask"] == want["action"]["mask"]

    config = json.loads((merged / CONFIG_FILE).read_text())
    seq_config = json.loads((seq / CONFIG_FILE).read_text())
    for loader in ("octo", "openvla"):
        block = config["make_dataset_from_rlds_kwargs"][loader]
        # The final folder, not the .out.partial folder the merge ran in.
        assert block["data_dir"] == str(built["dst"])
        seq_block = seq_config["make_dataset_from_rlds_kwargs"][loader]
        del block["data_dir"], seq_block["data_dir"]
        assert block == seq_block
    assert config["dataset"].pop("dataset_statistics") == str(merged / STATS_FILE)
    # The loaders' cache names hash the dataset's folder, which differs between the two.
    for described in (config["dataset"], seq_config["dataset"]):
        assert set(described.pop("statistics_cache")) == {"octo", "openvla"}
    seq_config["dataset"].pop("dataset_statistics")
    assert config["dataset"] == seq_config["dataset"] and config["dataset"]["splits"] == {"train": 5, "val": 2}
    # Octo and OpenVLA open it by name under data_dir.
    _, tfds = import_tfds()
    builder = tfds.builder(NAME, data_dir=str(built["dst"]))
    assert builder.info.splits["train"].num_examples == 5 and builder.info.splits["val"].num_examples == 2


# --------------------------------------------------------------------------- inconsistent parts


@pytest.fixture
def small_parts(tmp_path: Path, episodes: list[Episode]) -> tuple[Path, list[Path]]:
    work = tmp_path / ".small.partial"
    parts = write_parts(work, arm_info(), episodes[:3], "rlds", groups=((0, 1), (1, 3)), **options(episodes_per_shard=1))
    return work, parts


def test_a_missing_shard_is_named(small_parts: tuple[Path, list[Path]]) -> None:
    work, parts = small_parts
    shard = parts[1] / f"{NAME}-train.tfrecord-00000"
    shard.unlink()
    with pytest.raises(ConversionError, match=rf"part-00001.*{re.escape(str(shard))}.*missing"):
        merge(work, parts, arm_info(), "rlds", **options(episodes_per_shard=1))
    # Checked before anything moved: the other part still has its files.
    assert (parts[0] / f"{NAME}-train.tfrecord-00000").is_file()
    assert not list(work.glob("*.tfrecord-*"))


def test_a_truncated_shard_is_named(small_parts: tuple[Path, list[Path]]) -> None:
    work, parts = small_parts
    shard = parts[0] / f"{NAME}-train.tfrecord-00000"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ConversionError, match=r"part-00000.*'train'.*truncated"):
        merge(work, parts, arm_info(), "rlds", **options(episodes_per_shard=1))


def test_parts_with_different_schemas_are_refused(tmp_path: Path, small_parts: tuple[Path, list[Path]], episodes: list[Episode]) -> None:
    work, parts = small_parts
    # A part whose first episode has other metadata keys stores another episode_metadata schema.
    odd = [dataclasses.replace(episodes[1], metadata={"task": "x", "extra_key": 3}), episodes[2]]
    other = tmp_path / "other"
    write(other, arm_info(), odd, "rlds", part=True, **options(episodes_per_shard=1))
    with pytest.raises(ConversionError, match=r"other.*features\.json differs.*episode_metadata"):
        merge(work, [parts[0], other], arm_info(), "rlds", **options(episodes_per_shard=1))


def test_parts_told_every_val_episode_merge_alike(small_parts: tuple[Path, list[Path]]) -> None:
    work, parts = small_parts
    # Part 0 (episode 0) was given val_episodes [1, 4] too: it has a val split with no episode.
    assert json.loads((parts[0] / SIDECAR).read_text())["splits"] == {"train": {"episodes": [0]}, "val": {"episodes": []}}
    merge(work, parts, arm_info(), "rlds", **options(episodes_per_shard=1))
    side = json.loads((work / SIDECAR).read_text())
    assert side["splits"] == {"train": {"episodes": [0, 2]}, "val": {"episodes": [1]}}
    reader = RLDSReader(work)
    assert [reader.read_episode(i).metadata["operator"] for i in reader.episode_indices()] == ["op0", "op1", "op2"]
    assert sorted(p.name for p in work.glob("*.tfrecord-*")) == [
        f"{NAME}-train.tfrecord-00000-of-00002", f"{NAME}-train.tfrecord-00001-of-00002", f"{NAME}-val.tfrecord-00000-of-00001"
    ]


def test_a_merged_val_split_must_not_be_empty(small_parts: tuple[Path, list[Path]]) -> None:
    work, parts = small_parts
    # Each part may lack val episodes, the whole dataset may not (tfds cannot read an empty split).
    parts_without_val = parts[:1]  # episode 0 only
    with pytest.raises(ConversionError, match="split 'val' would hold no episode"):
        merge(work, parts_without_val, arm_info(), "rlds", **options(episodes_per_shard=1))


@pytest.mark.skipif(importlib.util.find_spec("array_record") is None, reason="array_record package not installed")
def test_array_record_parts(tmp_path: Path, episodes: list[Episode]) -> None:
    work = tmp_path / ".small.partial"
    opts = options(episodes_per_shard=1, file_format="array_record")
    parts = write_parts(work, arm_info(), episodes[:4], "rlds", groups=((0, 2), (2, 4)), own_val=True, **opts)
    merge(work, parts, arm_info(), "rlds", **opts)
    assert sorted(p.name for p in work.glob(f"{NAME}-*")) == [
        f"{NAME}-train.array_record-{i:05d}-of-00003" for i in range(3)
    ] + [f"{NAME}-val.array_record-00000-of-00001"]
    reader = RLDSReader(work)
    assert reader.episode_indices() == [0, 1, 2, 3]
    for i in range(4):
        np.testing.assert_array_equal(reader.read_episode(i).data["action"], episodes[i].data["action"])


def test_oxe_statistics_must_cover_the_parts(tmp_path: Path, episodes: list[Episode]) -> None:
    work = tmp_path / ".small.partial"
    opts = options(episodes_per_shard=1)
    parts = write_parts(work, arm_info(), episodes[:3], "oxe", groups=((0, 1), (1, 3)), own_val=True, **opts)
    only_first = read_part_stats(parts[0])
    # Statistics that miss a part's steps would describe other data than the dataset holds.
    with pytest.raises(ConversionError, match=rf"merged statistics cover {LENGTHS[0]} action"):
        WRITERS["oxe"][1](work, parts, arm_info(), opts, only_first)
    assert not list(work.rglob(f"{NAME}-*-of-*"))  # refused before any shard moved
    (parts[1] / PART_STATS).write_text(json.dumps(DatasetStats({}).to_json_dict()))
    with pytest.raises(ConversionError, match=r"part-00001: oxe part statistics 'action' cover None steps"):
        merge(work, parts, arm_info(), "oxe", **opts)


# --------------------------------------------------------------------------- episode_metadata schema


def test_episode_metadata_fields_are_the_scalar_metadata() -> None:
    meta = {
        "task": "x", "success": np.bool_(True), "attempt": np.int32(3), "score": 1.5, "tags": np.array([1, 2]),
        "file_path": "reserved", "telecorder_metadata": "reserved", "bad key": 1, "nothing": None, "nested": {"a": 1},
    }
    assert episode_metadata_fields(meta) == {"attempt": "int64", "score": "float64", "success": "bool", "task": "text"}
    with pytest.raises(ConversionError, match=r"episode_metadata_fields\['operator'\] is 'string'; kinds are bool, int64"):
        RLDSWriter(Path("unused"), arm_info(), episode_metadata_fields={"operator": "string"})
    with pytest.raises(ConversionError, match="key 'episode_id' cannot be"):
        RLDSWriter(Path("unused"), arm_info(), episode_metadata_fields={"episode_id": "int64"})


def _varied_metadata(episodes: list[Episode]) -> list[Episode]:
    """Four episodes whose scalar metadata keys and types vary: the second part (episodes 2, 3)
    starts with one that lacks "operator" and has a "notes" the first episode does not."""
    eps = [dataclasses.replace(e, metadata=dict(e.metadata)) for e in episodes[:4]]
    eps[0].metadata.update(attempt=1, score=0.5)
    eps[1].metadata.update(attempt="n/a", score=np.float32(0.75))  # attempt of the wrong type
    del eps[2].metadata["operator"]
    eps[2].metadata.update(notes="regrasped", score=np.float32(0.25))
    eps[3].metadata.update(attempt=np.int64(4))
    return eps


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_parts_given_the_first_episodes_metadata_fields_merge_as_one_writer(
    tmp_path: Path, episodes: list[Episode], fmt: str
) -> None:
    eps, info, groups = _varied_metadata(episodes), arm_info(), ((0, 2), (2, 4))
    seq = tmp_path / "seq"
    write(seq, info, eps, fmt, **options())  # one writer: the schema of episode 0
    fields = episode_metadata_fields(eps[0].metadata)
    assert fields == {
        "attempt": "int64", "language_instruction": "text", "operator": "text", "score": "float64",
        "success": "bool", "task": "text",
    }
    opts = options(episode_metadata_fields=fields)

    # Without the option the second part derives its schema from episode 2, and the merge refuses it.
    bare = tmp_path / ".bare.partial"
    parts = write_parts(bare, info, eps, fmt, groups, own_val=True, **options())
    with pytest.raises(ConversionError, match=r"part-00001.*features\.json differs.*episode_metadata.*episode_metadata_fields"):
        merge(bare, parts, info, fmt, **options())

    work = tmp_path / ".out.partial"
    parts = write_parts(work, info, eps, fmt, groups, own_val=True, **opts)
    merge(work, parts, info, fmt, **opts)
    got_dir, want_dir = data_dir(work, fmt), data_dir(seq, fmt)
    assert (got_dir / "features.json").read_text() == (want_dir / "features.json").read_text()
    assert json.loads((got_dir / SIDECAR).read_text()) == json.loads((want_dir / SIDECAR).read_text())

    got_meta = {}
    for split in ("train", "val"):
        got, want = _tfds_episodes(got_dir, split), _tfds_episodes(want_dir, split)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            gm, wm = g["episode_metadata"], w["episode_metadata"]
            assert gm.keys() == wm.keys() == {"file_path", "episode_id", "telecorder_metadata", *fields}
            for key in gm:
                assert type(gm[key]) is type(wm[key]) and np.asarray(gm[key]).dtype == np.asarray(wm[key]).dtype, key
                np.testing.assert_array_equal(gm[key], wm[key], err_msg=key)
            np.testing.assert_array_equal(
                np.stack([s["action"] for s in g["steps"]]), np.stack([s["action"] for s in w["steps"]])
            )
            got_meta[int(gm["episode_id"])] = gm
    assert sorted(got_meta) == [0, 1, 2, 3]
    # Missing or mistyped values get the defaults; the keys episode 0 lacks stay in the JSON copy.
    assert got_meta[2]["operator"] == b"" and got_meta[3]["operator"] == b"op3"
    assert got_meta[1]["attempt"] == 0 and got_meta[3]["attempt"] == 4
    assert got_meta[2]["score"] == 0.25 and got_meta[2]["score"].dtype == np.float64
    assert json.loads(got_meta[2]["telecorder_metadata"])["notes"] == "regrasped"
    assert RLDSReader(work).read_episode(2).metadata["notes"] == "regrasped"
