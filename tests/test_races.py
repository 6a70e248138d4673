"""Two commands at once on one destination: nothing published replaces what it was not told to.

Each race is driven deterministically, without sleeps: the conversion runs in this process and
its ``on_episode`` callback does the concurrent thing (records into the destination, publishes a
merge there through the CLI, starts a second conversion through the CLI) at a chosen episode.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import make_info, write_dataset
from test_cli import run, tool

from telecorder.converters import ConversionError
from telecorder.converters.pipeline import ConvertOptions, convert, partial_path
from telecorder.datasets import Dataset

EPISODES = 8
PAUSE_ENV = "TELECORDER_TEST_CONVERT_PAUSE"  # converters.pipeline's test hook: "N:FILE" waits after N episodes


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("races") / "big"
    write_dataset(root, make_info(), [4] * EPISODES, task="source")
    return root


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("races_other") / "other"
    write_dataset(root, make_info(), [6] * 3, task="another source", seed=50)
    return root


def _tasks(root: Path) -> list[str]:
    return [r["task"] for r in Dataset.open(root).records]


def _at(done_at: int, action):
    """An ``on_episode`` callback that runs ``action`` once, when ``done_at`` episodes are done."""
    fired: list[bool] = []

    def on_episode(done: int, total: int, frames: int) -> None:
        if done >= done_at and not fired:
            fired.append(True)
            action()

    return on_episode


def _kept_from(message: str) -> Path:
    found = re.search(r"kept at (\S+?)(?:[;,]|$| )", message)
    assert found, message
    return Path(found.group(1))


WORKERS = [pytest.param(1, id="one-process"), pytest.param(2, id="sharded")]


# -- 1. a dataset that appears at the destination while convert runs ----------------------------


@pytest.mark.parametrize("workers", WORKERS)
def test_a_recording_made_at_the_destination_meanwhile_is_not_replaced(big, tmp_path, workers):
    dst = tmp_path / "C"
    recorded = _at(2, lambda: write_dataset(dst, make_info(), [5, 7], task="recorded meanwhile"))
    with pytest.raises(ConversionError, match="appeared while") as caught:
        convert(big, dst, ConvertOptions(to="native", workers=workers), on_episode=recorded)
    assert _tasks(dst) == ["recorded meanwhile"] * 2, "the recording is what the destination holds"
    kept = _kept_from(str(caught.value))
    assert kept.parent == tmp_path and not kept.name.startswith(".")
    assert _tasks(kept) == ["source"] * EPISODES, "the conversion's output is kept, complete"


def test_a_merge_published_at_the_destination_meanwhile_is_not_replaced(big, other, tmp_path):
    dst = tmp_path / "C"
    merge = _at(3, lambda: run(tool("telecorder"), "edit", "merge", str(other), str(other), "--out", str(dst),
                               check=True))
    with pytest.raises(ConversionError, match="appeared while"):
        convert(big, dst, ConvertOptions(to="native"), on_episode=merge)
    assert _tasks(dst) == ["another source"] * 6


def test_overwrite_replaces_only_what_was_there_when_it_started(big, tmp_path):
    dst = tmp_path / "C"
    write_dataset(dst, make_info(), [3, 3], task="old")
    appended = _at(2, lambda: write_dataset(dst, make_info(), [5, 7], task="recorded meanwhile", resume=True))
    with pytest.raises(ConversionError, match="changed while") as caught:
        convert(big, dst, ConvertOptions(to="native", overwrite=True), on_episode=appended)
    assert _tasks(dst) == ["old", "old", "recorded meanwhile", "recorded meanwhile"]
    assert _tasks(_kept_from(str(caught.value))) == ["source"] * EPISODES


@pytest.mark.parametrize("workers", WORKERS)
def test_overwrite_does_not_replace_another_folder_put_under_the_name(big, other, tmp_path, workers):
    dst = tmp_path / "C"
    write_dataset(dst, make_info(), [3], task="old")

    def swapped() -> None:
        dst.rename(tmp_path / "old_moved_away")
        run(tool("telecorder"), "edit", "merge", str(other), str(other), "--out", str(dst), check=True)

    with pytest.raises(ConversionError, match="changed while"):
        convert(big, dst, ConvertOptions(to="native", overwrite=True, workers=workers), on_episode=_at(2, swapped))
    assert _tasks(dst) == ["another source"] * 6
    assert _tasks(tmp_path / "old_moved_away") == ["old"]


def test_overwrite_of_an_untouched_destination_still_replaces_it(big, tmp_path):
    dst = tmp_path / "C"
    write_dataset(dst, make_info(), [3], task="old")
    report = convert(big, dst, ConvertOptions(to="native", overwrite=True))
    assert report.episodes == EPISODES and _tasks(dst) == ["source"] * EPISODES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["C"], "no work folder, backup or kept copy left"


def test_overwrite_refuses_a_destination_being_recorded_at_the_end(big, tmp_path):
    from telecorder.datasets.dataset import DatasetWriter

    dst = tmp_path / "C"
    write_dataset(dst, make_info(), [3], task="old")
    writers: list[DatasetWriter] = []
    try:
        with pytest.raises(ConversionError, match=r"being modified by process \d+ \(record into it") as caught:
            convert(big, dst, ConvertOptions(to="native", overwrite=True),
                    on_episode=_at(2, lambda: writers.append(DatasetWriter(dst, make_info(), resume=True))))
    finally:
        for w in writers:
            w.close()
    assert _tasks(dst) == ["old"]
    assert _tasks(_kept_from(str(caught.value))) == ["source"] * EPISODES


def test_refused_publish_through_the_cli_is_one_line(big, tmp_path):
    dst = tmp_path / "C"
    # The destination appears after the conversion's start checks: a CLI run paused by its test hook.
    go = tmp_path / "go"
    env = {PAUSE_ENV: f"2:{go}"}
    proc = subprocess.Popen([tool("telecorder"), "convert", str(big), str(dst), "--to", "native"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200", **env})
    try:
        for line in proc.stderr:  # anything else on stderr (a warning) comes first; EOF if it exited
            if line.strip() == "PAUSED 2":
                break
        else:
            raise AssertionError(f"convert exited ({proc.wait()}) without pausing")
        write_dataset(dst, make_info(), [5, 7], task="recorded meanwhile")
        go.touch()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out + err
    assert "Traceback" not in err and "appeared while" in err and "kept at" in err
    assert _tasks(dst) == ["recorded meanwhile"] * 2


# -- 2. two conversions into one destination ----------------------------------------------------


@pytest.mark.parametrize("workers", WORKERS)
def test_a_second_conversion_into_the_same_destination_refuses(big, tmp_path, workers):
    dst = tmp_path / "X"
    write_dataset(dst, make_info(), [3], task="old")
    second: dict[str, object] = {}

    def start_second() -> None:
        proc = run(tool("telecorder"), "convert", str(big), str(dst), "--to", "native", "--overwrite")
        second.update(rc=proc.returncode, err=proc.stderr, out=proc.stdout)

    report = convert(big, dst, ConvertOptions(to="native", overwrite=True, workers=workers),
                     on_episode=_at(5, start_second))
    assert second["rc"] == 2, second
    err = " ".join(str(second["err"]).split())  # the CLI wraps long lines
    assert "Traceback" not in err and f"process {os.getpid()}" in err and "convert" in err, err
    assert report.episodes == EPISODES
    assert _tasks(dst) == ["source"] * EPISODES, "the first conversion's output is whole"


def test_a_resume_while_the_first_run_is_still_going_refuses(big, tmp_path):
    dst = tmp_path / "X"
    second: dict[str, object] = {}

    def resume() -> None:
        proc = run(tool("telecorder"), "convert", str(big), str(dst), "--to", "native", "--resume")
        second.update(rc=proc.returncode, err=proc.stderr)

    report = convert(big, dst, ConvertOptions(to="native"), on_episode=_at(3, resume))
    assert second["rc"] == 2 and "Traceback" not in str(second["err"]), second
    assert report.episodes == EPISODES and len(Dataset.open(dst)) == EPISODES


def test_a_dead_runs_work_folder_is_taken_over(big, tmp_path):
    dst = tmp_path / "X"

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(big, dst, ConvertOptions(to="native"), on_episode=_at(2, interrupt))
    assert partial_path(dst).exists() and not dst.exists()
    report = convert(big, dst, ConvertOptions(to="native"))  # starts over: nobody holds the folder
    assert report.episodes == EPISODES and not partial_path(dst).exists()


def test_a_refused_start_leaves_no_work_folder(big, tmp_path):
    dst = tmp_path / "X"
    dst.mkdir()
    with pytest.raises(ConversionError, match="pass --overwrite"):
        convert(big, dst, ConvertOptions(to="native"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]


# -- 3. --resume from another source --------------------------------------------------------------


def _interrupted(src: Path, dst: Path, after: int = 2) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(src, dst, ConvertOptions(to="native"), on_episode=_at(after, interrupt))


def test_resume_from_another_source_is_refused(big, other, tmp_path):
    dst = tmp_path / "out"
    _interrupted(big, dst)
    with pytest.raises(ConversionError, match=r"--resume.*another source") as caught:
        convert(other, dst, ConvertOptions(to="native", resume=True))
    assert str(big.resolve()) in str(caught.value)
    assert not dst.exists()
    proc = run(tool("telecorder"), "convert", str(other), str(dst), "--to", "native", "--resume")
    err = " ".join(proc.stderr.split())  # the CLI wraps long lines
    assert proc.returncode == 2 and "Traceback" not in err and "another source" in err, err
    # The right source still resumes.
    report = convert(big, dst, ConvertOptions(to="native", resume=True))
    assert report.resumed >= 2 and report.resumed + report.episodes == EPISODES
    assert [r["source_episode_index"] for r in Dataset.open(dst).records] == list(range(EPISODES))


def test_resume_from_a_source_that_changed_is_refused(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "out"
    write_dataset(src, make_info(), [4] * 4, task="first")
    _interrupted(src, dst)
    write_dataset(src, make_info(), [4], task="appended", resume=True)
    with pytest.raises(ConversionError, match="changed since"):
        convert(src, dst, ConvertOptions(to="native", resume=True))


# -- the same class in the sharded writers: two attempts of one shard -------------------------------


def test_two_attempts_of_one_shard_do_not_interleave(big, tmp_path, monkeypatch):
    """A Beam runner may run a shard again while a first attempt still writes it (a worker it
    thought lost, speculative execution): the attempts must not write into one folder."""
    from telecorder.converters import sharded, transform
    from telecorder.converters.parts import PART_STATS, part_path

    opts = ConvertOptions(to="native", workers=1)
    reader = transform.open_source(big, opts)
    info = transform.transform_info(reader.info, opts).to_dict()
    work = tmp_path / "work"
    work.mkdir()
    original = transform.transform_episode
    state = {"calls": 0, "second": None}

    def interleaved(*args, **kwargs):
        state["calls"] += 1
        if state["calls"] == 2:  # the first attempt has written one episode: a second attempt runs whole
            state["second"] = sharded.write_part(str(big), str(work), str(tmp_path / "dst"), opts, info, 0,
                                                 [0, 1, 2])
        return original(*args, **kwargs)

    monkeypatch.setattr(sharded, "transform_episode", interleaved)  # what a shard worker calls
    first = json.loads(sharded.write_part(str(big), str(work), str(tmp_path / "dst"), opts, info, 0, [0, 1, 2]))
    second = json.loads(state["second"])
    assert first["episodes"] == second["episodes"] == [0, 1, 2]
    part = part_path(work, 0)
    assert first["path"] == second["path"] == str(part)
    assert len(Dataset.open(part)) == 3 and (part / PART_STATS).is_file()
    assert [p.name for p in part.parent.iterdir()] == [part.name], "no attempt's temporary folder is left"


# -- the same class in edit: a staging folder belongs to the edit that made it ---------------------


def test_an_edit_racing_another_into_the_same_output_leaves_the_others_staging(other, tmp_path, monkeypatch):
    """Another edit into the same --out starts right after this one cleared leftovers: this one
    must refuse with one line, and must not delete the other's staging folder."""
    from telecorder.datasets import edit
    from telecorder.datasets.edit_build import PAUSE_ENV
    from telecorder.datasets.edit_publish import EditError, staging_path
    from telecorder.datasets.lock import lock_holder

    out = tmp_path / "M"
    others: list[subprocess.Popen] = []
    original = edit.clear_leftovers

    def then_another_starts(dst: Path) -> None:
        original(dst)
        if Path(dst) == out and not others:
            proc = subprocess.Popen([tool("telecorder"), "edit", "merge", str(other), str(other), "--out", str(out)],
                                    env={**os.environ, PAUSE_ENV: "publish"}, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            others.append(proc)
            for line in proc.stderr:  # the other edit has staged its output and holds it
                if line.strip() == "PAUSED publish":
                    break
            else:
                raise AssertionError(f"the other edit exited ({proc.wait()}) without pausing")

    monkeypatch.setattr(edit, "clear_leftovers", then_another_starts)
    try:
        with pytest.raises(EditError, match="another edit"):
            edit.merge([other, other], out)
        assert staging_path(out).is_dir() and lock_holder(staging_path(out)), "the other edit's folder is intact"
        assert not out.exists()
    finally:
        for proc in others:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)


