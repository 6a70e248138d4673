"""The command line as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(*args: str, check: bool = False, timeout: float = 300,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "COLUMNS": "120", **(extra_env or {})}
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
            # Rendered cameras capture the state of every tick: stamped with its time, never repeated or dropped.
            c = sync["cameras"][cam]
            assert (c["age_max"], c["repeated"], c["skipped"]) == (0, 0, 0), c
        assert not [w for w in ep["warnings"] if "camera" in w], ep["warnings"]

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


@pytest.mark.parametrize("command", [["telecorder", "collect"], ["telecorder", "info"], ["telecorder", "doctor"], ["telecorder", "stats"], ["telecorder", "convert"], ["telecorder", "view"], ["telecorder", "export"], ["telecorder", "emulate"], ["telecorder", "calibrate"], ["telecorder", "tokenizer"], ["telecorder", "vr-record"],
                                     ["telecorder", "replay"], ["telecorder", "train"], ["telecorder", "eval"], ["telecorder", "edit"],
                                     ["collect"]])
def test_help_has_examples(command):
    proc = run(tool(command[0]), *command[1:], "--help", check=True)
    assert "examples:" in proc.stdout


class _PtyProcess:
    """A command whose stdin is a real terminal (a pseudo-terminal we hold the other end of).

    Output is read by a thread into a queue: select() on a buffered pipe misses lines that
    are already in Python's buffer.
    """

    def __init__(self, args: list[str]) -> None:
        import pty
        import queue
        import threading

        self.master, slave = pty.openpty()
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        self.proc = subprocess.Popen(args, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        os.close(slave)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, fragment: str, timeout: float = 60) -> None:
        import queue
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            if fragment in line:
                return
        raise AssertionError(f"no line with {fragment!r}; output so far:\n{self.output}")

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 60) -> int:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.master)
        while True:
            line = self.lines.get(timeout=10)
            if line is None:
                break
            self.seen.append(line)
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "".join(self.seen)


@pytest.mark.slow
def test_session_keys_in_a_terminal(tmp_path):
    pytest.importorskip("mujoco")
    import time

    out = tmp_path / "keys"
    term = _PtyProcess([tool("collect"), "--script", "sweep", "--episodes", "5", "--episode-time", "60",
                        "--reset-time", "0", "--sim-cameras", "front", "--camera-size", "96x72", "--out", str(out)])
    term.wait_for("keys:")
    time.sleep(1.0)
    term.send(b"r")  # discard the first take
    term.wait_for("discarded")
    time.sleep(1.0)
    term.send(b"\x1b[C")  # right arrow: save
    term.wait_for("episode 0:")
    time.sleep(1.0)
    term.send(b"q")  # save and quit
    assert term.finish() == 0, term.output
    info = json.loads(run(tool("telecorder"), "info", str(out), "--json", "--episodes", check=True).stdout)
    assert info["episodes"] == 2, term.output
    assert [e["episode_index"] for e in info["episode_list"]] == [0, 1], "the re-take reuses the discarded number"
    assert all(e["length"] >= 25 for e in info["episode_list"])


@pytest.mark.slow
def test_ctrl_c_mid_episode_keeps_saved_episodes(tmp_path):
    pytest.importorskip("mujoco")
    import signal
    import time

    out = tmp_path / "interrupted"
    term = _PtyProcess([tool("collect"), "--episodes", "5", "--episode-time", "10", "--reset-time", "0",
                        "--sim-cameras", "front", "--camera-size", "96x72", "--seed", "1", "--out", str(out)])
    term.wait_for("episode 0:")
    time.sleep(1.5)  # well inside episode 1
    term.proc.send_signal(signal.SIGINT)
    code = term.finish()
    text = term.output
    assert code == 130, text
    assert "Traceback" not in text
    assert "episode in progress was discarded" in text
    ds = json.loads(run(tool("telecorder"), "info", str(out), "--json", check=True).stdout)
    assert ds["episodes"] == 1
    assert not list((out / "episodes").glob(".*partial*"))
    assert run(tool("telecorder"), "doctor", str(out)).returncode == 0


@pytest.mark.slow
def test_user_mjcf_arm_with_sweep(tmp_path):
    pytest.importorskip("mujoco")
    model = tmp_path / "two_link.xml"
    model.write_text("""
<mujoco model="two_link">
  <worldbody>
    <light pos="0 0 2"/>
    <geom type="plane" size="1 1 0.1"/>
    <body name="l1" pos="0 0 0.1">
      <joint name="base" type="hinge" axis="0 0 1" range="-1.5 1.5"/>
      <geom type="capsule" fromto="0 0 0 0.2 0 0" size="0.02"/>
      <body name="l2" pos="0.2 0 0">
        <joint name="elbow" type="hinge" axis="0 1 0" range="-1 1"/>
        <geom type="capsule" fromto="0 0 0 0.15 0 0" size="0.015"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <position joint="base" kp="20" ctrlrange="-1.5 1.5"/>
    <position joint="elbow" kp="10" ctrlrange="-1 1"/>
  </actuator>
</mujoco>""")
    out = tmp_path / "user_arm"
    proc = run(tool("collect"), "--robot-model", str(model), "--episodes", "1", "--episode-time", "1",
               "--camera-size", "96x72", "--out", str(out))
    assert proc.returncode == 2 and "--script sweep" in proc.stderr, proc.stderr
    run(tool("collect"), "--robot-model", str(model), "--script", "sweep", "--episodes", "1", "--episode-time", "1.5",
        "--camera-size", "96x72", "--out", str(out), check=True)
    info = json.loads(run(tool("telecorder"), "info", str(out), "--json", check=True).stdout)
    assert info["robot_type"] == "mujoco:two_link"
    assert info["features"]["action"]["names"] == ["base", "elbow"]
    assert any(k.startswith("observation.images.") for k in info["features"]), "a default camera is added"
    assert run(tool("telecorder"), "doctor", str(out)).returncode == 0


def test_stats_command(small_dataset):
    root, _, _ = small_dataset
    human = run(tool("telecorder"), "stats", str(root), check=True).stdout
    assert "observation.state" in human and "j0" in human and "q99" in human
    data = json.loads(run(tool("telecorder"), "stats", str(root), "--json", check=True).stdout)
    assert data["action"]["count"] == 12 + 20 + 7 and len(data["action"]["mean"]) == 4


def test_error_lines_keep_brackets_and_stay_on_one_line(tmp_path):
    # A path with brackets (and an extra's name such as telecorder[beam]) is text, not rich markup.
    missing = tmp_path / ("no[beam]" + "x" * 120) / "ds[bold]"
    proc = run(tool("telecorder"), "info", str(missing))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(missing) in lines[0], proc.stderr
