"""The root ``sim`` attribute of ALOHA output: ACT reads it to decide how actions line up.

ACT's ``EpisodicDataset.__getitem__`` (tonyzhaozh/act@742c753 and MarkFzp/act-plus-plus@26bab07,
``utils.py``): ``if is_sim: action = root['/action'][start_ts:]`` else
``root['/action'][max(0, start_ts - 1):]`` ("hack, to make timesteps more aligned", for a real
follower lagging its leader). A simulated recording written with ``sim`` False trains on actions
shifted by one step.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_info, write_dataset

from telecorder import cli
from telecorder.converters.base import SIDECAR
from telecorder.datasets.features import CLOCK_SIMULATION

LENGTHS = [5, 4]


def _source(root: Path, robot_type: str, clock: str | None = None) -> Path:
    info = make_info(cameras=("front",), robot_type=robot_type)
    if clock is not None:
        info = dataclasses.replace(info, extra={**info.extra, "clock": clock})
    write_dataset(root, info, LENGTHS)
    return root


def _sim_attrs(folder: Path) -> list[bool]:
    files = sorted(folder.glob("episode_*.hdf5"))
    assert len(files) == len(LENGTHS)
    out = []
    for path in files:
        with h5py.File(path, "r") as f:
            out.append(bool(f.attrs["sim"]))
    return out


def _act_chunk_start(path: Path, start_ts: int) -> np.ndarray:
    # ACT's slice of the actions for an observation at start_ts (see the module docstring).
    with h5py.File(path, "r") as f:
        is_sim = f.attrs["sim"]
        return f["/action"][start_ts:] if is_sim else f["/action"][max(0, start_ts - 1):]


@pytest.mark.parametrize(
    ("robot_type", "clock", "want"),
    [
        ("telecorder_sim_arm", None, True),  # the built-in sim arm, recorded in real time
        ("mujoco:my_arm", None, True),  # another MuJoCo model
        ("test_arm", CLOCK_SIMULATION, True),  # any robot on simulated time
        ("test_arm", None, False),  # a real robot on the wall clock
        ("emulated_arm", None, False),  # the Dynamixel emulator stands in for real servos
    ],
)
def test_sim_attribute_follows_the_source(tmp_path: Path, robot_type: str, clock: str | None, want: bool) -> None:
    src = _source(tmp_path / "src", robot_type, clock)
    assert cli.main(["convert", str(src), str(tmp_path / "act"), "--to", "aloha"]) == 0
    assert _sim_attrs(tmp_path / "act") == [want] * len(LENGTHS)
    side = json.loads((tmp_path / "act" / SIDECAR).read_text())
    assert side["sim"]["value"] is want and side["sim"]["why"]
    # What ACT then trains on: the recorded command of the observed step in sim, the one before otherwise.
    with h5py.File(tmp_path / "act" / "episode_0.hdf5", "r") as f:
        actions = f["/action"][()]
    np.testing.assert_array_equal(_act_chunk_start(tmp_path / "act" / "episode_0.hdf5", 2)[0], actions[2 if want else 1])


@pytest.mark.parametrize(("robot_type", "flag", "want"), [
    ("telecorder_sim_arm", "--no-aloha-sim", False),
    ("test_arm", "--aloha-sim", True),
])
def test_flag_overrides_the_source(tmp_path: Path, robot_type: str, flag: str, want: bool) -> None:
    src = _source(tmp_path / "src", robot_type)
    assert cli.main(["convert", str(src), str(tmp_path / "act"), "--to", "aloha", flag]) == 0
    assert _sim_attrs(tmp_path / "act") == [want] * len(LENGTHS)
    assert json.loads((tmp_path / "act" / SIDECAR).read_text())["sim"] == {"value": want, "why": "set by the caller"}


def test_sharded_conversion_keeps_the_flag(tmp_path: Path) -> None:
    src = _source(tmp_path / "src", "telecorder_sim_arm")
    assert cli.main(["convert", str(src), str(tmp_path / "act"), "--to", "aloha", "--workers", "2",
                     "--shard-episodes", "1"]) == 0
    assert _sim_attrs(tmp_path / "act") == [True] * len(LENGTHS)
    assert json.loads((tmp_path / "act" / SIDECAR).read_text())["sim"]["value"] is True


def test_flag_only_for_aloha_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _source(tmp_path / "src", "telecorder_sim_arm")
    assert cli.main(["convert", str(src), str(tmp_path / "out"), "--to", "native", "--aloha-sim"]) == 2
    err = capsys.readouterr().err
    assert "--aloha-sim" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_aloha_source_keeps_its_own_attribute(tmp_path: Path) -> None:
    from telecorder.converters.aloha import AlohaWriter, recorded_in_sim

    # ACT's record_sim_episodes.py says sim=True; a real ALOHA recording says False, whatever its robot.
    info = make_info(cameras=("front",), robot_type="aloha")
    assert recorded_in_sim(dataclasses.replace(info, extra={"sim": True}))[0] is True
    sim_arm = make_info(robot_type="telecorder_sim_arm")
    assert recorded_in_sim(dataclasses.replace(sim_arm, extra={"sim": False}))[0] is False
    assert AlohaWriter(tmp_path / "a", dataclasses.replace(info, extra={"sim": True})).sim is True
    assert AlohaWriter(tmp_path / "b", dataclasses.replace(info, extra={"sim": True}), sim=False).sim is False
