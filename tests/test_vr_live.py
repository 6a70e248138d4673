"""The live OpenXR path end to end against a real runtime.

Monado, built from source by scripts/vr_runtime.sh, is loaded in-process by the OpenXR loader of
the client we test (the CLI, one subprocess per test); a feeder (monado_remote.py) sends a
scripted controller trajectory to Monado's `remote` driver over TCP, and we check what
`telecorder vr-record` and `collect --device vr --robot sim` made of it. The remote driver's
tracking origin is the STAGE space, so what is fed is what OpenXR must report, untransformed.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from monado_remote import (
    DRIVER_LEFT,
    DRIVER_RIGHT,
    FeederThread,
    Frame,
    HandState,
    monado_manifest,
    port_lock,
)
from monado_remote import runtime_env as make_env
from test_cli import _assert_one_clear_error, run, tool

pytest.importorskip("xr")

POS_TOL_M = 1e-3
ANGLE_TOL_DEG = 1.0
# How late the runtime may report what was sent (TCP on loopback, the driver's reader thread, a
# client tick) for the clock check; generous because the machine is shared.
LATENCY_S = 0.5


def quat(axis: tuple[float, float, float], degrees: float) -> tuple[float, float, float, float]:
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    h = math.radians(degrees) / 2
    return (*(a * math.sin(h)), math.cos(h))


def rotation_deg(r1: np.ndarray, r2: np.ndarray) -> float:
    c = (np.trace(r1 @ r2.T) - 1) / 2
    return math.degrees(math.acos(float(np.clip(c, -1.0, 1.0))))


@pytest.fixture(scope="module")
def manifest() -> Path:
    return monado_manifest()


@pytest.fixture
def remote_env(manifest: Path):
    with port_lock():
        yield make_env(manifest, "remote")


class Client:
    """A CLI subprocess whose output is read as it comes (Monado logs a lot to stderr)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env=env)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._drain, args=(s, buf), daemon=True)
                         for s, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _drain(stream, buf: list[str]) -> None:
        for line in stream:
            buf.append(line)

    def wait_for_output(self, text: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.out):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.finish(5)
                pytest.fail(f"never printed {text!r}; rc {self.proc.returncode}\n{self.report()}")
            time.sleep(0.05)

    def wait_for_feeder(self, feeder: FeederThread, timeout_s: float = 120.0) -> None:
        """Until the feeder is connected to the runtime this client loaded; fails at once if it exits."""
        deadline = time.monotonic() + timeout_s
        while not feeder.connected.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.finish(5)
                pytest.fail(f"the feeder never reached the runtime; rc {self.proc.returncode}\n{self.report()}")
        if feeder.error is not None:
            self.finish(5)
            pytest.fail(f"feeder: {feeder.error!r}\n{self.report()}")

    def finish(self, timeout_s: float = 120.0) -> int:
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(30)
        for t in self._readers:
            t.join(10)
        return rc

    def report(self) -> str:
        return "stdout:\n" + "".join(self.out) + "\nstderr (tail):\n" + "".join(self.err[-40:])


# -- a runtime without XR_MND_headless: one clear error naming it

def test_runtime_without_headless_is_named_in_one_clear_error(manifest: Path, tmp_path: Path):
    # The same Monado built with XRT_FEATURE_OPENXR_HEADLESS off (scripts/vr_runtime.sh makes both).
    other = manifest.parent / "openxr_monado-noheadless.json"
    assert other.is_file(), f"{other} is missing: rerun scripts/vr_runtime.sh"
    env = make_env(other, config=None)
    for cmd in ([tool("telecorder"), "vr-record", str(tmp_path / "x.jsonl"), "--seconds", "1"],
                [tool("collect"), "--device", "vr", "--robot", "sim", "--episodes", "1", "--sim-cameras", "none",
                 "--out", str(tmp_path / "demos")]):
        proc = run(*cmd, extra_env=env, timeout=300)
        _assert_one_clear_error(proc, "does not offer XR_MND_headless", "'Monado without XR_MND_headless'",
                                str(other), "export XR_RUNTIME_JSON=")
    assert not (tmp_path / "x.jsonl").exists()


# -- vr-record: what OpenXR reports is what was fed

def _hand_expectation(h: HandState) -> dict:
    if not h.active:
        # The driver reports an inactive controller untracked, its inputs at rest.
        return {"valid": False, "pose": None, "squeeze": 0.0, "trigger": 0.0,
                "buttons": {"a": False, "b": False, "x": False, "y": False, "menu": False}}
    return {"valid": True, "pose": h.matrix(), "squeeze": float(np.float32(h.squeeze)),
            "trigger": float(np.float32(h.trigger)),
            "buttons": {"a": h.a, "b": h.b, "x": False, "y": False, "menu": False}}


