"""The fuzz campaign (benchmarks/fuzz_inputs.py) on a small deterministic slice, and the foreign
readers it found crashing (ALOHA, robomimic, VR pose streams, calibration files), each reduced to
one input that gave a traceback before and gives one line naming the file now."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_info, write_dataset

from telecorder import cli
from telecorder.collect.devices.vr.pose_stream import (
    ControllerSample,
    PoseStreamError,
    load_pose_stream,
    write_pose_stream,
)
from telecorder.collect.dynamixel.calibration import (
    ArmCalibration,
    CalibrationError,
    PoseFile,
    calibrate,
)
from telecorder.errors import TelecorderError

CAMPAIGN = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_inputs.py"

# Formats whose every class of damage the full campaign found handled (0 tracebacks and 0 ValueErrors
# over --count 2000, seeds 0-2: the native store; LeRobot v2/v3 and RLDS restricted to those three).
CI_FORMATS = "native,aloha,robomimic,pose_stream,calibration,tasks_csv,lerobot3,lerobot2,rlds,policy"


def test_campaign_slice_has_no_traceback_no_outside_read_and_no_changed_input(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, str(CAMPAIGN), "--count", "90", "--seed", "20", "--formats", CI_FORMATS, "--jobs", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert out.exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(out.read_text())
    report = proc.stdout[-6000:]
    assert summary["inputs"] == 90 and summary["runs"] >= 90, report
    assert set(summary["per_format"]) == set(CI_FORMATS.split(",")), report
    assert summary["tracebacks"] == 0, report
    assert summary["outside_reads"] == 0, report
    assert summary["changed_inputs"] == 0, report
    assert summary["peak_rss_mb"] < 2048, report
    assert proc.returncode == 0, report


def test_campaign_plan_is_deterministic_by_seed(tmp_path: Path) -> None:
    sys.path.insert(0, str(CAMPAIGN.parent))
    try:
        import fuzz_inputs
    finally:
        sys.path.remove(str(CAMPAIGN.parent))
    seeds = {"tasks_csv": tmp_path / "t", "pose_stream": tmp_path / "p"}
    for p in seeds.values():
        p.mkdir()
    (seeds["tasks_csv"] / "tasks.csv").write_text("0,x\n")
    (seeds["pose_stream"] / "session.jsonl").write_text("{}\n")
    a = fuzz_inputs.plan_cases(40, 3, ["tasks_csv", "pose_stream"], seeds)
    assert a == fuzz_inputs.plan_cases(40, 3, ["tasks_csv", "pose_stream"], seeds)
    assert a != fuzz_inputs.plan_cases(40, 4, ["tasks_csv", "pose_stream"], seeds)
    assert {c["format"] for c in a} == {"tasks_csv", "pose_stream"}


# -- ALOHA and robomimic: damaged HDF5 is one ConversionError naming the file ---------------------


def _convert(src: Path, dst: Path, to: str, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["convert", str(src), str(dst), "--to", to, *extra])
    captured = capsys.readouterr()
    return code, captured.err


@pytest.fixture
def exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    write_dataset(tmp_path / "native", make_info(cameras=("front",)), [6, 5])
    out = {}
    for fmt, extra in (("aloha", ("--compress",)), ("robomimic", ())):
        code, err = _convert(tmp_path / "native", tmp_path / fmt, fmt, *extra, capsys=capsys)
        assert code == 0, err
        out[fmt] = tmp_path / fmt
    return out


def _damage_signature(path: Path, signature: bytes) -> None:
    """Overwrite every HDF5 structure with this signature (B-tree TREE, symbol table SNOD, heap HEAP)."""
    data = path.read_bytes()
    assert signature in data
    path.write_bytes(data.replace(signature, b"XXXX"))


@pytest.mark.parametrize("signature", [b"TREE", b"SNOD", b"HEAP"])
@pytest.mark.parametrize("fmt", ["aloha", "robomimic"])
def test_damaged_foreign_hdf5_is_one_line_naming_the_file(exported: dict[str, Path], tmp_path: Path, fmt: str,
                                                          signature: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    file = exported[fmt] / ("episode_1.hdf5" if fmt == "aloha" else next(
        p.name for p in exported[fmt].iterdir() if p.suffix == ".hdf5"))
    _damage_signature(file, signature)
    code, err = _convert(exported[fmt], tmp_path / "back", "native", "--from", fmt, capsys=capsys)
    assert code == 2, err
    assert "Traceback" not in err and file.name in err.replace("\n", "")


def test_aloha_jpeg_declaring_a_huge_frame_is_not_decoded(exported: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    file = exported["aloha"] / "episode_0.hdf5"
    with h5py.File(file, "r+") as f:
        rows = f["observations/images/front"]
        row = rows[2]
        sof = bytes(row).find(b"\xff\xc0")
        assert sof > 0
        row[sof + 5:sof + 9] = [0x75, 0x30, 0x75, 0x30]  # 30000 x 30000
        rows[2] = row
    code, err = _convert(exported["aloha"], tmp_path / "back", "native", capsys=capsys)
    assert code == 2
    assert "30000x30000" in err.replace("\n", "") and "step 2" in err.replace("\n", "")


def test_foreign_timing_dataset_of_another_type_is_named(exported: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    file = next(p for p in exported["robomimic"].iterdir() if p.suffix == ".hdf5")
    with h5py.File(file, "r+") as f:
        found: list[str] = []
        f.visit(lambda name: found.append(name) if "frame_index" in name and isinstance(f[name], h5py.Dataset)
                else None)
        name = found[0]
        n = f[name].shape[0]
        del f[name]
        f[name] = np.array([b"abc"] * n)
    code, err = _convert(exported["robomimic"], tmp_path / "back", "native", capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert "frame_index" in err.replace("\n", "")


@pytest.mark.parametrize("kind", ["image", "numeric"])
def test_foreign_dataset_of_the_right_shape_but_wrong_type_is_named(exported: dict[str, Path], tmp_path: Path,
                                                                    kind: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    file = next(p for p in exported["robomimic"].iterdir() if p.suffix == ".hdf5")
    with h5py.File(file, "r+") as f:
        name = "data/demo_1/" + ("obs/front_image" if kind == "image" else "actions")
        if name not in f:
            name = next(f"data/demo_1/obs/{k}" for k in f["data/demo_1/obs"] if "image" in k)
        shape = f[name].shape
        del f[name]
        f[name] = np.full(shape, np.nan, np.float16) if kind == "image" else np.full(shape, b"x")
    code, err = _convert(exported["robomimic"], tmp_path / "back", "native", capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert name.rsplit("/", 1)[-1] in err.replace("\n", "")


def test_metadata_int_beyond_int64_converts(exported: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    sidecar = exported["robomimic"] / "telecorder_meta.json"
    meta = json.loads(sidecar.read_text())
    demo = next(iter(meta["demos"]))
    meta["demos"][demo]["metadata"]["source_episode_index"] = 2**64
    sidecar.write_text(json.dumps(meta))
    code, err = _convert(exported["robomimic"], tmp_path / "back", "native", capsys=capsys)
    assert code == 0, err


# -- VR pose streams ------------------------------------------------------------------------------


def _stream(path: Path) -> Path:
    write_pose_stream(path, [ControllerSample(t=i / 10, hand="right", pose=np.eye(4)) for i in range(3)])
    return path


@pytest.mark.parametrize("damage", ["folder", "missing", "not utf-8", "nan squeeze", "inf trigger"])
def test_bad_pose_stream_is_one_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s.jsonl"
    if damage == "folder":
        path.mkdir()
    elif damage == "not utf-8":
        _stream(path).write_bytes(path.read_bytes() + b'{"t": 1, "right": "\xff\xfe"}\n')
    elif damage in ("nan squeeze", "inf trigger"):
        key, value = ("squeeze", "NaN") if damage == "nan squeeze" else ("trigger", "Infinity")
        lines = _stream(path).read_text().splitlines()
        lines[1] = lines[1].replace(f'"{key}": 0.0', f'"{key}": {value}')
        assert value in lines[1]
        path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PoseStreamError, match=rf"^{path}") as info:
        load_pose_stream(path)
    assert isinstance(info.value, TelecorderError) and isinstance(info.value, ValueError)
    if damage in ("not utf-8", "nan squeeze", "inf trigger"):
        assert str(info.value).startswith(f"{path}:{4 if damage == 'not utf-8' else 2}:")


# -- calibration and pose files -------------------------------------------------------------------


def _calibration(path: Path) -> dict:
    calibrate("follower", [1, 2, 3], ["a", "b"], [0.1, 0.2], [0.0, 0.0], gripper_open_raw=1.0,
              gripper_closed_raw=0.0).save(path)
    return json.loads(path.read_text())


@pytest.mark.parametrize("edit", [
    lambda d: [d],
    lambda d: d["joints"][0].update(offset=math.nan),
    lambda d: d["joints"][0].update(offset="0.5"),
    lambda d: d["joints"][1].update(sign=0),
    lambda d: d["joints"][1].update(id=10**9),
    lambda d: d["gripper"].update(open=math.inf),
    lambda d: d.update(known_pose=[0.0, "x"]),
], ids=["list", "nan-offset", "text-offset", "sign-0", "huge-id", "inf-gripper", "text-pose"])
def test_bad_calibration_file_is_a_calibration_error(tmp_path: Path, edit) -> None:
    path = tmp_path / "cal.json"
    d = _calibration(path)
    d = edit(d) or d
    path.write_text(json.dumps(d))
    with pytest.raises(CalibrationError, match=str(path)):
        ArmCalibration.load(path)


def test_unreadable_calibration_path_is_a_calibration_error(tmp_path: Path) -> None:
    (tmp_path / "cal.json").mkdir()
    with pytest.raises(CalibrationError, match="cannot be read"):
        ArmCalibration.load(tmp_path / "cal.json")


@pytest.mark.parametrize("content", [
    [1, 2],
    {"known_pose": [0.0, math.nan]},
    {"known_pose": [0.0, 0.0], "signs": [1, math.inf]},
    {"known_pose": [0.0, 0.0], "range": {"min": [-1], "max": [1, 1]}},
    {"known_pose": [0.0, 0.0], "names": ["a"]},
    {"known_pose": [0.0, 0.0], "gripper": {"open": "NaN", "closed": 0}},
], ids=["list", "nan", "sign-infinite", "short-range", "short-names", "nan-gripper"])
def test_bad_pose_file_is_a_calibration_error(tmp_path: Path, content) -> None:
    path = tmp_path / "pose.json"
    path.write_text(json.dumps(content))
    with pytest.raises(CalibrationError, match=str(path)):
        PoseFile.load(path)
