"""ALOHA/ACT and robomimic HDF5 adapters: layouts the foreign loaders read, and lossless round trips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from telecorder.converters.aloha import AlohaReader, AlohaWriter
from telecorder.converters.base import SIDECAR, ConversionError
from telecorder.converters.fixed_length import fit_episode
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


def act_norm_stats(root: Path, num_episodes: int) -> dict[str, np.ndarray]:
    """What ACT's utils.get_norm_stats does with our files: read whole episodes, torch.stack them."""
    torch = pytest.importorskip("torch")
    qpos, action = [], []
    for i in range(num_episodes):
        with h5py.File(root / f"episode_{i}.hdf5", "r") as f:
            qpos.append(torch.from_numpy(f["/observations/qpos"][()]))
            _ = f["/observations/qvel"][()]  # ACT reads it too
            action.append(torch.from_numpy(f["/action"][()]))
    all_qpos, all_action = torch.stack(qpos), torch.stack(action)
    return {
        "shape": np.array(all_action.shape),
        "action_mean": all_action.mean(dim=[0, 1]).numpy(),
        "action_std": torch.clip(all_action.std(dim=[0, 1]), 1e-2, np.inf).numpy(),
        "qpos_mean": all_qpos.mean(dim=[0, 1]).numpy(),
    }


def test_act_cannot_stack_episodes_of_different_lengths(tmp_path: Path) -> None:
    """The failure the option exists for: ACT's stacking of 17-, 20- and 23-step episodes."""
    write_aloha(tmp_path / "act", make_episodes())
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        act_norm_stats(tmp_path / "act", 3)


@pytest.mark.parametrize("compress", [False, True])
def test_aloha_episode_length_pads_by_holding_and_cuts(tmp_path: Path, compress: bool) -> None:
    episodes = make_episodes()  # 20, 17 and 23 steps
    root = tmp_path / "act"
    write_aloha(root, episodes, episode_length=20, compress=compress)
    stats = act_norm_stats(root, 3)  # ACT's own stacking now works
    assert tuple(stats["shape"]) == (3, 20, 6)
    sidecar = json.loads((root / SIDECAR).read_text())
    assert sidecar["episode_length"] == 20
    expected = {0: (20, "unchanged"), 1: (17, "padded"), 2: (23, "cut")}
    for i, (original, how) in expected.items():
        with h5py.File(root / f"episode_{i}.hdf5", "r") as f:
            # every array ACT indexes by step has exactly 20 rows
            for loc in ("observations/qpos", "observations/qvel", "action", "observations/images/front"):
                assert f[loc].shape[0] == 20, (i, loc)
            assert int(f.attrs["telecorder_original_length"]) == original
            assert f.attrs["telecorder_length_fit"] == how
            np.testing.assert_array_equal(f["telecorder/is_pad"][()], np.arange(20) >= original)
            qpos, qvel, action = f["observations/qpos"][()], f["observations/qvel"][()], f["action"][()]
        entry = sidecar["episodes"][f"episode_{i}.hdf5"]
        assert (entry["original_length"], entry["length"], entry["length_fit"]) == (original, 20, how)
        ep = episodes[i]
        kept = min(original, 20)
        np.testing.assert_array_equal(qpos[:kept], ep.data["observation.state"][:kept])
        np.testing.assert_array_equal(action[:kept], ep.data["action"][:kept])
        if how == "padded":
            # held: the robot rests at its last pose with its last command, velocities zero
            np.testing.assert_array_equal(qpos[kept:], np.repeat(qpos[kept - 1:kept], 20 - kept, axis=0))
            np.testing.assert_array_equal(action[kept:], np.repeat(action[kept - 1:kept], 20 - kept, axis=0))
            np.testing.assert_array_equal(qvel[kept:], 0)
    # The padded file's last frame is the recorded last frame, shown again.
    with h5py.File(root / "episode_1.hdf5", "r") as f:
        rows = f["observations/images/front"]
        if compress:
            assert np.array_equal(rows[19], rows[16])
        else:
            np.testing.assert_array_equal(rows[19], episodes[1].images["front"][16])
    # Our reader gives back what was recorded: padding dropped, the cut episode as written.
    reader = AlohaReader(root)
    back = [reader.read_episode(i) for i in range(3)]
    assert [len(e) for e in back] == [20, 17, 20]
    for got, want in ((back[0], episodes[0]), (back[1], episodes[1])):
        assert_same_episode(got, want, exact_images=not compress)
    np.testing.assert_array_equal(back[2].data["action"], episodes[2].data["action"][:20])
    np.testing.assert_array_equal(back[2].timestamp, episodes[2].timestamp[:20])


