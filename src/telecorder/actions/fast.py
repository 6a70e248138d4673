"""FAST action tokenizer: DCT + BPE over action chunks (Pertsch et al. 2025, pi0-FAST).

Pipeline, following the reference implementation (``physical-intelligence/fast``):

1. Input chunks ``(B, T, D)`` **already normalized to about [-1, 1]** — use q99
   normalization (:class:`~telecorder.actions.normalize.Normalizer` with ``"q99"``),
   as pi0-FAST does; ``scale`` is chosen for that range.  ``fit(chunks,
   normalizer="q99")`` fits such a normalizer on the chunks themselves and then applies
   it inside :meth:`encode` / :meth:`decode`.
2. Orthonormal DCT-II along time, per dimension.
3. ``round(coeff * scale)`` to integers.
4. Flatten low-frequency first: coefficient-major, i.e. all dimensions' coefficient 0,
   then all dimensions' coefficient 1, ... (row-major flatten of ``(T, D)``).
5. Integers ``v`` become characters ``chr(v - min_token)``, ``min_token`` being the
   smallest integer seen in :meth:`fit` (or the constructor's).  Integers outside the
   fitted range ``[min_token, max_token]`` are clipped into it (the reference clips
   below only; clipping above too keeps every character in the BPE alphabet, since a
   character outside it would be silently dropped and corrupt the chunk length).
6. Byte-pair encoding trained with Hugging Face ``tokenizers`` on those strings, with
   the full alphabet ``range(max_token - min_token + 1)`` as initial alphabet.

Decoding inverts each step; the only loss is the rounding in step 3, at most
``0.5 / scale`` per coefficient, i.e. an RMS error of about ``0.29 / scale`` per value
(the DCT is orthonormal) plus any clipping in step 5.

Failure behaviour: :meth:`decode` raises :class:`ActionError` (a ``ValueError``)
naming the chunk and the reason (unknown token id, wrong number of coefficients).
:meth:`try_decode` never raises on bad tokens: it returns zeros for chunks that fail
and a boolean ``ok`` mask, as the reference implementation does for generated tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic, write_text_atomic
from .errors import ActionError
from .normalize import Normalizer

__all__ = ["FAST_FORMAT", "FASTTokenizer", "dct_matrix", "dct_ortho", "idct_ortho"]

FAST_FORMAT = "telecorder-fast/1"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "fast_config.json"
# Characters from U+D800 on are UTF-16 surrogates, which Rust strings cannot hold.
_MAX_ALPHABET = 0xD800


@lru_cache(maxsize=32)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``C`` (n, n): ``coeff = C @ x``, ``x = C.T @ coeff``.

    Equals ``scipy.fft.dct(np.eye(n), axis=0, norm="ortho")``; scipy is not a
    dependency and the matrix product is faster than an FFT at chunk lengths.
    """
    k = np.arange(n)[:, None]
    t = np.arange(n)[None, :]
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * t + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    c.setflags(write=False)
    return c


