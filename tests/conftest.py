"""Shared fixtures: small synthetic datasets written through the real writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

# A test run started in the background (``make test &`` in a script) inherits SIGINT ignored, and
# so would every command a test starts; the Ctrl-C tests need what a terminal gives them.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


# A recorder that saves two episodes, then records a third until it is killed (or told to stop).
_RECORDER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from conftest import make_info, synthetic_steps, write_dataset
    from telecorder.datasets.async_writer import AsyncEpisodeWriter
    from telecorder.datasets.dataset import DatasetWriter

    info = make_info(cameras=("front", "wrist"))
    write_dataset({root!r}, info, [10, 15])
    dw = DatasetWriter({root!r}, info, resume=True)
    writer = AsyncEpisodeWriter(dw, flush_interval_s=0.05)
    writer.begin({{"task": "interrupted"}})
    for i in range(100000):
        step = synthetic_steps(1, info, seed=i)[0]
        step.timestamp = i / info.fps
        step.frame_index = {{c: i for c in info.cameras}}
        writer.add(step)
        if i == 40:
            print("RECORDING", flush=True)
        time.sleep(0.002)
    """
)


def start_recorder(root: Path) -> subprocess.Popen:
    script = _RECORDER.format(tests=str(Path(__file__).parent), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line == "RECORDING", line
    time.sleep(0.3)  # several flushed batches of the episode in progress
    return proc


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
