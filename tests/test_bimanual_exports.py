"""Bimanual (two-arm, 12-D) exports: ALOHA as ACT and act-plus-plus load it, LeRobot with per-arm
names, and several datasets to OXE as one Octo ``make_interleaved_dataset`` mixture.

ACT (tonyzhaozh/act@742c753) and act-plus-plus (MarkFzp/act-plus-plus@26bab07) need IPython and
torchvision at import and are not installed here; as in test_conv_hdf5.py, the lines of their
``utils.py`` that decide whether our files load are reimplemented below with a citation (their real
``load_data`` was run on this export by a scratch script, see docs/convert.md). Octo's signatures
are pinned the way test_oxe_consumers.py pins them.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SHARED, write_dataset

from telecorder import cli
from telecorder.converters import open_reader
from telecorder.converters.aloha import AlohaReader
from telecorder.converters.base import SIDECAR
from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature

ARM = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
NAMES = tuple(f"{side}_{joint}" for side in ("left", "right") for joint in ARM)
CAMERAS = ("top", "left_wrist", "right_wrist")
ALOHA_CAMERAS = {"top": "cam_high", "left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist"}
LENGTHS = [9, 9, 9]  # equal: the original ACT stacks whole episodes
BRIDGE = SHARED / "samples" / "octo-models_octo" / "tests" / "debug_dataset" / "bridge_dataset" / "1.0.0"


def bimanual_info(robot_type: str = "telecorder_sim_bimanual") -> DatasetInfo:
    """The bimanual convention: 12-D state and action, left then right, gripper last in each half."""
    unit = "rad; grippers 0 = closed, 1 = open"
    feats = [
        FeatureSpec("observation.state", "float32", (12,), names=NAMES, unit=unit),
        FeatureSpec("action", "float32", (12,), names=NAMES, unit=unit + "; absolute joint targets"),
        *(image_feature(c, 48, 64) for c in CAMERAS),
    ]
    return DatasetInfo.create(feats, fps=30.0, robot_type=robot_type)


def single_arm_info(cameras: tuple[str, ...] = ("front", "wrist")) -> DatasetInfo:
    """The built-in sim arm: 6-D (its joint names, so OXE's forward kinematics finds them)."""
    feats = [
        FeatureSpec("observation.state", "float32", (6,), names=ARM, unit="rad; gripper 0 = closed, 1 = open"),
        FeatureSpec("action", "float32", (6,), names=ARM, unit="rad, absolute joint targets"),
        *(image_feature(c, 48, 64) for c in cameras),
    ]
    return DatasetInfo.create(feats, fps=30.0, robot_type="telecorder_sim_arm")


def write_bimanual(root: Path, lengths: list[int] = LENGTHS, **kw: str) -> Path:
    write_dataset(root, bimanual_info(**kw), lengths)
    return root


def recorded(root: Path) -> list[dict]:
    """Each native episode's arrays and frames as our own reader returns them."""
    reader = open_reader(root)
    out = []
    for i in reader.episode_indices():
        ep = reader.read_episode(i)
        out.append({"state": ep.data["observation.state"], "action": ep.data["action"], "images": ep.images})
    return out


def convert(*argv: str | Path) -> int:
    return cli.main(["convert", *map(str, argv)])


def printed(capsys: pytest.CaptureFixture[str], stream: str = "err") -> str:
    """What the command printed, its lines joined (the console wraps them at its width)."""
    return " ".join(getattr(capsys.readouterr(), stream).split())


# -- ALOHA -----------------------------------------------------------------------------------


def act_sample(path: Path, start_ts: int, camera_names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """act utils.py EpisodicDataset.__getitem__: the observation at start_ts, the actions from there
    (one step earlier when the file's sim attribute is False), zero-padded to the episode length."""
    with h5py.File(path, "r") as root:
        is_sim = root.attrs["sim"]
        episode_len = root["/action"].shape[0]
        qpos = root["/observations/qpos"][start_ts]
        _ = root["/observations/qvel"][start_ts]
        images = np.stack([root[f"/observations/images/{c}"][start_ts] for c in camera_names], axis=0)
        action = root["/action"][start_ts:] if is_sim else root["/action"][max(0, start_ts - 1):]
    padded = np.zeros((episode_len, action.shape[1]), np.float32)
    padded[: len(action)] = action
    return images, qpos, padded


def actpp_norm_stats(folder: Path) -> tuple[dict[str, np.ndarray], list[int]]:
    """act-plus-plus utils.py: find_all_hdf5 (every *.hdf5 below the folder) and get_norm_stats
    (episodes concatenated; without /base_action, two zero columns appended to the action)."""
    torch = pytest.importorskip("torch")
    files = sorted(str(p) for p in folder.rglob("*.hdf5") if "features" not in p.name)
    qpos, action, lengths = [], [], []
    for path in files:
        with h5py.File(path, "r") as root:
            q = root["/observations/qpos"][()]
            _ = root["/observations/qvel"][()]
            assert "/base_action" not in root
            a = root["/action"][()]
            a = np.concatenate([a, np.zeros([a.shape[0], 2])], axis=-1)
        qpos.append(torch.from_numpy(q))
        action.append(torch.from_numpy(a))
        lengths.append(len(q))
    all_action = torch.cat(action, dim=0)
    return {"action": all_action.numpy(), "qpos_mean": torch.cat(qpos, dim=0).mean(dim=[0]).float().numpy()}, lengths


@pytest.fixture(scope="module")
def bimanual_src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = write_bimanual(tmp_path_factory.mktemp("bimanual") / "bimanual")
    return root, recorded(root)


def test_aloha_export_holds_both_arms_as_aloha_does(tmp_path: Path, bimanual_src: tuple[Path, list[dict]]) -> None:
    src, episodes = bimanual_src
    assert convert(src, tmp_path / "act", "--to", "aloha") == 0
    files = sorted((tmp_path / "act").glob("*.hdf5"))
    assert [p.name for p in files] == [f"episode_{i}.hdf5" for i in range(len(LENGTHS))]
    for path, want in zip(files, episodes, strict=True):
        with h5py.File(path, "r") as f:
            assert bool(f.attrs["sim"]) is True  # recorded on the simulated pair of arms
            assert sorted(f["observations/images"]) == sorted(ALOHA_CAMERAS.values())
            qpos, qvel, action = f["observations/qpos"][()], f["observations/qvel"][()], f["action"][()]
            for cam, aloha in ALOHA_CAMERAS.items():
                np.testing.assert_array_equal(f[f"observations/images/{aloha}"][()], np.stack(want["images"][cam]))
        assert qpos.shape == qvel.shape == action.shape == (LENGTHS[0], 12)
        # Left arm in the first half, right arm in the second, gripper last in each (ALOHA's order).
        np.testing.assert_array_equal(action[:, :6], want["action"][:, :6])
        np.testing.assert_array_equal(action[:, 6:], want["action"][:, 6:])
        np.testing.assert_array_equal(qpos, want["state"])
    side = json.loads((tmp_path / "act" / SIDECAR).read_text())
    assert side["info"]["features"]["action"]["names"] == list(NAMES)
    assert side["sim"]["value"] is True
    # Our reader gives the episodes back under ALOHA's camera names.
    back = AlohaReader(tmp_path / "act")
    assert back.info.features["action"].names == NAMES
    np.testing.assert_array_equal(back.read_episode(1).data["action"], episodes[1]["action"])


def test_act_and_act_plus_plus_read_both_arms(tmp_path: Path, bimanual_src: tuple[Path, list[dict]]) -> None:
    from test_conv_hdf5 import act_norm_stats

    src, episodes = bimanual_src
    assert convert(src, tmp_path / "act", "--to", "aloha") == 0
    folder = tmp_path / "act"
    cams = list(ALOHA_CAMERAS.values())
    # The original ACT: norm stats over stacked episodes, then one sample per episode.
    stats = act_norm_stats(folder, len(LENGTHS))
    assert tuple(stats["shape"]) == (len(LENGTHS), LENGTHS[0], 12)
    for i, want in enumerate(episodes):
        images, qpos, action = act_sample(folder / f"episode_{i}.hdf5", 3, cams)
        assert images.shape == (3, 48, 64, 3) and qpos.shape == (12,)
        np.testing.assert_array_equal(action[: LENGTHS[i] - 3], want["action"][3:])  # sim: no one-step shift
        assert not action[LENGTHS[i] - 3:].any()
    # act-plus-plus: every *.hdf5 in the folder is an episode; 12 recorded dims + 2 zero base-action dims.
    pp, lengths = actpp_norm_stats(folder)
    assert lengths == LENGTHS
    assert pp["action"].shape == (sum(LENGTHS), 14)
    np.testing.assert_array_equal(pp["action"][:, :12], np.concatenate([e["action"] for e in episodes]))
    assert not pp["action"][:, 12:].any()


def test_camera_map_overrides_the_aloha_names(tmp_path: Path, bimanual_src: tuple[Path, list[dict]]) -> None:
    src, episodes = bimanual_src
    # ACT's sim names its one camera "top": keep it; the others keep theirs too.
    assert convert(src, tmp_path / "keep", "--to", "aloha", "--camera-map", "top=top") == 0
    with h5py.File(tmp_path / "keep" / "episode_0.hdf5", "r") as f:
        assert sorted(f["observations/images"]) == sorted(CAMERAS)
    assert convert(src, tmp_path / "own", "--to", "aloha", "--camera-map", "cam_low=left_wrist,cam_high=top") == 0
    with h5py.File(tmp_path / "own" / "episode_0.hdf5", "r") as f:
        assert sorted(f["observations/images"]) == ["cam_high", "cam_low", "right_wrist"]
        np.testing.assert_array_equal(f["observations/images/cam_low"][()], np.stack(episodes[0]["images"]["left_wrist"]))
    # --cameras selects and names exactly; no ALOHA naming on top of it.
    assert convert(src, tmp_path / "sel", "--to", "aloha", "--cameras", "top,right_wrist:wrist") == 0
    with h5py.File(tmp_path / "sel" / "episode_0.hdf5", "r") as f:
        assert sorted(f["observations/images"]) == ["top", "wrist"]


def test_sharded_aloha_export_names_cameras_the_same(tmp_path: Path, bimanual_src: tuple[Path, list[dict]]) -> None:
    src, _ = bimanual_src
    assert convert(src, tmp_path / "act", "--to", "aloha", "--workers", "2", "--shard-episodes", "1") == 0
    for i in range(len(LENGTHS)):
        with h5py.File(tmp_path / "act" / f"episode_{i}.hdf5", "r") as f:
            assert sorted(f["observations/images"]) == sorted(ALOHA_CAMERAS.values())
            assert f["action"].shape == (LENGTHS[i], 12)


@pytest.mark.parametrize(("argv", "message"), [
    (["--camera-map", "cam_high=front"], "no camera 'front'"),
    (["--camera-map", "cam_high"], "NAME=CAMERA"),
    (["--camera-map", "left_wrist=top"], "would name two cameras"),
    (["--camera-map", "cam_high=top", "--cameras", "top"], "--camera-map"),
])
def test_camera_map_refusals(tmp_path: Path, bimanual_src: tuple[Path, list[dict]], capsys: pytest.CaptureFixture[str],
                             argv: list[str], message: str) -> None:
    src, _ = bimanual_src
    assert convert(src, tmp_path / "act", "--to", "aloha", *argv) == 2
    err = printed(capsys)
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "act").exists()


def test_single_arm_aloha_export_is_unchanged(tmp_path: Path) -> None:
    # A single arm with a camera that happens to be called "top" keeps every name, 6-D.
    write_dataset(tmp_path / "src", single_arm_info(("front", "wrist", "top")), [5, 4])
    assert convert(tmp_path / "src", tmp_path / "act", "--to", "aloha") == 0
    with h5py.File(tmp_path / "act" / "episode_0.hdf5", "r") as f:
        assert sorted(f["observations/images"]) == ["front", "top", "wrist"]
        assert f["action"].shape == (5, 6) and bool(f.attrs["sim"]) is True


def test_real_bimanual_recording_is_not_marked_sim(tmp_path: Path) -> None:
    # Two real follower arms (on the wall clock): ACT's one-step action shift applies.
    src = write_bimanual(tmp_path / "src", [4, 4], robot_type="dynamixel_bimanual")
    assert convert(src, tmp_path / "act", "--to", "aloha") == 0
    with h5py.File(tmp_path / "act" / "episode_0.hdf5", "r") as f:
        assert bool(f.attrs["sim"]) is False
        assert sorted(f["observations/images"]) == sorted(ALOHA_CAMERAS.values())


# -- LeRobot ---------------------------------------------------------------------------------


def test_lerobot_export_keeps_per_arm_names(tmp_path: Path, bimanual_src: tuple[Path, list[dict]]) -> None:
    src, episodes = bimanual_src
    assert convert(src, tmp_path / "lr", "--to", "lerobot") == 0
    features = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())["features"]
    for key in ("observation.state", "action"):
        assert features[key]["names"] == list(NAMES), key
        assert features[key]["shape"] == [12]
    assert {f"observation.images.{c}" for c in CAMERAS} <= set(features)
    # And back: the names and both arms' values survive.
    assert convert(tmp_path / "lr", tmp_path / "back", "--to", "native") == 0
    back = open_reader(tmp_path / "back")
    assert back.info.features["action"].names == NAMES
    np.testing.assert_array_equal(back.read_episode(2).data["action"], episodes[2]["action"])


