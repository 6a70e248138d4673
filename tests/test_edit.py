"""``telecorder edit``: every operation, its errors, and what a kill -9 in the middle leaves."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import kill, make_info, start_recorder, write_dataset

from telecorder.cli import main
from telecorder.datasets.dataset import Dataset, DatasetWriter, episode_stats, is_dataset, mark_bad
from telecorder.datasets.doctor import check_dataset
from telecorder.datasets.edit import (
    EditError,
    delete_episodes,
    merge,
    read_task_file,
    remove_features,
    set_task,
    split,
)
from telecorder.datasets.edit_build import PAUSE_ENV
from telecorder.datasets.edit_publish import staging_path
from telecorder.datasets.episode_file import get_attrs
from telecorder.datasets.features import DatasetInfo, FeatureSpec
from telecorder.datasets.lock import DatasetLockedError
from telecorder.datasets.splits import episode_split
from telecorder.datasets.stats import DatasetStats

SRC = str(Path(__file__).resolve().parents[1] / "src")


def tree_digest(root: Path) -> dict[str, str]:
    """Every file of a dataset by content; the lock file is left out (holding a lock writes the
    holder's description into it, by design)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def assert_sound(root: Path) -> Dataset:
    """doctor passes, the index numbers episodes 0..N-1, and stats.json equals a recomputation
    from the episode files."""
    report = check_dataset(root, decode_frames="all")
    assert report.ok, report.all_errors
    ds = Dataset.open(root)
    assert ds.episode_indices == list(range(len(ds)))
    assert ds.info.total_episodes == len(ds) and ds.info.total_frames == ds.num_frames
    fresh = DatasetStats({}, episodes=())
    for i in ds.episode_indices:
        with ds.episode(i) as ep:
            assert ep.attrs["episode_index"] == i
            fresh = fresh.merge(episode_stats({s.name: ep.numeric(s.name) for s in ds.info.numeric_features}, i))
    assert ds.stats().to_json_dict() == fresh.to_json_dict()
    return ds


def episode_content(path: Path) -> dict[str, object]:
    """Every dataset of an episode file (frames as their encoded bytes)."""
    out: dict[str, object] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = [bytes(b) for b in obj[:]] if obj.dtype == object else obj[:].tobytes()
        f.visititems(visit)
    return out


@pytest.fixture
def two(tmp_path):
    info = make_info(cameras=("front", "wrist"))
    write_dataset(tmp_path / "a", info, [5, 6, 7])
    write_dataset(tmp_path / "b", info, [4, 3], seed=10, task="open the drawer")
    mark_bad(tmp_path / "a", 1, reason="gripper slipped")
    return tmp_path / "a", tmp_path / "b"


# -- merge ---------------------------------------------------------------------------------


def test_merge_renumbers_copies_the_data_and_records_the_source(two, tmp_path):
    a, b = two
    before = {p: tree_digest(p) for p in two}
    report = merge([a, b], tmp_path / "m")
    assert report.episodes == {"out": 5} and report.frames == {"out": 25}
    ds = assert_sound(tmp_path / "m")
    origin = [(a, 0), (a, 1), (a, 2), (b, 0), (b, 1)]
    for new, (src, old) in enumerate(origin):
        rec = ds.records[new]
        assert (rec["source_dataset"], rec["source_episode_index"]) == (str(src.resolve()), old)
        assert episode_content(ds.episode_path(new)) == episode_content(src / f"episodes/episode_{old:06d}.h5")
        with ds.episode(new) as ep:
            attrs = ep.attrs
        assert attrs["source_episode_index"] == old and attrs["source_dataset"] == str(src.resolve())
        assert attrs["edit_history"][-1] == {"operation": "merge", "dataset": str(src.resolve()), "episode_index": old}
        assert attrs["task"] == ("stack the blocks" if src == a else "open the drawer")
    # The bad mark and its reason travel with the episode.
    assert ds.records[1]["bad"] is True and ds.records[1]["bad_reason"] == "gripper slipped"
    assert [r.get("success") for r in ds.records] == [True, False, True, True, False]
    assert {p: tree_digest(p) for p in two} == before
    assert not staging_path(tmp_path / "m").exists()


def test_merge_names_the_first_difference(two, tmp_path):
    a, _ = two
    wide = tmp_path / "wide"
    write_dataset(wide, make_info(cameras=("front", "wrist"), dim=6), [3])
    with pytest.raises(EditError, match=r"cannot merge .*wide with .*a: feature 'action': float32\[4\].* vs "
                                        r"float32\[6\].* \(and 1 more difference"):
        merge([a, wide], tmp_path / "m")
    one_cam = tmp_path / "one_cam"
    write_dataset(one_cam, make_info(cameras=("front",)), [3])
    with pytest.raises(EditError, match=r"missing feature 'observation.images.wrist'"):
        merge([a, one_cam], tmp_path / "m")
    with pytest.raises(EditError, match="exists; choose a new folder"):
        merge([a, one_cam], wide)
    assert not (tmp_path / "m").exists() and not staging_path(tmp_path / "m").exists()


# -- delete-episodes -----------------------------------------------------------------------


def test_delete_episodes_to_a_new_dataset_and_in_place(two, tmp_path):
    a, b = two
    merge([a, b], tmp_path / "m")
    m = tmp_path / "m"
    original = {i: episode_content(m / f"episodes/episode_{i:06d}.h5") for i in range(5)}

    delete_episodes(m, [1, 3], out=tmp_path / "d")
    d = assert_sound(tmp_path / "d")
    assert [r["source_episode_index"] for r in d.records] == [0, 2, 4]
    assert all(r["source_dataset"] == str(m.resolve()) for r in d.records)

    kept_file = m / "episodes/episode_000000.h5"
    delete_episodes(m, [1, 3], in_place=True)
    ds = assert_sound(m)
    assert len(ds) == 3
    for new, old in enumerate([0, 2, 4]):
        assert episode_content(ds.episode_path(new)) == original[old]
    # Episode 0 kept its number: untouched, and no longer shares its inode with anything.
    with h5py.File(kept_file, "r") as f:
        assert [h["operation"] for h in get_attrs(f)["edit_history"]] == ["merge"]
    assert os.stat(kept_file).st_nlink == 1
    # Renumbered episodes say where they were, and keep the chain back to the merge.
    with ds.episode(1) as ep:
        hist = ep.attrs["edit_history"]
    assert [h["operation"] for h in hist] == ["merge", "delete-episodes"]
    assert hist[-1]["episode_index"] == 2 and ds.records[1]["source_episode_index"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "d", "m"]  # nothing left beside it


def test_delete_episodes_errors_change_nothing(two, tmp_path):
    a, _ = two
    before = tree_digest(a)
    with pytest.raises(EditError, match=r"no episode\(s\) 7-9 to delete \(it has 0-2\); nothing was changed"):
        delete_episodes(a, [1, 7, 8, 9], in_place=True)
    with pytest.raises(EditError, match="would leave no episode"):
        delete_episodes(a, [0, 1, 2], in_place=True)
    with pytest.raises(EditError, match="--out FOLDER"):
        delete_episodes(a, [1])
    assert tree_digest(a) == before


# -- split ---------------------------------------------------------------------------------


def test_split_keeps_episodes_whole_and_is_deterministic(tmp_path):
    info = make_info(cameras=("front",))
    src = tmp_path / "ds"
    write_dataset(src, info, [3, 4, 5, 3, 4, 5, 3, 4, 5, 6])
    report = split(src, val_fraction=0.2, out_train=tmp_path / "t", out_val=tmp_path / "v")
    train, val = episode_split(list(range(10)), val_fraction=0.2, seed=0)
    t, v = assert_sound(tmp_path / "t"), assert_sound(tmp_path / "v")
    assert [r["source_episode_index"] for r in t.records] == train
    assert [r["source_episode_index"] for r in v.records] == val
    assert len(val) == 2 and report.episodes == {"train": 8, "val": 2}
    assert t.num_frames + v.num_frames == Dataset.open(src).num_frames
    assert v.info.extra["edit_history"][-1]["split"] == "val"
    split(src, val_fraction=0.2, out_train=tmp_path / "t2", out_val=tmp_path / "v2")
    assert [r["source_episode_index"] for r in Dataset.open(tmp_path / "v2").records] == val
    with pytest.raises(EditError, match="exists"):  # t holds the training part, not a validation one
        split(src, val_fraction=0.2, out_train=tmp_path / "t3", out_val=tmp_path / "t")
    with pytest.raises(EditError, match="exists"):  # another seed makes another split
        split(src, val_fraction=0.2, out_train=tmp_path / "t3", out_val=tmp_path / "v", seed=1)
    assert not (tmp_path / "t3").exists()


def test_kill_between_the_two_halves_of_a_split(tmp_path):
    src = tmp_path / "ds"
    write_dataset(src, make_info(cameras=("front",)), [3, 4, 5, 3, 4])
    args = ["split", str(src), "--val-fraction", "0.4", "--out-train", str(tmp_path / "t"),
            "--out-val", str(tmp_path / "v")]
    kill(_start_paused(args, "published-1"))
    assert len(assert_sound(tmp_path / "t")) == 3 and not (tmp_path / "v").exists()
    train_bytes = tree_digest(tmp_path / "t")
    assert main(["edit", *args]) == 0  # the same split again: keeps the half that was published
    assert tree_digest(tmp_path / "t") == train_bytes
    assert len(assert_sound(tmp_path / "v")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "t", "v"]


# -- set-task ------------------------------------------------------------------------------


def test_set_task_relabels_attributes_and_index(two):
    a, _ = two
    set_task(a, "pick up the red cube", episodes=[0, 2])
    ds = assert_sound(a)
    tasks = []
    for i in ds.episode_indices:
        with ds.episode(i) as ep:
            tasks.append((ep.attrs["task"], ep.attrs["language_instruction"], ds.records[i]["task"]))
    assert tasks == [("pick up the red cube",) * 3, ("stack the blocks",) * 3, ("pick up the red cube",) * 3]
    assert ds.records[1]["bad"] is True  # everything else in the index stays
    with ds.episode(0) as ep:
        assert "edit_history" not in ep.attrs  # relabelled in place: the episode did not move


def _task_list_dataset(root: Path) -> None:
    """Two episodes recorded from a task list: ids, families and paraphrase numbers as collect stores them."""
    from conftest import synthetic_steps

    from telecorder.datasets.async_writer import AsyncEpisodeWriter

    info = make_info(cameras=())
    info.extra["task_suite"] = "cubes"
    info.extra["tasks"] = {
        "pick_red": {"family": "pick", "paraphrases": ["pick up the red cube", "grab the red block"],
                     "heldout": ["lift the red one"]},
        "bin_blue": {"family": "bin", "paraphrases": ["put the blue cube in the bin"], "heldout": []},
    }
    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw, encode_threads=1)
        try:
            for k, (text, task_id, family) in enumerate([("grab the red block", "pick_red", "pick"),
                                                          ("put the blue cube in the bin", "bin_blue", "bin")]):
                fields = {"task_id": task_id, "task_family": family, "paraphrase_index": 1 - k}
                writer.begin({"task": text, "language_instruction": text, **fields})
                for step in synthetic_steps(4, info, seed=k):
                    writer.add(step)
                writer.end({"success": True}, {"task": text, "success": True, **fields}).result(timeout=30)
        finally:
            writer.close()


