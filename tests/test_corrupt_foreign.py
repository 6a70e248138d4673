"""Corrupt foreign metadata (LeRobot v2/v3, RLDS) and MP4 headers, as the fuzz campaign found them:
each gave a traceback or a bare ValueError before, and gives one line naming the file and the field
now, through the real CLI (exit 2) and the real loader (a DatasetError)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lerobot_v20_meta import write_v20_meta

torch = pytest.importorskip("torch")

from conftest import make_info, write_dataset  # noqa: E402

from telecorder import cli  # noqa: E402
from telecorder.converters.base import ConversionError  # noqa: E402
from telecorder.converters.video import VideoEncoder, check_stream_size  # noqa: E402
from telecorder.datasets.images import MAX_IMAGE_PIXELS  # noqa: E402
from telecorder.errors import DatasetError  # noqa: E402
from telecorder.loaders import TorchDataset  # noqa: E402
from telecorder.loaders.tfrecord import Feature, RecordError  # noqa: E402

N, FPS, H, W = 6, 10, 16, 24


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "3000")  # rich folds long paths mid-word at 80 columns


def convert_error(capsys: pytest.CaptureFixture[str], src: Path, dst: Path) -> str:
    """``convert SRC DST --to native``: exit 2 and one error line, without a traceback."""
    rc = cli.main(["convert", str(src), str(dst), "--to", "native"])
    out = capsys.readouterr()
    text = re.sub(r"\s+", " ", out.out + out.err)
    assert rc == 2 and "Traceback" not in text, text[-3000:]
    return text


def loader_error(src: Path, **kwargs: Any) -> str:
    with pytest.raises(DatasetError) as e:
        TorchDataset(src, image_size=None, **kwargs)
    return str(e.value)


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(edit(doc)))


def set_at(keys: tuple[Any, ...], value: Any) -> Callable[[Any], Any]:
    def edit(doc: Any) -> Any:
        if not keys:
            return value
        node = doc
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
        return doc
    return edit


# -- LeRobot v2.0 -------------------------------------------------------------------------------


def lerobot_v20(root: Path, *, video_hw: tuple[int, int] | None = None) -> Path:
    """Two episodes of a LeRobot v2.0 folder by hand; with ``video_hw`` a camera declared H x W in
    info.json whose mp4s are encoded at ``video_hw``."""
    write_v20_meta(root, episodes=2, n=N, fps=FPS, camera_hw=None if video_hw is None else (H, W))
    (root / "data/chunk-000").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for e in range(2):
        cols = {k: rng.normal(size=(N, 3)).astype(np.float32) for k in ("observation.state", "action")}
        table = pa.table({
            **{k: pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), 3) for k, v in cols.items()},
            "timestamp": pa.array(np.arange(N, dtype=np.float32) / FPS),
            "frame_index": pa.array(np.arange(N)),
            "episode_index": pa.array(np.full(N, e, np.int64)),
            "index": pa.array(np.arange(N) + e * N),
            "task_index": pa.array(np.zeros(N, np.int64)),
        })
        pq.write_table(table, root / f"data/chunk-000/episode_{e:06d}.parquet")
        if video_hw is not None:
            path = root / f"videos/chunk-000/observation.images.top/episode_{e:06d}.mp4"
            with VideoEncoder(path, video_hw[1], video_hw[0], FPS) as enc:
                for k in range(N):
                    enc.append(np.full((*video_hw, 3), 20 * k, np.uint8))
    return root


def jsonl_line(name: str, line: int, key: str, value: Any) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / "meta" / name
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        rows[line - 1][key] = value
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return damage


def info_field(keys: tuple[Any, ...], value: Any) -> Callable[[Path], None]:
    return lambda root: edit_json(root / "meta/info.json", set_at(keys, value))


def non_utf8(root: Path) -> None:
    path = root / "meta/episodes.jsonl"
    data = bytearray(path.read_bytes())
    data[20:24] = b"\xa1\xc9\xff\xfe"
    path.write_bytes(bytes(data))


# (damage, what the line must name besides the file): each was a traceback or a bare ValueError.
V20_CASES = {
    "task_index inf": (jsonl_line("tasks.jsonl", 1, "task_index", float("inf")),
                       ["meta/tasks.jsonl line 1", "'task_index'", "inf"]),
    "task_index a dict": (jsonl_line("tasks.jsonl", 1, "task_index", {"a": 1}),
                          ["meta/tasks.jsonl line 1", "'task_index'"]),
    "task_index NaN text": (jsonl_line("tasks.jsonl", 1, "task_index", "NaN"),
                            ["meta/tasks.jsonl line 1", "'task_index'"]),
    "tasks an int": (jsonl_line("episodes.jsonl", 2, "tasks", -10**18),
                     ["meta/episodes.jsonl line 2", "episode 1", "'tasks'"]),
    "length x": (jsonl_line("episodes.jsonl", 2, "length", "x"),
                 ["meta/episodes.jsonl line 2", "episode 1", "'length'", "'x'"]),
    "length inf": (jsonl_line("episodes.jsonl", 1, "length", float("inf")),
                   ["meta/episodes.jsonl line 1", "'length'"]),
    "episode_index inf": (jsonl_line("episodes.jsonl", 2, "episode_index", float("inf")),
                          ["meta/episodes.jsonl line 2", "'episode_index'"]),
    "feature shape an int": (info_field(("features", "observation.state", "shape"), -10**18),
                             ["meta/info.json", "feature 'observation.state'", "'shape'"]),
    "feature shape inf": (info_field(("features", "action", "shape"), [float("inf")]),
                          ["meta/info.json", "feature 'action'", "'shape'"]),
    "feature shape huge": (info_field(("features", "action", "shape"), [10**9, 10**9]),
                           ["meta/info.json", "feature 'action'", "'shape'"]),
    "fps inf": (info_field(("fps",), float("inf")), ["meta/info.json", "'fps'", "inf"]),
    "fps nan": (info_field(("fps",), float("nan")), ["meta/info.json", "'fps'", "nan"]),
    "chunks_size 0": (info_field(("chunks_size",), 0), ["meta/info.json", "'chunks_size'"]),
    "non-UTF-8 bytes": (non_utf8, ["meta/episodes.jsonl", "line 1", "not UTF-8"]),
}


@pytest.mark.parametrize("case", sorted(V20_CASES))
def test_lerobot_v2_metadata_damage_is_one_line_naming_file_and_field(tmp_path: Path, capsys, case: str) -> None:
    damage, needles = V20_CASES[case]
    src = lerobot_v20(tmp_path / "v20")
    damage(src)
    for text in (convert_error(capsys, src, tmp_path / "out"), loader_error(src)):
        for needle in needles:
            assert needle in text, text
    assert not (tmp_path / "out").exists()


def test_lerobot_v2_with_no_episodes_is_one_clear_line(tmp_path: Path, capsys) -> None:
    src = lerobot_v20(tmp_path / "v20")
    (src / "meta/episodes.jsonl").write_bytes(b"")
    assert f"no episodes in {src}" in loader_error(src)  # was KeyError: 'observation.state'
    assert str(src) in convert_error(capsys, src, tmp_path / "out")


def test_lerobot_v3_sidecar_and_stats_of_the_wrong_type_are_named(tmp_path: Path, capsys) -> None:
    native = tmp_path / "native"
    write_dataset(native, make_info(cameras=()), [5, 6])
    assert cli.main(["convert", str(native), str(tmp_path / "v3"), "--to", "lerobot"]) == 0
    capsys.readouterr()
    for name, edit, needles in [
        ("telecorder_meta.json", set_at(("info", "jpeg_quality"), -10**9), ["info", "'jpeg_quality'"]),
        ("telecorder_meta.json", set_at(("info", "image_encoding"), "nan"), ["info/image_encoding"]),
        ("meta/stats.json", set_at(("action", "count"), ["/elsewhere"]), ["action/count"]),
    ]:
        src = tmp_path / "copy"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(tmp_path / "v3", src)
        edit_json(src / name, edit)
        texts = [loader_error(src)]
        if name != "meta/stats.json":  # convert computes its own statistics
            texts.append(convert_error(capsys, src, tmp_path / "out"))
        for text in texts:
            assert str(src / name) in text, text
            for needle in needles:
                assert needle in text, text


def test_lerobot_v3_episodes_parquet_with_a_non_utf8_column_name_is_named(tmp_path: Path, capsys) -> None:
    native = tmp_path / "native"
    write_dataset(native, make_info(cameras=()), [5])
    src = tmp_path / "v3"
    assert cli.main(["convert", str(native), str(src), "--to", "lerobot"]) == 0
    capsys.readouterr()
    meta = next((src / "meta/episodes").rglob("*.parquet"))
    table = pq.read_table(meta).append_column("zzzzzz", pa.array([0]))
    pq.write_table(table, meta, store_schema=False)
    meta.write_bytes(meta.read_bytes().replace(b"zzzzzz", b"\xb4zzzzz"))  # was UnicodeDecodeError
    for text in (convert_error(capsys, src, tmp_path / "out"), loader_error(src)):
        assert f"{meta}: cannot be read as Parquet" in text, text


def test_undetected_damaged_info_is_named_without_a_64_mib_buffer(tmp_path: Path) -> None:
    # A bit flip in a LeRobot info.json left it undetected; naming the damage read it into a 64 MiB
    # buffer, a MemoryError in a process near its data limit (fuzz campaign, seed 0 #1880).
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/info.json").write_text('{"codebase_version" "v3.0", "fps": 30}')
    empty = tmp_path / "empty"
    empty.mkdir()
    code = (
        "import resource, re\n"
        "from telecorder.converters import detect_format\n"
        "from telecorder.converters.base import ConversionError\n"
        "try:\n"
        f"    detect_format({str(empty)!r})  # every reader imported before the limit\n"
        "except ConversionError:\n"
        "    pass\n"
        "data = int(re.search(r'VmData:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_DATA, (data + (32 << 20), resource.RLIM_INFINITY))\n"
        "try:\n"
        f"    detect_format({str(tmp_path)!r})\n"
        "except ConversionError as e:\n"
        "    print('ERROR', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    assert f"ERROR {tmp_path / 'meta/info.json'}: not valid JSON" in proc.stdout, proc.stdout


# -- MP4 streams: the declared frame size is checked before anything is decoded ---------------------


def test_video_whose_stream_declares_another_size_is_refused_undecoded(tmp_path: Path, capsys) -> None:
    src = lerobot_v20(tmp_path / "v20", video_hw=(2 * H, 2 * W))
    mp4 = src / "videos/chunk-000/observation.images.top/episode_000000.mp4"
    needles = [str(mp4), f"declares {2 * W}x{2 * H} frames", f"holds {W}x{H}"]
    text = convert_error(capsys, src, tmp_path / "out")
    ds = TorchDataset(src, image_size=None)
    with pytest.raises(DatasetError) as e:
        ds[0]
    for t in (text, str(e.value)):
        for needle in needles:
            assert needle in t, t


def test_video_with_a_non_utf8_metadata_tag_is_read(tmp_path: Path, capsys) -> None:
    # A tag is no reason to refuse the frames (was UnicodeDecodeError from PyAV's metadata dict).
    src = lerobot_v20(tmp_path / "v20", video_hw=(H, W))
    for mp4 in src.rglob("*.mp4"):
        data = mp4.read_bytes()
        assert b"Lavf" in data
        mp4.write_bytes(data.replace(b"Lavf", b"\x9eavf"))
    assert cli.main(["convert", str(src), str(tmp_path / "out"), "--to", "native"]) == 0, capsys.readouterr()
    assert TorchDataset(src, image_size=None)[N - 1]["images.top"].shape == (1, 3, H, W)


def test_stream_size_over_the_pixel_limit_or_empty_is_refused() -> None:
    def stream(w: int, h: int) -> Any:
        return SimpleNamespace(codec_context=SimpleNamespace(width=w, height=h))

    with pytest.raises(ConversionError, match=rf"x.mp4: the video stream declares 30000x30000 frames \(episode 3\), "
                                              rf"over the {MAX_IMAGE_PIXELS} pixels"):
        check_stream_size(stream(30000, 30000), Path("x.mp4"), context="episode 3")
    with pytest.raises(ConversionError, match="declares a frame size of 0x0"):
        check_stream_size(stream(0, 0), Path("x.mp4"), (4, 4))
    with pytest.raises(ConversionError, match=r"x\.mp4: the video stream has no codec"):  # a truncated file
        check_stream_size(SimpleNamespace(codec_context=None), Path("x.mp4"))
    check_stream_size(stream(640, 480), Path("x.mp4"))
    check_stream_size(stream(64, 48), Path("x.mp4"), (48, 64))


# -- RLDS (the dataset is written by the TFDS-based writer, hence TensorFlow) ---------------------------


@pytest.fixture(scope="module")
def rlds_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rlds")
    write_dataset(root / "native", make_info(cameras=("front",)), [5, 6])
    assert cli.main(["convert", str(root / "native"), str(root / "rlds"), "--to", "rlds"]) == 0
    return root / "rlds"


def _features_at(*keys: str) -> tuple[str, ...]:
    out: tuple[str, ...] = ("featuresDict", "features", "steps", "sequence", "feature")
    for k in keys:
        out += ("featuresDict", "features", k)
    return out


# (file, edit, commands it is checked through, what the line must name besides the file)
RLDS_CASES = {
    "dataset_info a bool": ("dataset_info.json", set_at((), False), ("loader", "convert"), ["JSON bool"]),
    "name empty": ("dataset_info.json", set_at(("name",), ""), ("loader", "convert"), ["name must be"]),
    "split an int": ("dataset_info.json", set_at(("splits", 0), -10**18), ("loader", "convert"), ["splits/0"]),
    "splits a float": ("dataset_info.json", set_at(("splits",), 1e300), ("loader", "convert"), ["splits"]),
    "shardLengths inf": ("dataset_info.json", set_at(("splits", 0, "shardLengths"), [float("inf")]),
                         ("loader", "convert"), ["splits/0/shardLengths/0"]),
    "shardLengths over the shard's bytes": ("dataset_info.json",
                                            set_at(("splits", 0, "shardLengths"), ["1000000000000"]),
                                            ("convert",), ["shardLengths/0 declares 1000000000000 records"]),
    "template placeholder unknown": ("dataset_info.json",
                                     set_at(("splits", 0, "filepathTemplate"), "{DATASET}-{SPLIT}.{FILDFORMAT}"),
                                     ("loader", "convert"), ["filepathTemplate", "FILDFORMAT"]),
    "split name a path": ("dataset_info.json", set_at(("splits", 0, "name"), "../../outside/x"),
                          ("loader", "convert"), ["splits/0/name", "../../outside/x"]),
    "features a float": ("features.json", set_at(("featuresDict", "features", "steps", "sequence"), -1e300),
                         ("loader", "convert"), ["featuresDict/features/steps/sequence"]),
    "sequence length negative": ("features.json",
                                 set_at(("featuresDict", "features", "steps", "sequence", "length"), -10**18),
                                 ("loader", "convert"), ["steps/sequence/length"]),
    "dtype a path": ("features.json", set_at((*_features_at("action"), "tensor", "dtype"), "/tmp/outside/x"),
                     ("loader", "convert"), ["action/tensor/dtype", "not a number or bool dtype"]),
    "dimension x": ("features.json",
                    set_at((*_features_at("observation", "state"), "tensor", "shape", "dimensions", 0), "x"),
                    ("loader", "convert"), ["state/tensor/shape/dimensions/0"]),
    "image dimension nan": ("features.json",
                            set_at((*_features_at("observation", "front"), "image", "shape", "dimensions", 1),
                                   float("nan")),
                            ("loader", "convert"), ["front/image/shape/dimensions/1"]),
    "total_frames inf": ("telecorder_meta.json", set_at(("total_frames",), float("inf")), ("convert",),
                         ["total_frames"]),
}


@pytest.mark.tf
@pytest.mark.parametrize("case", sorted(RLDS_CASES))
def test_rlds_metadata_damage_is_one_line_naming_file_and_field(rlds_seed: Path, tmp_path: Path, capsys,
                                                               case: str) -> None:
    name, edit, commands, needles = RLDS_CASES[case]
    src = tmp_path / "rlds"
    shutil.copytree(rlds_seed, src)
    edit_json(src / name, edit)
    texts = []
    if "loader" in commands:
        texts.append(loader_error(src))
    if "convert" in commands:
        texts.append(convert_error(capsys, src, tmp_path / "out"))
    for text in texts:
        assert str(src / name) in text, text
        for needle in needles:
            assert needle in text, text


def test_tfrecord_list_with_a_bad_wire_type_is_a_record_error_naming_where() -> None:
    # A garbled list inside a well-framed record is found when the loader walks it for a sample
    # (was ValueError: unsupported wire type 7).
    feature = Feature("bytes", memoryview(b"\x0f\x00\x00"), 0, 3, "shard-00000 record 1 steps/observation/front")
    with pytest.raises(RecordError, match=r"shard-00000 record 1 steps/observation/front: not a valid "
                                          r"tf.train.Example list \(unsupported wire type 7\)"):
        feature.spans()
    with pytest.raises(RecordError, match="record 1 steps/observation/front"):
        Feature("float", memoryview(b"\x0a\x03abc"), 0, 5, "record 1 steps/observation/front").values()


@pytest.mark.tf
def test_rlds_empty_shard_is_named_by_the_loader(rlds_seed: Path, tmp_path: Path) -> None:
    src = tmp_path / "rlds"
    shutil.copytree(rlds_seed, src)
    shard = next(src.glob("*.tfrecord-*"))
    shard.write_bytes(b"")  # was KeyError: 'observation.state'
    text = loader_error(src)
    assert f"{shard}: holds 0 record(s) but {src / 'dataset_info.json'} lists 2" in text, text
