"""The command line as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(*args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "COLUMNS": "120"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def tool(name: str) -> str:
    return str(BIN / name)


@pytest.mark.slow
def test_collect_info_doctor_end_to_end(tmp_path):
    pytest.importorskip("mujoco")
    out = tmp_path / "demos"
    proc = run(tool("collect"), "--device", "scripted", "--robot", "sim", "--episodes", "2", "--episode-time", "10",
               "--reset-time", "0", "--camera-size", "160x120", "--seed", "3", "--out", str(out), check=True)
    assert "episode 0:" in proc.stdout and "episode 1:" in proc.stdout
    assert "2 episode(s) saved" in proc.stdout

    info = json.loads(run(tool("telecorder"), "info", str(out), "--json", check=True).stdout)
    assert info["episodes"] == 2 and info["robot_type"] == "telecorder_sim_arm"
    assert info["success_rate"] == 1.0, "the scripted expert should succeed on these seeds"
    assert info["tasks"] == {"pick up the cube": 2}
    assert set(info["features"]) == {"observation.state", "action", "observation.images.front",
                                     "observation.images.wrist"}
    assert info["features"]["observation.images.front"]["shape"] == [120, 160, 3]

    human = run(tool("telecorder"), "info", str(out), "--episodes", check=True).stdout
    assert "pick up the cube" in human and "shoulder_pan" in human

    doc = run(tool("telecorder"), "doctor", str(out), "--json")
    report = json.loads(doc.stdout)
    assert doc.returncode == 0 and report["ok"], report["errors"]
    for ep in report["episodes"]:
        sync = ep["sync"]
        assert abs(sync["achieved_fps"] - 30) < 1.5
        for cam in ("front", "wrist"):
            assert sync["cameras"][cam]["age_p99"] < 2 / 30

    # Appending needs --resume; with it the numbering continues.
    again = run(tool("collect"), "--episodes", "1", "--episode-time", "10", "--reset-time", "0",
                "--camera-size", "160x120", "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    run(tool("collect"), "--episodes", "1", "--episode-time", "10", "--reset-time", "0",
        "--camera-size", "160x120", "--out", str(out), "--resume", check=True)
    info = json.loads(run(tool("telecorder"), "info", str(out), "--json", check=True).stdout)
    assert info["episodes"] == 3

    wrong = run(tool("collect"), "--episodes", "1", "--episode-time", "1", "--camera-size", "320x240",
                "--out", str(out), "--resume")
    assert wrong.returncode == 2 and "cannot append" in wrong.stderr and "observation.images.front" in wrong.stderr


def _assert_one_clear_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 or lines[0].startswith("error:"), proc.stderr
    for f in fragments:
        assert f in proc.stderr.replace("\n", ""), (f, proc.stderr)


@pytest.mark.parametrize("command", ["info", "doctor"])
def test_non_dataset_folder(tmp_path, command):
    (tmp_path / "photos").mkdir()
    _assert_one_clear_error(run(tool("telecorder"), command, str(tmp_path / "photos")), "not a telecorder dataset")
    _assert_one_clear_error(run(tool("telecorder"), command, str(tmp_path / "missing")), "no such")


def test_truncated_episode_and_wrong_version(small_dataset):
    root, _, _ = small_dataset
    ep = root / "episodes/episode_000001.h5"
    ep.write_bytes(ep.read_bytes()[:2000])
    doc = run(tool("telecorder"), "doctor", str(root))
    assert doc.returncode == 1
    assert "episode_000001.h5: cannot be read as HDF5" in doc.stdout.replace("\n", "")
    assert "Traceback" not in doc.stdout + doc.stderr

    info = json.loads((root / "meta/info.json").read_text())
    info["format_version"] = "7.2"
    (root / "meta/info.json").write_text(json.dumps(info))
    for command in ("info", "doctor"):
        _assert_one_clear_error(run(tool("telecorder"), command, str(root)), "format_version '7.2' is not supported")


def test_corrupt_info_json(small_dataset):
    root, _, _ = small_dataset
    (root / "meta/info.json").write_text("{not json")
    _assert_one_clear_error(run(tool("telecorder"), "info", str(root)), "info.json: not valid JSON")


def test_bad_collect_arguments(tmp_path):
    _assert_one_clear_error(run(tool("collect"), "--device", "joystick", "--out", str(tmp_path / "x")),
                            "unknown teleop device 'joystick'")
    _assert_one_clear_error(run(tool("collect"), "--fps", "500", "--out", str(tmp_path / "x")), "up to 200 Hz")
    _assert_one_clear_error(run(tool("collect"), "--camera", "nope", "--out", str(tmp_path / "x")), "NAME=SOURCE")


def test_broken_robot_model_is_a_clear_error(tmp_path):
    pytest.importorskip("mujoco")
    bad = tmp_path / "arm.xml"
    bad.write_text("<mujoco><worldbody><body><geom type='sphere'/></body></worldbody>")
    proc = run(tool("collect"), "--robot-model", str(bad), "--out", str(tmp_path / "x"))
    _assert_one_clear_error(proc, "arm.xml")


@pytest.mark.parametrize("command", [["telecorder", "collect"], ["telecorder", "info"], ["telecorder", "doctor"],
                                     ["collect"]])
def test_help_has_examples(command):
    proc = run(tool(command[0]), *command[1:], "--help", check=True)
    assert "examples:" in proc.stdout
