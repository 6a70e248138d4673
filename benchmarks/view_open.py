"""How long ``telecorder view`` takes to show the first frame of a 1,000-episode dataset in another format.

Builds a native dataset of 1,000 tiny episodes (one 64x48 camera, 4-D state and action) with
our writer, converts it with our writers to LeRobot (v3.0) and RLDS (TFRecord), and times, in
a fresh process each (imports included, as a user waits for them):

* ``open_to_first_frame_s``: ``EpisodeBrowser(path)`` until the first view is rendered (the
  frame decoded, the plots drawn), for the first and for the last episode;
* ``cli_screenshot_s``: the whole ``telecorder view DS --screenshot`` command, process start to exit.

Target: under 2 s to the first frame. The datasets are kept in ``--work`` (default a temporary
folder) and reused when present. Results go to ``benchmarks/results/view_open.json``.

    python benchmarks/view_open.py
    python benchmarks/view_open.py --episodes 200 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_S = 2.0

_TIME_OPEN = """
import os, sys, time
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
t0 = time.perf_counter()
from telecorder.viewers.browser import EpisodeBrowser
b = EpisodeBrowser(sys.argv[1], episode=int(sys.argv[2]))
b.render()
state = b.view_state()
assert state.cameras and state.cameras[0].frame is not None, state.cameras[0].error
print(time.perf_counter() - t0, state.episode_count)
b.close()
"""


def build(work: Path, episodes: int, steps: int) -> dict[str, Path]:
    """The native dataset and its LeRobot and RLDS conversions (made once, then reused)."""
    from telecorder.converters.pipeline import ConvertOptions, convert
    from telecorder.datasets.async_writer import AsyncEpisodeWriter, Step
    from telecorder.datasets.dataset import DatasetWriter
    from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature

    native = work / "native"
    if not (native / "meta" / "info.json").exists():
        names = ("j0", "j1", "j2", "j3")
        info = DatasetInfo.create([FeatureSpec("observation.state", "float32", (4,), names=names),
                                   FeatureSpec("action", "float32", (4,), names=names),
                                   image_feature("front", 48, 64)], fps=30.0, robot_type="bench_arm")
        rng = np.random.default_rng(0)
        frame = np.zeros((48, 64, 3), np.uint8)
        with DatasetWriter(native, info) as dw:
            writer = AsyncEpisodeWriter(dw, encode_threads=2)
            try:
                for k in range(episodes):
                    task = f"task {k % 7}"
                    writer.begin({"task": task, "language_instruction": task})
                    for i in range(steps):
                        frame[..., 0] = (k * 13 + i * 7) % 256
                        writer.add(Step(timestamp=i / 30.0,
                                        numeric={"observation.state": rng.normal(size=4).astype(np.float32),
                                                 "action": rng.normal(size=4).astype(np.float32)},
                                        frames={"front": frame.copy()}, frame_time={"front": i / 30.0},
                                        frame_index={"front": i}))
                    writer.end({"success": True}, {"task": task}).result(timeout=60)
            finally:
                writer.close()
    out = {"native": native}
    for fmt in ("lerobot", "rlds"):
        dst = work / fmt
        if not dst.exists():
            convert(native, dst, ConvertOptions(to=fmt))
        out[fmt] = dst
    return out


def run(*args: str) -> tuple[float, str]:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    t0 = time.perf_counter()
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=4, help="steps per episode")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per case (the median is kept)")
    ap.add_argument("--work", type=Path, help="folder for the datasets (kept; default: a temporary one)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "view_open.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="view_open_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        reused = all((work / f).exists() for f in ("native", "lerobot", "rlds"))
        t0 = time.perf_counter()
        datasets = build(work, args.episodes, args.steps)
        build_s = None if reused else round(time.perf_counter() - t0, 1)
        results = {}
        for fmt, path in datasets.items():
            row: dict[str, object] = {}
            for label, episode in (("first", 0), ("last", args.episodes - 1)):
                times = []
                for _ in range(args.repeat):
                    _, out = run(sys.executable, "-c", _TIME_OPEN, path, str(episode))
                    seconds, count = out.split()[-2:]
                    assert int(count) == args.episodes, (fmt, count)
                    times.append(float(seconds))
                row[f"open_to_first_frame_s_{label}_episode"] = round(statistics.median(times), 3)
            shots = [run(BIN / "telecorder", "view", path, "--screenshot", work / f"{fmt}.png")[0]
                     for _ in range(args.repeat)]
            row["cli_screenshot_s"] = round(statistics.median(shots), 3)
            row["under_target"] = max(v for k, v in row.items() if k.startswith("open_")) < TARGET_S  # type: ignore[type-var]
            results[fmt] = row
            print(f"{fmt:8s} {row}", flush=True)
    report = {
        "what": "telecorder view: open to first rendered frame, fresh process each (imports included)",
        "episodes": args.episodes,
        "steps_per_episode": args.steps,
        "camera": "64x48, 1 camera",
        "target_s": TARGET_S,
        "repeat": args.repeat,
        "build_s": build_s,  # writing and converting the datasets (None: reused from --work)
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
