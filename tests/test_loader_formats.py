"""Loaders on every format: the same samples from a native dataset and from its LeRobot and RLDS
conversions (made here with the real converters), mixtures across formats, and the errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import SHARED, make_info, write_dataset  # noqa: E402

from telecorder.converters.pipeline import ConvertOptions, convert  # noqa: E402
from telecorder.errors import DatasetError  # noqa: E402
from telecorder.loaders import MixtureDataset, TorchDataset, detect_format  # noqa: E402

LENGTHS = [12, 20, 7]
OCTO = SHARED / "samples" / "octo-models_octo" / "tests" / "debug_dataset" / "bridge_dataset" / "1.0.0"
# Items at both ends of every episode (history and action padding) and in the middle.
ENDS = [0, 1, 5, LENGTHS[0] - 1, LENGTHS[0], LENGTHS[0] + 19, sum(LENGTHS) - 2, sum(LENGTHS) - 1]


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("formats") / "native"
    write_dataset(root, make_info(cameras=("front", "wrist")), LENGTHS)
    return root


@pytest.fixture(scope="module")
def lerobot(native: Path) -> Path:
    out = native.parent / "lerobot"
    convert(native, out, ConvertOptions(to="lerobot"))
    return out


def assert_same_sample(a: dict, b: dict, image_tol: float) -> None:
    """Everything equal, numbers exactly; frames within ``image_tol`` mean levels, the right step."""
    assert a.keys() == b.keys()
    for key, x in a.items():
        y = b[key]
        if not isinstance(x, torch.Tensor):
            assert x == y, key
        elif key.startswith("images."):
            assert x.shape == y.shape and x.dtype == y.dtype == torch.uint8, key
            diff = (x.float() - y.float()).abs()
            assert float(diff.mean()) <= image_tol, (key, float(diff.mean()))
            # The red channel encodes the step (7 levels per step): a neighbouring frame would be 7 off.
            red = diff[:, 0].mean(dim=(1, 2))
            assert float(red.max()) < 3.5, (key, red.tolist())
        else:
            assert torch.equal(x, y), (key, x, y)


def test_formats_are_detected(native: Path, lerobot: Path, tmp_path: Path) -> None:
    assert detect_format(native) == "native" and detect_format(lerobot) == "lerobot"
    (tmp_path / "junk").mkdir()
    with pytest.raises(DatasetError, match="LeRobot v2/v3 folder, or an RLDS"):
        TorchDataset(tmp_path / "junk")


@pytest.mark.parametrize("image_size", [None, (24, 32)])
def test_lerobot_gives_the_native_samples(native: Path, lerobot: Path, image_size: tuple | None) -> None:
    kw = dict(history=2, horizon=5, image_size=image_size, normalize="none")
    a, b = TorchDataset(native, **kw), TorchDataset(lerobot, **kw)
    assert len(a) == len(b) == sum(LENGTHS) and a.cameras == b.cameras == ["front", "wrist"]
    for i in ENDS:
        assert_same_sample(a[i], b[i], image_tol=4.0)  # h264 at crf 20 on 48x64 frames
    last = b[LENGTHS[0] - 1]
    assert last["action_is_pad"].tolist() == [False, True, True, True, True]
    assert b[0]["state_is_pad"].tolist() == [True, False]
    a.close()
    b.close()


def test_lerobot_statistics_from_its_file_or_its_columns(native: Path, lerobot: Path, tmp_path: Path) -> None:
    a = TorchDataset(native, cameras=[], horizon=3)
    b = TorchDataset(lerobot, cameras=[], horizon=3)
    for i in ENDS:
        np.testing.assert_allclose(a[i]["action"].numpy(), b[i]["action"].numpy(), atol=1e-6)
        np.testing.assert_allclose(a[i]["state"].numpy(), b[i]["state"].numpy(), atol=1e-6)
    # A LeRobot stats file without quantiles (LeRobot before v3): q99 statistics are computed from the
    # numeric columns, merged episode by episode as the native store does, so they agree exactly.
    copy = tmp_path / "lerobot"
    shutil.copytree(lerobot, copy)
    stats = json.loads((copy / "meta" / "stats.json").read_text())
    for summary in stats.values():
        for q in ("q01", "q10", "q50", "q90", "q99"):
            summary.pop(q, None)
    (copy / "meta" / "stats.json").write_text(json.dumps(stats))
    c = TorchDataset(copy, cameras=[], horizon=3)
    for i in ENDS:
        assert torch.equal(a[i]["action"], c[i]["action"]) and torch.equal(a[i]["state"], c[i]["state"])
    np.testing.assert_allclose(c.denormalize_action(c[3]["action"]), a.denormalize_action(a[3]["action"]))


def test_lerobot_workers_and_decode_threads_match_one_process(lerobot: Path) -> None:
    ds = TorchDataset(lerobot, image_size=(24, 32), history=2, horizon=3)
    ds[0]  # decoders opened in the parent must not leak into the forked workers
    threaded = TorchDataset(lerobot, image_size=(24, 32), history=2, horizon=3, decode_threads=3)
    single = list(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0))
    multi = list(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2))
    threads = list(torch.utils.data.DataLoader(threaded, batch_size=8, num_workers=0))
    assert len(single) == len(multi) == len(threads) == -(-len(ds) // 8)
    for a, b, c in zip(single, multi, threads, strict=True):
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key
    ds.close()
    threaded.close()


def test_mixture_of_native_and_lerobot(native: Path, lerobot: Path) -> None:
    other = native.parent / "other"
    write_dataset(other, make_info(cameras=("front", "wrist")), [9, 5], seed=50)
    other_lr = native.parent / "other_lerobot"
    convert(other, other_lr, ConvertOptions(to="lerobot"))
    a = TorchDataset(native, cameras=["front"], image_size=(16, 16), horizon=4)
    b = TorchDataset(other_lr, cameras=["front"], image_size=(16, 16), horizon=4)
    mix = MixtureDataset([(a, 1.0), (b, 1.0)], seed=3, length=64)
    batches = list(torch.utils.data.DataLoader(mix, batch_size=16, num_workers=2))
    picked = torch.cat([x["dataset_index"] for x in batches])
    assert set(picked.tolist()) == {0, 1}
    assert batches[0]["images.front"].shape == (16, 1, 3, 16, 16) and batches[0]["action"].shape == (16, 4, 4)
    i = next(i for i in range(64) if mix.choose(i)[0] == 1)
    _, j = mix.choose(i)
    # The LeRobot component keeps its own statistics: its item is what it serves alone.
    assert torch.equal(mix[i]["action"], b[j]["action"])
    assert int(mix[i]["episode_index"]) == int(b[j]["episode_index"])


def test_a_camera_without_videos_is_named_when_the_loader_is_made(lerobot: Path, tmp_path: Path) -> None:
    copy = tmp_path / "lerobot"
    shutil.copytree(lerobot, copy)
    video = next((copy / "videos" / "observation.images.wrist").rglob("*.mp4"))
    video.unlink()
    # Found when the loader is made (one stat per file), not in the middle of training.
    with pytest.raises(DatasetError, match=r"camera 'wrist' has no video for \d+ of \d+ episode.*cameras=\['front'\]"):
        TorchDataset(copy, image_size=None)
    assert TorchDataset(copy, cameras=["front"])[0]["images.front"].shape == (1, 3, 224, 224)


def test_rlds_loader_does_not_import_tensorflow() -> None:
    if not OCTO.is_dir():
        pytest.skip(f"the Octo debug dataset is not at {OCTO}")
    code = (
        "import sys\n"
        "from telecorder.loaders import TorchDataset\n"
        f"ds = TorchDataset({str(OCTO)!r}, image_size=(32, 32), history=2, horizon=4)\n"
        "item = ds[13]\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "print(len(ds), sorted(ds.cameras), tuple(item['images.image_0'].shape), item['language_instruction'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("[")[0].strip() == "250"
    assert "(2, 3, 32, 32) flip pot upright which is in sink" in out.stdout


def test_truncated_rlds_shard_is_named(tmp_path: Path) -> None:
    if not OCTO.is_dir():
        pytest.skip(f"the Octo debug dataset is not at {OCTO}")
    copy = tmp_path / "bridge"
    shutil.copytree(OCTO, copy)
    shard = next(copy.glob("*-train.tfrecord-*"))
    shard.write_bytes(shard.read_bytes()[:-5000])
    with pytest.raises(DatasetError, match=rf"{shard.name}: record at byte \d+ claims \d+ bytes, past the end"):
        TorchDataset(copy)
    with pytest.raises(DatasetError, match="no split 'test'"):
        TorchDataset(OCTO, split="test")


@pytest.mark.tf
def test_rlds_gives_the_native_samples_and_what_tfds_reads(native: Path, tmp_path: Path) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    out = tmp_path / "rlds"
    convert(native, out, ConvertOptions(to="rlds"))
    kw = dict(history=2, horizon=5, image_size=None, normalize="none")
    a, b = TorchDataset(native, **kw), TorchDataset(out, **kw)
    assert detect_format(out) == "rlds" and len(b) == sum(LENGTHS)
    for i in ENDS:
        assert_same_sample(a[i], b[i], image_tol=1.0)  # re-encoded JPEG: a level at most here and there
    # Normalized with statistics computed from the RLDS columns: the native ones, exactly merged.
    an, bn = TorchDataset(native, cameras=[], horizon=3), TorchDataset(out, cameras=[], horizon=3)
    for i in ENDS:
        np.testing.assert_allclose(an[i]["action"].numpy(), bn[i]["action"].numpy(), atol=1e-6)
    # What the real tensorflow_datasets reads from the same files, episode 1.
    builder = tfds.builder_from_directory(str(out))
    episode = next(iter(tfds.as_numpy(builder.as_dataset(split="train").skip(1).take(1))))
    steps = list(episode["steps"])
    for k in (0, 7, LENGTHS[1] - 1):
        item = b[LENGTHS[0] + k]
        np.testing.assert_array_equal(item["action"][0].numpy(), steps[k]["action"])
        np.testing.assert_array_equal(item["state"][-1].numpy(), steps[k]["observation"]["state"])
        # TensorFlow's JPEG decoder upsamples chroma differently from OpenCV's: a level or so.
        diff = np.abs(item["images.front"][-1].numpy().transpose(1, 2, 0).astype(int)
                      - steps[k]["observation"]["front"].astype(int))
        assert diff.shape == (48, 64, 3) and diff.max() <= 4 and diff.mean() < 1.0
        assert item["language_instruction"] == steps[k]["language_instruction"].decode()