# -- OXE: several datasets, one Octo mixture -------------------------------------------------


def _octo_signatures():
    """make_dataset_from_rlds as test_oxe_consumers pins it, and make_interleaved_dataset."""
    from test_oxe_consumers import _KW, _POS, OCTO_SIGNATURE

    # octo-models/octo@241fb35, octo/data/dataset.py:
    # make_interleaved_dataset(dataset_kwargs_list, sample_weights=None, *, train, shuffle_buffer_size,
    #     traj_transform_kwargs={}, frame_transform_kwargs={}, batch_size=None, balance_weights=False,
    #     traj_transform_threads=None, traj_read_threads=None)
    interleaved = inspect.Signature([
        inspect.Parameter("dataset_kwargs_list", _POS),
        inspect.Parameter("sample_weights", _POS, default=None),
        inspect.Parameter("train", _KW),
        inspect.Parameter("shuffle_buffer_size", _KW),
        *(inspect.Parameter(n, _KW, default=None) for n in (
            "traj_transform_kwargs", "frame_transform_kwargs", "batch_size", "balance_weights",
            "traj_transform_threads", "traj_read_threads")),
    ])
    return OCTO_SIGNATURE, interleaved


def _tfds_episodes(block: dict) -> list[dict]:
    import tensorflow_datasets as tfds

    # Octo opens each dataset exactly like this (make_dataset_from_rlds: tfds.builder(name, data_dir=data_dir)).
    builder = tfds.builder(block["name"], data_dir=block["data_dir"])
    ds = builder.as_dataset(split="train", read_config=tfds.ReadConfig(interleave_cycle_length=1))
    return [{"steps": list(ep["steps"]), "id": int(ep["episode_metadata"]["episode_id"])} for ep in tfds.as_numpy(ds)]


