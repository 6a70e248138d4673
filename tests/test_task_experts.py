"""Scripted experts of the cubes task suite (sim/task_expert.py), on the real MuJoCo scene, no rendering.

One seed per family from a fresh reset, and per family a take-over from a state the expert did not
plan (arm or cube moved mid-demonstration), as the ``--intervene expert`` corrector does.
"""

from __future__ import annotations

import numpy as np
import pytest

from telecorder.sim import ensure_gl_backend

ensure_gl_backend()
pytest.importorskip("mujoco")

from telecorder.sim.env import SimEnv, SimModelError  # noqa: E402
from telecorder.sim.expert import ScriptedExpert  # noqa: E402
from telecorder.sim.scenes import CUBES_MODEL, PICK_MODEL  # noqa: E402
from telecorder.sim.task_expert import TaskExpert, make_expert, run_expert_episode  # noqa: E402
from telecorder.sim.tasks import get_suite  # noqa: E402

SUITE = get_suite("cubes")


@pytest.fixture(scope="module")
def env() -> SimEnv:
    return SimEnv(CUBES_MODEL)


def _free_spot(env: SimEnv, name: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A table spot for ``name`` well clear of the other cubes and the bin."""
    others = [env.object_pose(n)[0] for n in env.objects if n != name]
    bin_xy = env.target_position()[:2]
    for x in xs:
        for y in ys:
            if (all(np.hypot(x - o[0], y - o[1]) > 0.08 for o in others)
                    and max(abs(x - bin_xy[0]), abs(y - bin_xy[1])) > 0.09):
                return np.array([x, y, env.object_rest_z(name)])
    raise AssertionError("no free spot in this layout")


def _run(env: SimEnv, expert, seconds: float) -> None:
    for _ in range(int(seconds / env.control_dt)):
        env.apply_action(expert.act())
        if expert.done or expert.failed:
            return


def _run_until_phase(env: SimEnv, expert, phase: str, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / env.control_dt)):
        env.apply_action(expert.act())
        if expert.phase == phase:
            return
    raise AssertionError(f"the expert never reached phase {phase!r} (last {expert.phase!r})")


@pytest.mark.parametrize("task_id", ["pick_red", "bin_green", "stack_blue_on_red", "push_red_left"])
def test_expert_solves_one_seed_per_family(env: SimEnv, task_id: str) -> None:
    task = SUITE.by_id(task_id)
    assert run_expert_episode(env, task, seed=3, max_seconds=60.0)
    assert task.success(env)
    # The other tasks' checks read the same scene: a stacked/binned/pushed cube is not also "picked".
    if task.family != "pick":
        assert not SUITE.by_id(f"pick_{task.obj.split('_')[0]}").success(env)


def test_pick_takes_over_after_the_cube_was_moved(env: SimEnv) -> None:
    task = SUITE.by_id("pick_green")
    env.set_task(task)
    env.reset(seed=5)
    first = make_expert(env, task, seed=1)
    _run_until_phase(env, first, "descend")
    # Someone moves the cube while the gripper comes down: the next expert plans from the new pose.
    _, quat = env.object_pose("green_cube")
    target = _free_spot(env, "green_cube", np.linspace(0.13, 0.23, 11), np.linspace(-0.12, 0.12, 25))
    env.place_object("green_cube", target, quat)
    second = make_expert(env, task, seed=2)
    second.replan()
    _run(env, second, 30.0)
    assert second.done and task.success(env)
    assert np.hypot(*(env.object_pose("green_cube")[0][:2] - np.array(target[:2]))) < 0.03


def test_bin_takes_over_while_carrying(env: SimEnv) -> None:
    task = SUITE.by_id("bin_red")
    env.set_task(task)
    env.reset(seed=7)
    first = make_expert(env, task, seed=1)
    _run_until_phase(env, first, "carry")
    _run(env, first, 0.3)  # midway through the carry, cube in the jaws
    second = make_expert(env, task, seed=9)
    second.replan()
    assert second.phase in ("lift", "carry")  # it keeps the cube rather than starting over
    _run(env, second, 30.0)
    assert second.done and task.success(env)


def test_stack_takes_over_from_a_moved_arm(env: SimEnv) -> None:
    task = SUITE.by_id("stack_green_on_blue")
    env.set_task(task)
    env.reset(seed=11)
    # The arm was somewhere else entirely (e.g. a policy wandered off): drive it to an odd pose.
    odd = env.home_action()
    odd[:5] = [0.8, 0.3, 1.6, 1.0, 0.5]
    for _ in range(40):
        env.apply_action(odd)
    expert = make_expert(env, task, seed=4)
    expert.replan()
    _run(env, expert, 40.0)
    assert expert.done and task.success(env)


def test_push_takes_over_after_the_cube_was_moved(env: SimEnv) -> None:
    task = SUITE.by_id("push_blue_right")
    env.set_task(task)
    env.reset(seed=4)
    first = make_expert(env, task, seed=1)
    _run_until_phase(env, first, "push")
    _run(env, first, 0.5)
    # The cube is put back near the middle, away from the jaws: the push starts over from there.
    spot = _free_spot(env, "blue_cube", np.linspace(0.13, 0.23, 11), np.linspace(0.1, -0.1, 21))
    env.place_object("blue_cube", spot, np.array([1.0, 0.0, 0.0, 0.0]))
    second = make_expert(env, task, seed=3)
    second.replan()
    _run(env, second, 50.0)
    assert second.done and task.success(env)


def test_make_expert_without_task_is_todays_pick_expert() -> None:
    pick = SimEnv(PICK_MODEL)
    assert isinstance(make_expert(pick, None, seed=0), ScriptedExpert)
    # A cubes task on the single-cube scene is refused with the scene named.
    with pytest.raises(SimModelError, match="cubes"):
        make_expert(pick, SUITE.by_id("stack_red_on_green"))


def test_demonstrations_vary_with_the_seed(env: SimEnv) -> None:
    task = SUITE.by_id("pick_blue")
    env.set_task(task)
    env.reset(seed=0)
    a = make_expert(env, task, seed=1)
    b = make_expert(env, task, seed=2)
    assert isinstance(a, TaskExpert)
    assert a.s["t_approach"] != b.s["t_approach"]
