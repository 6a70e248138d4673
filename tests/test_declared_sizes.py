"""Sizes declared by the input are bounded before anything is allocated (issue 20, section 3).

Each command runs in a child process whose address space is capped at 2 GiB
(``RLIMIT_AS``, as ``ulimit -v`` does): what a file or an argument declares (an episode
range, a JPEG header, a path template's field width, a policy's layer sizes) must be
compared with what the input can hold and with a documented limit first, so the command
ends with one readable line and exit status 2 (``doctor`` reports the damage as a finding),
never a MemoryError or a multi-gigabyte allocation. 2 GiB is room for the imports (numpy,
h5py, OpenCV, pyarrow; torch for policies: about 0.3 GB resident, under 1.5 GB of address
space here) and far below what the bad inputs ask for (2.7 GB for a 30000x30000 frame, 64 GB
for a 10^9-wide layer, 800 GB for the range list).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_info, write_dataset

from telecorder.datasets.images import encode_image

LIMIT_GB = 2.0

_CHILD = "import resource, sys\nlimit = int({gb} * 2**30)\nresource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"


def run_limited(body: str, gb: float = LIMIT_GB) -> subprocess.CompletedProcess[str]:
    """``body`` (Python) in a child process with ``gb`` GiB of address space."""
    env = {**os.environ, "COLUMNS": "400", "TELECORDER_DEBUG": ""}
    code = _CHILD.format(gb=gb) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def cli_limited(*args: str | Path) -> subprocess.CompletedProcess[str]:
    argv = [str(a) for a in args]
    return run_limited(f"from telecorder.cli import main\nsys.exit(main({argv!r}))")


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    """The command's single error line, after checking the exit status and the absence of a traceback."""
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "MemoryError" not in out, out[-3000:]
    assert proc.returncode == code, out[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sizes") / "ds"
    write_dataset(root, make_info(cameras=("front",)), [5, 6, 4])
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- episode ranges ------------------------------------------------------------------------


HUGE = "0-999999999"  # a billion numbers: 8 GB as a list of ints, before any check
TOO_BIG = "0-99999999999"


@pytest.mark.parametrize(("command", "needle"), [
    (["convert", "{ds}", "{out}", "--to", "native", "--episodes", HUGE], "no episode(s) 3-12 ..."),
    (["convert", "{ds}", "{out}", "--to", "native", "--episodes", TOO_BIG], "beyond the largest episode number"),
    (["convert", "{ds}", "{out}", "--to", "lerobot", "--episodes", "1,5-999999999"], "no episode(s) 5-14 ..."),
    (["edit", "delete-episodes", "{ds}", HUGE, "--out", "{out}"], "no episode(s) 3-12 ... to delete"),
    (["edit", "delete-episodes", "{ds}", TOO_BIG, "--out", "{out}"], "beyond the largest episode number"),
    (["edit", "set-task", "{ds}", "--episodes", HUGE, "relabelled", "--out", "{out}"], "to relabel"),
    (["edit", "set-task", "{ds}", "--from-file", "{csv}", "--out", "{out}"], "tasks.csv:2: "),
    (["edit", "set-task", "{ds}", "--from-file", "{csv}"], "has no episode 3"),
], ids=["convert", "convert-too-big", "convert-lerobot", "delete", "delete-too-big", "set-task", "tasks-csv",
                  "tasks-csv-in-place"])
def test_episode_ranges_are_checked_against_the_dataset_before_they_are_expanded(
        ds: Path, tmp_path: Path, command: list[str], needle: str) -> None:
    csv = tmp_path / "tasks.csv"
    csv.write_text("0,pick up\n1-999999999,stack\n")
    before = tree_digest(ds)
    out = tmp_path / "out"
    proc = cli_limited(*(c.format(ds=ds, out=out, csv=csv) for c in command))
    one_line_error(proc, needle)
    assert tree_digest(ds) == before and not out.exists()


def test_range_text_stays_ranges_until_checked() -> None:
    from telecorder.datasets.ranges import MAX_EPISODE_NUMBER, EpisodeRanges, parse_episode_ranges

    r = parse_episode_ranges("7,0-3,2")
    assert r == [7, 0, 1, 2, 3, 2] and len(r) == 6 and r[4] == 3 and 2 in r and 5 not in r
    assert r.select(range(10)) == [7, 0, 1, 2, 3]  # each once, in the order given
    big = parse_episode_ranges(f"0-{MAX_EPISODE_NUMBER}")
    assert len(big) == MAX_EPISODE_NUMBER + 1 and big.absent(range(3)) == list(range(3, 13))
    assert EpisodeRanges([(5, 5)]).absent([]) == [5]


def test_stats_episodes_range_is_bounded(ds: Path, tmp_path: Path) -> None:
    root = _copy(ds, tmp_path / "ds")
    meta = json.loads((root / "meta" / "stats.json").read_text())
    (root / "meta" / "stats.json").write_text(json.dumps({**meta, "episodes": "0-99999999"}))
    one_line_error(cli_limited("stats", root), "stats.json", "99999999")


# -- task files ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "needle"), [
    ('0,"pick up the cube\n1,stack the blocks\n', "tasks.csv:1: not a CSV row"),
    ('0,pick up\n1,"stack, then push\n2,open the drawer\n', "tasks.csv:2: not a CSV row"),
    ("0," + "x" * 140_000 + "\n", "tasks.csv:1: the line is 140002 characters long"),
], ids=["unterminated-first", "unterminated-middle", "field-over-csv-limit"])
def test_task_file_quote_and_field_size_errors_name_the_line(ds: Path, tmp_path: Path, text: str,
                                                           needle: str) -> None:
    root = _copy(ds, tmp_path / "ds")
    csv = tmp_path / "tasks.csv"
    csv.write_text(text)
    before = tree_digest(root)
    one_line_error(cli_limited("edit", "set-task", root, "--from-file", csv), needle)
    assert tree_digest(root) == before


