"""OXE output as Octo and OpenVLA consume it: the kwargs blocks against their loaders' parameter
lists, both splits read by real tensorflow-datasets the way their loaders open them, the
statistics through their normalizations, and the binarized gripper.

Octo and OpenVLA themselves (JAX / dlimp stacks) do not install here; their function signatures
are written down below from the upstream source, and the few lines of their logic that decide
whether our files work are reimplemented with a citation.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="the rlds extra (tensorflow-datasets) is not installed")
pytest.importorskip("mujoco", reason="EEF actions need MuJoCo forward kinematics (the sim extra)")

from conftest import write_dataset
from test_cli import run, tool
from test_conv_rlds import JOINTS
from test_conv_rlds import arm_info as sim_arm_info

from telecorder.converters.base import ConversionError
from telecorder.converters.pipeline import ConvertOptions, convert
from telecorder.converters.rlds.reader import RLDSReader
from telecorder.converters.rlds.schema import import_tfds
from telecorder.converters.rlds.writer import RLDSWriter
from telecorder.datasets.episode_file import Episode
from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature
from telecorder.datasets.splits import episode_split
from telecorder.datasets.stats import DEFAULT_ALPHA

pytestmark = pytest.mark.tf

LENGTHS = [6, 5, 7, 4, 6]
VAL_FRACTION = 0.4

_KW = inspect.Parameter.KEYWORD_ONLY
_POS = inspect.Parameter.POSITIONAL_OR_KEYWORD


def _signature(positional: tuple[str, ...], keyword_only: tuple[str, ...], required_kw: tuple[str, ...]) -> inspect.Signature:
    params = [inspect.Parameter(n, _POS) for n in positional]
    params += [inspect.Parameter(n, _KW, **({} if n in required_kw else {"default": None})) for n in keyword_only]
    return inspect.Signature(params)


# octo-models/octo@241fb35, octo/data/dataset.py, make_dataset_from_rlds(name, data_dir, *, train, ...)
OCTO_SIGNATURE = _signature(
    ("name", "data_dir"),
    (
        "train", "standardize_fn", "shuffle", "image_obs_keys", "depth_obs_keys", "proprio_obs_key",
        "language_key", "action_proprio_normalization_type", "dataset_statistics",
        "force_recompute_dataset_statistics", "action_normalization_mask", "filter_functions",
        "skip_norm", "ignore_errors", "num_parallel_reads", "num_parallel_calls",
    ),
    required_kw=("train",),
)
# openvla/openvla@c8f03f4, prismatic/vla/datasets/rlds/dataset.py, make_dataset_from_rlds(name, data_dir, *, train, ...)
OPENVLA_SIGNATURE = _signature(
    ("name", "data_dir"),
    (
        "train", "standardize_fn", "shuffle", "image_obs_keys", "depth_obs_keys", "state_obs_keys",
        "language_key", "action_proprio_normalization_type", "dataset_statistics", "absolute_action_mask",
        "action_normalization_mask", "num_parallel_reads", "num_parallel_calls",
    ),
    required_kw=("train",),
)
# Values of NormalizationType (a str Enum) in each: octo/data/utils/data_utils.py and
# prismatic/vla/datasets/rlds/utils/data_utils.py.
OCTO_NORMALIZATION = {"normal", "bounds"}
OPENVLA_NORMALIZATION = {"normal", "bounds", "bounds_q99"}


def arm_info() -> DatasetInfo:
    return sim_arm_info(fps=10.0)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Five recorded episodes converted by the CLI with a val split and a binarized gripper."""
    root = tmp_path_factory.mktemp("oxe_consumers")
    steps = write_dataset(root / "demos", arm_info(), LENGTHS)
    dst = root / "demos_oxe"
    run(tool("telecorder"), "convert", str(root / "demos"), str(dst), "--to", "oxe", "--val-fraction", str(VAL_FRACTION),
        "--binarize-gripper", check=True)
    config_path = dst / "demos_oxe" / "1.0.0" / "oxe_config.json"
    return {"dst": dst, "steps": steps, "config": json.loads(config_path.read_text())}


