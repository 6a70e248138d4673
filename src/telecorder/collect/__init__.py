"""Recording: the control loop and session, and the hardware they drive, one folder per kind.

- :mod:`.interfaces`: what every robot, teleop device and camera implements;
- :mod:`.recorder` (the loop: one tick per control period), :mod:`.session` (episodes, resets,
  keys, the live view), :mod:`.factory` (builds the devices ``collect`` is asked for);
- :mod:`.devices`: teleop devices (leader arm and kinesthetic, VR, gamepad, keyboard, scripted,
  policy, interventions, end-effector teleop);
- :mod:`.robots`: followers (the MuJoCo sim arm, the Dynamixel arm);
- :mod:`.cameras`: OpenCV cameras and the sim's rendered cameras;
- :mod:`.dynamixel`: the Dynamixel bus, its protocol, calibration and the bus emulator.

A new device goes in ``devices/``, a new robot in ``robots/``, a new camera in ``cameras/``; the
factory is where ``collect`` learns their names.
"""

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
