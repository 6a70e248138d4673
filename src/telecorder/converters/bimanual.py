"""Two-arm datasets as the export formats expect them.

A bimanual recording names each arm's dimensions with a ``left_`` / ``right_`` prefix (left arm
first, gripper last in each half), the order ALOHA stores its 14-D ``qpos`` / ``action`` in; with
two of the built-in 5-joint arms that is 12-D. The formats need to know only whether a dataset is
such a pair: ALOHA output then names the cameras as ALOHA does, and OXE output keeps joint actions
(an end-effector delta is one arm's) and leaves both grippers out of normalization.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..datasets.features import DatasetInfo

SIDES = ("left", "right")
GRIPPER = "gripper"

#: ALOHA's camera names (aloha ``constants.py``) for the bimanual layout's cameras.
ALOHA_CAMERAS = {"top": "cam_high", "left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist"}


def is_bimanual(info: DatasetInfo) -> bool:
    """Whether every action dimension is named ``left_*`` or ``right_*``, with both arms present."""
    spec = info.features.get("action")
    names = list(spec.names or ()) if spec is not None else []
    sides = [next((s for s in SIDES if n.startswith(s + "_")), None) for n in names]
    return None not in sides and set(sides) == set(SIDES)


def gripper_dims(names: Sequence[str]) -> list[int]:
    """Indices of the gripper dimensions: ``gripper`` (one arm), ``left_gripper`` / ``right_gripper`` (two)."""
    return [k for k, n in enumerate(names) if n == GRIPPER or n in {f"{s}_{GRIPPER}" for s in SIDES}]


def aloha_camera_names(info: DatasetInfo) -> dict[str, str]:
    """``{source camera: ALOHA name}`` for a bimanual source's top / wrist cameras; {} for anything else
    (a single arm keeps its camera names)."""
    if not is_bimanual(info):
        return {}
    return {cam: name for cam, name in ALOHA_CAMERAS.items() if cam in info.cameras}