def test_set_task_keeps_task_ids_in_step_with_the_text(tmp_path):
    # A relabelled episode of a task-list dataset takes the id of the task whose paraphrase the new
    # text is (any case and spacing), and loses its id when the text is no task's.
    root = tmp_path / "tasks"
    _task_list_dataset(root)
    set_task(root, {0: "put the Blue  cube in the bin.", 1: "wave at the camera"})
    ds = assert_sound(root)
    got = []
    for i in ds.episode_indices:
        with ds.episode(i) as ep:
            got.append(((ep.attrs["task_id"], ep.attrs["task_family"], int(ep.attrs["paraphrase_index"])),
                        (ds.records[i]["task_id"], ds.records[i]["task_family"], ds.records[i]["paraphrase_index"])))
    assert got == [(("bin_blue", "bin", 0),) * 2, (("", "", -1),) * 2]
    set_task(root, "Lift the red one", episodes=[1])  # a held-out paraphrase counts after the recorded ones
    assert Dataset.open(root).records[1]["task_id"] == "pick_red"
    assert Dataset.open(root).records[1]["paraphrase_index"] == 2


def test_repair_rebuilds_the_task_fields_of_an_index_line(tmp_path):
    from telecorder.datasets.doctor import repair_dataset
    from telecorder.datasets.index import INDEX

    root = tmp_path / "tasks"
    _task_list_dataset(root)
    index = root / INDEX
    lines = index.read_text().splitlines()
    index.write_text(lines[0] + "\n")  # the second episode's line lost: repair rebuilds it from the file
    repair_dataset(root)
    rec = Dataset.open(root).records[1]
    assert {k: rec.get(k) for k in ("task_id", "task_family", "paraphrase_index")} == {
        "task_id": "bin_blue", "task_family": "bin", "paraphrase_index": 0}