def _builder(kwargs: dict):
    _, tfds = import_tfds()
    # Both loaders open the dataset exactly like this (tfds.builder(name, data_dir=data_dir)).
    return tfds.builder(kwargs["name"], data_dir=kwargs["data_dir"])


def _episodes(builder, split: str) -> list[dict]:
    _, tfds = import_tfds()
    ds = builder.as_dataset(split=split, read_config=tfds.ReadConfig(interleave_cycle_length=1))
    return [{"id": int(ep["episode_metadata"]["episode_id"]), "steps": list(ep["steps"])} for ep in tfds.as_numpy(ds)]


# --------------------------------------------------------------------------- kwargs blocks


@pytest.mark.parametrize(("stack", "signature"), [("octo", OCTO_SIGNATURE), ("openvla", OPENVLA_SIGNATURE)])
def test_kwargs_bind_to_the_loaders_signature(converted: dict, stack: str, signature: inspect.Signature) -> None:
    kwargs = converted["config"]["make_dataset_from_rlds_kwargs"][stack]
    # The loaders pass train= themselves (Octo's make_single_dataset(**dataset_kwargs, train=train)).
    assert "train" not in kwargs
    bound = signature.bind(**kwargs, train=False)  # TypeError on any key the function does not take
    assert bound.arguments["name"] == "demos_oxe"
    for descriptive in ("version", "action_encoding", "state_encoding", "control_frequency", "conventions"):
        assert descriptive not in kwargs
    norm = kwargs.get("action_proprio_normalization_type", "normal")
    assert norm in (OCTO_NORMALIZATION if stack == "octo" else OPENVLA_NORMALIZATION)


def test_each_block_is_rejected_by_the_other_loader(converted: dict) -> None:
    # Why there are two blocks: the signatures differ in how proprio is named.
    blocks = converted["config"]["make_dataset_from_rlds_kwargs"]
    with pytest.raises(TypeError):
        OPENVLA_SIGNATURE.bind(**blocks["octo"], train=True)
    with pytest.raises(TypeError):
        OCTO_SIGNATURE.bind(**blocks["openvla"], train=True)


@pytest.mark.parametrize("stack", ["octo", "openvla"])
def test_kwargs_name_keys_the_dataset_has(converted: dict, stack: str) -> None:
    kwargs = converted["config"]["make_dataset_from_rlds_kwargs"][stack]
    builder = _builder(kwargs)
    steps = builder.info.features["steps"]
    observation = steps["observation"]
    # Octo and OpenVLA's restructure(): new_obs[f"image_{new}"] = old_obs[old] for each non-None old.
    # Octo trains on primary + wrist; OpenVLA's RLDSDataset loads only the primary view.
    views = {"primary": "image", "wrist": "wrist_image"} if stack == "octo" else {"primary": "image"}
    assert kwargs["image_obs_keys"] == views
    for old in kwargs["image_obs_keys"].values():
        assert old is None or old in observation
    assert all(old is None or old in observation for old in kwargs["depth_obs_keys"].values())
    proprio_keys = [kwargs["proprio_obs_key"]] if stack == "octo" else kwargs["state_obs_keys"]
    proprio_dim = sum(observation[k].shape[-1] for k in proprio_keys)
    stats = json.loads(Path(converted["config"]["dataset"]["dataset_statistics"]).read_text())
    assert proprio_dim == len(stats["proprio"]["mean"]) == 6
    # The language key must be a string field of the step (both raise unless it is tf.string).
    _, tfds = import_tfds()
    assert isinstance(steps[kwargs["language_key"]], tfds.features.Text)
    assert len(kwargs["action_normalization_mask"]) == steps["action"].shape[-1] == len(stats["action"]["mean"])
    assert kwargs["action_normalization_mask"] == [True] * 6 + [False]
    if stack == "openvla":
        # EEF deltas are relative, the gripper command absolute (OpenVLA's EEF_POS contract in materialize.py).
        assert kwargs["absolute_action_mask"] == [False] * 6 + [True]


