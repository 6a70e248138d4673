"""Links inside a dataset, read-only sources, repair that converges, and paths that metadata names.

* A command writes nothing through a symbolic link inside a dataset (``meta/.lock``,
  ``meta/``, ``episodes/``, ``episodes/.unrecoverable``, the appended index): it refuses
  with one line, and whatever the link points at is left as it was.
* A command that only reads a dataset writes nothing into it: the source tree is
  byte-identical (and its times unchanged) after ``edit ... --out``, ``convert``,
  ``info`` and ``doctor``, also where its lock file is missing, is a folder, or the whole
  source is a read-only mount. (The tests run as root, where ``chmod`` stops no write:
  so they compare the tree, and mount it read-only where this machine allows.)
* ``doctor --repair`` takes an episode file's number from its name and converges.
* Every place a reader takes a path from metadata refuses ``../x`` and ``/abs``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SHARED, make_info, write_dataset

from telecorder.cli import main
from telecorder.datasets import Dataset
from telecorder.datasets.doctor import check_dataset, repair_dataset
from telecorder.datasets.lock import DatasetLock, DatasetLockedError
from telecorder.errors import DatasetError

OCTO = SHARED / "samples" / "octo-models_octo" / "tests" / "debug_dataset" / "bridge_dataset" / "1.0.0"


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed): kind, size, modification time, content."""
    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [".", *dirs, *files]:
            path = Path(folder) / name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = None
            out[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, what)
    return out


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100000")  # Rich would wrap the messages mid-word


def one_line(text: str) -> str:
    return " ".join(text.split())


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telecorder.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "100000"})


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    write_dataset(root, make_info(cameras=("front",)), [6, 9])
    return root


# -- 1. links where the tool writes ------------------------------------------------------


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_a_lock_file_linked_outside_is_never_written(src: Path, tmp_path: Path, dangling: bool, capsys) -> None:
    target = tmp_path / "precious.txt"
    if not dangling:
        target.write_text("keep me\n")
    (src / "meta/.lock").unlink()
    (src / "meta/.lock").symlink_to(target)
    before = tree_state(src)

    # Reading the source is allowed (unlocked: the link is not used), and writes nothing.
    assert main(["edit", "merge", str(src), str(src), "--out", str(tmp_path / "m")]) == 0
    assert len(Dataset.open(tmp_path / "m")) == 4
    assert main(["edit", "delete-episodes", str(src), "0", "--out", str(tmp_path / "d")]) == 0
    assert main(["doctor", str(src)]) == 0  # the data is fine: the link is a warning
    assert "meta/.lock is a symbolic link" in one_line(capsys.readouterr().out)
    # Writers refuse it with one line.
    assert main(["doctor", str(src), "--repair"]) == 2
    assert "meta/.lock is a symbolic link" in one_line(capsys.readouterr().err)
    with pytest.raises(DatasetError, match="symbolic link"):
        write_dataset(src, make_info(cameras=("front",)), [3], resume=True)
    with pytest.raises(DatasetError, match="symbolic link"):
        DatasetLock(src, "test").acquire()

    assert tree_state(src) == before
    if dangling:
        assert not os.path.lexists(target), "a dangling link created its target"
    else:
        assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("folder", ["meta", "episodes"])
def test_a_folder_linked_outside_is_never_written(src: Path, tmp_path: Path, folder: str, capsys) -> None:
    outside = tmp_path / "outside"
    shutil.move(src / folder, outside)
    (src / folder).symlink_to(outside, target_is_directory=True)
    # Something for repair to do there: an unreadable episode file would be set aside.
    (outside / "episode_000007.h5" if folder == "episodes" else src / "episodes/episode_000007.h5").write_bytes(
        b"not HDF5")
    before, outside_before = tree_state(src), tree_state(outside)

    assert main(["edit", "merge", str(src), str(src), "--out", str(tmp_path / "m")]) == 0
    assert main(["doctor", str(src), "--repair"]) == 2
    assert f"{folder} is a symbolic link" in one_line(capsys.readouterr().err)
    assert tree_state(outside) == outside_before
    assert tree_state(src) == before


