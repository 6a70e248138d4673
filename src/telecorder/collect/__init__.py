"""Devices and recording: robot / teleop / camera interfaces, their implementations, the recorder."""

from .cameras.opencv import CameraSpec, OpenCVCamera
from .interfaces import Camera, Event, Frame, Robot, Teleop, TeleopOutput
from .recorder import EpisodeOutcome, Recorder
from .session import RecordingSession, SessionConfig, SessionSummary

__all__ = [
    "Camera",
    "CameraSpec",
    "EpisodeOutcome",
    "Event",
    "Frame",
    "OpenCVCamera",
    "Recorder",
    "RecordingSession",
    "Robot",
    "SessionConfig",
    "SessionSummary",
    "Teleop",
    "TeleopOutput",
]
