"""Fuzz campaign: mutate every format telecorder reads, run every command that reads it, and
check that each input gives a result or one clear error line and nothing else.

Seed inputs are written by the project's own writers (a native dataset, and its LeRobot v3,
RLDS, ALOHA and robomimic exports; a hand-made LeRobot v2.0 folder; a policy checkpoint from
``telecorder train``; a VR pose stream; calibration and pose files; a tasks CSV). Each case
copies one seed, mutates one of its files (truncation, bit flips, overwritten spans, JSON type
swaps, huge numbers, NaN, an empty file, a missing file, a directory in its place, a symlink to
a file or folder outside the input, a dangling symlink, HDF5 attribute and shape edits, CSV
quoting and ranges) and runs every command of its format in-process (``cli`` argument parsing
and the command function, the torch loader, policy loading, pose-stream and calibration
loading). For each command it records:

* the outcome: ``ok`` (exit 0 or 1), ``error`` (a TelecorderError: one line, exit 2),
  ``valueerror`` (a ValueError that is not ours: the CLI prints it and exits 2, but the text
  may name no file), ``traceback`` (anything else: what a user would see as a crash),
  ``hang`` (no answer within --hang-s) and ``crash`` (the worker died, e.g. out of memory);
* reads outside the input: every case puts the files its links point to in a folder of its
  own beside the input, watched with inotify (which sees C-level opens by HDF5 and Arrow too)
  and an audit hook (which names the Python caller);
* changes to any input: the input tree and the outside folder are hashed (links as links)
  before and after each command; ``doctor --repair`` runs on a copy;
* peak memory: workers run under RLIMIT_DATA (default 2 GiB) and report ru_maxrss.

Reads through a link placed inside the input are allowed (safe_paths: Hugging Face cache
folders are trees of links into a blob store) and counted apart as ``followed_links``; a read
outside caused by anything else (a path named in metadata) is a failure, as is any write
through a link (it shows as a changed file outside).

    python benchmarks/fuzz_inputs.py                      # 2000 inputs (6-15 minutes on 2 cores)
    python benchmarks/fuzz_inputs.py --count 100 --formats native,tasks_csv --seed 3
    python benchmarks/fuzz_inputs.py --replay 17 --seed 0 # one case again, with its traceback
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import io
import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz_mutations import LINKS, apply_mutation, kinds_for, seed_files  # beside this file

RESULTS = Path(__file__).parent / "results" / "fuzz_inputs.json"
GIB = 1 << 30

# Relative weight of each format in a campaign (native has the most readers and files).
FORMATS = {
    "native": 6, "lerobot3": 3, "lerobot2": 2, "rlds": 3, "aloha": 2, "robomimic": 2,
    "policy": 2, "pose_stream": 1, "calibration": 1, "tasks_csv": 1,
}


# -- seeds -----------------------------------------------------------------------------------


def _native(root: Path, lengths: list[int], seed: int) -> None:
    import numpy as np

    from telecorder.datasets.async_writer import AsyncEpisodeWriter, Step
    from telecorder.datasets.dataset import DatasetWriter
    from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature

    names = ("j0", "j1", "j2", "j3")
    info = DatasetInfo.create([
        FeatureSpec("observation.state", "float32", (4,), names=names, unit="rad"),
        FeatureSpec("action", "float32", (4,), names=names, unit="rad, absolute targets"),
        image_feature("front", 24, 32),
    ], fps=20.0, robot_type="test_arm", image_encoding="jpeg")
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw, encode_threads=1)
        try:
            for k, n in enumerate(lengths):
                writer.begin({"task": f"task {k}", "language_instruction": f"task {k}"})
                for i in range(n):
                    img = np.zeros((24, 32, 3), np.uint8)
                    img[..., 0] = (i * 9) % 256
                    img[..., 2] = np.linspace(0, 255, 32, dtype=np.uint8)[None, :]
                    writer.add(Step(timestamp=i / 20.0,
                                    numeric={"observation.state": rng.normal(size=4).astype(np.float32),
                                             "action": rng.normal(size=4).astype(np.float32)},
                                    frames={"front": img}, frame_time={"front": i / 20.0 - 0.004},
                                    frame_index={"front": i}))
                writer.end({"success": k % 2 == 0}, {"task": f"task {k}", "success": k % 2 == 0}).result(timeout=60)
        finally:
            writer.close()


def _lerobot_v2(root: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "meta").mkdir(parents=True)
    n, fps = 10, 10
    feats = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": {"motors": ["a", "b", "c"]}},
        "action": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info = {"codebase_version": "v2.0", "robot_type": "koch", "fps": fps, "chunks_size": 1000,
            "total_episodes": 2, "total_frames": 2 * n, "features": feats,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": ["fold"], "length": n}) + "\n" for e in range(2)))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "fold"}) + "\n")
    rng = np.random.default_rng(7)
    (root / "data/chunk-000").mkdir(parents=True)
    cols = {}
    for e in range(2):
        state = rng.normal(size=(n, 3)).astype(np.float32)
        action = rng.normal(size=(n, 3)).astype(np.float32)
        cols[e] = (state, action)
        table = pa.table({
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.ravel()), 3),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(action.ravel()), 3),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / fps),
            "frame_index": pa.array(np.arange(n)),
            "episode_index": pa.array(np.full(n, e, np.int64)),
            "index": pa.array(np.arange(n) + e * n),
            "task_index": pa.array(np.zeros(n, np.int64)),
        })
        pq.write_table(table, root / f"data/chunk-000/episode_{e:06d}.parquet")
    stats = {}
    for key, k in (("observation.state", 0), ("action", 1)):
        v = np.concatenate([cols[e][k] for e in range(2)])
        stats[key] = {"mean": v.mean(0).tolist(), "std": v.std(0).tolist(), "min": v.min(0).tolist(),
                      "max": v.max(0).tolist()}
    (root / "meta/stats.json").write_text(json.dumps(stats))


def build_seeds(root: Path, formats: list[str] | None = None) -> dict[str, Path]:
    """The seed inputs of ``formats`` (default all), written by the project's own writers;
    returns format -> path (plus ``clean``, the unmutated partner dataset)."""
    wanted = set(FORMATS if formats is None else formats)
    from telecorder import cli

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    seeds = {"native": root / "native", "clean": root / "clean"}
    _native(seeds["native"], [9, 12], seed=1)
    _native(seeds["clean"], [7], seed=2)
    quiet = io.StringIO()
    for fmt, to in (("lerobot3", "lerobot"), ("rlds", "rlds"), ("aloha", "aloha"), ("robomimic", "robomimic")):
        if fmt not in wanted:
            continue
        seeds[fmt] = root / fmt
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            code = cli.main(["convert", str(seeds["native"]), str(seeds[fmt]), "--to", to])
        if code != 0:
            raise SystemExit(f"seed {fmt}: convert exited {code}: {quiet.getvalue()[-2000:]}")
    seeds["lerobot2"] = root / "lerobot2"
    _lerobot_v2(seeds["lerobot2"])
    if "policy" not in wanted:
        return _pose_and_files(root, seeds)
    seeds["policy"] = root / "policy"
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        code = cli.main(["train", str(seeds["native"]), "--out", str(seeds["policy"]), "--steps", "2",
                         "--horizon", "2", "--val-episodes", "0", "--batch-size", "4",
                         "--state-keys", "observation.state"])
    if code != 0:
        raise SystemExit(f"seed policy: train exited {code}: {quiet.getvalue()[-2000:]}")
    return _pose_and_files(root, seeds)


def _pose_and_files(root: Path, seeds: dict[str, Path]) -> dict[str, Path]:
    import numpy as np

    from telecorder.collect.devices.vr.pose_stream import ControllerSample, write_pose_stream
    from telecorder.collect.dynamixel.calibration import calibrate

    seeds["pose_stream"] = root / "pose_stream"
    seeds["pose_stream"].mkdir()
    pose = np.eye(4)
    samples = []
    for i in range(8):
        pose = pose.copy()
        pose[0, 3] = 0.01 * i
        samples += [ControllerSample(t=i / 30, hand="right", pose=pose, squeeze=0.5, trigger=0.1 * (i % 3),
                                     buttons={"a": i % 2 == 0}),
                    ControllerSample(t=i / 30, hand="left", pose=pose, valid=i != 3)]
    write_pose_stream(seeds["pose_stream"] / "session.jsonl", samples)
    seeds["calibration"] = root / "calibration"
    cal = calibrate("follower", [1, 2, 3, 4], ["j0", "j1", "j2"], [0.1, 1.6, -0.2], [0.0, 1.57, 0.0],
                    signs=[1, -1, 1], gripper_open_raw=1.2, gripper_closed_raw=0.1)
    cal.save(seeds["calibration"] / "follower.json")
    (seeds["calibration"] / "pose.json").write_text(json.dumps({
        "known_pose": [0.0, 1.57, 0.0], "names": ["j0", "j1", "j2"], "signs": [1, -1, 1],
        "gripper": {"open": 1.2, "closed": 0.1}, "range": {"min": [-3, -3, -3], "max": [3, 3, 3]}}))
    seeds["tasks_csv"] = root / "tasks_csv"
    seeds["tasks_csv"].mkdir()
    (seeds["tasks_csv"] / "tasks.csv").write_text('episodes,task\n0,"pick up the cube, then place it"\n1,push\n')
    return seeds


# -- commands ---------------------------------------------------------------------------------


@dataclass
class Paths:
    case: Path  # the case folder: in/ (the mutated input), outside/ (link targets), out/ (outputs)
    clean: Path  # an unmutated native dataset (merge partner, set-task target)

    @property
    def input(self) -> Path:
        return self.case / "in"


def _cli(argv: Callable[[Paths], list[str]]) -> Callable[[Paths], Any]:
    def run(p: Paths) -> Any:
        from telecorder import cli

        args = cli.build_parser().parse_args([str(a) for a in argv(p)])
        return args.func(args, cli.Console(file=sys.stdout))
    return run


def _loader(p: Paths) -> Any:
    from telecorder.loaders.torch_dataset import TorchDataset

    ds = TorchDataset(p.input, image_size=(16, 16), history=2, horizon=3)
    n = len(ds)
    for i in sorted({0, n // 2, n - 1}) if n else []:
        ds[i]
    return 0


def _policy(p: Paths) -> Any:
    import numpy as np

    from telecorder.policies.loading import load_policy

    policy = load_policy(p.input)
    spec = policy.spec
    obs: dict[str, Any] = {"state": np.zeros(4, np.float32), "observation.state": np.zeros(4, np.float32)}
    for cam in getattr(spec, "cameras", ()) or ():
        obs[f"images.{cam}"] = np.zeros((24, 32, 3), np.uint8)
    with contextlib.suppress(Exception):
        policy.reset()
    policy.predict(obs)
    return 0


def _pose_stream(p: Paths) -> Any:
    from telecorder.collect.devices.vr.pose_stream import PoseStreamSource

    for hand in ("left", "right"):
        src = PoseStreamSource(p.input / "session.jsonl", hand=hand, clock=lambda: 0.0)
        src.start()
        for t in (0.0, 0.1, 1e9):
            src.sample_at(t)
        src.finished()
    return 0


def _calibration(p: Paths) -> Any:
    import numpy as np

    from telecorder.collect.dynamixel.calibration import ArmCalibration, PoseFile, calibrate

    cal = ArmCalibration.load(p.input / "follower.json")
    cal.to_raw(cal.to_calibrated(np.zeros(len(cal.ids))))
    pf = PoseFile.load(p.input / "pose.json")
    rng = (pf.range_min, pf.range_max) if pf.range_min and pf.range_max else None
    calibrate("follower", [1, 2, 3, 4][: len(pf.known_pose) + 1], pf.names, [0.0] * len(pf.known_pose), pf.known_pose,
              signs=pf.signs, gripper_open_raw=pf.gripper_open, gripper_closed_raw=pf.gripper_closed,
              range_raw=rng)
    return 0


def _repair_copy(p: Paths) -> list[str]:
    copy = p.case / "out" / "repair_copy"
    if not copy.exists():
        shutil.copytree(p.input, copy, symlinks=True)
    return ["doctor", copy, "--repair"]


_TO_NATIVE = _cli(lambda p: ["convert", p.input, p.case / "out" / "native", "--to", "native"])

COMMANDS: dict[str, list[tuple[str, Callable[[Paths], Any]]]] = {
    "native": [
        ("info", _cli(lambda p: ["info", p.input, "--episodes"])),
        ("info --json", _cli(lambda p: ["info", p.input, "--json"])),
        ("stats", _cli(lambda p: ["stats", p.input, "--json"])),
        ("doctor", _cli(lambda p: ["doctor", p.input, "--frames", "all"])),
        ("doctor --repair (copy)", _cli(_repair_copy)),
        ("convert --to native", _TO_NATIVE),
        ("loader", _loader),
        ("edit merge", _cli(lambda p: ["edit", "merge", p.input, p.clean, "--out", p.case / "out" / "merged"])),
        ("edit delete-episodes --out", _cli(lambda p: ["edit", "delete-episodes", p.input, "0",
                                                       "--out", p.case / "out" / "deleted"])),
        ("export --contact-sheet", _cli(lambda p: ["export", p.input, "--episode", "1", "--contact-sheet",
                                                   p.case / "out" / "sheet.png", "--frames", "2"])),
    ],
    "lerobot3": [("convert --to native", _TO_NATIVE), ("loader", _loader)],
    "lerobot2": [("convert --to native", _TO_NATIVE), ("loader", _loader)],
    "rlds": [("convert --to native", _TO_NATIVE), ("loader", _loader)],
    "aloha": [("convert --to native", _TO_NATIVE)],
    "robomimic": [("convert --to native", _TO_NATIVE)],
    "policy": [("policy load + predict", _policy)],
    "pose_stream": [("pose stream load + replay", _pose_stream)],
    "calibration": [("calibration + pose file load", _calibration)],
    "tasks_csv": [("edit set-task --from-file", _cli(lambda p: [
        "edit", "set-task", p.clean, "--from-file", p.input / "tasks.csv", "--out", p.case / "out" / "relabelled"]))],
}


# -- watching ---------------------------------------------------------------------------------

IN_ACCESS, IN_MODIFY, IN_OPEN, IN_CREATE = 0x1, 0x2, 0x20, 0x100
_libc = ctypes.CDLL(None, use_errno=True)


class OutsideWatch:
    """inotify on every folder under ``root``: opens, reads and writes of anything in it, by any
    code in this process (HDF5 and Arrow open files in C, below Python's audit hooks)."""

    def __init__(self, root: Path) -> None:
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.names: dict[int, Path] = {}
        for d in [root, *[p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()]]:
            wd = _libc.inotify_add_watch(self.fd, str(d).encode(), IN_ACCESS | IN_MODIFY | IN_OPEN | IN_CREATE)
            if wd >= 0:
                self.names[wd] = d

    def events(self) -> list[str]:
        out = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            i = 0
            while i < len(buf):
                wd, mask, _cookie, size = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + size].rstrip(b"\0").decode(errors="replace")
                i += 16 + size
                what = "open" if mask & IN_OPEN else "read" if mask & IN_ACCESS else "write" if mask & IN_MODIFY \
                    else "create"
                out.append(f"{what} {self.names.get(wd, Path('?')) / name}")
        return out

    def close(self) -> None:
        os.close(self.fd)


