"""``telecorder doctor`` on foreign formats: the shared samples (their real findings), every format
our writers produce (clean), then each damaged the way downloads and hand edits damage them, with
the specific finding asserted; nothing is ever written into the dataset checked."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_info, synthetic_frame, write_dataset

from telecorder import cli
from telecorder.converters.foreign_doctor import check_foreign, check_foreign_episode, doctor_format
from telecorder.converters.lerobot.reader import LeRobotReader
from telecorder.converters.video import VideoEncoder
from telecorder.datasets.doctor import EpisodeCheck
from telecorder.datasets.images import encode_image

SAMPLES = Path(__file__).resolve().parents[2] / "shared/samples"
G1 = SAMPLES / "YifanTian07_G1-policy-train"
BRIDGE = SAMPLES / "octo-models_octo/tests/debug_dataset/bridge_dataset/1.0.0"
LENGTHS = [12, 9, 14]
FPS = 30.0


# -- helpers ----------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry's size, mtime and content hash: what 'nothing was written' compares."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns, digest)
    return out


@contextmanager
def read_only(root: Path) -> Iterator[Path]:
    """``root`` with no write permission anywhere (restored afterwards for the cleanup)."""
    modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")]}
    for p, mode in modes.items():
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield root
    finally:
        for p, mode in sorted(modes.items(), key=lambda kv: len(kv[0].parts)):
            p.chmod(mode)


def doctor(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, dict[str, Any] | str]:
    """``telecorder doctor PATH ARGS`` in this process: exit code, the JSON report with --json (else the text)."""
    capsys.readouterr()
    code = cli.main(["doctor", str(path), *args])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text, text
    return code, (json.loads(out.out) if "--json" in args and code in (0, 1) else text)


def findings(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, list[str], list[str]]:
    before = snapshot(path)
    code, report = doctor(capsys, path, "--json", *args)
    assert snapshot(path) == before
    assert isinstance(report, dict)
    return code, report["errors"], report["warnings"]


def one_line(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> str:
    """A refusal: exit 2 and one error line."""
    code, text = doctor(capsys, path, *args)
    assert code == 2, text
    lines = [line for line in str(text).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    return lines[0]


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, edit: Callable[[Any], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def set_column(path: Path, name: str, values: pa.Array) -> None:
    table = pq.read_table(path)
    table = table.set_column(table.column_names.index(name), name, values)
    pq.write_table(table, path)


def convert(src: Path, dst: Path, to: str, *args: str) -> Path:
    assert cli.main(["convert", str(src), str(dst), "--to", to, *args]) == 0
    return dst


def v2_from_v3(v3: Path, out: Path, version: str) -> Path:
    """Our LeRobot v3.0 output laid out as v2.0/v2.1 (one Parquet file and one mp4 per episode),
    with the metadata LeRobot writes for that version: stats.json (v2.0), episodes_stats.jsonl (v2.1)."""
    reader = LeRobotReader(v3)
    (out / "meta").mkdir(parents=True)
    info = json.loads((v3 / "meta/info.json").read_text())
    info.update(codebase_version=version, chunks_size=1000,
                data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                video_path="videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4")
    for key in ("data_files_size_in_mb", "video_files_size_in_mb"):
        info.pop(key, None)
    (out / "meta/info.json").write_text(json.dumps(info))
    data = pq.read_table(v3 / "data/chunk-000/file-000.parquet")
    episodes = pq.read_table(v3 / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    lines, stats = [], []
    for row in episodes:
        i = row["episode_index"]
        rows = data.filter(pa.compute.equal(data["episode_index"], i))
        (out / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, out / f"data/chunk-000/episode_{i:06d}.parquet")
        ep = reader.read_episode(i)
        for cam, frames in ep.images.items():
            path = out / f"videos/chunk-000/observation.images.{cam}/episode_{i:06d}.mp4"
            with VideoEncoder(path, frames[0].shape[1], frames[0].shape[0], FPS) as enc:
                for frame in frames:
                    enc.append(frame)
        lines.append({"episode_index": i, "tasks": row["tasks"], "length": row["length"]})
        block: dict[str, dict[str, Any]] = {}
        for column, value in row.items():
            if column.startswith("stats/"):
                name, _, key = column.removeprefix("stats/").rpartition("/")
                block.setdefault(name, {})[key] = value
        stats.append({"episode_index": i, "stats": block})
    (out / "meta/episodes.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    tasks = pq.read_table(v3 / "meta/tasks.parquet").to_pylist()
    (out / "meta/tasks.jsonl").write_text("".join(
        json.dumps({"task_index": t["task_index"], "task": t.get("task") or t.get("__index_level_0__")}) + "\n"
        for t in tasks))
    if version == "v2.1":
        (out / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
    else:
        shutil.copy(v3 / "meta/stats.json", out / "meta/stats.json")
    return out


def reencode(path: Path, keep: Callable[[int], bool]) -> None:
    """Write ``path``'s video again with only the frames ``keep`` takes (frame k at k/fps)."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    kept = [f for k, f in enumerate(frames) if keep(k)]
    path.unlink()
    with VideoEncoder(path, kept[0].shape[1], kept[0].shape[0], FPS) as enc:
        for frame in kept:
            enc.append(frame)


