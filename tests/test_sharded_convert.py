"""Sharded conversion on the local process pool and on Apache Beam's DirectRunner (in
multi-processing mode, as on a cluster: workers in other processes): the same episodes, in the
same order, with the same statistics as the one-process pipeline; bad episodes reported by
file, skipped with skip_bad, fatal without it, and never a complete-looking output after a
failure. The RLDS path, read back with tensorflow_datasets, is in test_sharded_rlds.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_info, write_dataset
from test_conv_lerobot import psnr

from telecorder.converters import open_reader
from telecorder.converters.base import ConversionError
from telecorder.datasets.doctor import check_dataset
from telecorder.runners import ConvertOptions, convert

beam = pytest.importorskip("apache_beam", reason="the beam extra is not installed")

BEAM = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
LENGTHS = [5, 9, 3, 7, 4, 8, 6]


def assert_same_episodes(a_path: Path, b_path: Path, *, min_psnr: float = 35.0, exact_frames: bool = False) -> None:
    a, b = open_reader(a_path), open_reader(b_path)
    assert a.episode_indices() == b.episode_indices()
    assert a.info.features.keys() == b.info.features.keys()
    for i in a.episode_indices():
        ea, eb = a.read_episode(i), b.read_episode(i)
        assert len(ea) == len(eb)
        np.testing.assert_array_equal(ea.timestamp, eb.timestamp)
        for name, values in ea.data.items():
            np.testing.assert_array_equal(values, eb.data[name], err_msg=f"episode {i} {name}")
        for key in ("task", "success", "source_episode_index"):
            assert ea.metadata.get(key) == eb.metadata.get(key), (i, key)
        for cam, frames in ea.images.items():
            for fa, fb in zip(frames, eb.images[cam], strict=True):
                if exact_frames:
                    np.testing.assert_array_equal(fa, fb)
                else:
                    assert psnr(fa, fb) >= min_psnr


def assert_same_stats(a: dict, b: dict, rtol: float = 1e-12) -> None:
    """Counts, extrema and sketch buckets exactly; means and moments up to the rounding of
    merging in another grouping."""
    assert a.keys() == b.keys()
    for key in a:
        va, vb = a[key], b[key]
        if isinstance(va, dict):
            assert_same_stats(va, vb, rtol)
        elif isinstance(va, list) and va and isinstance(va[0], (int, float, list)):
            np.testing.assert_allclose(np.asarray(va, np.float64), np.asarray(vb, np.float64), rtol=rtol, atol=0,
                                       err_msg=key)
        else:
            assert va == vb, key


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sharded") / "src"
    write_dataset(root, make_info(cameras=("front", "wrist")), LENGTHS)
    return root


@pytest.fixture(scope="module")
def native_outputs(source: Path) -> dict[str, Path]:
    out = source.parent / "native"
    runs = {
        "one": ConvertOptions(to="native"),
        "local": ConvertOptions(to="native", workers=2, shard_episodes=2),
        "beam": ConvertOptions(to="native", runner="beam", beam_options=BEAM, shard_episodes=2),
    }
    paths = {}
    for name, opts in runs.items():
        report = convert(source, out / name, opts)
        assert (report.episodes, report.frames, report.skipped) == (len(LENGTHS), sum(LENGTHS), [])
        paths[name] = out / name
    return paths


@pytest.mark.parametrize("run", ["local", "beam"])
def test_native_to_native_sharded_equals_one_process(native_outputs: dict[str, Path], run: str) -> None:
    assert_same_episodes(native_outputs["one"], native_outputs[run], exact_frames=True)
    one = json.loads((native_outputs["one"] / "meta/stats.json").read_text())
    other = json.loads((native_outputs[run] / "meta/stats.json").read_text())
    assert other["episodes"] == f"0-{len(LENGTHS) - 1}"
    assert_same_stats(one, other)
    info = json.loads((native_outputs[run] / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"]) == (len(LENGTHS), sum(LENGTHS))
    # Nothing of the machinery is left in the dataset.
    assert sorted(p.name for p in native_outputs[run].iterdir()) == ["episodes", "meta"]
    assert check_dataset(native_outputs[run]).ok


def test_doctor_on_beam_reports_what_the_local_doctor_reports(native_outputs: dict[str, Path]) -> None:
    from telecorder.beam.doctor import beam_checker

    path = native_outputs["beam"]
    broken = path / "episodes/episode_000004.h5"
    original = broken.read_bytes()
    broken.write_bytes(original[: len(original) // 3])
    try:
        local = check_dataset(path)
        on_beam = check_dataset(path, check_episodes=beam_checker(BEAM))
        assert not local.ok
        assert any("episode_000004" in e for e in local.all_errors)
        assert on_beam.to_dict() == local.to_dict()
    finally:
        broken.write_bytes(original)


@pytest.fixture(scope="module")
def lerobot_outputs(source: Path) -> dict[str, Path]:
    out = source.parent / "lerobot"
    runs = {
        "one": ConvertOptions(to="lerobot"),
        "local": ConvertOptions(to="lerobot", workers=2, shard_episodes=3),
        "beam": ConvertOptions(to="lerobot", runner="beam", beam_options=BEAM, shard_episodes=3),
    }
    for name, opts in runs.items():
        convert(source, out / name, opts)
    return {name: out / name for name in runs}


@pytest.mark.parametrize("run", ["local", "beam"])
def test_native_to_lerobot_sharded_equals_one_process(lerobot_outputs: dict[str, Path], run: str) -> None:
    one, other = lerobot_outputs["one"], lerobot_outputs[run]
    assert_same_episodes(one, other, min_psnr=35.0)
    info_one = json.loads((one / "meta/info.json").read_text())
    info_other = json.loads((other / "meta/info.json").read_text())
    for key in ("total_episodes", "total_frames", "total_tasks", "features", "fps", "splits"):
        assert info_one[key] == info_other[key], key
    # LeRobot finds an episode's rows by global index: contiguous, in episode order, across files.
    rows = pq.read_table(sorted(other.glob("meta/episodes/*/*.parquet"))).to_pylist()
    assert [r["episode_index"] for r in rows] == list(range(len(LENGTHS)))
    starts = [r["dataset_from_index"] for r in rows]
    assert starts == list(np.cumsum([0, *LENGTHS[:-1]]))
    data = pq.read_table(sorted(other.glob("data/*/*.parquet")))
    np.testing.assert_array_equal(data["index"].to_numpy(), np.arange(sum(LENGTHS)))
    np.testing.assert_array_equal(data["episode_index"].to_numpy(), np.repeat(np.arange(len(LENGTHS)), LENGTHS))
    stats_one = json.loads((one / "meta/stats.json").read_text())
    stats_other = json.loads((other / "meta/stats.json").read_text())
    assert_same_stats(stats_one, stats_other, rtol=1e-9)


@pytest.mark.parametrize("run", ["local", "beam"])
def test_lerobot_to_native_sharded_equals_one_process(lerobot_outputs: dict[str, Path], tmp_path: Path,
                                                      run: str) -> None:
    src = lerobot_outputs["one"]
    convert(src, tmp_path / "one", ConvertOptions(to="native"))
    opts = ConvertOptions(to="native", workers=2, shard_episodes=2)
    if run == "beam":
        opts = ConvertOptions(to="native", runner="beam", beam_options=BEAM, shard_episodes=2)
    convert(src, tmp_path / run, opts)
    assert_same_episodes(tmp_path / "one", tmp_path / run, exact_frames=True)
    assert_same_stats(json.loads((tmp_path / "one/meta/stats.json").read_text()),
                      json.loads((tmp_path / run / "meta/stats.json").read_text()))


@pytest.fixture
def source_with_bad_episode(source: Path, tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "src"
    shutil.copytree(source, root)
    bad = root / "episodes/episode_000003.h5"
    bad.write_bytes(b"not an HDF5 file, cut short by a full disk" * 10)
    return root


@pytest.mark.parametrize("runner", ["local", "beam"])
def test_bad_episode_is_fatal_and_leaves_no_output(source_with_bad_episode: Path, tmp_path: Path,
                                                   runner: str) -> None:
    dst = tmp_path / "out"
    opts = ConvertOptions(to="native", workers=2, runner=runner, shard_episodes=2,
                          beam_options=BEAM if runner == "beam" else [])
    with pytest.raises(ConversionError, match=r"episode 3: .*episode_000003\.h5"):
        convert(source_with_bad_episode, dst, opts)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("src",)] == []


@pytest.mark.parametrize("runner", ["local", "beam"])
def test_bad_episode_is_skipped_and_listed_with_skip_bad(source_with_bad_episode: Path, tmp_path: Path,
                                                         runner: str) -> None:
    dst = tmp_path / "out"
    opts = ConvertOptions(to="native", workers=2, runner=runner, shard_episodes=2, skip_bad=True,
                          beam_options=BEAM if runner == "beam" else [])
    report = convert(source_with_bad_episode, dst, opts)
    assert [i for i, _ in report.skipped] == [3]
    assert "episode_000003.h5" in report.skipped[0][1]
    assert report.episodes == len(LENGTHS) - 1
    out = open_reader(dst)
    assert out.episode_indices() == list(range(len(LENGTHS) - 1))
    sources = [out.read_episode(i).metadata["source_episode_index"] for i in out.episode_indices()]
    assert sources == [0, 1, 2, 4, 5, 6]
    assert check_dataset(dst).ok


def test_a_url_scheme_gets_an_error_that_says_to_mount_it(source: Path) -> None:
    opts = ConvertOptions(to="native", runner="beam", beam_options=BEAM)
    with pytest.raises(Exception, match=r"gs:// paths cannot be used directly.*[Mm]ount the bucket"):
        convert(source, Path("gs://bucket/out"), opts)


def test_a_misspelt_beam_option_is_refused(source: Path, tmp_path: Path) -> None:
    opts = ConvertOptions(to="native", runner="beam", beam_options=["--direct_num_worker=2"])
    with pytest.raises(Exception, match=r"unknown Beam option.*direct_num_worker"):
        convert(source, tmp_path / "out", opts)
    assert not (tmp_path / "out").exists()


def test_beam_run_cannot_resume(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="--resume"):
        convert(source, tmp_path / "out", ConvertOptions(to="native", runner="beam", resume=True))


@pytest.mark.parametrize(("total", "workers"), [(60, 2), (61, 2), (7, 2), (1000, 3), (5, 8)])
def test_shards_are_contiguous_in_order_and_even_across_workers(total: int, workers: int) -> None:
    from telecorder.converters.sharded import MAX_SHARD_EPISODES, plan_shards

    indices = list(range(100, 100 + total))
    shards = plan_shards(indices, workers)
    assert [i for shard in shards for i in shard] == indices
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= MAX_SHARD_EPISODES
    if total >= workers:
        assert len(shards) % workers == 0 or len(shards) == total
    assert [len(s) for s in plan_shards(indices, workers, per_shard=3)][:-1] == [3] * ((total - 1) // 3)


def test_cli_convert_and_doctor_on_beam(source: Path, tmp_path: Path) -> None:
    from test_cli import run, tool

    dst = tmp_path / "out"
    proc = run(tool("telecorder"), "convert", str(source), str(dst), "--to", "native", "--runner", "beam",
               "--beam-options", "--direct_num_workers=2 --direct_running_mode=multi_processing", check=True)
    assert f"wrote {len(LENGTHS)} episode(s)" in proc.stdout
    proc = run(tool("telecorder"), "doctor", str(dst), "--runner", "beam", "--beam-options",
               "--direct_num_workers=2", "--json", check=True)
    report = json.loads(proc.stdout)
    assert report["ok"] and [e["episode_index"] for e in report["episodes"]] == list(range(len(LENGTHS)))
    proc = run(tool("telecorder"), "convert", str(source), str(tmp_path / "x"), "--to", "native",
               "--beam-options", "--direct_num_workers=2")
    assert proc.returncode != 0 and "--runner beam" in proc.stderr + proc.stdout