_AUDIT: dict[str, Any] = {"outside": None, "hits": []}


def _audit(event: str, args: tuple) -> None:
    root = _AUDIT["outside"]
    if root is None or event not in ("open", "os.listdir", "os.scandir"):
        return
    target = args[0] if args else None
    if isinstance(target, (str, bytes, os.PathLike)):
        try:
            real = os.path.realpath(os.fsdecode(target))
        except (TypeError, ValueError, OSError):
            return
        if real == root or real.startswith(root + os.sep):
            _AUDIT["hits"].append(f"{event} {real}")


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` by content; links by their text, never followed."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "other"
    return out


# -- one case ---------------------------------------------------------------------------------


def plan_cases(count: int, seed: int, formats: list[str], seeds: dict[str, Path]) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    weights = [FORMATS[f] for f in formats]
    cases = []
    for i in range(count):
        # Round-robin first, so that a small --count still covers every format.
        fmt = formats[i] if i < len(formats) else rng.choices(formats, weights)[0]
        files = seed_files(seeds[fmt])
        rel = rng.choice(files)
        how = rng.choice(kinds_for(rel))
        cases.append({"id": i, "format": fmt, "file": rel, "mutation": how, "rng": rng.getrandbits(48)})
    return cases


def _classify(exc: BaseException) -> tuple[str, str]:
    from telecorder.errors import TelecorderError

    line = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    if isinstance(exc, TelecorderError):
        return "error", line
    if isinstance(exc, SystemExit):
        return ("ok" if exc.code in (0, 1, None) else "error"), f"exit {exc.code}"
    if isinstance(exc, ValueError):
        return "valueerror", line
    return "traceback", line


def run_case(case: dict[str, Any], seeds: dict[str, Path], work: Path, log: Callable[[dict], None]) -> None:
    rng = random.Random(case["rng"])
    cdir = work / f"case_{case['id']:05d}"
    shutil.rmtree(cdir, ignore_errors=True)
    (cdir / "outside").mkdir(parents=True)
    shutil.copytree(seeds[case["format"]], cdir / "in", symlinks=True)
    clean = cdir / "clean"
    shutil.copytree(seeds["clean"], clean, symlinks=True)
    try:
        detail = apply_mutation(cdir, case["file"], case["mutation"], rng)
    except Exception as exc:  # a mutation that does not apply to this file (e.g. no attributes)
        detail = f"not applied ({type(exc).__name__}: {exc})"[:200]
    paths = Paths(cdir, clean)
    outside = str((cdir / "outside").resolve())
    for name, command in COMMANDS[case["format"]]:
        shutil.rmtree(cdir / "out", ignore_errors=True)
        (cdir / "out").mkdir()
        before = (tree_digest(cdir / "in"), tree_digest(cdir / "outside"), tree_digest(clean))
        log({"start": case["id"], "command": name})
        watch = OutsideWatch(cdir / "outside")
        _AUDIT.update(outside=outside, hits=[])
        out, err = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        outcome, message, trace = "ok", "", ""
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = command(paths)
            if isinstance(result, int) and result not in (0, 1):
                outcome, message = "error", f"exit {result}"
        except BaseException as exc:  # classifying every escape is the point
            if isinstance(exc, KeyboardInterrupt):
                raise
            outcome, message = _classify(exc)
            if outcome in ("traceback", "valueerror"):
                trace = "".join(traceback.format_exception(exc))[-3000:]
        seconds = time.perf_counter() - t0
        _AUDIT["outside"] = None
        events = [e for e in watch.events() if not e.endswith("/no_such_file") or not e.startswith("create")]
        watch.close()
        outside_reads = sorted(set(events + _AUDIT["hits"]))
        after = (tree_digest(cdir / "in"), tree_digest(cdir / "outside"), tree_digest(clean))
        changed = sorted({f"in/{k}" for k in set(before[0]) | set(after[0]) if before[0].get(k) != after[0].get(k)}
                         | {f"outside/{k}" for k in set(before[1]) | set(after[1])
                            if before[1].get(k) != after[1].get(k)}
                         | {f"clean/{k}" for k in set(before[2]) | set(after[2])
                            if before[2].get(k) != after[2].get(k)})
        log({"id": case["id"], "format": case["format"], "file": case["file"], "mutation": case["mutation"],
             "detail": detail, "command": name, "outcome": outcome, "message": message, "trace": trace,
             "outside_reads": outside_reads[:10], "changed": changed[:10], "seconds": round(seconds, 3),
             "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    shutil.rmtree(cdir, ignore_errors=True)
    log({"done": case["id"]})


def worker(plan: Path, results: Path) -> int:
    spec = json.loads(plan.read_text())
    seeds = {k: Path(v) for k, v in spec["seeds"].items()}
    work = Path(spec["work"])
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("MUJOCO_GL", "egl")
    sys.addaudithook(_audit)
    with results.open("a") as fh:
        def log(rec: dict) -> None:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
        for case in spec["cases"]:
            run_case(case, seeds, work, log)
    return 0


# -- the campaign -----------------------------------------------------------------------------


def _limit(mem: int) -> Callable[[], None]:
    # RLIMIT_DATA (heap and anonymous mappings) is what an allocation sized by the input takes;
    # RLIMIT_AS would also count the address space TensorFlow's libraries reserve (over 2 GiB).
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
    return apply


def run_workers(cases: list[dict[str, Any]], seeds: dict[str, Path], work: Path, jobs: int, mem: int,
                hang_s: float) -> list[dict[str, Any]]:
    """Run the cases in ``jobs`` worker processes; a worker that dies or hangs is replaced, and
    the case it was in is recorded as a crash or a hang."""
    queues = [cases[k::jobs] for k in range(jobs)]
    records: list[dict[str, Any]] = []
    running: list[dict[str, Any]] = []

    def start(k: int, todo: list[dict[str, Any]]) -> None:
        plan = work / f"plan_{k}_{len(todo)}.json"
        res = work / f"results_{k}.jsonl"
        plan.write_text(json.dumps({"seeds": {f: str(p) for f, p in seeds.items()}, "work": str(work / f"w{k}"),
                                    "cases": todo}))
        err = (work / f"worker_{k}.err").open("a")
        proc = subprocess.Popen([sys.executable, __file__, "--worker", str(plan), "--results", str(res)],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err, preexec_fn=_limit(mem))
        running.append({"k": k, "proc": proc, "todo": todo, "res": res, "t0": time.time()})

    for k, q in enumerate(queues):
        if q:
            start(k, q)
    while running:
        time.sleep(0.5)
        for w in list(running):
            res: Path = w["res"]
            idle = time.time() - max(w["t0"], res.stat().st_mtime if res.exists() else 0.0)
            code = w["proc"].poll()
            if code is None and idle < hang_s:
                continue
            if code is None:
                w["proc"].kill()
                w["proc"].wait()
            running.remove(w)
            lines = res.read_text().splitlines() if res.exists() else []
            new = [json.loads(x) for x in lines if x.strip()]
            done = {r["done"] for r in new if "done" in r}
            starts = [r for r in new if "start" in r]
            last = starts[-1] if starts else None
            left = [c for c in w["todo"] if c["id"] not in done]
            if code == 0 and not left:
                continue
            if last is not None and left and last["start"] == left[0]["id"]:
                case = left[0]
                records.append({"id": case["id"], "format": case["format"], "file": case["file"],
                                "mutation": case["mutation"], "detail": "", "command": last["command"],
                                "outcome": "hang" if code is None else "crash",
                                "message": f"worker stopped after {hang_s:.0f} s" if code is None else f"worker exit {code}",
                                "trace": (work / f"worker_{w['k']}.err").read_text()[-2000:],
                                "outside_reads": [], "changed": [], "seconds": 0, "maxrss_mb": 0})
                done.add(case["id"])
                left = left[1:]
            if left:
                start(w["k"], left)
    for k in range(jobs):
        res = work / f"results_{k}.jsonl"
        if res.exists():
            records += [r for r in map(json.loads, res.read_text().splitlines()) if "outcome" in r]
    return sorted(records, key=lambda r: (r["id"], r["command"]))


def summarize(records: list[dict[str, Any]], cases: list[dict[str, Any]], seconds: float, seed: int) -> dict[str, Any]:
    per_format: dict[str, Counter] = defaultdict(Counter)
    per_command: dict[str, Counter] = defaultdict(Counter)
    inputs = Counter(c["format"] for c in cases)
    peak: dict[str, float] = defaultdict(float)
    for r in records:
        per_format[r["format"]][r["outcome"]] += 1
        per_command[f"{r['format']}: {r['command']}"][r["outcome"]] += 1
        peak[r["format"]] = max(peak[r["format"]], r["maxrss_mb"])
    bad = [r for r in records if r["outcome"] in ("traceback", "hang", "crash")]
    outside = [r for r in records if r["outside_reads"] and r["mutation"] not in LINKS]
    followed = [r for r in records if r["outside_reads"] and r["mutation"] in LINKS]
    changed = [r for r in records if r["changed"]]
    value_errors = [r for r in records if r["outcome"] == "valueerror"]
    return {
        "seed": seed, "inputs": len(cases), "runs": len(records), "seconds": round(seconds, 1),
        "tracebacks": len(bad), "outside_reads": len(outside), "followed_links": len(followed),
        "changed_inputs": len(changed),
        "value_errors": len(value_errors), "peak_rss_mb": round(max(peak.values(), default=0.0), 1),
        "per_format": {f: {"inputs": inputs[f], **dict(per_format[f]), "peak_rss_mb": peak[f]}
                       for f in sorted(inputs)},
        "per_command": {k: dict(v) for k, v in sorted(per_command.items())},
        "failures": [{k: r[k] for k in ("id", "format", "file", "mutation", "detail", "command", "outcome", "message",
                                        "outside_reads", "changed")} | {"trace": r["trace"][-1000:]}
                     for r in bad + outside + changed + value_errors][:400],
    }


def print_summary(summary: dict[str, Any]) -> None:
    outcomes = ["ok", "error", "valueerror", "traceback", "hang", "crash"]
    print(f"{'format':<12} {'inputs':>6} " + " ".join(f"{o:>10}" for o in outcomes) + f" {'peak MB':>8}")
    for f, row in summary["per_format"].items():
        print(f"{f:<12} {row['inputs']:>6} " + " ".join(f"{row.get(o, 0):>10}" for o in outcomes)
              + f" {row['peak_rss_mb']:>8.0f}")
    print(f"{summary['inputs']} mutated inputs, {summary['runs']} command runs in {summary['seconds']} s: "
          f"{summary['tracebacks']} tracebacks/hangs/crashes, {summary['outside_reads']} reads outside the input "
          f"(+{summary['followed_links']} through links placed in it), "
          f"{summary['changed_inputs']} changed inputs, {summary['value_errors']} foreign ValueErrors, "
          f"peak RSS {summary['peak_rss_mb']:.0f} MB")
    seen = set()
    for fl in summary["failures"]:
        key = (fl["format"], fl["command"], fl["outcome"], fl["message"][:80], bool(fl["outside_reads"]),
               bool(fl["changed"]))
        if key in seen:
            continue
        seen.add(key)
        extra = (f" outside={fl['outside_reads'][:2]}" if fl["outside_reads"] else "") + \
                (f" changed={fl['changed'][:3]}" if fl["changed"] else "")
        print(f"  #{fl['id']} {fl['format']} {fl['file']} {fl['mutation']} ({fl['detail'][:60]}) | {fl['command']} "
              f"-> {fl['outcome']}: {fl['message'][:160]}{extra}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=2000, help="mutated inputs (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {', '.join(FORMATS)}")
    ap.add_argument("--exclude", default="", help="FORMAT:MUTATION pairs to leave out (known open classes)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--memory-gb", type=float, default=2.0, help="RLIMIT_DATA of each worker (default 2)")
    ap.add_argument("--hang-s", type=float, default=180.0, help="a command silent this long is a hang")
    ap.add_argument("--json", type=Path, default=RESULTS, help=f"summary file (default {RESULTS})")
    ap.add_argument("--replay", type=int, help="run only case N in this process and print tracebacks")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.results)
    formats = [f for f in args.formats.split(",") if f]
    unknown = set(formats) - set(FORMATS)
    if unknown:
        ap.error(f"unknown format(s) {sorted(unknown)}")
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="tc-fuzz-")) if args.keep is None else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        seeds = build_seeds(tmp / "seeds", formats)
        excluded = {tuple(x.split(":", 1)) for x in args.exclude.split(",") if ":" in x}
        cases = [c for c in plan_cases(args.count, args.seed, formats, seeds)
                 if (c["format"], c["mutation"]) not in excluded and ("*", c["mutation"]) not in excluded]
        if args.replay is not None:
            sys.addaudithook(_audit)
            case = next(c for c in cases if c["id"] == args.replay)
            def show(rec: dict) -> None:
                if "outcome" in rec:
                    print(json.dumps({k: v for k, v in rec.items() if k != "trace"}))
                    if rec["trace"]:
                        print(rec["trace"])
            run_case(case, seeds, tmp / "replay", show)
            return 0
        records = run_workers(cases, seeds, tmp, args.jobs, int(args.memory_gb * GIB), args.hang_s)
        summary = summarize(records, cases, time.monotonic() - t0, args.seed)
        summary.update(count=args.count, formats=formats, excluded=sorted(":".join(x) for x in excluded),
                       memory_limit_gb=args.memory_gb)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
        print_summary(summary)
        ok = (summary["tracebacks"] == 0 and summary["outside_reads"] == 0 and summary["changed_inputs"] == 0
              and summary["peak_rss_mb"] < args.memory_gb * 1024)
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
