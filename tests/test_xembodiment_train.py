"""One BC policy for two robots: ``telecorder train --mixture``, the checkpoint's embodiments, the runner's choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mujoco", reason="recording the two robots needs the sim extra (MuJoCo)")
pytest.importorskip("torch", reason="training needs torch")

from test_cli import run, tool

from telecorder.policies.base import PolicyError
from telecorder.policies.checkpoint import load_policy_dir
from telecorder.policies.embodiments import MixturePolicy

ARM, PAIR = "telecorder_sim_arm", "telecorder_sim_bimanual"


def _record(out: Path, scene: str, seconds: str) -> Path:
    run(tool("collect"), "--device", "scripted", "--robot", "sim", "--scene", scene, "--no-realtime", "--env-state",
        "--sim-cameras", "none", "--episodes", "3", "--episode-time", seconds, "--reset-time", "0", "--seed", "0",
        "--out", str(out), check=True, timeout=600)
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xe")
    arm = _record(root / "arm", "pick", "4")
    pair = _record(root / "pair", "bimanual", "9")
    ckpt = root / "mixed"
    proc = run(tool("telecorder"), "train", str(arm), str(pair), "--mixture", "uniform", "--steps", "150",
               "--val-episodes", "1", "--out", str(ckpt), check=True, timeout=600)
    assert "mixture of 2 dataset(s)" in proc.stdout
    return {"arm": arm, "pair": pair, "ckpt": ckpt, "root": root}


def test_checkpoint_lists_both_robots_with_their_widths(mixed: dict[str, Path]) -> None:
    meta = json.loads((mixed["ckpt"] / "policy.json").read_text())
    emb = {e["name"]: e for e in meta["embodiments"]}
    assert set(emb) == {ARM, PAIR}
    assert (emb[ARM]["spec"]["action_dim"], emb[ARM]["state_dim"]) == (6, 13)  # 6 joints + cube pose 7
    assert (emb[PAIR]["spec"]["action_dim"], emb[PAIR]["state_dim"]) == (12, 19)
    assert emb[PAIR]["spec"]["action_names"][:2] == ["left_shoulder_pan", "left_shoulder_lift"]
    assert meta["state_width"] == 19 and meta["model"]["state_dim"] == 19 + 2 and meta["model"]["action_dim"] == 12
    mix = meta["training"]["mixture"]
    assert mix["sampling_weights"] == [0.5, 0.5]
    # Each robot normalized with its own statistics: the arm's normalizer has 6 dimensions, the pair's 12.
    assert len(emb[ARM]["action_normalizer"]["stats"]["min"]) == 6
    assert len(emb[PAIR]["action_normalizer"]["stats"]["min"]) == 12


def test_the_runner_gets_each_robots_own_policy(mixed: dict[str, Path]) -> None:
    policy = load_policy_dir(mixed["ckpt"])
    assert isinstance(policy, MixturePolicy)
    pair = policy.for_robot(PAIR)
    arm = policy.for_robot("some_other_name", ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex",
                                                "wrist_roll", "gripper"])  # by action names
    assert arm.entry.name == ARM
    out_pair = pair.predict({"state": np.zeros((1, 19), np.float32)})
    out_arm = arm.predict({"state": np.zeros((1, 13), np.float32)})
    assert out_pair.shape == (20, 12) and out_arm.shape == (20, 6)
    assert np.isfinite(out_pair).all() and np.isfinite(out_arm).all()
    # The embodiment id is an input: the same padded state gives the two robots different first six actions
    # (normalized differently, and the model told which robot it drives).
    assert not np.allclose(pair.predict({"state": np.zeros((1, 19), np.float32)})[:, :6], out_arm)
    with pytest.raises(PolicyError, match=r"not trained for robot 'ur5'.*telecorder_sim_arm.*telecorder_sim_bimanual"):
        policy.for_robot("ur5", ["a"] * 7)
    with pytest.raises(PolicyError, match=r"'state' must be \[history, 19\]"):
        pair.predict({"state": np.zeros((1, 13), np.float32)})


@pytest.mark.parametrize("scene", ["pick", "bimanual"])
def test_eval_drives_both_robots_with_one_checkpoint(mixed: dict[str, Path], scene: str) -> None:
    proc = run(tool("telecorder"), "eval", str(mixed["ckpt"]), "--scene", scene, "--episodes", "1",
               "--episode-time", "3", "--json", check=True, timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 1 and result["steps"] > 0


def test_damaged_embodiments_are_one_error_naming_the_file(mixed: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    good = json.loads((mixed["ckpt"] / "policy.json").read_text())
    arm = good["embodiments"][0]
    slots = [
        [{**arm, "state_slots": [0] * 13}, good["embodiments"][1]],  # two values in one place
        [{**arm, "state_slots": [10**9] * 13}, good["embodiments"][1]],  # far outside the model
        [{**arm, "state_slots": list(range(5))}, good["embodiments"][1]],  # fewer than its state
        [{**arm, "id": 7}, good["embodiments"][1]],  # an id the one-hot has no place for
    ]
    damages = [{"embodiments": "x"}, {"embodiments": []}, {"state_width": "19"}, {"state_width": 5},
               *({"embodiments": e} for e in slots)]
    for damage in damages:
        bad = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        shutil.copytree(mixed["ckpt"], bad)
        meta = json.loads((bad / "policy.json").read_text())
        meta.update(damage)
        (bad / "policy.json").write_text(json.dumps(meta))
        with pytest.raises(PolicyError, match=r"policy\.json"):
            load_policy_dir(bad)


def test_mixture_cli_errors_are_one_line(mixed: dict[str, Path], tmp_path: Path) -> None:
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({str(mixed["arm"]): 1.0, str(mixed["pair"]): float("nan")}).replace("NaN", "-1"))
    cases = [
        (["--mixture", str(weights)], "weight must be finite and >= 0"),
        (["--mixture", str(tmp_path / "missing.json")], "no such mixture file"),
        ([str(mixed["arm"]), str(mixed["pair"]), "--mixture", "steps", "--policy", "vla", "--head", "bins"],
         "--head bins does not train on mixtures"),
        ([str(mixed["arm"]), str(mixed["pair"]), "--mixture", "steps", "--obs", "images"], "state variant only"),
    ]
    for extra, message in cases:
        proc = run(tool("telecorder"), "train", *extra, "--out", str(tmp_path / "out"), "--steps", "5")
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_mixture_file_lists_datasets_with_weights_and_names(mixed: dict[str, Path], tmp_path: Path) -> None:
    spec = tmp_path / "mix.json"
    spec.write_text(json.dumps([{"path": str(mixed["arm"]), "weight": 3.0, "name": "so100"},
                                [str(mixed["pair"]), 1.0]]))
    out = tmp_path / "ckpt"
    run(tool("telecorder"), "train", "--mixture", str(spec), "--steps", "20", "--val-episodes", "0", "--out", str(out),
        check=True, timeout=600)
    meta = json.loads((out / "policy.json").read_text())
    assert [e["name"] for e in meta["embodiments"]] == ["so100", PAIR]
    assert meta["training"]["mixture"]["sampling_weights"] == [0.75, 0.25]


@pytest.mark.parametrize("head", ["l1", "flow"])
def test_the_vla_trains_on_both_robots(mixed: dict[str, Path], tmp_path: Path, head: str) -> None:
    ckpt = tmp_path / f"vla_{head}"
    proc = run(tool("telecorder"), "train", str(mixed["arm"]), str(mixed["pair"]), "--mixture", "uniform",
               "--policy", "vla", "--head", head, "--steps", "30", "--width", "32", "--layers", "1",
               "--decoder-layers", "1", "--val-episodes", "0", "--out", str(ckpt), check=True, timeout=600)
    assert "mixture of 2 dataset(s)" in proc.stdout
    meta = json.loads((ckpt / "policy.json").read_text())
    assert meta["kind"] == "vla" and [e["name"] for e in meta["embodiments"]] == [ARM, PAIR]
    # One token per state feature (the arm's joints inside the pair's), one for the cube, one for the robot id.
    assert meta["model"]["state_groups"] == [list(range(12)), list(range(12, 19)), [19, 20]]
    policy = load_policy_dir(ckpt)
    assert isinstance(policy, MixturePolicy)
    for name, width, actions in ((ARM, 13, 6), (PAIR, 19, 12)):
        out = policy.for_robot(name).predict({"state": np.zeros((1, width), np.float32),
                                              "language_instruction": "pick up the cube"})
        assert out.shape == (meta["spec"]["horizon"], actions) and np.isfinite(out).all()
    result = run(tool("telecorder"), "eval", str(ckpt), "--scene", "bimanual", "--episodes", "1", "--episode-time",
                 "2", "--json", check=True, timeout=600)
    assert json.loads(result.stdout.strip().splitlines()[-1])["episodes"] == 1