def test_fit_episode_timing_and_refusals() -> None:
    ep = make_episodes((5,))[0]
    padded, fit = fit_episode(ep, 8, FPS)
    assert fit.how == "padded" and fit.to_dict() == {"original_length": 5, "length": 8, "length_fit": "padded"}
    # padded ticks keep the control rate; the camera shows its last frame again
    np.testing.assert_allclose(np.diff(padded.timestamp[4:]), 1 / FPS)
    assert list(padded.frame_index["front"][5:]) == [padded.frame_index["front"][4]] * 3
    assert list(padded.tick_lateness[5:]) == [0, 0, 0]
    same, fit = fit_episode(ep, 5, FPS)
    assert same is ep and fit.how == "unchanged"
    with pytest.raises(ConversionError, match="at least 1"):
        fit_episode(ep, 0, FPS)


def test_cli_episode_length_for_aloha_only(tmp_path: Path) -> None:
    from test_cli import run, tool

    write_aloha(tmp_path / "src", make_episodes())
    done = run(tool("telecorder"), "convert", str(tmp_path / "src"), str(tmp_path / "act"), "--to", "aloha",
               "--episode-length", "18", check=True)
    assert "episode length 18: 1 padded, 2 cut (longest was 23 steps; --episode-length 23" in done.stdout
    for i in range(3):
        with h5py.File(tmp_path / "act" / f"episode_{i}.hdf5", "r") as f:
            assert f["action"].shape == (18, 6)
    wrong = run(tool("telecorder"), "convert", str(tmp_path / "src"), str(tmp_path / "rm"), "--to", "robomimic",
                "--episode-length", "18")
    assert wrong.returncode != 0 and "--episode-length" in wrong.stderr + wrong.stdout
    assert not (tmp_path / "rm").exists()


# -- robomimic -----------------------------------------------------------------------------


def test_robomimic_structure(tmp_path: Path) -> None:
    episodes = make_episodes()
    path = write_robomimic(tmp_path / "rm", episodes)
    with h5py.File(path, "r") as f:
        data = f["data"]
        assert data.attrs["total"] == sum(len(e) for e in episodes)
        env = json.loads(data.attrs["env_args"])
        assert {"env_name", "type", "env_kwargs"} <= set(env) and env["env_name"] == "test_arm"
        demos = sorted(data)
        assert demos == ["demo_0", "demo_1", "demo_2"]
        scaling = json.loads(data.attrs["telecorder_actions"])
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
            # Stored scaled into [-1, 1] (the default); offset and scale from /data map them back.
            back = g["actions"][()] * np.array(scaling["scale"]) + np.array(scaling["offset"])
            np.testing.assert_allclose(back, ep.data["action"], rtol=0, atol=1e-6)
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
        # robosuite's controllers take its actions as recorded: they are not rescaled by default.
        assert json.loads(f["data"].attrs["telecorder_actions"]) == "raw"
        np.testing.assert_array_equal(f["data/demo_0/actions"][()], ep.data["action"])
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


def wide_range_episodes() -> list[Episode]:
    """Joint targets in radians as a real arm sends them: an elbow up to 2.2, a constant gripper."""
    episodes = make_episodes()
    for k, ep in enumerate(episodes):
        n = len(ep)
        action = np.empty((n, 6), np.float32)
        action[:, 0] = np.linspace(-1.5, 1.2, n) + 0.1 * k
        action[:, 1] = np.linspace(0.3, 2.2, n)  # elbow
        action[:, 2] = -3.0 + 0.01 * np.arange(n)
        action[:, 3] = np.sin(np.arange(n)) * 0.01
        action[:, 4] = 0.5  # never moves
        action[:, 5] = 40.0 * k  # far outside [-1, 1]
        ep.data["action"] = action
    return episodes


