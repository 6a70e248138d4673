"""Multi-task, language-conditioned datasets through every export and the loaders (issue 22, part 3).

A small native dataset of four episodes, three tasks and several recorded paraphrases (episode
attributes ``task_id`` / ``paraphrase_index`` / ``task_family``, info extra ``task_suite`` and
``tasks``), written through the real writer, converted with the real pipeline and read back by
the real consumers (pyarrow, h5py, tensorflow-datasets) and by ``TorchDataset``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import synthetic_steps

from telecorder.converters.native import NativeReader
from telecorder.converters.pipeline import convert
from telecorder.converters.transform import ConvertOptions
from telecorder.datasets.async_writer import AsyncEpisodeWriter
from telecorder.datasets.dataset import Dataset, DatasetWriter
from telecorder.datasets.features import DatasetInfo, FeatureSpec, image_feature

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
TASKS = {
    "pick_red": {"family": "pick", "paraphrases": ["pick up the red cube", "grab the red block", "lift the red one"],
                 "heldout": ["raise the red cube"]},
    "bin_green": {"family": "bin", "paraphrases": ["put the green cube in the bin", "drop the green block in the bin"],
                  "heldout": ["place the green cube into the bin"]},
    "stack_red_on_blue": {"family": "stack", "paraphrases": ["put the red cube on the blue cube",
                                                             "stack the red block on the blue one"],
                          "heldout": ["place red on blue"]},
}
# (task_id, paraphrase_index, instruction as recorded: verbatim, spacing and case included)
EPISODES = [
    ("pick_red", 0, "pick up the red cube"),
    ("bin_green", 1, "Drop the green block in the bin"),
    ("pick_red", 2, "lift the red one"),
    ("", -1, "wave at the camera"),  # a person's free text: no task of the suite
]
LENGTHS = (6, 5, 7, 4)


def task_info() -> DatasetInfo:
    feats = [
        FeatureSpec("observation.state", "float32", (6,), names=JOINTS, unit="rad"),
        FeatureSpec("action", "float32", (6,), names=JOINTS, unit="rad, absolute targets"),
        image_feature("front", 48, 64),
    ]
    info = DatasetInfo.create(feats, fps=10.0, robot_type="test_arm")
    info.extra = {"task_suite": "cubes", "tasks": TASKS}
    return info


def family(task_id: str) -> str:
    return TASKS[task_id]["family"] if task_id else ""


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tasks") / "native"
    info = task_info()
    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw, encode_threads=1)
        try:
            for k, ((task_id, para, text), n) in enumerate(zip(EPISODES, LENGTHS, strict=True)):
                attrs = {"task": text, "language_instruction": text, "task_id": task_id,
                         "paraphrase_index": para, "task_family": family(task_id)}
                writer.begin(attrs)
                for s in synthetic_steps(n, info, seed=k):
                    writer.add(s)
                writer.end({"success": True}, {"task": text, "success": True}).result(timeout=30)
        finally:
            writer.close()
    return root


def run(src: Path, dst: Path, to: str, **writer_options: Any) -> Path:
    convert(src, dst, ConvertOptions(to=to, writer_options=writer_options))
    return dst


def assert_tasks_kept(path: Path, fmt: str | None = None) -> None:
    """The episodes read back from ``path`` carry each episode's instruction, task_id, paraphrase index."""
    from telecorder.converters import open_reader

    reader = open_reader(path, fmt)
    got = [reader.read_episode(i).metadata for i in reader.episode_indices()]
    assert len(got) == len(EPISODES)
    for meta, (task_id, para, text) in zip(got, EPISODES, strict=True):
        assert meta["language_instruction"] == text
        assert meta["task"] == text
        assert meta["task_id"] == task_id
        assert int(meta["paraphrase_index"]) == para
        assert meta["task_family"] == family(task_id)
    assert reader.info.extra.get("tasks") == TASKS and reader.info.extra.get("task_suite") == "cubes"


