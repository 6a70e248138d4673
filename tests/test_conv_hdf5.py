"""ALOHA/ACT and robomimic HDF5 adapters: layouts the foreign loaders read, and lossless round trips."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from telecorder.converters.aloha import AlohaReader, AlohaWriter
from telecorder.converters.base import SIDECAR, ConversionError
from telecorder.converters.robomimic import RobomimicReader, RobomimicWriter
from telecorder.datasets.episode_file import Episode
from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature

FPS = 30.0
H, W = 48, 64
CAMERAS = ("front", "wrist")
TASKS = ("pick up the red cube", "open the drawer", "stack the blocks")


def make_info() -> DatasetInfo:
    names = tuple(f"j{i}" for i in range(6))
    return DatasetInfo.create(
        [
            FeatureSpec("observation.state", "float32", (6,), names=names, unit="rad"),
            FeatureSpec("observation.velocity", "float32", (6,), names=names, unit="rad/s"),
            FeatureSpec("action", "float32", (6,), names=names, unit="rad, absolute targets"),
            *(image_feature(c, H, W) for c in CAMERAS),
        ],
        fps=FPS,
        robot_type="test_arm",
    )


def frame(step: int, cam: int) -> np.ndarray:
    """Smooth gradients that move with the step, different per camera (JPEG keeps them well)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.empty((H, W, 3), np.float32)
    img[..., 0] = 128 + 100 * np.sin((x + 3 * step) / 11.0)
    img[..., 1] = 60 + 120 * y / H + 20 * cam
    img[..., 2] = 200 - 150 * x / W + 2 * step
    return np.clip(img, 0, 255).astype(np.uint8)


def make_episodes(lengths: tuple[int, ...] = (20, 17, 23)) -> list[Episode]:
    rng = np.random.default_rng(0)
    episodes = []
    for k, n in enumerate(lengths):
        # Jittered ticks, so that a round trip keeping them is told apart from k / fps.
        ts = np.arange(n) / FPS + rng.uniform(0, 2e-3, n)
        episodes.append(Episode(
            index=10 + k,
            timestamp=ts,
            data={
                "observation.state": rng.normal(size=(n, 6)).astype(np.float32),
                "observation.velocity": rng.normal(size=(n, 6)).astype(np.float32),
                "action": rng.normal(size=(n, 6)).astype(np.float32),
            },
            image_timestamp={c: ts - 0.004 for c in CAMERAS},
            frame_index={c: np.arange(n) + 5 * k for c in CAMERAS},
            tick_lateness=rng.uniform(0, 1e-3, n).astype(np.float32),
            metadata={"task": TASKS[k], "language_instruction": TASKS[k], "success": k != 1, "operator": "ana"},
            images={c: [frame(t + 7 * k, i) for t in range(n)] for i, c in enumerate(CAMERAS)},
        ))
    return episodes


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def write_aloha(root: Path, episodes: list[Episode], info: DatasetInfo | None = None, **options: object) -> None:
    writer = AlohaWriter(root, info or make_info(), **options)
    for ep in episodes:
        writer.write_episode(ep)
    writer.close()


def write_robomimic(root: Path, episodes: list[Episode], **options: object) -> Path:
    writer = RobomimicWriter(root, make_info(), **options)
    for ep in episodes:
        writer.write_episode(ep)
    writer.close()
    return root / "demo.hdf5"


def assert_same_episode(got: Episode, want: Episode, *, exact_images: bool = True) -> None:
    assert len(got) == len(want)
    for name, arr in want.data.items():
        assert got.data[name].dtype == arr.dtype, name
        np.testing.assert_array_equal(got.data[name], arr, err_msg=name)
    np.testing.assert_array_equal(got.timestamp, want.timestamp)
    for cam in CAMERAS:
        np.testing.assert_array_equal(got.image_timestamp[cam], want.image_timestamp[cam])
        np.testing.assert_array_equal(got.frame_index[cam], want.frame_index[cam])
        assert len(got.images[cam]) == len(want)
        if exact_images:
            for g, w in zip(got.images[cam], want.images[cam], strict=True):
                np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got.tick_lateness, want.tick_lateness)
    assert got.metadata == want.metadata


# -- ALOHA / ACT ---------------------------------------------------------------------------


