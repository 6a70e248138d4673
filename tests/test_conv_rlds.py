"""RLDS / OXE adapters: written datasets read back by real tensorflow-datasets and by our reader."""

from __future__ import annotations

import importlib.util
import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="the rlds extra (tensorflow-datasets) is not installed")

from conftest import make_info, synthetic_frame, write_dataset

from telecorder.converters.base import SIDECAR, ConversionError
from telecorder.converters.rlds.reader import RLDSReader
from telecorder.converters.rlds.schema import import_tfds
from telecorder.converters.rlds.writer import RLDSWriter
from telecorder.datasets.dataset import Dataset
from telecorder.datasets.episode_file import Episode
from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature

pytestmark = pytest.mark.tf

BRIDGE = Path(__file__).resolve().parents[2] / "shared/samples/octo-models_octo/tests/debug_dataset/bridge_dataset/1.0.0"
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
TASKS = ("pick up the red cube", "push the cube left", "lift the cube")
LENGTHS = (20, 17, 23)


def arm_info(fps: float = 30.0) -> DatasetInfo:
    """The sim arm's schema (6 joints incl. the gripper, two small cameras)."""
    feats = [
        FeatureSpec("observation.state", "float32", (6,), names=JOINTS, unit="rad; gripper 0 = closed 1 = open"),
        FeatureSpec("action", "float32", (6,), names=JOINTS, unit="rad, absolute joint targets"),
        image_feature("front", 48, 64),
        image_feature("wrist", 48, 64),
    ]
    return DatasetInfo.create(feats, fps=fps, robot_type="telecorder_sim_arm")


def arm_episodes() -> list[Episode]:
    rng = np.random.default_rng(7)
    lo = np.array([-2.0, -1.5, -0.2, -1.8, -2.8, 0.0])
    hi = np.array([2.0, 1.8, 2.7, 1.8, 2.8, 1.0])
    episodes = []
    for k, (n, task) in enumerate(zip(LENGTHS, TASKS, strict=True)):
        state = rng.uniform(lo, hi, size=(n, 6)).astype(np.float32)
        action = np.clip(state + rng.normal(scale=0.1, size=(n, 6)), lo, hi).astype(np.float32)
        t = np.arange(n) / 30.0
        episodes.append(
            Episode(
                index=k,
                timestamp=t,
                data={"observation.state": state, "action": action},
                image_timestamp={"front": t - 0.004, "wrist": t - 0.007},
                frame_index={"front": np.arange(n) + 3, "wrist": 2 * np.arange(n)},
                tick_lateness=rng.uniform(0, 0.002, n).astype(np.float32),
                metadata={
                    "task": task,
                    "language_instruction": task,
                    "success": k != 1,
                    "operator": "ada",
                    "calibration": {"offsets": [0.1, -0.2]},
                },
                images={"front": [synthetic_frame(i, 0) for i in range(n)], "wrist": [synthetic_frame(i, 1) for i in range(n)]},
            )
        )
    return episodes


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def write(path: Path, info: DatasetInfo, episodes: list[Episode], writer: type[RLDSWriter] = RLDSWriter, **options) -> RLDSWriter:
    w = writer(path, info, **options)
    for ep in episodes:
        w.write_episode(ep)
    w.close()
    return w


@pytest.fixture(scope="module")
def episodes() -> list[Episode]:
    return arm_episodes()


@pytest.fixture(scope="module")
def rlds_dir(tmp_path_factory: pytest.TempPathFactory, episodes: list[Episode]) -> Path:
    out = tmp_path_factory.mktemp("rlds") / "arm_demos"
    write(out, arm_info(), episodes, episodes_per_shard=2)  # two shards: reading crosses a shard boundary
    return out


# --------------------------------------------------------------------------- RLDS writer


