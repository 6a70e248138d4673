"""``dataset_statistics.json`` of OXE output: the numbers Octo and OpenVLA would compute themselves.

Both loaders compute, over every transition of every split (``split="all"``) of the float32
actions and proprio read from the TFRecords: ``mean``/``std``/``min``/``max`` and
``np.quantile(x, q, axis=0)`` with numpy's default ``linear`` method for ``q01``/``q99`` (OpenVLA)
and ``p01``/``p99`` (Octo). The quantile bounds set OpenVLA's 256 action bins and both
normalizations, so they are computed exactly the same way (:class:`~..datasets.exact_quantiles.
ExactValues`) whenever a feature's values fit the exact limit (``exact_quantile_limit``, default
:data:`~..datasets.exact_quantiles.EXACT_QUANTILE_LIMIT`), and from the mergeable sketch only
beyond it. Each feature says which (``quantile_method`` ``"exact"`` or ``"sketch"``) and, for the
sketch, its error: ``quantile_relative_error`` (value) and ``q01_rank_error``/``q99_rank_error``
per dimension (the share of the values that may lie between the bound written and the exact one;
0 when exact).

Only keys inside ``action``/``proprio`` and the two counts at the top: OpenVLA's
``save_dataset_statistics`` turns exactly those back into lists when it saves a checkpoint, and
any other top-level key would make its ``json.dump`` fail. The split sizes live in
``oxe_config.json`` instead.

Where the statistics go: Octo's and OpenVLA's ``make_interleaved_dataset`` pass
``dataset_statistics=`` to ``make_dataset_from_rlds`` themselves, so a ``dataset_kwargs_list``
entry must not hold it; without it, ``make_dataset_from_rlds`` looks for
``<builder.data_dir>/dataset_statistics_<sha256>.json`` (their ``get_dataset_statistics``
cache), hashed from ``str(builder.info)`` (which names tfds' version-dependent layout and the
dataset's absolute folder), the proprio key(s) and the standardize function. When the quantiles
are exact we write the file under the name this tfds gives, for each loader; a different tfds,
or a moved dataset, misses it and they compute the same numbers themselves, once.

A sharded conversion (local workers or Beam) cannot send every value through the statistics
combiner; each part saves its rows instead (``oxe_values_<feature>.npy``, while within the
limit) with its split sizes (``oxe_part.json``), and the merge reads them back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import write_json_atomic
from ...datasets.exact_quantiles import EXACT_QUANTILE_LIMIT, ExactValues
from ...datasets.stats import FeatureStats, StatsError
from ..base import ConversionError

QUANTILES = {"q01": 0.01, "q99": 0.99}
#: Octo's spelling of the same quantiles.
OCTO_NAMES = {"q01": "p01", "q99": "p99"}
PART_META = "oxe_part.json"
PART_VALUES = "oxe_values_{}.npy"
FEATURES = ("action", "proprio")


def exact_limit(value: Any) -> int:
    try:
        limit = int(EXACT_QUANTILE_LIMIT if value is None else value)
    except (TypeError, ValueError) as e:
        raise ConversionError(f"oxe writer: exact_quantile_limit must be a whole number, not {value!r}") from e
    if limit < 0:
        raise ConversionError(f"oxe writer: exact_quantile_limit must be 0 or more values, not {limit}")
    return limit


def feature_statistics(fs: FeatureStats, values: ExactValues | None) -> dict[str, Any]:
    """Per-dimension statistics of one feature, with the quantiles exact when ``values`` hold them."""
    if fs.count == 0:
        zeros = [0.0] * fs.ndim
        out: dict[str, Any] = {k: zeros for k in ("mean", "std", "max", "min", *QUANTILES, *OCTO_NAMES.values())}
        return {**out, "quantile_method": "exact", **{f"{k}_rank_error": zeros for k in QUANTILES}}
    out = {
        "mean": fs.mean.reshape(-1).tolist(),
        "std": fs.std.reshape(-1).tolist(),
        "max": fs.max.reshape(-1).tolist(),
        "min": fs.min.reshape(-1).tolist(),
    }
    exact = values is not None and values.exact and values.count == fs.count
    for key, q in QUANTILES.items():
        # float32 -> Python float is exact: the loaders' own .tolist() of np.quantile gives the same.
        bound = values.quantile(q) if exact else fs.quantile(q)  # type: ignore[union-attr]
        out[key] = out[OCTO_NAMES[key]] = np.asarray(bound).reshape(-1).tolist()
    out["quantile_method"] = "exact" if exact else "sketch"
    for key, q in QUANTILES.items():
        out[f"{key}_rank_error"] = [0.0] * fs.ndim if exact else fs.quantile_rank_error(q).reshape(-1).tolist()
    if not exact:
        out["quantile_relative_error"] = fs.alpha
    return out


def loader_cache_names(tfds: Any, dataset_name: str, built_in: Path, final_data_dir: Path,
                       *, proprio_obs_key: str, state_obs_keys: list[str]) -> dict[str, str]:
    """``{"octo": file name, "openvla": file name}`` of each loader's statistics cache for this dataset
    once it is in ``final_data_dir``; empty when this tfds does not describe it as expected."""
    try:
        builder = tfds.builder(dataset_name, data_dir=os.fspath(built_in))
        described = str(builder.info)
        here = f"data_dir={os.fspath(builder.data_dir)!r}"
    except Exception:  # the cache only saves the loaders a pass: without it they compute the same
        return {}
    if described.count(here) != 1:
        return {}
    described = described.replace(here, f"data_dir={os.fspath(final_data_dir)!r}")
    # octo/data/dataset.py: (str(builder.info), str(proprio_obs_key), standardize_fn or "", *filters);
    # prismatic/vla/datasets/rlds/dataset.py: (str(builder.info), str(state_obs_keys), standardize_fn source or "").
    deps = {
        "octo": (described, str(proprio_obs_key), ""),
        "openvla": (described, str(state_obs_keys), ""),
    }
    return {
        loader: f"dataset_statistics_{hashlib.sha256(''.join(parts).encode('utf-8')).hexdigest()}.json"
        for loader, parts in deps.items()
    }


# -- the parts of a sharded conversion ----------------------------------------------------------


def write_part_values(root: Path, split_frames: Mapping[str, int], values: Mapping[str, ExactValues]) -> None:
    """The rows a part holds (while within its limit) and its transitions per split."""
    saved = {}
    for key, vals in values.items():
        if vals.exact:
            vals.save(root / PART_VALUES.format(key))
        saved[key] = {"rows": vals.count, "dims": vals.ndim, "exact": vals.exact}
    write_json_atomic(root / PART_META, {"split_transitions": dict(split_frames), "values": saved})


def read_part_meta(part: Path) -> dict[str, Any]:
    path = Path(part) / PART_META
    try:
        meta = json.loads(path.read_text())
        splits = {str(k): int(v) for k, v in meta["split_transitions"].items()}
        values = {key: {"rows": int(v["rows"]), "dims": int(v["dims"]), "exact": bool(v["exact"])}
                  for key, v in meta["values"].items()}
    except FileNotFoundError as e:
        raise ConversionError(f"{path}: missing; the part was not written by this version's oxe writer "
                              "(convert again without --resume)") from e
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConversionError(f"{path}: unreadable oxe part record ({type(e).__name__}: {e})") from e
    if any(n < 0 for n in splits.values()) or any(v["rows"] < 0 or v["dims"] < 1 for v in values.values()):
        raise ConversionError(f"{path}: negative counts in the oxe part record")
    return {"split_transitions": splits, "values": values}


def merged_values(parts: list[Path], metas: list[dict[str, Any]], key: str, *, ndim: int, limit: int) -> ExactValues:
    """The rows of ``key`` over every part, or an inexact :class:`ExactValues` past ``limit``."""
    total = sum(m["values"][key]["rows"] for m in metas)
    if total * ndim > limit or not all(m["values"][key]["exact"] for m in metas):
        return ExactValues.past_limit(ndim, total, limit=limit, name=key)
    out = ExactValues(ndim, limit=limit, name=key)
    for part, meta in zip(parts, metas, strict=True):
        rows = meta["values"][key]["rows"]
        if rows == 0:
            continue
        try:
            out.extend(ExactValues.load(Path(part) / PART_VALUES.format(key), ndim=ndim, rows=rows, limit=limit,
                                        name=key))
        except StatsError as e:
            raise ConversionError(f"{part}: {e}") from e
    return out
