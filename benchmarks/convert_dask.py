"""Beam on Dask vs Beam's DirectRunner: the same conversion (native -> rlds of sim episodes, both
cameras) with 1 and 2 workers on each, on this machine.

Dask runs on a real cluster on loopback: a ``dask scheduler`` process and ``dask worker
--nworkers N --nthreads 1`` processes from this environment, reached over TCP with
``--runner=dask --dask_client_address=...`` exactly as a SLURM or SSH cluster is. Each Dask
cluster runs the conversion twice: "cold" (its workers import TensorFlow and our code during the
first job, as in the first job of an allocation) and "warm" (a second job on the same workers).
The DirectRunner starts fresh worker processes for every run, so it is always cold. Every run
uses the same shards (``--shard-episodes``), and every output is checked equal to the first.
Each figure is the fastest of ``--repeat`` runs (cold ones: one run).

    python benchmarks/convert_dask.py                          # 24 episodes, 320x240 cameras
    python benchmarks/convert_dask.py --episodes 8 --size 160x120
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from telecorder.runners import ConvertOptions, convert

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent


class LoopbackCluster:
    """A scheduler and ``workers`` single-threaded worker processes on 127.0.0.1."""

    def __init__(self, root: Path, workers: int) -> None:
        self.root, self.workers, self.procs = root, workers, []
        root.mkdir(parents=True)

    def _start(self, name: str, *args: str) -> None:
        with open(self.root / f"{name}.log", "wb") as log:
            self.procs.append(subprocess.Popen([str(BIN / "dask"), *args], stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))

    def __enter__(self) -> str:
        import distributed

        info = self.root / "scheduler.json"
        self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(info))
        deadline = time.monotonic() + 120
        while True:
            try:
                address = json.loads(info.read_text())["address"]
                break
            except (OSError, ValueError, KeyError):
                if time.monotonic() > deadline or self.procs[0].poll() is not None:
                    raise RuntimeError(f"the scheduler did not start; see {self.root / 'scheduler.log'}") from None
                time.sleep(0.05)
        self._start("workers", "worker", address, "--nworkers", str(self.workers), "--nthreads", "1",
                    "--no-dashboard", "--local-directory", str(self.root / "workers"))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(self.workers, timeout=300)
        return address

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def timed(src: Path, dst: Path, beam_options: list[str], shard_episodes: int) -> dict:
    t0 = time.perf_counter()
    report = convert(src, dst, ConvertOptions(to="rlds", runner="beam", beam_options=beam_options,
                                              shard_episodes=shard_episodes))
    seconds = time.perf_counter() - t0
    return {"episodes": report.episodes, "frames": report.frames, "shards": report.shards,
            "seconds": round(seconds, 2), "episodes_per_s": round(report.episodes / seconds, 3),
            "frames_per_s": round(report.frames / seconds, 1), "merge_s": report.merge_seconds}


def records(path: Path) -> dict[str, list[object]]:
    """Each tfrecord file's records, parsed (tfds orders a record's feature map differently from
    one process to another, so the bytes are not comparable; the records are)."""
    import tensorflow as tf

    return {p.name: [tf.train.Example.FromString(r) for r in tf.data.TFRecordDataset(str(p)).as_numpy_iterator()]
            for p in sorted(path.glob("*.tfrecord-*"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=24)
    ap.add_argument("--size", default="320x240", help="camera WIDTHxHEIGHT of the generated source")
    ap.add_argument("--shard-episodes", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each (but the cold ones); the fastest is kept")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "convert_dask.json")
    args = ap.parse_args(argv)
    console = Console()
    load_at_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="tc-convert-dask-"))
    rows: dict[str, dict] = {}
    try:
        console.print(f"making {args.episodes} sim episodes ({args.size}, 2 cameras)")
        # Rendering runs in a process of its own (MuJoCo's EGL context and TensorFlow do not mix).
        made = subprocess.run([sys.executable, str(HERE / "convert.py"), "--make-source", str(tmp / "native"),
                               "--episodes", str(args.episodes), "--size", args.size],
                              capture_output=True, text=True, check=True, env={**os.environ, "MUJOCO_GL": "egl"})
        console.print(f"{made.stdout.split()[-1]} steps x 2 cameras")
        src = tmp / "native"
        outputs: list[Path] = []

        def one(name: str, beam_options: list[str], repeat: int) -> None:
            """The fastest of ``repeat`` runs (the others were slowed by something else)."""
            for _ in range(repeat):
                dst = tmp / f"run{len(outputs)}" / "sim_demo"  # one dataset name: RLDS writes it into its files
                console.print(f"  {name} ...")
                row = timed(src, dst, beam_options, args.shard_episodes)
                outputs.append(dst)
                if name not in rows or row["seconds"] < rows[name]["seconds"]:
                    rows[name] = row

        for workers in (1, 2):
            one(f"DirectRunner, {workers} worker{'s' * (workers > 1)}",
                [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"], args.repeat)
        for workers in (1, 2):
            with LoopbackCluster(tmp / f"cluster{workers}", workers) as address:
                dask = ["--runner=dask", f"--dask_client_address={address}"]
                one(f"Dask, {workers} worker{'s' * (workers > 1)}, cold", dask, 1)
                one(f"Dask, {workers} worker{'s' * (workers > 1)}, warm", dask, args.repeat)
        first = records(outputs[0])
        for path in outputs[1:]:
            if records(path) != first or (path / "dataset_info.json").read_bytes() != (
                    outputs[0] / "dataset_info.json").read_bytes():
                raise SystemExit(f"{path} differs from {outputs[0]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title=f"native -> rlds on Beam ({os.cpu_count()} cores; {args.episodes} episodes, {args.size}, "
                        f"2 cameras, {args.shard_episodes} episodes a shard)")
    for col in ("runner", "frames", "seconds", "episodes/s", "steps/s", "2 vs 1 worker"):
        table.add_column(col)
    for name, r in rows.items():
        scaling = ""
        if "2 workers" in name:
            one_worker = rows[name.replace("2 workers", "1 worker")]
            r["scaling_vs_1_worker"] = round(r["frames_per_s"] / one_worker["frames_per_s"], 2)
            scaling = f"{r['scaling_vs_1_worker']:.2f}x"
        table.add_row(name, str(r["frames"]), str(r["seconds"]), str(r["episodes_per_s"]), str(r["frames_per_s"]),
                      scaling)
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cores": os.cpu_count(), "load_average": [load_at_start, os.getloadavg()[0]],
                                     "episodes": args.episodes, "size": args.size, "repeat": args.repeat,
                                     "shard_episodes": args.shard_episodes, "runs": rows}, indent=2) + "\n")
    console.print(f"wrote {args.json} (all outputs equal record for record; steps/s: control steps, "
                  "each with 2 camera frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
