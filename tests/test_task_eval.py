"""Per-task evaluation (``telecorder eval --tasks``): the interval and grounding arithmetic on known
inputs, the task plan, and a tiny evaluation of the scripted-expert policy through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from telecorder.errors import TelecorderError
from telecorder.evaluation import (
    EpisodeResult,
    plan_tasks,
    reset_seeds,
    tally,
    task_report,
    wilson_interval,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def ep(task_id: str, family: str, obj: str, success: bool, moved: str | None, text: str | None = None,
       index: int = 0) -> EpisodeResult:
    return EpisodeResult(instruction=text or task_id, task_id=task_id, family=family, obj=obj, index=index,
                         sim_success=success, moved=moved)


def test_wilson_interval_matches_known_values():
    # Reference values (Wilson score, z = 1.96): 8/10 -> 0.4902..0.9433; 0/10 -> 0..0.2775; 10/10 -> 0.7225..1.
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    lo, hi = wilson_interval(10, 10)
    assert round(lo, 4) == 0.7225 and hi == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wrong_object_success_is_a_failure_and_grounding_counts_the_named_object():
    right = ep("pick_red", "pick", "red_cube", True, "red_cube")
    wrong = ep("pick_red", "pick", "red_cube", True, "blue_cube")  # the sim said lifted, but blue moved most
    idle = ep("pick_red", "pick", "red_cube", False, None)
    tried = ep("pick_red", "pick", "red_cube", False, "red_cube")
    assert right.success and not wrong.success and not idle.success and not tried.success
    assert (right.grounded, wrong.grounded, idle.grounded, tried.grounded) == (True, False, False, True)
    t = tally([right, wrong, idle, tried])
    assert t["episodes"] == 4 and t["successes"] == 1 and t["success_rate"] == 0.25
    assert t["grounding"] == 0.5 and t["wrong_object"] == 1
    assert t["ci95"] == [round(v, 4) for v in wilson_interval(1, 4)]


def test_task_report_keys_by_instruction_and_averages_over_tasks():
    results = [
        ep("pick_red", "pick", "red_cube", True, "red_cube", "pick up the red cube", 0),
        ep("pick_red", "pick", "red_cube", True, "red_cube", "grab the red block", 1),
        ep("bin_red", "bin", "red_cube", True, "red_cube", "put the red cube in the bin", 0),
        ep("bin_red", "bin", "red_cube", False, "green_cube", "put the red cube in the bin", 1),
        ep("stack_red_on_green", "stack", "red_cube", False, "red_cube", "put the red cube on the green cube", 0),
        ep("stack_red_on_green", "stack", "red_cube", False, "red_cube", "put the red cube on the green cube", 1),
    ]
    rep = task_report(results)
    # Mean over tasks: (1 + 0.5 + 0) / 3.
    assert rep["success_rate"] == pytest.approx(0.5)
    assert rep["grounding"] == pytest.approx(5 / 6)
    assert set(rep["tasks"]) == {"pick up the red cube", "grab the red block", "put the red cube in the bin",
                                 "put the red cube on the green cube"}
    row = rep["tasks"]["put the red cube in the bin"]
    assert (row["task_id"], row["family"], row["episodes"], row["success_rate"], row["grounding"]) == (
        "bin_red", "bin", 2, 0.5, 0.5)
    assert rep["task_ids"]["pick_red"]["instructions"] == ["pick up the red cube", "grab the red block"]
    assert rep["task_ids"]["pick_red"]["success_rate"] == 1.0
    assert rep["families"]["stack"]["success_rate"] == 0.0 and rep["families"]["stack"]["tasks"] == 1
    assert rep["families"]["bin"]["ci95"] == [round(v, 4) for v in wilson_interval(1, 2)]


def test_plan_tasks_splits_and_selects():
    suite, planned = plan_tasks("cubes", None, "recorded")
    assert suite == "cubes" and len(planned) == 18
    assert planned[0].instructions[0] == "pick up the red cube"
    _, held = plan_tasks("cubes", "cubes", "heldout")
    for p, h in zip(planned, held, strict=True):
        assert p.task == h.task and not set(p.instructions) & set(h.instructions)
        assert h.instructions == p.task.heldout
    _, some = plan_tasks("pick_red; Put the Blue cube in the bin.", "cubes", "heldout")
    assert [p.task.task_id for p in some] == ["pick_red", "bin_blue"]
    assert some[0].instructions == some[0].task.heldout  # a task id: the chosen split
    assert some[1].instructions == ("Put the Blue cube in the bin.",)  # an instruction: verbatim
    with pytest.raises(TelecorderError, match="neither a task id nor an instruction"):
        plan_tasks("juggle the cubes", "cubes", "recorded")
    with pytest.raises(TelecorderError, match="--scene cubes"):
        plan_tasks("cubes", "pick", "recorded")


def test_reset_seeds_are_the_sessions_draws():
    import numpy as np

    rng = np.random.default_rng(7)
    assert reset_seeds(7, 3) == [int(rng.integers(2**31)) for _ in range(3)]
    assert reset_seeds(7, 5)[:3] == reset_seeds(7, 3)


def _eval(tmp_path: Path, *args: str) -> dict:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run(
        [str(BIN / "telecorder"), "eval", "benchmarks.task_policies:expert", "--robot", "sim", "--scene", "cubes",
         "--json", *args],
        cwd=ROOT, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_expert_policy_eval_per_task_json_and_rollouts(tmp_path):
    out = tmp_path / "rollouts"
    result = _eval(tmp_path, "--tasks", "pick_red;bin_green;stack_blue_on_red", "--episodes-per-task", "1",
                   "--seed", "3", "--out", str(out))
    for key in ("policy", "episodes", "successes", "success_rate", "ci95", "held_ticks", "per_episode", "rollouts",
                "grounding", "tasks", "families", "task_ids"):
        assert key in result, key
    assert result["episodes"] == 3 and len(result["per_episode"]) == 3
    assert set(result["tasks"]) == {"pick up the red cube", "put the green cube in the bin",
                                    "put the blue cube on the red cube"}
    for text, row in result["tasks"].items():
        assert set(row) >= {"task_id", "family", "episodes", "success_rate", "ci95", "grounding"}
        assert row["episodes"] == 1, text
    assert set(result["families"]) == {"pick", "bin", "stack"}
    # The expert does what it is told: it moves the named cube, and succeeds.
    assert result["grounding"] == 1.0
    assert result["success_rate"] >= 2 / 3
    # Episode 0 of every task started from the same scene.
    from telecorder.datasets.dataset import Dataset

    ds = Dataset.open(out)
    seeds, texts, ids = set(), [], []
    for i in range(len(ds)):
        with ds.episode(i) as episode:
            attrs = episode.attrs
        seeds.add(attrs["sim_scene"]["seed"])
        texts.append(attrs["language_instruction"])
        ids.append(attrs.get("task_id"))
    assert seeds == {reset_seeds(3, 1)[0]}
    assert sorted(texts) == sorted(result["tasks"])
    assert sorted(ids) == ["bin_green", "pick_red", "stack_blue_on_red"]


def test_heldout_paraphrases_are_what_the_policy_hears(tmp_path):
    from telecorder.sim.tasks import get_suite

    result = _eval(tmp_path, "--tasks", "pick_green", "--episodes-per-task", "2", "--paraphrases", "heldout")
    task = get_suite("cubes").by_id("pick_green")
    assert list(result["tasks"]) == list(task.heldout[:2])
    assert all(row["task_id"] == "pick_green" for row in result["tasks"].values())
    assert result["task_ids"]["pick_green"]["episodes"] == 2


@pytest.mark.parametrize(("args", "message"), [
    (("--tasks", "cubes", "--episodes", "3"), "--episodes-per-task"),
    (("--episodes-per-task", "3",), "goes with --tasks"),
    (("--tasks", "cubes", "--scene", "pick"), "--scene cubes"),
    (("--tasks", "juggle the cubes",), "neither a task id nor an instruction"),
])
def test_bad_task_options_are_one_line_errors(args, message):
    proc = subprocess.run([str(BIN / "telecorder"), "eval", "benchmarks.task_policies:expert", *args],
                          cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_policy_that_moves_the_wrong_cube_is_ungrounded_and_fails(tmp_path):
    # The expert of the next colour's cube: it picks up green when told red, and so on.
    proc = subprocess.run(
        [str(BIN / "telecorder"), "eval", "benchmarks.task_policies:misread", "--scene", "cubes", "--tasks",
         "pick_red;bin_blue", "--episodes-per-task", "1", "--seed", "5", "--json"],
        cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
        env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["grounding"] == 0.0 and result["success_rate"] == 0.0
    assert result["wrong_object"] == 2
    assert result["tasks"]["pick up the red cube"]["grounding"] == 0.0