def test_real_tfds_reads_what_we_write(rlds_dir: Path, episodes: list[Episode]) -> None:
    _, tfds = import_tfds()
    builder = tfds.builder_from_directory(str(rlds_dir))
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["train"].shard_lengths == [2, 1]
    steps_feature = builder.info.features["steps"]
    assert isinstance(steps_feature, tfds.features.Dataset)
    ds = builder.as_dataset(split="train", read_config=tfds.ReadConfig(interleave_cycle_length=1))
    for ep, src in zip(tfds.as_numpy(ds), episodes, strict=True):
        steps = list(ep["steps"])
        assert len(steps) == len(src)
        assert [bool(s["is_first"]) for s in steps] == [True] + [False] * (len(src) - 1)
        assert [bool(s["is_last"]) for s in steps] == [False] * (len(src) - 1) + [True]
        assert bool(steps[-1]["is_terminal"]) == bool(src.metadata["success"])
        assert steps[-1]["reward"] == (1.0 if src.metadata["success"] else 0.0)
        assert all(s["discount"] == 1.0 for s in steps)
        assert {s["language_instruction"].decode() for s in steps} == {src.metadata["task"]}
        assert steps[0]["observation"]["front"].shape == (48, 64, 3)
        assert steps[0]["observation"]["front"].dtype == np.uint8
        assert steps[0]["observation"]["state"].dtype == np.float32
        np.testing.assert_array_equal(np.stack([s["action"] for s in steps]), src.data["action"])
        np.testing.assert_array_equal(np.stack([s["observation"]["state"] for s in steps]), src.data["observation.state"])
        assert psnr(steps[5]["observation"]["wrist"], src.images["wrist"][5]) >= 35
        meta = ep["episode_metadata"]
        assert meta["task"].decode() == src.metadata["task"]
        assert bool(meta["success"]) == src.metadata["success"]


def test_reader_round_trip(rlds_dir: Path, episodes: list[Episode]) -> None:
    assert RLDSReader.detect(rlds_dir)
    reader = RLDSReader(rlds_dir)
    info = reader.info
    src_info = arm_info()
    assert info.fps == 30.0 and info.robot_type == "telecorder_sim_arm"
    assert set(info.features) == set(src_info.features)
    for name, spec in src_info.features.items():
        assert info.features[name].to_dict() == spec.to_dict(), name
    assert reader.episode_indices() == [0, 1, 2]
    for i, src in enumerate(episodes):
        ep = reader.read_episode(i)
        assert ep.index == i and len(ep) == len(src)
        for name in ("observation.state", "action"):
            assert ep.data[name].dtype == np.float32
            np.testing.assert_array_equal(ep.data[name], src.data[name])
        np.testing.assert_array_equal(ep.timestamp, src.timestamp)
        for cam in ("front", "wrist"):
            assert len(ep.images[cam]) == len(src)
            assert min(psnr(a, b) for a, b in zip(ep.images[cam], src.images[cam], strict=True)) >= 35
            np.testing.assert_array_equal(ep.image_timestamp[cam], src.image_timestamp[cam])
            np.testing.assert_array_equal(ep.frame_index[cam], src.frame_index[cam])
        np.testing.assert_array_equal(ep.tick_lateness, src.tick_lateness)
        assert ep.metadata == src.metadata


def test_reader_reuses_its_iterator_for_sequential_reads(rlds_dir: Path) -> None:
    reader = RLDSReader(rlds_dir)
    starts: list[int] = []
    original = reader._dataset_from

    def counting(split: str, start: int):
        starts.append(start)
        return original(split, start)

    reader._dataset_from = counting  # type: ignore[method-assign]
    assert [len(ep) for ep in reader] == list(LENGTHS)
    assert starts == [0]
    # Going back restarts at the requested episode, not at the beginning.
    assert len(reader.read_episode(2)) == LENGTHS[2] and starts == [0, 2]
    assert reader.read_episode(1).metadata["task"] == TASKS[1]
    assert starts == [0, 2, 1]


def test_native_dataset_round_trip_keeps_metadata(tmp_path: Path) -> None:
    info = make_info(cameras=("front", "wrist"), dim=4)
    root = tmp_path / "native"
    write_dataset(root, info, [12, 9])
    ds = Dataset.open(root)
    originals = []
    for i in ds.episode_indices:
        with ds.episode(i) as r:
            originals.append(r.load(images=True))
    out = tmp_path / "as_rlds"
    write(out, ds.info, originals)
    reader = RLDSReader(out)
    assert reader.info.features["observation.state"].names == ("j0", "j1", "j2", "j3")
    assert reader.info.fps == info.fps
    for src, ep in zip(originals, reader, strict=True):
        assert ep.metadata == json.loads(json.dumps(src.metadata))
        np.testing.assert_array_equal(ep.data["action"], src.data["action"])
        np.testing.assert_array_equal(ep.image_timestamp["front"], src.image_timestamp["front"])
        np.testing.assert_array_equal(ep.frame_index["wrist"], src.frame_index["wrist"])
        np.testing.assert_array_equal(ep.timestamp, src.timestamp)