@pytest.fixture(scope="module")
def mixture_out(tmp_path_factory: pytest.TempPathFactory, bimanual_src: tuple[Path, list[dict]]) -> dict:
    pytest.importorskip("tensorflow_datasets", reason="the rlds extra (tensorflow-datasets) is not installed")
    pytest.importorskip("mujoco", reason="the single arm's EEF actions need MuJoCo forward kinematics")
    root = tmp_path_factory.mktemp("mixture")
    single = root / "pick_cube"
    write_dataset(single, single_arm_info(), [6, 5])
    bimanual, episodes = bimanual_src
    out = root / "oxe"
    assert convert(single, bimanual, out, "--to", "oxe", "--binarize-gripper") == 0
    return {"out": out, "single": single, "bimanual": bimanual, "episodes": episodes,
            "mixture": json.loads((out / "oxe_mixture.json").read_text())}


@pytest.mark.tf
def test_mixture_binds_to_octos_make_interleaved_dataset(mixture_out: dict) -> None:
    make_dataset, interleaved = _octo_signatures()
    mixture = mixture_out["mixture"]
    assert set(mixture) == {"dataset_kwargs_list", "sample_weights"}
    bound = interleaved.bind(**mixture, train=True, shuffle_buffer_size=1000)  # TypeError on anything else
    blocks = bound.arguments["dataset_kwargs_list"]
    assert [b["name"] for b in blocks] == ["pick_cube", "bimanual"]  # distinct: Octo asserts it
    for block in blocks:
        # What make_interleaved_dataset adds to each block itself: a block holding any of them fails.
        make_dataset.bind(**block, train=True, num_parallel_calls=1, num_parallel_reads=1, dataset_statistics={})
    # By training steps: 11 single-arm steps, 27 bimanual ones.
    np.testing.assert_allclose(mixture["sample_weights"], [11 / 38, 27 / 38])
    out = mixture_out["out"]
    assert sorted(p.name for p in out.iterdir()) == ["bimanual", "oxe_mixture.json", "pick_cube"]


