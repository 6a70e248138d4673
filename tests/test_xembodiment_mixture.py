"""Cross-embodiment mixtures: robots of different widths and cameras in one DataLoader batch.

The proof of issue 24: a 6-D single arm (recorded in the sim), a 12-D bimanual pair, the 26-D G1
humanoid (LeRobot, read in place) and the 7-D Bridge RLDS sample share one batch; every value
that is not padding equals what the dataset's own TorchDataset serves for the same index.
"""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import make_info, write_dataset  # noqa: E402
from xembodiment_data import (  # noqa: E402
    BIMANUAL_NAMES,
    BRIDGE,
    G1,
    G1_EPISODES,
    record_bimanual,
    record_single_arm,
    write_bimanual_dataset,
)

from telecorder.errors import TelecorderError  # noqa: E402
from telecorder.loaders.mixture import MixtureDataset  # noqa: E402
from telecorder.loaders.mixture_spec import (  # noqa: E402
    MAX_MIXTURE_FILE_BYTES,
    MixtureError,
    parse_camera_map,
    read_mixture_file,
)
from telecorder.loaders.torch_dataset import TorchDataset  # noqa: E402

# One image size, history and horizon for every robot: the G1's 640x480 AV1 video and the bridge's
# 64x64 JPEGs are resized (or not) by each TorchDataset to what the others serve.
OPTIONS = {"image_size": (64, 64), "history": 2, "horizon": 4}
SIM_MAP = {"primary": "front", "wrist": "wrist"}
BIMANUAL_MAP = {"primary": "top", "left_wrist": "left_wrist", "right_wrist": "right_wrist"}
BRIDGE_MAP = {"primary": "image_0"}  # Octo's bridge config: image_0 is the primary view
SLOTS = ["primary", "wrist", "left_wrist", "right_wrist"]


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("mujoco")
    base = tmp_path_factory.mktemp("xembodiment")
    return record_single_arm(base / "single_arm"), record_bimanual(base / "bimanual")


def four_components() -> list[tuple[str, dict]]:
    """(path, TorchDataset options) of the four robots; fresh loaders are built from these."""
    return [("sim", {}), ("bimanual", {}), (str(G1), {"episodes": list(G1_EPISODES)}),
            (str(BRIDGE), {"cameras": ["image_0"]})]


def check_item(batch: dict, r: int, ref: dict, *, dataset: int, embodiment: tuple[int, str],
               camera_map: dict[str, str], widths: tuple[int, int], slots: list[str]) -> None:
    """Row ``r`` of a mixture batch against ``ref``, what the component's own loader serves."""
    action_dim, state_dim = widths
    a, d = ref["action"].shape[-1], ref["state"].shape[-1]
    assert int(batch["dataset_index"][r]) == dataset
    assert (int(batch["embodiment_id"][r]), batch["embodiment"][r]) == embodiment
    assert torch.equal(batch["action"][r, :, :a], ref["action"])
    assert torch.equal(batch["state"][r, :, :d], ref["state"])
    assert not batch["action"][r, :, a:].any() and not batch["state"][r, :, d:].any()
    assert batch["action_dim_is_pad"][r].tolist() == [False] * a + [True] * (action_dim - a)
    assert batch["state_dim_is_pad"][r].tolist() == [False] * d + [True] * (state_dim - d)
    for s, slot in enumerate(slots):
        image = batch[f"images.{slot}"][r]
        if slot in camera_map:
            assert torch.equal(image, ref[f"images.{camera_map[slot]}"]), slot
            assert not batch["image_is_pad"][r, s]
        else:
            assert not image.any() and batch["image_is_pad"][r, s], slot
    for key in ("state_is_pad", "action_is_pad", "episode_index", "step_index", "intervention", "weight"):
        assert torch.equal(batch[key][r], ref[key]), key
    assert batch["language_instruction"][r] == ref["language_instruction"]
    assert batch["task_id"][r] == ref["task_id"]


def first_batch(ds: object, workers: int) -> dict:
    # A video decoder (the G1's AV1) left as garbage in this process would be freed inside a forked
    # worker, whose copy has none of the decoder's threads, and hang it there: free it here first.
    gc.collect()
    return next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds), num_workers=workers)))


def batches_agree(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def test_four_robots_in_one_batch(native: tuple[Path, Path]) -> None:
    if not G1.is_dir() or not BRIDGE.is_dir():
        pytest.skip(f"shared samples not found at {G1.parent} (../shared is absent)")
    paths = {"sim": native[0], "bimanual": native[1]}
    specs = [(paths.get(p, p), kw) for p, kw in four_components()]
    maps = [SIM_MAP, BIMANUAL_MAP, None, BRIDGE_MAP]
    mix = MixtureDataset([TorchDataset(p, **OPTIONS, **kw) for p, kw in specs], seed=1, length=32,
                         weights="uniform", camera_maps=maps)
    names = ["telecorder_sim_arm", "telecorder_sim_bimanual", "Unitree_G1_Inspire", "bridge_dataset"]
    described = json.loads(json.dumps(mix.describe()))
    assert described["padded"] and described["slots"] == SLOTS == mix.slots
    assert (described["action_dim"], described["state_dim"]) == (26, 26)
    assert [(e["name"], e["id"], e["action_dim"], e["state_dim"]) for e in mix.embodiments()] == [
        (n, k, w, w) for k, (n, w) in enumerate(zip(names, (6, 12, 26, 7), strict=True))]
    bimanual = mix.embodiments()[1]
    assert bimanual["action_names"] == list(BIMANUAL_NAMES) and bimanual["cameras"] == BIMANUAL_MAP
    assert mix.embodiments()[2]["cameras"] == {"primary": "cam_high"}  # the default: first camera is primary

    one, two = first_batch(mix, 0), first_batch(mix, 2)
    batches_agree(one, two)
    assert one["action"].shape == (32, 4, 26) and one["state"].shape == (32, 2, 26)
    assert one["images.wrist"].shape == (32, 2, 3, 64, 64) and one["image_is_pad"].shape == (32, 4)
    assert one["embodiment_id"].dtype == torch.int64
    assert set(one["dataset_index"].tolist()) == {0, 1, 2, 3}

    # References from loaders of their own, not the mixture's: what each dataset alone serves.
    refs = [TorchDataset(p, **OPTIONS, **kw) for p, kw in specs]
    default_maps = [SIM_MAP, BIMANUAL_MAP, {"primary": "cam_high"}, BRIDGE_MAP]
    try:
        for r in range(len(mix)):
            k, j = mix.choose(r)
            check_item(one, r, refs[k][j], dataset=k, embodiment=(k, names[k]), camera_map=default_maps[k],
                       widths=(26, 26), slots=SLOTS)
    finally:
        mix.close()
        for ref in refs:
            ref.close()


def test_same_robot_shares_an_id_and_default_slots(native: tuple[Path, Path]) -> None:
    sim, bimanual = native
    parts = [TorchDataset(sim, episodes=[0], **OPTIONS), TorchDataset(bimanual, **OPTIONS),
             TorchDataset(sim, episodes=[1], **OPTIONS)]
    mix = MixtureDataset([(p, 1.0) for p in parts], seed=4, length=30)  # widths differ: padded unasked
    assert mix.layout is not None and mix.slots == SLOTS
    assert [e["name"] for e in mix.embodiments()] == ["telecorder_sim_arm", "telecorder_sim_bimanual"]
    assert [d["embodiment_id"] for d in mix.describe()["datasets"]] == [0, 1, 0]
    batch = first_batch(mix, 2)
    assert set(batch["dataset_index"].tolist()) == {0, 1, 2}
    refs = [TorchDataset(sim, episodes=[0], **OPTIONS), TorchDataset(bimanual, **OPTIONS),
            TorchDataset(sim, episodes=[1], **OPTIONS)]
    for r in range(len(mix)):
        k, j = mix.choose(r)
        check_item(batch, r, refs[k][j], dataset=k, embodiment=[(0, "telecorder_sim_arm"),
                   (1, "telecorder_sim_bimanual"), (0, "telecorder_sim_arm")][k],
                   camera_map=[SIM_MAP, BIMANUAL_MAP, SIM_MAP][k], widths=(12, 12), slots=SLOTS)
    # A name given by the user wins over the robot type; wider widths on request.
    named = MixtureDataset(parts, names=["arm_a", None, "arm_b"], action_dim=32, state_dim=16)
    assert [e["name"] for e in named.embodiments()] == ["arm_a", "telecorder_sim_bimanual", "arm_b"]
    item = named[0]
    assert item["action"].shape[-1] == 32 and item["state"].shape[-1] == 16
    assert int(item["action_dim_is_pad"].sum()) == 32 - (6 if item["embodiment"].startswith("arm") else 12)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("xmix")
    write_dataset(base / "wide", make_info(cameras=("front",), dim=7, robot_type="seven"), [6, 4], seed=1)
    write_dataset(base / "narrow", make_info(cameras=("front",), dim=4, robot_type="four"), [20, 10], seed=2)
    return base / "wide", base / "narrow"


def share_of_first(mix: MixtureDataset) -> float:
    return sum(mix.choose(i)[0] == 0 for i in range(len(mix))) / len(mix)


def test_weight_modes_and_workers(small: tuple[Path, Path]) -> None:
    wide, narrow = small
    a, b = TorchDataset(wide, cameras=[]), TorchDataset(narrow, cameras=[])
    assert (len(a), len(b)) == (10, 30)
    assert abs(share_of_first(MixtureDataset([a, b], length=4000)) - 0.25) < 0.03  # "steps" by default
    assert abs(share_of_first(MixtureDataset([a, b], weights="steps", length=4000)) - 0.25) < 0.03
    assert abs(share_of_first(MixtureDataset([a, b], weights="uniform", length=4000)) - 0.5) < 0.03
    given = MixtureDataset([a, b], weights=[3.0, 1.0], seed=5, length=4000)
    assert abs(share_of_first(given) - 0.75) < 0.03
    pairs = MixtureDataset([(a, 3.0), (b, 1.0)], seed=5, length=4000)
    assert [given.choose(i) for i in range(200)] == [pairs.choose(i) for i in range(200)]
    assert [given.choose(i) for i in range(200)] != [MixtureDataset([a, b], weights=[3.0, 1.0], seed=6,
                                                                    length=4000).choose(i) for i in range(200)]
    mix = MixtureDataset([a, b], weights="uniform", seed=2, length=40)
    want = [mix.choose(i)[0] for i in range(40)]
    for workers in (0, 2):
        gc.collect()  # as in first_batch
        got = torch.cat([x["dataset_index"] for x in torch.utils.data.DataLoader(mix, batch_size=8,
                                                                                 num_workers=workers)])
        assert got.tolist() == want
    for bad, match in (("bogus", "unknown mixture weights"), ([1.0], "1 mixture weight"),
                       ([1.0, math.nan], "finite"), ([0.0, 0.0], "not all zero"), ([-1.0, 1.0], ">= 0")):
        with pytest.raises(MixtureError, match=match):
            MixtureDataset([a, b], weights=bad)
    with pytest.raises(MixtureError, match="once"):
        MixtureDataset([(a, 1.0), (b, 1.0)], weights="uniform")


def test_same_shapes_stay_as_before(small: tuple[Path, Path], tmp_path: Path) -> None:
    wide, _ = small
    twin = tmp_path / "twin"
    write_dataset(twin, make_info(cameras=("front",), dim=7, robot_type="seven"), [5], seed=9)
    a, b = TorchDataset(wide, image_size=(16, 16)), TorchDataset(twin, image_size=(16, 16))
    plain = MixtureDataset([(a, 1.0), (b, 1.0)], length=8)
    assert plain.layout is None and plain.slots == []
    k, j = plain.choose(0)
    assert set(plain[0]) == {*[a, b][k][j].keys(), "dataset_index"}
    assert plain.embodiments()[0]["name"] == "seven" and len(plain.embodiments()) == 1
    padded = MixtureDataset([(a, 1.0), (b, 1.0)], length=8, cross_embodiment=True)
    item = padded[0]
    assert set(item) ^ set(plain[0]) == {"action_dim_is_pad", "state_dim_is_pad", "image_is_pad", "embodiment_id",
                                         "embodiment", "images.primary", "images.front"}
    assert not item["action_dim_is_pad"].any() and item["image_is_pad"].tolist() == [False]
    assert torch.equal(item["images.primary"], [a, b][k][j]["images.front"])


def test_components_that_cannot_share_a_batch_are_named(native: tuple[Path, Path], small: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    sim, bimanual = native
    wide, narrow = small
    arm = TorchDataset(sim, **OPTIONS)
    # 48x64 frames as stored (the synthetic pair's), against the arm's 64x64.
    stored_size = TorchDataset(write_bimanual_dataset(tmp_path / "bimanual"), image_size=None, history=2, horizon=4)
    with pytest.raises(MixtureError, match=r"slot 'primary': component 1 \(.*bimanual\) camera 'top' gives "
                                           r"48x64 images, component 0 \(.*single_arm\) camera 'front' 64x64"):
        MixtureDataset([arm, stored_size])
    with pytest.raises(MixtureError, match=r"history 1 and horizon 4.*same ones"):
        MixtureDataset([arm, TorchDataset(bimanual, image_size=(64, 64), horizon=4)])
    with pytest.raises(MixtureError, match=r"component 0 .*camera\(s\) \['side'\] it does not serve"):
        MixtureDataset([arm, TorchDataset(bimanual, **OPTIONS)], camera_maps=[{"primary": "side"}, None])
    a, b = TorchDataset(wide, cameras=[]), TorchDataset(narrow, cameras=[])
    with pytest.raises(MixtureError, match=r"both embodiment 'robot'.*different names"):
        MixtureDataset([a, b], names=["robot", "robot"])
    with pytest.raises(MixtureError, match="action_dim=4 is narrower than component 0"):
        MixtureDataset([a, b], action_dim=4)
    assert isinstance(MixtureError("x"), TelecorderError)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "match"), [
    ("[[\"wide\", 1.0", "not valid JSON"),
    ("42", "holds a list of \\[path, weight\\]"),
    ("[]", "lists no datasets"),
    ("[[\"wide\", NaN]]", "entry 0 \\('wide'\\): weight must be finite"),
    ("[[\"wide\", -1]]", ">= 0, not -1"),
    ("[[\"wide\", \"1\"]]", "weight must be a number"),
    ("[[\"wide\", true]]", "weight must be a number"),
    ("[[\"wide\", 1], [\"nowhere\", 1]]", "entry 1 \\('nowhere'\\): no such dataset"),
    ("[[\"wide\"]]", "\\[path, weight\\] or \\[path, weight, camera map\\]"),
    ("{\"wide\": {\"weigth\": 1}}", "unknown key\\(s\\) \\['weigth'\\]"),
    ("[{\"path\": \"wide\"}]", "needs 'path' and 'weight'"),
    ("[[\"wide\", 1, {\"primary\": 3}]]", "slot 'primary' must name a camera"),
    ("[[\"wide\", 1, {\"primary\": \"front\", \"main\": \"front\"}]]", "mapped to two slots"),
    ("[[\"wide\", 0], [\"narrow\", 0]]", "every weight is 0"),
    ("[[\"wide\", 1], [\"./wide\", 2]]", "entries 0 and 1 are the same dataset"),
    ("[[7, 1]]", "path must be a non-empty string"),
])
def test_bad_mixture_files_are_one_line(small: tuple[Path, Path], text: str, match: str) -> None:
    file = write(small[0].parent / "bad.json", text)
    with pytest.raises(MixtureError, match=match) as e:
        read_mixture_file(file)
    assert "\n" not in str(e.value) and str(file) in str(e.value)