def assert_native_round_trip(path: Path, tmp: Path) -> None:
    """``path`` converted back to native keeps every episode's task attributes and the suite."""
    back = run(path, tmp / "back", "native")
    ds = Dataset.open(back)
    assert ds.info.extra["tasks"] == TASKS and ds.info.extra["task_suite"] == "cubes"
    for i, (task_id, para, text) in zip(ds.episode_indices, EPISODES, strict=True):
        with ds.episode(i) as ep:
            attrs = ep.attrs
        assert attrs["language_instruction"] == text and attrs["task"] == text
        assert attrs["task_id"] == task_id and int(attrs["paraphrase_index"]) == para
        assert attrs["task_family"] == family(task_id)


def test_the_native_dataset_holds_the_tasks(native: Path) -> None:
    assert_tasks_kept(native, "native")
    assert NativeReader(native).info.extra["tasks"]["pick_red"]["heldout"] == ["raise the red cube"]


# -- LeRobot v3 ------------------------------------------------------------------------------


def test_lerobot_tasks_parquet_and_task_index(native: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = run(native, tmp_path / "lerobot", "lerobot")
    tasks = pq.read_table(out / "meta/tasks.parquet")
    text_col = "task" if "task" in tasks.column_names else "__index_level_0__"
    by_index = dict(zip(tasks["task_index"].to_pylist(), tasks[text_col].to_pylist(), strict=True))
    # Every distinct instruction, verbatim, once.
    assert sorted(by_index.values()) == sorted({text for _, _, text in EPISODES})
    assert sorted(by_index) == list(range(len(by_index)))
    info = json.loads((out / "meta/info.json").read_text())
    assert info["total_tasks"] == len(by_index)
    frames = pq.read_table(sorted((out / "data").rglob("*.parquet"))[0])
    episode_of = frames["episode_index"].to_numpy()
    task_of = frames["task_index"].to_numpy()
    for k, (_, _, text) in enumerate(EPISODES):
        rows = task_of[episode_of == k]
        assert len(rows) == LENGTHS[k]
        assert {by_index[int(t)] for t in rows} == {text}  # every frame of the episode maps to its instruction
    episodes = pq.read_table(sorted((out / "meta/episodes").rglob("*.parquet"))[0]).to_pylist()
    assert [row["tasks"] for row in episodes] == [[text] for _, _, text in EPISODES]
    assert_tasks_kept(out, "lerobot")
    assert_native_round_trip(out, tmp_path)


# -- ALOHA / robomimic ---------------------------------------------------------------------------


def test_aloha_episode_files_carry_instruction_and_task_id(native: Path, tmp_path: Path) -> None:
    out = run(native, tmp_path / "aloha", "aloha")
    for k, (task_id, _, text) in enumerate(EPISODES):
        with h5py.File(out / f"episode_{k}.hdf5", "r") as f:
            assert f.attrs["language_instruction"] == text
            assert f.attrs["task_id"] == task_id
    assert_tasks_kept(out, "aloha")
    assert_native_round_trip(out, tmp_path)


def test_aloha_attributes_are_read_without_the_sidecar(native: Path, tmp_path: Path) -> None:
    from telecorder.converters.aloha import AlohaReader
    from telecorder.converters.base import SIDECAR

    out = run(native, tmp_path / "aloha", "aloha")
    (out / SIDECAR).unlink()  # ACT files copied on their own: the attributes still say the task
    reader = AlohaReader(out)
    for k, (task_id, _, text) in enumerate(EPISODES):
        meta = reader.read_episode(k).metadata
        assert meta["language_instruction"] == text and meta["task"] == text
        assert meta.get("task_id", "") == task_id


def test_robomimic_demo_groups_carry_instruction_and_task_id(native: Path, tmp_path: Path) -> None:
    from telecorder.converters.base import SIDECAR
    from telecorder.converters.robomimic import RobomimicReader

    out = run(native, tmp_path / "robomimic", "robomimic")
    files = list(out.glob("*.hdf5"))
    assert len(files) == 1
    with h5py.File(files[0], "r") as f:
        for k, (task_id, _, text) in enumerate(EPISODES):
            attrs = f[f"data/demo_{k}"].attrs
            assert attrs["language_instruction"] == text
            assert attrs["task_id"] == task_id
    assert_tasks_kept(out, "robomimic")
    assert_native_round_trip(out, tmp_path)
    (out / SIDECAR).unlink()
    reader = RobomimicReader(out)
    for k, (task_id, _, text) in enumerate(EPISODES):
        meta = reader.read_episode(reader.episode_indices()[k]).metadata
        assert meta["language_instruction"] == text and meta.get("task_id", "") == task_id


@pytest.mark.parametrize("to", ["native", "lerobot", "aloha", "robomimic"])
def test_sharded_exports_keep_the_tasks(native: Path, tmp_path: Path, to: str) -> None:
    """Parts written in parallel and merged keep every episode's task, in the original order."""
    out = tmp_path / f"sharded_{to}"
    convert(native, out, ConvertOptions(to=to, workers=2, shard_episodes=2))
    assert_tasks_kept(out, to)


# -- RLDS / OXE (TensorFlow) -----------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("to", ["rlds", "oxe"])
def test_rlds_and_oxe_episode_metadata_task_id_read_by_tfds(native: Path, tmp_path: Path, to: str) -> None:
    pytest.importorskip("tensorflow_datasets")
    from telecorder.converters.rlds.schema import import_tfds

    _, tfds = import_tfds()
    opts = {"action_space": "joint"} if to == "oxe" else {}
    out = run(native, tmp_path / f"tasks_{to}", to, **opts)
    if to == "oxe":
        builder = tfds.builder(f"tasks_{to}", data_dir=str(out))
    else:
        builder = tfds.builder_from_directory(str(out))
    meta_features = builder.info.features["episode_metadata"]
    assert "task_id" in meta_features
    seen = []
    for episode in tfds.as_numpy(builder.as_dataset(split="train")):
        task_id = episode["episode_metadata"]["task_id"].decode()
        instructions = {s["language_instruction"].decode() for s in episode["steps"]}
        assert len(instructions) == 1  # per step, as today
        seen.append((task_id, int(episode["episode_metadata"]["paraphrase_index"]), instructions.pop()))
    assert sorted(seen) == sorted(EPISODES)
    assert_tasks_kept(out, "rlds")
    assert_native_round_trip(out, tmp_path)


@pytest.mark.tf
def test_sharded_rlds_parts_declare_task_id_alike(native: Path, tmp_path: Path) -> None:
    """Episode 3 has an empty task_id: every part still declares the same text field."""
    pytest.importorskip("tensorflow_datasets")
    from telecorder.converters.rlds.schema import import_tfds

    _, tfds = import_tfds()
    out = tmp_path / "sharded"
    convert(native, out, ConvertOptions(to="rlds", workers=2, shard_episodes=2))
    builder = tfds.builder_from_directory(str(out))
    got = sorted(e["episode_metadata"]["task_id"].decode() for e in tfds.as_numpy(builder.as_dataset(split="train")))
    assert got == sorted(t for t, _, _ in EPISODES)


@pytest.mark.tf
def test_torch_dataset_reads_task_id_from_rlds(native: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from telecorder.loaders import TorchDataset

    out = run(native, tmp_path / "tasks_rlds", "rlds")
    ds = TorchDataset(out, cameras=[], image_size=None, normalize="mean_std", paraphrase="random")
    check_task_samples(ds)


# -- TorchDataset ------------------------------------------------------------------------------


def check_task_samples(ds: Any) -> None:
    starts = np.concatenate([[0], np.cumsum(LENGTHS)[:-1]])
    for k, (task_id, _, text) in enumerate(EPISODES):
        item = ds[int(starts[k])]
        assert item["task_id"] == task_id
        if ds.paraphrase == "recorded":
            assert item["language_instruction"] == text
        elif task_id:
            assert item["language_instruction"] in TASKS[task_id]["paraphrases"]
        else:
            assert item["language_instruction"] == text  # no known paraphrases: verbatim


@pytest.mark.parametrize("fmt", ["native", "lerobot"])
def test_torch_dataset_task_id_and_recorded_instruction(native: Path, tmp_path: Path, fmt: str) -> None:
    pytest.importorskip("torch")
    from telecorder.loaders import TorchDataset

    path = native if fmt == "native" else run(native, tmp_path / "lerobot", "lerobot")
    for paraphrase in ("recorded", "random"):
        ds = TorchDataset(path, cameras=[], image_size=None, normalize="mean_std", paraphrase=paraphrase)
        check_task_samples(ds)


def test_random_paraphrase_is_deterministic_and_covers_the_recorded_ones(native: Path) -> None:
    pytest.importorskip("torch")
    from telecorder.loaders import TorchDataset

    def draws(seed: int) -> list[str]:
        ds = TorchDataset(native, cameras=[], image_size=None, normalize="mean_std", paraphrase="random",
                          paraphrase_seed=seed)
        return [ds[i]["language_instruction"] for i in range(len(ds))]

    first = draws(0)
    assert draws(0) == first  # reproducible per (seed, index)
    assert draws(1) != first  # and another seed draws others
    starts = np.concatenate([[0], np.cumsum(LENGTHS)])
    pick = first[starts[0]:starts[1]] + first[starts[2]:starts[3]]
    bin_green = first[starts[1]:starts[2]]
    assert set(pick) <= set(TASKS["pick_red"]["paraphrases"])
    assert len(set(pick)) >= 2  # different across items: several paraphrases drawn
    assert set(bin_green) <= set(TASKS["bin_green"]["paraphrases"])
    assert set(first[starts[3]:]) == {"wave at the camera"}  # falls back to the verbatim text


def test_random_paraphrase_in_dataloader_workers(native: Path) -> None:
    torch = pytest.importorskip("torch")
    from telecorder.loaders import TorchDataset

    ds = TorchDataset(native, cameras=[], image_size=None, normalize="mean_std", paraphrase="random")
    want = [ds[i]["language_instruction"] for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    got = [text for batch in loader for text in batch["language_instruction"]]
    ids = [t for batch in torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0) for t in batch["task_id"]]
    assert got == want  # the same draw in a worker as in the main process
    assert ids[0] == "pick_red"


def test_paraphrase_option_is_checked(native: Path) -> None:
    pytest.importorskip("torch")
    from telecorder.loaders import TorchDataset

    with pytest.raises(ValueError, match="paraphrase"):
        TorchDataset(native, cameras=[], image_size=None, normalize="mean_std", paraphrase="heldout")


def test_dataset_without_task_suite(tmp_path: Path) -> None:
    """An old dataset (no task_id, no tasks): task_id is '' and random keeps the instruction."""
    pytest.importorskip("torch")
    from conftest import make_info, write_dataset

    from telecorder.loaders import TorchDataset

    write_dataset(tmp_path / "old", make_info(cameras=()), [5, 4], task="stack the blocks")
    ds = TorchDataset(tmp_path / "old", image_size=None, normalize="mean_std", paraphrase="random")
    for i in (0, 6):
        assert ds[i]["task_id"] == "" and ds[i]["language_instruction"] == "stack the blocks"


@pytest.mark.tf
def test_rlds_declares_task_id_for_a_task_list_even_if_the_first_episode_has_none(native: Path,
                                                                                 tmp_path: Path) -> None:
    pytest.importorskip("tensorflow_datasets")
    from telecorder.converters.rlds.schema import import_tfds
    from telecorder.converters.rlds.writer import RLDSWriter

    _, tfds = import_tfds()
    reader = NativeReader(native)
    episodes = [reader.read_episode(i) for i in reader.episode_indices()]
    del episodes[0].metadata["task_id"]  # recorded before task ids existed
    writer = RLDSWriter(tmp_path / "mixed", reader.info)
    for ep in episodes:
        writer.write_episode(ep)
    writer.close()
    builder = tfds.builder_from_directory(str(tmp_path / "mixed"))
    got = [e["episode_metadata"]["task_id"].decode() for e in tfds.as_numpy(builder.as_dataset(split="train"))]
    assert got == ["", "bin_green", "pick_red", ""]