def test_a_linked_quarantine_folder_moves_nothing_out(src: Path, tmp_path: Path, capsys) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (src / "episodes/.unrecoverable").symlink_to(outside, target_is_directory=True)
    damaged = src / "episodes/episode_000007.h5"
    damaged.write_bytes(b"not HDF5")
    assert main(["doctor", str(src), "--repair"]) == 2
    assert ".unrecoverable is a symbolic link" in one_line(capsys.readouterr().err)
    assert damaged.read_bytes() == b"not HDF5" and not any(outside.iterdir())
    # The fix the message asks for, then repair sets the file aside inside the dataset.
    (src / "episodes/.unrecoverable").unlink()
    repair_dataset(src)
    assert (src / "episodes/.unrecoverable/episode_000007.h5").read_bytes() == b"not HDF5"


def test_a_linked_index_is_not_appended_to(src: Path, tmp_path: Path) -> None:
    outside = tmp_path / "index-copy.jsonl"
    shutil.copy(src / "meta/episodes.jsonl", outside)
    (src / "meta/episodes.jsonl").unlink()
    (src / "meta/episodes.jsonl").symlink_to(outside)
    before = outside.read_bytes()
    with pytest.raises(DatasetError, match=r"episodes\.jsonl is a symbolic link"):
        write_dataset(src, make_info(cameras=("front",)), [3], resume=True)
    assert outside.read_bytes() == before
    assert sorted(p.name for p in (src / "episodes").iterdir()) == ["episode_000000.h5", "episode_000001.h5"]


def test_a_salvage_temporary_planted_as_a_link_is_not_written_through(src: Path, tmp_path: Path) -> None:
    from telecorder.datasets.recovery import renumber_file

    target = tmp_path / "precious.h5"
    target.write_bytes(b"keep")
    path = src / "episodes/episode_000001.h5"
    (path.parent / ".episode_000001.h5.salvage").symlink_to(target)
    renumber_file(src, path, 1, 5)
    assert target.read_bytes() == b"keep"


# -- 1b. read-only sources ---------------------------------------------------------------


READERS = {
    "merge": lambda s, o: ["edit", "merge", s, s, "--out", o],
    "delete": lambda s, o: ["edit", "delete-episodes", s, "0", "--out", o],
    "split": lambda s, o: ["edit", "split", s, "--val-fraction", "0.5", "--out-train", o + "t", "--out-val", o + "v"],
    "set-task": lambda s, o: ["edit", "set-task", s, "wave", "--out", o],
    "remove-feature": lambda s, o: ["edit", "remove-feature", s, "front", "--out", o],
    "convert": lambda s, o: ["convert", s, o, "--to", "lerobot"],
    "info": lambda s, o: ["info", s],
    "stats": lambda s, o: ["stats", s],
    "doctor": lambda s, o: ["doctor", s],
}


def _prepare(src: Path, how: str) -> None:
    lock = src / "meta/.lock"
    if how == "no-lock-file":
        lock.unlink()
    elif how == "lock-is-a-folder":
        lock.unlink()
        lock.mkdir()
    elif how == "chmod-a-w":
        for p in [src, *src.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)


@pytest.mark.parametrize("how", ["no-lock-file", "lock-is-a-folder", "chmod-a-w"])
@pytest.mark.parametrize("command", list(READERS))
def test_a_command_that_reads_writes_nothing_into_its_source(src: Path, tmp_path: Path, how: str,
                                                             command: str) -> None:
    _prepare(src, how)
    before = tree_state(src)
    try:
        assert main(READERS[command](str(src), str(tmp_path / "out"))) == 0
    finally:
        for p in [src, *src.rglob("*")]:
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)
    assert tree_state(src) == before  # (chmod changes no modification time)