@pytest.mark.tf
def test_tfds_reads_each_dataset_of_the_mixture(mixture_out: dict) -> None:
    blocks = mixture_out["mixture"]["dataset_kwargs_list"]
    single, bimanual = (_tfds_episodes(b) for b in blocks)
    assert [len(ep["steps"]) for ep in single] == [6, 5]
    assert single[0]["steps"][0]["action"].shape == (7,)  # one arm: the EEF delta
    bimanual.sort(key=lambda ep: ep["id"])
    assert [len(ep["steps"]) for ep in bimanual] == LENGTHS
    for ep, want in zip(bimanual, mixture_out["episodes"], strict=True):
        action = np.stack([s["action"] for s in ep["steps"]])
        state = np.stack([s["observation"]["state"] for s in ep["steps"]])
        np.testing.assert_array_equal(state, want["state"])
        # Two arms: joint targets, each arm's gripper binarized, the joints as recorded.
        grippers = [5, 11]
        joints = [k for k in range(12) if k not in grippers]
        np.testing.assert_array_equal(action[:, joints], want["action"][:, joints])
        np.testing.assert_array_equal(action[:, grippers], (want["action"][:, grippers] > 0.5).astype(np.float32))
    assert blocks[1]["action_normalization_mask"] == [k not in (5, 11) for k in range(12)]
    config = json.loads((mixture_out["out"] / "bimanual" / "bimanual" / "1.0.0" / "oxe_config.json").read_text())
    assert config["dataset"]["action_encoding"] == "JOINT_POS"
    assert config["dataset"]["action_names"] == list(NAMES)


