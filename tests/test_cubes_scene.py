"""The multi-object ``cubes`` scene: task suite data, seeded layouts, success checks, env-state,
visual randomization and scene-state round trips, on the real MuJoCo simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from telecorder.sim import ensure_gl_backend
from telecorder.sim.scenes import BIMANUAL_MODEL, CUBES_MODEL, PICK_MODEL, SCENES, scene_model
from telecorder.sim.tasks import FAMILIES, SUITES, get_suite, normalize_instruction

ensure_gl_backend()
mujoco = pytest.importorskip("mujoco")

from telecorder.sim.env import DEFAULT_MODEL, SimEnv, SimModelError  # noqa: E402
from telecorder.sim.objects import (  # noqa: E402
    MIN_CUBE_DISTANCE,
    OBJECT_R_RANGE,
    PUSH_EDGE_Y,
    env_state,
    env_state_names,
)

COLOURS = ("red", "green", "blue")
UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def env() -> SimEnv:
    return SimEnv(CUBES_MODEL, seed=0)


@pytest.fixture()
def fresh(env: SimEnv) -> SimEnv:
    env.set_task(None)
    env.reset(11)
    return env


def _settle(env: SimEnv, ticks: int = 30) -> None:
    home = env.home_action()
    for _ in range(ticks):
        env.apply_action(home)


# ---------------------------------------------------------------------- tasks data


def test_scenes_registry() -> None:
    assert SCENES == {"pick": DEFAULT_MODEL, "cubes": CUBES_MODEL, "bimanual": BIMANUAL_MODEL}
    assert scene_model("pick") == PICK_MODEL == DEFAULT_MODEL
    with pytest.raises(ValueError, match="pick, cubes, bimanual"):
        scene_model("kitchen")


def test_cubes_suite_has_18_tasks_in_4_families_with_canonical_forms() -> None:
    suite = get_suite("cubes")
    assert suite.scene == "cubes" and SUITES["cubes"] is suite
    assert len(suite.tasks) == 18
    counts = {f: sum(t.family == f for t in suite.tasks) for f in FAMILIES}
    assert counts == {"pick": 3, "bin": 3, "stack": 6, "push": 6, "transfer": 0}
    canon = {t.recorded[0] for t in suite.tasks}
    for c in COLOURS:
        assert f"pick up the {c} cube" in canon
        assert f"put the {c} cube in the bin" in canon
        assert f"push the {c} cube to the left edge" in canon
        assert f"push the {c} cube to the right edge" in canon
        for d in COLOURS:
            if d != c:
                assert f"put the {c} cube on the {d} cube" in canon
    for t in suite.tasks:
        assert len(t.paraphrases) >= 3 and len(t.recorded) >= 2 and len(t.heldout) >= 1
        assert t.obj in ("red_cube", "green_cube", "blue_cube")
        assert suite.by_id(t.task_id) is t
    stack = suite.by_id("stack_red_on_green")
    assert (stack.obj, stack.support) == ("red_cube", "green_cube")
    assert suite.by_id("push_blue_right").side == "right"
    assert suite.by_id("bin_green").support == "bin"
    with pytest.raises(ValueError, match="pick_red"):
        suite.by_id("fly_red")
    with pytest.raises(ValueError, match="cubes"):
        get_suite("blocks")


def test_match_is_case_and_space_insensitive() -> None:
    suite = get_suite("cubes")
    assert normalize_instruction("  Put the RED cube\tin the bin.  ") == "put the red cube in the bin"
    task, idx = suite.match("  Put the RED   cube in the bin. ")
    assert (task.task_id, idx) == ("bin_red", 0)
    heldout = suite.by_id("stack_blue_on_red").heldout[0]
    task, idx = suite.match(heldout.upper())
    assert task.task_id == "stack_blue_on_red" and task.paraphrases[idx] == heldout
    assert idx >= len(task.recorded)
    assert suite.match("make me a sandwich") is None
    assert suite.match("pick up the purple cube") is None
    # Every paraphrase of every task resolves to that task (no paraphrase shared between tasks).
    for t in suite.tasks:
        for i, p in enumerate(t.paraphrases):
            assert suite.match(p) == (t, i)


# ---------------------------------------------------------------------- layout


def test_scene_objects_and_geometry(env: SimEnv) -> None:
    assert env.objects == ["red_cube", "green_cube", "blue_cube"]
    assert env.target == "bin" and env.has_task
    assert env.cube_size == pytest.approx(0.035)
    assert env.object_rest_z("red_cube") == pytest.approx(0.0175)
    assert env.camera_names == SimEnv().camera_names
    pick = SimEnv(seed=0)
    assert pick.objects == ["cube"] and pick.target is None and pick.task is None
    with pytest.raises(SimModelError, match="no target"):
        pick.target_position()


def test_resets_are_deterministic_separated_reachable_and_outside_the_bin(env: SimEnv) -> None:
    objs = env.scene_objects
    layouts = []
    for seed in range(200):
        env.reset(seed)
        pos = env.object_positions()
        bin_c = env.target_position()
        layouts.append((np.array(list(pos.values())), bin_c))
        pts = np.array(list(pos.values()))
        r = np.hypot(pts[:, 0], pts[:, 1])
        assert np.all(r >= OBJECT_R_RANGE[0] - 1e-9) and np.all(r <= OBJECT_R_RANGE[1] + 1e-9)
        assert np.allclose(pts[:, 2], 0.0175)
        for i in range(3):
            for j in range(i + 1, 3):
                assert np.hypot(*(pts[i, :2] - pts[j, :2])) >= MIN_CUBE_DISTANCE - 1e-9
            cheb = np.abs(pts[i, :2] - bin_c[:2]).max()
            assert cheb > objs.bin_outer_half + env.cube_size / 2 * np.sqrt(2)  # never touching the bin
    # Same seed, same layout; different seeds differ.
    env.reset(7)
    again = np.array(list(env.object_positions().values()))
    assert np.array_equal(again, layouts[7][0]) and np.array_equal(env.target_position(), layouts[7][1])
    assert not np.allclose(layouts[7][0], layouts[8][0])
    assert len({tuple(np.round(b[:2], 6)) for _, b in layouts}) == 200  # the bin moves too
    # Yaw is randomized.
    yaws = set()
    for seed in range(5):
        env.reset(seed)
        yaws.add(round(float(env.object_pose("red_cube")[1][3]), 6))
    assert len(yaws) == 5


def test_layout_is_at_rest(env: SimEnv) -> None:
    for seed in (0, 1, 2):
        env.reset(seed)
        before, bin_before = env.object_positions(), env.target_position()
        _settle(env, 20)
        after = env.object_positions()
        assert all(np.abs(after[k] - before[k]).max() < 1e-4 for k in before)
        assert np.allclose(env.target_position(), bin_before, atol=1e-6)


def test_pick_scene_layout_unchanged() -> None:
    # The pick scene draws exactly what it always drew: x, y, yaw from the seed in that order.
    env = SimEnv(seed=0)
    env.reset(5)
    rng = np.random.default_rng(5)
    x, y, yaw = rng.uniform(0.13, 0.25), rng.uniform(-0.12, 0.12), rng.uniform(-np.pi, np.pi)
    pos, quat = env.cube_pose()
    assert np.allclose(pos, [x, y, 0.0175]) and np.allclose(quat, [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)])
    assert env_state_names(env) == ["cube_x", "cube_y", "cube_z", "cube_qw", "cube_qx", "cube_qy", "cube_qz"]
    assert env_state(env).shape == (7,)


# ---------------------------------------------------------------------- success checks


def test_pick_success_and_near_miss(fresh: SimEnv) -> None:
    env, suite = fresh, get_suite("cubes")
    env.set_task(suite.by_id("pick_green"))
    x, y, _ = env.object_pose("green_cube")[0]
    env.place_object("green_cube", [x, y, 0.0175 + 0.06], UPRIGHT)
    assert env.is_success()
    env.place_object("green_cube", [x, y, 0.0175 + 0.04], UPRIGHT)
    assert not env.is_success()
    # Lifting another cube is not this task.
    env.place_object("green_cube", [x, y, 0.0175], UPRIGHT)
    rx, ry, _ = env.object_pose("red_cube")[0]
    env.place_object("red_cube", [rx, ry, 0.1], UPRIGHT)
    assert not env.is_success()
    assert env.cube_pose()[0][0] == pytest.approx(x)  # cube_pose follows the task's object


def test_bin_success_and_near_miss(fresh: SimEnv) -> None:
    env = fresh
    env.set_task(get_suite("cubes").by_id("bin_red"))
    c = env.target_position()
    env.place_object("red_cube", [c[0] + 0.005, c[1] - 0.005, 0.05], UPRIGHT)
    _settle(env, 40)
    assert env.object_pose("red_cube")[0][2] < env.scene_objects.bin_rim_z
    assert env.is_success()
    env.place_object("blue_cube", [c[0], c[1] + 0.12, 0.0175], UPRIGHT)  # wrong cube elsewhere: fine
    assert env.is_success()
    # Beside the bin, on the table: not in it.
    env.place_object("red_cube", [c[0] + env.scene_objects.bin_outer_half + 0.03, c[1], 0.0175], UPRIGHT)
    _settle(env, 5)
    assert not env.is_success()
    # Above the bin (held up, not at rest inside): not yet.
    env.place_object("red_cube", [c[0], c[1], 0.08], UPRIGHT)
    assert not env.is_success()
    # The right cube in the bin only counts for its own task.
    env.set_task(get_suite("cubes").by_id("bin_green"))
    env.place_object("red_cube", [c[0], c[1], 0.0215], UPRIGHT)
    assert not env.is_success()


def test_stack_success_and_near_miss(fresh: SimEnv) -> None:
    env = fresh
    env.set_task(get_suite("cubes").by_id("stack_red_on_green"))
    g, _ = env.object_pose("green_cube")
    env.place_object("red_cube", [g[0] + 0.004, g[1], g[2] + 0.035], UPRIGHT)
    _settle(env, 30)
    assert env.is_success()
    # Off by more than half a cube: it slid down, or sits beside.
    env.place_object("red_cube", [g[0] + 0.025, g[1], g[2] + 0.035], UPRIGHT)
    assert not env.is_success()
    # The reverse stack is another task.
    env.set_task(get_suite("cubes").by_id("stack_green_on_red"))
    env.place_object("red_cube", [g[0], g[1], g[2] + 0.035], UPRIGHT)
    assert not env.is_success()


def test_stack_not_success_while_held(fresh: SimEnv) -> None:
    env = fresh
    env.set_task(get_suite("cubes").by_id("stack_blue_on_red"))
    r, _ = env.object_pose("red_cube")
    env.place_object("blue_cube", [r[0], r[1], r[2] + 0.035], UPRIGHT)
    with env.lock:
        env.data.qvel[env.scene_objects.vadr["blue_cube"]] = 0.2  # still moving
    assert not env.is_success()


def test_push_success_and_near_miss(fresh: SimEnv) -> None:
    env, suite = fresh, get_suite("cubes")
    env.set_task(suite.by_id("push_blue_left"))
    env.place_object("blue_cube", [0.15, PUSH_EDGE_Y + 0.01, 0.0175], UPRIGHT)
    assert env.is_success()
    env.place_object("blue_cube", [0.15, PUSH_EDGE_Y - 0.01, 0.0175], UPRIGHT)
    assert not env.is_success()
    env.place_object("blue_cube", [0.15, PUSH_EDGE_Y + 0.02, 0.08], UPRIGHT)  # carried, not on the table
    assert not env.is_success()
    env.set_task(suite.by_id("push_blue_right"))
    env.place_object("blue_cube", [0.15, -PUSH_EDGE_Y - 0.01, 0.0175], UPRIGHT)
    assert env.is_success()
    env.place_object("blue_cube", [0.15, PUSH_EDGE_Y + 0.01, 0.0175], UPRIGHT)  # the other edge
    assert not env.is_success()


def test_task_on_the_wrong_scene_is_refused() -> None:
    pick = SimEnv(seed=0)
    with pytest.raises(SimModelError, match="red_cube"):
        pick.set_task(get_suite("cubes").by_id("pick_red"))


def test_moved_object(fresh: SimEnv) -> None:
    env = fresh
    start = env.object_positions()
    assert env.moved_object(start) is None
    p = start["green_cube"]
    env.place_object("green_cube", [p[0], p[1], p[2] + 0.03], UPRIGHT)
    q = start["red_cube"]
    env.place_object("red_cube", [q[0] + 0.01, q[1], q[2]], UPRIGHT)  # a nudge below 2 cm
    assert env.moved_object(start) == "green_cube"
    env.place_object("red_cube", [q[0] + 0.05, q[1], q[2]], UPRIGHT)
    assert env.moved_object(start) == "red_cube"


# ---------------------------------------------------------------------- env-state


def test_env_state_names_and_values(fresh: SimEnv) -> None:
    env = fresh
    names = env_state_names(env)
    assert len(names) == 24
    assert names[:7] == ["red_cube.x", "red_cube.y", "red_cube.z", "red_cube.qw", "red_cube.qx", "red_cube.qy", "red_cube.qz"]
    assert names[7] == "green_cube.x" and names[14] == "blue_cube.x"
    assert names[-3:] == ["bin.x", "bin.y", "bin.z"]
    s = env_state(env)
    assert s.shape == (24,)
    assert np.allclose(s[21:24], env.target_position())
    assert np.allclose(s[7:10], env.object_pose("green_cube")[0])
    # Canonical orientation: a cube turned by 90 degrees reads the same.
    p = env.object_pose("blue_cube")[0]
    env.place_object("blue_cube", p, [np.cos(0.3), 0, 0, np.sin(0.3)])
    a = env_state(env)[17:21]
    env.place_object("blue_cube", p, [np.cos(0.3 + np.pi / 4), 0, 0, np.sin(0.3 + np.pi / 4)])
    b = env_state(env)[17:21]
    assert np.allclose(a, b, atol=1e-9) and a[0] >= 0


# ---------------------------------------------------------------------- randomization and scene state


def _visuals(env: SimEnv) -> np.ndarray:
    m = env.model
    return np.concatenate([m.light_dir.ravel(), m.light_diffuse.ravel(), m.mat_rgba.ravel(),
                           m.cam_pos.ravel(), m.cam_quat.ravel()])


def test_randomize_changes_the_scene_only_when_asked() -> None:
    plain = SimEnv(CUBES_MODEL, seed=0)
    nominal = _visuals(plain)
    plain.reset(4)
    assert np.array_equal(_visuals(plain), nominal)
    rand = SimEnv(CUBES_MODEL, seed=0, randomize="lighting,colors,camera")
    rand.reset(4)
    first = _visuals(rand)
    assert not np.allclose(first, nominal)
    # The layout of a seed is the same with and without randomization.
    assert all(np.array_equal(a, b) for a, b in zip(plain.object_positions().values(),
                                                     rand.object_positions().values(), strict=True))
    rand.reset(5)
    assert not np.allclose(_visuals(rand), first)
    rand.reset(4)
    assert np.array_equal(_visuals(rand), first)  # seeded
    # Cube colours stay recognizably red / green / blue.
    for seed in range(20):
        rand.reset(seed)
        for colour, channel in zip(COLOURS, range(3), strict=True):
            rgba = rand.model.mat_rgba[mujoco.mj_name2id(rand.model, mujoco.mjtObj.mjOBJ_MATERIAL, f"{colour}_cube")]
            assert np.argmax(rgba[:3]) == channel and rgba[channel] - np.sort(rgba[:3])[1] > 0.4
    only_light = SimEnv(CUBES_MODEL, seed=0, randomize=frozenset({"lighting"}))
    only_light.reset(4)
    m = only_light.model
    assert np.array_equal(m.mat_rgba, plain.model.mat_rgba) and np.array_equal(m.cam_pos, plain.model.cam_pos)
    assert not np.allclose(m.light_dir, plain.model.light_dir)
    with pytest.raises(ValueError, match="camera, colors, lighting"):
        SimEnv(CUBES_MODEL, randomize="fog")


def test_randomize_changes_rendered_images() -> None:
    from telecorder.sim.render import SimRenderer

    envs = [SimEnv(CUBES_MODEL, seed=0), SimEnv(CUBES_MODEL, seed=0, randomize="lighting,colors,camera")]
    images = []
    for e in envs:
        e.reset(2)
        try:
            r = SimRenderer(e.model, 48, 48)
        except RuntimeError as exc:
            pytest.skip(f"offscreen rendering unavailable: {exc}")
        with r:
            images.append(r.render(e.snapshot()[0], "front").astype(int))
    again = SimEnv(CUBES_MODEL, seed=0)
    again.reset(2)
    with SimRenderer(again.model, 48, 48) as r:
        assert np.array_equal(r.render(again.snapshot()[0], "front"), images[0])
    assert np.abs(images[0] - images[1]).mean() > 1.0


def test_scene_state_round_trip_restores_objects_bin_and_visuals() -> None:
    env = SimEnv(CUBES_MODEL, seed=0, randomize="lighting,colors")
    env.reset(9)  # saved at the start of an episode, as the recorder does
    state = json.loads(json.dumps(env.scene_state()))
    assert state["model"] == "cubes.xml" and state["seed"] == 9 and "visuals" in state
    poses = {n: env.object_pose(n) for n in env.objects}
    bin_c, look = env.target_position(), _visuals(env)
    home = env.home_action()
    for _ in range(5):
        env.apply_action(home)
    expected = env.snapshot()[0]

    other = SimEnv(CUBES_MODEL, seed=1)
    other.restore_scene_state(state)
    assert all(np.array_equal(other.object_pose(n)[0], poses[n][0]) for n in env.objects)
    assert np.array_equal(other.target_position(), bin_c)
    assert np.array_equal(_visuals(other), look)
    for _ in range(5):
        other.apply_action(home)
    assert np.array_equal(other.snapshot()[0], expected)
    with pytest.raises(SimModelError, match=r"cubes\.xml"):
        SimEnv(seed=0).restore_scene_state(state)
