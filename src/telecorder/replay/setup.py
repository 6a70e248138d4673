"""The robot a replay drives, the scene it restores, and the cameras it records with ``--out``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..collect.interfaces import Camera, Robot
from ..errors import DatasetError, DeviceError, TelecorderError
from .source import ENV_STATE

if TYPE_CHECKING:
    from .config import ReplayConfig
    from .source import RecordedEpisode


def make_robot(cfg: ReplayConfig, ep: RecordedEpisode, cleanups: list[Callable[[], None]]) -> tuple[Robot, str]:
    """The follower, built as ``collect`` builds it (the factory's), and how to name it in messages."""
    from ..collect.factory import DeviceConfig, _arm_port, _follower

    scene = recorded_scene(ep) if cfg.robot == "sim" and cfg.robot_model is None else None
    dcfg = DeviceConfig(robot=cfg.robot, device="replay", robot_model=cfg.robot_model, fps=cfg.rate(ep),
                        follower_port=cfg.port, follower_calibration=cfg.calibration, baudrate=cfg.baudrate,
                        emulate=cfg.emulate, env_state=cfg.robot == "sim" and ENV_STATE in ep.states, scene=scene)
    if cfg.robot == "sim":
        try:
            robot = _follower(dcfg, cleanups)
        except DeviceError as e:
            if not dcfg.env_state:
                raise
            raise TelecorderError(
                f"{ep.dataset} recorded the task cube's pose ({ENV_STATE}) and {cfg.robot_model} has no cube: "
                "replay it on the model it was recorded with"
            ) from e
        task = recorded_task(ep, scene)
        if task is not None:
            robot.set_task(task)  # the sim judges the replay by the task the episode recorded
        model = cfg.robot_model.name if cfg.robot_model is not None else f"the built-in {scene or 'pick'} scene"
        return robot, f"the simulated arm ({model})"
    if cfg.port:
        return _follower(dcfg, cleanups), f"the Dynamixel arm on {cfg.port}"
    if not cfg.emulate:
        raise TelecorderError(
            "replay --robot dynamixel needs --port PORT, the follower's serial adapter (e.g. /dev/ttyUSB1; "
            "list them with 'ls /dev/serial/by-id/'), or --emulate for the built-in emulated arm"
        )
    from ..collect.dynamixel.bus import DynamixelBus
    from ..collect.robots.dynamixel import EmulatedFollower

    port, cal, emu = _arm_port(dcfg, "follower", None, cfg.calibration, cleanups)
    return EmulatedFollower(DynamixelBus(port, cal.ids, baudrate=cfg.baudrate), cal, emu), \
        f"the emulated Dynamixel arm ({port})"


def recorded_scene(ep: RecordedEpisode) -> str | None:
    """The built-in scene (``--scene``) an episode was recorded in, from the model file its
    simulator state names; None for the default scene or a model of the user's own."""
    from ..collect.robots.sim import SCENE_ATTR
    from ..sim.scenes import DEFAULT_SCENE, SCENES

    state = ep.attrs.get(SCENE_ATTR)
    model = state.get("model") if isinstance(state, dict) else None
    name = next((n for n, path in SCENES.items() if path.name == model), None)
    return None if name == DEFAULT_SCENE else name


def recorded_task(ep: RecordedEpisode, scene: str | None) -> object | None:
    """The task of the scene's suite that an episode recorded (its ``task_id``), else the one its
    instruction is a paraphrase of; None without a suite or a match (success is then the scene's own)."""
    from ..sim.scenes import SCENES
    from ..sim.tasks import SUITES

    suite = next((s for s in SUITES.values() if s.scene == scene and scene in SCENES), None)
    if suite is None:
        return None
    task_id = ep.attrs.get("task_id")
    if isinstance(task_id, str) and task_id in suite.task_ids:
        return suite.by_id(task_id)
    text = ep.attrs.get("language_instruction") or ep.attrs.get("task")
    found = suite.match(text) if isinstance(text, str) else None
    return found[0] if found else None


def scene_restorer(ep: RecordedEpisode, robot: Robot) -> tuple[Callable[[], None] | None, str | None]:
    """What puts the episode's starting scene back before the first tick, and what the report says of it."""
    from ..collect.robots.sim import SCENE_ATTR, SimRobot

    if not isinstance(robot, SimRobot):
        return None, None
    scene = ep.attrs.get(SCENE_ATTR)
    if scene is not None:
        from ..datasets.episode_file import episode_relpath

        path = ep.dataset / episode_relpath(ep.index)
        where = str(path) if path.is_file() else f"{ep.dataset} episode {ep.index}"
        check_scene(scene, f"{where}: attribute {SCENE_ATTR!r}")
    if isinstance(scene, dict) and "qpos" in scene:
        seed = scene.get("seed")

        def restore() -> None:
            robot.restore_scene(scene)

        return restore, "restored from the episode's recorded simulator state" + (
            f" (reset seed {seed})" if seed is not None else "")
    if ENV_STATE in ep.states and robot.env.has_task and len(ep.states[ENV_STATE]):
        first = np.asarray(ep.states[ENV_STATE][0], dtype=np.float64)

        def place() -> None:
            robot.reset()
            robot.env.place_cube(first[:3], first[3:7])

        return place, (f"cube placed at its first recorded pose ({ENV_STATE}); the episode stores no simulator "
                       "state, so the arm starts from the model's home pose")
    return None, ("not restored: the episode stores neither its simulator state (recorded before telecorder kept "
                  "it) nor the cube's pose, so the objects are where this replay's reset put them and drift "
                  "after contact and the success check say little")


_SCENE_ARRAYS = ("qpos", "qvel", "ctrl", "act", "mocap_pos", "mocap_quat")


def check_scene(scene: object, where: str) -> None:
    """A recorded simulator state has the types :meth:`SimEnv.restore_scene_state` needs: lists of
    finite numbers, a finite time, a whole-number seed; else one DatasetError naming the field."""
    if not isinstance(scene, dict):
        raise DatasetError(f"{where} must be a JSON object, not {type(scene).__name__}; the file is damaged "
                           "or was altered by another tool")
    for key in _SCENE_ARRAYS:
        if key not in scene:
            continue
        value = scene[key]
        if (not isinstance(value, list) or len(value) > 100_000
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)):
            raise DatasetError(f"{where}: {key!r} must be a list of finite numbers, not {str(value)[:60]!r}")
    time = scene.get("time", 0.0)
    if not isinstance(time, (int, float)) or isinstance(time, bool) or not np.isfinite(time):
        raise DatasetError(f"{where}: 'time' must be a finite number, not {str(time)[:40]!r}")
    seed = scene.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise DatasetError(f"{where}: 'seed' must be a whole number or null, not {str(seed)[:40]!r}")


def sim_cameras(cfg: ReplayConfig, ep: RecordedEpisode, robot: Robot, notes: list[str]) -> list[Camera]:
    """The recorded episode's sim cameras at its resolution, for a replay recorded with ``--out``."""
    from ..collect.cameras.sim import SimCameraRig
    from ..collect.robots.sim import SimRobot

    feats = ep.info.image_features
    if not feats:
        return []
    if not isinstance(robot, SimRobot):
        notes.append("the recording's cameras are not recorded again: --out records the arm's data only on hardware")
        return []
    names = [f.camera for f in feats if f.camera in robot.env.camera_names]
    missing = [f.camera for f in feats if f.camera not in robot.env.camera_names]
    if missing:
        notes.append(f"the model has no camera {', '.join(map(repr, missing))}: not recorded in the replay")
    if not names:
        return []
    height, width = next(f.shape[:2] for f in feats if f.camera == names[0])
    return SimCameraRig(robot, names, int(width), int(height), cfg.rate(ep)).cameras()
