"""Mutations of the fuzz campaign (benchmarks/fuzz_inputs.py): one damaged file per input.

Each mutation works on ``case/in/<file>`` and may place files in ``case/outside/`` (the targets
of links and of paths named in metadata, which the campaign watches for reads).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import struct
from pathlib import Path
from typing import Any

SWAPS: list[Any] = [None, True, False, "x", "", [], {}, [1, 2], {"a": 1}, 0, -1, 1e300, -1e300, 10**18, -(10**18),
                    2**63, math.nan, math.inf, "NaN", "0-99999999999", 0.5, "x" * 200_000]
HUGE: list[Any] = [10**9, 10**12, 10**18, 2**63 - 1, 2**64, 1e300, -(10**9), 1e-300, -1e-300]
NONFINITE: list[Any] = [math.nan, math.inf, -math.inf]


def _nodes(obj: Any, path: tuple = ()) -> list[tuple]:
    """Every node of a JSON value, as a path of keys/indices (lists sampled to 8 entries)."""
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _nodes(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            out += _nodes(v, (*path, i))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


def _mutate_json_value(obj: Any, how: str, rng: random.Random) -> tuple[Any, str]:
    nodes = _nodes(obj)
    if how == "json_swap":
        path = rng.choice(nodes)
        value = rng.choice(SWAPS)
    elif how == "json_path":
        # Metadata naming a path outside the input: the canary folder, by a relative or absolute path.
        strings = [p for p in nodes if isinstance(_get(obj, p), str)]
        path = rng.choice(strings or nodes)
        value = rng.choice(["../outside/x", "../../outside/x", "{outside}/x", "/etc/hostname",
                            "../outside/{episode_index}.parquet", "{outside}"])
    else:
        numeric = [p for p in nodes if isinstance(_get(obj, p), (int, float)) and not isinstance(_get(obj, p), bool)]
        path = rng.choice(numeric or nodes)
        value = rng.choice(HUGE if how == "json_huge" else NONFINITE)
    detail = f"{'/'.join(map(str, path)) or '<root>'} = {str(value)[:40]}"
    return _set(obj, path, value), detail


def _json_mutation(path: Path, how: str, rng: random.Random) -> str:
    text = path.read_text()
    if path.suffix == ".jsonl":
        lines = text.splitlines()
        k = rng.randrange(len(lines))
        obj, detail = _mutate_json_value(json.loads(lines[k]), how, rng)
        lines[k] = json.dumps(obj)
        path.write_text("\n".join(lines) + "\n")
        return f"line {k + 1}: {detail}"
    obj, detail = _mutate_json_value(json.loads(text), how, rng)
    path.write_text(json.dumps(obj))
    return detail


def _h5_mutation(path: Path, how: str, rng: random.Random) -> str:
    import h5py
    import numpy as np

    with h5py.File(path, "r+") as f:
        items: list[tuple[str, Any]] = []
        f.visititems(lambda name, obj: items.append((name, obj)) and None)
        if how == "h5_attr":
            owners = [("/", f), *items]
            with_attrs = [(n, o) for n, o in owners if len(o.attrs)]
            name, obj = rng.choice(with_attrs)
            key = rng.choice(sorted(obj.attrs.keys()))
            value = rng.choice([np.int64(10**12), np.float64(np.nan), np.float64(1e300), "x", "json:{", "json:[1,2]",
                                np.arange(3), np.bytes_(b"\xff\xfe"), np.int64(-1), np.float64(-np.inf)])
            del obj.attrs[key]
            obj.attrs[key] = value
            return f"{name}@{key} = {str(value)[:30]}"
        datasets = [(n, o) for n, o in items if isinstance(o, h5py.Dataset)]
        name, ds = rng.choice(datasets)
        if how == "h5_resize" and ds.maxshape and ds.maxshape[0] is None and ds.ndim:
            new = rng.choice([10**9, 10**6, 0])
            ds.resize(new, axis=0)
            return f"{name} resized to {new} rows"
        # Replace the dataset by one of another dtype/shape (what a foreign writer might store).
        shape = ds.shape
        attrs = dict(ds.attrs)
        del f[name]
        kind = rng.choice(["string", "scalar", "2d", "float16", "empty"])
        if kind == "string":
            new_ds = f.create_dataset(name, data=np.array([b"abc"] * max(1, shape[0] if shape else 1)))
        elif kind == "scalar":
            new_ds = f.create_dataset(name, data=np.float64(1e300))
        elif kind == "2d":
            new_ds = f.create_dataset(name, data=np.zeros((max(1, shape[0] if shape else 1), 7), np.float32))
        elif kind == "float16":
            new_ds = f.create_dataset(name, data=np.full(shape or (1,), np.nan, np.float16))
        else:
            new_ds = f.create_dataset(name, shape=(0,), dtype=np.float32)
        for k, v in attrs.items():
            new_ds.attrs[k] = v
        return f"{name} replaced by a {kind} dataset"


def _csv_mutation(path: Path, how: str, rng: random.Random) -> str:
    text = path.read_text()
    variants = {
        "csv_quote": text + '2,"unterminated\n3,after\n',
        "csv_range": text + rng.choice(["0-99999999999,all\n", "-5,neg\n", "1e9,x\n", "3-1,back\n", ",\n", "0,\n"]),
        "csv_long": text + "1," + "y" * rng.choice([131073, 1_000_000]) + "\n",
        "csv_bytes": text + "1,\xff\x00\ufffe\n",
    }
    path.write_text(variants[how], errors="surrogateescape")
    return how


def _outside_copy(case: Path, rel: str) -> Path:
    """A copy of the input's file (or folder) placed outside it: a link's target that is readable."""
    src = case / "in" / rel
    dst = case / "outside" / rel.replace("/", "__")
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst)
    return dst


def _link(case: Path, rel: str, target: Path, rng: random.Random) -> str:
    path = case / "in" / rel
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    text = str(target) if rng.random() < 0.5 else os.path.relpath(target, path.parent)
    path.symlink_to(text)
    return f"-> {text}"


LINKS = ("link_outside", "link_dangling", "link_dir_outside")
MUTATIONS = {
    "any": ["truncate", "bitflip", "overwrite", "empty", "missing", "dir", "link_outside", "link_dangling",
            "link_dir_outside"],
    "json": ["json_swap", "json_swap", "json_swap", "json_huge", "json_nan", "json_path"],
    "h5": ["h5_attr", "h5_attr", "h5_resize", "h5_dtype", "bitflip", "overwrite", "overwrite"],
    "csv": ["csv_quote", "csv_range", "csv_long", "csv_bytes"],
}


def apply_mutation(case: Path, rel: str, how: str, rng: random.Random) -> str:
    path = case / "in" / rel
    if how in ("json_swap", "json_huge", "json_nan", "json_path"):
        detail = _json_mutation(path, how, rng)
        if how == "json_path":
            path.write_text(path.read_text().replace("{outside}", str((case / "outside").resolve())))
            (case / "outside" / "x").write_text(path.read_text())
        return detail
    if how.startswith("h5_"):
        return _h5_mutation(path, how, rng)
    if how.startswith("csv_"):
        return _csv_mutation(path, how, rng)
    if how == "link_outside":
        return _link(case, rel, _outside_copy(case, rel), rng)
    if how == "link_dangling":
        return _link(case, rel, case / "outside" / "no_such_file", rng)
    if how == "link_dir_outside":
        parent = str(Path(rel).parent)
        if parent == ".":
            return _link(case, rel, _outside_copy(case, rel), rng)
        return "parent " + _link(case, parent, _outside_copy(case, parent), rng)
    if how == "missing":
        path.unlink()
        return "deleted"
    if how == "dir":
        path.unlink()
        path.mkdir()
        (path / "x").write_text("x")
        return "a folder in its place"
    data = bytearray(path.read_bytes())
    if how == "empty":
        path.write_bytes(b"")
        return "0 bytes"
    if how == "truncate":
        keep = rng.randrange(len(data)) if data else 0
        path.write_bytes(bytes(data[:keep]))
        return f"first {keep} of {len(data)} bytes"
    if how == "bitflip":
        n = rng.choice([1, 2, 8, 64])
        for _ in range(n):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        return f"{n} bit(s)"
    if how == "overwrite":
        span = min(len(data), rng.choice([4, 16, 256]))
        at = rng.randrange(len(data) - span + 1)
        data[at:at + span] = rng.randbytes(span) if rng.random() < 0.7 else struct.pack("<q", 2**62) * (span // 8 + 1)
        path.write_bytes(bytes(data[:len(data)]))
        return f"{span} bytes at {at}"
    raise ValueError(how)


def kinds_for(rel: str) -> list[str]:
    if rel.endswith((".json", ".jsonl")):
        return MUTATIONS["json"] + MUTATIONS["any"]
    if rel.endswith((".h5", ".hdf5")):
        return MUTATIONS["h5"] + MUTATIONS["any"]
    if rel.endswith(".csv"):
        return MUTATIONS["csv"] + MUTATIONS["any"]
    return MUTATIONS["any"]


def seed_files(seed: Path) -> list[str]:
    return sorted(str(p.relative_to(seed)) for p in seed.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and "/." not in "/" + str(p.relative_to(seed)))
