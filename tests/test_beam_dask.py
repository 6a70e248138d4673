"""Beam's Dask runner: runner names and the option check (every flag Beam's options classes
define, by the name the user types, the named runner's own included), and a real Dask cluster
on loopback (``dask scheduler`` and ``dask worker`` processes from this environment) running
``convert`` and ``doctor`` through the command line, compared byte for byte with the local
runs; a bad episode fails in one line with nothing left behind, and a worker killed mid-run
either costs nothing (its shards are redone) or fails cleanly."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import make_info, write_dataset
from test_cli import run, tool

pytest.importorskip("apache_beam", reason="the beam extra is not installed")
distributed = pytest.importorskip("distributed", reason="dask[distributed] (the beam extra) is not installed")

from telecorder.beam.options import (  # noqa: E402
    DASK_RUNNER,
    BeamError,
    is_local,
    pipeline_args,
    pipeline_options,
    resolve_runner,
)
from telecorder.converters.parts import PARTS_DIR  # noqa: E402
from telecorder.converters.pipeline import partial_path  # noqa: E402

BIN = Path(sys.executable).parent
LENGTHS = [5, 9, 3, 7, 4, 8, 6]
LOCAL = "--direct_num_workers=2 --direct_running_mode=multi_processing"
WAIT_S = 300  # a guard against a hang, not a performance target


# --- runner names and options (no cluster) -------------------------------------------------

@pytest.mark.parametrize(("name", "cls"), [
    ("dask", "DaskRunner"), ("DaskRunner", "DaskRunner"), ("DASK", "DaskRunner"), ("daskrunner", "DaskRunner"),
    ("flink", "FlinkRunner"), ("FlinkRunner", "FlinkRunner"), ("spark", "SparkRunner"),
    ("direct", "DirectRunner"), ("DirectRunner", "DirectRunner"), ("prism", "PrismRunner"),
])
def test_runner_names_resolve_to_beams_class_paths(name: str, cls: str) -> None:
    path = resolve_runner(name)
    assert path.rsplit(".", 1)[-1] == cls and path.startswith("apache_beam.runners.")
    assert f"--runner={path}" in pipeline_args(f"--runner={name}")
    assert f"--runner={path}" in pipeline_args(["--runner", name])


def test_dask_options_are_accepted_by_flag_name_and_reach_the_runner() -> None:
    options = pipeline_options("--runner=dask --dask_client_address=tcp://10.0.0.5:8786 --dask_connection_timeout=7 "
                               "--dask_client_name=tc")
    values = options.get_all_options()
    assert values["runner"] == DASK_RUNNER
    # Stored under Beam's destinations (address, timeout, name), which are not the flags' names.
    assert (values["address"], values["timeout"], values["name"]) == ("tcp://10.0.0.5:8786", 7, "tc")
    assert values["partition_size"] == 1  # one shard (or episode) per Dask task unless told otherwise
    assert pipeline_options("--runner=dask --dask_npartitions=3").get_all_options()["partition_size"] is None
    assert not is_local(pipeline_args("--runner=dask --dask_client_address=tcp://h:8786"))
    assert is_local(pipeline_args("--runner=dask"))  # no cluster named: Beam starts a local one


@pytest.mark.parametrize("flags", [
    "--runner=flink --flink_master=localhost:8081 --parallelism=4 --flink_submit_uber_jar",
    "--runner=SparkRunner --spark_master_url=spark://h:7077 --spark_submit_uber_jar",
    "--runner=direct --experiments=a --experiments=b --no_pipeline_type_check --temp_location=/tmp",
])
def test_flink_spark_and_flags_whose_destination_differs_are_accepted(flags: str) -> None:
    pipeline_options(flags)


@pytest.mark.parametrize(("flags", "named"), [
    ("--runner=dask --dask_client_adress=tcp://h:8786", "--dask_client_adress=tcp://h:8786"),
    ("--runner=flink --flink_mastr=h:8081", "--flink_mastr=h:8081"),
    ("--address=tcp://h:8786", "--address=tcp://h:8786"),  # a destination is not a flag
    ("--runner=dask --help", "--help"),
])
def test_an_unknown_flag_is_refused_in_one_line_naming_it(flags: str, named: str) -> None:
    with pytest.raises(BeamError) as e:
        pipeline_options(flags)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_runner_is_refused_in_one_line() -> None:
    with pytest.raises(BeamError, match=r"unknown Beam runner 'daks'.*dask"):
        pipeline_options("--runner=daks")
    with pytest.raises(ImportError, match=r"runner NoRunner cannot be loaded"):
        pipeline_options("--runner=no_such_module.NoRunner")


def test_an_unreachable_scheduler_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_dataset(src, make_info(), [3, 4])
    with socket.socket() as s:  # a port that nothing listens on while the test runs
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        options = f"--runner=dask --dask_client_address=tcp://127.0.0.1:{port} --dask_connection_timeout=2"
        procs = [run(tool("telecorder"), "convert", str(src), str(tmp_path / "out"), "--to", "native", "--runner",
                     "beam", "--beam-options", options),
                 run(tool("telecorder"), "doctor", str(src), "--runner", "beam", "--beam-options",
                     f"{options} --temp_location={tmp_path}")]
    for proc in procs:
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert re.match(rf"error: .*connect to tcp://127\.0\.0\.1:{port}", " ".join(proc.stderr.split()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_without_dask_the_error_names_the_beam_extra() -> None:
    code = ("import sys; sys.modules['dask'] = None; sys.modules['dask.distributed'] = None\n"
            "from telecorder.beam.options import pipeline_options\n"
            "try:\n    pipeline_options('--runner=DaskRunner')\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines() == [
        "dask[distributed] is not installed; install it with: pip install 'telecorder[beam]'"]


# --- a real cluster on loopback ---------------------------------------------------------------

def _wait_for(done: Callable[[], bool], what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args} exited {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {WAIT_S} s")
        time.sleep(0.02)


class Cluster:
    """``dask scheduler`` and ``dask worker`` processes, each in a process group of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.root / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([str(BIN / "dask"), *args], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_scheduler(self) -> None:
        info = self.root / "scheduler.json"
        # Port 0: the scheduler takes a free port and writes its address into the file.
        proc = self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                           "--scheduler-file", str(info))

        def ready() -> bool:
            try:
                self.address = json.loads(info.read_text())["address"]
            except (OSError, ValueError, KeyError):
                return False
            return True

        _wait_for(ready, "scheduler address", [proc])

    def start_workers(self, name: str, nworkers: int, *extra: str) -> subprocess.Popen:
        return self._start(name, "worker", self.address, "--nworkers", str(nworkers), "--nthreads", "1",
                           "--no-dashboard", "--local-directory", str(self.root / name), *extra)

    def wait_for_workers(self, count: int) -> None:
        with distributed.Client(self.address, timeout=60) as client:
            client.wait_for_workers(count, timeout=WAIT_S)

    def kill(self, proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("dask_cluster"))
    try:
        c.start_scheduler()
        c.start_workers("workers", 2)
        c.wait_for_workers(2)
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dask_data") / "src"
    write_dataset(root, make_info(cameras=("front", "wrist")), LENGTHS)
    return root


