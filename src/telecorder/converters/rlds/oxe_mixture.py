"""Several OXE datasets as one Octo training mixture (``telecorder convert A B ... --to oxe OUT``).

Each source is converted on its own into ``OUT/<name>/`` (the dataset at ``OUT/<name>/<name>/<version>/``,
exactly what ``telecorder convert SRC OUT/<name> --to oxe`` writes); then ``OUT/oxe_mixture.json``
holds what Octo's ``make_interleaved_dataset(dataset_kwargs_list, sample_weights=None, *, train,
shuffle_buffer_size, ...)`` (octo-models/octo ``octo/data/dataset.py``) takes as keyword arguments,
and nothing else, so ``make_interleaved_dataset(**mixture, train=True, ...)`` binds:

* ``dataset_kwargs_list``: each dataset's Octo block of its ``oxe_config.json``, in the order the
  sources were given; the names are distinct (Octo asserts it);
* ``sample_weights``: summing to 1; by default each dataset's share of the training steps (what
  Octo's ``balance_weights=True`` computes from uniform weights, so leave that False), else the
  weights given (the CLI reads them as ``train --mixture`` does), normalized.

Datasets of different action or state widths stay as they are: Octo pads them with
``traj_transform_kwargs=dict(max_action_dim=..., max_proprio_dim=...)`` (:func:`widest`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...atomic import write_json_atomic
from ...datasets.features import read_json
from ..base import ConversionError
from .oxe import CONFIG_FILE, KWARGS_KEY
from .paths import dataset_name_for, find_tfds_dir

MIXTURE_FILE = "oxe_mixture.json"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def dataset_names(sources: Sequence[Path]) -> list[str]:
    """A distinct TFDS name per source, from its folder (a TFDS version folder ``1.0.0`` is named
    after the folder above it); a repeated name gets ``_2``, ``_3``, ..."""
    names: list[str] = []
    for src in sources:
        path = Path(os.path.abspath(src))
        if _VERSION.match(path.name):
            path = path.parent
        base = name = dataset_name_for(path)
        k = 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
    return names


def dataset_config(folder: Path) -> dict[str, Any]:
    """The ``oxe_config.json`` of the OXE dataset written into ``folder``."""
    data_dir = find_tfds_dir(folder)
    if data_dir is None or not (data_dir / CONFIG_FILE).is_file():
        raise ConversionError(f"{folder}: no OXE dataset ({CONFIG_FILE} under <name>/<version>/)")
    config = read_json(data_dir / CONFIG_FILE, error=ConversionError)
    if not isinstance(config, dict) or "octo" not in (config.get(KWARGS_KEY) or {}):
        raise ConversionError(f"{data_dir / CONFIG_FILE}: has no {KWARGS_KEY}.octo block")
    return config


def mixture(folders: Sequence[Path], weights: Sequence[float] | None = None) -> dict[str, Any]:
    """``{"dataset_kwargs_list": [...], "sample_weights": [...]}`` of the OXE datasets in ``folders``;
    weights by training steps unless given (one per folder)."""
    configs = [dataset_config(Path(f)) for f in folders]
    blocks = [dict(c[KWARGS_KEY]["octo"]) for c in configs]
    names = [b.get("name") for b in blocks]
    twice = sorted({str(n) for n in names if names.count(n) > 1})
    if twice:
        raise ConversionError(f"datasets named {', '.join(twice)} more than once; Octo keys them by name")
    if weights is None:
        weights = [float(_train_steps(c)) for c in configs]
    if len(weights) != len(blocks):
        raise ConversionError(f"{len(weights)} weights for {len(blocks)} datasets")
    total = float(sum(weights))
    if total <= 0:
        raise ConversionError("the mixture's datasets have no training steps")
    return {"dataset_kwargs_list": blocks, "sample_weights": [float(w) / total for w in weights]}


def widest(folders: Sequence[Path]) -> dict[str, int]:
    """``max_action_dim`` / ``max_proprio_dim`` for Octo's trajectory transforms (its padding)."""
    action = proprio = 0
    for f in folders:
        stats = read_json(Path(dataset_config(Path(f))["dataset"]["dataset_statistics"]), error=ConversionError)
        action = max(action, len(stats["action"]["mean"]))
        proprio = max(proprio, len(stats["proprio"]["mean"]))
    return {"max_action_dim": action, "max_proprio_dim": proprio}


def write_mixture(out: Path, folders: Sequence[Path], weights: Sequence[float] | None = None) -> Path:
    """Write :func:`mixture` to ``out/oxe_mixture.json``; returns its path."""
    path = Path(out) / MIXTURE_FILE
    write_json_atomic(path, mixture(folders, weights))
    return path


def _train_steps(config: dict[str, Any]) -> int:
    steps = (config.get("dataset") or {}).get("num_transitions") or {}
    return int(steps.get("train", 0))