def _record_keyframes() -> list[Frame]:
    return [
        Frame(left=HandState((-0.25, 1.1, -0.4), quat((1, 0, 0), 10)),
              right=HandState((0.25, 1.1, -0.4), quat((0, 1, 0), -20), squeeze=0.25)),
        Frame(left=HandState((-0.3, 1.0, -0.35), quat((0, 1, 0), 35), squeeze=1.0, b=True),
              right=HandState((0.1, 0.95, -0.35), quat((0, 0, 1), 30), trigger=0.5, a=True)),
        Frame(left=HandState((-0.2, 1.25, -0.45), quat((1, 0, 1), -25), trigger=0.25, a=True),
              right=HandState((0.05, 1.2, -0.5), quat((1, 1, 0), 45), squeeze=0.75, trigger=1.0, b=True)),
        # The right controller loses tracking; the left keeps going.
        Frame(left=HandState((-0.22, 1.2, -0.4), quat((1, 0, 1), -25), trigger=0.25),
              right=HandState((0.05, 1.2, -0.5), active=False)),
        Frame(left=HandState((-0.22, 1.2, -0.4), quat((0, 1, 1), 80), squeeze=0.5),
              right=HandState((0.3, 1.05, -0.2), quat((0, 1, 1), -60), a=True, b=True)),
    ]


def _hand_pose_error(got: dict, exp: dict) -> tuple[float, float] | None:
    """Position (m) and angle (deg) error of one hand, or None if its validity differs."""
    if got["valid"] != exp["valid"]:
        return None
    if not exp["valid"]:
        return None if got["pose"] is not None else (0.0, 0.0)
    m = np.asarray(got["pose"], dtype=float).reshape(4, 4)
    return (float(np.linalg.norm(m[:3, 3] - exp["pose"][:3, 3])), rotation_deg(m[:3, :3], exp["pose"][:3, :3]))


def _inputs_match(got: dict, exp: dict) -> bool:
    return (got["squeeze"], got["trigger"], got["buttons"]) == (exp["squeeze"], exp["trigger"], exp["buttons"])


def test_vr_record_reports_what_the_controllers_fed(remote_env, tmp_path: Path):
    keyframes = _record_keyframes()
    states = [Frame(left=HandState(DRIVER_LEFT), right=HandState(DRIVER_RIGHT)), *keyframes]
    out = tmp_path / "live.jsonl"
    feeder = FeederThread([(0.4, f) for f in keyframes])
    feeder.start()
    client = Client([tool("telecorder"), "vr-record", str(out), "--seconds", "120"], remote_env)
    try:
        client.wait_for_output("recording controller poses")
        client.wait_for_feeder(feeder)
        feeder.go.set()
        feeder.finish()
        time.sleep(0.2)  # a few samples of the last keyframe
        client.proc.send_signal(signal.SIGINT)  # Ctrl-C ends a recording cleanly
        rc = client.finish()
    finally:
        feeder.close()
        if client.proc.poll() is None:
            client.proc.kill()
    assert rc == 0, client.report()
    assert feeder.disconnected_at is None, "the runtime went away while recording"
    lines = [json.loads(s) for s in out.read_text().splitlines()]
    assert any(f"wrote {len(lines)} samples" in s for s in client.out), client.report()
    # The remote driver's controllers come as Valve Index controllers, which the client binds.
    index = "/interaction_profiles/valve/index_controller"
    assert f"controllers: left {index}, right {index}\n" in client.out, client.report()
    assert any("system Monado: Remote HMD" in s for s in client.out), client.report()

    t = np.array([line["t"] for line in lines])
    assert np.all(np.diff(t) > 0), "timestamps must increase"

    # Each controller is its own tracked device, located by its own xrLocateSpace: when the feed
    # changes between the two calls, one sample holds the left hand of one keyframe and the right
    # hand of the next (as two real controllers would). So every hand is matched on its own.
    pose_idx: dict[str, list[int]] = {"left": [], "right": []}
    input_idx: dict[str, list[int]] = {"left": [], "right": []}
    pos_err, ang_err = [], []
    for i, line in enumerate(lines):
        for hand in ("left", "right"):
            exp = [_hand_expectation(getattr(s, hand)) for s in states]
            got = line[hand]
            matches = [(k, e) for k, x in enumerate(exp) if (e := _hand_pose_error(got, x)) is not None
                       and e[0] <= POS_TOL_M and e[1] <= ANGLE_TOL_DEG]
            assert len(matches) == 1, (f"line {i + 1} (t={line['t']:.3f}): the {hand} pose matches fed "
                                       f"keyframes {matches}: {got}")
            k, (dp, da) = matches[0]
            pose_idx[hand].append(k)
            if exp[k]["valid"]:
                pos_err.append(dp)
                ang_err.append(da)
            inputs = [j for j, x in enumerate(exp) if _inputs_match(got, x)]
            assert inputs, f"line {i + 1}: {hand} squeeze/trigger/buttons match nothing fed: {got}"
            # Buttons are read at the action sync and poses at the locate, a moment apart: at a
            # keyframe change they may come from neighbouring keyframes, never from further apart.
            near = [j for j in inputs if abs(j - k) <= 1]
            assert near, f"line {i + 1}: {hand} inputs of keyframe(s) {inputs} with the pose of keyframe {k}"
            input_idx[hand].append(k if k in near else near[0])
        lk, rk = pose_idx["left"][-1], pose_idx["right"][-1]
        assert abs(lk - rk) <= 1, f"line {i + 1}: left hand of keyframe {lk}, right hand of keyframe {rk}"
    both = np.ones(len(lines), dtype=bool)
    for hand in ("left", "right"):
        p, q = np.array(pose_idx[hand]), np.array(input_idx[hand])
        assert np.all(np.diff(p) >= 0), f"{hand} poses went back in time: {pose_idx[hand]}"
        assert np.all(np.diff(q) >= 0), f"{hand} inputs went back in time: {input_idx[hand]}"
        both &= p == q
    for k in range(1, len(states)):
        n = int(np.sum(both & (np.array(pose_idx["left"]) == k) & (np.array(pose_idx["right"]) == k)))
        assert n >= 3, f"keyframe {k} appears whole in only {n} samples"

    # The stream's clock is the feeder's (both monotonic): one recording start must explain every
    # sample, seen no earlier than its keyframe was sent and no later than the next one (+ latency).
    seen = [(ti, k) for hand in ("left", "right") for ti, k in zip(t, pose_idx[hand], strict=True)]
    lower = max(feeder.started_ns[k - 1] / 1e9 - ti for ti, k in seen if k >= 1)
    upper = min(feeder.sent_ns[k] / 1e9 + LATENCY_S - ti for ti, k in seen if k < len(keyframes))
    assert lower <= upper, f"sample times disagree with the feed by {lower - upper:.3f} s beyond {LATENCY_S} s"
    print(f"vr-record round trip: {len(lines)} samples, pose error max {1e3 * max(pos_err):.4f} mm, "
          f"{max(ang_err):.4f} deg")


