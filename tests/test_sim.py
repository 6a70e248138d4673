"""Tests of the MuJoCo simulation package: scene, env, rendering, kinematics, scripted expert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ARM_JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"]
ACTION_NAMES = [*ARM_JOINTS, "gripper"]


# ---------------------------------------------------------------------- fixtures

from telecorder.sim import ensure_gl_backend  # noqa: E402

# Must run before the first `import mujoco`, which fixes the OpenGL backend for the process.
ensure_gl_backend()
mujoco = pytest.importorskip("mujoco")

from telecorder.sim import (  # noqa: E402  (needs the importorskip above)
    DEFAULT_MODEL,
    Kinematics,
    ScriptedExpert,
    SimEnv,
    SimModelError,
)


@pytest.fixture(scope="module")
def env() -> SimEnv:
    return SimEnv(seed=0)


@pytest.fixture(scope="module")
def kin(env: SimEnv) -> Kinematics:
    return Kinematics(env.model)


@pytest.fixture(scope="module")
def renderer_cls():
    from telecorder.sim.render import SimRenderer

    return SimRenderer


def _make_renderer(renderer_cls, model, width, height):
    try:
        return renderer_cls(model, width, height)
    except RuntimeError as exc:  # no usable OpenGL in this environment
        pytest.skip(f"offscreen rendering unavailable: {exc}")


TWO_JOINT_ARM = """
<mujoco model="two_link">
  <compiler angle="radian"/>
  <worldbody>
    <light pos="0 0 2"/>
    <geom type="plane" size="1 1 0.05" rgba="0.5 0.5 0.5 1"/>
    <body name="link1" pos="0 0 0.1">
      <joint name="j1" type="hinge" axis="0 0 1" range="-1.5 1.5" damping="1.5"/>
      <geom type="capsule" fromto="0 0 0 0.2 0 0" size="0.02" rgba="0.8 0.3 0.2 1"/>
      <body name="link2" pos="0.2 0 0">
        <joint name="j2" type="hinge" axis="0 0 1" damping="1" {j2_range}/>
        <geom type="capsule" fromto="0 0 0 0.15 0 0" size="0.02" rgba="0.2 0.3 0.8 1"/>
        <site name="tip" pos="0.15 0 0"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <position name="a1" joint="j1" kp="20" ctrlrange="-1 1"/>
    <position name="a2" joint="j2" kp="20" {a2_range}/>
  </actuator>