# -- datasets --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The synthetic native dataset and what our writers make of it (TensorFlow formats aside)."""
    root = tmp_path_factory.mktemp("foreign_doctor")
    native = root / "native"
    write_dataset(native, make_info(fps=FPS), LENGTHS)
    out = {"native": native}
    for fmt in ("lerobot", "aloha", "robomimic"):
        out[fmt] = convert(native, root / fmt, fmt)
    out["lerobot-v2.0"] = v2_from_v3(out["lerobot"], root / "lerobot-v2.0", "v2.0")
    out["lerobot-v2.1"] = v2_from_v3(out["lerobot"], root / "lerobot-v2.1", "v2.1")
    return out


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "3000")  # rich folds long paths mid-word at 80 columns
    monkeypatch.delenv("TELECORDER_DEBUG", raising=False)


# -- the shared samples ----------------------------------------------------------------------------


@pytest.mark.skipif(not G1.is_dir(), reason=f"LeRobot v2.1 sample not present at {G1}")
def test_g1_sample_reports_the_videos_it_lacks_and_nothing_else(capsys):
    assert doctor_format(G1) == "lerobot"
    code, errors, warnings = findings(capsys, G1)
    assert code == 1 and warnings == []
    # The sample keeps the videos of episodes 1 and 2 only; everything else in it is sound
    # (lengths, the 30 fps grid, its episodes_stats.jsonl against the data, the two AV1 videos).
    video = G1 / "videos/chunk-000/observation.images.cam_high"
    assert errors == [f"{video}/episode_{i:06d}.mp4: video of camera 'cam_high' for episode {i} is missing"
                      for i in range(100) if i not in (1, 2)]
    code, text = doctor(capsys, G1)
    assert code == 1 and f"{G1}: 100 episodes checked, 98 error(s), 0 warning(s)" in str(text)
    assert "│ cam_high │ 30.0 │" in str(text)  # timed from the two videos present
    report = check_foreign(G1, "lerobot", decode_frames="ends")
    ok = [e for e in report.episodes if not e.errors]
    assert [e.index for e in ok] == [1, 2] and [e.steps for e in ok] == [393, 343]
    assert all(e.sync.cameras["cam_high"].repeated == 0 for e in ok)


@pytest.mark.tf
@pytest.mark.skipif(not BRIDGE.is_dir(), reason=f"RLDS sample not present at {BRIDGE}")
def test_bridge_sample_is_ok_as_a_version_folder_and_its_parent(capsys):
    for path in (BRIDGE, BRIDGE.parent):
        assert doctor_format(path) == "rlds"
        code, errors, warnings = findings(capsys, path, "--frames", "all")
        assert (code, errors, warnings) == (0, [], [])
    report = check_foreign(BRIDGE, "rlds")
    assert len(report.episodes) == 50 and {e.steps for e in report.episodes} == {10}


# -- our writers' output passes clean --------------------------------------------------------------