# -- collect: the sim arm follows the fed controller through the clutch mapping

C0 = np.array([0.1, 1.0, -0.3])
IDLE_S = 4.0  # controller at rest while collect connects and starts its episode


def _collect_keyframes() -> list[tuple[float, Frame]]:
    def right(pos, q=(0.0, 0.0, 0.0, 1.0), **kw) -> Frame:
        return Frame(right=HandState(tuple(C0 + np.asarray(pos)), q, **kw))

    moved = (0.2, 0.25, 0.2)
    return [
        (IDLE_S, right((0, 0, 0))),
        (0.6, right((0, 0, 0), squeeze=1.0)),  # clutch pressed: anchors
        (0.9, right((0, 0, -0.06), squeeze=1.0)),  # forward 6 cm: robot +x
        (0.9, right((0, 0.05, -0.06), squeeze=1.0)),  # up 5 cm: robot +z
        (0.9, right((0.04, 0.05, -0.06), quat((0, 1, 0), 15), squeeze=1.0)),  # right 4 cm: robot -y; yaw 15 deg
        (0.7, right(moved, quat((1, 0, 0), 40))),  # clutch released, hand moves away: the arm holds
        (1.2, right(moved, quat((1, 0, 0), 40), trigger=1.0)),  # trigger: gripper closes
        (0.5, right(moved, quat((1, 0, 0), 40), trigger=1.0, a=True)),  # save
        (0.5, right(moved, quat((1, 0, 0), 40), trigger=1.0)),
    ]


def feed_collect(keyframes: list, args: list[str], env: dict[str, str]) -> tuple[FeederThread, Client, int]:
    """Run one ``collect --device vr`` episode against the runtime while the feeder plays ``keyframes``."""
    feeder = FeederThread(keyframes)
    feeder.start()
    client = Client([tool("collect"), "--device", "vr", "--episodes", "1", "--episode-time", "60", "--reset-time", "0",
                     "--sim-cameras", "none", *args], env)
    try:
        client.wait_for_feeder(feeder)
        feeder.go.set()
        feeder.finish()
        rc = client.finish(120)
    finally:
        feeder.close()
        if client.proc.poll() is None:
            client.proc.kill()
    return feeder, client, rc