def test_mixture_file_bounds_and_folders(small: tuple[Path, Path], tmp_path: Path) -> None:
    big = write(tmp_path / "big.json", "[" + " " * MAX_MIXTURE_FILE_BYTES + "]")
    with pytest.raises(MixtureError, match="at most 1 MiB"):
        read_mixture_file(big)
    with pytest.raises(MixtureError, match="not a regular file"):
        read_mixture_file(tmp_path)
    with pytest.raises(MixtureError, match="no such mixture file"):
        read_mixture_file(tmp_path / "absent.json")


def test_mixture_file_builds_a_mixture(small: tuple[Path, Path]) -> None:
    wide, narrow = small
    base = wide.parent
    for text in ('[["wide", 2], ["narrow", 0.5, {"primary": "front"}]]',
                 '{"wide": 2, "narrow": {"weight": 0.5, "cameras": {"primary": "front"}}}',
                 f'[{{"path": "{wide}", "weight": 2}}, {{"path": "narrow", "weight": 0.5, '
                 '"cameras": {"primary": "front"}}]'):
        entries = read_mixture_file(write(base / "mix.json", text))
        assert [(e.path.resolve(), e.weight, e.cameras) for e in entries] == [
            (wide.resolve(), 2.0, None), (narrow.resolve(), 0.5, {"primary": "front"})]
    entries = read_mixture_file(write(base / "named.json", '[{"path": "wide", "weight": 1, "name": "widowx"}, '
                                                          '["narrow", 3]]'))
    mix = MixtureDataset([(TorchDataset(e.path, image_size=(16, 16)), e.weight) for e in entries],
                         names=[e.name for e in entries], camera_maps=[e.cameras for e in entries], length=64)
    assert [e["name"] for e in mix.embodiments()] == ["widowx", "four"]
    assert abs(mix.describe()["datasets"][0]["weight"] - 0.25) < 1e-12
    batch = first_batch(mix, 0)
    assert batch["action"].shape == (64, 1, 7) and set(batch["embodiment"]) == {"widowx", "four"}