@pytest.mark.parametrize(
    ("cameras", "octo_views"),
    [
        (("front",), {"primary": "image", "wrist": None}),
        (("front", "side", "wrist"), {"primary": "image", "secondary": "image_1", "wrist": "wrist_image"}),
    ],
)
def test_views_follow_the_recorded_cameras(tmp_path: Path, cameras: tuple[str, ...], octo_views: dict) -> None:
    from telecorder.converters.rlds.oxe import KWARGS_KEY, OXEWriter

    base = arm_info()
    feats = [base.features["observation.state"], base.features["action"]] + [image_feature(c, 48, 64) for c in cameras]
    writer = OXEWriter(tmp_path / "views", DatasetInfo.create(feats, fps=10.0, robot_type=base.robot_type))
    blocks = writer.config()[KWARGS_KEY]
    # A missing wrist view stays as None: Octo pads it and masks it out for models that expect one.
    assert blocks["octo"]["image_obs_keys"] == octo_views
    assert blocks["openvla"]["image_obs_keys"] == {"primary": "image"}


def test_descriptive_block(converted: dict) -> None:
    described = converted["config"]["dataset"]
    split = episode_split(range(len(LENGTHS)), VAL_FRACTION)
    assert described["splits"] == {"train": len(split[0]), "val": len(split[1])}
    assert described["action_encoding"] == "EEF_POS" and described["control_frequency"] == 10.0
    assert described["gripper"]["binarized"] is True and described["gripper"]["threshold"] == 0.5
    assert described["conventions"]["gripper_binarized"] is True


# --------------------------------------------------------------------------- splits


def test_both_splits_read_by_real_tfds(converted: dict) -> None:
    kwargs = converted["config"]["make_dataset_from_rlds_kwargs"]["octo"]
    builder = _builder(kwargs)
    splits = builder.info.splits
    # Octo and OpenVLA: split = "train" if train else "val" when the builder has a "val" split
    # (else they carve train[95%:], which a handful of episodes may leave empty).
    assert set(splits) == {"train", "val"}
    want_train, want_val = episode_split(range(len(LENGTHS)), VAL_FRACTION)
    train, val = _episodes(builder, "train"), _episodes(builder, "val")
    assert sorted(e["id"] for e in train) == want_train and sorted(e["id"] for e in val) == want_val
    assert not {e["id"] for e in train} & {e["id"] for e in val}
    assert splits["train"].num_examples == len(want_train) and sum(splits["val"].shard_lengths) == len(want_val)
    for ep in train + val:
        assert len(ep["steps"]) == LENGTHS[ep["id"]]  # whole episodes, never cut between splits
    # Our own reader takes either split.
    reader = RLDSReader(converted["dst"], split="val")
    assert reader.episode_indices() == list(range(len(want_val)))
    assert len(reader.read_episode(0)) == LENGTHS[want_val[0]]


def test_converting_back_reads_every_split_in_the_original_order(tmp_path: Path, converted: dict) -> None:
    # A dataset with a val split converted back must not silently drop the val episodes.
    reader = RLDSReader(converted["dst"])
    assert reader.split == "train,val"
    assert [len(reader.read_episode(i)) for i in reversed(reader.episode_indices())] == LENGTHS[::-1]
    src = converted["dst"].parent / "demos"
    rlds = tmp_path / "rlds"
    convert(src, rlds, ConvertOptions(to="rlds", val_fraction=VAL_FRACTION))
    back = convert(rlds, tmp_path / "back", ConvertOptions(to="native"))
    assert back.episodes == len(LENGTHS)
    from telecorder.datasets import Dataset

    ds = Dataset.open(tmp_path / "back")
    for i, want in enumerate(converted["steps"]):
        got = ds.episode(i).load().data["action"]
        np.testing.assert_array_equal(got, np.stack([s.numeric["action"] for s in want]))
    assert RLDSReader(rlds, split="train").episode_indices() == list(range(len(LENGTHS) - 2))