def test_collect_live_vr_follows_the_fed_controller(remote_env, tmp_path: Path):
    from telecorder.collect.devices.vr import AXIS_PRESETS
    from telecorder.datasets import Dataset
    from telecorder.sim import Kinematics, SimEnv

    keyframes = _collect_keyframes()
    out = tmp_path / "demos"
    feeder, client, rc = feed_collect(keyframes, ["--robot", "sim", "--fps", "30", "--out", str(out)], remote_env)
    assert rc == 0, client.report()
    # The save button ("a", keyframe 7) ended the session, which closed the runtime.
    assert feeder.disconnected_at in (7, 8), f"the runtime went away at keyframe {feeder.disconnected_at}"

    ds = Dataset.open(out)
    assert len(ds.episode_indices) == 1, client.report()
    env = SimEnv()
    kin = Kinematics(env.model)
    with ds.episode(ds.episode_indices[0]) as ep:
        t = ep.timestamps()
        cmd = ep.numeric("action_eef").astype(np.float64)
        state = ep.numeric("observation.state").astype(np.float64)
        start_unix = float(ep.attrs["start_time_unix"])
    fk = [kin.fk(np.delete(s, env.gripper_index)) for s in state]
    measured = np.array([p for p, _ in fk])
    grip = state[:, env.gripper_index]
    tick_unix = start_unix + t
    starts = [*feeder.started_unix, math.inf]

    def window(k: int, settle: float = 0.25, before_next: float = 0.1) -> np.ndarray:
        w = (tick_unix >= starts[k] + settle) & (tick_unix <= starts[k + 1] - before_next)
        assert w.sum() >= 3, f"keyframe {k}: only {int(w.sum())} ticks recorded in its window"
        return w

    assert start_unix < starts[1] - 0.3, (
        f"the episode started {start_unix - starts[1]:+.2f} s after the clutch was pressed; raise IDLE_S")
    # The save button ended the episode: shortly after it was pressed, long before --episode-time.
    assert starts[7] - 0.1 <= tick_unix[-1] and t[-1] < 30, f"episode ended at t={t[-1]:.2f} s"

    a = AXIS_PRESETS["openxr_to_robot"]
    ctrl = [np.asarray(f.right.position) for _, f in keyframes]
    rot = [f.right.matrix()[:3, :3] for _, f in keyframes]
    # Before the clutch: the target stays where the arm started.
    idle = tick_unix < starts[1]
    assert np.ptp(cmd[idle, :3], axis=0).max() < 1e-6
    # Clutched: the target moves by the controller's motion since the clutch, in robot axes.
    ref = cmd[window(1)][-1]
    pos_err, rot_err = [], []
    for k in (2, 3, 4):
        w = window(k)
        expected = ref[:3] + a @ (ctrl[k] - ctrl[1])
        pos_err.append(np.abs(cmd[w, :3] - expected).max())
        r_cmd = _euler_to_matrix(cmd[w][-1, 3:6])
        r_expected = a @ (rot[k] @ rot[1].T) @ a.T @ _euler_to_matrix(ref[3:6])
        rot_err.append(rotation_deg(r_cmd, r_expected))
        # The arm got there (IK + position servos) by the end of the hold.
        last = np.flatnonzero(w)[-1]
        reach = np.linalg.norm(measured[last] - cmd[last, :3])
        assert reach < 0.01, f"keyframe {k}: the end effector is {1e3 * reach:.1f} mm from its target"
    assert max(pos_err) < POS_TOL_M, f"target off the mapped controller path by {1e3 * max(pos_err):.3f} mm"
    assert max(rot_err) < ANGLE_TOL_DEG, f"target rotation off by {max(rot_err):.3f} deg"
    held = cmd[window(4)][-1]
    # Released: the hand moved away and turned, the target did not.
    for k in (5, 6):
        assert np.abs(cmd[window(k), :6] - held[:6]).max() < 1e-6, f"target moved with the clutch released (k={k})"
    assert np.abs(cmd[tick_unix > starts[5], :6] - held[:6]).max() < 1e-6, "target moved after the release"
    # Trigger: gripper command open (1) before, closed (0) after, and the sim gripper closes.
    assert np.all(cmd[window(5), 6] == 1.0) and np.all(cmd[window(6, settle=0.1), 6] == 0.0)
    g_open, g_closed = grip[window(5)][-1], grip[window(6)][-1]
    assert g_closed < g_open - 0.1 * max(abs(g_open), 1e-3), f"gripper state {g_open:.3f} -> {g_closed:.3f}"
    print(f"collect live VR: {len(t)} ticks, target error max {1e3 * max(pos_err):.4f} mm, "
          f"{max(rot_err):.4f} deg; gripper {g_open:.3f} -> {g_closed:.3f}")


def _euler_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """Inverse of eef_teleop.rotation_to_euler_xyz: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx
