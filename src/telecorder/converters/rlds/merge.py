"""One TFDS/RLDS dataset from the parts of a sharded conversion (see :mod:`.parts`).

Each part is a complete RLDS dataset written by :class:`~.writer.RLDSWriter` (or the OXE writer)
with ``part=True`` and the final ``dataset_name``. The merge renames every part's shard files
into the final folder under TFDS's global naming (``{name}-{split}.{format}-00003-of-00012``,
a split's shards in part order, so a split's episodes keep the order of the parts) and writes
``dataset_info.json`` / ``features.json`` once with tfds' own DatasetInfo and SplitInfo, and
our sidecar with the parts' episode lists concatenated. Nothing is re-encoded or copied.

Everything is checked before the first rename (every shard present, the sizes of TFRecord
shards, the same features.json in every part that holds an episode, the same dataset name,
version and file format), so an inconsistent part stops the merge with the part named and
nothing moved.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...atomic import write_json_atomic
from ...datasets.features import DatasetInfo, read_json
from ...datasets.stats import DatasetStats
from ...errors import DatasetError
from ..base import SIDECAR, ConversionError
from ..parts import PARTS_DIR
from .schema import SIDECAR_FORMAT, TFDS_MODULE, import_tfds
from .writer import RLDSWriter

# A TFRecord holds each record as length (8 bytes) + its CRC (4) + data + data CRC (4), and
# tfds counts only the data in num_bytes: the difference tells a truncated shard cheaply.
_TFRECORD_FRAMING = 16


@dataclass(frozen=True)
class _Split:
    shard_lengths: list[int]
    num_bytes: int
    files: list[Path]


@dataclass(frozen=True)
class _Part:
    root: Path
    data_dir: Path
    sidecar: dict[str, Any]
    features: dict[str, Any]
    ds_info: Any  # tfds DatasetInfo as the part wrote it
    splits: dict[str, _Split]  # every split of the merged dataset; empty where the part has none
    split_episodes: dict[str, list[int]]

    @property
    def episodes(self) -> int:
        return int(self.sidecar.get("total_episodes", 0))


@dataclass
class MergedRLDS:
    """The merged dataset: ``writer`` holds the final options resolved as the writer resolves them
    (name, version, layout, splits); nothing is written through it."""

    writer: RLDSWriter
    data_dir: Path
    split_episodes: dict[str, list[int]]
    total_episodes: int
    total_frames: int


def merge_rlds_parts(
    work: Path,
    parts: list[Path],
    info: DatasetInfo,
    options: Mapping[str, Any],
    writer_cls: type[RLDSWriter] = RLDSWriter,
    *,
    check_part: Callable[[Path, dict[str, Any]], None] | None = None,
    check_all: Callable[[MergedRLDS], None] | None = None,
    finish: Callable[[MergedRLDS], None] | None = None,
) -> MergedRLDS:
    """Merge ``parts`` (in order) into one dataset in ``work``; see the module docstring.

    A format built on RLDS adds its own checks, run before anything moves: ``check_part(part,
    sidecar)`` on every part and ``check_all(merged)`` on the totals; ``finish(merged)`` writes
    its extra files once the dataset is complete, before the parts are removed.
    """
    work = Path(work)
    opts = {k: v for k, v in options.items() if k != "part"}
    final = writer_cls(work, info, **opts)
    _, tfds = import_tfds()
    if not parts:
        raise ConversionError(f"{work}: no parts to merge")
    loaded = [_load_part(Path(p), final, tfds) for p in parts]
    ref = next((p for p in loaded if p.episodes), loaded[0])
    for part in loaded:
        if part is not ref and part.episodes:
            _check_same(ref, part)
        if check_part is not None:
            check_part(part.root, part.sidecar)

    split_names = list(final._split_episodes)
    split_episodes = {
        name: [e for p in loaded for e in p.split_episodes[name]] for name in split_names
    }
    total_episodes = sum(p.episodes for p in loaded)
    total_frames = sum(int(p.sidecar.get("total_frames", 0)) for p in loaded)
    empty = [name for name, eps in split_episodes.items() if not eps]
    if final._val and total_episodes and empty:
        # What the sequential writer refuses (tfds cannot read an empty split); a part may have one.
        raise ConversionError(
            f"{work}: split {empty[0]!r} would hold no episode in any part (val_episodes "
            f"{sorted(final._val)[:10]}, written {total_episodes}); choose episodes so both splits get some"
        )

    data_dir = final.data_dir
    final._split_episodes = split_episodes
    final._count, final._frames = total_episodes, total_frames
    merged = MergedRLDS(final, data_dir, split_episodes, total_episodes, total_frames)
    if check_all is not None:
        check_all(merged)

    data_dir.mkdir(parents=True, exist_ok=True)
    suffix = _file_suffix(tfds, final.file_format)
    moves: list[tuple[Path, Path]] = []
    split_infos = []
    for name in split_names:
        files = [f for p in loaded for f in p.splits[name].files]
        template = tfds.core.naming.ShardedFileTemplate(
            data_dir=tfds.core.Path(os.fspath(data_dir)),
            dataset_name=final.dataset_name,
            split=name,
            filetype_suffix=suffix,
        )
        for i, src in enumerate(files):
            moves.append((src, Path(os.fspath(template.sharded_filepath(shard_index=i, num_shards=len(files))))))
        split_infos.append(
            tfds.core.SplitInfo(
                name=name,
                shard_lengths=[n for p in loaded for n in p.splits[name].shard_lengths],
                num_bytes=sum(p.splits[name].num_bytes for p in loaded),
                filename_template=template,
            )
        )
    taken = [dst for _, dst in moves if dst.exists()]
    if taken:
        raise ConversionError(f"{taken[0]}: already exists; the merge folder {work} must hold only {PARTS_DIR}")

    for src, dst in moves:
        os.replace(src, dst)
    # A DatasetInfo made as the writer makes its own (the part's, as read back, would add tfds'
    # reader-side defaults such as an empty metadata.json), with the parts' features.
    identity = tfds.core.DatasetIdentity(
        name=final.dataset_name,
        version=tfds.core.Version(final.version),
        data_dir=os.fspath(data_dir),
        module_name=TFDS_MODULE,
    )
    try:
        ds_info = tfds.core.DatasetInfo(
            builder=identity, features=ref.ds_info.features, description=ref.ds_info.description
        )
        ds_info.set_file_format(final.file_format)
        ds_info.set_splits(tfds.core.SplitDict(split_infos))
        ds_info.write_to_directory(tfds.core.Path(os.fspath(data_dir)))
    except Exception as e:
        raise ConversionError(f"{data_dir}: cannot write dataset_info.json ({type(e).__name__}: {e})") from e
    sidecar = dict(ref.sidecar)
    sidecar["splits"] = {name: {"episodes": eps} for name, eps in split_episodes.items()}
    sidecar["total_episodes"] = total_episodes
    sidecar["total_frames"] = total_frames
    sidecar["info"] = {**sidecar.get("info", {}), "total_episodes": total_episodes, "total_frames": total_frames}
    write_json_atomic(data_dir / SIDECAR, sidecar)

    if finish is not None:
        finish(merged)
    shutil.rmtree(work / PARTS_DIR, ignore_errors=True)
    for part in loaded:  # parts the caller kept somewhere else
        shutil.rmtree(part.root, ignore_errors=True)
    return merged


def merge_parts(
    work: Path, parts: Sequence[Path], info: DatasetInfo, options: Mapping[str, Any], stats: DatasetStats
) -> None:
    """One RLDS dataset in ``work`` from the parts of a sharded conversion (:func:`merge_rlds_parts`);
    RLDS keeps no statistics, so ``stats`` is unused."""
    merge_rlds_parts(Path(work), list(parts), info, options, RLDSWriter)


def _file_suffix(tfds: Any, file_format: str) -> str:
    return str(tfds.core.file_adapters.FileFormat.from_value(file_format).file_suffix)


def _load_part(root: Path, final: RLDSWriter, tfds: Any) -> _Part:
    fmt = final.format_name
    if not root.is_dir():
        raise ConversionError(f"{root}: the {fmt} part is missing")
    nested = final.data_dir != final.path
    data_dir = root / final.dataset_name / final.version if nested else root
    where = f"{root}: {fmt} part"
    for name in ("dataset_info.json", "features.json", SIDECAR):
        if not (data_dir / name).is_file():
            raise ConversionError(
                f"{where} has no {name} in {data_dir} (expected dataset {final.dataset_name!r} "
                f"version {final.version}, {'nested' if nested else 'flat'} layout; was it written with part=True "
                "and the final dataset_name?)"
            )
    try:
        sidecar = read_json(data_dir / SIDECAR)
        features = json.loads((data_dir / "features.json").read_text())
    except (DatasetError, ValueError, OSError) as e:
        raise ConversionError(f"{where}: unreadable metadata ({e})") from e
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise ConversionError(f"{where}: {data_dir / SIDECAR} is not telecorder's RLDS sidecar")
    wanted = {"dataset_name": final.dataset_name, "version": final.version, "file_format": final.file_format}
    for key, value in wanted.items():
        if sidecar.get(key) != value:
            raise ConversionError(f"{where}: {key} is {sidecar.get(key)!r}, the merged dataset's is {value!r}")
    try:
        ds_info = tfds.builder_from_directory(os.fspath(data_dir)).info
    except Exception as e:
        raise ConversionError(f"{where}: tensorflow-datasets cannot load it ({type(e).__name__}: {e})") from e
    names = list(final._split_episodes)
    listed = sidecar.get("splits")
    # A part given only its own val episodes has no val split when it holds none.
    if not set(ds_info.splits) <= set(names) or not isinstance(listed, dict) or set(listed) != set(ds_info.splits):
        raise ConversionError(
            f"{where}: has splits {sorted(ds_info.splits)} (its {SIDECAR} lists "
            f"{sorted(listed) if isinstance(listed, dict) else 'none'}), the merged dataset has {names} "
            f"(split={final.split!r}{', val_episodes' if final._val else ''})"
        )
    splits: dict[str, _Split] = {}
    split_episodes: dict[str, list[int]] = {}
    for name in names:
        if name not in ds_info.splits:
            splits[name], split_episodes[name] = _Split([], 0, []), []
            continue
        split_info = ds_info.splits[name]
        lengths = [int(n) for n in split_info.shard_lengths]
        episodes = listed[name].get("episodes") if isinstance(listed[name], dict) else None
        if not isinstance(episodes, list) or len(episodes) != sum(lengths):
            raise ConversionError(
                f"{where}: split {name!r} has {sum(lengths)} episodes in its shards but "
                f"{len(episodes) if isinstance(episodes, list) else 'no'} listed in {SIDECAR}"
            )
        try:
            split_episodes[name] = [int(e) for e in episodes]
        except (TypeError, ValueError) as e:
            raise ConversionError(f"{where}: {SIDECAR} lists episodes of split {name!r} that are not numbers") from e
        files = [Path(os.fspath(f)) for f in split_info.filepaths] if lengths else []
        for f in files:
            if not f.is_file():
                raise ConversionError(f"{where}: shard file {f} of split {name!r} is missing")
        num_bytes = int(split_info.num_bytes)
        if final.file_format == "tfrecord" and files:
            size = sum(f.stat().st_size for f in files)
            if size != num_bytes + _TFRECORD_FRAMING * sum(lengths):
                raise ConversionError(
                    f"{where}: the shards of split {name!r} hold {size} bytes, dataset_info.json says "
                    f"{num_bytes} of data in {sum(lengths)} records (a truncated or replaced shard)"
                )
        splits[name] = _Split(lengths, num_bytes, files)
    return _Part(root, data_dir, sidecar, features, ds_info, splits, split_episodes)


def _check_same(ref: _Part, part: _Part) -> None:
    where = f"{part.root}: {part.sidecar.get('writer', 'rlds')} part"
    if part.features != ref.features:
        path = _first_difference(ref.features, part.features) or "(top level)"
        hint = (
            " (episode_metadata holds typed copies of the first episode's scalar metadata: its keys differ "
            "between the first episodes of the parts; give every part the writer option "
            "episode_metadata_fields=rlds.episode_metadata_fields(<first episode>.metadata))"
            if "episode_metadata" in path else ""
        )
        raise ConversionError(f"{where}: features.json differs from {ref.root}'s at {path}{hint}")
    for key in ("rlds_keys", "info"):
        a, b = _without_totals(ref.sidecar.get(key)), _without_totals(part.sidecar.get(key))
        if a != b:
            raise ConversionError(f"{where}: {SIDECAR} {key!r} differs from {ref.root}'s at {_first_difference(a, b)}")


def _without_totals(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in ("total_episodes", "total_frames")}
    return value


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """Where two JSON trees first differ, as a slash path."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}/{key}"
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{path}/{key}")
        return path
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}/{k}")
    return path

