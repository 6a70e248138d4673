"""Where an RLDS/TFDS dataset's files are: its folder and name, and its split's shards.

:func:`find_tfds_dir` finds the folder holding ``dataset_info.json`` + ``features.json``;
:func:`published_path` and :func:`dataset_name_for` name a dataset after the folder it ends up in.

Shard file names come from ``dataset_info.json`` and are kept inside the dataset.

Each split of ``dataset_info.json`` names its shards with ``filepathTemplate``
(``{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}`` by default), filled with the
dataset's and the split's names: all of it is data that whoever wrote the dataset
chose. A template of ``../x`` or ``/abs``, or a name holding ``..``, would make a
reader open files outside the folder; every shard path goes through
:func:`telecorder.safe_paths.join_inside` like every other path read from metadata.
Both the TensorFlow-free loader and the TFDS-based converter check here before
they read a shard.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ...datasets.features import read_json
from ...datasets.work_folder import OUTPUT as WORK_OUTPUT
from ...errors import DatasetError
from ...safe_paths import join_inside

DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
# What TFDS fills a filepathTemplate with (anything else in braces fails its formatting).
PLACEHOLDERS = frozenset({"DATASET", "SPLIT", "FILEFORMAT", "SHARD_X_OF_Y", "SHARD_INDEX", "NUM_SHARDS"})
INFO_FILE = "dataset_info.json"


def shard_relpath(template: str, dataset: str, split: str, shard: int, num_shards: int,
                  file_format: str = "tfrecord") -> str:
    """The file name of shard ``shard`` of ``num_shards``, as TFDS fills the template."""
    return (template.replace("{DATASET}", dataset).replace("{SPLIT}", split)
            .replace("{FILEFORMAT}", file_format).replace("{SHARD_X_OF_Y}", f"{shard:05d}-of-{num_shards:05d}")
            .replace("{SHARD_INDEX}", f"{shard:05d}").replace("{NUM_SHARDS}", f"{num_shards:05d}"))


def shard_paths(data_dir: Path, dataset: str, split_name: str, split: Mapping[str, Any], *,
                file_format: str = "tfrecord", error: type[DatasetError] = DatasetError) -> list[Path]:
    """Every shard file of ``split`` (one entry of ``dataset_info.json``'s ``splits``), each inside
    ``data_dir``; ``error`` naming the file, the split and the template otherwise."""
    template = split.get("filepathTemplate") or DEFAULT_TEMPLATE
    where = f"{data_dir / INFO_FILE} split {split_name!r} filepathTemplate"
    if not isinstance(template, str):
        raise error(f"{where} is {template!r}, not a file name template")
    unknown = sorted(set(re.findall(r"{([^{}]*)}", template)) - PLACEHOLDERS)
    if unknown:
        raise error(f"{where} {template[:120]!r} names {unknown[:3]}, not among {sorted(PLACEHOLDERS)}; "
                    "restore the file from the dataset's source")
    lengths = split.get("shardLengths") or []
    count = len(lengths) if isinstance(lengths, list) else 0
    # The template itself first: the error then names it even for a split without shards.
    join_inside(data_dir, shard_relpath(template, dataset, split_name, 0, max(count, 1), file_format),
                source=f"{where} {template!r}", error=error)
    return [join_inside(data_dir, shard_relpath(template, dataset, split_name, k, count, file_format),
                        source=f"{where} {template!r} (shard {k})", error=error)
            for k in range(count)]


def check_split_paths(data_dir: Path, *, error: type[DatasetError] = DatasetError) -> None:
    """Refuse a ``dataset_info.json`` whose splits name shards outside ``data_dir`` (before TFDS,
    which joins whatever the template says to the folder, reads any shard)."""
    info = read_json(data_dir / INFO_FILE, error=error)
    if not isinstance(info, dict):
        raise error(f"{data_dir / INFO_FILE}: is a JSON {type(info).__name__}, not an object")
    dataset = str(info.get("name") or "")
    file_format = str(info.get("fileFormat") or "tfrecord")
    splits = info.get("splits") or []
    for split in splits if isinstance(splits, list) else []:
        if isinstance(split, dict):
            name = str(split.get("name") or "")
            files = shard_paths(data_dir, dataset, name, split, file_format=file_format, error=error)
            _check_shard_lengths(data_dir, name, split.get("shardLengths"), files, error)


# The fewest bytes a TFRecord record takes: length (8), its CRC (4), no data, the data's CRC (4).
MIN_RECORD_BYTES = 16


def _check_shard_lengths(data_dir: Path, split: str, lengths: Any, files: list[Path],
                         error: type[DatasetError]) -> None:
    """Each shard declares no more records than its bytes can hold (TFDS would number them all
    before reading one: ``shardLengths`` of 10^12 is a MemoryError)."""
    for k, (declared, path) in enumerate(zip(lengths if isinstance(lengths, list) else [], files, strict=False)):
        try:
            n, size = int(declared), path.stat().st_size
        except (TypeError, ValueError, OverflowError, OSError):
            continue  # the type checks and the shard's own reader name these
        if n > size // MIN_RECORD_BYTES:
            raise error(f"{data_dir / INFO_FILE}: split {split!r} shardLengths/{k} declares {n} records, but "
                        f"{path.name} holds {size} bytes, room for at most {size // MIN_RECORD_BYTES}; "
                        "restore the file from the dataset's source")


def check_inside(data_dir: Path, files: Iterable[str | os.PathLike[str]], *, source: str,
                 error: type[DatasetError] = DatasetError) -> None:
    """Each of ``files`` (as a library resolved them) lies inside ``data_dir``, lexically."""
    root = os.path.normpath(os.path.abspath(data_dir))
    for f in files:
        path = os.path.normpath(os.path.abspath(os.fspath(f)))
        join_inside(data_dir, os.path.relpath(path, root), source=f"{source} {os.fspath(f)!r}", error=error)


def find_tfds_dir(path: Path) -> Path | None:
    """The folder holding ``dataset_info.json`` + ``features.json``: ``path`` itself, its single
    version subfolder (``1.0.0/``), or ``<name>/<version>/`` below it (the layout ``tfds.builder``
    expects under a data_dir). ``None`` if there is none; nothing heavy is imported."""

    def has_info(d: Path) -> bool:
        return (d / "dataset_info.json").is_file() and (d / "features.json").is_file()

    path = Path(path)
    if not path.is_dir():
        return None
    if has_info(path):
        return path
    candidate = path
    for _ in range(2):
        subdirs = [d for d in candidate.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if len(subdirs) != 1:
            return None
        candidate = subdirs[0]
        if has_info(candidate):
            return candidate
    return None


def published_path(path: Path) -> Path:
    """The absolute folder a dataset built in ``path`` ends up in: ``telecorder convert`` builds
    DST in ``.DST.partial/dataset`` (earlier versions in ``.DST.partial``) and renames it when complete."""
    path = Path(os.path.abspath(path))

    def work(name: str) -> bool:
        return name.startswith(".") and name.endswith(".partial") and len(name) > len("..partial")

    if path.name == WORK_OUTPUT and work(path.parent.name):
        path = path.parent
    return path.with_name(path.name[1 : -len(".partial")]) if work(path.name) else path


def dataset_name_for(path: Path) -> str:
    """A TFDS dataset name (snake_case) from the folder the dataset ends up in (see
    :func:`published_path`)."""
    name = published_path(path).name
    name = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    name = re.sub(r"^[0-9_]+", "", name)
    return name or "telecorder_dataset"