def test_val_fraction_on_a_format_without_splits(tmp_path: Path, converted: dict) -> None:
    src = converted["dst"].parent / "demos"
    with pytest.raises(ConversionError, match="telecorder edit split"):
        convert(src, tmp_path / "out", ConvertOptions(to="lerobot", val_fraction=0.2))
    with pytest.raises(ConversionError, match="at least 2 episodes"):
        convert(src, tmp_path / "out", ConvertOptions(to="oxe", episodes=[3], val_fraction=0.2))
    assert not (tmp_path / "out").exists()


def test_writer_refuses_an_empty_val_split(tmp_path: Path) -> None:
    info = DatasetInfo.create([FeatureSpec("observation.state", "float32", (2,)), FeatureSpec("action", "float32", (2,))], fps=10.0, robot_type="toy")
    n = 3
    ep = Episode(index=0, timestamp=np.arange(n) / 10.0,
                 data={"observation.state": np.zeros((n, 2), np.float32), "action": np.ones((n, 2), np.float32)})
    writer = RLDSWriter(tmp_path / "ds", info, val_episodes=[7])
    writer.write_episode(ep)
    # tfds cannot read an empty split back ("corresponds to no data"), so Octo's train=False would fail.
    with pytest.raises(ConversionError, match="split 'val' would hold no episode"):
        writer.close()


# --------------------------------------------------------------------------- statistics


def _octo_bounds(x: np.ndarray, stats: dict) -> np.ndarray:
    # octo/data/utils/data_utils.py@241fb35, normalize_action_and_proprio, NormalizationType.BOUNDS:
    # where(mask, clip(2 * (x - p01) / (p99 - p01 + 1e-8) - 1, -1, 1), x)
    mask = np.asarray(stats.get("mask", np.ones_like(stats["p01"], dtype=bool)))
    p01, p99 = np.asarray(stats["p01"]), np.asarray(stats["p99"])
    return np.where(mask, np.clip(2 * (x - p01) / (p99 - p01 + 1e-8) - 1, -1, 1), x)


def _openvla_bounds_q99(x: np.ndarray, stats: dict) -> np.ndarray:
    # prismatic/vla/datasets/rlds/utils/data_utils.py@c8f03f4, normalize_action_and_proprio,
    # BOUNDS_Q99: low, high = q01, q99; mask default from "min"; then dims with min == max -> 0.
    low, high = np.asarray(stats["q01"]), np.asarray(stats["q99"])
    mask = np.asarray(stats.get("mask", np.ones_like(stats["min"], dtype=bool)))
    out = np.where(mask, np.clip(2 * (x - low) / (high - low + 1e-8) - 1, -1, 1), x)
    return np.where(np.asarray(stats["min"]) == np.asarray(stats["max"]), 0.0, out)


