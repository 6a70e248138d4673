"""OpenVLA-style prompts: a language instruction and action tokens as one training sequence.

The sequence is ``In: {prompt}\\nOut:`` followed by the action token ids and the end
token; the loss is taken only on the action tokens and the end token, so the model learns
to emit actions, not to repeat the question. No dependency on torch: ids and labels are
int64 numpy arrays that any collate function can turn into tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["IGNORE_INDEX", "PromptSample", "TextTokenizer", "VLAPromptAdapter"]

# Label value that cross-entropy skips (PyTorch's default ``ignore_index``).
IGNORE_INDEX = -100
DEFAULT_PROMPT = "What action should the robot take to {instruction}?"


class TextTokenizer(Protocol):
    """Any text tokenizer: ``encode(text) -> list[int]`` and an ``eos_token_id``."""

    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...


@dataclass
class PromptSample:
    text: str
    input_ids: np.ndarray  # int64 [L]
    labels: np.ndarray  # int64 [L], IGNORE_INDEX outside the action tokens and EOS
    loss_mask: np.ndarray  # bool [L], True where labels count

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "input_ids": self.input_ids, "labels": self.labels, "loss_mask": self.loss_mask}


class VLAPromptAdapter:
    """Builds (prompt text, input_ids, labels, loss mask) like OpenVLA's prompt builder.

    ``action_tokenizer`` is an object with ``encode(actions [K, A]) -> list[int]`` (the
    same protocol as ``TorchDataset(tokenizer=...)``); its ids must already live in the
    text tokenizer's vocabulary (OpenVLA overwrites the 256 least used ones). Call it with
    an instruction and normalized actions, or pass a ``TorchDataset`` item to
    :meth:`from_sample`, which uses its ``action_tokens`` when present.
    """

    def __init__(self, tokenizer: TextTokenizer, action_tokenizer: Any = None, prompt: str = DEFAULT_PROMPT) -> None:
        if "{instruction}" not in prompt:
            raise ValueError("prompt must contain '{instruction}'")
        self.tokenizer = tokenizer
        self.action_tokenizer = action_tokenizer
        self.prompt = prompt

    def prompt_text(self, instruction: str) -> str:
        # OpenVLA lower-cases the instruction; trailing punctuation would double the '?'.
        lang = instruction.strip().rstrip(".").lower()
        return f"In: {self.prompt.format(instruction=lang)}\nOut:"

    def __call__(
        self, instruction: str, actions: np.ndarray | None = None, action_ids: Sequence[int] | None = None
    ) -> PromptSample:
        """One training sequence; give ``actions`` (to encode) or ready ``action_ids``."""
        if action_ids is None:
            if actions is None or self.action_tokenizer is None:
                raise ValueError("give action_ids, or actions together with an action_tokenizer")
            action_ids = self.action_tokenizer.encode(np.asarray(actions, dtype=np.float32))
        text = self.prompt_text(instruction)
        prompt_ids = [int(t) for t in self.tokenizer.encode(text)]
        target = [int(t) for t in action_ids] + [int(self.tokenizer.eos_token_id)]
        input_ids = np.asarray(prompt_ids + target, dtype=np.int64)
        loss_mask = np.zeros(len(input_ids), dtype=bool)
        loss_mask[len(prompt_ids):] = True
        labels = np.where(loss_mask, input_ids, IGNORE_INDEX).astype(np.int64)
        return PromptSample(text, input_ids, labels, loss_mask)

    def from_sample(self, sample: Mapping[str, Any]) -> PromptSample:
        """Sequence for one ``TorchDataset`` item (its instruction and action chunk)."""
        tokens = sample.get("action_tokens")
        ids = None if tokens is None else np.asarray(tokens).reshape(-1).tolist()
        actions = None if ids is not None else np.asarray(sample["action"])
        return self(str(sample["language_instruction"]), actions=actions, action_ids=ids)

    def inference_ids(self, instruction: str) -> np.ndarray:
        """Prompt ids alone, for generating the action tokens at inference time."""
        return np.asarray(self.tokenizer.encode(self.prompt_text(instruction)), dtype=np.int64)