def test_camera_map_text() -> None:
    assert parse_camera_map("primary=front, wrist=wrist") == {"primary": "front", "wrist": "wrist"}
    for bad, match in (("primary", "slot=camera"), ("primary=front,primary=top", "given twice"),
                       ("a.b=front", "without spaces, '.' or '/'"), ("p=front,q=front", "two slots")):
        with pytest.raises(MixtureError, match=match):
            parse_camera_map(bad)


def test_workers_forked_after_a_video_was_left_to_the_garbage_collector_do_not_hang(tmp_path: Path) -> None:
    # A worker used to free an AV1 decoder it inherited and wait forever for the parent's decoder threads.
    if not G1.is_dir():
        pytest.skip(f"the shared G1 sample is absent ({G1})")
    g1 = TorchDataset(G1, episodes=list(G1_EPISODES), image_size=(64, 64))
    g1[5]
    g1.cycle = g1  # garbage only the cyclic collector frees, as locals kept by a traceback are
    del g1
    other = TorchDataset(write_bimanual_dataset(tmp_path / "bi"), image_size=(64, 64))
    loader = torch.utils.data.DataLoader(other, batch_size=4, num_workers=2, timeout=60,
                                         worker_init_fn=lambda _: gc.collect())
    assert sum(len(b["action"]) for b in loader) == len(other)
