"""Policies in the recorder: the chunk schedule, interventions, eval, through the real sim and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_cli import run as cli_run

from telecorder.collect.devices.policy_runner import PolicyRunner
from telecorder.collect.interfaces import Event
from telecorder.evaluation import wilson_interval
from telecorder.policies import Policy, PolicyError, PolicySpec

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def run(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    # The toy policies load as module:factory from the tests folder.
    return cli_run(*args, check=check, extra_env={"PYTHONPATH": str(TESTS), "COLUMNS": "160"})


class Scripted(Policy):
    """Chunks whose actions say which tick they were observed at and which entry they are."""

    def __init__(self, horizon: int = 6, gate: threading.Event | None = None) -> None:
        self.spec = PolicySpec(action_dim=2, horizon=horizon)
        self.gate = gate
        self.calls: list[float] = []

    def predict(self, observation):
        if self.gate is not None:
            assert self.gate.wait(30)
        tick = float(observation["state"][-1][0])
        self.calls.append(tick)
        return np.stack([[tick, j] for j in range(self.spec.horizon)]).astype(np.float64)


def _obs(tick: int) -> dict[str, np.ndarray]:
    return {"observation.state": np.array([tick, 0.0], np.float32)}


def test_chunks_run_in_order_and_a_new_one_is_asked_for_before_the_old_runs_out():
    policy = Scripted(horizon=6)
    runner = PolicyRunner(policy, fps=30, realtime=False, execute_steps=3, max_step=100.0, record_source=False)
    runner.connect()
    runner.start_episode()
    out = [runner.step(_obs(t))[0] for t in range(9)]
    runner.disconnect()
    # Simulated time: a chunk every 3 ticks, each observed at its own tick, executed from its start.
    assert policy.calls == [0.0, 3.0, 6.0]
    assert [tuple(a) for a in out] == [(0, 0), (0, 1), (0, 2), (3, 0), (3, 1), (3, 2), (6, 0), (6, 1), (6, 2)]
    assert runner.held_ticks == 0


def test_a_slow_policy_never_blocks_the_loop_and_late_chunks_skip_the_ticks_gone_by():
    gate = threading.Event()
    policy = Scripted(horizon=6, gate=gate)
    runner = PolicyRunner(policy, fps=30, realtime=True, execute_steps=3, max_step=100.0, record_source=False)
    runner.connect()
    runner.start_episode()
    # The model is stuck: every tick returns at once, holding the measured state.
    held = [runner.step(_obs(t)) for t in range(4)]
    assert all(h for _, h in held) and runner.held_ticks == 4
    np.testing.assert_array_equal(held[-1][0], [0, 0])
    gate.set()
    while runner._inflight is not None and not runner._inflight[2].done():
        runner._inflight[2].result(timeout=30)
    action, was_held = runner.step(_obs(4))
    # The chunk was observed at tick 0; at tick 4 its entry 4 is due (entries 0-3 are history).
    assert not was_held and tuple(action) == (0, 4)
    runner.disconnect()
    assert runner.episode_summary()["policy_held_ticks"] == 4


def test_temporal_ensembling_weights_older_chunks_first():
    class Const(Policy):
        def __init__(self):
            self.spec = PolicySpec(action_dim=1, horizon=4)
            self.n = 0

        def predict(self, observation):
            self.n += 1
            return np.full((4, 1), float(self.n))

    runner = PolicyRunner(Const(), fps=30, realtime=False, ensemble=0.5, max_step=100.0, record_source=False)
    runner.connect()
    runner.start_episode()
    out = [float(runner.step({"observation.state": np.zeros(1)})[0][0]) for _ in range(3)]
    runner.disconnect()
    w = np.exp(-0.5 * np.arange(3))
    assert out[0] == 1.0
    assert out[1] == pytest.approx((w[0] * 1 + w[1] * 2) / w[:2].sum())
    assert out[2] == pytest.approx((w[0] * 1 + w[1] * 2 + w[2] * 3) / w.sum())


def test_policy_commands_obey_the_per_tick_step_limit():
    class Far(Policy):
        spec = PolicySpec(action_dim=2, horizon=3)

        def predict(self, observation):
            return np.full((3, 2), 10.0)

    runner = PolicyRunner(Far(), fps=30, realtime=False, max_step=0.25, record_source=False)
    runner.connect()
    runner.start_episode()
    out = [runner.step({"observation.state": np.zeros(2)})[0] for _ in range(3)]
    runner.disconnect()
    np.testing.assert_allclose(out, [[0.25, 0.25], [0.5, 0.5], [0.75, 0.75]])


def test_the_runner_builds_exactly_the_loaders_item(tmp_path):
    """Train and deploy cannot disagree: the runner's observation of a recorded step equals the loader's item."""
    pytest.importorskip("mujoco")
    pytest.importorskip("torch")
    from telecorder.datasets.episode_file import EpisodeReader
    from telecorder.loaders.torch_dataset import TorchDataset

    out = tmp_path / "demo"
    run(str(BIN / "collect"), "--device", "scripted", "--robot", "sim", "--no-realtime", "--env-state",
        "--sim-cameras", "front", "--camera-size", "64x48", "--episodes", "1", "--episode-time", "2",
        "--seed", "4", "--out", str(out), check=True)
    keys = ("observation.state", "observation.environment_state")
    ds = TorchDataset(out, cameras=["front"], image_size=(32, 40), history=2, horizon=1,
                      normalize="mean_std", state_key=list(keys))
    spec = PolicySpec(action_dim=6, horizon=1, state_keys=keys, cameras=("front",), image_size=(32, 40),
                      history=2, state_normalizer=ds.state_normalizer)

    class Probe(Policy):
        def __init__(self):
            self.spec, self.seen = spec, []

        def predict(self, observation):
            self.seen.append(observation)
            return np.zeros((1, 6))

    from concurrent.futures import Future

    from telecorder.collect.interfaces import Frame
    from telecorder.datasets.images import decode_image

    probe = Probe()
    runner = PolicyRunner(probe, fps=30, realtime=False, execute_steps=1, record_source=False)
    runner.connect()
    runner.start_episode()
    with EpisodeReader(ds.dataset.episode_path(0)) as reader:
        state = reader.numeric("observation.state")
        env = reader.numeric("observation.environment_state")
        for t in range(5):
            fut: Future = Future()
            fut.set_result(Frame(decode_image(reader.encoded_frame("front", t)), 0, t))
            runner.see_frames({"front": fut})
            runner.step({"observation.state": state[t], "observation.environment_state": env[t]})
    runner.disconnect()
    for t in (0, 1, 4):
        item = ds[t]
        seen = probe.seen[t]
        np.testing.assert_array_equal(seen["images.front"], item["images.front"].numpy())
        np.testing.assert_allclose(seen["state"], item["state"].numpy(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(seen["state_is_pad"], item["state_is_pad"].numpy())
        assert seen["language_instruction"] == "" and isinstance(item["language_instruction"], str)
    ds.close()


@pytest.mark.slow
def test_slow_policy_in_collect_holds_and_counts_instead_of_blocking(tmp_path):
    pytest.importorskip("mujoco")
    out = tmp_path / "slow"
    proc = run(str(BIN / "collect"), "--device", "policy", "--policy", "toy_policies:slow", "--robot", "sim",
               "--sim-cameras", "none", "--episodes", "1", "--episode-time", "2", "--reset-time", "0",
               "--out", str(out), check=True)
    rec = json.loads((out / "meta" / "episodes.jsonl").read_text().splitlines()[0])
    # The loop ran every tick of the episode although each inference took longer than a chunk lasts.
    assert rec["length"] == 60, proc.stdout
    assert 0 < rec["policy_held_ticks"] < 60
    assert rec["policy_inference_ms_p50"] >= 300
    with h5py.File(out / "episodes" / "episode_000000.h5") as f:
        action = f["action"][:]
        assert not f["intervention"][:].any()
        assert (f["action_source"][:] == 0).all()
    # Held ticks repeat the last command exactly.
    repeats = int((np.abs(np.diff(action, axis=0)).max(axis=1) == 0).sum())
    assert repeats >= rec["policy_held_ticks"] - 1


@pytest.mark.slow
def test_expert_intervention_labels_exactly_the_steps_it_acted_and_takes_over_smoothly(tmp_path):
    pytest.importorskip("mujoco")
    out = tmp_path / "dagger"
    run(str(BIN / "collect"), "--device", "policy", "--policy", "toy_policies:drift", "--intervene", "expert",
        "--robot", "sim", "--no-realtime", "--sim-cameras", "none", "--episodes", "2", "--episode-time", "8",
        "--seed", "2", "--out", str(out), check=True)
    records = [json.loads(line) for line in (out / "meta" / "episodes.jsonl").read_text().splitlines()]
    for rec in records:
        with h5py.File(out / rec["file"]) as f:
            intervention = f["intervention"][:].ravel()
            source = f["action_source"][:].ravel()
            action = f["action"][:].astype(np.float64)
            state = f["observation/state"][:].astype(np.float64)
        np.testing.assert_array_equal(intervention, source == 1)
        assert rec["human_steps"] == int(intervention.sum()) and rec["policy_steps"] == int((~intervention).sum())
        assert rec["interventions"] >= 1 and rec["human_steps"] > 0
        # The drifting policy's first command moves the base joint by the full step limit...
        assert not intervention[0] and action[0, 0] - state[0, 0] == pytest.approx(0.25, abs=1e-5)
        # ...but the tick the expert takes over ramps: no jump to the expert's plan.
        takeovers = np.flatnonzero(intervention[1:] & ~intervention[:-1]) + 1
        for t in takeovers:
            assert np.abs(action[t] - action[t - 1]).max() < 0.1

    # A policy that stalls (holds the arm still): the expert takes over from wherever it stalled,
    # planning the rest of the pick from there, and the task gets done.
    held = tmp_path / "hold"
    run(str(BIN / "collect"), "--device", "policy", "--policy", "toy_policies:hold", "--intervene", "expert",
        "--robot", "sim", "--no-realtime", "--sim-cameras", "none", "--episodes", "3", "--episode-time", "10",
        "--seed", "2", "--out", str(held), check=True)
    records = [json.loads(line) for line in (held / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert any(r["success"] for r in records) and all(r["interventions"] >= 1 for r in records)


@pytest.mark.slow
def test_keyboard_takeover_and_handback_are_recorded_on_the_exact_ticks(tmp_path, monkeypatch):
    pytest.importorskip("mujoco")
    pygame = pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    sys.path.insert(0, str(TESTS))
    from rich.console import Console

    from telecorder.collect.factory import DeviceConfig, make_devices
    from telecorder.collect.session import RecordingSession, SessionConfig

    robot, teleop, cameras = make_devices(DeviceConfig(
        robot="sim", device="policy", policy="toy_policies:drift", intervene="keyboard", sim_cameras=[], seed=1))
    take, give = 20, 50
    tick = {"n": 0}
    observe = robot.observe

    def observe_and_press():
        # The operator presses i at tick 20 (take over) and again at tick 50 (hand back).
        if tick["n"] in (take, give):
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_i, mod=0, unicode="i", scancode=0))
        tick["n"] += 1
        return observe()

    robot.observe = observe_and_press
    out = tmp_path / "kb"
    # On the wall clock, as a person needs; the key is read on the tick it was pressed, so ticks are exact.
    RecordingSession(robot, teleop, cameras, SessionConfig(out=out, episodes=1, episode_time_s=3, reset_time_s=0),
                     console=Console(quiet=True)).run()
    with h5py.File(out / "episodes" / "episode_000000.h5") as f:
        intervention = f["intervention"][:].ravel()
        action = f["action"][:].astype(np.float64)
    expected = np.zeros(90, bool)
    expected[take:give] = True
    np.testing.assert_array_equal(intervention, expected)
    rec = json.loads((out / "meta" / "episodes.jsonl").read_text())
    assert rec["human_steps"] == give - take and rec["interventions"] == 1
    # The operator holds no key: after the ramp the arm holds still where the takeover found it.
    assert np.abs(action[take] - action[take - 1]).max() < 0.1
    np.testing.assert_allclose(action[give - 5], action[give - 1], atol=1e-3)


def test_inputs_the_policy_needs_are_checked_up_front():
    class NeedsEnv(Policy):
        spec = PolicySpec(action_dim=6, state_keys=("observation.state", "observation.environment_state"),
                          cameras=("wrist",), image_size=(96, 96))

        def predict(self, observation):
            raise AssertionError

    runner = PolicyRunner(NeedsEnv(), fps=30)
    with pytest.raises(PolicyError, match="--env-state"):
        runner.check_inputs(["observation.state", "action"], ["wrist"])
    with pytest.raises(PolicyError, match="wrist"):
        runner.check_inputs(["observation.state", "observation.environment_state"], ["front"])
    with pytest.raises(PolicyError, match="outputs 6 action dimensions; this robot takes 7"):
        PolicyRunner(NeedsEnv(), fps=30, action_dim=7).check_inputs([], [])


def test_policy_references_that_cannot_load_say_why(tmp_path):
    sys.path.insert(0, str(TESTS))
    from telecorder.policies.loading import load_policy

    with pytest.raises(PolicyError, match=r"not a telecorder\.policies\.Policy"):
        load_policy("toy_policies:not_a_policy")
    with pytest.raises(PolicyError, match="cannot import module"):
        load_policy("no_such_module_xyz:make")
    with pytest.raises(PolicyError, match="no such checkpoint folder"):
        load_policy(str(tmp_path / "missing"))


def test_wilson_interval():
    lo, hi = wilson_interval(45, 50)
    assert 0.78 < lo < 0.79 and 0.95 < hi < 0.96
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_intervene_event_does_not_end_the_episode():
    from telecorder.collect.interfaces import EPISODE_EVENTS

    assert Event.INTERVENE not in EPISODE_EVENTS


@pytest.mark.slow
def test_record_train_eval_dagger_round_trip_through_the_cli(tmp_path):
    """The loop a user runs: demos -> train -> eval --json -> expert-corrected rollouts -> train on both."""
    pytest.importorskip("mujoco")
    pytest.importorskip("torch")
    demos, ckpt, rollouts, ckpt2 = (tmp_path / n for n in ("demos", "ckpt", "rollouts", "ckpt2"))
    run(str(BIN / "collect"), "--device", "scripted", "--robot", "sim", "--no-realtime", "--env-state",
        "--sim-cameras", "none", "--episodes", "3", "--episode-time", "10", "--seed", "0", "--out", str(demos),
        check=True)
    run(str(BIN / "telecorder"), "train", str(demos), "--out", str(ckpt), "--steps", "200", "--val-episodes", "1",
        check=True)
    result = json.loads(run(str(BIN / "telecorder"), "eval", str(ckpt), "--episodes", "2", "--seed", "1000",
                            "--episode-time", "4", "--json", check=True).stdout)
    assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    assert result["ci95"][0] <= result["success_rate"] <= result["ci95"][1]
    assert len(result["per_episode"]) == 2 and result["clock"] == "simulation"

    run(str(BIN / "collect"), "--device", "policy", "--policy", str(ckpt), "--intervene", "expert", "--robot", "sim",
        "--no-realtime", "--env-state", "--sim-cameras", "none", "--episodes", "1", "--episode-time", "8",
        "--seed", "7", "--out", str(rollouts), check=True)
    proc = run(str(BIN / "telecorder"), "train", str(demos), str(rollouts), "--out", str(ckpt2), "--steps", "100",
               "--val-episodes", "1", "--intervention-weight", "3", check=True)
    meta = json.loads((ckpt2 / "policy.json").read_text())
    assert meta["training"]["extra_episodes"] == 1 and meta["training"]["intervention_weight"] == 3
    assert "saved to" in proc.stdout

    # Training together needs the same features: a dataset without the cube pose is refused by name.
    plain = tmp_path / "plain"
    run(str(BIN / "collect"), "--device", "scripted", "--robot", "sim", "--no-realtime", "--sim-cameras", "none",
        "--episodes", "1", "--episode-time", "3", "--out", str(plain), check=True)
    bad = run(str(BIN / "telecorder"), "train", str(demos), str(plain), "--out", str(tmp_path / "x"), "--steps", "5")
    assert bad.returncode != 0 and str(plain) in bad.stderr and "observation.environment_state" in bad.stderr

    # A damaged checkpoint: one clear error naming the file, from eval as from collect.
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    for cmd in ((str(BIN / "telecorder"), "eval", str(ckpt), "--episodes", "1"),
                (str(BIN / "collect"), "--device", "policy", "--policy", str(ckpt), "--out", str(tmp_path / "y"))):
        proc = run(*cmd)
        assert proc.returncode == 2 and "model.safetensors" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 3


@pytest.mark.slow
def test_moving_the_leader_arm_takes_over_from_the_policy(tmp_path):
    """The emulated operator starts moving the leader: past 0.2 rad the leader arm drives, ramped in."""
    pytest.importorskip("mujoco")
    pytest.importorskip("dynamixel_sdk")
    out = tmp_path / "leader"
    run(str(BIN / "collect"), "--device", "policy", "--policy", "toy_policies:drift", "--intervene", "leader_arm",
        "--emulate", "--robot", "sim", "--sim-cameras", "none", "--episodes", "1", "--episode-time", "8",
        "--reset-time", "0", "--seed", "3", "--out", str(out), check=True)
    rec = json.loads((out / "meta" / "episodes.jsonl").read_text())
    with h5py.File(out / "episodes" / "episode_000000.h5") as f:
        intervention = f["intervention"][:].ravel()
        action = f["action"][:].astype(np.float64)
    assert rec["interventions"] == 1 and rec["human_steps"] == int(intervention.sum()) > 0
    t = int(np.argmax(intervention))
    assert t > 0 and intervention[t:].all(), "one takeover, kept until the end (nobody handed back)"
    assert np.abs(action[t] - action[t - 1]).max() < 0.1
    assert rec["success"], "the emulated operator finishes the pick after taking over"
