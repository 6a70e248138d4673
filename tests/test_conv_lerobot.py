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
from telecorder.converters.lerobot import LeRobotReader, LeRobotWriter, camera_of, flatten_names
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
