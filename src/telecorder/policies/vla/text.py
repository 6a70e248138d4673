"""The instruction tokenizer: a WordPiece vocabulary built from the training set's instructions.

Built with the Hugging Face ``tokenizers`` library (lower-cased, split on whitespace and
punctuation) and saved with the checkpoint as its own ``tokenizer.json``, which any
``tokenizers.Tokenizer.from_file`` reads. The alphabet holds every letter, digit and character of the training instructions, at the start of
a word and inside one, so a word never seen in training (a held-out paraphrase's verb) becomes
known sub-word pieces; only a word with another character becomes ``[UNK]``.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ...atomic import write_text_atomic
from ..base import PolicyError

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID = 0
TEXT_FILE = "text_tokenizer.json"
# Enough for every instruction of the built-in suites (the longest is 12 pieces); longer
# instructions keep their first pieces.
DEFAULT_MAX_TOKENS = 24
# A vocabulary of a few hundred pieces is a few kilobytes; a file far larger is not one we wrote.
MAX_FILE_BYTES = 16 << 20


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - depends on the environment
        from ...errors import missing_extra

        raise missing_extra("tokenizers", "torch") from e
    return tokenizers


class InstructionTokenizer:
    """Instruction text -> padded ids ``[max_tokens]`` and a mask of the real ones."""

    def __init__(self, tokenizer: object, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self._tok = tokenizer
        self.max_tokens = int(max_tokens)
        if self._tok.token_to_id(PAD) != PAD_ID or self._tok.token_to_id(UNK) is None:  # type: ignore[attr-defined]
            raise PolicyError(f"instruction tokenizer: {PAD} must be id {PAD_ID} and {UNK} must exist")

    @classmethod
    def build(cls, texts: Iterable[str], *, vocab_size: int = 512,
              max_tokens: int = DEFAULT_MAX_TOKENS) -> InstructionTokenizer:
        """A WordPiece vocabulary of at most ``vocab_size`` pieces over ``texts``."""
        tk = _import_tokenizers()
        corpus = [t for t in texts if isinstance(t, str) and t.strip()]
        # Every letter and digit (and every other character of the corpus) both starting a word and inside
        # one, so that any unseen word made of them splits into pieces instead of becoming [UNK].
        chars = sorted(set(string.ascii_lowercase + string.digits + "".join(corpus).lower()) - set(string.whitespace))
        corpus.append(" ".join(f"{c} {c}{c}" for c in chars))
        tok = tk.Tokenizer(tk.models.WordPiece(unk_token=UNK))
        tok.normalizer = tk.normalizers.Sequence([tk.normalizers.NFKC(), tk.normalizers.Lowercase()])
        tok.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
        tok.decoder = tk.decoders.WordPiece()
        trainer = tk.trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=[PAD, UNK],
                                               show_progress=False)
        tok.train_from_iterator(corpus or [""], trainer=trainer)
        return cls(tok, max_tokens)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())  # type: ignore[attr-defined]

    def pieces(self, text: str) -> list[str]:
        return list(self._tok.encode(text).tokens)  # type: ignore[attr-defined]

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int64 [B, max_tokens], mask bool [B, max_tokens])``; an empty text has no real token."""
        ids = np.full((len(texts), self.max_tokens), PAD_ID, dtype=np.int64)
        for i, enc in enumerate(self._tok.encode_batch([str(t) for t in texts])):  # type: ignore[attr-defined]
            row = enc.ids[: self.max_tokens]
            ids[i, : len(row)] = row
        return ids, ids != PAD_ID

    def unknown_fraction(self, texts: Sequence[str]) -> float:
        """The fraction of pieces of ``texts`` that are ``[UNK]`` (for a held-out paraphrase check)."""
        unk = self._tok.token_to_id(UNK)  # type: ignore[attr-defined]
        total = hits = 0
        for enc in self._tok.encode_batch(list(texts)):  # type: ignore[attr-defined]
            total += len(enc.ids)
            hits += sum(1 for i in enc.ids if i == unk)
        return hits / total if total else 0.0

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / TEXT_FILE
        write_text_atomic(path, self._tok.to_str(pretty=True))  # type: ignore[attr-defined]
        return path

    @classmethod
    def load(cls, folder: str | Path, max_tokens: int) -> InstructionTokenizer:
        tk = _import_tokenizers()
        path = Path(folder) / TEXT_FILE
        if not path.is_file():
            raise PolicyError(f"{path}: missing or not a regular file; the VLA checkpoint needs its instruction "
                              "tokenizer (retrain or restore the folder)")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PolicyError(f"{path}: {size >> 20} MiB, far larger than an instruction vocabulary "
                              f"(limit {MAX_FILE_BYTES >> 20} MiB); retrain or restore the policy folder")
        try:
            text = path.read_text(encoding="utf-8")
            tok = tk.Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises its own Exception type
            raise PolicyError(f"{path}: not a tokenizers JSON file ({str(e).splitlines()[0] if str(e) else e!r}); "
                              "retrain or restore the policy folder") from e
        try:
            return cls(tok, max_tokens)
        except PolicyError as e:
            raise PolicyError(f"{path}: {e}") from e