def test_robomimic_actions_normalized_by_default(tmp_path: Path) -> None:
    episodes = wide_range_episodes()
    path = write_robomimic(tmp_path / "rm", episodes)
    raw = np.concatenate([e.data["action"] for e in episodes]).astype(np.float64)
    with h5py.File(path, "r") as f:
        stored = np.concatenate([f[f"data/demo_{k}/actions"][()] for k in range(3)])
        record = json.loads(f["data"].attrs["telecorder_actions"])
        env = json.loads(f["data"].attrs["env_args"])
    # robomimic's get_dataset_info.py raises unless every action is within [-1, 1]; its actors end in tanh
    assert stored.min() >= -1.0 and stored.max() <= 1.0
    # the margin keeps the extremes where tanh reaches them, and uses the range (not a squashed corner of it)
    moving = [0, 1, 2, 3, 5]
    assert 0.97 < np.abs(stored[:, moving]).max(axis=0).min() < 0.99
    assert np.all(stored[:, 4] == 0.0)  # a dimension that never moves maps to 0
    assert record["mode"] == "min_max" and record["range"] == [-1.0, 1.0]
    np.testing.assert_allclose(record["min"], raw.min(axis=0), rtol=1e-12)
    np.testing.assert_allclose(record["max"], raw.max(axis=0), rtol=1e-12)
    # a user maps a policy's output back to radians with the stored offset and scale
    back = stored * np.array(record["scale"]) + np.array(record["offset"])
    np.testing.assert_allclose(back, raw, rtol=0, atol=1e-9)
    assert env["telecorder"]["actions"] == "normalized"
    sidecar = json.loads((tmp_path / "rm" / SIDECAR).read_text())
    assert sidecar["actions"] == record
    # our reader maps them back: the round trip gives the float32 radians bit for bit
    for got, want in zip(RobomimicReader(path), episodes, strict=True):
        assert got.data["action"].dtype == np.float32
        np.testing.assert_array_equal(got.data["action"], want.data["action"])
    (tmp_path / "rm" / SIDECAR).unlink()  # the file alone says how to map back
    np.testing.assert_array_equal(RobomimicReader(path).read_episode(2).data["action"], episodes[2].data["action"])


def test_robomimic_raw_actions_option(tmp_path: Path) -> None:
    episodes = wide_range_episodes()
    path = write_robomimic(tmp_path / "rm", episodes, actions="raw")
    with h5py.File(path, "r") as f:
        assert json.loads(f["data"].attrs["telecorder_actions"]) == "raw"
        np.testing.assert_array_equal(f["data/demo_1/actions"][()], episodes[1].data["action"])
    np.testing.assert_array_equal(RobomimicReader(path).read_episode(1).data["action"], episodes[1].data["action"])
    with pytest.raises(ConversionError, match="actions must be one of"):
        write_robomimic(tmp_path / "bad", episodes, actions="tanh")


def test_robomimic_refuses_non_finite_actions_when_normalizing(tmp_path: Path) -> None:
    episodes = make_episodes()
    episodes[1].data["action"][4, 2] = np.nan
    writer = RobomimicWriter(tmp_path / "rm", make_info())
    writer.write_episode(episodes[0])
    with pytest.raises(ConversionError, match=r"demo_1 \(episode 11\): action is not finite at step 4.*raw"):
        writer.write_episode(episodes[1])
    writer.close()


def test_robomimic_reader_names_a_broken_scaling_record(tmp_path: Path) -> None:
    path = write_robomimic(tmp_path / "rm", make_episodes())
    with h5py.File(path, "a") as f:
        record = json.loads(f["data"].attrs["telecorder_actions"])
        record["scale"] = record["scale"][:2]
        f["data"].attrs["telecorder_actions"] = json.dumps(record)
    with pytest.raises(ConversionError, match=r"demo\.hdf5: /data attribute telecorder_actions"):
        RobomimicReader(path)