def test_a_lock_file_that_is_a_fifo_blocks_nothing(src: Path, tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer that never comes: the lock file is opened
    non-blocking, and a FIFO is no lock file."""
    (src / "meta/.lock").unlink()
    os.mkfifo(src / "meta/.lock")
    before = tree_state(src)
    for args in (["doctor", src], ["edit", "merge", src, src, "--out", tmp_path / "m"]):
        try:
            out = subprocess.run([sys.executable, "-m", "telecorder.cli", *map(str, args)], capture_output=True,
                                 text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"telecorder {args[0]} hung on a FIFO at meta/.lock")
        assert out.returncode == 0, out.stderr[-2000:]
    out = run_cli("doctor", src, "--repair")
    assert out.returncode == 2 and "meta/.lock is not a regular file" in one_line(out.stderr), out.stderr[-2000:]
    assert tree_state(src) == before


def _readonly_mount_works(tmp_path: Path) -> str | None:
    """Why a private read-only bind mount cannot be made here (``None`` if it can)."""
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    probe = tmp_path / "probe"
    probe.mkdir()
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && ! touch "$0/x" 2>/dev/null'
    out = subprocess.run(["unshare", "-m", "sh", "-c", script, str(probe)], capture_output=True, text=True,
                         timeout=60)
    return None if out.returncode == 0 else f"no private read-only mount here ({out.stderr.strip()[:200]})"


@pytest.mark.parametrize("command", ["merge", "delete", "set-task", "convert", "info", "doctor"])
def test_a_read_only_mount_works_as_a_source(src: Path, tmp_path: Path, command: str) -> None:
    why = _readonly_mount_works(tmp_path)
    if why:
        pytest.skip(why)
    before = tree_state(src)
    # A mount namespace of its own: the read-only mount disappears with the command.
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    argv = [sys.executable, "-m", "telecorder.cli", *READERS[command](str(src), str(tmp_path / "out"))]
    out = subprocess.run(["unshare", "-m", "sh", "-c", script, str(src), *argv], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert tree_state(src) == before


def test_writers_on_a_read_only_mount_or_a_folder_lock_say_so_in_one_line(src: Path, tmp_path: Path) -> None:
    (src / "meta/.lock").unlink()
    (src / "meta/.lock").mkdir()
    out = run_cli("doctor", src, "--repair")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "meta/.lock is a folder" in one_line(out.stderr)
    out = run_cli("edit", "delete-episodes", src, "0", "--in-place")
    assert out.returncode == 2 and "meta/.lock is a folder" in one_line(out.stderr)
    (src / "meta/.lock").rmdir()
    why = _readonly_mount_works(tmp_path)
    if why:
        pytest.skip(why)
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    out = subprocess.run(["unshare", "-m", "sh", "-c", script, str(src), sys.executable, "-m", "telecorder.cli",
                          "doctor", str(src), "--repair"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "read-only" in one_line(out.stderr)


def test_an_unlocked_source_changed_while_read_publishes_nothing(src: Path, tmp_path: Path, monkeypatch) -> None:
    from telecorder.datasets import edit

    (src / "meta/.lock").unlink()  # no lock file: read unlocked, then checked
    real = edit._stage_all

    def stage_then_record(*args, **kwargs):
        staged = real(*args, **kwargs)
        write_dataset(src, make_info(cameras=("front",)), [4], resume=True)  # a recording meanwhile
        return staged

    monkeypatch.setattr(edit, "_stage_all", stage_then_record)
    with pytest.raises(DatasetLockedError, match="changed while it was being read"):
        edit.merge([src, src], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m")]


def test_a_shared_read_lock_keeps_writers_out_and_lets_readers_in(src: Path) -> None:
    from telecorder.datasets.lock import DatasetReadLock

    with DatasetReadLock(src, "merge") as reader:
        assert reader.locked
        with DatasetReadLock(src, "split") as other:
            assert other.locked
        with pytest.raises(DatasetLockedError, match="in use by another telecorder process"):
            write_dataset(src, make_info(cameras=("front",)), [3], resume=True)
        assert check_dataset(src).ok  # doctor does not take a reader for a writer
    with DatasetLock(src, "record into it"), pytest.raises(DatasetLockedError, match="being modified by process"):
        DatasetReadLock(src, "merge").acquire()


# -- 2. repair converges ---------------------------------------------------------------------


def _index_lines(root: Path) -> list[int]:
    return [json.loads(line)["episode_index"] for line in (root / "meta/episodes.jsonl").read_text().splitlines()]


def _attr(path: Path):
    with h5py.File(path, "r") as f:
        return f.attrs["episode_index"]


def test_repair_of_a_copied_episode_file_converges(src: Path, capsys) -> None:
    shutil.copy(src / "episodes/episode_000001.h5", src / "episodes/episode_000005.h5")
    report = check_dataset(src)
    assert any("episode_000005.h5: its episode_index attribute says 1, its name 5" in e for e in report.all_errors)
    assert main(["doctor", str(src), "--repair"]) == 0
    assert _index_lines(src) == [0, 1, 5]
    assert int(_attr(src / "episodes/episode_000005.h5")) == 5
    capsys.readouterr()
    assert repair_dataset(src) == []
    assert main(["doctor", str(src), "--repair"]) == 0
    assert "repair: nothing to mend" in capsys.readouterr().out
    assert _index_lines(src) == [0, 1, 5] and check_dataset(src).ok
    ds = Dataset.open(src)
    with ds.episode(5) as ep:
        assert ep.load().index == 5


@pytest.mark.parametrize("value", ["abc", 1.5, "json:[1, 2]", True])
def test_an_episode_index_attribute_that_is_no_number(src: Path, tmp_path: Path, value, capsys) -> None:
    path = src / "episodes/episode_000001.h5"
    with h5py.File(path, "r+") as f:
        f.attrs["episode_index"] = value
    report = check_dataset(src)  # reports it, names the file, and goes on checking
    assert any(str(path) in e and "not an episode number" in e for e in report.all_errors), report.all_errors
    assert [e.index for e in report.episodes] == [0, 1] and report.episodes[1].steps == 9
    # Readers take the number from the name: convert works and numbers the episode 1.
    assert main(["convert", str(src), str(tmp_path / "c"), "--to", "native"]) == 0
    assert main(["doctor", str(src), "--repair"]) == 0
    assert int(_attr(path)) == 1 and repair_dataset(src) == [] and check_dataset(src).ok


def test_an_unindexed_file_with_a_bad_attribute_is_indexed_under_its_name(src: Path) -> None:
    path = src / "episodes/episode_000004.h5"
    shutil.copy(src / "episodes/episode_000000.h5", path)
    with h5py.File(path, "r+") as f:
        f.attrs["episode_index"] = "four"
    errors = check_dataset(src).all_errors
    assert any("episode_000004.h5: episode_index attribute is 'four'" in e for e in errors), errors
    actions = repair_dataset(src)
    assert any("had episode_index 'four'" in a for a in actions), actions
    assert _index_lines(src) == [0, 1, 4] and repair_dataset(src) == [] and check_dataset(src).ok


# -- 3. paths named by metadata ---------------------------------------------------------------


def _octo_copy(tmp_path: Path) -> Path:
    if not OCTO.is_dir():
        pytest.skip(f"the Octo debug dataset is not at {OCTO}")
    copy = tmp_path / "bridge" / "1.0.0"
    shutil.copytree(OCTO, copy)
    return copy


def _bad_path(kind: str, data_dir: Path, real: Path) -> str:
    """``../x`` or an absolute path, either one naming a real copy of ``real`` (so a reader that
    followed it would succeed)."""
    if kind == "relative":
        shutil.copy(real, data_dir.parent / real.name)
        return f"../{real.name}"
    stolen = data_dir.parent.parent / "stolen" / real.name
    stolen.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(real, stolen)
    return str(stolen)


def _set_split(data_dir: Path, split: str, **fields) -> None:
    info = json.loads((data_dir / "dataset_info.json").read_text())
    for s in info["splits"]:
        if s["name"] == split:
            s.update(fields)
    (data_dir / "dataset_info.json").write_text(json.dumps(info))


def rlds_template(tmp_path: Path, kind: str) -> tuple[Path, str]:
    data_dir = _octo_copy(tmp_path)
    shard = data_dir / "bridge_dataset-train.tfrecord-00000-of-00001"
    _set_split(data_dir, "train", filepathTemplate=_bad_path(kind, data_dir, shard))
    shard.unlink()
    return data_dir, "filepathTemplate"


def rlds_dataset_name(tmp_path: Path, kind: str) -> tuple[Path, str]:
    data_dir = _octo_copy(tmp_path)
    shard = data_dir / "bridge_dataset-train.tfrecord-00000-of-00001"
    bad = _bad_path(kind, data_dir, shard)
    info = json.loads((data_dir / "dataset_info.json").read_text())
    info["name"] = bad.removesuffix("-train.tfrecord-00000-of-00001")
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    shard.unlink()
    return data_dir, "filepathTemplate"


def _torch_loader(path: Path) -> None:
    pytest.importorskip("torch")
    from telecorder.loaders import TorchDataset

    TorchDataset(path, split="train", image_size=(32, 32))


def _lerobot_reader(path: Path) -> None:
    from telecorder.converters.lerobot import LeRobotReader

    LeRobotReader(path).read_episode(0)


@pytest.fixture(scope="module")
def lerobot_v3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from telecorder.converters.pipeline import ConvertOptions, convert

    base = tmp_path_factory.mktemp("lerobot")
    write_dataset(base / "native", make_info(cameras=("front",)), [6, 9])
    convert(base / "native", base / "lerobot", ConvertOptions(to="lerobot"))
    return base / "lerobot"


def _lerobot_copy(lerobot_v3: Path, tmp_path: Path) -> Path:
    root = tmp_path / "sub" / "lr"
    shutil.copytree(lerobot_v3, root)
    return root


def _set_info(root: Path, **fields) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    info.update(fields)
    (root / "meta/info.json").write_text(json.dumps(info))


def lerobot_data_path(lerobot_v3: Path, tmp_path: Path, kind: str) -> tuple[Path, str]:
    root = _lerobot_copy(lerobot_v3, tmp_path)
    real = root / "data/chunk-000/file-000.parquet"
    _set_info(root, data_path=_bad_path(kind, root, real))
    return root, "'data_path'"


def lerobot_video_path(lerobot_v3: Path, tmp_path: Path, kind: str) -> tuple[Path, str]:
    root = _lerobot_copy(lerobot_v3, tmp_path)
    real = root / "videos/observation.images.front/chunk-000/file-000.mp4"
    _set_info(root, video_path=_bad_path(kind, root, real))
    return root, "'video_path'"


def lerobot_video_key(lerobot_v3: Path, tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A camera's feature name (v2.x) is filled into the video template: the result is checked."""
    from test_conv_lerobot import make_v2

    root = make_v2(tmp_path / "sub" / "v2", video_frames=12)
    real = root / "videos/chunk-000/observation.images.top/episode_000000.mp4"
    bad = _bad_path(kind, root, real)
    info = json.loads((root / "meta/info.json").read_text())
    if kind == "relative":  # videos/chunk-000/../../../x.mp4/episode_000000.mp4
        info["features"]["../../../" + real.name] = info["features"].pop("observation.images.top")
    else:
        info["video_path"] = "{video_key}"
        info["features"][bad] = info["features"].pop("observation.images.top")
    (root / "meta/info.json").write_text(json.dumps(info))
    return root, "'video_path'"


def lerobot_timing_file(lerobot_v3: Path, tmp_path: Path, kind: str) -> tuple[Path, str]:
    root = _lerobot_copy(lerobot_v3, tmp_path)
    side = json.loads((root / "telecorder_meta.json").read_text())
    side["timing_file"] = _bad_path(kind, root, root / "meta/telecorder_timing.parquet")
    (root / "telecorder_meta.json").write_text(json.dumps(side))
    return root, "'timing_file'"


RLDS_CASES = {"rlds filepathTemplate": rlds_template, "rlds dataset name": rlds_dataset_name}
LEROBOT_CASES = {
    "lerobot data_path": lerobot_data_path,
    "lerobot video_path": lerobot_video_path,
    "lerobot video key": lerobot_video_key,
    "lerobot timing_file": lerobot_timing_file,
}


def _assert_one_clear_line(e: BaseException, names: str) -> None:
    text = str(e)
    assert "\n" not in text and "refusing to read it" in text and names in text, text
    assert "outside the dataset folder" in text or "not relative to the dataset folder" in text, text


@pytest.mark.parametrize("kind", ["relative", "absolute"])
@pytest.mark.parametrize("case", list(RLDS_CASES))
def test_rlds_shards_named_outside_are_refused_by_the_loader(tmp_path: Path, case: str, kind: str) -> None:
    data_dir, names = RLDS_CASES[case](tmp_path, kind)
    with pytest.raises(DatasetError) as e:
        _torch_loader(data_dir)
    _assert_one_clear_line(e.value, names)


@pytest.mark.parametrize("kind", ["relative", "absolute"])
@pytest.mark.parametrize("case", list(RLDS_CASES))
def test_rlds_shards_named_outside_are_refused_by_convert(tmp_path: Path, case: str, kind: str) -> None:
    data_dir, names = RLDS_CASES[case](tmp_path, kind)
    out = run_cli("convert", data_dir, tmp_path / "out", "--to", "native")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    text = one_line(out.stderr)
    assert "refusing to read it" in text and names in text, text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["relative", "absolute"])
