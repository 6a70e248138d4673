"""Corrupt native stores: every damaged input is one clear line naming the file, never a traceback,
never gigabytes of memory, and never a change to the input (except what ``doctor --repair`` is for).

Each case damages a copy of a small dataset the way a failing disk, another tool or an attacker
would: HDF5 extents resized to 10^9 rows in a file of a hundred kilobytes, random bytes over the
variable-length frame references, a JSON attribute that is not JSON, ``info.json`` / index lines /
``stats.json`` with wrong types, fps that is NaN or 1e300, replay speeds of 1e-300, a recorded
simulator scene with wrong types. Commands that might allocate what a file declares run as
subprocesses under a 2 GB address-space limit.

A few parametrized cases are siblings that were already handled before these checks (fps -1,
a feature that is a number, ``stats.json`` that is not JSON, replay speeds 0, NaN, inf): they
stay here so that the whole class is held, not only the instances that used to fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_info, write_dataset

from telecorder import cli

DAMAGED = "episodes/episode_000001.h5"
MEMORY_LIMIT = 2 << 30
_MAIN = "import sys; from telecorder.cli import main; sys.exit(main(sys.argv[1:]))"


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corrupt") / "clean"
    write_dataset(root, make_info(cameras=("front",)), [12, 20, 7])
    return root


def tree_hash(root: Path) -> str:
    """Every file's path and bytes (the lock file aside: taking a lock is not a change of data)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel == "meta/.lock":
            continue
        h.update(rel.encode() + (b"/" if p.is_dir() else b"\0"))
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(*args: str | Path, timeout: float = 600, limit: bool = True) -> subprocess.CompletedProcess:
    """``telecorder ARGS`` in a subprocess (under the memory limit), one line per message."""
    env = {**os.environ, "COLUMNS": "1000", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    env.pop("TELECORDER_DEBUG", None)
    return subprocess.run([sys.executable, "-c", _MAIN, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL,
                          preexec_fn=_limit_memory if limit else None)


def run_inline(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str | Path
               ) -> tuple[int, str]:
    """``telecorder ARGS`` in this process (for inputs that cannot make it allocate): exit code, output."""
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.delenv("TELECORDER_DEBUG", raising=False)
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_one_clear_line(output: str, *names: str) -> str:
    assert "Traceback" not in output, output
    lines = error_lines(output)
    assert lines, output
    assert any(all(n in line for n in names) for line in lines), (names, output)
    return lines[0]


def copy_of(clean: Path, tmp_path: Path, name: str = "ds") -> Path:
    dst = tmp_path / name
    shutil.copytree(clean, dst)
    return dst


# -- damage to one episode file -----------------------------------------------------------------


def _resize_everything(path: Path) -> None:
    """Every dataset declares 10^9 rows: what h5py allows on chunked datasets, at no cost on disk."""
    with h5py.File(path, "r+") as f:
        found: list[h5py.Dataset] = []
        f.visititems(lambda _, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
        for ds in found:
            ds.resize(10**9, axis=0)


def _scramble_frame_references(path: Path) -> None:
    """Random bytes over the 16-byte references (length, heap address, index) of every stored frame."""
    with h5py.File(path, "r") as f:
        ds = f["observation/images/front"]
        spots = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    rng = np.random.default_rng(1)
    with open(path, "r+b") as fh:
        for s in spots:
            fh.seek(s.byte_offset)
            fh.write(rng.integers(0, 256, s.size, dtype=np.uint8).tobytes())


def _bad_json_attribute(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs["cameras"] = "json:{not json"


DAMAGE = {"resized": _resize_everything, "frame_refs": _scramble_frame_references,
          "json_attr": _bad_json_attribute}


@pytest.fixture(params=sorted(DAMAGE))
def damaged(request: pytest.FixtureRequest, clean: Path, tmp_path: Path) -> Path:
    root = copy_of(clean, tmp_path)
    DAMAGE[request.param](root / DAMAGED)
    return root


def test_doctor_reports_the_damaged_episode_and_checks_the_others(damaged: Path):
    before = tree_hash(damaged)
    proc = run_cli("doctor", damaged)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # errors found, not a crash (2)
    assert_one_clear_line(proc.stdout + proc.stderr, str(damaged / DAMAGED))
    assert "3 episodes checked" in proc.stdout
    assert len(error_lines(proc.stdout + proc.stderr)) == 1  # episodes 0 and 2 are fine
    assert tree_hash(damaged) == before


def test_repair_sets_the_damaged_episode_aside_and_converges(damaged: Path):
    proc = run_cli("doctor", damaged, "--repair")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (damaged / DAMAGED).exists()
    assert (damaged / "episodes/.unrecoverable/episode_000001.h5").is_file()  # kept, never deleted
    again = run_cli("doctor", damaged)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 episodes checked" in again.stdout


@pytest.mark.parametrize("command", ["merge", "set-task", "convert"])
def test_edits_and_convert_refuse_a_damaged_source(damaged: Path, clean: Path, tmp_path: Path, command: str):
    before = tree_hash(damaged)
    out = tmp_path / "out"
    args = {"merge": ("edit", "merge", damaged, clean, "--out", out),
            "set-task": ("edit", "set-task", damaged, "pick", "--out", out),
            "convert": ("convert", damaged, out, "--to", "native")}[command]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_clear_line(proc.stderr, str(DAMAGED))
    assert not out.exists()
    assert tree_hash(damaged) == before


@pytest.mark.parametrize("damage", ["resized", "frame_refs"])
def test_loader_and_train_refuse_a_damaged_episode(clean: Path, tmp_path: Path, damage: str):
    pytest.importorskip("torch")
    root = copy_of(clean, tmp_path)
    DAMAGE[damage](root / DAMAGED)
    before = tree_hash(root)
    script = ("import sys\nfrom telecorder.loaders import TorchDataset\nfrom telecorder.errors import DatasetError\n"
              f"ds = TorchDataset({str(root)!r}, image_size=(32, 40), horizon=2, normalize='none')\n"
              "try:\n    [ds[i] for i in range(len(ds))]\nexcept DatasetError as e:\n"
              "    print('error:', e)\n    sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          preexec_fn=_limit_memory)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_clear_line(proc.stdout, str(root / DAMAGED))
    proc = run_cli("train", root, "--out", tmp_path / "ckpt", "--steps", "2", "--obs", "images")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_clear_line(proc.stderr, str(DAMAGED))
    assert not (tmp_path / "ckpt").exists()
    assert tree_hash(root) == before


# -- meta/info.json with wrong types --------------------------------------------------------------


def _info_edit(kind: str):
    def edit(info: dict) -> object:
        if kind == "list":
            return [info]
        if kind.startswith("fps="):
            info["fps"] = json.loads(kind[4:])  # Python's json reads NaN and Infinity
        elif kind == "features-list":
            info["features"] = [1]
        elif kind == "feature-int":
            info["features"]["action"] = 3
        elif kind == "shape-text":
            info["features"]["action"]["shape"] = "4"
        elif kind == "shape-huge":
            info["features"]["observation.images.front"]["shape"][0] = 2**63 - 1
        elif kind == "names-int":
            info["features"]["action"]["names"] = 5
        elif kind == "extra-list":
            info["extra"] = [1]
        elif kind == "robot-null":
            info["robot_type"] = None
        elif kind == "totals-text":
            info["total_frames"] = "x"
        return info
    return edit


INFO_DAMAGE = ["list", "fps=NaN", "fps=Infinity", "fps=1e300", "fps=-1", 'fps="30"', "fps=true",
               "features-list", "feature-int", "shape-text", "shape-huge", "names-int", "extra-list", "robot-null", "totals-text"]


@pytest.mark.parametrize("kind", INFO_DAMAGE)
def test_info_json_with_wrong_types_is_one_line(clean: Path, tmp_path: Path, kind: str, capsys, monkeypatch):
    root = copy_of(clean, tmp_path)
    path = root / "meta/info.json"
    path.write_text(json.dumps(_info_edit(kind)(json.loads(path.read_text()))))
    before = tree_hash(root)
    commands = [("info", root), ("doctor", root), ("stats", root),
                ("convert", root, tmp_path / "conv", "--to", "native", "--from", "native"),
                ("edit", "merge", root, clean, "--out", tmp_path / "merged")]
    for args in commands:
        code, output = run_inline(capsys, monkeypatch, *args)
        assert code == 2, (args, output)
        assert_one_clear_line(output, str(path))
    assert not (tmp_path / "conv").exists() and not (tmp_path / "merged").exists()
    assert tree_hash(root) == before


def test_merge_never_writes_a_nan_fps(clean: Path, tmp_path: Path, capsys, monkeypatch):
    a, b = copy_of(clean, tmp_path, "a"), copy_of(clean, tmp_path, "b")
    for root in (a, b):
        info = json.loads((root / "meta/info.json").read_text())
        info["fps"] = float("nan")
        (root / "meta/info.json").write_text(json.dumps(info))
    code, output = run_inline(capsys, monkeypatch, "edit", "merge", a, b, "--out", tmp_path / "m")
    assert code == 2
    assert_one_clear_line(output, "info.json", "fps")
    assert not (tmp_path / "m").exists()


# -- index lines with wrong types ------------------------------------------------------------------


INDEX_DAMAGE = {"length-null": ("length", None), "length-text": ("length", "20"), "length-negative": ("length", -1),
                "length-float": ("length", 20.5), "length-bool": ("length", True), "length-missing": ("length", ...),
                "task-number": ("task", 5), "bad-text": ("bad", "yes"), "duration-text": ("duration_s", "long"),
                "length-2**64": ("length", 2**64), "length-int64-max": ("length", 2**63 - 1)}


@pytest.mark.parametrize("kind", sorted(INDEX_DAMAGE))
def test_index_line_with_wrong_types_is_reported_and_rebuilt(clean: Path, tmp_path: Path, kind: str,
                                                             capsys, monkeypatch):
    root = copy_of(clean, tmp_path)
    index = root / "meta/episodes.jsonl"
    lines = index.read_text().splitlines()
    rec = json.loads(lines[1])
    key, value = INDEX_DAMAGE[kind]
    if value is ...:
        rec.pop(key)
    else:
        rec[key] = value
    lines[1] = json.dumps(rec)
    index.write_text("\n".join(lines) + "\n")
    before = tree_hash(root)

    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 1, output
    assert_one_clear_line(output, f"{index}:2", repr(key))
    code, output = run_inline(capsys, monkeypatch, "info", root)
    assert code == 0 and "Traceback" not in output
    # A conversion would leave the episode out: it refuses until the index is repaired.
    code, output = run_inline(capsys, monkeypatch, "convert", root, tmp_path / "conv", "--to", "native")
    assert code == 2 and not (tmp_path / "conv").exists()
    assert_one_clear_line(output, str(root), "doctor")
    assert tree_hash(root) == before

    code, output = run_inline(capsys, monkeypatch, "doctor", root, "--repair")
    assert "Traceback" not in output
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 0, output
    rebuilt = [json.loads(line) for line in index.read_text().splitlines()]
    assert [r["length"] for r in rebuilt] == [12, 20, 7]


# -- meta/stats.json that is no statistics ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "not-json", "list"])
def test_stats_json_damage_is_one_line_and_repair_recomputes_it(clean: Path, tmp_path: Path, kind: str,
                                                               capsys, monkeypatch):
    root = copy_of(clean, tmp_path)
    stats = root / "meta/stats.json"
    stats.unlink()
    if kind == "folder":
        stats.mkdir()
    else:
        stats.write_text("{nope" if kind == "not-json" else "[]")
    before = tree_hash(root)
    code, output = run_inline(capsys, monkeypatch, "stats", root)
    assert code == 2
    assert_one_clear_line(output, str(stats))
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 1
    assert_one_clear_line(output, str(stats))
    assert tree_hash(root) == before

    code, output = run_inline(capsys, monkeypatch, "doctor", root, "--repair")
    if kind == "folder":  # it may hold someone's files: repair refuses to replace it
        assert code == 2
        assert_one_clear_line(output, str(stats), "folder")
        assert tree_hash(root) == before
        return
    assert "Traceback" not in output
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 0, output


# -- replay: speeds and recorded scenes ------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mujoco")
    out = tmp_path_factory.mktemp("sim") / "rec"
    proc = run_cli("collect", "--device", "scripted", "--robot", "sim", "--episodes", "1", "--episode-time", "1",
                   "--no-realtime", "--seed", "3", "--out", out, limit=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.parametrize("speed", ["1e-300", "1e-5", "0", "-1", "nan", "inf", "1e300"])
def test_replay_speed_out_of_range_is_one_line(sim_recording: Path, speed: str):
    proc = run_cli("replay", sim_recording, "--episode", "0", "--no-realtime", "--speed", speed, timeout=120,
                   limit=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "speed" in proc.stderr


SCENES = {"qpos-text": {"qpos": "x"}, "qpos-object": {"qpos": {"a": 1}}, "qpos-nested": {"qpos": [["a"]]},
          "qpos-nan": {"qpos": [float("nan")]}, "time-text": {"time": "x"}, "time-list": {"time": [1]},
          "seed-list": {"seed": [1]}, "scene-list": None}


@pytest.mark.parametrize("kind", sorted(SCENES))
def test_replay_refuses_a_recorded_scene_with_wrong_types(sim_recording: Path, tmp_path: Path, kind: str):
    root = copy_of(sim_recording, tmp_path)
    episode = root / "episodes/episode_000000.h5"
    with h5py.File(episode, "r+") as f:
        scene = json.loads(f.attrs["sim_scene"].removeprefix("json:"))
        scene = [scene] if SCENES[kind] is None else {**scene, **SCENES[kind]}
        f.attrs["sim_scene"] = "json:" + json.dumps(scene)
    before = tree_hash(root)
    proc = run_cli("replay", root, "--episode", "0", "--no-realtime", timeout=120, limit=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_clear_line(proc.stderr, str(episode), "sim_scene")
    assert tree_hash(root) == before


def test_non_finite_command_line_numbers_are_refused(tmp_path: Path):
    out = tmp_path / "rec"
    proc = run_cli("collect", "--robot", "sim", "--fps", "nan", "--episodes", "1", "--out", out, timeout=120,
                   limit=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--fps" in proc.stderr
    assert not out.exists()


def test_repair_converges_when_the_file_attribute_has_the_wrong_type_too(clean: Path, tmp_path: Path,
                                                                         capsys, monkeypatch):
    root = copy_of(clean, tmp_path)
    with h5py.File(root / DAMAGED, "r+") as f:
        f.attrs["duration_s"] = "long"
    index = root / "meta/episodes.jsonl"
    lines = index.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "duration_s": "long"})
    index.write_text("\n".join(lines) + "\n")
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 1
    assert_one_clear_line(output, f"{index}:2", "duration_s")
    for _ in range(2):
        code, output = run_inline(capsys, monkeypatch, "doctor", root, "--repair")
        assert "Traceback" not in output
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 0, output
    assert json.loads(index.read_text().splitlines()[1])["duration_s"] is None  # the file keeps its text
    with h5py.File(root / DAMAGED, "r") as f:
        assert f.attrs["duration_s"] == "long"


def test_merge_keeps_an_edit_history_of_another_type(clean: Path, tmp_path: Path, capsys, monkeypatch):
    root = copy_of(clean, tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    info["extra"]["edit_history"] = 5
    (root / "meta/info.json").write_text(json.dumps(info))
    with h5py.File(root / DAMAGED, "r+") as f:
        f.attrs["edit_history"] = 7
    code, output = run_inline(capsys, monkeypatch, "edit", "merge", root, clean, "--out", tmp_path / "m")
    assert code == 0, output
    merged = json.loads((tmp_path / "m/meta/info.json").read_text())
    assert merged["extra"]["edit_history"][0] == {"earlier_history": 5}
    with h5py.File(tmp_path / "m" / DAMAGED, "r") as f:
        assert json.loads(f.attrs["edit_history"].removeprefix("json:"))[0] == {"earlier_history": 7}


def test_index_that_is_a_folder_is_one_line(clean: Path, tmp_path: Path, capsys, monkeypatch):
    root = copy_of(clean, tmp_path)
    index = root / "meta/episodes.jsonl"
    index.unlink()
    index.mkdir()
    before = tree_hash(root)
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 1
    assert_one_clear_line(output, str(index), "folder")
    for args in (("doctor", root, "--repair"), ("convert", root, tmp_path / "c", "--to", "native"),
                 ("edit", "merge", root, clean, "--out", tmp_path / "m")):
        code, output = run_inline(capsys, monkeypatch, *args)
        assert code == 2, (args, output)
        assert_one_clear_line(output, str(index))
    assert tree_hash(root) == before


# -- episode datasets of another type or shape ------------------------------------------------------


def _replace(name: str, make) -> object:
    def damage(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            n = f["timestamp"].shape[0]
            del f[name]
            f.create_dataset(name, data=make(n))
    return damage


# DAMAGED has 20 steps; action and observation/state are float32 (20, 4).
RETYPED = {
    "action-wide": ("action", _replace("action", lambda n: np.zeros((n, 7), np.float32))),
    "state-text": ("observation/state", _replace("observation/state", lambda n: np.array([b"abc"] * n))),
    "timestamp-text": ("timestamp", _replace("timestamp", lambda n: np.array([b"abc"] * n))),
    "timestamp-scalar": ("timestamp", _replace("timestamp", lambda n: np.float64(1.0))),
    "frame-index-2d": ("observation/images_frame_index/front",
                       _replace("observation/images_frame_index/front", lambda n: np.zeros((n, 7), np.int64))),
    "image-ts-text": ("observation/images_timestamp/front",
                      _replace("observation/images_timestamp/front", lambda n: np.array([b"abc"] * n))),
    "lateness-empty": ("timing/tick_lateness", _replace("timing/tick_lateness", lambda n: np.zeros(0, np.float32))),
    "frames-numeric": ("observation/images/front",
                       _replace("observation/images/front", lambda n: np.zeros(n, np.float64))),
}


@pytest.mark.parametrize("kind", sorted(RETYPED))
def test_episode_dataset_of_another_type_or_shape_is_one_line(clean: Path, tmp_path: Path, kind: str,
                                                             capsys, monkeypatch):
    root = copy_of(clean, tmp_path)
    name, damage = RETYPED[kind]
    damage(root / DAMAGED)
    before = tree_hash(root)
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 1, output  # a damaged episode is reported, the others checked
    assert_one_clear_line(output, str(root / DAMAGED), f"/{name}")
    assert "3 episodes checked" in output
    for args in (("convert", root, tmp_path / "conv", "--to", "native"),
                 ("export", root, "--episode", "1", "--contact-sheet", tmp_path / "sheet.png")):
        code, output = run_inline(capsys, monkeypatch, *args)
        assert code == 2, (args, output)
        assert_one_clear_line(output, str(DAMAGED), f"/{name}")
    assert not (tmp_path / "conv").exists()
    assert tree_hash(root) == before

    code, output = run_inline(capsys, monkeypatch, "doctor", root, "--repair")
    assert "Traceback" not in output
    assert (root / "episodes/.unrecoverable/episode_000001.h5").is_file()
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 0, output


def test_episode_whose_objects_cannot_be_listed_is_one_line(clean: Path, tmp_path: Path, capsys, monkeypatch):
    """h5py raises RuntimeError on a damaged object header; inside its link visit that surfaces as a
    SystemError. Either is one line naming the file."""
    root = copy_of(clean, tmp_path)
    real_get = h5py.Group.get

    def damaged_get(self, name, *args, **kwargs):
        if Path(self.file.filename).name == Path(DAMAGED).name and name == "action":
            raise RuntimeError("Can't get deprecated info for object (attempting I/O in temporary file space)")
        return real_get(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "get", damaged_get)
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 1, output
    assert_one_clear_line(output, str(root / DAMAGED), "damaged")
    code, output = run_inline(capsys, monkeypatch, "convert", root, tmp_path / "conv", "--to", "native")
    assert code == 2, output
    assert_one_clear_line(output, str(DAMAGED), "damaged")


# -- numbers in meta/stats.json beyond what statistics hold -------------------------------------------


def _stats_edit(doc: dict, kind: str) -> None:
    fs = doc["features"]["action"]
    dim = next(d for d in fs["sketch"]["dims"] if d["pos"]["cnt"])
    if kind == "cnt-inf":
        dim["pos"]["cnt"][0] = float("inf")
    elif kind == "cnt-1e300":
        dim["pos"]["cnt"][0] = 1e300
    elif kind == "cnt-2**64":
        dim["pos"]["cnt"][0] = 2**64
    elif kind == "cnt-huge-int":
        dim["pos"]["cnt"][0] = 922337203685477580
    elif kind == "didx-minus-inf":
        dim["pos"]["didx"][0] = float("-inf")
    elif kind == "didx-huge":
        dim["pos"]["didx"][0] = 10**15
    elif kind == "zero-negative":
        dim["zero"] = -1
    elif kind == "zero-inf":
        dim["zero"] = float("inf")
    elif kind == "count-2**64":
        fs["count"] = 2**64
    elif kind == "count-float":
        fs["count"] = float(fs["count"])
    elif kind == "shape-huge":
        fs["shape"] = [10**12]
    elif kind == "alpha-tiny":
        fs["sketch"]["alpha"] = 1e-300
    elif kind == "mean-1e400":
        fs["mean"][0] = 10**400


STATS_NUMBERS = ["cnt-inf", "cnt-1e300", "cnt-2**64", "cnt-huge-int", "didx-minus-inf", "didx-huge", "zero-negative",
                 "zero-inf", "count-2**64", "count-float", "shape-huge", "alpha-tiny", "mean-1e400"]


@pytest.mark.parametrize("kind", STATS_NUMBERS)
def test_stats_json_numbers_out_of_range_are_one_line_and_repair_recomputes(clean: Path, tmp_path: Path, kind: str,
                                                                           capsys, monkeypatch):
    root = copy_of(clean, tmp_path)
    stats = root / "meta/stats.json"
    doc = json.loads(stats.read_text())
    _stats_edit(doc, kind)
    stats.write_text(json.dumps(doc))
    before = tree_hash(root)
    code, output = run_inline(capsys, monkeypatch, "stats", root)
    assert code == 2, output
    assert_one_clear_line(output, str(stats), "'action'")
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 1, output
    assert_one_clear_line(output, str(stats), "'action'")
    assert tree_hash(root) == before
    code, output = run_inline(capsys, monkeypatch, "doctor", root, "--repair")
    assert "Traceback" not in output
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 0, output


def test_loader_names_stats_json_with_numbers_out_of_range(clean: Path, tmp_path: Path):
    pytest.importorskip("torch")
    from telecorder.errors import DatasetError
    from telecorder.loaders import TorchDataset

    root = copy_of(clean, tmp_path)
    stats = root / "meta/stats.json"
    doc = json.loads(stats.read_text())
    _stats_edit(doc, "cnt-inf")
    stats.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"stats\.json: feature 'action'.*doctor --repair"):
        TorchDataset(root, image_size=(32, 40), horizon=2)


# -- format detection and index rebuilding ------------------------------------------------------------


def test_convert_names_a_damaged_native_info_json(clean: Path, tmp_path: Path, capsys, monkeypatch):
    root = copy_of(clean, tmp_path)
    info = root / "meta/info.json"
    for text, what in ((json.dumps([json.loads(info.read_text())]), "JSON list"), ("{nope", "not valid JSON")):
        info.write_text(text)
        code, output = run_inline(capsys, monkeypatch, "convert", root, tmp_path / "conv", "--to", "native")
        assert code == 2, output
        assert_one_clear_line(output, str(info), what)
        assert "recognises" not in output
    assert not (tmp_path / "conv").exists()


@pytest.mark.parametrize("value", [[1, 2], "abc", 7.5])
def test_repair_rebuilds_an_index_line_whatever_source_episode_index_holds(clean: Path, tmp_path: Path, value,
                                                                          capsys, monkeypatch):
    root = copy_of(clean, tmp_path)
    with h5py.File(root / DAMAGED, "r+") as f:
        f.attrs["source_episode_index"] = "json:" + json.dumps(value) if isinstance(value, list) else value
    index = root / "meta/episodes.jsonl"
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # episode 1's line is lost
    code, output = run_inline(capsys, monkeypatch, "doctor", root, "--repair")
    assert "Traceback" not in output, output
    code, output = run_inline(capsys, monkeypatch, "doctor", root)
    assert code == 0, output
    rebuilt = json.loads(index.read_text().splitlines()[1])
    assert rebuilt["episode_index"] == 1
    assert rebuilt.get("source_episode_index") == (value if isinstance(value, str) else None)


@pytest.mark.parametrize("value", [np.arange(3), np.array([b"a", b"b"]), np.complex128(1 + 2j)])
def test_episode_attribute_of_another_type_is_carried_as_plain_data(clean: Path, tmp_path: Path, value,
                                                                   capsys, monkeypatch):
    """Another tool may store an array where telecorder writes text: a conversion carries it as a list
    (never 'not JSON serializable'), and the loader's instruction takes only text."""
    root = copy_of(clean, tmp_path)
    with h5py.File(root / DAMAGED, "r+") as f:
        f.attrs["language_instruction"] = value
    code, output = run_inline(capsys, monkeypatch, "convert", root, tmp_path / "conv", "--to", "native")
    assert code == 0, output
    pytest.importorskip("torch")
    from telecorder.loaders import TorchDataset

    ds = TorchDataset(root, image_size=(32, 40), horizon=2, normalize="none")
    assert all(isinstance(ds[i]["language_instruction"], str) for i in range(len(ds)))