def dct_ortho(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Orthonormal DCT-II of ``x`` along ``axis``."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    return np.moveaxis(x @ dct_matrix(x.shape[-1]).T, -1, axis)


def idct_ortho(c: np.ndarray, axis: int = 1) -> np.ndarray:
    """Inverse of :func:`dct_ortho` (orthonormal DCT-III)."""
    c = np.moveaxis(np.asarray(c, dtype=np.float64), axis, -1)
    return np.moveaxis(c @ dct_matrix(c.shape[-1]), -1, axis)


def _as_chunks(chunks: Any) -> np.ndarray:
    arr = np.asarray(chunks, dtype=np.float64)
    if arr.ndim != 3 or 0 in arr.shape:
        raise ActionError(f"expected action chunks shaped (B, T, D), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ActionError(
            f"{int(np.count_nonzero(~np.isfinite(arr)))} non-finite values in action chunks"
        )
    return arr


class FASTTokenizer:
    """DCT + BPE action tokenizer; see the module docstring for the exact pipeline."""

    def __init__(self, scale: float = 10.0, vocab_size: int = 1024, min_token: int | None = None):
        if scale <= 0:
            raise ActionError(f"scale must be positive, got {scale}")
        self.scale = float(scale)
        self.vocab_size = int(vocab_size)
        self.min_token = None if min_token is None else int(min_token)
        self.max_token: int | None = None
        self.time_horizon: int | None = None
        self.action_dim: int | None = None
        self.normalizer: Normalizer | None = None
        self._tok: Any = None
        self._pieces: list[str] = []

    # -- fitting ------------------------------------------------------------------------

    def _coeff_ints(self, chunks: np.ndarray) -> np.ndarray:
        """(B, T, D) -> rounded scaled DCT coefficients, flattened coefficient-major."""
        coeff = np.around(dct_ortho(chunks, axis=1) * self.scale)
        return coeff.reshape(coeff.shape[0], -1).astype(np.int64)

    def fit(self, chunks: Any, normalizer: Normalizer | str | None = None) -> FASTTokenizer:
        """Train the BPE vocabulary on ``chunks`` (B, T, D).

        ``normalizer``: ``None`` when the chunks are already normalized; ``"q99"`` to
        fit a per-dimension q01/q99 normalizer on these chunks; or a
        :class:`Normalizer`.  Either of the latter is applied inside
        :meth:`encode`/:meth:`decode` from then on, and saved with the tokenizer.
        """
        from tokenizers import Tokenizer, models, trainers

        raw = _as_chunks(chunks)
        if isinstance(normalizer, str):
            if normalizer != "q99":
                raise ActionError(f"fit can only fit a 'q99' normalizer, got {normalizer!r}")
            flat = raw.reshape(-1, raw.shape[2])
            q = np.quantile(flat, [0.01, 0.99], axis=0)
            normalizer = Normalizer("q99", {"q01": q[0].tolist(), "q99": q[1].tolist()})
        self.normalizer = normalizer
        x = raw if normalizer is None else np.asarray(normalizer.normalize(raw), np.float64)
        ints = self._coeff_ints(x)
        if self.min_token is None:
            self.min_token = int(ints.min())
        self.max_token = max(int(ints.max()), self.min_token)
        n_alpha = self.max_token - self.min_token + 1
        if n_alpha > _MAX_ALPHABET or n_alpha > self.vocab_size:
            raise ActionError(
                f"the scaled DCT coefficients span {n_alpha} integers, more than the "
                f"vocabulary of {self.vocab_size} can hold; normalize the actions to [-1, 1] "
                "first, lower scale or raise vocab_size"
            )
        self.time_horizon, self.action_dim = int(raw.shape[1]), int(raw.shape[2])
        trainer = trainers.BpeTrainer(
            vocab_size=self.vocab_size,
            min_frequency=2,
            show_progress=False,
            special_tokens=[],
            initial_alphabet=[chr(i) for i in range(n_alpha)],
            max_token_length=10000,
        )
        # No normalizer or pre-tokenizer: each chunk is one "word", so merges may span
        # any coefficients and every character (even whitespace) is an ordinary symbol.
        tok = Tokenizer(models.BPE())
        tok.train_from_iterator(self._strings(ints), trainer=trainer, length=len(ints))
        self._set_tokenizer(tok)
        return self

    def _set_tokenizer(self, tok: Any) -> None:
        self._tok = tok
        vocab = tok.get_vocab()
        pieces = [""] * len(vocab)
        for piece, i in vocab.items():
            pieces[i] = piece
        self._pieces = pieces

    def _strings(self, ints: np.ndarray) -> list[str]:
        assert self.min_token is not None and self.max_token is not None
        codes = np.clip(ints, self.min_token, self.max_token) - self.min_token
        # UTF-32 round trip: builds each string in C instead of a chr() per value.
        return [row.tobytes().decode("utf-32-le") for row in codes.astype("<u4")]

    def _fitted(self) -> None:
        if self._tok is None:
            raise ActionError("FASTTokenizer is not fitted; call fit() or load() first")

    # -- encode / decode ------------------------------------------------------------------

    def encode(self, chunks: Any) -> list[list[int]]:
        """Token ids per chunk, for chunks (B, T, D) (or one chunk (T, D))."""
        self._fitted()
        arr = np.asarray(chunks, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        arr = _as_chunks(arr)
        if self.normalizer is not None:
            arr = np.asarray(self.normalizer.normalize(arr), dtype=np.float64)
        encs = self._tok.encode_batch(self._strings(self._coeff_ints(arr)), add_special_tokens=False)
        return [e.ids for e in encs]

    def _shape(self, time_horizon: int | None, action_dim: int | None) -> tuple[int, int]:
        t = self.time_horizon if time_horizon is None else int(time_horizon)
        d = self.action_dim if action_dim is None else int(action_dim)
        if t is None or d is None or t <= 0 or d <= 0:
            raise ActionError("decode needs a positive time_horizon and action_dim")
        return t, d

    def _coeffs_of(self, ids: Sequence[int], n: int) -> np.ndarray:
        """Token ids -> integer coefficients (n,), or ActionError with the reason."""
        pieces = self._pieces
        arr = np.asarray(ids)
        if arr.size == 0:
            raise ActionError("empty token list")
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ActionError(f"token ids must be a flat list of integers, got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= len(pieces))
        if bad.any():
            raise ActionError(
                f"token id {int(arr[bad][0])} at position {int(np.flatnonzero(bad)[0])} is not "
                f"in the vocabulary (0..{len(pieces) - 1})"
            )
        s = "".join([pieces[i] for i in arr.tolist()])
        codes = np.frombuffer(s.encode("utf-32-le"), dtype="<u4")
        if codes.size != n:
            raise ActionError(f"tokens decode to {codes.size} DCT coefficients, expected {n}")
        return codes.astype(np.int64) + self.min_token

    def decode(
        self,
        token_lists: Sequence[Sequence[int]],
        time_horizon: int | None = None,
        action_dim: int | None = None,
    ) -> np.ndarray:
        """Token lists -> actions (B, T, D); raises ActionError on any invalid chunk.

        ``time_horizon``/``action_dim`` default to the shape seen in :meth:`fit`.
        """
        actions, ok, reasons = self._decode(token_lists, time_horizon, action_dim)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise ActionError(f"cannot decode chunk {i} of {len(ok)}: {reasons[i]}")
        return actions

    def try_decode(
        self,
        token_lists: Sequence[Sequence[int]],
        time_horizon: int | None = None,
        action_dim: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`decode` but never raises on bad tokens: ``(actions, ok)``.

        Chunks that cannot be decoded come back as zeros (in normalized units, then
        unnormalized if a normalizer is attached) with ``ok[i] = False``.
        """
        actions, ok, _ = self._decode(token_lists, time_horizon, action_dim)
        return actions, ok

    def _decode(
        self, token_lists: Sequence[Sequence[int]], time_horizon: int | None, action_dim: int | None
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        self._fitted()
        t, d = self._shape(time_horizon, action_dim)
        coeff = np.zeros((len(token_lists), t * d), dtype=np.float64)
        ok = np.zeros(len(token_lists), dtype=bool)
        reasons = [""] * len(token_lists)
        for i, ids in enumerate(token_lists):
            try:
                coeff[i] = self._coeffs_of(ids, t * d)
                ok[i] = True
            except ActionError as exc:
                reasons[i] = str(exc)
        out = idct_ortho(coeff.reshape(-1, t, d) / self.scale, axis=1)
        out[~ok] = 0.0
        if self.normalizer is not None:
            out = np.asarray(self.normalizer.unnormalize(out), dtype=np.float64)
        return out, ok, reasons

    # -- persistence ------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {
            "format": FAST_FORMAT,
            "scale": self.scale,
            "vocab_size": self.vocab_size,
            "min_token": self.min_token,
            "max_token": self.max_token,
            "time_horizon": self.time_horizon,
            "action_dim": self.action_dim,
            "normalizer": None if self.normalizer is None else self.normalizer.to_dict(),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` (Hugging Face format) and ``fast_config.json``."""
        self._fitted()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / TOKENIZER_FILE, self._tok.to_str(pretty=True))
        write_json_atomic(out / CONFIG_FILE, self.config())
        return out

    @classmethod
    def load(cls, directory: str | Path) -> FASTTokenizer:
        from tokenizers import Tokenizer

        src = Path(directory)
        try:
            cfg = json.loads((src / CONFIG_FILE).read_text())
            tok = Tokenizer.from_file(str(src / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise ActionError(f"{src}: cannot load FAST tokenizer: {exc}") from exc
        if not isinstance(cfg, dict) or cfg.get("format") != FAST_FORMAT:
            raise ActionError(f"{src / CONFIG_FILE}: not a FAST config (format {FAST_FORMAT!r})")
        out = cls(scale=cfg["scale"], vocab_size=cfg["vocab_size"], min_token=cfg["min_token"])
        out.max_token = cfg["max_token"]
        out.time_horizon = cfg["time_horizon"]
        out.action_dim = cfg["action_dim"]
        if cfg.get("normalizer") is not None:
            out.normalizer = Normalizer.from_dict(cfg["normalizer"])
        out._set_tokenizer(tok)
        return out

    def __repr__(self) -> str:
        return (
            f"FASTTokenizer(scale={self.scale}, vocab_size={self.vocab_size}, "
            f"fitted={self._tok is not None})"
        )