def test_set_task_from_a_csv_file(two, tmp_path):
    a, _ = two
    csv = tmp_path / "tasks.csv"
    csv.write_text('episode,task\n0-1,"stack the red block, then the blue one"\n\n2,open the drawer\n')
    set_task(a, read_task_file(csv))
    ds = Dataset.open(a)
    assert [r["task"] for r in ds.records] == ["stack the red block, then the blue one"] * 2 + ["open the drawer"]
    with ds.episode(1) as ep:
        assert ep.attrs["language_instruction"] == "stack the red block, then the blue one"


@pytest.mark.parametrize(("text", "message"), [
    ("episode,task\n0,fine\nx,wrong\n", r"tasks.csv:3: 'x' is not an episode number"),
    ("O,pick up\n1,fine\n", r"tasks.csv:1: 'O' is not an episode number"),
    ("0,fine\n1,stack, then push\n", r"tasks.csv:2: expected 2 columns \(episodes,task\), found 3"),
    ("0,fine\n1,\n", r"tasks.csv:2: the task text is empty"),
    ("0-1,fine\n1,again\n", r"tasks.csv:2: episode 1 is given a task on line 1 already"),
    ("0,fine\n\n9,missing\n", r"tasks.csv:3: .* has no episode 9 \(it has 0-2\)"),
])
def test_set_task_csv_errors_name_the_line(two, tmp_path, text, message):
    a, _ = two
    before = tree_digest(a)
    csv = tmp_path / "tasks.csv"
    csv.write_text(text)
    with pytest.raises(EditError, match=message):
        set_task(a, read_task_file(csv))
    assert tree_digest(a) == before


