"""The reference BC policy: training, checkpoints (safetensors + JSON), the loader's state keys and
intervention weights, and ``telecorder train``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from conftest import make_info, synthetic_frame, write_dataset  # noqa: E402

from telecorder.cli import main  # noqa: E402
from telecorder.datasets.async_writer import AsyncEpisodeWriter, Step  # noqa: E402
from telecorder.datasets.dataset import DatasetWriter  # noqa: E402
from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature  # noqa: E402
from telecorder.errors import DatasetError  # noqa: E402
from telecorder.loaders.normalization import make_normalizer  # noqa: E402
from telecorder.loaders.torch_dataset import TorchDataset  # noqa: E402
from telecorder.policies import POLICY_FORMAT, PolicyError  # noqa: E402
from telecorder.policies.bc import BCPolicy  # noqa: E402
from telecorder.policies.checkpoint import MODEL_FILE, POLICY_FILE, load_policy_dir  # noqa: E402
from telecorder.policies.train import train_bc  # noqa: E402

ENV = "observation.environment_state"
LENGTHS = [60, 60, 60, 60, 60]


def human(step: int) -> bool:
    return step % 3 == 0


def write_policy_dataset(root: Path, lengths: list[int], *, cameras: tuple[str, ...] = (), env: bool = True,
                         intervention: bool = False, dim: int = 4, seed: int = 0) -> list[list[Step]]:
    """Episodes where the action is a fixed function of the state and the object pose."""
    feats = [FeatureSpec("observation.state", "float32", (dim,)),
             FeatureSpec("action", "float32", (dim,), names=tuple(f"j{i}" for i in range(dim)))]
    if env:
        feats.append(FeatureSpec(ENV, "float32", (3,)))
    if intervention:
        feats.append(FeatureSpec("intervention", "bool", (1,)))
    feats += [image_feature(c, 48, 64) for c in cameras]
    info = DatasetInfo.create(feats, fps=30.0, robot_type="test_arm")
    written = []
    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw, encode_threads=2)
        try:
            for k, n in enumerate(lengths):
                rng = np.random.default_rng(seed + k)
                writer.begin({"task": "push the cube"})
                steps = []
                for i in range(n):
                    s = rng.normal(size=dim).astype(np.float32)
                    e = rng.normal(size=3).astype(np.float32)
                    numeric = {"observation.state": s, "action": (np.tanh(s) + 0.5 * e.sum()).astype(np.float32)}
                    if env:
                        numeric[ENV] = e
                    if intervention:
                        numeric["intervention"] = np.array([human(i)])
                    step = Step(timestamp=i / 30, numeric=numeric,
                                frames={c: synthetic_frame(i, j) for j, c in enumerate(cameras)},
                                frame_time={c: i / 30 for c in cameras}, frame_index={c: i for c in cameras})
                    writer.add(step)
                    steps.append(step)
                writer.end({}, {"task": "push the cube"}).result(timeout=30)
                written.append(steps)
        finally:
            writer.close()
    return written


@pytest.fixture(scope="module")
def state_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("policies") / "ds"
    return root, write_policy_dataset(root, LENGTHS, intervention=True)


@pytest.fixture(scope="module")
def trained(state_ds: tuple[Path, list], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("trained") / "bc"
    summary = train_bc(state_ds[0], out, steps=300, horizon=5, batch_size=64, val_episodes=1, seed=3)
    return out, summary


# -- training and checkpoints ----------------------------------------------------------


def test_training_loss_drops_and_summary_is_recorded(trained: tuple[Path, dict]) -> None:
    out, summary = trained
    assert summary["final_train_loss"] < 0.8 * summary["initial_train_loss"]
    assert summary["final_val_loss"] is not None
    assert summary["train_episodes"] == [0, 1, 2, 3] and summary["val_episodes"] == [4]
    meta = json.loads((out / POLICY_FILE).read_text())
    assert meta["format"] == POLICY_FORMAT and meta["kind"] == "bc"
    assert meta["spec"]["state_keys"] == ["observation.state", ENV]
    assert meta["spec"]["horizon"] == 5 and meta["spec"]["action_dim"] == 4
    assert meta["spec"]["action_names"] == ["j0", "j1", "j2", "j3"]
    assert meta["training"]["normalization"] == {"state": "mean_std", "action": "min_max"}
    for key in ("steps", "final_train_loss", "final_val_loss", "dataset", "seed", "wall_time_s", "torch_version"):
        assert key in meta["training"]


def test_training_is_reproducible(state_ds: tuple[Path, list], tmp_path: Path) -> None:
    for name in ("a", "b"):
        train_bc(state_ds[0], tmp_path / name, steps=30, horizon=3, batch_size=32, seed=7)
    assert (tmp_path / "a" / MODEL_FILE).read_bytes() == (tmp_path / "b" / MODEL_FILE).read_bytes()


_PREDICT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from telecorder.policies.checkpoint import load_policy_dir

    policy = load_policy_dir(sys.argv[1])
    states = np.load(sys.argv[2])
    np.save(sys.argv[3], np.stack([policy.predict({"state": s[None], "language_instruction": "x"}) for s in states]))
    """
)