@pytest.mark.parametrize("name", ["lerobot", "lerobot-v2.0", "lerobot-v2.1", "aloha", "robomimic"])
def test_what_our_writers_make_passes_clean_without_being_written(made, name, tmp_path, capsys):
    src = copy(made[name], tmp_path / name)
    with read_only(src):
        for frames in ("none", "ends", "all"):
            code, errors, warnings = findings(capsys, src, "--frames", frames)
            assert (code, errors, warnings) == (0, [], []), frames
    code, text = doctor(capsys, src)
    assert code == 0 and f"{src}: 3 episodes checked, OK, 0 warning(s)" in str(text)
    report = check_foreign(src, doctor_format(src))
    assert [e.steps for e in report.episodes] == LENGTHS
    assert all(e.sync is not None and e.sync.achieved_fps == pytest.approx(FPS) for e in report.episodes)


def test_lerobot_table_lists_the_camera_timing(made, capsys):
    code, text = doctor(capsys, made["lerobot-v2.1"])
    assert code == 0
    lines = str(text).splitlines()
    row = next(line for line in lines if line.startswith("│ front"))
    assert row.split("│")[2].strip() == "30.0"  # the video's own rate, from its frame times


# -- LeRobot damage ----------------------------------------------------------------------------------


def test_deleted_video(made, tmp_path, capsys):
    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    video = v21 / "videos/chunk-000/observation.images.front/episode_000001.mp4"
    video.unlink()
    code, errors, warnings = findings(capsys, v21)
    assert code == 1 and warnings == []
    assert errors == [f"{video}: video of camera 'front' for episode 1 is missing"]

    v3 = copy(made["lerobot"], tmp_path / "v3")
    shared = v3 / "videos/observation.images.front/chunk-000/file-000.mp4"
    shared.unlink()
    _, errors, _ = findings(capsys, v3)
    assert errors == [f"{shared}: video of camera 'front' for episode {i} is missing" for i in range(3)]


def test_zero_byte_video(made, tmp_path, capsys):
    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    video = v21 / "videos/chunk-000/observation.images.front/episode_000000.mp4"
    video.write_bytes(b"")
    code, errors, _ = findings(capsys, v21)
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith(f"{video}: cannot be decoded as video")


def test_truncated_parquet(made, tmp_path, capsys):
    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    data = v21 / "data/chunk-000/episode_000002.parquet"
    data.write_bytes(data.read_bytes()[:300])
    code, errors, warnings = findings(capsys, v21)
    assert code == 1 and warnings == []
    assert len(errors) == 1 and errors[0].startswith(f"{data}: cannot be read as Parquet")
    report = check_foreign(v21, "lerobot")
    assert [bool(e.errors) for e in report.episodes] == [False, False, True]


def test_deleted_parquet_and_length_that_disagrees(made, tmp_path, capsys):
    v20 = copy(made["lerobot-v2.0"], tmp_path / "v20")
    (v20 / "data/chunk-000/episode_000000.parquet").unlink()
    edit_lines = (v20 / "meta/episodes.jsonl").read_text().splitlines()
    row = json.loads(edit_lines[1])
    row["length"] = 10
    edit_lines[1] = json.dumps(row)
    (v20 / "meta/episodes.jsonl").write_text("\n".join(edit_lines) + "\n")
    code, errors, warnings = findings(capsys, v20)
    assert code == 1
    assert errors == [
        f"{v20}/data/chunk-000/episode_000000.parquet: data file of episode 0 is missing",
        f"{v20}/data/chunk-000/episode_000001.parquet: episode 1 has 9 rows, {v20}/meta/episodes.jsonl says length 10",
    ]
    assert warnings == [f"{v20}/meta/info.json: total_frames is 35, the episodes' lengths in "
                        f"{v20}/meta/episodes.jsonl add up to 36"]


def test_nan_in_a_column(made, tmp_path, capsys):
    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    data = v21 / "data/chunk-000/episode_000001.parquet"
    table = pq.read_table(data)
    action = np.array(table["action"].to_pylist(), np.float32)
    action[4, 2] = np.nan
    set_column(data, "action", pa.array(action.tolist(), table.schema.field("action").type))
    code, errors, warnings = findings(capsys, v21)
    assert code == 1 and warnings == []
    assert errors == [f"{data}: action has 1 NaN/inf values (first at step 4)"]

    v3 = copy(made["lerobot"], tmp_path / "v3")
    data = v3 / "data/chunk-000/file-000.parquet"
    table = pq.read_table(data)
    state = np.array(table["observation.state"].to_pylist(), np.float32)
    state[LENGTHS[0] + 3, 0] = np.inf  # episode 1, step 3
    set_column(data, "observation.state", pa.array(state.tolist(), table.schema.field("observation.state").type))
    _, errors, _ = findings(capsys, v3)
    assert errors == [f"{data} episode 1: observation.state has 1 NaN/inf values (first at step 3)"]