@pytest.mark.tf
def test_mixture_weights_file(tmp_path: Path, mixture_out: dict, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    single, bimanual = mixture_out["single"], mixture_out["bimanual"]
    # The file train --mixture reads: paths absolute or relative to the file's own folder.
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({str(single): 3, os.path.relpath(bimanual, tmp_path): 1}))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert convert(single, bimanual, tmp_path / "oxe", "--to", "oxe", "--mixture", weights) == 0
    mixture = json.loads((tmp_path / "oxe" / "oxe_mixture.json").read_text())
    assert mixture["sample_weights"] == [0.75, 0.25]
    assert "Octo mixture of 2 datasets" in printed(capsys, "out")
    assert convert(single, bimanual, tmp_path / "uniform", "--to", "oxe", "--mixture", "uniform",
                   "--action-space", "joint") == 0
    mixture = json.loads((tmp_path / "uniform" / "oxe_mixture.json").read_text())
    assert mixture["sample_weights"] == [0.5, 0.5]


@pytest.mark.tf
@pytest.mark.parametrize(("content", "message"), [
    ({"SINGLE": 1}, "gives no weight for"),
    ({"SINGLE": 1, "BIMANUAL": 1, "OTHER": 2}, "not among the datasets given"),
    ({"SINGLE": 1, "BIMANUAL": 1, "nowhere/": 2}, "no such dataset"),
    ({"SINGLE": -1, "BIMANUAL": 1}, ">= 0"),
    ({"SINGLE": True, "BIMANUAL": 1}, "must be a number"),
    ({"SINGLE": 0, "BIMANUAL": 0}, "every weight is 0"),
    ("{not json", "not valid JSON"),
    ("x" * ((1 << 20) + 1), "is no mixture file"),
])
def test_mixture_weights_refusals(tmp_path: Path, mixture_out: dict, capsys: pytest.CaptureFixture[str],
                                  content: object, message: str) -> None:
    weights = tmp_path / "weights.json"
    if not isinstance(content, str):
        paths = {"SINGLE": mixture_out["single"], "BIMANUAL": mixture_out["bimanual"], "OTHER": mixture_out["out"]}
        content = json.dumps({str(paths.get(k, k)): v for k, v in content.items()})
    weights.write_text(content)
    code = convert(mixture_out["single"], mixture_out["bimanual"], tmp_path / "oxe", "--to", "oxe",
                   "--mixture", weights)
    err = printed(capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "oxe").exists()  # refused before anything was converted