def test_statistics_serve_both_normalizations(converted: dict) -> None:
    kwargs = converted["config"]["make_dataset_from_rlds_kwargs"]["octo"]
    stats = json.loads(Path(converted["config"]["dataset"]["dataset_statistics"]).read_text())
    assert stats["num_trajectories"] == len(LENGTHS) and stats["num_transitions"] == sum(LENGTHS)
    for key in ("action", "proprio"):
        for q in ("mean", "std", "min", "max", "q01", "q99", "p01", "p99"):
            assert len(stats[key][q]) == (7 if key == "action" else 6), (key, q)
        assert stats[key]["p01"] == stats[key]["q01"] and stats[key]["p99"] == stats[key]["q99"]

    builder = _builder(kwargs)
    rows = [s for split in ("train", "val") for ep in _episodes(builder, split) for s in ep["steps"]]
    stored = np.stack([s["action"] for s in rows])
    actions = stored.astype(np.float64)
    proprio = np.stack([s["observation"]["state"] for s in rows]).astype(np.float64)
    # Statistics over every split, as both loaders compute them (split="all"), and the quantiles
    # exactly their np.quantile(actions, q, 0) on the float32 arrays they read.
    assert stored.dtype == np.float32
    for ours, q in (("q01", 0.01), ("q99", 0.99)):
        assert stats["action"][ours] == np.quantile(stored, q, 0).tolist()
    assert stats["action"]["q99"][6] == 1.0 and stats["action"]["q01"][6] == 0.0  # the binarized gripper
    np.testing.assert_allclose(stats["proprio"]["mean"], proprio.mean(0), rtol=1e-5, atol=1e-7)

    action_stats = {**stats["action"], "mask": kwargs["action_normalization_mask"]}
    for norm in (_octo_bounds(actions, action_stats), _openvla_bounds_q99(actions, action_stats)):
        assert np.abs(norm[:, :6]).max() <= 1.0
        inside = np.mean(np.abs(norm[:, :6]) < 1.0)
        assert inside > 0.9  # the 1-99% band is spread over [-1, 1], not collapsed onto its ends
        np.testing.assert_array_equal(norm[:, 6], actions[:, 6])  # the gripper is left as 0/1
    proprio_norm = _octo_bounds(proprio, stats["proprio"])
    assert np.abs(proprio_norm).max() <= 1.0 and np.mean(np.abs(proprio_norm) < 1.0) > 0.9


# --------------------------------------------------------------------------- gripper


def test_binarized_gripper_is_open_above_half(converted: dict) -> None:
    builder = _builder(converted["config"]["make_dataset_from_rlds_kwargs"]["octo"])
    for split in ("train", "val"):
        for ep in _episodes(builder, split):
            got = np.array([s["action"][6] for s in ep["steps"]])
            commanded = np.array([s.numeric["action"][JOINTS.index("gripper")] for s in converted["steps"][ep["id"]]])
            # 1 = open, 0 = closed in both our data and the Octo / OpenVLA RLDS convention: no flip.
            np.testing.assert_array_equal(got, (commanded > 0.5).astype(np.float32))
            assert set(np.unique(got)) <= {0.0, 1.0}


def test_a_tfds_catalogue_name_is_refused(tmp_path: Path) -> None:
    from telecorder.converters.rlds.oxe import OXEWriter

    # tfds.builder("bridge", data_dir=...) would build the catalogue's Bridge dataset, not ours.
    with pytest.raises(ConversionError, match="'bridge' is a dataset of the TFDS catalogue"):
        OXEWriter(tmp_path / "bridge", arm_info())


# --------------------------------------------------------------------------- mixtures
#
# How Octo and OpenVLA train: make_interleaved_dataset(dataset_kwargs_list, ...) over several
# datasets. Below, the lines of both that decide whether our blocks work, transcribed with their
# source: the interleaving (which passes dataset_statistics= itself on its second call) and the
# statistics part of make_dataset_from_rlds (a path is loaded; None looks up, or fills, the cache
# <builder.data_dir>/dataset_statistics_<sha256>.json of get_dataset_statistics).

STACKS = {"octo": (OCTO_SIGNATURE, ("p01", "p99")), "openvla": (OPENVLA_SIGNATURE, ("q01", "q99"))}