def test_wrong_dtype_column(made, tmp_path, capsys):
    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    data = v21 / "data/chunk-000/episode_000000.parquet"
    set_column(data, "action", pa.array(["x"] * LENGTHS[0]))
    code, errors, _ = findings(capsys, v21)
    assert code == 1
    assert errors == [f"{data}: column 'action' holds 12 values (0 null) in 12 rows; meta/info.json declares shape [4]"]
    set_column(data, "action", pa.array([["a", "b", "c", "d"]] * LENGTHS[0]))
    _, errors, _ = findings(capsys, v21)
    assert len(errors) == 1 and errors[0].startswith(f"{data}: column 'action' holds string values that are not "
                                                     "float32 numbers")


def test_fps_changed_in_info_json(made, tmp_path, capsys):
    v3 = copy(made["lerobot"], tmp_path / "v3")
    edit_json(v3 / "meta/info.json", lambda d: d.update(fps=25))
    code, errors, warnings = findings(capsys, v3)
    assert code == 1 and warnings == []
    data = v3 / "data/chunk-000/file-000.parquet"
    assert errors == [
        f"{data} episode {i}: {n - 1} of {n - 1} timestamp steps are off the 25 fps that {v3}/meta/info.json "
        "declares (40.00 ms a step; first at row 1: 33.33 ms, median 33.33 ms (30 Hz)); LeRobot refuses such episodes"
        for i, n in enumerate(LENGTHS)]


def test_stats_that_disagree_with_the_data(made, tmp_path, capsys):
    v20 = copy(made["lerobot-v2.0"], tmp_path / "v20")
    stats = v20 / "meta/stats.json"
    edit_json(stats, lambda d: (d["action"]["mean"].__setitem__(1, d["action"]["mean"][1] + 0.5),
                                d["observation.state"].update(count=[34])))
    code, errors, warnings = findings(capsys, v20)
    assert code == 1 and warnings == []
    assert len(errors) == 2
    assert errors[0] == (f"{stats}: observation.state: count 34 (the data has 35 rows) disagrees with the data; "
                         "the statistics are stale or belong to other data")
    assert errors[1].startswith(f"{stats}: action: mean disagrees with the data (worst: mean[1] ")

    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    per_episode = v21 / "meta/episodes_stats.jsonl"
    lines = [json.loads(line) for line in per_episode.read_text().splitlines()]
    lines[2]["stats"]["action"]["max"][0] += 1.0
    per_episode.write_text("".join(json.dumps(line) + "\n" for line in lines))
    _, errors, _ = findings(capsys, v21)
    assert len(errors) == 1 and errors[0].startswith(
        f"{per_episode} episode 2: action: max disagrees with the data (worst: max[0] ")

    v3 = copy(made["lerobot"], tmp_path / "v3")
    edit_json(v3 / "meta/stats.json", lambda d: d["action"].update(q01=[9.0] * 4))
    _, errors, _ = findings(capsys, v3)
    assert len(errors) == 1 and errors[0].startswith(f"{v3}/meta/stats.json: action: q01 disagrees with the data")


def test_stats_file_that_is_not_statistics(made, tmp_path, capsys):
    v20 = copy(made["lerobot-v2.0"], tmp_path / "v20")
    stats = v20 / "meta/stats.json"
    edit_json(stats, lambda d: d["action"].update(std=["wide"] * 4))
    _, errors, _ = findings(capsys, v20)
    assert errors == [f"{stats}: action std is not a list of numbers (ValueError)"]
    stats.write_text('{"action": {"mean": [NaN, 0, 0, 0]}}')
    _, errors, _ = findings(capsys, v20)
    assert errors == [f"{stats}: action mean holds NaN/inf; statistics must be finite to normalize with"]
    stats.write_text("[1, 2")
    _, errors, _ = findings(capsys, v20)
    assert len(errors) == 1 and errors[0].startswith(f"{stats}: not valid JSON")