@pytest.mark.skipif(importlib.util.find_spec("array_record") is None, reason="array_record package not installed")
def test_array_record_variant(tmp_path: Path, episodes: list[Episode]) -> None:
    out = tmp_path / "arm_ar"
    write(out, arm_info(), episodes[:2], file_format="array_record")
    assert sorted(p.name for p in out.glob("*.array_record-*"))
    _, tfds = import_tfds()
    builder = tfds.builder_from_directory(str(out))
    assert builder.info.file_format.value == "array_record"
    source = builder.as_data_source(split="train")  # TFDS reads ArrayRecord as a random-access source
    assert len(source) == 2
    np.testing.assert_array_equal(
        np.stack([s["action"] for s in source[1]["steps"]]), episodes[1].data["action"]
    )
    reader = RLDSReader(out)
    ep = reader.read_episode(1)
    np.testing.assert_array_equal(ep.data["observation.state"], episodes[1].data["observation.state"])
    assert psnr(ep.images["front"][3], episodes[1].images["front"][3]) >= 35
    assert ep.metadata == episodes[1].metadata


def test_val_episodes_go_to_a_val_split(tmp_path: Path, episodes: list[Episode]) -> None:
    out = tmp_path / "split"
    write(out, arm_info(), episodes, val_episodes=[1])
    _, tfds = import_tfds()
    builder = tfds.builder_from_directory(str(out))
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 2, "val": 1}
    (val,) = tfds.as_numpy(builder.as_dataset(split="val"))
    assert int(val["episode_metadata"]["episode_id"]) == 1 and len(list(val["steps"])) == LENGTHS[1]
    train_ids = [int(e["episode_metadata"]["episode_id"]) for e in tfds.as_numpy(builder.as_dataset(split="train"))]
    assert sorted(train_ids) == [0, 2]
    side = json.loads((out / SIDECAR).read_text())
    assert side["splits"] == {"train": {"episodes": [0, 2]}, "val": {"episodes": [1]}}


def test_png_frames_are_lossless(tmp_path: Path, episodes: list[Episode]) -> None:
    out = tmp_path / "png"
    write(out, arm_info(), episodes[:1], image_encoding="png")
    reader = RLDSReader(out)
    assert reader.info.image_encoding == "png"
    ep = reader.read_episode(0)
    for cam in ("front", "wrist"):
        for got, want in zip(ep.images[cam], episodes[0].images[cam], strict=True):
            np.testing.assert_array_equal(got, want)


def test_writer_rejects_bad_input(tmp_path: Path, episodes: list[Episode]) -> None:
    with pytest.raises(ConversionError, match="unknown option"):
        RLDSWriter(tmp_path / "a", arm_info(), compression="zstd")
    with pytest.raises(ConversionError, match="file_format"):
        RLDSWriter(tmp_path / "b", arm_info(), file_format="parquet")
    w = RLDSWriter(tmp_path / "c", arm_info())
    no_frames = Episode(index=5, timestamp=episodes[0].timestamp, data=episodes[0].data, metadata={})
    with pytest.raises(ConversionError, match=r"episode 5: no frames for camera 'front'"):
        w.write_episode(no_frames)
    w.close()


def test_detect(tmp_path: Path, rlds_dir: Path) -> None:
    nested = tmp_path / "data" / "arm_demos"
    shutil.copytree(rlds_dir, nested / "1.0.0")
    assert RLDSReader.detect(tmp_path / "data")  # <name>/<version>/ below a TFDS data_dir
    assert RLDSReader.detect(nested)
    assert RLDSReader(tmp_path / "data").data_dir == nested / "1.0.0"
    (tmp_path / "empty").mkdir()
    assert not RLDSReader.detect(tmp_path / "empty")
    assert not RLDSReader.detect(tmp_path / "missing")