@pytest.mark.parametrize("case", list(LEROBOT_CASES))
def test_lerobot_paths_named_outside_are_refused(lerobot_v3: Path, tmp_path: Path, case: str, kind: str) -> None:
    root, names = LEROBOT_CASES[case](lerobot_v3, tmp_path, kind)
    with pytest.raises(DatasetError) as e:
        _lerobot_reader(root)
    _assert_one_clear_line(e.value, names)


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_lerobot_image_paths_named_outside_are_refused(tmp_path: Path, kind: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_conv_lerobot import make_v2

    root = make_v2(tmp_path / "sub" / "v2")
    outside = tmp_path / "sub" / "outside.png"
    outside.write_bytes(b"\x89PNG not really")
    bad = "../../../outside.png" if kind == "relative" else str(outside)
    parquet = root / "data/chunk-000/episode_000000.parquet"
    table = pq.read_table(parquet)
    paths = pa.array([{"bytes": None, "path": bad}] * table.num_rows,
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(table.set_column(table.column_names.index("observation.image"), "observation.image", paths),
                   parquet)
    with pytest.raises(DatasetError) as e:
        _lerobot_reader(root)
    _assert_one_clear_line(e.value, "column 'observation.image' step 0")


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_native_index_file_names_are_never_opened(src: Path, tmp_path: Path, kind: str) -> None:
    """The index's ``file`` field is reported and never used: the file comes from the number."""
    decoy = tmp_path / "decoy.h5"
    shutil.copy(src / "episodes/episode_000000.h5", decoy)
    lines = (src / "meta/episodes.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["file"] = "../../decoy.h5" if kind == "relative" else str(decoy)
    lines[1] = json.dumps(rec)
    (src / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
    errors = check_dataset(src).all_errors
    assert any("names file" in e and "\n" not in e for e in errors), errors
    with pytest.warns(UserWarning, match="names file"):
        ds = Dataset.open(src)
    with ds.episode(1) as ep:
        assert ep.path == src / "episodes/episode_000001.h5" and len(ep) == 9
        np.testing.assert_array_equal(ep.timestamps(), np.arange(9) / 30.0)


def test_shard_paths_as_tfds_resolves_them_are_checked_too(tmp_path: Path) -> None:
    """The converter checks the files TFDS resolved as well (its template filling has more forms)."""
    from telecorder.converters.rlds.paths import check_inside

    check_inside(tmp_path, [tmp_path / "a-train.tfrecord-00000-of-00001"], source="t")
    for bad in (tmp_path.parent / "x", Path("/etc/passwd"), tmp_path / ".." / "x"):
        with pytest.raises(DatasetError, match="refusing to read it"):
            check_inside(tmp_path, [bad], source="t")


# -- 3b. paths named inside HDF5 files: external links, virtual sources, external storage ----------


def _point_outside(file: Path, name: str, how: str, tmp_path: Path) -> None:
    """Replace dataset ``name`` of ``file`` by one whose data lies in a file outside the dataset."""
    secret = tmp_path / "secret.h5"
    with h5py.File(file, "r+") as f:
        data = f[name][()]
        del f[name]
        with h5py.File(secret, "a") as s:
            if name in s:
                del s[name]
            s[name] = data
        if how == "external link":
            f[name] = h5py.ExternalLink(str(secret), name)
        else:
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[...] = h5py.VirtualSource(str(secret), name, shape=data.shape)
            f.create_virtual_dataset(name, layout)


@pytest.mark.parametrize("how", ["external link", "virtual dataset"])
def test_a_native_episode_file_reaching_into_another_file_is_refused(src: Path, tmp_path: Path, how: str) -> None:
    path = src / "episodes/episode_000001.h5"
    _point_outside(path, "observation/state", how, tmp_path)
    with pytest.raises(DatasetError) as e:
        Dataset.open(src).episode(1)
    assert "refusing to read outside the file" in str(e.value) and str(path) in str(e.value)
    errors = check_dataset(src).all_errors  # doctor reports it as a damaged episode
    assert any("refusing to read outside the file" in x for x in errors), errors
    out = run_cli("convert", src, tmp_path / "c", "--to", "native")
    assert out.returncode == 2 and "refusing to read outside the file" in one_line(out.stderr), out.stderr[-2000:]


@pytest.mark.parametrize("fmt,dataset", [("aloha", "action"), ("robomimic", "data/demo_0/actions")])
def test_foreign_hdf5_reaching_into_another_file_is_refused(src: Path, tmp_path: Path, fmt: str,
                                                            dataset: str) -> None:
    from telecorder.converters.pipeline import ConvertOptions, convert

    exported = tmp_path / fmt
    convert(src, exported, ConvertOptions(to=fmt))
    files = sorted(p for p in exported.rglob("*.hdf5"))
    _point_outside(files[0], dataset, "external link", tmp_path)
    out = run_cli("convert", exported, tmp_path / "back", "--to", "native")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "is an HDF5 external link" in one_line(out.stderr) and "refusing to read outside the file" in one_line(
        out.stderr)