# -- remove-feature ------------------------------------------------------------------------


def test_remove_a_camera_and_a_numeric_feature(two, tmp_path):
    a, _ = two
    remove_features(a, ["observation.images.wrist"], out=tmp_path / "front_only")
    ds = assert_sound(tmp_path / "front_only")
    assert ds.info.cameras == ["front"]
    for i in ds.episode_indices:
        got = episode_content(ds.episode_path(i))
        want = episode_content(a / f"episodes/episode_{i:06d}.h5")
        assert not any("wrist" in k for k in got)
        assert got == {k: v for k, v in want.items() if "wrist" not in k}

    info = make_info(cameras=("front",))
    info.features["observation.environment_state"] = FeatureSpec("observation.environment_state", "float64", (7,))
    env = tmp_path / "env"
    _write_with_env_state(env, info)
    remove_features(env, ["observation.environment_state"], in_place=True)
    ds = assert_sound(env)
    assert "observation.environment_state" not in ds.info.features
    assert "observation.environment_state" not in ds.stats().features
    with h5py.File(ds.episode_path(0), "r") as f:
        assert "observation/environment_state" not in f and "observation/state" in f

    with pytest.raises(EditError, match=r"no feature 'observation.images.top' .* it has observation.state"):
        remove_features(a, ["observation.images.top"], in_place=True)