def test_truncated_shard_names_the_file(tmp_path: Path, rlds_dir: Path) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(rlds_dir, copy)
    shard = sorted(copy.glob("*.tfrecord-*"))[0]
    with open(shard, "r+b") as fh:
        fh.truncate(shard.stat().st_size * 2 // 3)  # cuts into the second episode of the shard
    reader = RLDSReader(copy)
    assert len(reader.read_episode(0)) == LENGTHS[0]
    with pytest.raises(ConversionError, match=rf"{shard.name}: truncated or corrupt tfrecord shard"):
        reader.read_episode(1)
    assert len(reader.read_episode(2)) == LENGTHS[2]  # the other shard is still readable


def test_missing_split_and_not_rlds(tmp_path: Path, rlds_dir: Path) -> None:
    with pytest.raises(ConversionError, match="no split 'val'"):
        RLDSReader(rlds_dir, split="val")
    with pytest.raises(ConversionError, match="not an RLDS/TFDS dataset"):
        RLDSReader(tmp_path)


# --------------------------------------------------------------------------- OXE


@pytest.fixture(scope="module")
def oxe_dir(tmp_path_factory: pytest.TempPathFactory, episodes: list[Episode]) -> Path:
    from telecorder.converters.rlds.oxe import OXEWriter

    out = tmp_path_factory.mktemp("oxe")
    np.save(out / "emb.npy", np.arange(3 * 8, dtype=np.float32).reshape(3, 8))
    write(out / "arm_oxe", arm_info(), episodes, OXEWriter, language_embeddings=str(out / "emb.npy"))
    return out / "arm_oxe"


def test_oxe_step_schema(oxe_dir: Path, episodes: list[Episode]) -> None:
    _, tfds = import_tfds()
    # Octo / OpenVLA open datasets by name under a data_dir.
    builder = tfds.builder("arm_oxe", data_dir=str(oxe_dir))
    steps = builder.info.features["steps"]
    obs = steps["observation"]
    assert obs["image"].shape == (48, 64, 3) and obs["image"].encoding_format == "jpeg"
    assert obs["wrist_image"].shape == (48, 64, 3)
    assert obs["state"].shape == (6,) and obs["state"].np_dtype == np.float32
    assert steps["action"].shape == (7,) and steps["action"].np_dtype == np.float32
    assert isinstance(steps["language_instruction"], tfds.features.Text)
    for key in ("is_first", "is_last", "is_terminal"):
        assert steps[key].np_dtype == np.bool_
    for key in ("reward", "discount"):
        assert steps[key].np_dtype == np.float32
    assert steps["language_embedding"].shape == (8,)
    ds = builder.as_dataset(split="train", read_config=tfds.ReadConfig(interleave_cycle_length=1))
    for k, (ep, src) in enumerate(zip(tfds.as_numpy(ds), episodes, strict=True)):
        rows = list(ep["steps"])
        assert len(rows) == len(src)
        assert rows[0]["language_instruction"].decode() == src.metadata["task"]
        np.testing.assert_array_equal(rows[4]["language_embedding"], np.arange(8) + 8 * k)
        np.testing.assert_array_equal(rows[3]["observation"]["state"], src.data["observation.state"][3])


def test_oxe_statistics_and_config(oxe_dir: Path, episodes: list[Episode]) -> None:
    version_dir = oxe_dir / "arm_oxe" / "1.0.0"
    stats = json.loads((version_dir / "dataset_statistics.json").read_text())
    assert set(stats) == {"action", "proprio", "num_transitions", "num_trajectories"}
    assert stats["num_transitions"] == sum(LENGTHS) and stats["num_trajectories"] == 3
    for key in ("mean", "std", "max", "min", "q01", "q99", "p01", "p99"):
        assert len(stats["action"][key]) == 7 and len(stats["proprio"][key]) == 6
    assert stats["action"]["mask"] == [True] * 6 + [False]
    states = np.concatenate([e.data["observation.state"] for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats["proprio"]["mean"], states.mean(0), rtol=1e-6)
    # Quantiles exactly as Octo / OpenVLA compute them: np.quantile's default over the stored float32 values.
    stored = np.concatenate([e.data["observation.state"] for e in episodes]).astype(np.float32)
    assert stats["proprio"]["q99"] == np.quantile(stored, 0.99, 0).tolist()
    assert stats["proprio"]["quantile_method"] == "exact"
    np.testing.assert_array_equal(stats["proprio"]["max"], states.max(0))

    config = json.loads((version_dir / "oxe_config.json").read_text())
    octo = config["make_dataset_from_rlds_kwargs"]["octo"]
    assert octo["image_obs_keys"] == {"primary": "image", "wrist": "wrist_image"}
    assert octo["depth_obs_keys"] == {} and octo["proprio_obs_key"] == "state"
    assert octo["data_dir"] == str(oxe_dir) and octo["name"] == "arm_oxe"
    described = config["dataset"]
    assert described["state_obs_keys"] == ["state"]
    assert described["state_encoding"] == "JOINT" and described["action_encoding"] == "EEF_POS"
    assert described["control_frequency"] == 30.0 and described["splits"] == {"train": 3}
    assert described["gripper"] == {"convention": described["gripper"]["convention"], "binarized": False, "threshold": None}
    assert "R_action @ R_state.T" in described["conventions"]["rotation_delta"]

    # Readable by a trainer running as another user: the umask decides, as for any file.
    probe = version_dir / ".probe"
    probe.write_text("")
    want = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    for name in ("dataset_statistics.json", "oxe_config.json", "telecorder_meta.json", "dataset_info.json"):
        assert stat.S_IMODE((version_dir / name).stat().st_mode) == want, name


def _rot_xyz(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_oxe_eef_actions_match_mujoco_site_poses(oxe_dir: Path, episodes: list[Episode]) -> None:
    mujoco = pytest.importorskip("mujoco")
    from telecorder.sim.env import DEFAULT_MODEL

    model = mujoco.MjModel.from_xml_path(str(DEFAULT_MODEL))
    data = mujoco.MjData(model)
    site = model.site("ee_site").id
    qadr = [int(model.jnt_qposadr[model.joint(name).id]) for name in JOINTS[:5]]

    def site_pose(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        data.qpos[qadr] = q[:5]
        mujoco.mj_kinematics(model, data)
        return data.site_xpos[site].copy(), data.site_xmat[site].reshape(3, 3).copy()

    reader = RLDSReader(oxe_dir)
    assert reader.info.features["action"].names == ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
    assert "R_action @ R_state.T" in reader.info.extra["oxe"]["rotation_delta"]
    for i, src in enumerate(episodes):
        ep = reader.read_episode(i)
        assert set(ep.images) == {"image", "wrist_image"}
        assert ep.metadata["task"] == src.metadata["task"]
        action = ep.data["action"]
        assert action.shape == (len(src), 7) and action.dtype == np.float32
        for t in range(len(src)):
            p_s, r_s = site_pose(src.data["observation.state"][t].astype(np.float64))
            p_a, r_a = site_pose(src.data["action"][t].astype(np.float64))
            np.testing.assert_allclose(action[t, :3], p_a - p_s, atol=1e-5)
            np.testing.assert_allclose(_rot_xyz(*action[t, 3:6].astype(np.float64)), r_a @ r_s.T, atol=1e-5)
        np.testing.assert_array_equal(action[:, 6], src.data["action"][:, 5])


def test_oxe_joint_action_space(tmp_path: Path, episodes: list[Episode]) -> None:
    from telecorder.converters.rlds.oxe import OXEWriter

    out = tmp_path / "joint"
    with pytest.raises(ConversionError, match="layout='flat' cannot be opened by Octo"):
        OXEWriter(out, arm_info(), action_space="joint", layout="flat")
    write(out, arm_info(), episodes[:1], OXEWriter, action_space="joint",
          cameras={"wrist": "wrist_image", "front": "image"})
    config = json.loads((out / "joint" / "1.0.0" / "oxe_config.json").read_text())
    assert config["dataset"]["action_encoding"] == "JOINT_POS"
    assert config["make_dataset_from_rlds_kwargs"]["octo"]["action_normalization_mask"] == [True] * 5 + [False]
    # Joint targets are absolute: OpenVLA repeats them (rather than zero-padding) past the episode end.
    assert config["make_dataset_from_rlds_kwargs"]["openvla"]["absolute_action_mask"] == [True] * 6
    reader = RLDSReader(out)
    assert reader.info.extra["oxe"]["action_space"] == "joint"
    assert "absolute joint targets" in reader.info.features["action"].unit
    np.testing.assert_array_equal(reader.read_episode(0).data["action"], episodes[0].data["action"])


def test_oxe_needs_a_robot_model_for_unknown_robots(tmp_path: Path) -> None:
    from telecorder.converters.rlds.oxe import OXEWriter

    info = make_info(cameras=("front",), dim=6, robot_type="some_arm")
    with pytest.raises(ConversionError, match=r"robot_model=PATH\.xml"):
        OXEWriter(tmp_path / "x", info)


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not BRIDGE.is_dir(), reason=f"sample dataset not present at {BRIDGE}")
def test_reads_octo_bridge_sample() -> None:
    assert RLDSReader.detect(BRIDGE)
    # Every split by default (train, then val), so a conversion keeps the val episodes too.
    assert RLDSReader(BRIDGE).episode_indices() == list(range(50))
    reader = RLDSReader(BRIDGE, split="train")
    info = reader.info
    assert reader.episode_indices() == list(range(25))
    assert info.cameras == ["image_0", "image_1", "image_2", "image_3"]
    assert info.features["observation.state"].shape == (7,)
    assert info.features["action"].shape == (7,)
    assert info.features["language_embedding"].shape == (512,)
    assert info.extra["fps_assumed"] is True and info.fps == 10.0
    for ep in reader:
        assert len(ep) == 10
        assert ep.data["action"].shape == (10, 7) and ep.data["observation.state"].shape == (10, 7)
        assert all(len(frames) == 10 and frames[0].shape == (64, 64, 3) for frames in ep.images.values())
        assert ep.metadata["language_instruction"] and ep.metadata["task"] == ep.metadata["language_instruction"]
        assert "file_path" in ep.metadata
        np.testing.assert_allclose(ep.timestamp, np.arange(10) / 10.0)
    assert not (BRIDGE / SIDECAR).exists()
