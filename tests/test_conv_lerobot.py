"""LeRobot adapter: v3.0 round trips, the written layout read without telecorder, v2 inputs, bad inputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from telecorder.converters.base import SIDECAR, ConversionError
from telecorder.converters.lerobot import LeRobotReader, LeRobotWriter
from telecorder.converters.lerobot.schema import camera_of, flatten_names
from telecorder.converters.video import VideoEncoder, decode_frames
from telecorder.datasets import DatasetInfo, Episode, FeatureSpec, image_feature
from telecorder.datasets.images import encode_image

SAMPLE = Path(__file__).resolve().parents[2] / "shared/samples/YifanTian07_G1-policy-train"
FPS = 30
H, W = 48, 64
LENGTHS = (20, 31, 40)
CAMERAS = ("front", "wrist")
JOINTS = tuple(f"j{i}" for i in range(6))


def scene(step: int, camera: int) -> np.ndarray:
    """Smooth gradients plus a bright block that moves with the step: every frame differs."""
    y = np.linspace(0.0, 1.0, H)[:, None]
    x = np.linspace(0.0, 1.0, W)[None, :]
    img = np.stack([80 + 100 * x + 0 * y, 60 + 120 * y + 30 * camera + 0 * x, 120 + 60 * x * y], axis=-1)
    r, c = (3 * step) % (H - 12), (5 * step + 17 * camera) % (W - 16)
    img[r : r + 12, c : c + 16] += 50
    return np.clip(img, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def make_info() -> DatasetInfo:
    feats = [
        FeatureSpec("observation.state", "float32", (6,), names=JOINTS, unit="rad"),
        FeatureSpec("action", "float32", (6,), names=JOINTS, unit="rad, absolute targets"),
        FeatureSpec("next.reward", "float64", (1,)),
    ]
    feats += [image_feature(c, H, W, unit="rgb") for c in CAMERAS]
    return DatasetInfo.create(feats, fps=FPS, robot_type="test_arm", extra={"site": "lab"})


def make_episode(k: int, n: int) -> Episode:
    rng = np.random.default_rng(k)
    # Recorded ticks jitter around the grid: the sidecar must give them back exactly.
    ts = np.arange(n) / FPS + rng.uniform(0, 2e-3, n)
    return Episode(
        index=10 + k,
        timestamp=ts,
        data={
            "observation.state": rng.normal(size=(n, 6)).astype(np.float32),
            "action": rng.normal(size=(n, 6)).astype(np.float32),
            "next.reward": rng.normal(size=(n, 1)),
        },
        image_timestamp={c: ts - 0.004 * (i + 1) for i, c in enumerate(CAMERAS)},
        frame_index={c: np.arange(n, dtype=np.int64) * 2 + i for i, c in enumerate(CAMERAS)},
        tick_lateness=rng.uniform(0, 1e-3, n).astype(np.float32),
        metadata={
            "task": "stack",
            "language_instruction": f"stack the blocks ({k % 2})",
            "success": k != 1,
            "operator": "ana",
            "device": "leader_arm",
            "start_time": f"2025-01-0{k + 1}T10:00:00.000+00:00",
            "cameras": {"front": {"fps": 30}},
        },
        images={c: [scene(s, i) for s in range(n)] for i, c in enumerate(CAMERAS)},
    )


@pytest.fixture(scope="module")
def episodes() -> list[Episode]:
    return [make_episode(k, n) for k, n in enumerate(LENGTHS)]


def write(root: Path, episodes: list[Episode], **options: object) -> Path:
    writer = LeRobotWriter(root, make_info(), **options)
    for ep in episodes:
        writer.write_episode(ep)
    writer.close()
    return root


@pytest.fixture(scope="module")
def h264_dataset(tmp_path_factory, episodes) -> Path:
    return write(tmp_path_factory.mktemp("lerobot") / "h264", episodes, codec="h264")


# -- round trips -------------------------------------------------------------------------------


def check_same(ep: Episode, orig: Episode, min_psnr: float = 35.0) -> None:
    assert len(ep) == len(orig)
    for name, values in orig.data.items():
        np.testing.assert_array_equal(ep.data[name], values)
        assert ep.data[name].dtype == values.dtype
    np.testing.assert_array_equal(ep.timestamp, orig.timestamp)
    np.testing.assert_array_equal(ep.tick_lateness, orig.tick_lateness)
    for cam in CAMERAS:
        np.testing.assert_array_equal(ep.image_timestamp[cam], orig.image_timestamp[cam])
        np.testing.assert_array_equal(ep.frame_index[cam], orig.frame_index[cam])
        assert len(ep.images[cam]) == len(orig)
        worst = min(psnr(a, b) for a, b in zip(ep.images[cam], orig.images[cam], strict=True))
        assert worst >= min_psnr, f"camera {cam}: PSNR {worst:.1f} dB"
    for key, value in orig.metadata.items():
        assert ep.metadata[key] == value, key


@pytest.mark.parametrize("codec", ["h264", "av1"])
def test_round_trip(codec, tmp_path, episodes, h264_dataset):
    # AV1 with a long GOP: episodes 1 and 2 start between keyframes of the shared file.
    root = h264_dataset if codec == "h264" else write(tmp_path / codec, episodes, codec=codec, gop=25)
    assert LeRobotReader.detect(root)
    reader = LeRobotReader(root)
    assert reader.episode_indices() == [0, 1, 2]
    info = reader.info
    assert info.fps == FPS and info.robot_type == "test_arm" and info.extra["site"] == "lab"
    assert sorted(info.cameras) == sorted(CAMERAS)
    assert info.features["observation.state"] == make_info().features["observation.state"]
    assert info.features["observation.images.front"].unit == "rgb"
    assert info.total_frames == sum(LENGTHS)
    for i, orig in enumerate(episodes):
        check_same(reader.read_episode(i), orig)


def test_without_sidecar_the_lerobot_view_remains(tmp_path, episodes):
    root = write(tmp_path / "bare", episodes[:1])
    (root / SIDECAR).unlink()
    ep = LeRobotReader(root).read_episode(0)
    assert ep.metadata["task"] == ep.metadata["language_instruction"] == "stack the blocks (0)"
    np.testing.assert_allclose(ep.timestamp, np.arange(LENGTHS[0]) / FPS, atol=1e-6)
    np.testing.assert_array_equal(ep.frame_index["front"], np.arange(LENGTHS[0]))
    assert ep.tick_lateness is None
    np.testing.assert_array_equal(ep.data["action"], episodes[0].data["action"])


def test_new_files_past_the_size_limits(tmp_path, episodes):
    root = write(tmp_path / "small", episodes, data_file_size_mb=1e-6, video_file_size_mb=1e-6, chunks_size=2)
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    where = [(r["data/chunk_index"], r["data/file_index"]) for r in rows]
    assert where == [(0, 0), (0, 1), (1, 0)]
    assert [r["videos/observation.images.front/from_timestamp"] for r in rows] == [0.0, 0.0, 0.0]
    assert (root / "videos/observation.images.wrist/chunk-001/file-000.mp4").is_file()
    reader = LeRobotReader(root)
    for i, orig in enumerate(episodes):
        check_same(reader.read_episode(i), orig)


# -- the written dataset, read as LeRobot would ------------------------------------------------


def test_v3_layout_read_with_pyarrow_and_pyav(h264_dataset, episodes):
    root = h264_dataset
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, sum(LENGTHS), 2)
    assert info["splits"] == {"train": "0:3"}
    assert info["features"]["observation.state"] == {"dtype": "float32", "shape": [6], "names": list(JOINTS)}
    video = info["features"]["observation.images.front"]
    assert video["dtype"] == "video" and video["shape"] == [H, W, 3]
    assert video["info"]["video.codec"] == "h264" and video["info"]["video.fps"] == FPS
    assert {"timestamp", "frame_index", "episode_index", "index", "task_index"} <= set(info["features"])

    data = pq.read_table(root / info["data_path"].format(chunk_index=0, file_index=0))
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 6)
    assert data.schema.field("next.reward").type == pa.float64()
    assert data.schema.field("timestamp").type == pa.float32()
    np.testing.assert_array_equal(data["index"].to_numpy(), np.arange(sum(LENGTHS)))

    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    task_of = dict(zip(tasks["task_index"].to_pylist(), tasks["task"].to_pylist(), strict=True))

    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["episode_index"] for r in rows] == [0, 1, 2]
    stamps = _frame_times(root / info["video_path"].format(video_key="observation.images.front", chunk_index=0,
                                                           file_index=0))
    assert len(stamps) == sum(LENGTHS)
    for r, ep in zip(rows, episodes, strict=True):
        part = data.slice(r["dataset_from_index"], r["dataset_to_index"] - r["dataset_from_index"])
        assert r["length"] == len(ep) == part.num_rows
        assert set(part["episode_index"].to_pylist()) == {r["episode_index"]}
        assert r["tasks"] == [ep.metadata["language_instruction"]] == [task_of[part["task_index"][0].as_py()]]
        np.testing.assert_array_equal(np.stack(part["action"].to_numpy(zero_copy_only=False)), ep.data["action"])
        assert r["stats/action/count"] == [len(ep)]
        np.testing.assert_allclose(r["stats/action/mean"], ep.data["action"].mean(axis=0), rtol=1e-5, atol=1e-6)
        assert np.asarray(r["stats/observation.images.front/mean"]).shape == (3, 1, 1)
        start = r["videos/observation.images.front/from_timestamp"]
        assert r["videos/observation.images.front/to_timestamp"] == pytest.approx(start + len(ep) / FPS)
        query = start + part["frame_index"].to_numpy() / FPS
        nearest = np.abs(stamps[None, :] - query[:, None]).min(axis=1)
        assert nearest.max() <= 1 / (2 * FPS)
        assert np.allclose(part["timestamp"].to_numpy(), part["frame_index"].to_numpy() / FPS, atol=1e-6)

    stats = json.loads((root / "meta/stats.json").read_text())
    all_actions = np.concatenate([ep.data["action"] for ep in episodes])
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats["action"]["std"], all_actions.std(axis=0), rtol=1e-6, atol=1e-7)
    assert stats["action"]["count"] == [sum(LENGTHS)]
    assert {"min", "max", "q01", "q99"} <= set(stats["action"])
    assert np.asarray(stats["observation.images.wrist"]["std"]).shape == (3, 1, 1)


def _frame_times(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return np.array([float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None])


# -- LeRobot v2 inputs -------------------------------------------------------------------------


def make_v2(root: Path, n: int = 12, video_frames: int | None = None, version: str = "v2.0") -> Path:
    """A v2 dataset by hand: names as {"motors": [...]}, a PNG image column, a bool column, an optional video."""
    (root / "meta").mkdir(parents=True)
    feats = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": {"motors": ["a", "b", "c"]}},
        "action": {"dtype": "float32", "shape": [3], "names": [["a", "b"]]},  # 2 names for 3 values: dropped
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "observation.image": {"dtype": "image", "shape": [H, W, 3], "names": ["height", "width", "channel"]},
        "language": {"dtype": "string", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    if video_frames is not None:
        feats["observation.images.top"] = {"dtype": "video", "shape": [H, W, 3],
                                           "names": ["height", "width", "channel"]}
    info = {"codebase_version": version, "robot_type": "koch", "fps": FPS, "chunks_size": 1000,
            "total_episodes": 1, "total_frames": n, "features": feats,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/episodes.jsonl").write_text(json.dumps({"episode_index": 0, "tasks": ["fold"], "length": n}) + "\n")
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "fold"}) + "\n")
    rng = np.random.default_rng(7)
    png = [{"bytes": encode_image(scene(s, 0), "png").tobytes(), "path": None} for s in range(n)]
    table = pa.table({
        "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=3 * n).astype(np.float32)), 3),
        "action": pa.array(rng.normal(size=(n, 3)).astype(np.float32).tolist(), pa.list_(pa.float32())),
        "next.done": pa.array([s == n - 1 for s in range(n)]),
        "observation.image": pa.array(png, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "language": pa.array(["fold"] * n),
        "timestamp": pa.array(np.arange(n, dtype=np.float32) / FPS),
        "frame_index": pa.array(np.arange(n)),
        "episode_index": pa.array(np.zeros(n, np.int64)),
        "index": pa.array(np.arange(n)),
        "task_index": pa.array(np.zeros(n, np.int64)),
    })
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(table, root / "data/chunk-000/episode_000000.parquet")
    if video_frames is not None:
        path = root / "videos/chunk-000/observation.images.top/episode_000000.mp4"
        with VideoEncoder(path, W, H, FPS) as enc:
            for s in range(video_frames):
                enc.append(scene(s, 1))
    return root


def test_v2_image_column_and_names(tmp_path):
    root = make_v2(tmp_path / "v2", video_frames=12)
    assert LeRobotReader.detect(root)
    reader = LeRobotReader(root)
    info = reader.info
    assert sorted(info.cameras) == ["image", "top"]
    assert info.features["observation.state"].names == ("a", "b", "c")
    assert info.features["action"].names is None
    assert info.features["next.done"].dtype == "bool" and "language" not in info.features
    ep = reader.read_episode(0)
    assert ep.metadata["task"] == "fold" and ep.metadata["robot_type"] == "koch"
    assert ep.data["next.done"].shape == (12, 1) and ep.data["next.done"][-1, 0]
    for s in range(12):
        np.testing.assert_array_equal(ep.images["image"][s], scene(s, 0))  # PNG: lossless
        assert psnr(ep.images["top"][s], scene(s, 1)) >= 35


def test_flatten_names_and_camera_names():
    assert flatten_names([["x", "y"]], [2]) == ("x", "y")
    assert flatten_names({"motors": ["a", "b"], "gripper": ["g"]}, [3]) == ("a", "b", "g")
    assert flatten_names(["a", "b"], [3]) is None
    assert flatten_names(None, [1]) is None
    assert camera_of("observation.images.cam_high") == "cam_high"
    assert camera_of("observation.image") == "image"


# -- the real sample ---------------------------------------------------------------------------

needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"LeRobot v2.1 sample not present at {SAMPLE}")


@needs_sample
def test_real_v21_sample():
    assert LeRobotReader.detect(SAMPLE)
    reader = LeRobotReader(SAMPLE)
    info = reader.info
    assert info.features["observation.state"].shape == (26,)
    assert info.features["action"].names[0] == "kLeftShoulderPitch"
    assert info.cameras == ["cam_high"] and info.robot_type == "Unitree_G1_Inspire"
    t0 = time.perf_counter()
    ep = reader.read_episode(1)
    assert time.perf_counter() - t0 < 20
    assert len(ep) == 393 and ep.data["action"].shape == (393, 26)
    assert len(ep.images["cam_high"]) == 393 and ep.images["cam_high"][0].shape == (480, 640, 3)
    assert not np.array_equal(ep.images["cam_high"][0], ep.images["cam_high"][-1])
    assert ep.metadata["task"] == "Pick up the yellow bottle on the table."
    with pytest.raises(ConversionError, match=r"episode_000000\.mp4.*missing.*tabular_only"):
        reader.read_episode(0)


@needs_sample
def test_real_v21_sample_tabular_only():
    reader = LeRobotReader(SAMPLE, tabular_only=True)
    assert reader.info.image_features == [] and len(reader.episode_indices()) == 100
    ep = reader.read_episode(0)
    assert len(ep) == 479 and ep.images == {} and ep.data["observation.state"].shape == (479, 26)


# -- bad input ---------------------------------------------------------------------------------


def test_unknown_version(tmp_path):
    root = make_v2(tmp_path / "v9", version="v9.0")
    assert not LeRobotReader.detect(root)
    with pytest.raises(ConversionError, match=r"info\.json.*'v9\.0'.*v2\.0, v2\.1, v3\.0"):
        LeRobotReader(root)


def test_parquet_missing_a_column(tmp_path, episodes):
    root = write(tmp_path / "cut", episodes[:2])
    path = root / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["action"]), path)
    with pytest.raises(ConversionError, match=r"file-000\.parquet: column 'action' is missing"):
        LeRobotReader(root).read_episode(1)


def test_video_shorter_than_episode(tmp_path):
    root = make_v2(tmp_path / "short", n=12, video_frames=8)
    with pytest.raises(ConversionError, match=r"episode_000000\.mp4: video is shorter than the episode"):
        LeRobotReader(root).read_episode(0)
    assert len(LeRobotReader(root, tabular_only=True).read_episode(0)) == 12


def test_frame_missing_within_tolerance(tmp_path):
    path = tmp_path / "v.mp4"
    with VideoEncoder(path, W, H, FPS) as enc:
        for s in range(5):
            enc.append(scene(s, 0))
    with pytest.raises(ConversionError, match=r"v\.mp4: no frame within 5\.0 ms of timestamp 0\.0500 s \(episode 4\)"):
        decode_frames(path, [0.0, 0.05], 0.005, context="episode 4")


def test_writer_rejects_bad_episodes_and_options(tmp_path, episodes):
    with pytest.raises(ConversionError, match=r"unknown option.*'quality'"):
        LeRobotWriter(tmp_path / "a", make_info(), quality=3)
    with pytest.raises(ConversionError, match="crf='best' is not a number"):
        LeRobotWriter(tmp_path / "a", make_info(), crf="best")
    with pytest.raises(ConversionError, match="codec 'vp9'"):
        LeRobotWriter(tmp_path / "b", make_info(), codec="vp9")
    odd = DatasetInfo.create([image_feature("cam", 47, 64)], fps=FPS, robot_type="x")
    with pytest.raises(ConversionError, match="even width and height"):
        LeRobotWriter(tmp_path / "c", odd)
    writer = LeRobotWriter(tmp_path / "d", make_info())
    short = make_episode(0, 5)
    short.images["wrist"] = short.images["wrist"][:3]
    with pytest.raises(ConversionError, match="camera 'wrist' has 3 frames for 5 steps"):
        writer.write_episode(short)
    writer.close()


# -- layout variants found in the wild ---------------------------------------------------------
# Each is described by LeRobot's own code: v2.0 (stats.json only), v2.1 (episodes_stats.jsonl,
# convert_dataset_v20_to_v21.py), v3.0 files and chunks (convert_dataset_v21_to_v30.py), `image`
# features stored in the rows, `names` of any shape, depth maps (configs/video.py is_depth_map).


def _rewrite_info(root: Path, edit) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


def _add_columns(path: Path, **columns: pa.Array) -> None:
    table = pq.read_table(path)
    for name, values in columns.items():
        table = table.append_column(name, values)
    pq.write_table(table, path)


def test_v20_with_only_global_stats_and_v21_with_episode_stats(tmp_path):
    v20 = make_v2(tmp_path / "v20", version="v2.0")
    (v20 / "meta/stats.json").write_text(json.dumps({"action": {"min": [0, 0, 0], "max": [1, 1, 1]}}))
    v21 = make_v2(tmp_path / "v21", version="v2.1")
    # What LeRobot's v2.0 -> v2.1 converter writes: per-episode stats, no stats.json.
    stats = {"episode_index": 0, "stats": {"action": {"min": [0.0] * 3, "max": [1.0] * 3, "mean": [0.5] * 3,
                                                      "std": [0.1] * 3, "count": [12]}}}
    (v21 / "meta/episodes_stats.jsonl").write_text(json.dumps(stats) + "\n")
    a, b = LeRobotReader(v20).read_episode(0), LeRobotReader(v21).read_episode(0)
    assert LeRobotReader(v21).info.extra["lerobot_codebase_version"] == "v2.1"
    for name in ("observation.state", "action", "next.done"):
        np.testing.assert_array_equal(a.data[name], b.data[name])
    assert len(b.images["image"]) == 12


def _split_episode_metadata(root: Path) -> None:
    """One episode per meta/episodes file, across two chunks, as LeRobot writes large datasets."""
    src = root / "meta/episodes/chunk-000/file-000.parquet"
    rows = pq.read_table(src).to_pylist()
    src.unlink()
    for k, row in enumerate(rows):
        chunk, file = divmod(k, 2)
        row.update({"meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file})
        path = root / f"meta/episodes/chunk-{chunk:03d}/file-{file:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([row]), path)


def test_v3_several_chunks_and_files_for_data_videos_and_episode_metadata(tmp_path, episodes):
    root = write(tmp_path / "many", episodes, data_file_size_mb=1e-6, video_file_size_mb=1e-6, chunks_size=2)
    _split_episode_metadata(root)
    assert len(list((root / "meta/episodes").glob("chunk-*/file-*.parquet"))) == 3
    assert (root / "data/chunk-001/file-000.parquet").is_file()
    reader = LeRobotReader(root)
    assert reader.episode_indices() == [0, 1, 2]
    for i in (2, 0, 1):  # out of order: each episode finds its own files
        check_same(reader.read_episode(i), episodes[i])


def _v3_image_dataset(root: Path, n: int = 10) -> Path:
    """A LeRobot v3.0 image dataset by hand: JPEG bytes in the rows (episode 0) or a path (episode 1)."""
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    feats = {
        "observation.images.top": {"dtype": "image", "shape": [3, H, W], "names": ["channels", "height", "width"]},
        "observation.state": {"dtype": "float32", "shape": [2], "names": None},
        "action": {"dtype": "float32", "shape": [2], "names": {"motors": ["x", "y"]}},
        **{k: {"dtype": "int64", "shape": [1], "names": None} for k in ("frame_index", "episode_index", "index",
                                                                           "task_index")},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    }
    info = {"codebase_version": "v3.0", "robot_type": "so100", "fps": FPS, "chunks_size": 1000,
            "total_episodes": 2, "total_frames": 2 * n, "features": feats, "video_path": None,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"}
    (root / "meta/info.json").write_text(json.dumps(info))
    structs = []
    for s in range(n):
        structs.append({"bytes": encode_image(scene(s, 0), "jpeg", 95).tobytes(), "path": None})
    for s in range(n):
        rel = f"images/observation.images.top/episode-000001/frame-{s:06d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(encode_image(scene(s, 1), "png").tobytes())
        structs.append({"bytes": None, "path": rel})
    values = np.arange(2 * n * 2, dtype=np.float32).reshape(2 * n, 2)
    pq.write_table(pa.table({
        "observation.images.top": pa.array(structs, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "observation.state": pa.array(values.tolist(), pa.list_(pa.float32(), 2)),
        "action": pa.array((values + 0.5).tolist(), pa.list_(pa.float32(), 2)),
        "timestamp": pa.array(np.tile(np.arange(n, dtype=np.float32) / FPS, 2)),
        "frame_index": pa.array(np.tile(np.arange(n), 2)),
        "episode_index": pa.array(np.repeat([0, 1], n)),
        "index": pa.array(np.arange(2 * n)),
        "task_index": pa.array(np.zeros(2 * n, np.int64)),
    }), root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.table({
        "episode_index": [0, 1], "tasks": [["push"], ["push"]], "length": [n, n],
        "data/chunk_index": [0, 0], "data/file_index": [0, 0],
        "dataset_from_index": [0, n], "dataset_to_index": [n, 2 * n],
    }), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": [0], "__index_level_0__": ["push"]}), root / "meta/tasks.parquet")
    return root


def test_v3_image_dataset_with_bytes_and_paths_in_parquet(tmp_path):
    root = _v3_image_dataset(tmp_path / "img")
    reader = LeRobotReader(root)
    assert reader.info.cameras == ["top"]
    assert reader.info.features["observation.images.top"].shape == (H, W, 3)  # channels-first shape read right
    assert reader.info.features["action"].names == ("x", "y")
    first, second = reader.read_episode(0), reader.read_episode(1)
    assert first.metadata["task"] == "push"
    assert min(psnr(f, scene(s, 0)) for s, f in enumerate(first.images["top"])) >= 35  # JPEG bytes
    for s, f in enumerate(second.images["top"]):
        np.testing.assert_array_equal(f, scene(s, 1))  # PNG files next to the data: lossless
    np.testing.assert_array_equal(second.data["action"][0], [20.5, 21.5])


def test_names_of_every_shape_and_columns_that_are_not_numbers(tmp_path):
    root = make_v2(tmp_path / "names", n=6)
    path = root / "data/chunk-000/episode_000000.parquet"
    grid = np.arange(6 * 2 * 3, dtype=np.float64).reshape(6, 2, 3)
    _add_columns(
        path,
        **{"observation.grid": pa.array(grid.tolist(), pa.list_(pa.list_(pa.float64()))),
           "observation.effort": pa.array(np.arange(6, dtype=np.float32)),
           "annotation.tags": pa.array([["a", "b"]] * 6, pa.list_(pa.string())),
           "is_intervention": pa.array([False] * 6)},
    )

    def edit(info):
        info["features"]["observation.grid"] = {"dtype": "float64", "shape": [2, 3], "names": None}
        info["features"]["observation.effort"] = {"dtype": "float32", "shape": [1],
                                                  "names": {"motors": {"arm": ["elbow"]}}}
        info["features"]["annotation.tags"] = {"dtype": "string", "shape": [2], "names": None}

    _rewrite_info(root, edit)
    reader = LeRobotReader(root)
    info = reader.info
    assert info.features["observation.grid"].shape == (2, 3) and info.features["observation.grid"].names is None
    assert info.features["observation.effort"].names == ("elbow",)
    assert "annotation.tags" not in info.features and "language" not in info.features
    ep = reader.read_episode(0)
    np.testing.assert_array_equal(ep.data["observation.grid"], grid)
    np.testing.assert_array_equal(ep.data["observation.effort"][:, 0], np.arange(6))


def test_declared_number_column_holding_text_is_a_precise_error(tmp_path):
    root = make_v2(tmp_path / "text", n=4)
    _rewrite_info(root, lambda info: info["features"].__setitem__("language", {"dtype": "float32", "shape": [1]}))
    with pytest.raises(ConversionError, match=r"episode_000000\.parquet: column 'language' holds string values "
                                              r"that are not float32 numbers"):
        LeRobotReader(root).read_episode(0)


@pytest.mark.parametrize("flag", [{"info": {"is_depth_map": True}}, {"info": {"video.is_depth_map": True}},
                                  {"video_info": {"video.is_depth_map": True}},
                                  {"info": {"video.pix_fmt": "gray12le"}}])
def test_depth_camera_is_refused_by_name_and_the_others_convert(tmp_path, flag):
    root = make_v2(tmp_path / "depth", video_frames=12)
    _rewrite_info(root, lambda info: info["features"]["observation.images.top"].update(flag))
    # Never opened when not selected: its file is not a video at all.
    (root / "videos/chunk-000/observation.images.top/episode_000000.mp4").write_bytes(b"not a video")
    with pytest.raises(ConversionError, match=r"info\.json: feature 'observation\.images\.top' \(camera 'top'\) "
                                              r"cannot be converted: .*--cameras image"):
        LeRobotReader(root)
    reader = LeRobotReader(root, cameras=["image"])
    assert reader.info.cameras == ["image"]
    ep = reader.read_episode(0)
    assert list(ep.images) == ["image"] and list(ep.image_timestamp) == ["image"]


def test_sixteen_bit_images_in_parquet_are_a_precise_error(tmp_path):
    root = make_v2(tmp_path / "png16", n=3)
    path = root / "data/chunk-000/episode_000000.parquet"
    depth = [{"bytes": encode_png16(np.full((H, W), 1000 + s, np.uint16)), "path": None} for s in range(3)]
    table = pq.read_table(path).drop_columns(["observation.image"])
    table = table.append_column("observation.image",
                                pa.array(depth, pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
    pq.write_table(table, path)
    with pytest.raises(ConversionError, match=r"episode_000000\.parquet: column 'observation\.image' holds "
                                              r"16-bit PNG images .*--cameras"):
        LeRobotReader(root).read_episode(0)


def encode_png16(values: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", values)
    assert ok
    return buf.tobytes()


def test_single_channel_eight_bit_images_become_grey_rgb(tmp_path):
    import cv2

    root = make_v2(tmp_path / "grey", n=3)
    path = root / "data/chunk-000/episode_000000.parquet"
    grey = [cv2.cvtColor(scene(s, 0), cv2.COLOR_RGB2GRAY) for s in range(3)]
    structs = [{"bytes": cv2.imencode(".png", g)[1].tobytes(), "path": None} for g in grey]
    table = pq.read_table(path).drop_columns(["observation.image"])
    table = table.append_column("observation.image",
                                pa.array(structs, pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
    pq.write_table(table, path)
    _rewrite_info(root, lambda info: info["features"]["observation.image"].update(shape=[H, W, 1]))
    ep = LeRobotReader(root).read_episode(0)
    for s, frame in enumerate(ep.images["image"]):
        assert frame.shape == (H, W, 3)
        for c in range(3):
            np.testing.assert_array_equal(frame[..., c], grey[s])


# -- camera selection and cameras without videos -----------------------------------------------


def test_unselected_camera_is_never_opened(tmp_path, episodes):
    root = write(tmp_path / "sel", episodes[:2])
    wrist = root / "videos/observation.images.wrist/chunk-000/file-000.mp4"
    wrist.write_bytes(b"\0" * 4096)  # corrupt: any attempt to decode it fails
    with pytest.raises(ConversionError, match=r"wrist/chunk-000/file-000\.mp4: cannot be decoded as video"):
        LeRobotReader(root).read_episode(0)
    reader = LeRobotReader(root, cameras=["front"])
    assert reader.info.cameras == ["front"] and reader.missing_cameras([0, 1]) == {}
    for i in (0, 1):
        ep = reader.read_episode(i)
        assert list(ep.images) == ["front"] and set(ep.frame_index) == {"front"}
        assert min(psnr(a, b) for a, b in zip(ep.images["front"], episodes[i].images["front"], strict=True)) >= 35
    with pytest.raises(ConversionError, match=r"no camera 'side'; it has \['front', 'wrist'\].*--cameras"):
        LeRobotReader(root, cameras=["side"])
    with pytest.raises(ConversionError, match=r"tabular_only \(--tabular-only\) reads no camera.*--cameras"):
        LeRobotReader(root, tabular_only=True, cameras=["front"])


def test_missing_cameras_lists_episodes_without_the_video(tmp_path, episodes):
    v3 = write(tmp_path / "v3", episodes[:2], video_file_size_mb=1e-6)
    (v3 / "videos/observation.images.wrist/chunk-000/file-001.mp4").unlink()
    assert LeRobotReader(v3).missing_cameras([0, 1]) == {"wrist": [1]}
    assert LeRobotReader(v3, cameras=["front"]).missing_cameras([0, 1]) == {}
    v2 = make_v2(tmp_path / "v2", video_frames=12)
    (v2 / "videos/chunk-000/observation.images.top/episode_000000.mp4").unlink()
    reader = LeRobotReader(v2)
    assert reader.missing_cameras([0]) == {"top": [0]}
    with pytest.raises(ConversionError, match=r"video of camera 'top' for episode 0 is missing; .*--cameras.*"
                                              r"--skip-missing-cameras"):
        reader.read_episode(0)
