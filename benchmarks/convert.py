"""Conversion benchmark: native -> rlds, native -> lerobot (video encoding) and lerobot -> native,
in one run on the same sim episodes, each run

- in one process (today's default: one writer, its encoders on threads),
- sharded on the local process pool with 1 and 2 workers (each worker encodes on one thread),
- on Apache Beam's DirectRunner in multi-processing mode with 1 and 2 workers,

with the scaling from 1 to 2 workers, and the throughput of one worker (episodes/s, frames/s),
from which the README plans a cluster run.

The source is made without real-time pacing: the scripted expert drives the MuJoCo arm and
both cameras are rendered for every step, straight into the native store.

    python benchmarks/convert.py                       # 60 episodes (5 s each), 640x480 cameras
    python benchmarks/convert.py --episodes 10 --size 320x240 --no-beam
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

os.environ.setdefault("MUJOCO_GL", "egl")

from telecorder.datasets import AsyncEpisodeWriter, DatasetInfo, DatasetWriter, FeatureSpec, Step
from telecorder.datasets.features import image_feature
from telecorder.runners import ConvertOptions, convert


def make_sim_dataset(root: Path, episodes: int, width: int, height: int, fps: float = 30.0) -> int:
    from telecorder.sim import ScriptedExpert, SimEnv
    from telecorder.sim.render import SimRenderer

    env = SimEnv(control_dt=1 / fps, seed=0)
    renderer = SimRenderer(env.model, width, height)
    names = tuple(env.joint_names)
    info = DatasetInfo.create(
        [FeatureSpec("observation.state", "float32", (len(names),), names=names),
         FeatureSpec("action", "float32", (len(names),), names=names),
         image_feature("front", height, width), image_feature("wrist", height, width)],
        fps=fps, robot_type="telecorder_sim_arm",
    )
    frames = 0
    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw)
        for e in range(episodes):
            env.reset(e)
            expert = ScriptedExpert(env, seed=e)
            expert.reset()
            writer.begin({"task": "pick up the cube"})
            k = 0
            while not expert.done and k < 12 * fps:
                qpos = env.snapshot()[0]
                imgs = {c: renderer.render(qpos, c) for c in ("front", "wrist")}
                state = env.joint_positions().astype(np.float32)
                action = expert.act()
                env.apply_action(action)
                writer.add(Step(timestamp=k / fps, numeric={"observation.state": state,
                                                             "action": np.asarray(action, np.float32)},
                                frames=imgs, frame_time={c: k / fps for c in imgs}, frame_index={c: k for c in imgs}))
                k += 1
            writer.end({"success": env.is_success()}, {"task": "pick up the cube"}).result()
            frames += k
        writer.close()
    renderer.close()
    return frames


MODES = {
    "one process": {"sharded": False},
    "local, 1 worker": {"sharded": True, "workers": 1},
    "local, 2 workers": {"sharded": True, "workers": 2},
    "beam, 1 worker": {"runner": "beam", "beam_options": ["--direct_num_workers=1"]},
    "beam, 2 workers": {"runner": "beam", "beam_options": ["--direct_num_workers=2"]},
}


def timed(src: Path, dst: Path, to: str, mode: dict, **writer_options: object) -> dict:
    t0 = time.perf_counter()
    report = convert(src, dst, ConvertOptions(to=to, writer_options=dict(writer_options), **mode))
    seconds = time.perf_counter() - t0
    row = {"episodes": report.episodes, "frames": report.frames, "seconds": round(seconds, 2),
           "episodes_per_s": round(report.episodes / seconds, 3),
           "frames_per_s": round(report.frames / seconds, 1)}
    if report.shards:
        row.update(shards=report.shards, merge_s=report.merge_seconds)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--size", default="640x480", help="camera WIDTHxHEIGHT of the generated source")
    ap.add_argument("--no-beam", action="store_true", help="leave out the Beam runs")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/convert.json"))
    ap.add_argument("--make-source", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.make_source:
        print(make_sim_dataset(args.make_source, args.episodes, width, height))
        return 0
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="tc-convert-"))
    rows: dict[str, dict] = {}
    try:
        console.print(f"making {args.episodes} sim episodes ({width}x{height}, 2 cameras)")
        # Rendering runs in a process of its own: TensorFlow (for RLDS) and MuJoCo's EGL context
        # crash when they share one.
        made = subprocess.run([sys.executable, __file__, "--make-source", str(tmp / "native"), "--episodes",
                               str(args.episodes), "--size", args.size], capture_output=True, text=True, check=True)
        frames = int(made.stdout.split()[-1])
        console.print(f"{frames} steps x 2 cameras")
        modes = {k: v for k, v in MODES.items() if not (args.no_beam and k.startswith("beam"))}
        jobs = [("native -> rlds", "native", "rlds", {}),
                ("native -> lerobot (h264)", "native", "lerobot", {"codec": "h264"}),
                ("lerobot -> native", "lerobot", "native", {})]
        for label, src, to, writer_options in jobs:
            for k, (mode, settings) in enumerate(modes.items()):
                name = f"{label}, {mode}"
                console.print(f"  {name} ...")
                rows[name] = timed(tmp / src, tmp / f"{to}{k}", to, settings, **writer_options)
                if src == "native" and to == "lerobot" and k == 0:
                    shutil.copytree(tmp / f"{to}{k}", tmp / "lerobot")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title=f"convert benchmark ({os.cpu_count()} cores; {args.episodes} episodes, {width}x{height}, "
                        "2 cameras)")
    for col in ("conversion", "frames", "seconds", "episodes/s", "steps/s", "scaling 2 vs 1 worker"):
        table.add_column(col)
    for name, r in rows.items():
        scaling = ""
        if name.endswith("2 workers"):
            one = rows[name.replace("2 workers", "1 worker")]
            r["scaling_vs_1_worker"] = round(r["frames_per_s"] / one["frames_per_s"], 2)
            scaling = f"{r['scaling_vs_1_worker']:.2f}x"
        table.add_row(name, str(r["frames"]), str(r["seconds"]), str(r["episodes_per_s"]), str(r["frames_per_s"]),
                      scaling)
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    console.print(f"wrote {args.json} (steps/s: control steps, each with 2 camera frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
