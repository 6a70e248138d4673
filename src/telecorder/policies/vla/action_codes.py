"""Action chunks as token sequences for the autoregressive heads, and back.

Each codec is what ``TorchDataset(tokenizer=...)`` takes (``encode`` of one normalized chunk
``[horizon, action_dim]`` -> a list of ids), plus the decoder's vocabulary, its longest
sequence and the way back to a chunk:

* :class:`BinCodec` (``--head bins``): one token per dimension per step, step-major, from
  :class:`~telecorder.actions.UniformBins` (256 bins over ``[-1, 1]``, the RT-2/OpenVLA
  arithmetic) or :class:`~telecorder.actions.QuantileBins` fitted on the training actions.
  Every sequence has ``horizon * action_dim`` tokens, so every sequence decodes.
* :class:`FastCodec` (``--head fast``): the chunk's FAST tokens (DCT + BPE, fitted on the
  training chunks) and an end token. A generated sequence with no end token, or whose pieces
  do not add up to ``horizon * action_dim`` coefficients, does not decode: ``decode`` says so
  and the policy holds the robot's last command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...actions.discretize import QuantileBins, UniformBins
from ...actions.errors import ActionError
from ...actions.fast import FASTTokenizer
from ..base import PolicyError
from .config import BIN_KINDS

FAST_DIR = "fast_tokenizer"


class BinCodec:
    """256-bin tokens per dimension and step; ``vocab`` = ``n_bins``."""

    def __init__(self, horizon: int, action_dim: int, kind: str = "uniform", n_bins: int = 256,
                 quantile: QuantileBins | None = None) -> None:
        if kind not in BIN_KINDS:
            raise PolicyError(f"unknown --bins {kind!r} (use one of {', '.join(BIN_KINDS)})")
        self.horizon, self.action_dim, self.kind, self.n_bins = int(horizon), int(action_dim), kind, int(n_bins)
        self.uniform = UniformBins(self.n_bins, -1.0, 1.0)
        self.quantile = quantile
        if kind == "quantile" and quantile is None:
            raise PolicyError("quantile bins need fitting first (BinCodec.fit)")

    @classmethod
    def fit(cls, chunks: np.ndarray, kind: str, n_bins: int = 256) -> BinCodec:
        """A codec for chunks like ``chunks`` ``[N, horizon, action_dim]`` (normalized)."""
        _, h, a = chunks.shape
        quantile = QuantileBins(n_bins).fit(chunks.reshape(-1, a)) if kind == "quantile" else None
        return cls(h, a, kind, n_bins, quantile)

    @property
    def vocab(self) -> int:
        return self.n_bins

    @property
    def max_tokens(self) -> int:
        return self.horizon * self.action_dim

    def encode(self, chunk: np.ndarray) -> list[int]:
        x = np.asarray(chunk, dtype=np.float64)
        if self.kind == "quantile":
            assert self.quantile is not None
            ids = self.quantile.encode(x)
        else:
            ids = self.uniform.encode(x) - 1  # np.digitize numbers bins from 1
        return np.clip(ids, 0, self.n_bins - 1).reshape(-1).astype(np.int64).tolist()

    def decode(self, ids: Sequence[int]) -> tuple[np.ndarray | None, str]:
        arr = np.asarray(list(ids), dtype=np.int64)
        if arr.size != self.max_tokens:
            return None, f"{arr.size} tokens, expected {self.max_tokens}"
        arr = arr.reshape(self.horizon, self.action_dim)
        if self.kind == "quantile":
            assert self.quantile is not None
            return self.quantile.decode(arr), ""
        return self.uniform.decode(arr + 1), ""

    def to_dict(self) -> dict[str, Any]:
        return {"bins": self.kind, "n_bins": self.n_bins, "horizon": self.horizon, "action_dim": self.action_dim,
                "quantile": None if self.quantile is None else self.quantile.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BinCodec:
        try:
            q = None if d.get("quantile") is None else QuantileBins.from_dict(dict(d["quantile"]))
            return cls(int(d["horizon"]), int(d["action_dim"]), str(d["bins"]), int(d["n_bins"]), q)
        except (ActionError, KeyError, TypeError, ValueError) as e:
            raise PolicyError(f"action bins: {e}") from e


class FastCodec:
    """FAST tokens of the chunk, then ``eos`` (= the FAST vocabulary's size)."""

    def __init__(self, fast: FASTTokenizer, max_tokens: int) -> None:
        self.fast = fast
        self.max_tokens = int(max_tokens)

    @classmethod
    def fit(cls, chunks: np.ndarray, vocab_size: int = 256, scale: float = 10.0) -> FastCodec:
        """Fit FAST's BPE on normalized ``chunks`` ``[N, horizon, action_dim]``; room for the longest + 25%."""
        try:
            fast = FASTTokenizer(scale=scale, vocab_size=vocab_size).fit(chunks)
        except ActionError as e:
            raise PolicyError(f"FAST tokenizer: {e}") from e
        lengths = [len(ids) for ids in fast.encode(chunks)]
        return cls(fast, int(max(lengths) * 1.25) + 2)

    @property
    def eos(self) -> int:
        return len(self.fast._pieces)

    @property
    def vocab(self) -> int:
        return self.eos + 1

    def encode(self, chunk: np.ndarray) -> list[int]:
        ids = list(self.fast.encode(np.asarray(chunk, dtype=np.float64)[None])[0])
        return [*ids[: self.max_tokens - 1], self.eos]

    def decode(self, ids: Sequence[int]) -> tuple[np.ndarray | None, str]:
        seq = list(ids)
        if self.eos not in seq:
            return None, f"no end token in {len(seq)} tokens"
        seq = seq[: seq.index(self.eos)]
        if not seq:
            return None, "an empty sequence"
        actions, ok = self.fast.try_decode([seq])
        if not ok[0]:
            try:
                self.fast.decode([seq])
            except ActionError as e:
                return None, str(e)
        return actions[0], ""

    def lengths(self, chunks: np.ndarray) -> np.ndarray:
        """Tokens per chunk (end token excluded), for the compression figure."""
        return np.array([len(ids) for ids in self.fast.encode(chunks)])

    def save(self, folder: str | Path) -> Path:
        return self.fast.save(Path(folder) / FAST_DIR)

    def to_dict(self) -> dict[str, Any]:
        return {"folder": FAST_DIR, "max_tokens": self.max_tokens, "vocab": self.vocab}

    @classmethod
    def load(cls, folder: str | Path, d: Mapping[str, Any]) -> FastCodec:
        where = Path(folder) / FAST_DIR
        try:
            fast = FASTTokenizer.load(where)
        except (ActionError, OSError, KeyError, TypeError, ValueError) as e:
            raise PolicyError(f"{where}: {str(e).splitlines()[0]}; retrain or restore the policy folder") from e
        codec = cls(fast, int(d["max_tokens"]))
        if codec.vocab != int(d["vocab"]):
            raise PolicyError(f"{where}: the FAST vocabulary has {codec.vocab - 1} pieces, the checkpoint was "
                              f"trained with {int(d['vocab']) - 1}; retrain or restore the pair")
        return codec


ActionCodec = BinCodec | FastCodec
