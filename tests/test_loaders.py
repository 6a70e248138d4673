"""PyTorch loaders: sample layout, padding, normalization, workers, splits, mixtures, prompts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import make_info, write_dataset  # noqa: E402

from telecorder.datasets.splits import episode_split  # noqa: E402
from telecorder.datasets.vla_prompt import IGNORE_INDEX, VLAPromptAdapter  # noqa: E402
from telecorder.errors import DatasetError  # noqa: E402
from telecorder.loaders import native as native_source  # noqa: E402
from telecorder.loaders import normalization  # noqa: E402
from telecorder.loaders.mixture import MixtureDataset  # noqa: E402
from telecorder.loaders.torch_dataset import TorchDataset  # noqa: E402

LENGTHS = [12, 20, 7]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("loaders") / "ds"
    steps = write_dataset(root, make_info(cameras=("front", "wrist")), LENGTHS)
    return root, steps


def raw(steps: list, ep: int, key: str) -> np.ndarray:
    return np.stack([s.numeric[key] for s in steps[ep]]).astype(np.float64)


def summary(root: Path, feature: str) -> dict:
    return json.loads((root / "meta" / "stats.json").read_text())["features"][feature]


def test_shapes_and_pad_masks_at_episode_boundaries(dataset: tuple[Path, list]) -> None:
    root, steps = dataset
    ds = TorchDataset(root, image_size=(32, 40), history=2, horizon=5, normalize="none")
    assert len(ds) == sum(LENGTHS)

    first = ds[0]
    assert first["images.front"].shape == (2, 3, 32, 40) and first["images.front"].dtype == torch.uint8
    assert first["images.wrist"].shape == (2, 3, 32, 40)
    assert first["state"].shape == (2, 4) and first["state"].dtype == torch.float32
    assert first["action"].shape == (5, 4) and first["action"].dtype == torch.float32
    assert first["state_is_pad"].tolist() == [True, False]
    assert first["action_is_pad"].tolist() == [False] * 5
    assert torch.equal(first["state"][0], first["state"][1])  # history before the start repeats the first
    assert torch.equal(first["images.front"][0], first["images.front"][1])
    assert first["language_instruction"] == "stack the blocks"
    assert int(first["episode_index"]) == 0 and int(first["step_index"]) == 0

    last = ds[LENGTHS[0] - 1]  # last step of episode 0
    assert int(last["step_index"]) == LENGTHS[0] - 1
    assert last["state_is_pad"].tolist() == [False, False]
    assert last["action_is_pad"].tolist() == [False, True, True, True, True]
    a0 = raw(steps, 0, "action")
    np.testing.assert_allclose(last["action"].numpy(), np.repeat(a0[-1:], 5, axis=0), atol=1e-6)
    np.testing.assert_allclose(last["state"].numpy(), raw(steps, 0, "observation.state")[-2:], atol=1e-6)

    # Second-to-last step of the last episode: 2 real actions, then 3 padded.
    item = ds[len(ds) - 2]
    assert int(item["episode_index"]) == 2 and int(item["step_index"]) == LENGTHS[2] - 2
    assert item["action_is_pad"].tolist() == [False, False, True, True, True]
    # The frames' red channel encodes the step (7 per step), so the history is in order.
    red = item["images.front"][:, 0].float().mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(red, [7 * (LENGTHS[2] - 3), 7 * (LENGTHS[2] - 2)], atol=4)

    zero = TorchDataset(root, image_size=None, horizon=5, normalize="none", pad="zero")[LENGTHS[0] - 1]
    assert zero["images.front"].shape == (1, 3, 48, 64)
    assert torch.count_nonzero(zero["action"][1:]) == 0
    np.testing.assert_allclose(zero["action"][0].numpy(), a0[-1], atol=1e-6)


@pytest.mark.parametrize("mode", ["mean_std", "min_max", "q99"])
def test_denormalize_inverts_normalize(dataset: tuple[Path, list], mode: str) -> None:
    root, steps = dataset
    ds = TorchDataset(root, cameras=[], horizon=3, normalize=mode)
    item = ds[LENGTHS[0] + 4]  # episode 1, steps 4..6
    expected = raw(steps, 1, "action")[4:7]
    back = ds.denormalize_action(item["action"].double())
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float64
    if mode == "q99":
        # Values beyond [q01, q99] are clipped by design; only the others come back.
        s = summary(root, "action")
        keep = (expected >= np.array(s["q01"])) & (expected <= np.array(s["q99"]))
        assert keep.any()
        np.testing.assert_allclose(back.numpy()[keep], expected[keep], atol=1e-5)
    else:
        np.testing.assert_allclose(back.numpy(), expected, atol=1e-5)
    if mode == "q99":
        assert float(item["action"].abs().max()) <= 1.0


def test_q99_matches_openvla_formula_and_mask(dataset: tuple[Path, list]) -> None:
    root, steps = dataset
    mask = [True, True, True, False]  # e.g. a gripper left raw
    ds = TorchDataset(root, cameras=[], normalize="q99", normalize_mask=mask)
    item = ds[3]
    x = raw(steps, 0, "action")[3]
    s = summary(root, "action")
    q01, q99 = np.array(s["q01"]), np.array(s["q99"])
    expected = np.clip(2 * (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)
    expected[3] = x[3]
    try:
        from telecorder.actions.normalize import Normalizer
    except ImportError:
        pass
    else:  # the shared implementation, once present, is the reference
        stats = json.loads((root / "meta" / "stats.json").read_text())
        norm = Normalizer.from_dataset_stats(stats, feature="action", mode="q99", mask=np.array(mask))
        expected = np.asarray(norm.normalize(x[None]))[0]
    np.testing.assert_allclose(item["action"][0].numpy(), expected, atol=1e-5)
    # States have their own statistics and no mask.
    xs = raw(steps, 0, "observation.state")[3]
    ss = summary(root, "observation.state")
    lo, hi = np.array(ss["q01"]), np.array(ss["q99"])
    np.testing.assert_allclose(
        item["state"][0].numpy(), np.clip(2 * (xs - lo) / (hi - lo + 1e-8) - 1, -1, 1), atol=1e-5
    )


def test_action_tokens_from_tokenizer(dataset: tuple[Path, list]) -> None:
    class Bins:
        def encode(self, actions: np.ndarray) -> list[int]:
            return (np.digitize(actions, np.linspace(-1, 1, 255)) + 1000).reshape(-1).tolist()

    root, _ = dataset
    item = TorchDataset(root, cameras=[], horizon=4, tokenizer=Bins())[0]
    assert item["action_tokens"].dtype == torch.int64 and item["action_tokens"].shape == (16,)
    assert int(item["action_tokens"].min()) >= 1000


def test_seeded_shuffle_is_deterministic(dataset: tuple[Path, list]) -> None:
    root, _ = dataset
    ds = TorchDataset(root, cameras=[], normalize="none")

    def order(seed: int) -> list[tuple[int, int]]:
        g = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, generator=g)
        return [(int(e), int(s)) for b in loader for e, s in zip(b["episode_index"], b["step_index"], strict=True)]

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(order(3)) == [(e, s) for e, n in enumerate(LENGTHS) for s in range(n)]


def test_dataloader_workers_match_single_process(dataset: tuple[Path, list]) -> None:
    root, _ = dataset
    ds = TorchDataset(root, image_size=(24, 32), history=2, horizon=3)
    ds[0]  # files opened in the parent must not leak into the forked workers
    single = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0))
    multi = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2))
    assert len(single) == len(multi) == -(-len(ds) // 4)
    for a, b in zip(single, multi, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key]
    ds.close()


def test_construction_opens_no_episode_file(dataset: tuple[Path, list], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = dataset
    opened: list[Path] = []

    class CountingReader(native_source.EpisodeReader):
        def __init__(self, path: Path, info: object = None) -> None:
            opened.append(Path(path))
            super().__init__(path, info)

    monkeypatch.setattr(native_source, "EpisodeReader", CountingReader)
    ds = TorchDataset(root, history=3, horizon=4)
    assert len(ds) == sum(LENGTHS) and opened == []
    ds[LENGTHS[0] + 1]
    assert [p.name for p in opened] == ["episode_000001.h5"]
    ds.close()

    # A corrupt episode file does not stop construction; reading from it names the file.
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "episodes" / "episode_000002.h5").write_bytes(b"not hdf5")
    ds = TorchDataset(copy)
    assert len(ds) == sum(LENGTHS)
    ds[0]
    with pytest.raises(DatasetError, match="episode_000002"):
        ds[len(ds) - 1]
    ds.close()


def test_exclude_bad_and_episode_selection(dataset: tuple[Path, list], tmp_path: Path) -> None:
    root, _ = dataset
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    index = copy / "meta" / "episodes.jsonl"
    records = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    records[1]["bad"] = True
    index.write_text("".join(json.dumps(r) + "\n" for r in records))

    ds = TorchDataset(copy, cameras=[])
    assert ds.episode_indices == [0, 2] and len(ds) == LENGTHS[0] + LENGTHS[2]
    assert int(ds[LENGTHS[0]]["episode_index"]) == 2
    assert len(TorchDataset(copy, cameras=[], exclude_bad=False)) == sum(LENGTHS)
    assert TorchDataset(copy, cameras=[], episodes=[1, 2]).episode_indices == [2]
    with pytest.raises(DatasetError, match="no episode"):
        TorchDataset(copy, episodes=[7])


def test_episode_split() -> None:
    eps = list(range(20))
    train, val = episode_split(eps, val_fraction=0.2, seed=1)
    assert (train, val) == episode_split(eps, val_fraction=0.2, seed=1)
    assert episode_split(eps, val_fraction=0.2, seed=2) != (train, val)
    assert len(val) == 4 and sorted(train + val) == eps and not set(train) & set(val)
    assert [len(s) for s in episode_split([5, 9], val_fraction=0.1)] == [1, 1]
    assert episode_split([3], val_fraction=0.5) == ([3], [])
    assert episode_split(eps, val_fraction=0.0) == (eps, [])
    with pytest.raises(ValueError):
        episode_split(eps, val_fraction=1.0)


def test_episode_split_of_dataset(dataset: tuple[Path, list]) -> None:
    root, _ = dataset
    ds = TorchDataset(root, cameras=[], episodes=[0, 2])
    train, val = episode_split(ds, val_fraction=0.5, seed=0)
    assert sorted(train + val) == [0, 2] and len(val) == 1
    train, val = episode_split(root, seed=0)
    assert sorted(train + val) == [0, 1, 2]


def test_mixture_weights_and_own_statistics(dataset: tuple[Path, list], tmp_path: Path) -> None:
    root, _ = dataset
    other = tmp_path / "other"
    write_dataset(other, make_info(cameras=("front", "wrist")), [9, 5], seed=50)
    a = TorchDataset(root, cameras=["front"], image_size=(16, 16), normalize="mean_std")
    b = TorchDataset(other, cameras=["front"], image_size=(16, 16), normalize="mean_std")
    mix = MixtureDataset([(a, 3.0), (b, 1.0)], seed=7, length=4000)
    picks = [mix.choose(i) for i in range(len(mix))]
    share = np.mean([k == 0 for k, _ in picks])
    assert abs(share - 0.75) < 0.03
    assert max(j for k, j in picks if k == 1) < len(b)
    assert picks == [MixtureDataset([(a, 3.0), (b, 1.0)], seed=7, length=4000).choose(i) for i in range(4000)]
    mix.set_epoch(1)
    assert [mix.choose(i) for i in range(50)] != picks[:50]

    i = next(i for i in range(100) if mix.choose(i)[0] == 1)
    _, j = mix.choose(i)
    item = mix[i]
    assert int(item["dataset_index"]) == 1
    # The item is normalized with its own dataset's statistics.
    assert torch.equal(item["action"], b[j]["action"])
    raw_b = b.denormalize_action(item["action"])
    assert not torch.allclose(a.denormalize_action(item["action"]), raw_b)
    batch = next(iter(torch.utils.data.DataLoader(mix, batch_size=8)))
    assert batch["images.front"].shape == (8, 1, 3, 16, 16)
    with pytest.raises(ValueError):
        MixtureDataset([(a, 0.0)])


class CharTokenizer:
    """Tiny local tokenizer: one id per character, EOS = 1."""

    eos_token_id = 1

    def encode(self, text: str) -> list[int]:
        return [2 + ord(c) for c in text]


def test_prompt_adapter_loss_mask(dataset: tuple[Path, list]) -> None:
    class Bins:
        def encode(self, actions: np.ndarray) -> list[int]:
            return (31000 + np.digitize(actions, np.linspace(-1, 1, 255))).reshape(-1).tolist()

    adapter = VLAPromptAdapter(CharTokenizer(), Bins())
    actions = np.array([[-1.0, 0.0, 1.0], [0.5, -0.5, 0.0]], np.float32)
    out = adapter("Stack the blocks.", actions)
    assert out.text == "In: What action should the robot take to stack the blocks?\nOut:"
    n_prompt = len(out.text)
    assert len(out.input_ids) == n_prompt + 6 + 1
    assert out.loss_mask.tolist() == [False] * n_prompt + [True] * 7
    assert (out.labels[:n_prompt] == IGNORE_INDEX).all()
    assert out.labels[-1] == CharTokenizer.eos_token_id == out.input_ids[-1]
    np.testing.assert_array_equal(out.labels[n_prompt:-1], Bins().encode(actions))
    np.testing.assert_array_equal(adapter.inference_ids("Stack the blocks"), out.input_ids[:n_prompt])

    root, _ = dataset
    item = TorchDataset(root, cameras=[], horizon=2, tokenizer=Bins())[5]
    from_item = adapter.from_sample(item)
    np.testing.assert_array_equal(from_item.labels[-9:-1], item["action_tokens"].numpy())
    assert from_item.loss_mask.sum() == 9
    with pytest.raises(ValueError):
        VLAPromptAdapter(CharTokenizer(), prompt="no placeholder")


def test_fallback_normalizer_matches_shared_one(dataset: tuple[Path, list]) -> None:
    normalize = pytest.importorskip("telecorder.actions.normalize")
    root, _ = dataset
    stats = json.loads((root / "meta" / "stats.json").read_text())
    x = np.random.default_rng(1).normal(size=(50, 4)) * 3
    mask = np.array([True, True, False, True])
    for mode in normalization.NORMALIZE_MODES:
        shared = normalize.Normalizer.from_dataset_stats(stats, feature="action", mode=mode, mask=mask)
        local = normalization._BoundsNormalizer(mode, stats["features"]["action"], mask)
        np.testing.assert_allclose(local.normalize(x), shared.normalize(x), atol=1e-12)
        np.testing.assert_allclose(local.unnormalize(x), shared.unnormalize(x), atol=1e-12)


def _textured_jpeg(h: int = 480, w: int = 640) -> bytes:
    import cv2

    rng = np.random.default_rng(3)
    rgb = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    rgb[: h // 4, : w // 4] = (200, 30, 10)  # a red block: channel order shows
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (cv2.IMWRITE_JPEG_QUALITY, 90))
    assert ok
    return buf.tobytes()


def test_reduced_jpeg_decoding_picks_the_largest_scale_that_keeps_the_size() -> None:
    import cv2

    from telecorder.loaders.frames import reduced_flag

    assert reduced_flag((480, 640), (224, 224)) == cv2.IMREAD_REDUCED_COLOR_2
    # Quarter and eighth scale alias: only with twice the output size left for INTER_AREA.
    assert reduced_flag((480, 640), (120, 160)) == cv2.IMREAD_REDUCED_COLOR_2
    assert reduced_flag((480, 640), (60, 80)) == cv2.IMREAD_REDUCED_COLOR_4
    assert reduced_flag((480, 640), (30, 40)) == cv2.IMREAD_REDUCED_COLOR_8
    assert reduced_flag((480, 640), (241, 320)) == cv2.IMREAD_COLOR  # half would be too small
    assert reduced_flag((480, 640), (480, 640)) == cv2.IMREAD_COLOR
    assert reduced_flag(None, (224, 224)) == cv2.IMREAD_COLOR


@pytest.mark.parametrize("size", [(224, 224), (96, 128), (50, 60)])
def test_reduced_decode_is_close_to_full_decode_and_resize(size: tuple[int, int]) -> None:
    from telecorder.datasets.images import decode_image
    from telecorder.datasets.model_inputs import model_image
    from telecorder.loaders.frames import decode_chw

    jpeg = _textured_jpeg()
    fast = decode_chw(jpeg, size, stored_hw=(480, 640))
    reference = model_image(decode_image(jpeg), size)  # what the loader did before: full decode + INTER_AREA
    assert fast.shape == reference.shape == (3, *size) and fast.dtype == np.uint8
    diff = np.abs(fast.astype(int) - reference.astype(int))
    assert diff.mean() < 2.5 and np.percentile(diff, 99) < 20
    red = fast[:, : size[0] // 8, : size[1] // 8].reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(red, [200, 30, 10], atol=6)
    # Without the stored size, or for the stored size itself, frames decode in full.
    np.testing.assert_array_equal(decode_chw(jpeg, None), model_image(decode_image(jpeg), None))
    with pytest.raises(DatasetError, match="camera 'x' step 3: stored image bytes cannot be decoded"):
        decode_chw(jpeg[:200] + b"\x00" * 10, size, stored_hw=(480, 640), where="camera 'x' step 3")


def test_workers_start_after_opencv_used_its_threads_in_the_parent(dataset: tuple[Path, list]) -> None:
    import cv2

    # Full-size resizes run on OpenCV's thread pool; a forked worker that reconfigured that pool
    # (cv2.setNumThreads) waited forever on the parent's threads. A hang fails here, not blocks.
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for _ in range(3):
        cv2.resize(frame, (224, 224), interpolation=cv2.INTER_AREA)
    root, _ = dataset
    ds = TorchDataset(root, image_size=(24, 32))
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, timeout=120)
    assert sum(len(b["step_index"]) for b in loader) == len(ds)