def test_aloha_layout_is_what_act_loads(tmp_path: Path) -> None:
    episodes = make_episodes()
    write_aloha(tmp_path / "act", episodes)
    names = sorted(p.name for p in (tmp_path / "act").glob("episode_*.hdf5"))
    assert names == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]  # ACT counts from 0, no gaps
    with h5py.File(tmp_path / "act" / "episode_1.hdf5", "r") as f:
        assert bool(f.attrs["sim"]) is False and bool(f.attrs["compress"]) is False
        n = len(episodes[1])
        assert f["/observations/qpos"].shape == (n, 6)
        assert f["/observations/qvel"].shape == (n, 6)
        assert f["/action"].shape == (n, 6)
        assert "effort" not in f["observations"]
        for cam in CAMERAS:
            assert f[f"/observations/images/{cam}"].shape == (n, H, W, 3)
            assert f[f"/observations/images/{cam}"].dtype == np.uint8
        np.testing.assert_array_equal(f["/observations/qpos"][()], episodes[1].data["observation.state"])
        np.testing.assert_array_equal(f["/observations/images/front"][3], episodes[1].images["front"][3])


def test_aloha_round_trip_raw(tmp_path: Path) -> None:
    episodes = make_episodes()
    write_aloha(tmp_path / "act", episodes)
    assert AlohaReader.detect(tmp_path / "act")
    reader = AlohaReader(tmp_path / "act")
    assert reader.info.fps == FPS  # from the sidecar, not ALOHA's 50
    assert reader.info.features == make_info().features  # names and units survive via the sidecar
    assert reader.episode_indices() == [0, 1, 2]
    for got, want in zip(reader, episodes, strict=True):
        assert_same_episode(got, want)


@pytest.mark.parametrize(("quality", "min_psnr"), [(50, 35.0), (95, 40.0)])
def test_aloha_compressed_round_trip(tmp_path: Path, quality: int, min_psnr: float) -> None:
    """JPEG at aloha's quality 50 keeps >= 35 dB on these smooth frames (about 39 measured); 95 keeps >= 40."""
    episodes = make_episodes()
    write_aloha(tmp_path / "act", episodes, compress=True, jpeg_quality=quality)
    with h5py.File(tmp_path / "act" / "episode_0.hdf5", "r") as f:
        assert bool(f.attrs["compress"]) is True
        rows = f["/observations/images/front"]
        assert rows.dtype == np.uint8 and rows.ndim == 2 and rows.shape[0] == len(episodes[0])
        assert f["/compress_len"].shape == (len(CAMERAS), len(episodes[0]))
    reader = AlohaReader(tmp_path / "act")
    for got, want in zip(reader, episodes, strict=True):
        assert_same_episode(got, want, exact_images=False)
        for cam in CAMERAS:
            worst = min(psnr(g, w) for g, w in zip(got.images[cam], want.images[cam], strict=True))
            assert worst >= min_psnr, (cam, worst)


def test_act_jpeg_channel_order(tmp_path: Path) -> None:
    """ACT decodes rows with cv2.imdecode and no colour conversion; that must give RGB back."""
    ep = make_episodes((4,))[0]
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = 255
    ep.images["front"][0] = red
    write_aloha(tmp_path / "act", [ep], compress=True)
    with h5py.File(tmp_path / "act" / "episode_0.hdf5", "r") as f:
        cams = json.loads(f["/compress_len"].attrs["camera_names"])
        row_len = int(f["/compress_len"][cams.index("front"), 0])
        padded = f["/observations/images/front"][0]
    decoded = cv2.imdecode(padded[:row_len], 1)  # exactly ACT's loader
    means = decoded.reshape(-1, 3).mean(axis=0)
    assert means[0] > 240 and means[1] < 15 and means[2] < 15, means
    assert np.abs(decoded.astype(int) - red).max() <= 8
    # act-plus-plus decodes the whole padded row; the JPEG end marker makes that the same image.
    np.testing.assert_array_equal(cv2.imdecode(padded, 1), decoded)
    # The quirk itself: a standard (BGR-aware) decoder sees a blue frame.
    assert cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)[..., 2].mean() > 240
    assert AlohaReader(tmp_path / "act").read_episode(0).images["front"][0][..., 0].mean() > 240