def test_dropped_video_frame(made, tmp_path, capsys):
    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    video = v21 / "videos/chunk-000/observation.images.front/episode_000000.mp4"
    reencode(video, lambda k: k != 5)
    code, errors, warnings = findings(capsys, v21)
    assert code == 1 and warnings == []
    assert errors == [f"{video}: camera 'front' episode 0: 1 of 12 rows have no frame within 16.7 ms (first: row 11 "
                      "at 0.367 s); the video has 11 frame(s) for the episode's 12 rows"]


def test_one_frame_offset_is_a_warning_and_a_larger_one_an_error(made, tmp_path, capsys):
    v20 = copy(made["lerobot-v2.0"], tmp_path / "v20")
    data = v20 / "data/chunk-000/episode_000001.parquet"
    table = pq.read_table(data)
    # Some v2.0 writers numbered the rows from one frame period: row k at (k + 1) / fps.
    shifted = (np.arange(LENGTHS[1], dtype=np.float32) + 1) / np.float32(FPS)
    set_column(data, "timestamp", pa.array(shifted, table.schema.field("timestamp").type))
    edit_json(v20 / "meta/stats.json", lambda d: d.pop("timestamp"))
    code, errors, warnings = findings(capsys, v20)
    video = v20 / "videos/chunk-000/observation.images.front/episode_000001.mp4"
    assert (code, errors) == (0, [])
    assert warnings == [f"{video}: camera 'front' episode 1: the rows' timestamps run +33.3 ms off the video's frames "
                        "(a constant offset of up to one frame, as some v2.0 writers left it); telecorder maps each row "
                        "to its own frame, LeRobot itself shows the next row's frame and fails on the last row"]
    report = check_foreign(v20, "lerobot")
    assert report.episodes[1].frame_age["front"] == pytest.approx(np.full(LENGTHS[1], 1 / FPS), abs=1e-4)

    # More than one frame off: no constant offset the readers accept; the rows past the video's end find nothing.
    set_column(data, "timestamp", pa.array(shifted + np.float32(1.4 / FPS), table.schema.field("timestamp").type))
    _, errors, _ = findings(capsys, v20)
    assert errors == [f"{video}: camera 'front' episode 1: 2 of 9 rows have no frame within 16.7 ms (first: row 7 at "
                      "0.313 s); the video has 9 frame(s) for the episode's 9 rows"]


