"""Nothing lost: resume after a crash, one lock for every modifier, torn index tails, paths from
metadata, file modes, statistics against the index, and the small holes around them."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import subprocess
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import kill, make_info, start_recorder, synthetic_steps, write_dataset

from telecorder.datasets.dataset import (
    Dataset,
    DatasetWriter,
    append_index_line,
    mark_bad,
    read_index,
)
from telecorder.datasets.doctor import check_dataset, repair_dataset
from telecorder.datasets.episode_file import (
    EpisodeFileWriter,
    StepBatch,
    get_attrs,
    partial_path_for,
    set_attrs,
)
from telecorder.datasets.lock import DatasetLockedError
from telecorder.datasets.stats import DatasetStats
from telecorder.errors import DatasetError


def digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "episodes").glob("episode_*.h5"))}


# -- 1. resume after a crash ------------------------------------------------------------


def test_resume_after_kill_salvages_the_interrupted_episode_first(tmp_path):
    root = tmp_path / "ds"
    kill(start_recorder(root))
    before = digests(root)
    partial = root / "episodes/.episode_000002.partial.h5"
    assert partial.exists()

    info = make_info(cameras=("front", "wrist"))
    with DatasetWriter(root, info, resume=True) as dw:
        assert any("salvaged" in line and "episode 2" in line for line in dw.recovered), dw.recovered
        assert dw.next_index == 3
    write_dataset(root, info, [6], resume=True, task="after the crash")

    ds = Dataset.open(root)
    assert ds.episode_indices == [0, 1, 2, 3]
    assert ds.records[2]["recovered"] is True and ds.records[2]["task"] == "interrupted"
    assert ds.records[2]["length"] > 0
    assert ds.records[3]["length"] == 6 and ds.records[3]["task"] == "after the crash"
    assert {k: v for k, v in digests(root).items() if k in before} == before
    assert not partial.exists() and not (root / "episodes/.unrecoverable").exists()
    report = check_dataset(root)
    assert report.ok, report.all_errors
    assert ds.stats()["action"].count == sum(r["length"] for r in ds.records)


def _batch(info, steps: list, start: int) -> StepBatch:
    import cv2

    idx = np.arange(start, start + len(steps))
    return StepBatch(
        timestamp=idx / info.fps,
        numeric={f.name: np.stack([s.numeric[f.name] for s in steps]) for f in info.numeric_features},
        images={c: [cv2.imencode(".jpg", s.frames[c])[1].ravel() for s in steps] for c in info.cameras},
        image_timestamp={c: idx / info.fps for c in info.cameras},
        frame_index={c: idx for c in info.cameras},
        tick_lateness=np.zeros(len(steps), np.float32),
    )


def test_a_kill_inside_a_flush_still_salvages_what_the_previous_flush_wrote(tmp_path):
    # A kill while HDF5 flushes can leave new chunks and heap blocks on disk that the superblock's
    # end-of-allocation (written at the previous flush) does not cover: reading them fails with
    # "len not positive after adjustment for EOA". Snapshot a file right after its second flush
    # and put the first flush's EOA back into the superblock: exactly that state.
    root = tmp_path / "ds"
    info = make_info(cameras=("front", "wrist"))
    write_dataset(root, info, [5])
    steps = synthetic_steps(300, info, seed=7)
    with DatasetWriter(root, info, resume=True) as dw:
        writer = dw.start_episode(1, {"task": "interrupted"})
        writer.append(_batch(info, steps[:20], 0))
        writer.flush()
        first_eoa = writer.path.stat().st_size
        writer.append(_batch(info, steps[20:], 20))
        writer.flush()
        crashed = bytearray(writer.path.read_bytes())
        writer.abort()
    assert crashed[8] == 0, "superblock version 0 keeps the end-of-allocation at byte 40"
    struct.pack_into("<Q", crashed, 40, first_eoa)
    partial = root / "episodes/.episode_000001.partial.h5"
    partial.write_bytes(bytes(crashed))
    with h5py.File(partial, "r") as f, pytest.raises(OSError, match="EOA"):
        f["observation/images/front"][:]

    with DatasetWriter(root, info, resume=True) as dw:
        lines = [line for line in dw.recovered if "interrupted episode 1" in line]
    assert len(lines) == 1, dw.recovered
    line = lines[0]
    assert line.startswith("salvaged ") and "unreadable" in line, line
    ep = Dataset.open(root).episode(1).load(images=True)
    n = len(ep)
    assert 20 <= n < 300
    np.testing.assert_array_equal(ep.data["action"], np.stack([s.numeric["action"] for s in steps[:n]]))
    assert all(len(ep.images[c]) == n for c in info.cameras)
    assert check_dataset(root).ok


def test_an_unfinished_file_is_never_truncated(tmp_path):
    root = tmp_path / "ds"
    info = make_info()
    write_dataset(root, info, [5])
    final = root / "episodes/episode_000001.h5"
    partial = partial_path_for(final)
    partial.write_bytes(b"the only copy of somebody's demonstration")
    with pytest.raises(DatasetError, match="never overwritten"):
        EpisodeFileWriter(final, info, {})
    assert partial.read_bytes() == b"the only copy of somebody's demonstration"


def test_numbering_skips_every_number_a_file_already_carries(tmp_path):
    root = tmp_path / "ds"
    info = make_info()
    write_dataset(root, info, [5])
    (root / "episodes/.unrecoverable").mkdir()
    (root / "episodes/.unrecoverable/episode_000004.partial.h5").write_bytes(b"junk")
    with DatasetWriter(root, info, resume=True) as dw:
        assert dw.next_index == 5


def test_a_creation_cut_short_is_not_mistaken_for_a_foreign_folder(tmp_path):
    root = tmp_path / "ds"
    (root / "meta").mkdir(parents=True)
    (root / "episodes").mkdir()
    (root / "meta/episodes.jsonl").touch()
    (root / "meta/.lock").touch()
    (root / "meta/.stats.json.123.abcd.tmp").write_text("{")
    write_dataset(root, make_info(), [3])
    assert Dataset.open(root).episode_indices == [0]


# -- 2. one lock for every command that modifies a dataset ---------------------------------


def test_mark_bad_and_repair_refuse_while_a_recording_runs(tmp_path):
    root = tmp_path / "ds"
    proc = start_recorder(root)
    try:
        index_before = (root / "meta/episodes.jsonl").read_bytes()
        partial = root / "episodes/.episode_000002.partial.h5"
        for attempt in (lambda: mark_bad(root, 1), lambda: repair_dataset(root)):
            with pytest.raises(DatasetLockedError, match=rf"process {proc.pid} \(record into it"):
                attempt()
        assert partial.exists(), "repair must not take the live episode for crash debris"
        assert (root / "meta/episodes.jsonl").read_bytes() == index_before
        report = check_dataset(root)
        assert report.ok, report.all_errors  # the live partial file is not an error
        assert any("being modified by" in w for w in report.all_warnings)
    finally:
        kill(proc)
    # The kernel dropped the lock with the process: no stale lock after kill -9.
    assert mark_bad(root, 1, reason="late")["bad"] is True
    assert any("salvaged" in a for a in repair_dataset(root))


def test_viewer_and_convert_overwrite_respect_the_lock(tmp_path, small_dataset):
    from telecorder.converters.base import ConversionError
    from telecorder.converters.pipeline import ConvertOptions, convert

    src, info, _ = small_dataset
    dst = tmp_path / "out"
    convert(src, dst, ConvertOptions(to="native"))
    with DatasetWriter(dst, info, resume=True):
        with pytest.raises(ConversionError, match="being modified by"):
            convert(src, dst, ConvertOptions(to="native", overwrite=True))
        assert Dataset.open(dst).episode_indices == [0, 1, 2]
    report = convert(src, dst, ConvertOptions(to="native", overwrite=True, episodes=[1]))
    assert report.episodes == 1 and len(Dataset.open(dst)) == 1


# -- 3. a torn index tail ----------------------------------------------------------------


def tear_last_line(root: Path) -> None:
    index = root / "meta/episodes.jsonl"
    data = index.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    index.write_bytes(data[: last + (len(data) - last) // 2])


def test_append_after_a_torn_tail_keeps_the_new_line_readable(small_dataset):
    root, _, _ = small_dataset
    tear_last_line(root)
    append_index_line(root, {"episode_index": 3, "file": "episodes/episode_000003.h5", "length": 1})
    records, problems = read_index(root)
    assert [r["episode_index"] for r in records] == [0, 1, 3]
    assert len(problems) == 1 and "unreadable index line" in problems[0]


def test_resume_after_a_torn_tail_shows_every_episode(small_dataset):
    root, info, _ = small_dataset
    tear_last_line(root)
    write_dataset(root, info, [4], resume=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = Dataset.open(root)
    assert ds.episode_indices == [0, 1, 2, 3]
    assert ds.info.total_episodes == 4
    assert check_dataset(root).ok


# -- 4. paths from metadata --------------------------------------------------------------


@pytest.mark.parametrize("file", ["../../outside.h5", "/tmp/elsewhere.h5"])
def test_index_file_field_is_never_opened(small_dataset, file):
    root, _, _ = small_dataset
    index = root / "meta/episodes.jsonl"
    lines = index.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["file"] = file
    lines[1] = json.dumps(rec)
    index.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="names file"):
        ds = Dataset.open(root)
    with ds.episode(1) as ep:
        assert ep.path == root / "episodes/episode_000001.h5" and len(ep) == 20
    report = check_dataset(root)
    assert any("names file" in e for e in report.all_errors)
    repair_dataset(root)
    assert json.loads((root / "meta/episodes.jsonl").read_text().splitlines()[1])["file"] == (
        "episodes/episode_000001.h5")
    assert check_dataset(root).ok


def test_torch_loader_reads_the_derived_file(small_dataset):
    pytest.importorskip("torch")
    from telecorder.loaders.torch_dataset import TorchDataset

    root, _, _ = small_dataset
    index = root / "meta/episodes.jsonl"
    recs = [json.loads(line) for line in index.read_text().splitlines()]
    recs[0]["file"] = "/etc/passwd"
    index.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.warns(UserWarning):
        loader = TorchDataset(root, cameras=[])
    assert len(loader) == 39
    loader[0]


def test_negative_episode_number_is_an_unreadable_line(small_dataset):
    root, _, _ = small_dataset
    with open(root / "meta/episodes.jsonl", "a") as fh:
        fh.write(json.dumps({"episode_index": -1, "length": 3}) + "\n")
    records, problems = read_index(root)
    assert [r["episode_index"] for r in records] == [0, 1, 2] and len(problems) == 1


def test_lerobot_paths_stay_inside_the_dataset(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_conv_lerobot import make_v2

    from telecorder.converters.base import ConversionError
    from telecorder.converters.lerobot import LeRobotReader

    root = make_v2(tmp_path / "v2")
    (tmp_path / "secret.parquet").write_bytes((root / "data/chunk-000/episode_000000.parquet").read_bytes())
    info = json.loads((root / "meta/info.json").read_text())
    good = info["data_path"]
    info["data_path"] = "../secret.parquet"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ConversionError, match="outside the dataset folder"):
        LeRobotReader(root).read_episode(0)

    info["data_path"] = good
    (root / "meta/info.json").write_text(json.dumps(info))
    parquet = root / "data/chunk-000/episode_000000.parquet"
    table = pq.read_table(parquet)
    n = table.num_rows
    (tmp_path / "outside.png").write_bytes(b"\x89PNG not really")
    paths = pa.array([{"bytes": None, "path": "../../../outside.png"}] * n,
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = table.set_column(table.column_names.index("observation.image"), "observation.image", paths)
    pq.write_table(table, parquet)
    with pytest.raises(ConversionError, match=r"step 0.*outside the dataset folder"):
        LeRobotReader(root).read_episode(0)


def test_join_inside():
    from telecorder.safe_paths import join_inside

    root = Path("/data/ds")
    assert join_inside(root, "videos/./a/../b.mp4", source="t") == root / "videos/b.mp4"
    for bad in ("../x", "a/../../x", "/etc/passwd", "C:\\x", "a\\..\\..\\x", ""):
        with pytest.raises(DatasetError, match="refusing"):
            join_inside(root, bad, source="t")


# -- 5. file modes -----------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_metadata_files_honour_the_umask(tmp_path, umask):
    from telecorder.converters.pipeline import ConvertOptions, convert

    old = os.umask(umask)
    try:
        root = tmp_path / "ds"
        write_dataset(root, make_info(), [4, 5])
        mark_bad(root, 1)
        outs = {}
        for fmt in ("lerobot", "aloha", "robomimic"):
            outs[fmt] = tmp_path / fmt
            convert(root, outs[fmt], ConvertOptions(to=fmt))
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    files = [root / "meta/info.json", root / "meta/stats.json", root / "meta/episodes.jsonl",
             root / "episodes/episode_000000.h5", outs["lerobot"] / "meta/info.json",
             outs["lerobot"] / "meta/stats.json"]
    files += [p for out in outs.values() for p in out.rglob("telecorder_meta.json")]
    assert len(files) == 9
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))


# -- 6. statistics against the index, duplicate lines --------------------------------------


def test_doctor_finds_statistics_that_miss_an_episode(small_dataset):
    root, _, _ = small_dataset
    full = (root / "meta/stats.json").read_text()
    stats = DatasetStats.from_json_dict(json.loads(full))
    assert stats.episodes == {0, 1, 2}
    ds = Dataset.open(root)
    partial = DatasetStats({}, episodes=())
    for i in (0, 1):
        with ds.episode(i) as ep:
            partial = partial.merge(DatasetStats.from_arrays(
                {n: ep.numeric(n) for n in ("observation.state", "action")}, episode=i))
    (root / "meta/stats.json").write_text(json.dumps(partial.to_json_dict()))
    report = check_dataset(root)
    assert any("leave out episode(s) 2" in e for e in report.all_errors), report.all_errors
    assert any("recomputed" in a for a in repair_dataset(root))
    assert check_dataset(root).ok
    assert json.loads((root / "meta/stats.json").read_text()) == json.loads(full)


def test_doctor_counts_rows_of_statistics_without_coverage(small_dataset):
    root, _, _ = small_dataset
    d = json.loads((root / "meta/stats.json").read_text())
    ds = Dataset.open(root)
    with ds.episode(0) as ep:
        one = DatasetStats.from_arrays({n: ep.numeric(n) for n in ("observation.state", "action")}).to_json_dict()
    del d["episodes"]
    one.pop("episodes", None)
    (root / "meta/stats.json").write_text(json.dumps(one))
    report = check_dataset(root)
    assert any("count 12 rows, the indexed episodes have 39" in e for e in report.all_errors), report.all_errors


def test_duplicate_index_lines_count_once(small_dataset):
    root, _, _ = small_dataset
    index = root / "meta/episodes.jsonl"
    lines = index.read_text().splitlines()
    index.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.warns(UserWarning, match="listed 2 times"):
        ds = Dataset.open(root)
    assert len(ds) == 3 and ds.num_frames == 39
    assert any("listed 2 times" in e for e in check_dataset(root).all_errors)
    repair_dataset(root)
    assert len(index.read_text().splitlines()) == 3 and check_dataset(root).ok


# -- 7. the smaller holes ------------------------------------------------------------------


def test_text_that_looks_encoded_reads_back_as_written(tmp_path):
    values = {"note": "json:[1, 2]", "plain": "hello", "nested": {"a": [1, 2]}, "flag": True}
    with h5py.File(tmp_path / "a.h5", "w") as f:
        set_attrs(f, values)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert get_attrs(f) == values


def test_quarantine_never_replaces_an_earlier_file(small_dataset):
    root, _, _ = small_dataset
    partial = root / "episodes/.episode_000005.partial.h5"
    for content in (b"first wreck", b"second wreck"):
        partial.write_bytes(content)
        assert any("moved" in a for a in repair_dataset(root))
    kept = sorted(p.read_bytes() for p in (root / "episodes/.unrecoverable").iterdir())
    assert kept == [b"first wreck", b"second wreck"]


def test_flush_reaches_the_disk(tmp_path, monkeypatch):
    import telecorder.datasets.episode_file as episode_file

    info = make_info()
    writer = EpisodeFileWriter(tmp_path / "episode_000000.h5", info, {})
    synced = []
    monkeypatch.setattr(episode_file.os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino))
    writer.flush()
    assert synced == [os.stat(writer.path).st_ino]
    writer.abort()


def test_repair_clears_temporaries_of_interrupted_writes(small_dataset):
    root, _, _ = small_dataset
    (root / "meta/.stats.json.999.dead.tmp").write_text('{"half')
    report = check_dataset(root)
    assert report.ok and any("temporary file" in w for w in report.all_warnings)
    assert any("removed 1 temporary" in a for a in repair_dataset(root))
    assert not (root / "meta/.stats.json.999.dead.tmp").exists()


def test_collect_resume_after_kill_salvages_and_says_so(tmp_path):
    """The reported sequence, end to end: record, kill -9 in episode 1, ``collect --resume``."""
    pytest.importorskip("mujoco")
    from test_cli import run, tool

    out = tmp_path / "demos"
    args = [tool("collect"), "--script", "sweep", "--sim-cameras", "front", "--camera-size", "96x72",
            "--reset-time", "0", "--seed", "2", "--out", str(out)]
    proc = subprocess.Popen([*args, "--episodes", "3", "--episode-time", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        for line in proc.stdout:
            if line.startswith("episode 0:"):
                break
        deadline = time.monotonic() + 30
        partial = out / "episodes/.episode_000001.partial.h5"
        while time.monotonic() < deadline:  # until the episode in progress has flushed steps
            try:
                with h5py.File(partial, "r", locking=False) as f:
                    if f["timestamp"].shape[0] > 5:
                        break
            except (OSError, KeyError):
                pass  # not there yet, or caught between two flushes
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    before = digests(out)
    assert list(before) == ["episode_000000.h5"]
    again = run(*args, "--episodes", "1", "--episode-time", "1", "--resume", check=True)
    assert "salvaged" in again.stdout and "episode 1" in again.stdout, again.stdout
    ds = Dataset.open(out)
    assert ds.episode_indices == [0, 1, 2]
    assert ds.records[1]["recovered"] is True
    assert digests(out)["episode_000000.h5"] == before["episode_000000.h5"]
    assert run(tool("telecorder"), "doctor", str(out)).returncode == 0
    assert np.isfinite(ds.stats()["action"].mean).all()
