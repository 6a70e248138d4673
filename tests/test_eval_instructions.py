"""Whether the instruction matters (``eval --instructions asked|wrong|blank``) and policies that
answer no chunk (``predict`` returns None): the wrong-instruction plan, the confusion matrices,
and real sim evaluations of the scripted expert and of tiny policies defined here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from telecorder.collect.devices.policy_runner import PolicyRunner
from telecorder.evaluation import (
    EpisodeResult,
    EvalConfig,
    confusion,
    evaluate,
    heard_instruction,
    wrong_task,
)
from telecorder.policies import Policy, PolicySpec
from telecorder.sim.tasks import get_suite

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARM_DIM = 6  # the built-in sim arm: 5 joints + gripper
SUITE = get_suite("cubes")
HEARD: list[str] = []  # what Still was told, over every instance


# ---------------------------------------------------------------------- policies loaded as module:factory

class Still(Policy):
    """Holds the arm where it is (a 1-step chunk of the current state) and notes what it heard."""

    spec = PolicySpec(action_dim=ARM_DIM, horizon=1)

    def predict(self, observation):
        HEARD.append(observation["language_instruction"])
        return np.asarray(observation["state"][-1], dtype=np.float64)[None]


class Flaky(Policy):
    """Every other answer is no chunk at all (None), as undecodable action tokens would be."""

    spec = PolicySpec(action_dim=ARM_DIM, horizon=5)

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, observation):
        self.calls += 1
        if self.calls % 2 == 0:
            return None
        return np.repeat(np.asarray(observation["state"][-1], dtype=np.float64)[None], 5, axis=0)


def still() -> Still:
    return Still()


def flaky() -> Flaky:
    return Flaky()


# ---------------------------------------------------------------------- the plan and the matrices

def test_wrong_instruction_is_the_same_family_on_the_next_object():
    by = SUITE.by_id
    assert wrong_task(by("pick_red"), SUITE) is by("pick_green")
    assert wrong_task(by("pick_blue"), SUITE) is by("pick_red")
    assert wrong_task(by("bin_green"), SUITE) is by("bin_blue")
    assert wrong_task(by("push_red_left"), SUITE) is by("push_green_left")
    assert wrong_task(by("push_blue_right"), SUITE) is by("push_red_right")
    for task in SUITE.tasks:
        other = wrong_task(task, SUITE)
        assert other.family == task.family and other.obj != task.obj, task.task_id
        if task.family == "stack":
            assert other.support != other.obj


def test_heard_text_comes_from_the_same_paraphrase_split():
    task = SUITE.by_id("pick_red")
    green = SUITE.by_id("pick_green")
    assert heard_instruction("asked", "lift the red cube", task, 2, SUITE, "recorded") == ("lift the red cube",
                                                                                           "red_cube")
    assert heard_instruction("wrong", task.recorded[2], task, 2, SUITE, "recorded") == (green.recorded[2],
                                                                                        "green_cube")
    assert heard_instruction("wrong", task.heldout[1], task, 1, SUITE, "heldout") == (green.heldout[1],
                                                                                      "green_cube")
    # Episode j of a split longer than the other task's wraps around it.
    assert heard_instruction("wrong", "x", task, 3, SUITE, "heldout")[0] == green.heldout[1]
    assert heard_instruction("blank", task.recorded[0], task, 0, SUITE, "recorded") == ("", None)


def _ep(obj: str, moved: str | None, heard_obj: str | None) -> EpisodeResult:
    return EpisodeResult(instruction=obj, task_id=obj, family="pick", obj=obj, index=0, sim_success=False,
                         moved=moved, heard="", heard_obj=heard_obj)


def test_confusion_counts_named_against_moved_objects():
    objects = ["red_cube", "green_cube", "blue_cube"]
    results = [_ep("red_cube", "green_cube", "green_cube"), _ep("red_cube", None, "green_cube"),
               _ep("blue_cube", "bin", "red_cube"), _ep("blue_cube", "blue_cube", None)]
    asked = confusion(results, "obj", objects)
    assert asked["rows"] == ["red_cube", "blue_cube"]
    assert asked["cols"] == ["red_cube", "green_cube", "blue_cube", "bin", "none"]
    assert asked["counts"] == [[0, 1, 0, 0, 1], [0, 0, 1, 1, 0]]
    heard = confusion(results, "heard_obj", objects)
    # The blank episode (heard names nothing) is no row of it.
    assert heard["rows"] == ["red_cube", "green_cube"]
    assert heard["counts"] == [[0, 0, 0, 1, 0], [0, 1, 0, 0, 1]]


# ---------------------------------------------------------------------- the runner and a None chunk

def test_a_policy_answering_no_chunk_holds_the_tick_and_asks_again():
    class Alternate(Policy):
        spec = PolicySpec(action_dim=2, horizon=3)

        def __init__(self) -> None:
            self.calls: list[float] = []

        def predict(self, observation):
            tick = float(observation["state"][-1][0])
            self.calls.append(tick)
            if len(self.calls) % 2 == 0:
                return None
            return np.stack([[tick, j] for j in range(3)]).astype(np.float64)

    policy = Alternate()
    runner = PolicyRunner(policy, fps=30, realtime=False, max_step=100.0, record_source=False)
    runner.connect()
    runner.start_episode()
    out = [runner.step({"observation.state": np.array([t, 0.0], np.float32)}) for t in range(9)]
    summary = runner.episode_summary()
    runner.disconnect()
    # Chunk at 0 (ticks 0-2), none at 3 (held), chunk at 4 (4-6), none at 7 (held), chunk at 8.
    assert policy.calls == [0.0, 3.0, 4.0, 7.0, 8.0]
    assert [held for _, held in out] == [False, False, False, True, False, False, False, True, False]
    np.testing.assert_array_equal(out[3][0], out[2][0])  # a held tick repeats the last command
    assert tuple(out[4][0]) == (4, 0)  # the new chunk starts at its own tick
    assert summary["policy_invalid_chunks"] == 2 and summary["policy_held_ticks"] == 2
    assert summary["policy_chunks"] == 3
    assert summary["policy_inference_ms_p99"] >= summary["policy_inference_ms_p50"]
    assert len(runner.inference_s) == 5


@pytest.mark.slow
def test_eval_counts_invalid_chunks_and_reports_latency_and_decision_rate(tmp_path):
    pytest.importorskip("mujoco")
    out = tmp_path / "rollouts"
    result = evaluate(EvalConfig(policy=f"{__name__}:flaky", episodes=1, episode_time_s=1.0, out=out))
    assert result["episodes"] == 1 and result["steps"] == 30
    assert result["invalid_chunks"] > 0 and result["held_ticks"] >= result["invalid_chunks"]
    # Chunks of 5 ticks with every other answer empty: fewer decisions than ticks, more than none.
    assert 0 < result["decisions_hz"] < 30
    assert result["inference_ms_p99"] >= result["inference_ms_p50"] >= 0
    rec = json.loads((out / "meta" / "episodes.jsonl").read_text().splitlines()[0])
    assert rec["policy_invalid_chunks"] == result["invalid_chunks"]
    assert rec["policy_inference_ms_p99"] is not None


# ---------------------------------------------------------------------- real evaluations

def _eval(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "COLUMNS": "160"}
    proc = subprocess.run(
        [str(BIN / "telecorder"), "eval", "benchmarks.task_policies:expert", "--robot", "sim", "--scene", "cubes",
         "--tasks", "pick_red;pick_green", "--episodes-per-task", "1", "--seed", "4", *args],
        cwd=ROOT, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_the_expert_follows_the_instruction_it_hears_not_the_asked_task(tmp_path):
    out = tmp_path / "wrong"
    wrong = json.loads(_eval("--instructions", "wrong", "--json", "--out", str(out)).stdout.strip().splitlines()[-1])
    assert wrong["instructions"] == "wrong"
    assert wrong["success_rate"] == 0.0 and wrong["grounding"] == 0.0
    assert wrong["followed_heard"] == 1.0
    # Asked red -> moved green, asked green -> moved blue; heard green -> green, heard blue -> blue.
    assert wrong["confusion"]["rows"] == ["red_cube", "green_cube"]
    assert wrong["confusion"]["cols"] == ["red_cube", "green_cube", "blue_cube", "none"]
    assert wrong["confusion"]["counts"] == [[0, 1, 0, 0], [0, 0, 1, 0]]
    assert wrong["heard_confusion"]["rows"] == ["green_cube", "blue_cube"]
    assert wrong["heard_confusion"]["counts"] == [[0, 1, 0, 0], [0, 0, 1, 0]]
    # The recording keeps the asked instruction (its success is the asked task's) and notes the heard one.
    from telecorder.datasets.dataset import Dataset

    ds = Dataset.open(out)
    pairs = set()
    for i in range(len(ds)):
        with ds.episode(i) as episode:
            pairs.add((episode.attrs["language_instruction"], episode.attrs["eval_heard_instruction"]))
    assert pairs == {("pick up the red cube", "pick up the green cube"),
                     ("pick up the green cube", "pick up the blue cube")}

    asked = _eval()
    assert "success rate 100.0% (2/2)" in asked.stdout, asked.stdout
    assert "asked object (rows) x moved object" in asked.stdout and "heard object" not in asked.stdout


@pytest.mark.slow
def test_a_blank_instruction_reaches_the_policy_and_the_asked_task_is_scored(tmp_path):
    HEARD.clear()
    out = tmp_path / "blank"
    result = evaluate(EvalConfig(policy=f"{__name__}:still", tasks="pick_red;bin_blue", episodes_per_task=1,
                                 episode_time_s=1.0, instructions="blank", out=out))
    assert HEARD and set(HEARD) == {""}
    assert result["instructions"] == "blank" and "heard_confusion" not in result
    assert result["success_rate"] == 0.0
    # Nothing moved: every asked object lands in the "none" column.
    assert result["confusion"]["rows"] == ["red_cube", "blue_cube"]
    assert [row[-1] for row in result["confusion"]["counts"]] == [1, 1]
    from telecorder.datasets.dataset import Dataset

    ds = Dataset.open(out)
    with ds.episode(0) as episode:
        assert episode.attrs["language_instruction"] == "pick up the red cube"
        assert episode.attrs["eval_heard_instruction"] == ""


def test_the_expert_hearing_a_blank_instruction_is_a_one_line_error():
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "COLUMNS": "300"}
    proc = subprocess.run(
        [str(BIN / "telecorder"), "eval", "benchmarks.task_policies:expert", "--scene", "cubes", "--tasks",
         "pick_red", "--episodes-per-task", "1", "--instructions", "blank"],
        cwd=ROOT, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    assert "'' is none of the suite's instructions" in proc.stderr and "Traceback" not in proc.stderr


def test_instructions_goes_with_tasks():
    proc = subprocess.run([str(BIN / "telecorder"), "eval", "benchmarks.task_policies:expert", "--instructions",
                           "wrong"], cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2 and "--instructions goes with --tasks" in proc.stderr, proc.stderr