def test_frames_option_decodes_none_the_ends_or_all(made, tmp_path, capsys):
    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    # An `image` camera (frames stored in the rows): episode 0 damaged mid-way, episode 1 at its first row.
    edit_json(v21 / "meta/info.json", lambda d: d["features"].update(
        {"observation.images.wrist": {"dtype": "image", "shape": [48, 64, 3], "names": ["height", "width", "channel"]}}))
    for i, n in enumerate(LENGTHS):
        png = [encode_image(synthetic_frame(s, 1), "png").tobytes() for s in range(n)]
        if i < 2:
            png[5 if i == 0 else 0] = b"\x89PNG\r\n\x1a\n" + b"\0" * 40
        data = v21 / f"data/chunk-000/episode_{i:06d}.parquet"
        table = pq.read_table(data).append_column(
            "observation.images.wrist", pa.array([{"bytes": b, "path": None} for b in png],
                                                 pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
        pq.write_table(table, data)
    bad = {0: 5, 1: 0}

    def damaged(errors: list[str]) -> list[int]:
        return sorted(i for i, s in bad.items() if any(f"episode_{i:06d}.parquet column 'observation.images.wrist' "
                                                       f"step {s}" in e for e in errors))

    assert findings(capsys, v21, "--frames", "none")[1] == []
    _, errors, _ = findings(capsys, v21, "--frames", "ends")
    assert damaged(errors) == [1] and len(errors) == 1
    _, errors, _ = findings(capsys, v21, "--frames", "all")
    assert damaged(errors) == [0, 1] and len(errors) == 2


def test_hostile_metadata_is_one_line(made, tmp_path, capsys):
    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    edit_json(v21 / "meta/info.json", lambda d: d["features"]["action"].update(shape=[10**12]))
    line = one_line(capsys, v21)
    assert f"{v21}/meta/info.json" in line and "'shape'" in line

    v3 = copy(made["lerobot"], tmp_path / "v3")
    episodes = v3 / "meta/episodes/chunk-000/file-000.parquet"
    episodes.write_bytes(episodes.read_bytes()[:200])
    assert f"{episodes}: cannot be read as Parquet" in one_line(capsys, v3)

    v20 = copy(made["lerobot-v2.0"], tmp_path / "v20")
    lines = (v20 / "meta/episodes.jsonl").read_text().splitlines()
    lines[0] = json.dumps({"episode_index": 0, "length": 10**6})
    (v20 / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
    code, errors, _ = findings(capsys, v20)
    assert code == 1 and errors == [f"{v20}/data/chunk-000/episode_000000.parquet: episode 0 has 12 rows, "
                                    f"{v20}/meta/episodes.jsonl says length 1000000"]


def test_huge_declared_video_size_is_refused_before_decoding(made, tmp_path, capsys):
    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    edit_json(v21 / "meta/info.json", lambda d: d["features"]["observation.images.front"].update(
        shape=[480, 640, 3], info={"video.height": 480, "video.width": 640}))
    code, errors, _ = findings(capsys, v21)
    assert code == 1 and len(errors) == 3
    assert all("the video stream declares 64x48 frames (episode " in e and "holds 640x480" in e for e in errors)


def test_episodes_checked_elsewhere_give_the_same_findings(made, tmp_path):
    """What a runner on other machines does: each job through JSON, check_foreign_episode, the check back."""
    v21 = copy(made["lerobot-v2.1"], tmp_path / "v21")
    (v21 / "videos/chunk-000/observation.images.front/episode_000002.mp4").unlink()
    data = v21 / "data/chunk-000/episode_000000.parquet"
    table = pq.read_table(data)
    state = np.array(table["observation.state"].to_pylist(), np.float32)
    state[1, 1] = np.nan
    set_column(data, "observation.state", pa.array(state.tolist(), table.schema.field("observation.state").type))

    def runner(root: Path, info: Any, jobs: list[Any], frames: str) -> list[EpisodeCheck]:
        checks = [check_foreign_episode(Path(root), info, idx, record, frames)
                  for idx, record in json.loads(json.dumps(jobs))]
        return [EpisodeCheck.from_json_dict(json.loads(json.dumps(c.to_json_dict()))) for c in checks]

    local, remote = check_foreign(v21, "lerobot"), check_foreign(v21, "lerobot", check_episodes=runner)
    assert len(local.all_errors) == 2
    assert remote.to_dict() == local.to_dict()


# -- the CLI around it -----------------------------------------------------------------------------


def test_repair_is_refused_in_one_line(made, tmp_path, capsys):
    src = copy(made["lerobot-v2.1"], tmp_path / "v21")
    before = snapshot(src)
    line = one_line(capsys, src, "--repair")
    assert "--repair mends telecorder datasets only, and this is a lerobot dataset" in line
    assert f"convert it first (telecorder convert {src} OUT --to native)" in line
    assert snapshot(src) == before


def test_beam_runner_checks_a_foreign_dataset_as_the_local_one(made, tmp_path, capsys):
    pytest.importorskip("apache_beam")
    src = copy(made["lerobot-v2.1"], tmp_path / "v21")
    # Damage one episode so that the comparison covers findings, not only clean episodes.
    parquet = sorted(src.glob("data/**/*.parquet"))[0]
    parquet.write_bytes(parquet.read_bytes()[: parquet.stat().st_size // 2])
    before = snapshot(src)
    code_local, local = doctor(capsys, src, "--json")
    code_beam, remote = doctor(capsys, src, "--json", "--runner", "beam",
                               "--beam-options", "--direct_num_workers=2")
    assert code_local == code_beam == 1
    assert remote["episodes"] == local["episodes"]
    assert remote["errors"] == local["errors"]
    # A dataset-wide statistics file needs every episode's statistics in one place: compared locally only, said so.
    extra = [w for w in remote["warnings"] if w not in local["warnings"]]
    assert all("compared with the data by the local runner only" in w for w in extra), extra
    assert [w for w in local["warnings"] if w not in remote["warnings"]] == []
    assert snapshot(src) == before


def test_format_is_detected_or_forced(made, tmp_path, capsys):
    assert doctor_format(made["native"]) == "native"
    assert doctor_format(made["aloha"]) == "aloha"
    assert doctor_format(made["robomimic"]) == doctor_format(next(made["robomimic"].glob("*.hdf5"))) == "robomimic"
    code, report = doctor(capsys, made["aloha"], "--json", "--format", "aloha")
    assert code == 0 and report["format"] == "aloha"  # type: ignore[index]
    code, report = doctor(capsys, made["native"], "--json")
    assert code == 0 and "format" not in report  # the native report keeps its keys
    line = one_line(capsys, made["aloha"], "--format", "lerobot")
    assert "meta/info.json" in line
    (tmp_path / "photos").mkdir()
    line = one_line(capsys, tmp_path / "photos")
    assert "is not a telecorder dataset (no meta/info.json), nor one of the formats telecorder reads" in line


# -- HDF5 formats -------------------------------------------------------------------------------------


def test_aloha_damage(made, tmp_path, capsys):
    src = copy(made["aloha"], tmp_path / "aloha")
    with h5py.File(src / "episode_1.hdf5", "r+") as f:
        f["observations/qpos"][2, 1] = np.nan
    truncated = src / "episode_2.hdf5"
    truncated.write_bytes(truncated.read_bytes()[:4000])
    code, errors, warnings = findings(capsys, src)
    assert code == 1 and warnings == []
    assert errors[0] == f"{src}/episode_1.hdf5: observation.state has 1 NaN/inf values (first at step 2)"
    assert len(errors) == 2 and errors[1].startswith(f"{truncated}: cannot be read as HDF5")


def test_robomimic_damage(made, tmp_path, capsys):
    src = copy(made["robomimic"], tmp_path / "robomimic")
    file = next(src.glob("*.hdf5"))
    with h5py.File(file, "r+") as f:
        f["data/demo_0"].attrs["num_samples"] = 13
        actions = f["data/demo_2/actions"]
        actions[7, 0] = np.inf
    code, errors, warnings = findings(capsys, src)
    assert code == 1
    assert errors == [f"{file} demo_0: 12 steps, its num_samples attribute says 13",
                      f"{file} demo_2: action has 1 NaN/inf values (first at step 7)"]
    assert warnings == []


# -- RLDS (TensorFlow) --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made_rlds(made, tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("tensorflow_datasets")
    root = tmp_path_factory.mktemp("foreign_doctor_rlds")
    return {"rlds": convert(made["native"], root / "rlds", "rlds"),
            "oxe": convert(made["native"], root / "oxe", "oxe", "--action-space", "joint")}


@pytest.mark.tf
@pytest.mark.parametrize("name", ["rlds", "oxe"])
def test_rlds_from_our_writers_passes_clean(made_rlds, name, tmp_path, capsys):
    src = copy(made_rlds[name], tmp_path / name)
    with read_only(src):
        for frames in ("none", "all"):
            code, errors, warnings = findings(capsys, src, "--frames", frames)
            assert (code, errors, warnings) == (0, [], []), frames
    report = check_foreign(src, "rlds")
    assert [e.steps for e in report.episodes] == LENGTHS


@pytest.mark.tf
def test_rlds_damage(made_rlds, tmp_path, capsys):
    src = copy(made_rlds["oxe"], tmp_path / "oxe")
    data_dir = next(p.parent for p in src.rglob("dataset_info.json"))
    stats = data_dir / "dataset_statistics.json"
    edit_json(stats, lambda d: (d["action"].update(max=[x + 1 for x in d["action"]["max"]]),
                                d.update(num_transitions=99)))
    code, errors, _ = findings(capsys, src)
    assert code == 1 and len(errors) == 2
    assert errors[0].startswith(f"{stats}: action (action): max disagrees with the data")
    assert errors[1] == f"{stats}: num_transitions is 99, the dataset has 35"

    src = copy(made_rlds["rlds"], tmp_path / "rlds")
    shard = next(src.rglob("*.tfrecord*"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    code, errors, _ = findings(capsys, src)
    assert code == 1 and errors and all(str(shard) in e for e in errors)
    assert any("truncated or corrupt" in e for e in errors)

