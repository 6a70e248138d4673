"""native -> RLDS and native -> OXE through the whole sharded pipeline, on the local process
pool and on Beam's DirectRunner in multi-processing mode: read back with the real
tensorflow_datasets, the same episodes in the same order in both splits as the one-process
conversion, shard lengths that match the records in each file, and the same statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("apache_beam", reason="the beam extra is not installed")
pytest.importorskip("tensorflow_datasets", reason="the rlds extra (tensorflow-datasets) is not installed")
pytest.importorskip("mujoco", reason="OXE EEF actions need MuJoCo forward kinematics (the sim extra)")

from test_conv_parts_rlds import make_episodes
from test_conv_rlds import arm_info
from test_sharded_convert import BEAM, assert_same_stats

from telecorder.converters.native import NativeWriter
from telecorder.converters.rlds.schema import import_tfds
from telecorder.runners import ConvertOptions, convert

pytestmark = pytest.mark.tf

RUNS = ("one", "local", "beam")


def _opts(run: str, to: str) -> ConvertOptions:
    common = {"to": to, "val_fraction": 0.3, "shard_episodes": 2}
    if run == "one":
        return ConvertOptions(**common)
    if run == "local":
        return ConvertOptions(workers=2, **common)
    return ConvertOptions(runner="beam", beam_options=BEAM, **common)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("sharded_rlds")
    src = root / "src"
    writer = NativeWriter(src, arm_info())
    for ep in make_episodes():
        writer.write_episode(ep)
    writer.close()
    out = {}
    for to in ("rlds", "oxe"):
        for run in RUNS:
            dst = root / to / run / "arm_demo"
            report = convert(src, dst, _opts(run, to))
            assert report.skipped == [] and report.episodes == len(make_episodes())
            out[(to, run)] = dst
    return out


def _data_dir(path: Path, to: str) -> Path:
    return path / "arm_demo" / "1.0.0" if to == "oxe" else path


def _episodes(path: Path, split: str) -> list[dict]:
    _, tfds = import_tfds()
    builder = tfds.builder_from_directory(str(path))
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            read_config=tfds.ReadConfig(interleave_cycle_length=1))
    return [tfds.as_numpy(ep) | {"steps": list(tfds.as_numpy(ep["steps"]))} for ep in ds]


@pytest.mark.parametrize("to", ["rlds", "oxe"])
@pytest.mark.parametrize("run", ["local", "beam"])
def test_tfds_reads_the_same_episodes_in_both_splits(outputs: dict, to: str, run: str) -> None:
    one, other = _data_dir(outputs[(to, "one")], to), _data_dir(outputs[(to, run)], to)
    for split in ("train", "val"):
        a, b = _episodes(one, split), _episodes(other, split)
        assert len(a) == len(b) > 0
        for ea, eb in zip(a, b, strict=True):
            assert len(ea["steps"]) == len(eb["steps"])
            for sa, sb in zip(ea["steps"], eb["steps"], strict=True):
                np.testing.assert_array_equal(sa["action"], sb["action"])
                for key, value in sa["observation"].items():
                    np.testing.assert_array_equal(value, sb["observation"][key], err_msg=key)
                assert sa["language_instruction"] == sb["language_instruction"]


@pytest.mark.parametrize("to", ["rlds", "oxe"])
@pytest.mark.parametrize("run", ["local", "beam"])
def test_shard_lengths_match_the_records_in_each_file(outputs: dict, to: str, run: str) -> None:
    tf, _ = import_tfds()
    data_dir = _data_dir(outputs[(to, run)], to)
    info = json.loads((data_dir / "dataset_info.json").read_text())
    total = 0
    for split in info["splits"]:
        files = sorted(data_dir.glob(f"*-{split['name']}.tfrecord-*"))
        lengths = [int(n) for n in split["shardLengths"]]
        assert len(files) == len(lengths) > 1  # several parts, each its own shard
        assert all(f.name.endswith(f"-of-{len(files):05d}") for f in files)
        counts = [sum(1 for _ in tf.data.TFRecordDataset(str(f))) for f in files]
        assert counts == lengths
        # TFDS counts the serialized examples, without TFRecord's 16 bytes of framing per record.
        assert int(split["numBytes"]) == sum(f.stat().st_size for f in files) - 16 * sum(counts)
        total += sum(lengths)
    assert total == len(make_episodes())


@pytest.mark.parametrize("run", ["local", "beam"])
def test_oxe_statistics_and_config_equal_the_one_process_run(outputs: dict, run: str) -> None:
    one, other = _data_dir(outputs[("oxe", "one")], "oxe"), _data_dir(outputs[("oxe", run)], "oxe")
    assert_same_stats(json.loads((one / "dataset_statistics.json").read_text()),
                      json.loads((other / "dataset_statistics.json").read_text()), rtol=1e-9)
    config = json.loads((other / "oxe_config.json").read_text())
    octo = config["make_dataset_from_rlds_kwargs"]["octo"]
    assert octo["data_dir"] == str(outputs[("oxe", run)].resolve())
    assert octo["name"] == "arm_demo"


def test_parts_whose_first_episodes_differ_in_metadata_merge_as_one_writer(tmp_path: Path) -> None:
    """A one-process run types ``episode_metadata`` from its first episode; the driver hands
    those fields to every part, so a part starting with other metadata keys still merges."""
    episodes = make_episodes()
    episodes[2].metadata = {k: v for k, v in episodes[2].metadata.items() if k != "operator"} | {"notes": "re-take"}
    writer = NativeWriter(tmp_path / "src", arm_info())
    for ep in episodes:
        writer.write_episode(ep)
    writer.close()
    convert(tmp_path / "src", tmp_path / "one", ConvertOptions(to="rlds"))
    convert(tmp_path / "src", tmp_path / "two", ConvertOptions(to="rlds", workers=2, shard_episodes=2))
    a, b = _episodes(tmp_path / "one", "train"), _episodes(tmp_path / "two", "train")
    assert len(a) == len(b) == len(episodes)
    for ea, eb in zip(a, b, strict=True):
        assert ea["episode_metadata"].keys() == eb["episode_metadata"].keys()
        for key, value in ea["episode_metadata"].items():
            np.testing.assert_array_equal(value, eb["episode_metadata"][key], err_msg=key)
    assert b[2]["episode_metadata"]["operator"] == b""  # typed like the first episode's, missing: empty
