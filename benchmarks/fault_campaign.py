"""Fault campaign: SIGKILL the real commands at random moments, then check that nothing was lost.

Every run starts a real command in a child process (``collect`` on the simulator,
``telecorder convert``, ``telecorder doctor --repair``, ``mark_bad`` through the Python
API) and kills it with SIGKILL, in one of two ways:

* ``time``: the parent kills the child after a random delay within the command's run
  time (measured once per scenario without a kill);
* ``syscall``: the child kills itself just before or just after its k-th durability
  call (``os.fsync``, ``os.replace``, ``os.rename``, ``os.unlink``, ``os.ftruncate``,
  ``os.write``), with k drawn from the number of such calls the command makes. This
  lands kills inside the commit windows (episode rename, index append, stats and info
  replace, salvage, swap of a converted output) that a timer would almost never hit.

After each kill: every episode file that was complete before the command, or when it
was killed, must still be there byte for byte and listed in the index; every unfinished
episode that held at least one flushed step must have become a salvaged episode or a
file in ``episodes/.unrecoverable/`` (nothing a user could recover is deleted); and
``telecorder doctor`` must pass, after ``doctor --repair`` where it reports errors.
Conversions are finished with ``convert --resume`` and compared with their source.

    python benchmarks/fault_campaign.py                 # 30 kills (about 5 minutes on 2 cores)
    python benchmarks/fault_campaign.py --kills 6 --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

BIN = Path(sys.executable).parent
RESULTS = Path(__file__).parent / "results" / "fault_campaign.json"

# Installed in the child before the command runs: counts durability calls, and kills the
# process at the k-th one when TC_FAULT_AT=k (before or after the call, TC_FAULT_WHEN).
_PRELUDE = textwrap.dedent(
    """
    import atexit, os, signal, sys
    _at = int(os.environ.get("TC_FAULT_AT", "0"))
    _when = os.environ.get("TC_FAULT_WHEN", "before")
    _n = [0]
    def _wrap(name):
        real = getattr(os, name)
        def call(*args, **kwargs):
            _n[0] += 1
            hit = _n[0] == _at
            if hit and _when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = real(*args, **kwargs)
            if hit:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        setattr(os, name, call)
    for _name in ("fsync", "replace", "rename", "unlink", "ftruncate", "write"):
        _wrap(_name)
    _count_file = os.environ.get("TC_FAULT_COUNT")
    if _count_file:
        atexit.register(lambda: open(_count_file, "w").write(str(_n[0])))
    """
)

COLLECT = ["--device", "scripted", "--robot", "sim", "--script", "sweep", "--sim-cameras", "front",
           "--camera-size", "96x72", "--reset-time", "0"]


def cli_code(kind: str, argv: list[str]) -> str:
    call = {"collect": "from telecorder.cli import collect_main as entry",
            "telecorder": "from telecorder.cli import main as entry"}[kind]
    return f"{_PRELUDE}\n{call}\nsys.exit(entry({argv!r}))\n"


def mark_bad_code(root: Path, index: int) -> str:
    return f"{_PRELUDE}\nfrom telecorder.datasets.dataset import mark_bad\nmark_bad({str(root)!r}, {index}, reason='campaign')\n"


def run_child(code: str, *, kill_after: float | None = None, fault_at: int = 0, when: str = "before",
              count_file: Path | None = None, timeout: float = 180) -> tuple[int, float]:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "TC_FAULT_AT": str(fault_at),
           "TC_FAULT_WHEN": when}
    if count_file is not None:
        env["TC_FAULT_COUNT"] = str(count_file)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if kill_after is not None:
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"child exited {proc.returncode}: {err[-2000:]}")
    return proc.returncode, time.monotonic() - t0


def telecorder(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "telecorder"), *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


# -- what a dataset holds -----------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Unfinished:
    """An unfinished episode with flushed steps: what must survive, by content, not by name."""

    index: int
    digest: str  # the file as it was (a file set aside must be this one)
    start_time: str
    actions: bytes  # its flushed action rows (a salvaged episode must begin with them)


@dataclass
class Snapshot:
    complete: dict[str, str] = field(default_factory=dict)  # episode file name -> sha256
    unfinished: list[Unfinished] = field(default_factory=list)

    @classmethod
    def of(cls, root: Path) -> Snapshot:
        snap = cls()
        folder = root / "episodes"
        if not folder.is_dir():
            return snap
        for p in sorted(folder.glob("episode_*.h5")):
            snap.complete[p.name] = sha(p)
        for p in sorted(folder.glob(".episode_*.partial.h5")):
            try:
                with h5py.File(p, "r", locking=False) as f:
                    n = _complete_steps(f)
                    if n > 0:
                        snap.unfinished.append(Unfinished(int(f.attrs["episode_index"]), sha(p),
                                                          str(f.attrs.get("start_time", "")),
                                                          f["action"][:n].tobytes()))
            except (OSError, KeyError):
                pass  # nothing readable was flushed: not recoverable
        return snap

    def merge(self, other: Snapshot) -> Snapshot:
        return Snapshot({**self.complete, **other.complete}, list(dict.fromkeys(self.unfinished + other.unfinished)))


def _complete_steps(f: h5py.File) -> int:
    """Steps present in every per-step dataset (what a salvage can keep)."""
    lengths: list[int] = []
    f.visititems(lambda _, obj: lengths.append(obj.shape[0]) if isinstance(obj, h5py.Dataset) else None)
    return min(lengths, default=0)


def check_nothing_lost(root: Path, snap: Snapshot) -> list[str]:
    """What was lost since ``snap`` (empty if nothing)."""
    problems = []
    index = root / "meta/episodes.jsonl"
    listed = {}
    if index.exists():
        for line in index.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                listed[int(rec["episode_index"])] = rec
    for name, digest in snap.complete.items():
        p = root / "episodes" / name
        if not p.exists():
            problems.append(f"{name}: complete before, gone now")
        elif sha(p) != digest:
            problems.append(f"{name}: changed")
        elif int(name[8:14]) not in listed:
            problems.append(f"{name}: not in the index")
    set_aside = {sha(p) for p in (root / "episodes/.unrecoverable").glob("*")} \
        if (root / "episodes/.unrecoverable").is_dir() else set()
    for u in snap.unfinished:
        if u.digest in set_aside or any(_begins_with(root / f"episodes/episode_{i:06d}.h5", u) for i in listed):
            continue
        problems.append(f"unfinished episode {u.index} (started {u.start_time}) had flushed steps and is "
                        "neither in a salvaged episode nor set aside")
    return problems


def _begins_with(path: Path, u: Unfinished) -> bool:
    try:
        with h5py.File(path, "r") as f:
            if str(f.attrs.get("start_time", "")) != u.start_time:
                return False
            rows = f["action"]
            n = len(u.actions) // (rows.dtype.itemsize * int(np.prod(rows.shape[1:])))
            return rows.shape[0] >= n and rows[:n].tobytes() == u.actions
    except (OSError, KeyError):
        return False


def doctor_passes(root: Path) -> tuple[bool, bool, str]:
    """(passes, needed repair, output of the last doctor)."""
    first = telecorder("doctor", str(root), "--frames", "all")
    if first.returncode == 0:
        return True, False, first.stdout
    telecorder("doctor", str(root), "--repair")
    second = telecorder("doctor", str(root), "--frames", "all")
    return second.returncode == 0, True, second.stdout + second.stderr


def same_episodes(src: Path, dst: Path) -> list[str]:
    from telecorder.datasets.dataset import Dataset

    a, b = Dataset.open(src), Dataset.open(dst)
    if len(a) != len(b):
        return [f"{dst}: {len(b)} episodes, source has {len(a)}"]
    by_source = {int(r["source_episode_index"]): int(r["episode_index"]) for r in b.records}
    problems = []
    for i in a.episode_indices:
        if i not in by_source:
            problems.append(f"{dst}: source episode {i} is missing")
            continue
        with a.episode(i) as x, b.episode(by_source[i]) as y:
            if not (np.array_equal(x.numeric("action"), y.numeric("action"))
                    and np.array_equal(x.timestamps(), y.timestamps())):
                problems.append(f"{dst}: episode {by_source[i]} differs from source episode {i}")
    return problems


# -- scenarios ------------------------------------------------------------------------------


@dataclass
class Templates:
    clean: Path  # 3 complete episodes
    crashed: Path  # 2 complete episodes and one killed mid-episode
    clean_digests: dict[str, str]  # the clean template's episode files: conversions must leave them alone


def make_templates(work: Path) -> Templates:
    clean, crashed = work / "template-clean", work / "template-crashed"
    run_child(cli_code("collect", [*COLLECT, "--episodes", "3", "--episode-time", "1.5", "--seed", "0",
                                   "--out", str(clean)]))
    run_child(cli_code("collect", [*COLLECT, "--episodes", "2", "--episode-time", "1.5", "--seed", "1",
                                   "--out", str(crashed)]))
    # A third episode, killed once it has flushed some steps.
    kill_when_flushed(cli_code("collect", [*COLLECT, "--episodes", "1", "--episode-time", "30", "--seed", "2",
                                           "--out", str(crashed), "--resume"]),
                      crashed / "episodes/.episode_000002.partial.h5")
    assert Snapshot.of(crashed).unfinished, "the crashed template needs an unfinished episode"
    return Templates(clean, crashed, Snapshot.of(clean).complete)


def kill_when_flushed(code: str, partial: Path, steps: int = 20, timeout: float = 120) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with h5py.File(partial, "r", locking=False) as f:
                    if f["timestamp"].shape[0] >= steps:
                        break
            except (OSError, KeyError):
                pass
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Scenario:
    name: str
    setup: Callable[[Path], Path]  # makes the dataset (or source) for one run; returns it
    code: Callable[[Path], str]  # the command, given what setup made
    verify: Callable[[Path, Snapshot], tuple[list[str], bool]]  # after the kill: (problems, repaired)


@dataclass
class Outcome:
    scenario: str
    mode: str
    at: str
    problems: list[str]
    repaired: bool


def dataset_verify(root: Path, before: Snapshot) -> tuple[list[str], bool]:
    snap = before.merge(Snapshot.of(root))
    if not (root / "meta/info.json").exists() and not snap.complete and not snap.unfinished:
        # Killed before the dataset existed: nothing was recorded, and recording into the folder
        # must still be possible (a half-created skeleton is not a foreign folder).
        from telecorder.datasets.dataset import _empty_or_unborn

        if root.exists() and not _empty_or_unborn(root):
            return [f"{root}: left in a state a new recording would refuse"], False
        return [], False
    ok, repaired, out = doctor_passes(root)
    problems = check_nothing_lost(root, snap)
    if not ok:
        problems.append("doctor fails after --repair: " + out[-600:])
    return problems, repaired


def scenarios(t: Templates) -> list[Scenario]:
    def copy_of(template: Path) -> Callable[[Path], Path]:
        def setup(run_dir: Path) -> Path:
            dst = run_dir / "ds"
            shutil.copytree(template, dst)
            return dst
        return setup

    def fresh(run_dir: Path) -> Path:
        return run_dir / "ds"

    def record(ds: Path) -> str:
        return cli_code("collect", [*COLLECT, "--episodes", "3", "--episode-time", "1.5", "--seed", "5",
                                    "--out", str(ds)])

    def resume(ds: Path) -> str:
        return cli_code("collect", [*COLLECT, "--episodes", "2", "--episode-time", "1.5", "--seed", "6",
                                    "--out", str(ds), "--resume"])

    def repair(ds: Path) -> str:
        return cli_code("telecorder", ["doctor", str(ds), "--repair"])

    def convert(ds: Path) -> str:
        return cli_code("telecorder", ["convert", str(t.clean), str(ds), "--to", "native"])

    def convert_resume(ds: Path) -> str:
        return cli_code("telecorder", ["convert", str(t.clean), str(ds), "--to", "native", "--resume"])

    convert_calls: list[int] = []

    def interrupted_conversion(run_dir: Path) -> Path:
        dst = run_dir / "converted"
        if not convert_calls:
            count = run_dir / "count"
            run_child(convert(run_dir / "counted"), count_file=count)
            convert_calls.append(int(count.read_text()))
        # Killed half way: some episodes are in the output, the rest are still to convert.
        run_child(convert(dst), fault_at=convert_calls[0] // 2, when="after")
        return dst

    def convert_verify(dst: Path, before: Snapshot) -> tuple[list[str], bool]:
        problems = []
        if Snapshot.of(t.clean).complete != t.clean_digests:
            problems.append("the source changed")
        # The output is built in the run's locked work folder, .NAME.partial/dataset.
        work_dir = dst.with_name("." + dst.name + ".partial") / "dataset"
        partial_snap = before.merge(Snapshot.of(work_dir))
        if not dst.exists() or work_dir.exists():
            res = telecorder("convert", str(t.clean), str(dst), "--to", "native", "--resume")
            if res.returncode != 0:
                return [f"convert --resume failed: {res.stderr[-600:]}"], False
        ok, repaired, out = doctor_passes(dst)
        if not ok:
            problems.append("doctor fails on the output: " + out[-600:])
        problems += [p for p in check_nothing_lost(dst, Snapshot(partial_snap.complete)) if "changed" in p]
        problems += same_episodes(t.clean, dst)
        return problems, repaired

    def converted_dst(run_dir: Path) -> Path:
        return run_dir / "converted"

    def mark(ds: Path) -> str:
        return mark_bad_code(ds, 1)

    return [
        Scenario("record", fresh, record, dataset_verify),
        Scenario("resume", copy_of(t.crashed), resume, dataset_verify),
        Scenario("repair", copy_of(t.crashed), repair, dataset_verify),
        Scenario("mark_bad", copy_of(t.clean), mark, dataset_verify),
        Scenario("convert", converted_dst, convert, convert_verify),
        Scenario("convert-resume", interrupted_conversion, convert_resume, convert_verify),
    ]


# Kills per scenario and mode, 30 in all.
PLAN = [
    ("record", "time", 5), ("record", "syscall", 5),
    ("resume", "time", 2), ("resume", "syscall", 4),
    ("repair", "syscall", 4),
    ("mark_bad", "syscall", 3),
    ("convert", "time", 1), ("convert", "syscall", 3),
    ("convert-resume", "syscall", 3),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=30, help="how many kills (the plan is scaled to it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="tc-faults-"))
    t_start = time.monotonic()
    try:
        print(f"fault campaign in {work} (seed {args.seed})", flush=True)
        templates = make_templates(work)
        by_name = {s.name: s for s in scenarios(templates)}
        plan = _scaled(PLAN, args.kills)
        calls: dict[str, int] = {}
        durations: dict[str, float] = {}
        outcomes: list[Outcome] = []
        for n, (name, mode) in enumerate(plan):
            sc = by_name[name]
            if name not in calls:  # calibrate: the same command without a kill
                cal = work / f"calibrate-{name}"
                cal.mkdir()
                target = sc.setup(cal)
                count = cal / "count"
                _, durations[name] = run_child(sc.code(target), count_file=count)
                calls[name] = int(count.read_text())
            run_dir = work / f"run-{n:02d}-{name}-{mode}"
            run_dir.mkdir()
            target = sc.setup(run_dir)
            before = Snapshot.of(target) if target.exists() else Snapshot()
            if mode == "time":
                delay = rng.uniform(0.2, durations[name])
                code, _ = run_child(sc.code(target), kill_after=delay)
                at = f"t={delay:.2f}s of {durations[name]:.1f}s"
            else:
                k, when = rng.randint(1, calls[name]), rng.choice(["before", "after"])
                code, _ = run_child(sc.code(target), fault_at=k, when=when)
                at = f"{when} durability call {k} of {calls[name]}"
            killed = code == -signal.SIGKILL
            problems, repaired = sc.verify(target, before)
            outcomes.append(Outcome(name, mode, at + ("" if killed else " (finished first)"), problems, repaired))
            mark = "ok " if not problems else "LOST"
            print(f"{n + 1:2d}/{len(plan)} {mark} {name:15s} {mode:8s} {at}"
                  f"{'' if killed else ' (finished before the kill)'}{'  [repaired]' if repaired else ''}", flush=True)
            for p in problems:
                print(f"      {p}", flush=True)
        passed = sum(not o.problems for o in outcomes)
        killed = sum("finished first" not in o.at for o in outcomes)
        print(f"\n{passed}/{len(outcomes)} runs lost nothing ({killed} killed mid-command, "
              f"{sum(o.repaired for o in outcomes)} needed doctor --repair) in {time.monotonic() - t_start:.0f} s")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "seed": args.seed, "runs": len(outcomes), "passed": passed, "killed_mid_command": killed,
            "durability_calls": calls, "seconds": round(time.monotonic() - t_start, 1),
            "outcomes": [o.__dict__ for o in outcomes]}, indent=2) + "\n")
        return 0 if passed == len(outcomes) else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _scaled(plan: list[tuple[str, str, int]], total: int) -> list[tuple[str, str]]:
    """The plan resized to ``total`` kills: every entry at least once while there is room, else
    one kill per scenario (at a syscall, where the commit windows are)."""
    if total < len(plan):
        names = list(dict.fromkeys(name for name, *_ in plan))
        mode = {name: m for name, m, _ in plan}  # the last entry of each: its syscall kills
        return [(name, mode[name]) for name in names][:total]
    full = sum(n for *_, n in plan)
    counts = [max(1, int(n * total / full)) for *_, n in plan]
    order = sorted(range(len(plan)), key=lambda i: -(plan[i][2] * total / full - int(plan[i][2] * total / full)))
    for i in order:
        if sum(counts) >= total:
            break
        counts[i] += 1
    while sum(counts) > total:
        counts[counts.index(max(counts))] -= 1
    return [(name, m) for (name, m, _), c in zip(plan, counts, strict=True) for _ in range(c)]


if __name__ == "__main__":
    sys.exit(main())
