"""``info``, ``stats``, ``view`` and ``export`` on an RLDS dataset written by our RLDS writer (which
needs TensorFlow: these tests run in the TensorFlow pytest process). Reading it needs no TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np
import pytest

pytest.importorskip("pygame")
if importlib.util.find_spec("tensorflow_datasets") is None:  # found, not imported: collection stays TF-free
    pytest.skip("the rlds extra (tensorflow-datasets) is not installed", allow_module_level=True)

from conftest import make_info, write_dataset
from test_foreign_browse import LENGTHS, TASK, cli, snapshot

from telecorder.converters.pipeline import ConvertOptions, convert
from telecorder.datasets.dataset import Dataset
from telecorder.viewers.browser import EpisodeBrowser

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def rlds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("foreign_tf")
    native = base / "native"
    write_dataset(native, make_info(cameras=("front", "wrist")), LENGTHS, task=TASK)
    out = base / "rlds"
    convert(native, out, ConvertOptions(to="rlds"))
    return native, out


def test_info_stats_view_export_on_our_rlds(rlds, capsys, tmp_path):
    native, root = rlds
    before = snapshot(root)
    code, out, err = cli(capsys, "info", root, "--json", "--episodes")
    assert code == 0, err
    s = json.loads(out)
    assert (s["format"], s["episodes"], s["frames"]) == ("rlds", 3, sum(LENGTHS))
    assert s["fps"] == 30.0 and "fps" not in s["notes"]  # our sidecar keeps the real rate
    assert [e["length"] for e in s["episode_list"]] == LENGTHS and s["tasks"] == {TASK: 3}
    assert s["features"]["action"]["names"] == ["j0", "j1", "j2", "j3"]
    assert s["camera_storage"] == {"front": "jpeg", "wrist": "jpeg"}

    code, out, err = cli(capsys, "stats", root, "--json")
    assert code == 0, err
    report = json.loads(out)
    want = Dataset.open(native).stats().summary()
    assert report["computed"]
    for key in ("mean", "std", "min", "max", "q01", "q99"):
        np.testing.assert_allclose(report["features"]["action"][key], want["action"][key], rtol=1e-6, atol=1e-7)

    b = EpisodeBrowser(root, episode=1, fmt="rlds")
    try:
        b.seek(3)
        state = b.view_state()
        assert abs(float(state.cameras[0].frame[..., 0].mean()) - 21) < 3.5
        assert state.metadata["task"] == TASK and state.episode_count == 3
    finally:
        b.close()
    code, _, err = cli(capsys, "view", root, "--episode", "2", "--screenshot", tmp_path / "v.png")
    assert code == 0, err
    code, out, err = cli(capsys, "export", root, "--episode", "1", "--mp4", tmp_path / "e.mp4",
                         "--contact-sheet", tmp_path / "e.png")
    assert code == 0 and f"({LENGTHS[1]} frames)" in out, err
    assert snapshot(root) == before