def dask_options(c: Cluster, *more: str) -> str:
    return " ".join(["--runner=dask", f"--dask_client_address={c.address}", *more])


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def convert_cli(src: Path, dst: Path, to: str, beam_options: str, *more: str) -> subprocess.CompletedProcess:
    return run(tool("telecorder"), "convert", str(src), str(dst), "--to", to, "--shard-episodes", "2",
               "--runner", "beam", "--beam-options", beam_options, *more, check=True, timeout=600)


@pytest.mark.slow
def test_convert_and_doctor_on_a_dask_cluster_equal_the_local_runs(cluster: Cluster, source: Path,
                                                                   tmp_path: Path) -> None:
    before = snapshot(source)
    convert_cli(source, tmp_path / "local" / "out", "native", LOCAL)
    proc = convert_cli(source, tmp_path / "dask" / "out", "native", dask_options(cluster))
    assert f"wrote {len(LENGTHS)} episode(s)" in proc.stdout
    local, on_dask = tree_bytes(tmp_path / "local" / "out"), tree_bytes(tmp_path / "dask" / "out")
    assert sorted(on_dask) == sorted(local) and any(name.endswith(".h5") for name in on_dask)
    assert on_dask == local  # statistics included: merged in shard order whatever ran the shards
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == ["out"]

    # doctor on the source and on a copy of the output with a truncated episode.
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "dask" / "out", broken)
    episode = sorted((broken / "episodes").glob("*.h5"))[2]
    episode.write_bytes(episode.read_bytes()[: episode.stat().st_size // 3])
    temp = tmp_path / "beam_temp"  # where the workers leave the report: shared, as on a cluster
    temp.mkdir()
    for dataset, ok in ((source, True), (broken, False)):
        here = run(tool("telecorder"), "doctor", str(dataset), "--json", timeout=600)
        there = run(tool("telecorder"), "doctor", str(dataset), "--runner", "beam", "--beam-options",
                    dask_options(cluster, f"--temp_location={temp}"), "--json", timeout=600)
        assert there.returncode == here.returncode and (here.returncode == 0) is ok, there.stderr
        assert json.loads(there.stdout) == json.loads(here.stdout)
        assert json.loads(there.stdout)["ok"] is ok
    assert list(temp.iterdir()) == []
    assert snapshot(source) == before


@pytest.mark.slow
def test_doctor_on_a_cluster_needs_a_temp_location(cluster: Cluster, source: Path) -> None:
    proc = run(tool("telecorder"), "doctor", str(source), "--runner", "beam", "--beam-options", dask_options(cluster))
    assert proc.returncode == 2 and "--temp_location" in proc.stderr and "Traceback" not in proc.stderr


def tfrecord_examples(path: Path) -> list[object]:
    import tensorflow as tf

    return [tf.train.Example.FromString(r) for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]


@pytest.mark.slow
@pytest.mark.tf
def test_rlds_on_a_dask_cluster_equals_the_local_run(cluster: Cluster, source: Path, tmp_path: Path) -> None:
    # The same final folder name: RLDS writes it into its file names and metadata.
    convert_cli(source, tmp_path / "local" / "arm_demo", "rlds", LOCAL, "--val-fraction", "0.3")
    convert_cli(source, tmp_path / "dask" / "arm_demo", "rlds", dask_options(cluster), "--val-fraction", "0.3")
    local, on_dask = tree_bytes(tmp_path / "local" / "arm_demo"), tree_bytes(tmp_path / "dask" / "arm_demo")
    assert sorted(on_dask) == sorted(local)
    records = [name for name in on_dask if ".tfrecord-" in name]
    assert any("-val." in name for name in records) and any("-train." in name for name in records)
    for name in on_dask:
        if name in records:
            # Record by record, every feature's bytes: tfds serializes a record's feature map in
            # an order that varies from process to process (two local runs differ the same way).
            a = tfrecord_examples(tmp_path / "local" / "arm_demo" / name)
            assert a and a == tfrecord_examples(tmp_path / "dask" / "arm_demo" / name), name
        else:
            assert on_dask[name] == local[name], name


@pytest.mark.slow
def test_a_bad_episode_fails_in_one_line_and_leaves_nothing(cluster: Cluster, tmp_path: Path) -> None:
    # When the bad shard fails, the other worker is likely writing one: it is cancelled and
    # waited for before the work folder goes (a writer still running would make it again).
    bad = tmp_path / "src"
    write_dataset(bad, make_info(cameras=("front", "wrist")), [60, 5] + [5] * 10)
    (bad / "episodes/episode_000001.h5").write_bytes(b"not an HDF5 file, cut short by a full disk" * 10)
    out = tmp_path / "out"
    out.mkdir()
    proc = run(tool("telecorder"), "convert", str(bad), str(out / "converted"), "--to", "native",
               "--shard-episodes", "1", "--runner", "beam", "--beam-options", dask_options(cluster), timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.match(r"error: episode 1: .*episode_000001\.h5", " ".join(proc.stderr.split()))
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_nothing_or_fails_cleanly(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_dataset(src, make_info(cameras=("front", "wrist")), [30] * 16)
    expected = tmp_path / "local" / "out"
    run(tool("telecorder"), "convert", str(src), str(expected), "--to", "native", "--shard-episodes", "1",
        "--workers", "2", check=True, timeout=600)
    c = Cluster(tmp_path / "cluster")
    try:
        c.start_scheduler()
        # The first worker runs alone: when its first part lands, the conversion cannot have
        # ended, and after the kill it can only go on once the second worker joins.
        first = c.start_workers("first", 1, "--no-nanny")
        c.wait_for_workers(1)
        dst = tmp_path / "dask" / "out"
        proc = subprocess.Popen(
            [tool("telecorder"), "convert", str(src), str(dst), "--to", "native", "--shard-episodes", "1",
             "--runner", "beam", "--beam-options", dask_options(c)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "120"})
        try:
            parts = partial_path(dst)

            def landed() -> bool:
                return any(re.fullmatch(r"part-\d+", p.name) for p in parts.glob(f"*/{PARTS_DIR}/part-*"))

            _wait_for(landed, "first part", [proc])
            c.kill(first)
            assert proc.poll() is None
            c.start_workers("second", 1)
            out, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        c.close()
    if proc.returncode == 0:
        assert "wrote 16 episode(s)" in out
        assert tree_bytes(dst) == tree_bytes(expected)
        assert sorted(p.name for p in dst.parent.iterdir()) == ["out"]
    else:
        assert proc.returncode == 2 and err.startswith("error:") and "Traceback" not in err, err
        assert list(dst.parent.iterdir()) == []