def test_aloha_reads_act_files_without_sidecar(tmp_path: Path) -> None:
    """A folder as ACT's record_sim_episodes.py leaves it: 14-D float32, raw images, sim=True."""
    root = tmp_path / "sim_transfer_cube"
    root.mkdir()
    n = 12
    rng = np.random.default_rng(1)
    qpos = rng.normal(size=(n, 14)).astype(np.float32)
    for i in range(2):
        with h5py.File(root / f"episode_{i}.hdf5", "w") as f:
            f.attrs["sim"] = True
            f.create_dataset("observations/qpos", data=qpos)
            f.create_dataset("observations/qvel", data=qpos * 2)
            f.create_dataset("observations/images/top", data=np.stack([frame(t, 0) for t in range(n)]))
            f.create_dataset("action", data=qpos + 1)
    assert AlohaReader.detect(root)
    reader = AlohaReader(root, task="transfer the cube")
    info = reader.info
    assert info.fps == 50.0
    assert set(info.features) == {"observation.state", "observation.velocity", "action", "observation.images.top"}
    assert info.features["observation.state"].names[0] == "left_waist"
    assert info.features["observation.state"].names[13] == "right_gripper"
    ep = reader.read_episode(1)
    np.testing.assert_array_equal(ep.data["observation.state"], qpos)
    np.testing.assert_array_equal(ep.data["action"], qpos + 1)
    np.testing.assert_allclose(ep.timestamp, np.arange(n) / 50.0)
    assert ep.metadata["task"] == "transfer the cube"
    np.testing.assert_array_equal(ep.images["top"][5], frame(5, 0))
    assert AlohaReader(root, fps=25).read_episode(0).timestamp[1] == pytest.approx(0.04)


def test_aloha_writes_zero_qvel_without_velocity(tmp_path: Path) -> None:
    """ACT's norm stats read /observations/qvel; it must exist, yet not come back as a measurement."""
    info = make_info()
    del info.features["observation.velocity"]
    ep = make_episodes((5,))[0]
    del ep.data["observation.velocity"]
    write_aloha(tmp_path / "act", [ep], info=info)
    with h5py.File(tmp_path / "act" / "episode_0.hdf5", "r") as f:
        np.testing.assert_array_equal(f["/observations/qvel"][()], np.zeros((5, 6), np.float32))
    assert "observation.velocity" not in AlohaReader(tmp_path / "act").read_episode(0).data
    (tmp_path / "act" / SIDECAR).unlink()
    assert "observation.velocity" not in AlohaReader(tmp_path / "act").info.features


