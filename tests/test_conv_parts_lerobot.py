"""LeRobot output written in parts (``part=True``) and merged equals the sequential writer's output."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_conv_lerobot import psnr

from telecorder.converters.base import SIDECAR, ConversionError
from telecorder.converters.lerobot import LeRobotReader, LeRobotWriter, merge_parts
from telecorder.converters.parts import (
    PART_STATS,
    PARTS_DIR,
    merged_part_stats,
    part_path,
    read_part_stats,
)
from telecorder.converters.video import VideoEncoder
from telecorder.datasets import DatasetInfo, Episode, FeatureSpec, image_feature

FPS = 30
H, W = 48, 64
CAMERAS = ("front", "wrist")
LENGTHS = (9, 14, 6, 11, 8, 12, 7)
# Part 1 meets only the second task; part 2 meets a new third task first and the first task
# last: the merge must number tasks in first-seen order across parts, as one writer does.
TASKS = ("pick the cube", "pick the cube", "pick the cube", "open the drawer", "wipe the table",
         "open the drawer", "pick the cube")
GROUPS = ((0, 3), (3, 4), (4, 7))  # parts of 3, 1 and 3 episodes
MIN_PSNR = 35.0  # what test_conv_lerobot.py asks of the same encoder settings


def scene(step: int, camera: int, episode: int) -> np.ndarray:
    y = np.linspace(0.0, 1.0, H)[:, None]
    x = np.linspace(0.0, 1.0, W)[None, :]
    img = np.stack([80 + 100 * x + 0 * y, 60 + 120 * y + 30 * camera + 0 * x, 120 + 60 * x * y + 5 * episode],
                   axis=-1)
    r, c = (3 * step) % (H - 12), (5 * step + 17 * camera) % (W - 16)
    img[r : r + 12, c : c + 16] += 50
    return np.clip(img, 0, 255).astype(np.uint8)


def make_info() -> DatasetInfo:
    feats = [
        FeatureSpec("observation.state", "float32", (5,), names=tuple(f"j{i}" for i in range(5)), unit="rad"),
        FeatureSpec("action", "float32", (5,), unit="rad"),
        FeatureSpec("next.reward", "float64", (1,)),
    ]
    feats += [image_feature(c, H, W) for c in CAMERAS]
    return DatasetInfo.create(feats, fps=FPS, robot_type="test_arm")


def make_episode(k: int) -> Episode:
    n = LENGTHS[k]
    rng = np.random.default_rng(100 + k)
    ts = np.arange(n) / FPS + rng.uniform(0, 2e-3, n)
    return Episode(
        index=20 + k,
        timestamp=ts,
        data={"observation.state": rng.normal(size=(n, 5)).astype(np.float32),
              "action": rng.normal(size=(n, 5)).astype(np.float32),
              "next.reward": rng.normal(size=(n, 1))},
        image_timestamp={c: ts - 0.003 * (i + 1) for i, c in enumerate(CAMERAS)},
        frame_index={c: np.arange(n, dtype=np.int64) * 2 + i for i, c in enumerate(CAMERAS)},
        tick_lateness=rng.uniform(0, 1e-3, n).astype(np.float32),
        metadata={"task": TASKS[k], "language_instruction": TASKS[k], "success": k % 3 != 1, "operator": "ana"},
        images={c: [scene(s, i, k) for s in range(n)] for i, c in enumerate(CAMERAS)},
    )


@pytest.fixture(scope="module")
def episodes() -> list[Episode]:
    return [make_episode(k) for k in range(len(LENGTHS))]


def write_sequential(root: Path, episodes: list[Episode], **options: object) -> Path:
    writer = LeRobotWriter(root, make_info(), **options)
    for ep in episodes:
        writer.write_episode(ep)
    writer.close()
    return root


def write_parts(work: Path, episodes: list[Episode], **options: object) -> list[Path]:
    parts = []
    for k, (a, b) in enumerate(GROUPS):
        parts.append(write_sequential(part_path(work, k), episodes[a:b], part=True, encode_threads=1, **options))
    return parts



# Default layout (a file of each kind per part), and tiny size limits with 2 files a chunk
# (a file per episode, numbering that crosses chunk folders).
LAYOUTS = {"default": {}, "small_files": {"data_file_size_mb": 1e-6, "video_file_size_mb": 1e-6, "chunks_size": 2}}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def pair(request, tmp_path_factory, episodes) -> tuple[Path, Path, set[int]]:
    options = LAYOUTS[request.param]
    tmp = tmp_path_factory.mktemp(f"lerobot_parts_{request.param}")
    seq = write_sequential(tmp / "seq", episodes, **options)
    work = tmp / "merged"
    parts = write_parts(work, episodes, **options)
    inodes = {p.stat().st_ino for p in parts[2].glob("videos/*/*/*.mp4")}
    merge_parts(work, parts, make_info(), options, merged_part_stats(parts))
    return seq, work, inodes


# -- what LeRobot reads, with pyarrow and PyAV ---------------------------------------------------


def all_data(root: Path) -> pa.Table:
    """Every data file in chunk/file order, concatenated, as LeRobot loads them into one table."""
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def episode_rows(root: Path) -> list[dict]:
    files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def frames_at(path: Path, times: np.ndarray) -> list[np.ndarray]:
    """The frame shown nearest each time (LeRobot's query: from_timestamp + frame_index / fps)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    stamps = np.array([t for t, _ in decoded])
    out = []
    for t in times:
        k = int(np.argmin(np.abs(stamps - t)))
        assert abs(stamps[k] - t) <= 1 / (2 * FPS), f"{path}: no frame near {t}"
        out.append(decoded[k][1])
    return out


def test_merged_dataset_as_lerobot_reads_it(pair, episodes):
    _, root, _ = pair
    info = json.loads((root / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (7, sum(LENGTHS), 3)
    assert info["splits"] == {"train": "0:7"}
    data = all_data(root)
    np.testing.assert_array_equal(data["index"].to_numpy(), np.arange(sum(LENGTHS)))
    tasks = pq.read_table(root / "meta/tasks.parquet")
    task_of = dict(zip(tasks["task_index"].to_pylist(), tasks["task"].to_pylist(), strict=True))
    assert task_of == {0: "pick the cube", 1: "open the drawer", 2: "wipe the table"}
    rows = episode_rows(root)
    assert [r["episode_index"] for r in rows] == list(range(7))
    assert rows[0]["dataset_from_index"] == 0 and rows[-1]["dataset_to_index"] == sum(LENGTHS)
    for prev, nxt in itertools.pairwise(rows):
        assert prev["dataset_to_index"] == nxt["dataset_from_index"]
    for row, ep in zip(rows, episodes, strict=True):
        n = row["dataset_to_index"] - row["dataset_from_index"]
        assert n == row["length"] == len(ep)
        part = data.slice(row["dataset_from_index"], n)
        assert set(part["episode_index"].to_pylist()) == {row["episode_index"]}
        assert {task_of[t] for t in part["task_index"].to_pylist()} == {ep.metadata["task"]} == set(row["tasks"])
        own = pq.read_table(root / info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                            file_index=row["data/file_index"]))
        assert row["episode_index"] in own["episode_index"].to_pylist()
        np.testing.assert_array_equal(np.stack(part["action"].to_numpy(zero_copy_only=False)), ep.data["action"])
        np.testing.assert_array_equal(part["next.reward"].to_numpy(), ep.data["next.reward"][:, 0])
        for i, cam in enumerate(CAMERAS):
            key = f"observation.images.{cam}"
            video = root / info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                     file_index=row[f"videos/{key}/file_index"])
            start = row[f"videos/{key}/from_timestamp"]
            assert row[f"videos/{key}/to_timestamp"] == pytest.approx(start + n / FPS)
            frames = frames_at(video, start + part["frame_index"].to_numpy() / FPS)
            worst = min(psnr(a, b) for a, b in zip(frames, ep.images[cam], strict=True))
            assert worst >= MIN_PSNR, f"episode {row['episode_index']} camera {cam}: {worst:.1f} dB"
            assert i == CAMERAS.index(cam)


def test_merged_equals_sequential_through_our_reader(pair, episodes):
    seq, merged, _ = pair
    a, b = LeRobotReader(seq), LeRobotReader(merged)
    assert a.episode_indices() == b.episode_indices() == list(range(7))
    assert a.info.to_dict() == b.info.to_dict()
    for i, orig in enumerate(episodes):
        x, y = a.read_episode(i), b.read_episode(i)
        assert x.metadata == y.metadata and y.metadata["operator"] == "ana"
        for name in orig.data:
            np.testing.assert_array_equal(y.data[name], orig.data[name])
            np.testing.assert_array_equal(y.data[name], x.data[name])
        np.testing.assert_array_equal(y.timestamp, orig.timestamp)
        np.testing.assert_array_equal(y.tick_lateness, orig.tick_lateness)
        for cam in CAMERAS:
            np.testing.assert_array_equal(y.image_timestamp[cam], orig.image_timestamp[cam])
            np.testing.assert_array_equal(y.frame_index[cam], orig.frame_index[cam])
            assert min(psnr(f, g) for f, g in zip(y.images[cam], orig.images[cam], strict=True)) >= MIN_PSNR


def test_merged_files_equal_sequential_files_but_for_the_layout(pair):
    seq, merged, _ = pair
    a, b = all_data(seq), all_data(merged)
    assert a.schema.equals(b.schema, check_metadata=True)  # the huggingface features too
    assert a.to_pydict() == b.to_pydict()
    assert json.loads((seq / "meta/info.json").read_text()) == json.loads((merged / "meta/info.json").read_text())
    assert json.loads((seq / SIDECAR).read_text()) == json.loads((merged / SIDECAR).read_text())
    assert pq.read_table(seq / "meta/tasks.parquet").equals(pq.read_table(merged / "meta/tasks.parquet"),
                                                             check_metadata=True)
    timing_a = pq.ParquetFile(seq / "meta/telecorder_timing.parquet")
    timing_b = pq.ParquetFile(merged / "meta/telecorder_timing.parquet")
    assert timing_b.num_row_groups == timing_a.num_row_groups == 7  # one an episode, for the reader's filter
    assert timing_a.read().equals(timing_b.read())
    layout = ("/chunk_index", "/file_index", "/from_timestamp", "/to_timestamp")
    rows_a, rows_b = episode_rows(seq), episode_rows(merged)
    assert [list(r) for r in rows_a] == [list(r) for r in rows_b]  # same columns, same order
    for ra, rb in zip(rows_a, rows_b, strict=True):
        same = {k: v for k, v in ra.items() if not (k.startswith(("data/", "videos/")) and k.endswith(layout))}
        assert same == {k: rb[k] for k in same}, ra["episode_index"]  # incl. stats of index, task_index


def test_statistics_equal_the_sequential_writers(pair):
    seq, merged, _ = pair
    a = json.loads((seq / "meta/stats.json").read_text())
    b = json.loads((merged / "meta/stats.json").read_text())
    assert list(a) == list(b)
    assert {"index", "episode_index", "task_index", "observation.images.front"} <= set(a)
    for name, stats in a.items():
        assert set(stats) == set(b[name])
        assert stats["count"] == b[name]["count"], name
        for key, value in stats.items():
            np.testing.assert_allclose(b[name][key], value, rtol=1e-9, atol=0, err_msg=f"{name} {key}")
    assert a["index"]["max"] == [sum(LENGTHS) - 1] and a["episode_index"]["max"] == [6]


def test_videos_are_moved_not_copied_and_parts_removed(pair):
    _, merged, inodes = pair
    assert not (merged / PARTS_DIR).exists()
    finals = {p.stat().st_ino for p in merged.glob("videos/*/*/*.mp4")}
    assert inodes and inodes <= finals
    assert not (merged / PART_STATS).exists()


# -- the writer's part mode and encoder threads --------------------------------------------------


def test_part_statistics_leave_out_dataset_wide_columns(tmp_path, episodes):
    part = write_sequential(tmp_path / "part", episodes[:2], part=True, encode_threads=1)
    stats = read_part_stats(part)
    assert {"action", "timestamp", "frame_index", "observation.images.wrist"} <= set(stats)
    assert not {"index", "episode_index", "task_index"} & set(stats)
    assert stats["action"].count == LENGTHS[0] + LENGTHS[1]
    plain = write_sequential(tmp_path / "plain", episodes[:1])
    assert not (plain / PART_STATS).exists()
    with pytest.raises(ConversionError, match="part"):
        LeRobotWriter(tmp_path / "bad", make_info(), part="maybe")
    with pytest.raises(ConversionError, match="encode_threads"):
        LeRobotWriter(tmp_path / "bad2", make_info(), encode_threads=0)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_one_encode_thread_starts_no_encoder_threads(tmp_path):
    # x264 starts frame and lookahead threads unless told otherwise (several on any machine with
    # more than one core); a sharded worker must encode on its own thread.
    before = set(os.listdir("/proc/self/task"))
    seen: set[str] = set()
    with VideoEncoder(tmp_path / "one.mp4", W, H, FPS, "h264", threads=1) as enc:
        for s in range(20):
            enc.append(scene(s, 0, 0))
            seen |= set(os.listdir("/proc/self/task"))
    assert seen - before == set()


# -- inconsistent parts --------------------------------------------------------------------------


@pytest.fixture
def parts(tmp_path, episodes) -> tuple[Path, list[Path]]:
    work = tmp_path / "work"
    return work, write_parts(work, episodes)


def test_missing_or_truncated_video_in_a_part_is_named(parts):
    work, paths = parts
    video = next(paths[1].glob("videos/observation.images.wrist/*/*.mp4"))
    video.write_bytes(video.read_bytes()[:300])
    with pytest.raises(ConversionError, match=r"part-00001.*observation\.images\.wrist.*file-000\.mp4"):
        merge_parts(work, paths, make_info(), {}, merged_part_stats(paths))
    video.unlink()
    with pytest.raises(ConversionError, match=r"part-00001.*observation\.images\.wrist.*missing"):
        merge_parts(work, paths, make_info(), {}, merged_part_stats(paths))


def test_corrupt_data_file_in_a_part_is_named_and_nothing_is_moved(parts):
    work, paths = parts
    data = next(paths[2].glob("data/*/*.parquet"))
    data.write_bytes(b"not parquet" * 10)
    with pytest.raises(ConversionError, match=r"part-00002.*data/chunk-000/file-000\.parquet"):
        merge_parts(work, paths, make_info(), {}, merged_part_stats(paths))
    assert all(list(p.glob("videos/*/*/*.mp4")) for p in paths)  # parts left whole


def test_rows_that_disagree_with_the_episodes_are_named(parts):
    work, paths = parts
    data = next(paths[2].glob("data/*/*.parquet"))
    table = pq.read_table(data)
    i = table.schema.get_field_index("episode_index")
    table = table.set_column(i, table.schema.field(i), pa.array(np.zeros(table.num_rows, np.int64)))
    pq.write_table(table, data)
    with pytest.raises(ConversionError, match=r"part-00002.*'episode_index'"):
        merge_parts(work, paths, make_info(), {}, merged_part_stats(paths))
    assert all(list(p.glob("videos/*/*/*.mp4")) for p in paths)


def test_part_without_statistics_or_of_another_schema_is_named(parts, tmp_path):
    work, paths = parts
    stats = merged_part_stats(paths)
    (paths[1] / PART_STATS).unlink()
    with pytest.raises(ConversionError, match=r"part-00001.*part_stats\.json"):
        merge_parts(work, paths, make_info(), {}, stats)
    shutil.copy(paths[0] / PART_STATS, paths[1] / PART_STATS)  # covers 3 episodes, the part has 1
    with pytest.raises(ConversionError, match=r"part-00001.*statistics of"):
        merge_parts(work, paths, make_info(), {}, stats)
    info = json.loads((paths[2] / "meta/info.json").read_text())
    info["fps"] = 15
    (paths[2] / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ConversionError, match=r"part-00002.*fps"):
        merge_parts(work, [paths[0], paths[2]], make_info(), {}, stats)


def test_av1_encoding_leaves_the_process_at_normal_scheduling(tmp_path):
    """As root, SVT-AV1 puts the calling thread and its own at SCHED_FIFO 99; a conversion would then hold
    whole cores above everything (a recording included), and the caller would stay there afterwards."""
    import threading

    me = threading.get_native_id()
    recorder = threading.Event()
    ready = threading.Event()
    tid: list[int] = []

    def held() -> None:  # a thread someone else put at real-time priority keeps it
        tid.append(threading.get_native_id())
        ready.set()
        recorder.wait()

    other = threading.Thread(target=held, daemon=True)
    other.start()
    ready.wait()
    try:
        os.sched_setscheduler(tid[0], os.SCHED_FIFO, os.sched_param(10))
    except PermissionError:
        pytest.skip("needs the right to use real-time priority (root, as in CI), as SVT-AV1's own change does")
    try:
        enc = VideoEncoder(tmp_path / "a.mp4", 64, 48, 30, codec="av1", threads=1)
        for _ in range(3):
            enc.append(np.zeros((48, 64, 3), np.uint8))
            assert os.sched_getscheduler(me) == os.SCHED_OTHER
        enc.close()
        for t in os.listdir("/proc/self/task"):
            if int(t) != tid[0]:
                assert os.sched_getscheduler(int(t)) & ~os.SCHED_RESET_ON_FORK == os.SCHED_OTHER, t
        assert (os.sched_getscheduler(tid[0]), os.sched_getparam(tid[0]).sched_priority) == (os.SCHED_FIFO, 10)
    finally:
        os.sched_setscheduler(tid[0], os.SCHED_OTHER, os.sched_param(0))
        recorder.set()
        other.join()
