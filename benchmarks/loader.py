"""Loader benchmark: samples/s of ``TorchDataset`` on native, LeRobot and RLDS copies of the same
episodes, against the bare JPEG decode limit of this machine measured in the same run, and
LeRobot's own ``LeRobotDataset`` + DataLoader side by side when a LeRobot venv is given.

Episodes: 2 cameras stored at 640x480 (textured synthetic frames, JPEG quality 90), 4 episodes
x 150 steps at 30 fps, written by our writer, then converted with ``telecorder convert`` to
LeRobot v3 (h264, keyframe every 2 frames, as LeRobot writes) and to RLDS. Each sample: the
current frame of both cameras, the state, a 16-step action chunk; batch 32, shuffled; 0 and 2
DataLoader workers, and 0 workers with 2 decode threads (``TorchDataset(decode_threads=2)``,
compared with the 2-process limit); full-size output and 224x224 output.

The decode limit: ``cv2.imdecode`` of the stored JPEGs at full size, one thread per process, run
in as many processes at once as the loader uses (workers, or 1 for the main process) right
before each timed run; a sample needs 2 frames, so the limit in samples/s is that aggregate
frame rate / 2. Each row reports the median rate, the median limit and the median of the
per-run ratios.

    python benchmarks/loader.py                                    # about 3 minutes
    python benchmarks/loader.py --lerobot-python /tmp/lerobot-venv/bin/python
    python benchmarks/loader.py --batches 10 --repeats 1           # quick look

LeRobot (``pip install lerobot==0.4.4`` in a separate venv; see ../shared/BENCHMARKS.md) runs
with ``video_backend="pyav"``; its 224x224 rows resize with a torchvision ``Resize`` transform
(LeRobot has no output-size option of its own). Results: ``benchmarks/results/loader.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from telecorder.converters.pipeline import ConvertOptions, convert
from telecorder.datasets import AsyncEpisodeWriter, DatasetInfo, DatasetWriter, FeatureSpec, Step
from telecorder.datasets.episode_file import EpisodeReader
from telecorder.datasets.features import image_feature

CAMERAS = ("front", "wrist")
FRAMES_PER_SAMPLE = len(CAMERAS)


# -- the episodes ----------------------------------------------------------------------------


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A frame-sized scene with detail at several scales, so JPEG sizes look like camera footage."""
    layers = [cv2.resize(rng.integers(0, 256, (h // s + 1, w // s + 1, 3), dtype=np.uint8), (w, h),
                         interpolation=cv2.INTER_CUBIC).astype(np.float32) for s in (64, 16, 4)]
    img = 0.5 * layers[0] + 0.3 * layers[1] + 0.2 * layers[2]
    for _ in range(12):  # objects with hard edges
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(20, 120)), y + int(rng.integers(20, 120))),
                      tuple(float(c) for c in rng.integers(0, 256, 3)), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(root: Path, episodes: int, steps: int, h: int, w: int, fps: float = 30.0) -> None:
    rng = np.random.default_rng(0)
    scenes = {c: _texture(rng, h + 64, w + 64) for c in CAMERAS}
    info = DatasetInfo.create(
        [FeatureSpec("observation.state", "float32", (7,)), FeatureSpec("action", "float32", (7,)),
         *(image_feature(c, h, w) for c in CAMERAS)],
        fps=fps, robot_type="bench_arm",
    )
    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw)
        for e in range(episodes):
            writer.begin({"task": "pick up the cube", "language_instruction": "pick up the cube"})
            state = rng.normal(size=7).astype(np.float32)
            for k in range(steps):
                state = state + rng.normal(scale=0.02, size=7).astype(np.float32)
                frames = {}
                for c, scene in scenes.items():
                    dx, dy = (k * 3 + 7 * e) % 64, (k + 5 * e) % 64  # the camera pans
                    frame = scene[dy:dy + h, dx:dx + w].copy()
                    frame[: 40, : 10 + 4 * k % w] = 255  # a moving bar
                    frames[c] = frame
                writer.add(Step(timestamp=k / fps, numeric={"observation.state": state, "action": state + 0.05},
                                frames=frames, frame_time={c: k / fps for c in CAMERAS},
                                frame_index={c: k for c in CAMERAS}))
            writer.end({"success": True}, {"task": "pick up the cube", "success": True}).result(timeout=120)
        writer.close()


