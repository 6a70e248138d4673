"""The metadata of a hand-made LeRobot v2.0 folder (info.json, episodes.jsonl, tasks.jsonl), as
the tests that build such folders by hand write it; each writes its own parquet files and videos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_v20_meta(root: Path, *, episodes: int, n: int, fps: float, camera_hw: tuple[int, int] | None) -> None:
    """``episodes`` episodes of ``n`` rows at ``fps``, a 3-D state and action, task "fold"; with
    ``camera_hw`` a video camera ``observation.images.top`` declared that size."""
    (root / "meta").mkdir(parents=True)
    feats: dict[str, Any] = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
        "action": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    if camera_hw is not None:
        feats["observation.images.top"] = {"dtype": "video", "shape": [*camera_hw, 3],
                                           "names": ["height", "width", "channel"]}
    info = {"codebase_version": "v2.0", "robot_type": "koch", "fps": fps, "chunks_size": 1000,
            "total_episodes": episodes, "total_frames": episodes * n, "features": feats,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": ["fold"], "length": n}) + "\n" for e in range(episodes)))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "fold"}) + "\n")