@pytest.mark.tf
def test_several_sources_refusals(tmp_path: Path, mixture_out: dict, capsys: pytest.CaptureFixture[str]) -> None:
    single, bimanual = mixture_out["single"], mixture_out["bimanual"]
    assert convert(single, bimanual, tmp_path / "act", "--to", "aloha") == 2
    assert "only --to oxe" in printed(capsys)
    assert convert(single, tmp_path / "one", "--to", "oxe", "--mixture", "uniform") == 2
    assert "give several source datasets" in printed(capsys)
    assert convert(single, single, tmp_path / "twice", "--to", "oxe") == 2
    assert "given more than once" in printed(capsys)
    # An existing mixture folder is not replaced without --overwrite, and nothing is converted.
    assert convert(single, bimanual, mixture_out["out"], "--to", "oxe") == 2
    assert "--overwrite" in printed(capsys)
    assert not any(p.name.endswith(".partial") for p in mixture_out["out"].iterdir())


@pytest.mark.tf
def test_mixture_with_the_bridge_sample(tmp_path: Path, mixture_out: dict) -> None:
    """A foreign 7-D RLDS dataset (Octo's Bridge debug set) next to our 6-D and 12-D ones."""
    if not BRIDGE.is_dir():
        pytest.skip(f"{BRIDGE} is absent (the shared samples folder ../shared is not checked out)")
    out = tmp_path / "oxe"
    assert convert(mixture_out["single"], mixture_out["bimanual"], BRIDGE, out, "--to", "oxe",
                   "--action-space", "joint") == 0
    mixture = json.loads((out / "oxe_mixture.json").read_text())
    _, interleaved = _octo_signatures()
    interleaved.bind(**mixture, train=True, shuffle_buffer_size=1000)
    blocks = mixture["dataset_kwargs_list"]
    assert [b["name"] for b in blocks] == ["pick_cube", "bimanual", "bridge_dataset"]  # named after 1.0.0's folder
    widths = [_tfds_episodes(b)[0]["steps"][0]["action"].shape[0] for b in blocks]
    assert widths == [6, 12, 7]
    steps = [11, sum(LENGTHS), 500]  # the Bridge sample: 50 episodes of 10 steps (its train and val)
    np.testing.assert_allclose(mixture["sample_weights"], np.array(steps) / sum(steps))

