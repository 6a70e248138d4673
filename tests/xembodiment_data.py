"""Datasets of several robots for the cross-embodiment mixture tests.

``write_bimanual_dataset`` writes a synthetic native dataset with the bimanual conventions (12-D,
``left_``/``right_`` joint names, cameras top/left_wrist/right_wrist) until the sim's bimanual
scene can record one; swap its body for a recording then, keeping the signature.
"""

from __future__ import annotations

from pathlib import Path

from conftest import SHARED, write_dataset
from test_cli import run, tool

from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
BIMANUAL_NAMES = tuple(f"{side}_{j}" for side in ("left", "right") for j in ARM_JOINTS)
BIMANUAL_CAMERAS = ("top", "left_wrist", "right_wrist")
G1 = SHARED / "samples" / "YifanTian07_G1-policy-train"
G1_EPISODES = (1, 2)  # the only episodes of the sample with their video
BRIDGE = SHARED / "samples" / "octo-models_octo" / "tests" / "debug_dataset" / "bridge_dataset" / "1.0.0"


def record_single_arm(root: Path, episodes: int = 2, seed: int = 3) -> Path:
    """Scripted pick episodes of the built-in 6-D arm, cameras front and wrist at 64x64, on sim time."""
    run(tool("collect"), "--device", "scripted", "--robot", "sim", "--episodes", str(episodes),
        "--episode-time", "1", "--sim-cameras", "front,wrist", "--camera-size", "64x64", "--no-realtime",
        "--seed", str(seed), "--out", str(root), check=True)
    return root


def record_bimanual(root: Path, seed: int = 3) -> Path:
    """A scripted handover on the built-in two-arm scene (12-D, cameras top, left_wrist, right_wrist at 64x64)."""
    run(tool("collect"), "--device", "scripted", "--robot", "sim", "--scene", "bimanual", "--episodes", "1",
        "--episode-time", "1", "--camera-size", "64x64", "--no-realtime", "--seed", str(seed), "--out", str(root),
        check=True)
    return root


def write_bimanual_dataset(root: Path, lengths: tuple[int, ...] = (12, 9), seed: int = 0) -> Path:
    """A native bimanual dataset (robot ``telecorder_sim_bimanual``, 12-D, three 48x64 cameras)."""
    feats = [FeatureSpec("observation.state", "float32", (12,), names=BIMANUAL_NAMES, unit="rad"),
             FeatureSpec("action", "float32", (12,), names=BIMANUAL_NAMES, unit="rad, absolute targets")]
    feats += [image_feature(c, 48, 64) for c in BIMANUAL_CAMERAS]
    info = DatasetInfo.create(feats, fps=30.0, robot_type="telecorder_sim_bimanual")
    write_dataset(root, info, list(lengths), seed=seed, task="hand the cube from the left gripper to the right")
    return root