def _write_with_env_state(root: Path, info: DatasetInfo) -> None:
    from conftest import synthetic_steps

    from telecorder.datasets.async_writer import AsyncEpisodeWriter

    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw)
        try:
            for k in range(2):
                writer.begin({"task": "t"})
                for s in synthetic_steps(5, info, seed=k):
                    s.numeric["observation.environment_state"] = np.arange(7, dtype=np.float64) + k
                    writer.add(s)
                writer.end({}, {"task": "t"}).result(timeout=30)
        finally:
            writer.close()


# -- the lock, the CLI, and kill -9 in the middle ----------------------------------------------


def test_edits_refuse_a_dataset_being_recorded(tmp_path):
    root = tmp_path / "ds"
    proc = start_recorder(root)
    try:
        for attempt in (lambda: delete_episodes(root, [0], in_place=True),
                        lambda: merge([root, root], tmp_path / "m"),
                        lambda: set_task(root, "x")):
            with pytest.raises(DatasetLockedError, match=rf"process {proc.pid} \(record into it"):
                attempt()
    finally:
        kill(proc)
    assert not (tmp_path / "m").exists()


def _start_paused(args: list[str], point: str) -> subprocess.Popen:
    """``telecorder edit ARGS`` in a subprocess that stops at ``point`` (after the line says so)."""
    env = {**os.environ, PAUSE_ENV: point, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-m", "telecorder.cli", "edit", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # anything else on stderr (a warning) comes first; EOF if it exited
        if line.strip() == f"PAUSED {point}":
            return proc
        seen.append(line)
    proc.wait(timeout=30)
    raise AssertionError(f"edit exited ({proc.returncode}) without pausing at {point}: {''.join(seen)}")


def test_kill_in_the_middle_of_a_merge(two, tmp_path):
    a, b = two
    before = {p: tree_digest(p) for p in two}
    out = tmp_path / "m"
    proc = _start_paused(["merge", str(a), str(b), "--out", str(out)], "episode-2")
    try:
        assert staging_path(out).is_dir() and not out.exists()
        with pytest.raises(DatasetLockedError, match="merge"):  # a recording cannot start meanwhile
            DatasetWriter(a, Dataset.open(a).info, resume=True)
    finally:
        kill(proc)
    assert {p: tree_digest(p) for p in two} == before
    assert not out.exists() and not is_dataset(staging_path(out))  # nothing complete-looking
    assert main(["edit", "merge", str(a), str(b), "--out", str(out), "--json"]) == 0
    assert len(assert_sound(out)) == 5
    assert not staging_path(out).exists()


@pytest.mark.parametrize("point", ["episode-1", "publish", "cleanup"])
def test_kill_in_the_middle_of_an_in_place_delete(two, tmp_path, point):
    a, _ = two
    before = tree_digest(a)
    kill(_start_paused(["delete-episodes", str(a), "1", "--in-place"], point))
    if point == "cleanup":  # killed after the exchange: the new dataset is complete
        assert len(assert_sound(a)) == 2
        assert main(["edit", "delete-episodes", str(a), "0", "--in-place"]) == 0
        assert [r["source_episode_index"] for r in assert_sound(a).records] == [1]
    else:  # killed before it: the old dataset, byte for byte
        assert tree_digest(a) == before
        assert len(assert_sound(a)) == 3
        assert main(["edit", "delete-episodes", str(a), "1", "--in-place"]) == 0
        assert [r.get("source_episode_index") for r in assert_sound(a).records] == [None, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_cli_help_and_json(two, tmp_path, capsys):
    a, _ = two
    with pytest.raises(SystemExit):
        main(["edit", "--help"])
    assert "telecorder edit set-task demos/ --from-file tasks.csv" in capsys.readouterr().out
    assert main(["edit", "split", str(a), "--val-fraction", "0.3", "--out-train", str(tmp_path / "t"),
                 "--out-val", str(tmp_path / "v"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["operation"] == "split" and out["episodes"] == {"train": 2, "val": 1}
    assert main(["edit", "set-task", str(a), "--episodes", "0", "x", "--from-file", "t.csv"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["edit", "delete-episodes", str(a), "5", "--in-place"]) == 2
    assert "no episode(s) 5 to delete" in " ".join(capsys.readouterr().err.split())
    # The form the README shows: an option between the dataset and the task text.
    assert main(["edit", "set-task", str(a), "--episodes", "0-1", "pick up the red cube"]) == 0
    assert [r["task"] for r in Dataset.open(a).records] == ["pick up the red cube"] * 2 + ["stack the blocks"]


def test_an_in_place_edit_keeps_what_else_the_folder_holds(two):
    a, _ = two
    (a / "notes.txt").write_text("camera 2 was loose on Tuesday")
    aside = a / "episodes/.unrecoverable"
    aside.mkdir()
    (aside / "episode_000009.h5").write_bytes(b"kept for the user")
    set_task(a, "relabelled", episodes=[2])
    remove_features(a, ["wrist"], in_place=True)
    delete_episodes(a, [0], in_place=True)
    assert (a / "notes.txt").read_text() == "camera 2 was loose on Tuesday"
    assert (aside / "episode_000009.h5").read_bytes() == b"kept for the user"
    assert len(assert_sound(a)) == 2


def test_an_in_place_edit_refuses_an_episode_only_repair_would_index(tmp_path):
    kill(start_recorder(tmp_path / "crashed"))  # leaves an unfinished episode 2
    before = tree_digest(tmp_path / "crashed")
    with pytest.raises(EditError, match=r"episode_000002.partial.h5 is not in the index .* doctor .* --repair"):
        delete_episodes(tmp_path / "crashed", [0], in_place=True)
    assert tree_digest(tmp_path / "crashed") == before
    # A new dataset from it is fine: the source keeps the unfinished episode for repair.
    delete_episodes(tmp_path / "crashed", [0], out=tmp_path / "out")
    assert len(assert_sound(tmp_path / "out")) == 1


def test_without_folder_exchange_a_kill_between_the_renames_is_put_back(two, monkeypatch):
    """File systems without RENAME_EXCHANGE: two renames with a backup; the next edit restores
    the backup if a kill fell between them."""
    from telecorder.datasets import edit_publish

    a, _ = two
    monkeypatch.setattr(edit_publish, "_renameat2", lambda src, dst, flags: False)
    before = tree_digest(a)
    os.replace(a, edit_publish.backup_path(a))  # the state a kill after the first rename leaves
    staging_path(a).mkdir()
    delete_episodes(a, [1], in_place=True)
    assert [r.get("source_episode_index") for r in assert_sound(a).records] == [None, 2]
    assert not edit_publish.backup_path(a).exists() and not staging_path(a).exists()
    assert before["episodes/episode_000000.h5"] == tree_digest(a)["episodes/episode_000000.h5"]
