"""Build the devices a ``collect`` command names: robot, teleop front-end, cameras."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .interfaces import Camera, Robot, Teleop
from .opencv_camera import CameraSpec, OpenCVCamera

ROBOTS = ("sim",)
DEVICES = ("scripted",)


@dataclass
class DeviceConfig:
    robot: str = "sim"
    device: str = "scripted"
    robot_model: Path | None = None
    script: str = "expert"
    fps: float = 30.0
    seed: int | None = None
    sim_cameras: list[str] | None = None  # None: every camera of the model
    camera_size: tuple[int, int] = (640, 480)
    camera_fps: float = 30.0
    cameras: list[CameraSpec] = field(default_factory=list)


def make_devices(cfg: DeviceConfig) -> tuple[Robot, Teleop, list[Camera]]:
    if cfg.robot not in ROBOTS:
        raise ValueError(f"unknown robot {cfg.robot!r}; available: {', '.join(ROBOTS)}")
    if cfg.device not in DEVICES:
        raise ValueError(f"unknown teleop device {cfg.device!r}; available: {', '.join(DEVICES)}")
    from .scripted import ScriptedTeleop
    from .sim_robot import SimCameraRig, SimRobot

    robot = SimRobot(cfg.robot_model, fps=cfg.fps, seed=cfg.seed)
    teleop = ScriptedTeleop(robot, script=cfg.script, seed=cfg.seed)
    cameras: list[Camera] = []
    names = robot.env.camera_names if cfg.sim_cameras is None else cfg.sim_cameras
    if names:
        w, h = cfg.camera_size
        cameras += SimCameraRig(robot, list(names), w, h, cfg.camera_fps).cameras()
    cameras += [OpenCVCamera.from_spec(spec) for spec in cfg.cameras]
    seen: set[str] = set()
    for cam in cameras:
        if cam.name in seen:
            raise ValueError(f"two cameras are named {cam.name!r}; give each --camera a distinct name")
        seen.add(cam.name)
    return robot, teleop, cameras
