"""The bimanual scene: two arms, ALOHA's action layout, the transfer task's check and its scripted expert."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco", reason="the sim extra (MuJoCo) is not installed")

from telecorder.sim.bimanual_expert import BimanualExpert
from telecorder.sim.env import SimEnv, SimModelError
from telecorder.sim.scenes import scene_model
from telecorder.sim.task_expert import make_expert, run_expert_episode
from telecorder.sim.tasks import get_suite

ARM = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


@pytest.fixture(scope="module")
def env() -> SimEnv:
    return SimEnv(scene_model("bimanual"), seed=0)


def test_layout_is_alohas_left_then_right_gripper_last(env: SimEnv) -> None:
    assert env.joint_names == [f"left_{j}" for j in ARM] + [f"right_{j}" for j in ARM]
    assert env.gripper_indices == [5, 11]
    assert env.ee_sites == ["left_ee_site", "right_ee_site"]
    assert env.camera_names == ["top", "left_wrist", "right_wrist"]
    # Both grippers normalized 0 (closed) .. 1 (open), in the action and the measurement.
    assert env.action_low[[5, 11]].tolist() == [0.0, 0.0] and env.action_high[[5, 11]].tolist() == [1.0, 1.0]
    env.reset(seed=0)
    q = env.joint_positions()
    assert q[[5, 11]] == pytest.approx([1.0, 1.0], abs=1e-3)
    a = env.home_action()
    a[11] = 0.0
    for _ in range(20):
        env.apply_action(a)
    q = env.joint_positions()
    assert q[11] < 0.05 and q[5] > 0.95  # only the right gripper closed


def test_cube_spawns_in_front_of_the_left_arm(env: SimEnv) -> None:
    for seed in range(20):
        env.reset(seed=seed)
        x, y, _ = env.cube_pose()[0]
        assert 0.09 <= x <= 0.21 and 0.06 <= y <= 0.12


def test_transfer_succeeds_only_when_the_right_gripper_alone_holds_it_up(env: SimEnv) -> None:
    task = get_suite("bimanual").by_id("transfer")
    env.set_task(task)
    try:
        env.reset(seed=3)
        assert not env.is_success()  # on the table
        expert = BimanualExpert(env, seed=3)
        seen: dict[str, bool] = {}
        for _ in range(600):
            env.apply_action(expert.act())
            # Lifted by the left arm, or held by both: not yet handed over.
            if expert.phase in ("carry", "right_close"):
                seen[expert.phase] = seen.get(expert.phase, False) or env.is_success()
            if expert.done or expert.failed:
                break
        assert expert.done and env.is_success()
        assert seen == {"carry": False, "right_close": False}
        # Dropped on the table after the handover: no longer a success.
        env.place_cube(np.array([0.15, 0.0, 0.0175]), np.array([1.0, 0.0, 0.0, 0.0]))
        env.apply_action(env.home_action())
        assert not env.is_success()
    finally:
        env.set_task(None)


def test_the_scripted_expert_hands_over_in_at_least_98_percent_of_50_seeds() -> None:
    env = SimEnv(scene_model("bimanual"))
    task = get_suite("bimanual").by_id("transfer")
    wins = sum(run_expert_episode(env, task, seed, max_seconds=20.0) for seed in range(50))
    assert wins >= 49, f"{wins}/50"


def test_make_expert_and_errors(env: SimEnv) -> None:
    env.reset(seed=0)
    assert isinstance(make_expert(env, None), BimanualExpert)  # two arms, no task: the handover
    assert isinstance(make_expert(env, get_suite("bimanual").by_id("transfer")), BimanualExpert)
    with pytest.raises(SimModelError, match="left_ee_site"):
        BimanualExpert(SimEnv(scene_model("pick")))
    with pytest.raises(SimModelError, match=r"needs .red_cube."):
        env.set_task(get_suite("cubes").by_id("pick_red"))


def test_a_bad_spawn_region_is_one_readable_error(tmp_path) -> None:
    text = scene_model("bimanual").read_text().replace('data="0.09 0.21 0.06 0.12"', 'data="0.3 0.1 0.06 0.12"')
    bad = tmp_path / "bad.xml"
    bad.write_text(text)
    with pytest.raises(SimModelError, match=r"cube_spawn_region.*min < max"):
        SimEnv(bad)


def test_record_replay_and_export_a_handover(tmp_path) -> None:
    from test_cli import run, tool

    out = tmp_path / "handover"
    run(tool("collect"), "--device", "scripted", "--robot", "sim", "--scene", "bimanual", "--no-realtime",
        "--camera-size", "96x72", "--episodes", "1", "--episode-time", "10", "--reset-time", "0", "--seed", "4",
        "--out", str(out), check=True, timeout=600)
    info = run(tool("telecorder"), "info", str(out), check=True).stdout
    assert "telecorder_sim_bimanual" in info and "right_gripper" in info
    replay = run(tool("telecorder"), "replay", str(out), "--episode", "0", "--robot", "sim", check=True, timeout=600)
    assert "task success: recorded yes, replayed yes" in replay.stdout
    sheet = tmp_path / "sheet.png"
    run(tool("telecorder"), "export", str(out), "--episode", "0", "--contact-sheet", str(sheet), check=True, timeout=600)
    assert sheet.stat().st_size > 10_000