def test_checkpoint_reproduces_outputs_in_a_fresh_process(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    policy = load_policy_dir(out)
    assert isinstance(policy, BCPolicy)
    states = np.random.default_rng(0).normal(size=(8, 7)).astype(np.float32)
    here = np.stack([policy.predict({"state": s[None], "language_instruction": "x"}) for s in states])
    assert here.shape == (8, 5, 4) and here.dtype == np.float64
    np.save(tmp_path / "states.npy", states)
    subprocess.run([sys.executable, "-c", _PREDICT, str(out), str(tmp_path / "states.npy"), str(tmp_path / "out.npy")],
                   check=True, timeout=120)
    there = np.load(tmp_path / "out.npy")
    assert there.dtype == here.dtype and np.array_equal(there, here)
    # raw units: the normalized output unnormalized with the saved action normalizer
    norm = policy.predict_normalized({"state": states[:1]})
    assert np.array_equal(policy.action_normalizer.unnormalize(norm.astype(np.float64)), here[0])


def test_policy_rejects_a_wrong_observation(trained: tuple[Path, dict]) -> None:
    policy = load_policy_dir(trained[0])
    with pytest.raises(PolicyError, match="state"):
        policy.predict({"state": np.zeros((1, 3), np.float32)})
    with pytest.raises(PolicyError, match="no 'state'"):
        policy.predict({})


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _one_policy_error(path: Path, names: Path) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy_dir(path)
    msg = str(info.value)
    assert str(names) in msg, msg
    return msg


def test_corrupt_or_mismatched_checkpoints_raise_one_policy_error(trained: tuple[Path, dict], tmp_path: Path) -> None:
    src = trained[0]

    d = _copy(src, tmp_path / "truncated")
    blob = (d / MODEL_FILE).read_bytes()
    (d / MODEL_FILE).write_bytes(blob[: len(blob) // 2])
    assert "corrupt or truncated" in _one_policy_error(d, d / MODEL_FILE)

    d = _copy(src, tmp_path / "garbage")
    (d / MODEL_FILE).write_bytes(b"\x00" * 64)
    assert "corrupt or truncated" in _one_policy_error(d, d / MODEL_FILE)

    d = _copy(src, tmp_path / "no_weights")
    (d / MODEL_FILE).unlink()
    assert "missing" in _one_policy_error(d, d / MODEL_FILE)

    d = _copy(src, tmp_path / "no_json")
    (d / POLICY_FILE).unlink()
    assert "missing" in _one_policy_error(d, d / POLICY_FILE)

    _one_policy_error(tmp_path / "nowhere", tmp_path / "nowhere")

    d = _copy(src, tmp_path / "format")
    meta = json.loads((d / POLICY_FILE).read_text())
    (d / POLICY_FILE).write_text(json.dumps({**meta, "format": "something-else/2"}))
    assert "something-else/2" in _one_policy_error(d, d / POLICY_FILE)

    d = _copy(src, tmp_path / "kind")
    (d / POLICY_FILE).write_text(json.dumps({**meta, "kind": "diffusion"}))
    assert "diffusion" in _one_policy_error(d, d / POLICY_FILE)

    d = _copy(src, tmp_path / "not_json")
    (d / POLICY_FILE).write_text("{ not json")
    _one_policy_error(d, d / POLICY_FILE)

    d = _copy(src, tmp_path / "shapes")
    (d / POLICY_FILE).write_text(json.dumps({**meta, "model": {**meta["model"], "hidden": 128}}))
    assert "does not match" in _one_policy_error(d, d / MODEL_FILE)

    d = _copy(src, tmp_path / "names")
    from safetensors.torch import save_file

    save_file({"something.weight": torch.zeros(3)}, str(d / MODEL_FILE))
    assert "does not match" in _one_policy_error(d, d / MODEL_FILE)

    d = _copy(src, tmp_path / "swapped")  # right shapes, weights of another training
    save_file({k: torch.zeros_like(v) for k, v in load_policy_dir(src).model.state_dict().items()}, str(d / MODEL_FILE))
    assert "SHA-256" in _one_policy_error(d, d / MODEL_FILE)


def test_state_obs_needs_the_environment_state(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    write_dataset(root, make_info(cameras=()), [10, 10])
    with pytest.raises(DatasetError, match=r"observation\.environment_state"):
        train_bc(root, tmp_path / "out", steps=2)


def test_images_variant_smoke(tmp_path: Path) -> None:
    root = tmp_path / "cam"
    write_policy_dataset(root, [15, 15, 10], cameras=("front", "wrist"), env=False)
    summary = train_bc(root, tmp_path / "out", obs="images", steps=4, horizon=3, batch_size=8,
                       image_size=(32, 40), cameras=["front"])
    assert summary["train_episodes"] == [0, 1] and summary["val_episodes"] == [2]
    policy = load_policy_dir(tmp_path / "out")
    assert policy.spec.cameras == ("front",) and policy.spec.image_size == (32, 40)
    item = TorchDataset(root, cameras=["front"], image_size=(32, 40), horizon=3, normalize="min_max",
                        state_normalize="mean_std")[5]
    obs = {"state": item["state"].numpy(), "images.front": item["images.front"].numpy(), "language_instruction": "x"}
    assert policy.predict(obs).shape == (3, 4)
    with pytest.raises(PolicyError, match=r"images\.front"):
        policy.predict({"state": obs["state"]})


# -- the loader: concatenated state keys, intervention weights ---------------------------


def test_state_key_list_concatenates_and_normalizes_each_part(state_ds: tuple[Path, list]) -> None:
    root, steps = state_ds
    stats = json.loads((root / "meta" / "stats.json").read_text())
    ds = TorchDataset(root, image_size=None, state_key=["observation.state", ENV], normalize="mean_std")
    assert ds.state_keys == ("observation.state", ENV)
    single = TorchDataset(root, image_size=None, normalize="mean_std")
    assert single.state_keys == ("observation.state",)
    parts = [make_normalizer(stats, k, "mean_std") for k in ds.state_keys]
    for i in (0, 61, 299):
        ep, step = ds.locate(i)
        raw = [steps[ep][step].numeric[k] for k in ds.state_keys]
        expected = np.concatenate([n.normalize(r.astype(np.float64)) for n, r in zip(parts, raw, strict=True)])
        got = ds[i]["state"][0].numpy()
        assert got.shape == (7,)
        np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6, atol=1e-6)
        assert torch.equal(ds[i]["state"][0, :4], single[i]["state"][0])
    back = ds.state_normalizer.unnormalize(ds[0]["state"][0].numpy().astype(np.float64))
    np.testing.assert_allclose(back, np.concatenate([steps[0][0].numeric[k] for k in ds.state_keys]), atol=1e-5)


def test_intervention_weights_and_filtering(state_ds: tuple[Path, list]) -> None:
    root, _ = state_ds
    n = sum(LENGTHS)
    n_human = sum(sum(human(i) for i in range(k)) for k in LENGTHS)

    plain = TorchDataset(root, image_size=None)
    assert len(plain) == n and np.array_equal(plain.sample_weights(), np.ones(n))
    assert bool(plain[0]["intervention"]) and not bool(plain[1]["intervention"])
    assert plain[0]["weight"].dtype == torch.float32 and float(plain[1]["weight"]) == 1.0

    weighted = TorchDataset(root, image_size=None, intervention_weight=5.0, policy_weight=0.5)
    assert len(weighted) == n
    w = weighted.sample_weights()
    expected = np.concatenate([[5.0 if human(i) else 0.5 for i in range(k)] for k in LENGTHS])
    assert np.array_equal(w, expected)
    for i in (0, 1, 2, 3, 61):
        item = weighted[i]
        assert float(item["weight"]) == w[i] and bool(item["intervention"]) == (w[i] == 5.0)

    # policy_weight 0 alone keeps the human-labelled steps (weight 1): corrections only.
    only_human = TorchDataset(root, image_size=None, policy_weight=0.0)
    assert len(only_human) == n_human
    assert np.array_equal(only_human.sample_weights(), np.ones(n_human))
    items = [only_human[i] for i in range(len(only_human))]
    assert all(bool(it["intervention"]) for it in items)
    assert [int(it["step_index"]) for it in items[:3]] == [0, 3, 6]
    assert only_human.locate(1) == (0, 3)
    # ...and the policy's actions later in a chunk are no labels: masked like padding.
    chunked = TorchDataset(root, image_size=None, policy_weight=0.0, horizon=4)
    np.testing.assert_array_equal(chunked[0]["action_is_pad"].numpy(), [False, True, True, False])
    assert not TorchDataset(root, image_size=None, horizon=4)[0]["action_is_pad"].any()

    drop_human = TorchDataset(root, image_size=None, intervention_weight=0.0)
    assert len(drop_human) == n - n_human and not any(bool(drop_human[i]["intervention"]) for i in range(5))

    with pytest.raises(ValueError, match="policy_weight"):
        TorchDataset(root, image_size=None, policy_weight=-1.0)


def test_weights_without_intervention_feature_are_one(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    write_dataset(root, make_info(cameras=()), [5, 6])
    ds = TorchDataset(root, image_size=None, intervention_weight=3.0, policy_weight=0.0)
    assert len(ds) == 11 and np.array_equal(ds.sample_weights(), np.ones(11))
    assert not bool(ds[0]["intervention"]) and float(ds[0]["weight"]) == 1.0
    sampler = torch.utils.data.WeightedRandomSampler(ds.sample_weights(), num_samples=4)
    assert len(list(sampler)) == 4


def test_training_on_human_labelled_steps(state_ds: tuple[Path, list], tmp_path: Path) -> None:
    summary = train_bc(state_ds[0], tmp_path / "dagger", steps=3, horizon=2, batch_size=8, policy_weight=0.0,
                       intervention_weight=1.0)
    assert summary["train_samples"] == sum(sum(human(i) for i in range(k)) for k in LENGTHS[:-1])


# -- command line ------------------------------------------------------------------------


def test_train_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--intervention-weight" in out and "--obs" in out


def test_train_command_writes_a_loadable_checkpoint(state_ds: tuple[Path, list], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["train", str(state_ds[0]), "--out", str(out), "--steps", "20", "--horizon", "4", "--batch-size", "16",
            "--val-episodes", "2", "--seed", "1"]
    assert main(argv) == 0
    assert "saved to" in capsys.readouterr().out
    policy = load_policy_dir(out)
    assert policy.spec.horizon == 4 and policy.info["val_episodes"] == [3, 4]
    assert main(argv) == 2  # refuses a non-empty folder
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_trains_on_a_lerobot_dataset_found_in_the_wild(tmp_path: Path) -> None:
    """A public LeRobot dataset (Unitree G1, 26-D joint state, no object pose) converts, trains and runs."""
    from conftest import SHARED

    from telecorder.collect.devices.policy_runner import PolicyRunner
    from telecorder.converters.pipeline import ConvertOptions, convert
    from telecorder.datasets.episode_file import EpisodeReader
    from telecorder.policies.loading import load_policy

    src = SHARED / "samples" / "YifanTian07_G1-policy-train"
    if not src.exists():
        pytest.skip(f"sample dataset not present at {src}")
    native = tmp_path / "g1"
    convert(src, native, ConvertOptions(to="native", episodes=list(range(10)), reader_options={"tabular_only": True}))
    with pytest.raises(DatasetError, match=r"--state-keys observation\.state"):
        train_bc(native, tmp_path / "x", steps=1)
    summary = train_bc(native, tmp_path / "ckpt", steps=150, state_keys=["observation.state"], val_episodes=1)
    assert summary["final_train_loss"] < summary["initial_train_loss"]
    policy = load_policy(tmp_path / "ckpt")
    assert policy.spec.state_keys == ("observation.state",) and policy.spec.action_dim == 26
    runner = PolicyRunner(policy, fps=30, realtime=False, record_source=False, max_step=100.0)
    runner.connect()
    runner.start_episode()
    with EpisodeReader(native / "episodes" / "episode_000009.h5") as reader:
        state, action = reader.numeric("observation.state"), reader.numeric("action")
    out = np.stack([runner.step({"observation.state": state[t]})[0] for t in range(20)])
    runner.disconnect()
    assert out.shape == (20, 26) and np.isfinite(out).all()
    # Held-out episode: the policy's actions are nearer the recorded ones than a constant guess is.
    assert np.abs(out - action[:20]).mean() < np.abs(action[:20] - action.mean(0)).mean() + 1e-9