def test_a_recording_cannot_start_while_an_in_place_edit_runs(other, tmp_path):
    from telecorder.datasets.dataset import DatasetWriter
    from telecorder.datasets.edit_build import PAUSE_ENV as EDIT_PAUSE
    from telecorder.datasets.lock import DatasetLockedError

    root = tmp_path / "ds"
    write_dataset(root, make_info(), [4, 5, 6], task="mine")
    proc = subprocess.Popen([tool("telecorder"), "edit", "delete-episodes", str(root), "1", "--in-place"],
                            env={**os.environ, EDIT_PAUSE: "publish"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.strip() == "PAUSED publish":
                break
        else:
            raise AssertionError(f"the edit exited ({proc.wait()}) without pausing")
        with pytest.raises(DatasetLockedError, match=rf"process {proc.pid} \(delete episodes \(in place"):
            DatasetWriter(root, make_info(), resume=True)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert len(Dataset.open(root)) == 3, "killed before its exchange: the dataset as it was"


def test_a_recording_starting_as_a_dataset_is_published_there_does_not_append_to_it(big, tmp_path, monkeypatch):
    """The window between a new recording's "no dataset here" check and its lock: a convert that
    publishes into it made a dataset the recording must not take as its own."""
    from conftest import make_info as info_for

    from telecorder.datasets import dataset as dataset_module
    from telecorder.errors import DatasetError

    dst = tmp_path / "C"
    real_acquire = dataset_module.DatasetLock.acquire
    published: list[bool] = []

    def acquire_after_a_publish(self):
        if not published:
            published.append(True)
            for sub in ("meta", "episodes"):
                if (dst / sub).is_dir() and not any((dst / sub).iterdir()):
                    (dst / sub).rmdir()
            dst.rmdir()
            convert(big, dst, ConvertOptions(to="native"))
        return real_acquire(self)

    monkeypatch.setattr(dataset_module.DatasetLock, "acquire", acquire_after_a_publish)
    with pytest.raises(DatasetError, match="became a dataset while this recording was starting"):
        dataset_module.DatasetWriter(dst, info_for())
    assert _tasks(dst) == ["source"] * EPISODES, "the published conversion is untouched"
