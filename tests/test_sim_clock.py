"""Recording a simulation on simulated time (--no-realtime) and its privileged state (--env-state).

No test here measures speed: on a busy machine a simulated-time run may be slow, and its
file must be exactly the same anyway. What is checked is that every time in the file is
simulated time, that the dataset and its episodes say so, and that doctor reads it so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_info, synthetic_steps
from rich.console import Console

from telecorder.datasets.async_writer import AsyncEpisodeWriter
from telecorder.datasets.dataset import Dataset, DatasetWriter
from telecorder.datasets.doctor import check_dataset
from telecorder.datasets.features import CLOCK_MONOTONIC, CLOCK_SIMULATION, DatasetInfo
from telecorder.errors import SchemaMismatchError, TelecorderError

BIN = Path(sys.executable).parent
ENV_STATE = "observation.environment_state"


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "COLUMNS": "120"}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- end to end, real sim


@pytest.mark.slow
def test_no_realtime_collect_records_simulated_time_and_cube_state(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    from telecorder.sim.env import SimEnv

    out = tmp_path / "sim"
    # The default reset pause is left on: simulated-time sessions skip it by themselves.
    proc = run(str(BIN / "collect"), "--device", "scripted", "--robot", "sim", "--no-realtime", "--env-state",
               "--sim-cameras", "front", "--camera-size", "64x48", "--episodes", "2", "--episode-time", "10",
               "--seed", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 episode(s) saved" in proc.stdout
    assert "simulated" in proc.stdout

    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["extra"]["clock"] == CLOCK_SIMULATION
    spec = info["features"][ENV_STATE]
    assert spec["shape"] == [7] and spec["dtype"] == "float32"
    assert spec["names"] == ["cube_x", "cube_y", "cube_z", "cube_qw", "cube_qx", "cube_qy", "cube_qz"]

    env = SimEnv()
    rest_z = env.cube_rest_z
    env.close()
    ds = Dataset.open(out)
    assert len(ds) == 2
    for ep in ds:
        with ep:
            n = len(ep)
            assert ep.attrs["clock"] == CLOCK_SIMULATION
            ts = ep.timestamps()
            # Tick k is at exactly k periods of simulated time, and each frame shows its own tick.
            np.testing.assert_array_equal(ts, np.arange(n) / 30.0)
            np.testing.assert_array_equal(ep.image_timestamps("front"), ts)
            idx = ep.frame_indices("front")
            np.testing.assert_array_equal(np.diff(idx), np.ones(n - 1))
            lateness = ep.tick_lateness()
            assert lateness is not None and not lateness.any()
            cube = ep.numeric(ENV_STATE)
            assert cube.shape == (n, 7) and cube.dtype == np.float32
            assert abs(cube[0, 2] - rest_z) < 0.005, "the cube starts at rest on the table"
            np.testing.assert_allclose(np.linalg.norm(cube[:, 3:], axis=1), 1.0, atol=1e-5)
            # The recorded pose is the cube's: where the episode counts as a success, it is lifted.
            if ep.attrs.get("success"):
                assert cube[-1, 2] > rest_z + 0.04
    for record in ds.records:
        assert record["late_ticks"] == 0 and record["missed_ticks"] == 0

    report = check_dataset(out)
    assert report.ok, report.all_errors
    assert report.all_warnings == []
    assert all(e.sync is not None and e.sync.clock == CLOCK_SIMULATION for e in report.episodes)
    doctor = run(str(BIN / "telecorder"), "doctor", str(out))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "late tick" not in doctor.stdout

    # Appending wall-clock episodes to it is refused, naming the clocks.
    proc = run(str(BIN / "collect"), "--device", "scripted", "--robot", "sim", "--env-state", "--sim-cameras",
               "front", "--camera-size", "64x48", "--episodes", "1", "--episode-time", "0.2", "--resume",
               "--out", str(out))
    assert proc.returncode != 0
    assert "clock 'simulation' vs 'monotonic'" in proc.stderr.replace("\n", "")


def test_no_realtime_with_a_real_robot_is_one_clear_error(tmp_path: Path) -> None:
    proc = run(str(BIN / "collect"), "--robot", "dynamixel", "--device", "leader_arm", "--no-realtime",
               "--out", str(tmp_path / "x"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    err = proc.stderr.replace("\n", "")
    assert "--no-realtime" in err and "--robot dynamixel" in err and "--device leader_arm" in err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- device checks


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"robot": "dynamixel", "device": "leader_arm"}, "--robot dynamixel"),
        ({"device": "leader_arm", "emulate": True}, "--device leader_arm"),
        ({"device": "kinesthetic", "emulate": True}, "--device kinesthetic"),
        ({"device": "gamepad"}, "--device gamepad"),
        ({"device": "keyboard"}, "--device keyboard"),
        ({"device": "vr"}, "live headset"),
        ({"cameras": "side=0"}, "--camera side"),
        ({"device": "policy", "intervene": "gamepad"}, "--intervene gamepad"),
    ],
)
def test_no_realtime_refuses_what_lives_outside_the_simulation(changes: dict, named: str) -> None:
    from telecorder.collect.cameras.opencv import CameraSpec
    from telecorder.collect.factory import DeviceConfig, make_devices

    if "cameras" in changes:
        changes = {**changes, "cameras": [CameraSpec.parse(changes["cameras"])]}
    with pytest.raises(TelecorderError, match="no-realtime") as exc:
        make_devices(DeviceConfig(realtime=False, sim_cameras=[], **changes))
    assert named in str(exc.value)


@pytest.mark.parametrize("changes", [{}, {"device": "policy"}, {"device": "policy", "intervene": "expert"},
                                     {"device": "vr", "pose_stream": Path("poses.jsonl")}])
def test_no_realtime_allows_simulated_and_replayed_drivers(changes: dict) -> None:
    from telecorder.collect.factory import DeviceConfig, _check_sim_only_options

    _check_sim_only_options(DeviceConfig(realtime=False, **changes))


def test_env_state_is_off_by_default_and_needs_the_cube(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    from telecorder.collect.factory import DeviceConfig, make_devices
    from telecorder.collect.robots.sim import SimRobot
    from telecorder.collect.session import RecordingSession, SessionConfig

    robot, teleop, cameras = make_devices(DeviceConfig(sim_cameras=[]))
    try:
        robot.connect()
        info = RecordingSession(robot, teleop, cameras, SessionConfig(out=tmp_path / "x"),
                                console=Console(quiet=True)).dataset_info()
        assert ENV_STATE not in info.features and ENV_STATE not in robot.observe()
        assert info.clock == CLOCK_MONOTONIC and info.extra["clock"] == CLOCK_MONOTONIC
    finally:
        robot.disconnect()

    robot = SimRobot(env_state=True)
    try:
        robot.connect()
        from telecorder.sim.symmetry import canonical_cube_quat

        pos, quat = robot.env.cube_pose()
        np.testing.assert_allclose(robot.observe()[ENV_STATE], np.concatenate([pos, canonical_cube_quat(quat)]),
                                   atol=1e-6)
        # The same physical pose reads the same: the cube turned by a quarter turn about any axis.
        first = robot.observe()[ENV_STATE]
        for axis in range(3):
            turn = np.zeros(4)
            turn[0] = turn[1 + axis] = np.sqrt(0.5)
            from telecorder.sim.symmetry import quat_mul

            robot.env.place_cube(pos, quat_mul(quat, turn))
            np.testing.assert_allclose(robot.observe()[ENV_STATE], first, atol=1e-5)
    finally:
        robot.disconnect()

    from test_sim import _write_arm  # a model without a task cube

    with pytest.raises(TelecorderError, match=r"env-state.*cube"):
        SimRobot(_write_arm(tmp_path), env_state=True)
    with pytest.raises(TelecorderError, match="env-state"):
        make_devices(DeviceConfig(robot="dynamixel", device="leader_arm", env_state=True))


def test_canonical_cube_orientation_is_the_equivalent_nearest_the_identity():
    from telecorder.sim.symmetry import CUBE_SYMMETRIES, canonical_cube_quat, quat_mul

    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        c = canonical_cube_quat(q)
        assert c[0] >= 0 and abs(np.linalg.norm(c) - 1) < 1e-9
        # It is one of q's 24 equivalents, and none of them is nearer the identity.
        equivalents = np.array([quat_mul(q, g) for g in CUBE_SYMMETRIES])
        assert np.isclose(np.abs(equivalents @ c), 1.0).any()
        assert c[0] >= np.abs(equivalents[:, 0]).max() - 1e-12
    for yaw_deg, expected in ((30, 30), (100, 10), (-170, 10), (44, 44), (46, -44)):
        y = np.radians(yaw_deg)
        c = canonical_cube_quat(np.array([np.cos(y / 2), 0, 0, np.sin(y / 2)]))
        assert np.degrees(2 * np.arctan2(c[3], c[0])) == pytest.approx(expected)


# ---------------------------------------------------------------- doctor and the clock


def _write_late(root: Path, info: DatasetInfo, attrs: dict, *, resume: bool = False, gap: bool = False) -> None:
    """One 40-step episode every tick of which says it ran 50 ms late (and optionally a skipped slot)."""
    with DatasetWriter(root, info, resume=resume) as dw:
        writer = AsyncEpisodeWriter(dw, encode_threads=1)
        try:
            writer.begin({"task": "t", **attrs})
            for i, step in enumerate(synthetic_steps(40, info)):
                step.lateness = 0.05
                if gap and i >= 20:
                    step.timestamp += 2 / info.fps
                writer.add(step)
            writer.end({}, {"task": "t"}).result(timeout=30)
        finally:
            writer.close()


def _late_warnings(root: Path) -> list[str]:
    report = check_dataset(root)
    assert report.ok, report.all_errors
    return [w for w in report.all_warnings if "late tick" in w]


def test_doctor_reports_lateness_on_the_wall_clock_only(tmp_path: Path) -> None:
    wall = tmp_path / "wall"
    _write_late(wall, make_info(cameras=()), {})  # no clock anywhere: an older, wall-clock dataset
    assert len(_late_warnings(wall)) == 1

    sim = tmp_path / "sim"
    _write_late(sim, make_info(cameras=()), {})
    info = DatasetInfo.load(sim / "meta" / "info.json")
    info.extra["clock"] = CLOCK_SIMULATION
    info.save(sim / "meta" / "info.json")
    assert _late_warnings(sim) == []
    sync = check_dataset(sim).episodes[0].sync
    assert sync is not None and sync.late_ticks == 0 and sync.max_lateness == 0.0

    # The episode's own attribute says it too (a dataset that does not).
    ep_attr = tmp_path / "ep_attr"
    _write_late(ep_attr, make_info(cameras=()), {"clock": CLOCK_SIMULATION})
    assert _late_warnings(ep_attr) == []

    # Everything else is still checked on simulated time: a skipped slot is a missed tick.
    gap = tmp_path / "gap"
    _write_late(gap, make_info(cameras=()), {"clock": CLOCK_SIMULATION}, gap=True)
    warnings = check_dataset(gap).all_warnings
    assert any("2 missed tick" in w for w in warnings), warnings
    assert not any("late tick" in w for w in warnings)


def test_resuming_with_the_other_clock_is_refused(tmp_path: Path) -> None:
    def info(clock: str | None) -> DatasetInfo:
        i = make_info(cameras=())
        if clock is not None:
            i.extra["clock"] = clock
        return i

    old = tmp_path / "old"
    _write_late(old, info(None), {})
    # A dataset that names no clock is a wall-clock one: it takes monotonic episodes, not simulated ones.
    _write_late(old, info(CLOCK_MONOTONIC), {}, resume=True)
    assert DatasetInfo.load(old / "meta" / "info.json").clock == CLOCK_MONOTONIC
    with pytest.raises(SchemaMismatchError, match="clock 'monotonic' vs 'simulation'"):
        DatasetWriter(old, info(CLOCK_SIMULATION), resume=True)

    sim = tmp_path / "sim"
    _write_late(sim, info(CLOCK_SIMULATION), {})
    _write_late(sim, info(CLOCK_SIMULATION), {}, resume=True)
    with pytest.raises(SchemaMismatchError, match="clock 'simulation' vs 'monotonic'"):
        DatasetWriter(sim, info(None), resume=True)
    assert len(Dataset.open(sim)) == 2
