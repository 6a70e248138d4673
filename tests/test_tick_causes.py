"""Why ticks were late: the loop's per-tick CPU/wall time and the machine's load, stored with each
episode, turned by doctor into one clause after its late-tick warning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_info, synthetic_steps

from telecorder import cli
from telecorder.datasets.async_writer import AsyncEpisodeWriter
from telecorder.datasets.dataset import Dataset, DatasetWriter
from telecorder.datasets.doctor import check_dataset, repair_dataset
from telecorder.datasets.episode_file import LOOP_BUSY_PATH, LOOP_CPU_PATH, EpisodeReader, StepBatch
from telecorder.datasets.tick_causes import classify_late_ticks, explain_late_ticks
from telecorder.errors import DatasetError

FPS = 30.0
PERIOD = 1 / FPS
N = 60
LATE_EVERY = 10  # ticks 10, 20, ... 50 are late: 5 of 60 steps, over doctor's 1% tolerance

QUIET = {"cpu_count": 2, "load_1m": [0.2, 0.3], "others_cpu": 0.05, "process_cpu": 0.4,
         "involuntary_switches": 12, "loop_involuntary_switches": 3, "realtime": "SCHED_FIFO 50", "cpu_pin": None}
NOT_PERMITTED = "normal (not permitted: no CAP_SYS_NICE, RLIMIT_RTPRIO 0)"
BUSY = {**QUIET, "load_1m": [2.8, 3.1], "others_cpu": 1.9, "process_cpu": 0.3, "realtime": NOT_PERMITTED}


def pattern(kind: str) -> dict[str, np.ndarray]:
    """Per-tick lateness and loop CPU/wall seconds of an episode whose late ticks have one cause."""
    lateness = np.zeros(N)
    cpu, busy = np.full(N, 0.003), np.full(N, 0.004)
    for k in range(LATE_EVERY, N, LATE_EVERY):
        if kind == "work":  # the tick before computed for 41 ms of a 33 ms period
            cpu[k - 1], busy[k - 1] = 0.041, 0.042
        elif kind == "wait":  # ... or was away for 40 ms, 3 ms of them on a CPU
            cpu[k - 1], busy[k - 1] = 0.003, 0.040
        lateness[k] = busy[k - 1] - PERIOD if kind != "wake" else 0.008  # wake: work in time, woken 8 ms late
    return {"lateness": lateness, "loop_cpu": cpu, "loop_busy": busy}


def write_episodes(root: Path, episodes: list[dict]) -> None:
    """Episodes through the real writer, each with its own lateness, loop times and timing context."""
    info = make_info(cameras=("front",), fps=FPS)
    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw, encode_threads=1)
        try:
            for e, ep in enumerate(episodes):
                steps = synthetic_steps(N, info, seed=e)
                for i, s in enumerate(steps):
                    s.lateness = float(ep["lateness"][i])
                    s.timestamp = i * PERIOD + s.lateness
                    s.frame_time = {c: s.timestamp - 0.005 for c in info.cameras}
                    if ep.get("loop_cpu") is not None:
                        s.loop_cpu, s.loop_busy = float(ep["loop_cpu"][i]), float(ep["loop_busy"][i])
                writer.begin({"task": "pick"})
                for s in steps:
                    writer.add(s)
                attrs = {"timing_context": ep["context"]} if ep.get("context") is not None else {}
                writer.end(attrs, {"task": "pick"}).result(timeout=60)
        finally:
            writer.close()


def run_inline(capsys, monkeypatch, *args) -> tuple[int, str]:
    monkeypatch.setenv("COLUMNS", "1000")
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


LATE_WARNING = re.compile(r"episode (\d+): 5 late tick\(s\) \(8\.3%, worst \d+\.\d ms\)")


def late_warning(report, episode: int) -> str:
    found = [w for w in report.episodes[episode].warnings if "late tick" in w]
    assert len(found) == 1, report.episodes[episode].warnings
    return found[0]


# -- each pattern, written and read back by doctor ---------------------------------------------------


CASES = {
    "work-quiet": ("work", QUIET, "the loop's own work overran: the tick before each late one took 41 ms of CPU "
                                  "(period 33 ms) - a slow device or policy"),
    "work-busy": ("work", BUSY, "the loop's own work overran: the tick before each late one took 41 ms of CPU"),
    "wait-quiet": ("wait", QUIET, "the loop waited (GIL, a device or the writer): work took 40 ms wall but "
                                  "3.0 ms CPU before late ticks"),
    "wait-busy": ("wait", BUSY, "late ticks coincide with CPU contention: other processes kept 1.9 of 2 CPUs busy "
                                "(load 3.1); recorded without real-time priority (not permitted: no CAP_SYS_NICE, "
                                "RLIMIT_RTPRIO 0) - see docs/collect.md#real-time-priority"),
    "wake-quiet": ("wake", QUIET, "the OS woke the loop late (no CPU contention recorded); recorded with SCHED_FIFO 50"),
    "wake-busy": ("wake", BUSY, "late ticks coincide with CPU contention: other processes kept 1.9 of 2 CPUs busy"),
}


@pytest.fixture(scope="module")
def patterns(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("causes") / "ds"
    write_episodes(root, [{**pattern(kind), "context": ctx} for kind, ctx, _ in CASES.values()])
    return root


def test_each_pattern_gets_its_cause_after_the_unchanged_warning(patterns):
    report = check_dataset(patterns, decode_frames="none")
    assert report.ok, report.all_errors
    for e, (name, (_, _, clause)) in enumerate(CASES.items()):
        warning = late_warning(report, e)
        head, _, cause = warning.partition("; ")
        assert LATE_WARNING.fullmatch(head), (name, warning)
        assert cause.startswith(clause), (name, warning)
        assert report.episodes[e].late_cause == cause


def test_doctor_json_has_late_cause_per_episode_and_keeps_its_keys(patterns, capsys, monkeypatch):
    code, output = run_inline(capsys, monkeypatch, "doctor", patterns, "--json", "--frames", "none")
    assert code == 0, output
    doc = json.loads(output)
    assert set(doc) == {"dataset", "ok", "errors", "warnings", "repairs", "episodes"}
    for e, (_, _, clause) in enumerate(CASES.values()):
        ep = doc["episodes"][e]
        assert {"episode_index", "steps", "sync", "errors", "warnings"} <= set(ep)
        assert ep["late_cause"].startswith(clause)
        assert any(w.endswith("; " + ep["late_cause"]) for w in ep["warnings"])


def test_late_cause_travels_with_checks_run_elsewhere(patterns):
    """Checks that ran in another process (doctor --runner beam) come back as JSON, cause included."""
    from telecorder.datasets.doctor import EpisodeCheck

    report = check_dataset(patterns, decode_frames="none")
    for check in report.episodes:
        back = EpisodeCheck.from_json_dict(json.loads(json.dumps(check.to_json_dict())))
        assert back.late_cause == check.late_cause and back.late_cause


def test_episode_on_time_has_no_cause(tmp_path, capsys, monkeypatch):
    write_episodes(tmp_path / "ds", [{"lateness": np.zeros(N), "loop_cpu": np.full(N, 0.003),
                                      "loop_busy": np.full(N, 0.004), "context": BUSY}])
    report = check_dataset(tmp_path / "ds", decode_frames="none")
    assert report.ok and not report.all_warnings, report.all_warnings
    assert report.episodes[0].late_cause is None
    code, output = run_inline(capsys, monkeypatch, "doctor", tmp_path / "ds", "--json")
    assert code == 0 and "late_cause" not in json.loads(output)["episodes"][0], output


# -- old and foreign files -----------------------------------------------------------------------------


def strip_timing(path: Path, *, context: bool = True) -> None:
    """Make ``path`` an episode file as written before the loop was measured."""
    with h5py.File(path, "r+") as f:
        del f[LOOP_CPU_PATH], f[LOOP_BUSY_PATH]
        if context:
            del f.attrs["timing_context"]


def test_old_file_without_arrays_or_context_warns_as_before(tmp_path):
    write_episodes(tmp_path / "ds", [{**pattern("work"), "context": BUSY}])
    path = tmp_path / "ds/episodes/episode_000000.h5"
    strip_timing(path)
    with EpisodeReader(path) as reader:
        assert reader.loop_cpu() is None and reader.loop_busy() is None
    report = check_dataset(tmp_path / "ds", decode_frames="none")
    assert report.ok, report.all_errors
    assert LATE_WARNING.fullmatch(late_warning(report, 0))
    assert report.episodes[0].late_cause is None


def test_file_with_context_but_no_arrays_is_explained_by_the_context(tmp_path):
    write_episodes(tmp_path / "ds", [{**pattern("work"), "context": BUSY}, {**pattern("work"), "context": QUIET}])
    for e in (0, 1):
        strip_timing(tmp_path / f"ds/episodes/episode_00000{e}.h5", context=False)
    report = check_dataset(tmp_path / "ds", decode_frames="none")
    assert late_warning(report, 0).endswith("; " + CASES["wait-busy"][2])
    # A quiet machine at real-time priority and nothing per tick: nothing to say.
    assert LATE_WARNING.fullmatch(late_warning(report, 1))


def test_arrays_never_measured_fall_back_to_the_context(tmp_path):
    """A step no recorder made (a converted episode) stores NaN: only the context explains."""
    write_episodes(tmp_path / "ds", [{"lateness": pattern("wake")["lateness"], "context": BUSY},
                                     {"lateness": pattern("wake")["lateness"]}])
    with EpisodeReader(tmp_path / "ds/episodes/episode_000000.h5") as reader:
        assert np.isnan(reader.loop_cpu()).all() and np.isnan(reader.loop_busy()).all()
    report = check_dataset(tmp_path / "ds", decode_frames="none")
    assert report.ok, report.all_errors
    assert late_warning(report, 0).endswith("; " + CASES["wait-busy"][2])
    assert LATE_WARNING.fullmatch(late_warning(report, 1))


def test_foreign_context_of_another_shape_is_ignored(tmp_path):
    foreign = {"cpu_count": "two", "load_1m": "high", "others_cpu": [1.9], "realtime": 5}
    write_episodes(tmp_path / "ds", [{**pattern("wake"), "context": foreign}])
    report = check_dataset(tmp_path / "ds", decode_frames="none")
    assert report.ok, report.all_errors
    assert late_warning(report, 0).endswith("; the OS woke the loop late (its work ended in time)")


# -- damaged arrays --------------------------------------------------------------------------------


def _replace(name: str, make):
    def damage(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            n = f["timestamp"].shape[0]
            del f[name]
            f.create_dataset(name, data=make(n))
    return damage


def _set(name: str, step: int, value: float):
    def damage(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            f[name][step] = value
    return damage


DAMAGE = {
    "cpu-short": (LOOP_CPU_PATH, _replace(LOOP_CPU_PATH, lambda n: np.zeros(n - 1, np.float32))),
    "busy-long": (LOOP_BUSY_PATH, _replace(LOOP_BUSY_PATH, lambda n: np.zeros(n + 3, np.float32))),
    "cpu-2d": (LOOP_CPU_PATH, _replace(LOOP_CPU_PATH, lambda n: np.zeros((n, 2), np.float32))),
    "cpu-text": (LOOP_CPU_PATH, _replace(LOOP_CPU_PATH, lambda n: np.array([b"abc"] * n))),
    "busy-int": (LOOP_BUSY_PATH, _replace(LOOP_BUSY_PATH, lambda n: np.ones(n, np.int64))),
    "cpu-nan": (LOOP_CPU_PATH, _set(LOOP_CPU_PATH, 7, np.nan)),
    "busy-inf": (LOOP_BUSY_PATH, _set(LOOP_BUSY_PATH, 9, np.inf)),
    "cpu-negative": (LOOP_CPU_PATH, _set(LOOP_CPU_PATH, 3, -0.5)),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_loop_arrays_are_one_error_line(tmp_path, kind, capsys, monkeypatch):
    write_episodes(tmp_path / "ds", [{**pattern("wait"), "context": QUIET}] * 2)
    path = tmp_path / "ds/episodes/episode_000001.h5"
    name, damage = DAMAGE[kind]
    damage(path)
    code, output = run_inline(capsys, monkeypatch, "doctor", tmp_path / "ds")
    assert code == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and f"/{name}" in errors[0], output
    assert "2 episodes checked" in output
    # The sound episode is still explained; the damaged values explain nothing.
    report = check_dataset(tmp_path / "ds", decode_frames="none")
    assert report.episodes[0].late_cause == CASES["wait-quiet"][2]
    assert report.episodes[1].late_cause is None


@pytest.mark.parametrize("kind", ["cpu-short", "busy-int"])
def test_reader_refuses_loop_arrays_of_the_wrong_length_or_type(tmp_path, kind):
    write_episodes(tmp_path / "ds", [{**pattern("wait"), "context": QUIET}])
    path = tmp_path / "ds/episodes/episode_000000.h5"
    name, damage = DAMAGE[kind]
    damage(path)
    with pytest.raises(DatasetError, match=re.escape(f"/{name}")):
        EpisodeReader(path)


# -- salvage of an interrupted episode -------------------------------------------------------------


def interrupted_episode(root: Path, *, loop: bool, edit=None) -> tuple[np.ndarray, np.ndarray]:
    """A dataset with one complete episode and a partial one of 40 flushed steps (what a kill leaves)."""
    import cv2

    info = make_info(cameras=("front",), fps=FPS)
    write_episodes(root, [{**pattern("wake"), "context": QUIET}])
    rng = np.random.default_rng(3)
    cpu, busy = rng.uniform(0.001, 0.003, 40).astype(np.float32), rng.uniform(0.003, 0.006, 40).astype(np.float32)
    steps = synthetic_steps(40, info, seed=9)
    idx = np.arange(40)
    with DatasetWriter(root, info, resume=True) as dw:
        writer = dw.start_episode(1, {"task": "interrupted"})
        writer.append(StepBatch(
            timestamp=idx / FPS,
            numeric={f.name: np.stack([s.numeric[f.name] for s in steps]) for f in info.numeric_features},
            images={c: [cv2.imencode(".jpg", s.frames[c])[1].ravel() for s in steps] for c in info.cameras},
            image_timestamp={c: idx / FPS for c in info.cameras},
            frame_index={c: idx for c in info.cameras},
            tick_lateness=np.zeros(40, np.float32),
            loop_cpu=cpu, loop_busy=busy,
        ))
        writer.flush()
        crashed = writer.path.read_bytes()
        partial = writer.path
        writer.abort()
    partial.write_bytes(crashed)
    if not loop or edit is not None:
        with h5py.File(partial, "r+") as f:
            if not loop:
                del f[LOOP_CPU_PATH], f[LOOP_BUSY_PATH]
            if edit is not None:
                edit(f)
    return cpu, busy


def test_salvage_keeps_the_loop_measurements(tmp_path):
    cpu, busy = interrupted_episode(tmp_path / "ds", loop=True)
    actions = repair_dataset(tmp_path / "ds")
    assert any("salvaged 40 steps" in a for a in actions), actions
    with Dataset.open(tmp_path / "ds").episode(1) as ep:
        assert ep.attrs["recovered"] is True
        np.testing.assert_array_equal(ep.loop_cpu(), cpu)
        np.testing.assert_array_equal(ep.loop_busy(), busy)
    assert check_dataset(tmp_path / "ds").ok


def test_salvage_works_without_the_loop_measurements(tmp_path):
    interrupted_episode(tmp_path / "ds", loop=False)
    actions = repair_dataset(tmp_path / "ds")
    assert any("salvaged 40 steps" in a for a in actions), actions
    with Dataset.open(tmp_path / "ds").episode(1) as ep:
        assert len(ep) == 40 and ep.loop_cpu() is None and ep.loop_busy() is None
    assert check_dataset(tmp_path / "ds").ok


def test_salvage_never_cuts_steps_for_shorter_loop_measurements(tmp_path):
    """A kill inside a flush can leave the loop arrays less readable than the others: the steps
    stay, the short array is left out, as is one of another type; the result passes doctor."""
    def edit(f: h5py.File) -> None:
        f[LOOP_CPU_PATH].resize(25, axis=0)
        del f[LOOP_BUSY_PATH]
        f.create_dataset(LOOP_BUSY_PATH, data=np.array([b"x"] * 40))

    interrupted_episode(tmp_path / "ds", loop=True, edit=edit)
    actions = repair_dataset(tmp_path / "ds")
    assert any("salvaged 40 steps" in a for a in actions), actions
    with Dataset.open(tmp_path / "ds").episode(1) as ep:
        assert len(ep) == 40 and ep.loop_cpu() is None and ep.loop_busy() is None
    assert check_dataset(tmp_path / "ds").ok


# -- the classification itself -----------------------------------------------------------------------


def test_missed_ticks_count_from_the_deadline_they_would_have_had():
    """The recorder moves its deadline past skipped slots, so a tick after a missed one can have
    small lateness: with the timestamps it is still classified (here: own work of 67 ms)."""
    lateness, cpu, busy = np.zeros(N), np.full(N, 0.003), np.full(N, 0.004)
    ts = np.arange(N) * PERIOD
    cpu[29], busy[29] = 0.067, 0.068  # tick 30 starts at 29 P + 68 ms: slot 30 missed, 1.3 ms after slot 31
    ts[30:] += PERIOD
    lateness[30] = 0.068 - 2 * PERIOD
    ts[30] += lateness[30]
    assert 0 < lateness[30] < 0.002
    assert classify_late_ticks(lateness, cpu, busy, FPS).late == 0
    causes = classify_late_ticks(lateness, cpu, busy, FPS, timestamp=ts)
    assert (causes.late, causes.counts["own work"]) == (1, 1)
    clause = explain_late_ticks(lateness, cpu, busy, QUIET, FPS, timestamp=ts)
    assert clause.startswith("the loop's own work overran: the tick before each late one took 67 ms of CPU")


def test_mixed_causes_name_the_most_common_with_its_share():
    p = pattern("work")
    p["loop_cpu"][19], p["loop_busy"][19] = 0.003, 0.042  # one of the five waited instead
    p["loop_cpu"][29], p["loop_busy"][29] = 0.003, 0.042
    clause = explain_late_ticks(p["lateness"], p["loop_cpu"], p["loop_busy"], QUIET, FPS)
    assert clause.startswith("the loop's own work overran: the tick before 3 of 5 late ones took 41 ms of CPU")


def test_contention_thresholds():
    late = pattern("wake")
    args = (late["lateness"], late["loop_cpu"], late["loop_busy"])

    def clause(**ctx):
        return explain_late_ticks(*args, {"cpu_count": 2, **ctx}, FPS)

    assert clause(others_cpu=1.2, process_cpu=0.5).startswith("late ticks coincide with CPU contention")  # 0.3 idle
    assert clause(others_cpu=0.9, process_cpu=0.5).startswith("the OS woke the loop late")  # 0.6 idle
    assert clause(others_cpu=0.9, process_cpu=0.5, load_1m=[3.0, 2.0]).startswith("late ticks coincide")
    assert clause(others_cpu=0.4, process_cpu=1.5).startswith("the recorder itself kept 1.5 of 2 CPUs busy")
    assert clause(load_1m=[3.1, 2.0]) == "late ticks coincide with CPU contention: load 3.1 on 2 CPUs"
    assert clause(load_1m=[2.9, 2.0]) == "the OS woke the loop late (its work ended in time)"


def test_a_loop_that_was_not_preempted_waited_of_its_own_accord():
    """Under contention, a wait counts as contention only if the loop was preempted about as often
    as it waited late (here 5 late ticks); else it blocked itself (GIL, a device, the writer)."""
    p = pattern("wait")
    args = (p["lateness"], p["loop_cpu"], p["loop_busy"])
    waited = CASES["wait-quiet"][2]
    assert explain_late_ticks(*args, {**BUSY, "loop_involuntary_switches": 2}, FPS) == waited
    assert explain_late_ticks(*args, {**BUSY, "loop_involuntary_switches": 3}, FPS) == CASES["wait-busy"][2]
    unknown = {k: v for k, v in BUSY.items() if k != "loop_involuntary_switches"}
    assert explain_late_ticks(*args, unknown, FPS) == CASES["wait-busy"][2]
    # Woken late: a thread waiting for a free CPU is not preempted, so the count says nothing there.
    w = pattern("wake")
    clause = explain_late_ticks(w["lateness"], w["loop_cpu"], w["loop_busy"],
                                {**BUSY, "loop_involuntary_switches": 0}, FPS)
    assert clause == CASES["wait-busy"][2]


def test_nothing_recorded_is_no_clause():
    late = pattern("wake")["lateness"]
    assert explain_late_ticks(late, None, None, None, FPS) is None
    assert explain_late_ticks(None, None, None, None, FPS) is None
    assert explain_late_ticks(late, None, None, {"realtime": "SCHED_FIFO 50"}, FPS) is None
    assert explain_late_ticks(late, None, None, {"realtime": "off (--no-rt)"}, FPS) == \
        "recorded without real-time priority (--no-rt)"


# -- a real recording ---------------------------------------------------------------------------------


def test_recorded_sim_episode_stores_loop_measurements(tmp_path):
    """A short real-time recording of the simulated arm stores one CPU and one wall time per tick.
    Every tick is measured (no NaN) and the wall time covers the CPU time."""
    pytest.importorskip("mujoco")
    from rich.console import Console

    from telecorder.collect.devices.scripted import ScriptedTeleop
    from telecorder.collect.robots.sim import SimRobot
    from telecorder.collect.session import RecordingSession, SessionConfig

    robot = SimRobot(fps=FPS, seed=1)
    cfg = SessionConfig(out=tmp_path / "ds", episodes=1, episode_time_s=1.0, reset_time_s=0, task="pick", fps=FPS)
    summary = RecordingSession(robot, ScriptedTeleop(robot, seed=1), [], cfg, console=Console(quiet=True)).run()
    assert len(summary.saved) == 1
    ds = Dataset.open(tmp_path / "ds")
    with ds.episode(ds.episode_indices[0]) as ep:
        n = len(ep)
        assert n > 10
        for values in (ep.loop_cpu(), ep.loop_busy()):
            assert values is not None and values.shape == (n,) and values.dtype == np.float32
            assert (np.isfinite(values) & (values >= 0)).all(), values
        # CPU time never exceeds wall time (a little slack: the two clocks are read one after the other).
        assert (ep.loop_cpu() <= ep.loop_busy() + 2e-4).all()
    report = check_dataset(tmp_path / "ds", decode_frames="none")
    assert report.ok, report.all_errors