# -- the decode limit ------------------------------------------------------------------------


def _decode_for(args: tuple[list[bytes], float]) -> int:
    blobs, seconds = args
    cv2.setNumThreads(1)
    arrays = [np.frombuffer(b, np.uint8) for b in blobs]
    n, t_end = 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        cv2.imdecode(arrays[n % len(arrays)], cv2.IMREAD_COLOR)
        n += 1
    return n


def decode_limit(blobs: list[bytes], processes: int, seconds: float) -> float:
    """Aggregate ``cv2.imdecode`` frames/s of ``processes`` processes decoding at once."""
    if processes <= 1:
        return _decode_for((blobs, seconds)) / seconds
    with mp.get_context("fork").Pool(processes) as pool:
        counts = pool.map(_decode_for, [(blobs, seconds)] * processes)
    return sum(counts) / seconds


def stored_jpegs(root: Path, n: int) -> list[bytes]:
    out = []
    for path in sorted((root / "episodes").glob("episode_*.h5")):
        with EpisodeReader(path) as r:
            for c in CAMERAS:
                out += [bytes(r.encoded_frame(c, k)) for k in range(0, len(r), 7)]
    return out[:n]


# -- telecorder ------------------------------------------------------------------------------


def time_loader(ds: object, workers: int, batch: int, batches: int, warmup: int = 2) -> float:
    import torch

    # Shuffled passes over the dataset, as many as the timed batches need.
    sampler = torch.utils.data.RandomSampler(ds, num_samples=(warmup + batches) * batch,
                                             generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)
    it = iter(loader)
    for _ in range(warmup):  # worker start-up and first opens are not the steady rate
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - t0
    del it
    return batches * batch / seconds


def ours(path: Path, size: tuple[int, int] | None, workers: int, args: argparse.Namespace, threads: int = 0
         ) -> float:
    from telecorder.loaders import TorchDataset

    ds = TorchDataset(path, cameras=list(CAMERAS), image_size=size, horizon=args.chunk, decode_threads=threads)
    try:
        return time_loader(ds, workers, args.batch, args.batches)
    finally:
        ds.close()


# -- LeRobot, in its own venv ------------------------------------------------------------------

_LEROBOT = r"""
import json, sys, time
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
root, fps, chunk, batch, batches, workers, size = json.loads(sys.argv[1])
transform = None
if size:
    from torchvision.transforms import v2
    transform = v2.Resize(tuple(size), antialias=True)
ds = LeRobotDataset("local/bench", root=root, video_backend="pyav", image_transforms=transform,
                    delta_timestamps={"action": [k / fps for k in range(chunk)]})
sampler = torch.utils.data.RandomSampler(ds, num_samples=(2 + batches) * batch,
                                         generator=torch.Generator().manual_seed(0))
loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)
it = iter(loader)
for _ in range(2):
    b = next(it)
shape = list(b["observation.images.front"].shape)
t0 = time.perf_counter()
for _ in range(batches):
    next(it)
print(json.dumps({"samples_per_s": batches * batch / (time.perf_counter() - t0), "image_batch_shape": shape}))
"""


