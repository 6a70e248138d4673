"""VR-controller teleoperation, in three layers, each usable without the next.

* :mod:`.pose_stream`: the JSON-lines file of controller samples that ``telecorder vr-record``
  writes and that tests and replays read;
* :mod:`.mapping`: :class:`VRMapping`, the pure function from controller samples to
  end-effector targets (clutch, axis change, scale, buttons), testable without any headset;
* :mod:`.openxr_client`: :class:`OpenXRClient`, which reads a real headset through pyopenxr
  (tested end to end against Monado built from source: scripts/vr_runtime.sh, tests/test_vr_live.py).
"""

from .mapping import AXIS_PRESETS, MappingOutput, VRMapping
from .openxr_client import OpenXRClient
from .pose_stream import (
    HANDS,
    ControllerSample,
    PoseStreamSource,
    load_pose_stream,
    write_pose_stream,
)

__all__ = [
    "AXIS_PRESETS",
    "HANDS",
    "ControllerSample",
    "MappingOutput",
    "OpenXRClient",
    "PoseStreamSource",
    "VRMapping",
    "load_pose_stream",
    "write_pose_stream",
]