# -- images: the header's size before the decoder allocates it -------------------------------


def _with_size(blob: np.ndarray, h: int, w: int) -> bytes:
    """JPEG/PNG bytes whose header claims ``h`` x ``w`` (the pixel data stays the small original)."""
    b = bytearray(blob.tobytes())
    if b[:4] == b"\x89PNG":
        b[16:20], b[20:24] = w.to_bytes(4, "big"), h.to_bytes(4, "big")
        return bytes(b)
    i = 2
    while b[i + 1] not in (0xC0, 0xC2):
        i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
    b[i + 5:i + 7], b[i + 7:i + 9] = h.to_bytes(2, "big"), w.to_bytes(2, "big")
    return bytes(b)


@pytest.fixture(scope="module")
def huge_frame_ds(ds: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _copy(ds, tmp_path_factory.mktemp("huge") / "ds")
    frame = np.zeros((48, 64, 3), np.uint8)
    bad = np.frombuffer(_with_size(encode_image(frame, "jpeg"), 30000, 30000), np.uint8)
    with h5py.File(root / "episodes" / "episode_000000.h5", "r+") as f:
        f["observation/images/front"][0] = bad
    return root


def test_doctor_reports_a_frame_whose_header_claims_30000x30000(huge_frame_ds: Path) -> None:
    proc = cli_limited("doctor", huge_frame_ds)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "MemoryError" not in out, out[-3000:]
    assert proc.returncode == 1, out[-3000:]  # doctor's "errors found"
    assert "declares 30000x30000 pixels" in out and "episode_000000.h5" in out


def test_convert_refuses_a_frame_whose_header_claims_30000x30000(huge_frame_ds: Path, tmp_path: Path) -> None:
    proc = cli_limited("convert", huge_frame_ds, tmp_path / "out", "--to", "lerobot")
    one_line_error(proc, "declares 30000x30000 pixels", "episode_000000.h5")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option", ["--contact-sheet", "--gif"])
def test_exports_show_a_frame_whose_header_claims_30000x30000_as_corrupt(huge_frame_ds: Path, tmp_path: Path,
                                                                        option: str) -> None:
    out = tmp_path / ("sheet.png" if option == "--contact-sheet" else "clip.gif")
    proc = cli_limited("export", huge_frame_ds, "--episode", "0", option, out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert out.is_file()


def test_loader_refuses_a_frame_whose_header_claims_30000x30000(huge_frame_ds: Path) -> None:
    proc = run_limited(f"""
        from telecorder.errors import DatasetError
        from telecorder.loaders.torch_dataset import TorchDataset
        try:
            TorchDataset({str(huge_frame_ds)!r}, image_size=(24, 32))[0]
        except DatasetError as e:
            print("REFUSED", e)
    """)
    assert proc.returncode == 0 and "REFUSED" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]
    assert "declares 30000x30000 pixels" in proc.stdout


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_decoders_check_the_header_first(encoding: str) -> None:
    from telecorder.datasets.images import MAX_IMAGE_PIXELS, check_header, header_size

    blob = encode_image(np.zeros((48, 64, 3), np.uint8), encoding)
    assert header_size(blob) == (48, 64)
    huge = _with_size(blob, 30000, 30000)
    assert header_size(huge) == (30000, 30000) and MAX_IMAGE_PIXELS < 30000 * 30000
    proc = run_limited(f"""
        from telecorder.errors import DatasetError
        from telecorder.datasets.images import decode_image
        from telecorder.loaders.frames import decode_chw
        for call in (lambda: decode_image({huge!r}, "x"), lambda: decode_chw({huge!r}, (24, 32), where="x"),
                     lambda: decode_chw({huge!r}, None, stored_hw=(48, 64), where="x")):
            try:
                call()
            except DatasetError as e:
                print("REFUSED", e)
    """)
    assert proc.stdout.count("REFUSED x: the stored image declares 30000x30000") == 3, proc.stdout + proc.stderr
    with pytest.raises(Exception, match="declares 64x48 pixels, but the feature holds 32x24"):
        check_header(blob, "x", (24, 32))


# -- LeRobot path templates -------------------------------------------------------------------


@pytest.fixture(scope="module")
def lerobot_ds(ds: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lerobot") / "lr"
    from telecorder.cli import main

    assert main(["convert", str(ds), str(out), "--to", "lerobot"]) == 0
    return out


@pytest.mark.parametrize(("key", "template"), [
    ("data_path", "data/chunk-{chunk_index:099999999d}/file-{file_index:03d}.parquet"),
    ("video_path", "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:0999999999d}.mp4"),
])
def test_lerobot_path_template_cannot_size_its_output(lerobot_ds: Path, tmp_path: Path, key: str,
                                                      template: str) -> None:
    root = _copy(lerobot_ds, tmp_path / "lr")
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info.get(key)
    (root / "meta" / "info.json").write_text(json.dumps({**info, key: template}))
    one_line_error(cli_limited("convert", root, tmp_path / "out", "--to", "native"), key, "width or precision")
    proc = run_limited(f"""
        from telecorder.errors import TelecorderError
        from telecorder.loaders.torch_dataset import TorchDataset
        try:
            TorchDataset({str(root)!r}, image_size=(24, 32))[0]
        except TelecorderError as e:
            print("REFUSED", e)
    """)
    assert proc.returncode == 0 and "REFUSED" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]
    assert key in proc.stdout and "width or precision" in proc.stdout


# -- policy checkpoints -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from telecorder.actions.normalize import Normalizer
    from telecorder.policies.base import PolicySpec
    from telecorder.policies.bc import BCConfig, BCModel, BCPolicy
    from telecorder.policies.checkpoint import save_bc_policy

    cfg = BCConfig(state_dim=4, action_dim=2, horizon=3, hidden=32, state_hidden=16, head_layers=1)
    policy = BCPolicy(BCModel(cfg), PolicySpec(action_dim=2, horizon=3), Normalizer("none"))
    return save_bc_policy(tmp_path_factory.mktemp("policy") / "bc", policy)


def _edited_policy(src: Path, dst: Path, section: str | None, key: str, value: object) -> Path:
    d = _copy(src, dst)
    meta = json.loads((d / "policy.json").read_text())
    (meta if section is None else meta[section])[key] = value
    (d / "policy.json").write_text(json.dumps(meta))
    return d


def test_policy_with_a_billion_wide_layer_is_refused_before_building(policy_dir: Path, tmp_path: Path) -> None:
    d = _edited_policy(policy_dir, tmp_path / "p", "model", "hidden", 10**9)
    one_line_error(cli_limited("eval", d, "--episodes", "1"), "policy.json", "model.hidden", "65536")


def test_policy_config_larger_than_its_weights_allocates_nothing(policy_dir: Path, tmp_path: Path) -> None:
    # Within the documented limits, but not what the weights file holds: the shapes are compared
    # on torch's meta device, so the 16384 x 16384 state layer (1 GiB of float32) is never allocated.
    d = _edited_policy(policy_dir, tmp_path / "p", "model", "state_hidden", 16384)
    proc = run_limited(f"""
        import resource
        from telecorder.policies.base import PolicyError
        from telecorder.policies.checkpoint import load_policy_dir
        load_policy_dir({str(policy_dir)!r})  # the real one first: what loading costs, torch included
        print("BASE_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        try:
            load_policy_dir({str(d)!r})
        except PolicyError as e:
            print("REFUSED", e)
        print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    out = proc.stdout + proc.stderr
    assert "REFUSED" in out and "does not match the model config" in out, out[-3000:]
    base = int(out.split("BASE_MB")[1].split()[0])
    peak = int(out.split("PEAK_MB")[1].split()[0])
    # The peak is a high-water mark: the 1 GiB layer, had it been built, would raise it by ~1024 MB.
    assert peak - base < 256, f"peak RSS {base} -> {peak} MB: the declared layers were allocated"


@pytest.mark.parametrize(("section", "key", "value", "needle"), [
    ("spec", "history", 10**9, "spec.history is 1000000000"),
    ("model", "groups", 0, "model.groups is 0"),
    (None, "weights", "x", "'weights' must be a JSON object"),
    (None, "training", [1, 2], "'training' must be a JSON object"),
    ("model", "channels", "abc", "model.channels must be a list"),
    ("model", "hidden", True, "model.hidden must be a whole number"),
], ids=["history", "groups-0", "weights-text", "training-list", "channels-text", "hidden-bool"])
def test_policy_json_sizes_and_types_give_one_policy_error(policy_dir: Path, tmp_path: Path, section: str | None,
                                                          key: str, value: object, needle: str) -> None:
    from telecorder.policies.base import PolicyError
    from telecorder.policies.checkpoint import load_policy_dir

    d = _edited_policy(policy_dir, tmp_path / "p", section, key, value)
    with pytest.raises(PolicyError) as info:
        load_policy_dir(d)
    msg = str(info.value)
    assert str(d / "policy.json") in msg and needle in msg and "\n" not in msg, msg


def test_policy_limits_leave_real_checkpoints_alone(policy_dir: Path, tmp_path: Path) -> None:
    # A guard, not a reproduction: an 8192x8192 image size with no camera assembles nothing.
    from telecorder.policies.checkpoint import load_policy_dir

    d = _edited_policy(policy_dir, tmp_path / "p", "spec", "image_size", [8192, 8192])
    assert load_policy_dir(d).spec.image_size == (8192, 8192)