</mujoco>
"""


def _write_arm(tmp_path: Path, j2_range: str = 'range="-2 2"', a2_range: str = "") -> Path:
    path = tmp_path / "two_link.xml"
    path.write_text(TWO_JOINT_ARM.format(j2_range=j2_range, a2_range=a2_range))
    return path


# ---------------------------------------------------------------------- built-in scene


def test_builtin_scene_names() -> None:
    model = mujoco.MjModel.from_xml_path(str(DEFAULT_MODEL))
    actuators = [model.actuator(i).name for i in range(model.nu)]
    assert actuators == ACTION_NAMES
    joints = {model.joint(i).name for i in range(model.njnt)}
    assert set(ARM_JOINTS) <= joints
    cameras = [model.camera(i).name for i in range(model.ncam)]
    assert set(cameras) == {"front", "wrist"}
    assert model.site("ee_site") is not None
    assert model.body("cube") is not None
    assert model.neq == 1  # the two finger slides are coupled
    assert 0.001 <= model.opt.timestep <= 0.003
    for i, name in enumerate(ARM_JOINTS):
        np.testing.assert_allclose(model.actuator_ctrlrange[i], model.joint(name).range)
    finger = model.actuator_trnid[5, 0]
    np.testing.assert_allclose(model.actuator_ctrlrange[5], model.jnt_range[finger])


def test_env_conventions(env: SimEnv) -> None:
    assert env.joint_names == ACTION_NAMES
    assert env.camera_names == ["front", "wrist"]
    assert env.has_task
    assert env.action_low.dtype == np.float64 and env.action_high.shape == (6,)
    assert (env.action_low[5], env.action_high[5]) == (0.0, 1.0)
    env.reset(seed=3)
    q = env.joint_positions()
    np.testing.assert_allclose(q, env.home_action(), atol=1e-9)
    assert q[5] == pytest.approx(1.0)  # home: gripper fully open
    assert env.joint_velocities().shape == (6,)
    assert not env.is_success()


def test_reset_is_seeded_and_places_cube_in_reach(env: SimEnv) -> None:
    poses = []
    for seed in (1, 1, 2):
        env.reset(seed=seed)
        poses.append(env.cube_pose())
    np.testing.assert_array_equal(poses[0][0], poses[1][0])
    assert not np.allclose(poses[0][0], poses[2][0])
    for pos, quat in poses:
        assert 0.1 < pos[0] < 0.3 and abs(pos[1]) < 0.15
        assert pos[2] == pytest.approx(env.cube_rest_z)
        assert np.linalg.norm(quat) == pytest.approx(1.0)


def test_apply_action_steps_real_physics_and_clips(env: SimEnv) -> None:
    env30 = SimEnv(control_dt=1 / 30, seed=0)
    t0 = env30.data.time
    env30.apply_action(env30.home_action())
    assert env30.data.time - t0 == pytest.approx(1 / 30)
    assert env30.n_substeps == round((1 / 30) / 0.002)

    env.reset(seed=0)
    wild = env.home_action()
    wild[0] = 100.0  # far beyond the pan range
    wild[5] = -5.0
    for _ in range(30):
        env.apply_action(wild)
    q = env.joint_positions()
    assert q[0] == pytest.approx(env.action_high[0], abs=0.02)
    assert q[5] == pytest.approx(0.0, abs=0.02)
    np.testing.assert_array_equal(env.data.ctrl[0], env.model.actuator_ctrlrange[0, 1])
    with pytest.raises(ValueError):
        env.apply_action(np.zeros(3))
    with pytest.raises(ValueError):
        env.apply_action(np.full(6, np.nan))


def test_gripper_is_normalised(env: SimEnv) -> None:
    env.reset(seed=0)
    action = env.home_action()
    for target in (0.0, 0.5, 1.0):
        action[5] = target
        for _ in range(20):
            env.apply_action(action)
        assert env.joint_positions()[5] == pytest.approx(target, abs=0.02)


def test_snapshot_is_a_copy(env: SimEnv) -> None:
    env.reset(seed=0)
    qpos, qvel, t = env.snapshot()
    assert qpos.shape == (env.model.nq,) and qvel.shape == (env.model.nv,)
    env.apply_action(env.home_action())
    assert env.data.time > t
    qpos[:] = 123.0
    assert not np.any(env.data.qpos == 123.0)


# ---------------------------------------------------------------------- rendering


def test_render_both_cameras(env: SimEnv, renderer_cls) -> None:
    env.reset(seed=0)
    qpos, _, _ = env.snapshot()
    before = env.data.qpos.copy()
    renderer = _make_renderer(renderer_cls, env.model, 160, 120)
    try:
        front = renderer.render(qpos, "front")
        wrist = renderer.render(qpos, "wrist")
        with pytest.raises(ValueError, match="unknown camera"):
            renderer.render(qpos, "nope")
    finally:
        renderer.close()
    for img in (front, wrist):
        assert img.shape == (120, 160, 3) and img.dtype == np.uint8
        assert img.std() > 10, "image looks blank"
    assert np.abs(front.astype(int) - wrist.astype(int)).mean() > 10
    np.testing.assert_array_equal(env.data.qpos, before)  # renderer used its own MjData


def test_render_follows_qpos(env: SimEnv, renderer_cls) -> None:
    env.reset(seed=0)
    qpos, _, _ = env.snapshot()
    moved = qpos.copy()
    moved[0] += 0.8  # swing the arm
    renderer = _make_renderer(renderer_cls, env.model, 96, 72)
    try:
        a = renderer.render(qpos, "front")
        b = renderer.render(moved, "front")
    finally:
        renderer.close()
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1


# ---------------------------------------------------------------------- kinematics


def test_fk_matches_simulation(env: SimEnv, kin: Kinematics) -> None:
    assert kin.joint_names == ARM_JOINTS
    env.reset(seed=4)
    action = env.home_action()
    action[:5] = [0.4, 0.3, 1.5, 0.9, -0.7]
    for _ in range(15):
        env.apply_action(action)
    pos, rot = kin.fk(env.joint_positions()[:5])
    # After mj_step, env.data's poses belong to the state before the last integration step.
    mujoco.mj_kinematics(env.model, env.data)
    site = env.model.site("ee_site").id
    np.testing.assert_allclose(pos, env.data.site_xpos[site], atol=1e-9)
    np.testing.assert_allclose(rot, env.data.site_xmat[site].reshape(3, 3), atol=1e-9)


def test_jacobian_matches_finite_differences(kin: Kinematics) -> None:
    q = np.array([0.3, 0.2, 1.4, 0.7, -0.4])
    jac = kin.jacobian(q)
    assert jac.shape == (6, 5)
    eps = 1e-6
    p0, r0 = kin.fk(q)
    for j in range(5):
        dq = np.zeros(5)
        dq[j] = eps
        p1, r1 = kin.fk(q + dq)
        np.testing.assert_allclose((p1 - p0) / eps, jac[:3, j], atol=1e-5)
        # Skew part of dR R^T is the world angular velocity.
        w = (r1 - r0) @ r0.T / eps
        np.testing.assert_allclose([w[2, 1], w[0, 2], w[1, 0]], jac[3:, j], atol=1e-5)


def test_ik_reaches_random_reachable_poses(kin: Kinematics) -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        q_true = rng.uniform(kin.lower, kin.upper)
        pos, rot = kin.fk(q_true)
        res = kin.ik(pos, rot, restarts=20)
        assert res.success, res
        assert np.all(res.q >= kin.lower) and np.all(res.q <= kin.upper)
        got_pos, got_rot = kin.fk(res.q)
        assert np.linalg.norm(got_pos - pos) < 1e-3
        angle = np.arccos(np.clip((np.trace(got_rot.T @ rot) - 1) / 2, -1, 1))
        assert np.degrees(angle) < 1.0


def test_ik_from_nearby_seed_converges_quickly(kin: Kinematics) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        q_true = rng.uniform(kin.lower, kin.upper)
        pos, rot = kin.fk(q_true)
        res = kin.ik(pos, rot, q0=kin.clip(q_true + rng.normal(0, 0.05, 5)))
        assert res.success and res.iterations < 30


def test_ik_unreachable_target_is_finite_and_fails(kin: Kinematics) -> None:
    for target in ([1.5, 0.0, 0.3], [0.0, 0.0, -2.0], [0.0, 0.0, 1.0]):
        res = kin.ik(np.array(target), np.eye(3), max_iters=60)
        assert not res.success
        assert np.all(np.isfinite(res.q)) and np.isfinite(res.pos_error)
        assert np.all(res.q >= kin.lower) and np.all(res.q <= kin.upper)
    far = kin.ik(np.array([1.5, 0.0, 0.3]), max_iters=100)
    # Closest reachable point: the arm stretched toward the target (reach ~0.4 m).
    assert 1.0 < far.pos_error < 1.25
    with pytest.raises(ValueError):
        kin.ik(np.array([np.nan, 0.0, 0.0]))


def test_ik_respects_limits_and_step_size(kin: Kinematics) -> None:
    pos, _ = kin.fk(np.array([0.0, 0.5, 1.0, 1.0, 0.0]))
    res = kin.ik(pos, q0=kin.home, max_iters=1, max_step=0.05)
    assert np.max(np.abs(res.q - kin.home)) <= 0.05 + 1e-12


def test_ik_nullspace_bias(kin: Kinematics) -> None:
    # Position-only IK leaves 2 redundant DoF; the null-space term should use them.
    q0 = np.array([0.2, 0.3, 1.2, 0.8, 0.0])
    target, _ = kin.fk(np.array([0.25, 0.4, 1.4, 0.6, 0.0]))
    rest = np.array([0.0, 0.3, 1.2, 0.8, 1.0])
    plain = kin.ik(target, q0=q0, max_iters=200)
    biased = kin.ik(target, q0=q0, max_iters=200, rest_pose=rest, nullspace_gain=0.2)
    assert plain.success and biased.success
    assert np.linalg.norm(biased.q - rest) < np.linalg.norm(plain.q - rest) - 0.1


# ---------------------------------------------------------------------- scripted expert


def _run_expert(env: SimEnv, seed: int) -> tuple[bool, float, float]:
    env.reset(seed=seed)
    expert = ScriptedExpert(env, seed=seed)
    max_step, prev = 0.0, None
    max_ticks = round(8.0 / env.control_dt)
    for tick in range(max_ticks):
        action = expert.act()
        assert action.shape == (6,)
        if prev is not None:
            max_step = max(max_step, float(np.max(np.abs(action[:5] - prev[:5]))))
        prev = action
        env.apply_action(action)
        # Stability: no exploding bodies, nothing sinking into anything.
        assert np.max(np.abs(env.data.qvel)) < 20.0
        if env.data.ncon:
            assert -env.data.contact.dist[: env.data.ncon].min() < 3e-3
        if expert.done:
            return True, (tick + 1) * env.control_dt, max_step
    return False, max_ticks * env.control_dt, max_step


def test_expert_success_rate_30hz() -> None:
    env = SimEnv(control_dt=1 / 30)
    results = [_run_expert(env, seed) for seed in range(20)]
    successes = sum(ok for ok, _, _ in results)
    assert successes >= 18, results
    assert all(t <= 8.0 for ok, t, _ in results if ok)
    # Smooth commands: under ~6 degrees per 33 ms tick.
    assert max(step for _, _, step in results) < 0.1


def test_expert_works_at_100hz() -> None:
    env = SimEnv(control_dt=0.01)
    results = [_run_expert(env, seed) for seed in range(100, 105)]
    assert all(ok for ok, _, _ in results), results


def test_expert_demos_differ_with_seed() -> None:
    env = SimEnv()
    actions = []
    for expert_seed in (0, 1):
        env.reset(seed=5)
        expert = ScriptedExpert(env, seed=expert_seed)
        actions.append(np.array([expert.act() for _ in range(60)]))
    assert not np.allclose(actions[0], actions[1])


# ---------------------------------------------------------------------- user models


def test_user_model_gets_default_cameras(tmp_path: Path, renderer_cls) -> None:
    env = SimEnv(_write_arm(tmp_path))
    assert env.camera_names == ["front", "top"]
    assert env.joint_names == ["j1", "j2"]
    np.testing.assert_allclose(env.action_low, [-1.0, -2.0])  # a2 falls back to the joint range
    np.testing.assert_allclose(env.action_high, [1.0, 2.0])
    assert not env.has_task and not env.is_success()
    for _ in range(30):
        env.apply_action(np.array([0.5, -0.5]))
    np.testing.assert_allclose(env.joint_positions(), [0.5, -0.5], atol=0.05)
    with pytest.raises(ValueError):
        ScriptedExpert(env)

    renderer = _make_renderer(renderer_cls, env.model, 80, 60)
    try:
        for cam in env.camera_names:
            img = renderer.render(env.snapshot()[0], cam)
            assert img.shape == (60, 80, 3) and img.std() > 5
    finally:
        renderer.close()
    # Larger than the model's default 640x480 offscreen buffer: grown on a private copy.
    renderer = _make_renderer(renderer_cls, env.model, 720, 500)
    try:
        assert renderer.render(env.snapshot()[0], "front").shape == (500, 720, 3)
    finally:
        renderer.close()
    assert env.model.vis.global_.offwidth == 640

    kin = Kinematics(env.model, site="tip")
    assert kin.joint_names == ["j1", "j2"]
    pos, _ = kin.fk(np.array([0.3, -0.4]))
    res = kin.ik(pos, q0=np.zeros(2))
    assert res.success


def test_broken_model_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.xml"
    bad.write_text("<mujoco><worldbody><geom type='sphere'/></worldbody>")
    with pytest.raises(SimModelError, match=r"broken\.xml"):
        SimEnv(bad)
    with pytest.raises(SimModelError, match="not found"):
        SimEnv(tmp_path / "missing.xml")


def test_actuator_without_range_is_rejected(tmp_path: Path) -> None:
    path = _write_arm(tmp_path, j2_range="")
    with pytest.raises(SimModelError, match=r"two_link\.xml.*'a2'"):
        SimEnv(path)


def test_actuator_not_on_a_joint_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "tendon.xml"
    path.write_text(
        """
        <mujoco>
          <worldbody>
            <body><joint name="j" range="-1 1"/><geom size="0.1"/></body>
          </worldbody>
          <tendon><fixed name="t"><joint joint="j" coef="1"/></fixed></tendon>
          <actuator><position name="on_tendon" tendon="t" kp="1" ctrlrange="-1 1"/></actuator>
        </mujoco>
        """
    )
    with pytest.raises(SimModelError, match="on_tendon"):
        SimEnv(path)