# robomimic 0.3.0's EnvType: 1 robosuite, 2 gym, 3 iGibson MOMART (robomimic/envs/env_base.py).
ROBOMIMIC_ENV_TYPES = {1, 2, 3}


def test_robomimic_env_args_do_not_claim_robosuite(tmp_path: Path) -> None:
    path = write_robomimic(tmp_path / "rm", make_episodes())
    with h5py.File(path, "r") as f:
        env = json.loads(f["data"].attrs["env_args"])
    # robomimic resolves type 1 to EnvRobosuite, which imports robosuite and mujoco_py
    assert env["type"] not in ROBOMIMIC_ENV_TYPES
    # env_kwargs go to an environment's constructor: our description is kept out of them
    assert env["env_kwargs"] == {}
    assert env["env_name"] == "test_arm"
    assert env["telecorder"]["control_freq"] == FPS and "rollout.enabled" in env["telecorder"]["note"]


def robomimic_or_skip() -> None:
    pytest.importorskip("robomimic", reason="robomimic 0.3.0 not installed (scripts/setup.sh installs it --no-deps)")


def test_robomimic_sequence_dataset_trains_on_our_file(tmp_path: Path) -> None:
    """robomimic's own SequenceDataset and env utilities, on a file with wide-range joint targets."""
    robomimic_or_skip()
    import robomimic.utils.env_utils as EnvUtils
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    path = write_robomimic(tmp_path / "rm", wide_range_episodes())
    with h5py.File(path, "r") as f:
        env_meta = json.loads(f["data"].attrs["env_args"])  # what FileUtils.get_env_metadata_from_dataset returns
    assert not EnvUtils.is_robosuite_env(env_meta=env_meta)
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["state", "velocity"],
                                                          "rgb": ["agentview_image", "robot0_eye_in_hand_image"]}})
    ds = SequenceDataset(
        hdf5_path=str(path), obs_keys=("state", "velocity", "agentview_image", "robot0_eye_in_hand_image"),
        dataset_keys=("actions", "rewards", "dones"), seq_length=10, pad_seq_length=True,
        hdf5_cache_mode="low_dim", filter_by_attribute="train",
    )
    with h5py.File(path, "r") as f:
        train = [d.decode() for d in f["mask/train"][()]]
        expected = sum(f[f"data/{d}"].attrs["num_samples"] for d in train)
    assert len(ds) == expected
    for i in (0, len(ds) - 1):
        item = ds[i]
        assert item["actions"].shape == (10, 6)
        assert np.abs(item["actions"]).max() <= 1.0
        assert item["obs"]["agentview_image"].shape == (10, H, W, 3)
        assert item["obs"]["state"].shape == (10, 6)
        # what the algorithms do next: images to channels-first floats in [0, 1]
        obs = ObsUtils.process_obs_dict(item["obs"])
        assert obs["agentview_image"].shape == (10, 3, H, W) and 0.0 <= obs["agentview_image"].min() <= 1.0
        assert "next_obs" in item
    ds.close_and_delete_hdf5_handle()


@pytest.mark.parametrize("actions", ["normalized", "raw"])
def test_robomimic_get_dataset_info_accepts_normalized_actions(tmp_path: Path, actions: str) -> None:
    """robomimic's scripts/get_dataset_info.py raises on actions outside [-1, 1]: raw radians fail it."""
    robomimic_or_skip()
    path = write_robomimic(tmp_path / "rm", wide_range_episodes(), actions=actions)
    proc = subprocess.run([sys.executable, "-m", "robomimic.scripts.get_dataset_info", "--dataset", str(path)],
                          capture_output=True, text=True, timeout=120)
    if actions == "normalized":
        assert proc.returncode == 0, proc.stderr
        assert "total trajectories: 3" in proc.stdout and "filter key valid with 1 demos" in proc.stdout
    else:
        assert proc.returncode != 0 and "Dataset should have actions in [-1., 1.]" in proc.stderr