def test_aloha_missing_action_names_file(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    root.mkdir()
    with h5py.File(root / "episode_0.hdf5", "w") as f:
        f.create_dataset("observations/qpos", data=np.zeros((4, 14), np.float32))
    assert not AlohaReader.detect(root)
    reader = AlohaReader(root)
    with pytest.raises(ConversionError, match=r"episode_0\.hdf5.*/action"):
        reader.read_episode(0)
    with pytest.raises(ConversionError, match=r"episode_0\.hdf5.*/action"):
        _ = AlohaReader(root).info


def test_aloha_writer_refuses_missing_state(tmp_path: Path) -> None:
    info = DatasetInfo.create([FeatureSpec("action", "float32", (6,))], fps=FPS, robot_type="x")
    with pytest.raises(ConversionError, match=r"observation\.state"):
        AlohaWriter(tmp_path / "act", info)


# -- robomimic -----------------------------------------------------------------------------


def test_robomimic_structure(tmp_path: Path) -> None:
    episodes = make_episodes()
    path = write_robomimic(tmp_path / "rm", episodes)
    with h5py.File(path, "r") as f:
        data = f["data"]
        assert data.attrs["total"] == sum(len(e) for e in episodes)
        env = json.loads(data.attrs["env_args"])
        assert set(env) == {"env_name", "type", "env_kwargs"} and env["env_name"] == "test_arm"
        demos = sorted(data)
        assert demos == ["demo_0", "demo_1", "demo_2"]
        for k, demo in enumerate(demos):
            g, ep, n = data[demo], episodes[k], len(episodes[k])
            assert g.attrs["num_samples"] == n
            assert g.attrs["telecorder_task"] == TASKS[k]
            assert set(g["obs"]) == {"state", "velocity", "agentview_image", "robot0_eye_in_hand_image"}
            assert g["obs/agentview_image"].shape == (n, H, W, 3) and g["obs/agentview_image"].dtype == np.uint8
            np.testing.assert_array_equal(g["obs/robot0_eye_in_hand_image"][2], ep.images["wrist"][2])
            np.testing.assert_array_equal(g["obs/state"][()], ep.data["observation.state"])
            np.testing.assert_array_equal(g["next_obs/state"][:-1], ep.data["observation.state"][1:])
            np.testing.assert_array_equal(g["next_obs/state"][-1], ep.data["observation.state"][-1])
            np.testing.assert_array_equal(g["actions"][()], ep.data["action"])
            np.testing.assert_array_equal(g["states"][()], ep.data["observation.state"])
            assert g["rewards"].shape == (n,) and g["dones"].shape == (n,)
            assert g["dones"][-1] == 1 and not g["dones"][:-1].any()
            assert g["rewards"][-1] == (1.0 if ep.metadata["success"] else 0.0)
        train = [d.decode() for d in f["mask/train"][()]]
        valid = [d.decode() for d in f["mask/valid"][()]]
        assert f["mask/train"].dtype.kind == "S"
        assert sorted(train + valid) == demos and not set(train) & set(valid)
        assert len(valid) == 1
    # The split is deterministic.
    again = write_robomimic(tmp_path / "rm2", episodes)
    with h5py.File(again, "r") as f:
        assert [d.decode() for d in f["mask/valid"][()]] == valid


def test_robomimic_round_trip(tmp_path: Path) -> None:
    episodes = make_episodes()
    path = write_robomimic(tmp_path / "rm", episodes)
    assert RobomimicReader.detect(path) and RobomimicReader.detect(tmp_path / "rm")
    assert not AlohaReader.detect(tmp_path / "rm")
    reader = RobomimicReader(tmp_path / "rm")
    assert reader.info.fps == FPS
    assert reader.info.features == make_info().features
    assert reader.episode_indices() == [0, 1, 2]
    for got, want in zip(reader, episodes, strict=True):
        assert_same_episode(got, want)
    # Without the sidecar the file alone still gives the features, rate, timing and task.
    (tmp_path / "rm" / SIDECAR).unlink()
    bare = RobomimicReader(path)
    assert set(bare.info.features) == set(make_info().features)
    assert bare.info.fps == FPS
    ep = bare.read_episode(2)
    np.testing.assert_array_equal(ep.data["observation.velocity"], episodes[2].data["observation.velocity"])
    np.testing.assert_array_equal(ep.images["front"][4], episodes[2].images["front"][4])
    np.testing.assert_array_equal(ep.timestamp, episodes[2].timestamp)
    assert ep.metadata["task"] == TASKS[2]


def test_robomimic_reads_robosuite_style_file(tmp_path: Path) -> None:
    path = tmp_path / "lift.hdf5"
    n = 9
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(
            {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"], "control_freq": 20}})
        data.attrs["total"] = n
        g = data.create_group("demo_1")
        g.attrs["num_samples"] = n
        g.create_dataset("obs/robot0_joint_pos", data=np.ones((n, 7)))
        g.create_dataset("obs/agentview_image", data=np.stack([frame(t, 1) for t in range(n)]))
        g.create_dataset("obs/object", data=np.zeros((n, 10)))
        g.create_dataset("actions", data=np.full((n, 7), 0.5))
        g.create_dataset("rewards", data=np.r_[np.zeros(n - 1), 1.0])
        g.create_dataset("dones", data=np.r_[np.zeros(n - 1, int), 1])
        g.create_dataset("states", data=np.zeros((n, 32)))
    reader = RobomimicReader(path)
    assert reader.episode_indices() == [1]
    info = reader.info
    assert info.robot_type == "Panda" and info.fps == 20.0
    assert set(info.features) == {
        "observation.robot0_joint_pos", "observation.object", "observation.images.front",
        "action", "next.reward", "next.done", "sim_state",
    }
    ep = reader.read_episode(1)
    assert ep.data["next.reward"][-1] == 1.0
    np.testing.assert_array_equal(ep.images["front"][3], frame(3, 1))
    assert ep.metadata == {}
    # Its env_args go on to a robomimic output unchanged.
    writer = RobomimicWriter(tmp_path / "out", info)
    writer.write_episode(ep)
    writer.close()
    with h5py.File(tmp_path / "out" / "demo.hdf5", "r") as f:
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "Lift"
        np.testing.assert_array_equal(f["data/demo_0/rewards"][()], ep.data["next.reward"])
        np.testing.assert_array_equal(f["data/demo_0/states"][()], ep.data["sim_state"])


def test_robomimic_without_data_group_names_file(tmp_path: Path) -> None:
    path = tmp_path / "not_robomimic.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("actions", data=np.zeros((3, 2)))
    assert not RobomimicReader.detect(path)
    with pytest.raises(ConversionError, match=r"not_robomimic\.hdf5.*'data'"):
        RobomimicReader(path)
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(ConversionError, match=r"garbage\.hdf5"):
        RobomimicReader(garbage)