def lerobot(python: str, root: Path, size: tuple[int, int] | None, workers: int, args: argparse.Namespace,
            fps: float) -> float | None:
    cfg = json.dumps([str(root), fps, args.chunk, args.batch, args.batches, workers, list(size) if size else None])
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([python, "-c", _LEROBOT, cfg], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        print(f"LeRobot run failed ({size}, {workers} workers):\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["samples_per_s"])


# -- the run ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--size", default="640x480", help="stored frame size WxH")
    ap.add_argument("--chunk", type=int, default=16, help="action chunk (horizon)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=25, help="timed batches per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration; the median is reported")
    ap.add_argument("--limit-seconds", type=float, default=2.0, help="decode-limit measurement before each run")
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--threads", type=int, default=2,
                    help="also run 0 workers with this many decode threads (against that many processes' limit)")
    ap.add_argument("--sources", default="native,lerobot,rlds")
    ap.add_argument("--lerobot-python", help="python of a venv with lerobot==0.4.4, to run LeRobot side by side")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loader.json")
    ap.add_argument("--keep", type=Path, help="write the datasets here and keep them")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    workers = [int(v) for v in args.workers.split(",")]
    sources = args.sources.split(",")
    sizes: list[tuple[int, int] | None] = [None, (224, 224)]
    console = Console()

    work = args.keep or Path(tempfile.mkdtemp(prefix="telecorder-loader-bench-"))
    paths = {"native": work / "native", "lerobot": work / "lerobot", "rlds": work / "rlds"}
    try:
        if not paths["native"].exists():
            console.print(f"writing {args.episodes} x {args.steps} steps, 2 cameras {w}x{h} ...")
            make_dataset(paths["native"], args.episodes, args.steps, h, w)
        for fmt in ("lerobot", "rlds"):
            if fmt in sources and not paths[fmt].exists():
                console.print(f"converting to {fmt} ...")
                convert(paths["native"], paths[fmt], ConvertOptions(to=fmt))

        blobs = stored_jpegs(paths["native"], 200)
        # The limit is measured right before each timed run, in as many processes as that run
        # decodes in: on a shared machine the cores' speed drifts, and a ratio of two numbers
        # taken minutes apart would measure the drift.
        rows = []

        def measure(loader: str, src: str, size: tuple[int, int] | None, k: int, run: Callable[[], float | None],
                    processes: int | None = None) -> None:
            rates, limits = [], []
            for _ in range(args.repeats):
                limit = decode_limit(blobs, processes or max(1, k), args.limit_seconds) / FRAMES_PER_SAMPLE
                rate = run()
                if rate is not None:
                    rates.append(rate)
                    limits.append(limit)
            if not rates:
                return
            ratios = [100.0 * r / lim for r, lim in zip(rates, limits, strict=True)]
            rows.append({"loader": loader, "source": src, "workers": k, "decode_limit_processes": processes or max(1, k),
                         "output": "stored" if size is None else f"{size[1]}x{size[0]}",
                         "samples_per_s": float(np.median(rates)), "runs": rates,
                         "full_size_decode_limit_samples_per_s": float(np.median(limits)), "limits": limits,
                         "percent_of_full_size_limit": float(np.median(ratios))})
            r = rows[-1]
            console.print(f"  {loader} {src} {r['output']} {k} workers: {r['samples_per_s']:.0f} samples/s, "
                          f"{r['percent_of_full_size_limit']:.0f}% of the full-size decode limit")

        for src in sources:
            for size in sizes:
                for k in workers:
                    measure("telecorder", src, size, k, lambda src=src, size=size, k=k: ours(paths[src], size, k, args))
                if args.threads > 1:
                    measure(f"telecorder, {args.threads} decode threads", src, size, 0,
                            lambda src=src, size=size: ours(paths[src], size, 0, args, args.threads), args.threads)
        if args.lerobot_python:
            for size in sizes:
                for k in workers:
                    measure("lerobot 0.4.4 (pyav)", "lerobot", size, k,
                            lambda size=size, k=k: lerobot(args.lerobot_python, paths["lerobot"], size, k, args, 30.0))

        table = Table(title=f"Loader samples/s (batch {args.batch}, {args.chunk}-step chunk, 2 cameras {w}x{h} "
                            f"stored, median of {args.repeats})")
        for col in ("loader", "source", "output", "workers", "samples/s", "full-size decode limit",
                    "% of limit"):
            table.add_column(col, justify="right" if col not in ("loader", "source") else "left")
        for r in rows:
            table.add_row(r["loader"], r["source"], r["output"], str(r["workers"]), f"{r['samples_per_s']:.0f}",
                          f"{r['full_size_decode_limit_samples_per_s']:.0f}", f"{r['percent_of_full_size_limit']:.0f}%")
        console.print(table)

        result = {
            "benchmark": "loader",
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "opencv": cv2.__version__},
            "config": {"episodes": args.episodes, "steps": args.steps, "stored": f"{w}x{h}", "cameras": list(CAMERAS),
                       "chunk": args.chunk, "batch": args.batch, "batches": args.batches, "repeats": args.repeats},
            "frames_per_sample": FRAMES_PER_SAMPLE,
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {args.out}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