def _tree_map(fn, tree: dict) -> dict:
    # Both: data_utils.tree_map, {k: tree_map(fn, v) if isinstance(v, dict) else fn(v)}.
    return {k: _tree_map(fn, v) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


def _computed_statistics(builder, stack: str, proprio_key: str) -> dict:
    # get_dataset_statistics, the part after a cache miss: every split, concatenated float32 arrays.
    _, tfds = import_tfds()
    rows = [s for ep in tfds.as_numpy(builder.as_dataset(split="all")) for s in ep["steps"]]
    actions = np.stack([s["action"] for s in rows]).astype(np.float32)  # tf.cast(traj["action"], tf.float32)
    proprio = np.stack([s["observation"][proprio_key] for s in rows]).astype(np.float32)
    lo, hi = STACKS[stack][1]
    per = {
        key: {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "max": x.max(0).tolist(), "min": x.min(0).tolist(),
              hi: np.quantile(x, 0.99, 0).tolist(), lo: np.quantile(x, 0.01, 0).tolist()}
        for key, x in (("action", actions), ("proprio", proprio))
    }
    episodes = sum(builder.info.splits[s].num_examples for s in builder.info.splits)
    return {**per, "num_transitions": len(rows), "num_trajectories": episodes}


def _make_dataset_from_rlds(stack: str, log: list[tuple[str, str]]):
    signature = STACKS[stack][0]

    def make_dataset_from_rlds(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)  # TypeError on what the real one does not take
        kw = {p.name: p.default for p in signature.parameters.values() if p.default is not inspect.Parameter.empty}
        kw.update(bound.arguments)
        builder = _builder(kw)
        stats = kw["dataset_statistics"]
        if isinstance(stats, str):
            stats, source = json.loads(Path(stats).read_text()), "path"
        elif stats is None:
            # octo: (str(builder.info), str(proprio_obs_key), standardize_fn spec or "", *filter specs);
            # openvla: (str(builder.info), str(state_obs_keys), inspect.getsource(standardize_fn) or "").
            keys = str(kw["proprio_obs_key"]) if stack == "octo" else str(kw["state_obs_keys"])
            digest = hashlib.sha256("".join((str(builder.info), keys, "")).encode("utf-8")).hexdigest()
            cache = Path(builder.data_dir) / f"dataset_statistics_{digest}.json"
            if cache.exists():
                stats, source = json.loads(cache.read_text()), "cache"
            else:
                proprio_key = kw["proprio_obs_key"] if stack == "octo" else kw["state_obs_keys"][0]
                stats, source = _computed_statistics(builder, stack, proprio_key), "computed"
        else:
            source = "passed"
        log.append((kw["name"], source))
        stats = _tree_map(np.array, stats)
        mask = kw["action_normalization_mask"]
        if mask is not None:
            if len(mask) != stats["action"]["mean"].shape[-1]:
                raise ValueError("Length of skip_normalization_mask does not match action dimension")
            stats["action"]["mask"] = np.array(mask)
        return builder, stats

    return make_dataset_from_rlds


def _make_interleaved_dataset(stack: str, make, dataset_kwargs_list: list[dict], sample_weights=None, *, train: bool):
    # octo/data/dataset.py@241fb35 make_interleaved_dataset, and its copy in
    # prismatic/vla/datasets/rlds/dataset.py@c8f03f4 (which deep-copies each entry and pops
    # "dataset_frame_transform_kwargs" first); threads and reads are allocated from the weights.
    if not sample_weights:
        sample_weights = [1.0] * len(dataset_kwargs_list)
    dataset_sizes, all_dataset_statistics = [], {}
    for dataset_kwargs in dataset_kwargs_list:
        data_kwargs = copy.deepcopy(dataset_kwargs) if stack == "openvla" else dataset_kwargs
        data_kwargs.pop("dataset_frame_transform_kwargs", None)
        _, dataset_statistics = make(**data_kwargs, train=train)
        dataset_sizes.append(dataset_statistics["num_transitions"])
        assert dataset_kwargs["name"] not in all_dataset_statistics, f"Duplicate name {dataset_kwargs['name']}"
        all_dataset_statistics[dataset_kwargs["name"]] = dataset_statistics
    for dataset_kwargs in dataset_kwargs_list:
        dataset_kwargs.pop("dataset_frame_transform_kwargs", None)
        make(**dataset_kwargs, train=train, num_parallel_calls=1, num_parallel_reads=1,
             dataset_statistics=all_dataset_statistics[dataset_kwargs["name"]])
    return all_dataset_statistics, dataset_sizes


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Another dataset, its gripper left continuous, converted in-process."""
    root = tmp_path_factory.mktemp("oxe_second")
    write_dataset(root / "stack", arm_info(), [5, 8, 6], seed=11)
    convert(root / "stack", root / "stack_oxe", ConvertOptions(to="oxe"))
    return {"dst": root / "stack_oxe",
            "config": json.loads((root / "stack_oxe" / "stack_oxe" / "1.0.0" / "oxe_config.json").read_text())}


@pytest.mark.parametrize("stack", ["octo", "openvla"])
def test_a_two_dataset_mixture_through_make_interleaved_dataset(converted: dict, second: dict, stack: str) -> None:
    configs = (converted["config"], second["config"])
    blocks = [cfg["make_dataset_from_rlds_kwargs"][stack] for cfg in configs]
    log: list[tuple[str, str]] = []
    make = _make_dataset_from_rlds(stack, log)
    # The blocks as they stand, as entries of dataset_kwargs_list (this raised "got multiple values
    # for keyword argument 'dataset_statistics'").
    stats, sizes = _make_interleaved_dataset(stack, make, [dict(b) for b in blocks], [1.0, 0.5], train=True)
    assert list(stats) == ["demos_oxe", "stack_oxe"] and sizes == [sum(LENGTHS), 5 + 8 + 6]
    # First pass: ours, found under the name their statistics cache looks for (no pass over the data);
    # second pass: what the first returned.
    assert log == [("demos_oxe", "cache"), ("stack_oxe", "cache"), ("demos_oxe", "passed"), ("stack_oxe", "passed")]
    lo, hi = STACKS[stack][1]
    for block, cfg in zip(blocks, configs, strict=True):
        theirs = _computed_statistics(_builder(block), stack, "state")
        ours = stats[block["name"]]
        assert (ours["num_transitions"], ours["num_trajectories"]) == (theirs["num_transitions"], theirs["num_trajectories"])
        assert cfg["dataset"]["statistics_cache"][stack] in {p.name for p in Path(cfg["dataset"]["dataset_statistics"]).parent.iterdir()}
        for key in ("action", "proprio"):
            # The bounds of both normalizations (and of OpenVLA's 256 bins): the very same numbers.
            assert ours[key][lo].tolist() == theirs[key][lo] and ours[key][hi].tolist() == theirs[key][hi], (key, block["name"])
            np.testing.assert_array_equal(ours[key]["min"], theirs[key]["min"])
            np.testing.assert_array_equal(ours[key]["max"], theirs[key]["max"])
            np.testing.assert_allclose(ours[key]["mean"], theirs[key]["mean"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(ours[key]["std"], theirs[key]["std"], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(ours["action"]["mask"], block["action_normalization_mask"])
    assert stats["demos_oxe"]["action"][hi][6] == 1.0  # the binarized gripper's bound, exactly


def test_statistics_survive_the_loaders_checkpoint_save(converted: dict, second: dict) -> None:
    for stack in STACKS:
        blocks = [cfg["make_dataset_from_rlds_kwargs"][stack] for cfg in (converted["config"], second["config"])]
        stats, _ = _make_interleaved_dataset(stack, _make_dataset_from_rlds(stack, []), blocks, train=False)
        # OpenVLA's save_dataset_statistics (prismatic/vla/datasets/rlds/utils/data_utils.py@c8f03f4)
        # lists only action/proprio entries and the two counts before json.dump: any other key fails.
        for entry in stats.values():
            for key in ("action", "proprio"):
                entry[key] = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in entry[key].items()}
            for key in ("num_trajectories", "num_transitions"):
                entry[key] = entry[key].item() if isinstance(entry[key], np.ndarray) else entry[key]
        json.dumps(stats)


def test_split_sizes_in_the_config(converted: dict) -> None:
    described = converted["config"]["dataset"]
    want_train, want_val = episode_split(range(len(LENGTHS)), VAL_FRACTION)
    assert described["num_trajectories"] == {"train": len(want_train), "val": len(want_val)}
    assert described["num_transitions"] == {"train": sum(LENGTHS[i] for i in want_train),
                                            "val": sum(LENGTHS[i] for i in want_val)}


def test_past_the_exact_limit_the_sketch_reports_its_error(tmp_path: Path, converted: dict) -> None:
    src = converted["dst"].parent / "demos"
    dst = tmp_path / "big_oxe"
    convert(src, dst, ConvertOptions(to="oxe", writer_options={"exact_quantile_limit": 20}))
    version_dir = dst / "big_oxe" / "1.0.0"
    stats = json.loads((version_dir / "dataset_statistics.json").read_text())
    config = json.loads((version_dir / "oxe_config.json").read_text())
    # Approximate bounds are not cached under the loaders' names: they compute their own.
    assert config["dataset"]["statistics_cache"] == {}
    assert not list(version_dir.glob("dataset_statistics_*.json"))
    log: list[tuple[str, str]] = []
    _make_interleaved_dataset("octo", _make_dataset_from_rlds("octo", log),
                              [config["make_dataset_from_rlds_kwargs"]["octo"]], train=True)
    assert log[0] == ("big_oxe", "computed")
    rows = [s for split in ("train",) for ep in _episodes(_builder(config["make_dataset_from_rlds_kwargs"]["octo"]), split)
            for s in ep["steps"]]
    for key, values in (("action", np.stack([s["action"] for s in rows])),
                        ("proprio", np.stack([s["observation"]["state"] for s in rows]))):
        entry = stats[key]
        assert entry["quantile_method"] == "sketch" and entry["quantile_relative_error"] == DEFAULT_ALPHA
        n = len(values)
        for name, q in (("q01", 0.01), ("q99", 0.99)):
            err = np.asarray(entry[f"{name}_rank_error"])
            assert err.shape == (values.shape[1],) and (err >= 0).all() and (err <= 1).all()
            # The rank of the bound written is within the reported error of the exact quantile's.
            for d in range(values.shape[1]):
                got = np.mean(values[:, d] <= entry[name][d])
                exact = np.mean(values[:, d] <= np.quantile(values[:, d], q))
                assert abs(got - exact) <= err[d] + 2 / n, (key, name, d)


def test_sharded_conversion_past_the_limit_writes_the_same_sketch(tmp_path: Path, converted: dict) -> None:
    # Each part's rows fit the limit (it saves them), all of them together do not: the merge falls
    # back to the merged sketch, the same numbers a one-process run writes.
    src = converted["dst"].parent / "demos"
    limit = {"exact_quantile_limit": 100}
    convert(src, tmp_path / "seq", ConvertOptions(to="oxe", writer_options=limit))
    convert(src, tmp_path / "sharded", ConvertOptions(to="oxe", writer_options=limit, sharded=True, shard_episodes=2))
    seq, sharded = (json.loads((tmp_path / n / n / "1.0.0" / "dataset_statistics.json").read_text())
                    for n in ("seq", "sharded"))
    for key in ("action", "proprio"):
        assert sharded[key]["quantile_method"] == seq[key]["quantile_method"] == "sketch"
        for stat in ("q01", "q99", "q01_rank_error", "q99_rank_error", "min", "max"):
            assert sharded[key][stat] == seq[key][stat], (key, stat)
    assert not list((tmp_path / "sharded").rglob("oxe_values_*.npy"))  # the parts are gone
