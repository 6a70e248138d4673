"""``telecorder tokenizer fit`` and ``report``: action tokenizers fitted on a dataset, and measured.

Chunks are the dataset's actions cut into non-overlapping windows of ``chunk_seconds``,
q99-normalized with the dataset's own statistics (what pi0-FAST does before the DCT).
The report compares FAST with naive per-dimension binning (T x D tokens per chunk) and
states the reconstruction error in the action's own units.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic
from ..datasets.dataset import Dataset
from .fast import FASTTokenizer
from .normalize import Normalizer

NORMALIZER_FILE = "normalizer.json"
CHUNKING_FILE = "chunking.json"


def action_chunks(path: str | Path, chunk_seconds: float, feature: str = "action") -> tuple[np.ndarray, float]:
    """Non-overlapping windows of ``chunk_seconds`` from every episode: (N, T, D), and the fps."""
    ds = Dataset.open(path)
    horizon = max(1, round(chunk_seconds * ds.info.fps))
    chunks = []
    for reader in ds:
        with reader:
            actions = reader.numeric(feature).astype(np.float64)
        for start in range(0, len(actions) - horizon + 1, horizon):
            chunks.append(actions[start : start + horizon])
    if not chunks:
        raise ValueError(f"{path}: no episode is at least {chunk_seconds:g} s long; use a shorter --chunk-seconds")
    return np.stack(chunks), ds.info.fps


def fit_fast(
    path: str | Path, out: str | Path, *, chunk_seconds: float = 1.0, vocab_size: int = 1024, scale: float = 10.0
) -> dict[str, Any]:
    raw, fps = action_chunks(path, chunk_seconds)
    stats = json.loads((Path(path) / "meta/stats.json").read_text())
    normalizer = Normalizer.from_dataset_stats(stats, feature="action", mode="q99")
    tokenizer = FASTTokenizer(scale=scale, vocab_size=vocab_size)
    tokenizer.fit(normalizer.normalize(raw))
    out = Path(out)
    tokenizer.save(out)
    write_json_atomic(out / NORMALIZER_FILE, normalizer.to_dict())
    write_json_atomic(out / CHUNKING_FILE, {"chunk_seconds": chunk_seconds, "fps": fps,
                                            "horizon": raw.shape[1], "action_dim": raw.shape[2]}, indent=None)
    return {"chunks": len(raw), "horizon": raw.shape[1], "action_dim": raw.shape[2], "out": str(out)}


def report(path: str | Path, tokenizer_dir: str | Path) -> dict[str, Any]:
    tokenizer_dir = Path(tokenizer_dir)
    chunking = json.loads((tokenizer_dir / CHUNKING_FILE).read_text())
    normalizer = Normalizer.from_dict(json.loads((tokenizer_dir / NORMALIZER_FILE).read_text()))
    tokenizer = FASTTokenizer.load(tokenizer_dir)
    raw, _ = action_chunks(path, chunking["chunk_seconds"])
    norm = normalizer.normalize(raw)
    t0 = time.perf_counter()
    tokens = tokenizer.encode(norm)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = tokenizer.decode(tokens, time_horizon=raw.shape[1], action_dim=raw.shape[2])
    t_dec = time.perf_counter() - t0
    recon = normalizer.unnormalize(np.asarray(decoded, dtype=np.float64))
    # q99 clipping is part of the tokenizer's input: measure against the clipped target too.
    clipped = normalizer.unnormalize(norm)
    err = recon - raw
    counts = np.array([len(t) for t in tokens])
    naive = raw.shape[1] * raw.shape[2]
    ds = Dataset.open(path)
    names = list(ds.info.features["action"].names or [f"dim{i}" for i in range(raw.shape[2])])
    return {
        "chunks": len(raw),
        "horizon": int(raw.shape[1]),
        "action_dim": int(raw.shape[2]),
        "tokens_per_chunk_mean": float(counts.mean()),
        "tokens_per_chunk_p99": float(np.percentile(counts, 99)),
        "naive_tokens_per_chunk": int(naive),
        "compression_vs_naive": float(naive / counts.mean()),
        "rmse": {n: float(v) for n, v in zip(names, np.sqrt((err**2).mean(axis=(0, 1))), strict=True)},
        "max_abs_error": {n: float(v) for n, v in zip(names, np.abs(err).max(axis=(0, 1)), strict=True)},
        "max_abs_error_vs_clipped": {
            n: float(v) for n, v in zip(names, np.abs(recon - clipped).max(axis=(0, 1)), strict=True)
        },
        "encode_chunks_per_s": float(len(raw) / t_enc) if t_enc > 0 else 0.0,
        "decode_chunks_per_s": float(len(raw) / t_dec) if t_dec > 0 else 0.0,
    }
