"""Shared fixtures: small synthetic datasets written through the real writer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

try:
    from hypothesis import settings

    # CI runs a fixed set of examples so that a pass or a failure reproduces; locally, fresh ones.
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:
    pass

from telecorder.datasets.async_writer import AsyncEpisodeWriter, Step
from telecorder.datasets.dataset import DatasetWriter
from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def make_info(cameras: tuple[str, ...] = ("front",), dim: int = 4, encoding: str = "jpeg", fps: float = 30.0,
              robot_type: str = "test_arm") -> DatasetInfo:
    names = tuple(f"j{i}" for i in range(dim))
    feats = [
        FeatureSpec("observation.state", "float32", (dim,), names=names, unit="rad"),
        FeatureSpec("action", "float32", (dim,), names=names, unit="rad, absolute targets"),
    ]
    feats += [image_feature(c, 48, 64) for c in cameras]
    return DatasetInfo.create(feats, fps=fps, robot_type=robot_type, image_encoding=encoding)


def synthetic_frame(step: int, camera: int = 0) -> np.ndarray:
    """A frame whose content encodes the step and camera, smooth enough for JPEG to keep it."""
    img = np.zeros((48, 64, 3), np.uint8)
    img[..., 0] = (step * 7) % 256
    img[..., 1] = 40 + 60 * camera
    img[..., 2] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    return img


def synthetic_steps(n: int, info: DatasetInfo, seed: int = 0) -> list[Step]:
    rng = np.random.default_rng(seed)
    dim = info.features["action"].shape[0]
    steps = []
    for i in range(n):
        steps.append(
            Step(
                timestamp=i / info.fps,
                numeric={
                    "observation.state": rng.normal(size=dim).astype(np.float32),
                    "action": rng.normal(size=dim).astype(np.float32),
                },
                frames={c: synthetic_frame(i, k) for k, c in enumerate(info.cameras)},
                frame_time={c: i / info.fps - 0.005 for c in info.cameras},
                frame_index={c: i for c in info.cameras},
            )
        )
    return steps


def write_dataset(root: Path, info: DatasetInfo, lengths: list[int], *, resume: bool = False, seed: int = 0,
                  task: str = "stack the blocks") -> list[list[Step]]:
    """Write episodes of the given lengths through the real writer; returns the steps written."""
    written = []
    with DatasetWriter(root, info, resume=resume) as dw:
        writer = AsyncEpisodeWriter(dw, encode_threads=2)
        try:
            for k, n in enumerate(lengths):
                steps = synthetic_steps(n, info, seed=seed + k)
                writer.begin({"task": task, "language_instruction": task})
                for s in steps:
                    writer.add(s)
                writer.end({"success": k % 2 == 0}, {"task": task, "success": k % 2 == 0}).result(timeout=30)
                written.append(steps)
        finally:
            writer.close()
    return written


@pytest.fixture
def small_dataset(tmp_path: Path) -> tuple[Path, DatasetInfo, list[list[Step]]]:
    info = make_info(cameras=("front", "wrist"))
    root = tmp_path / "ds"
    steps = write_dataset(root, info, [12, 20, 7])
    return root, info, steps
