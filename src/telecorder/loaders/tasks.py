"""Task ids and paraphrases for the loaders: language augmentation from the recorded task list.

A dataset recorded from a task suite says, in its info ``extra``, which paraphrases each task was
recorded with (``"tasks": {task_id: {"family", "paraphrases", "heldout"}}``); every format we
write keeps that (the native ``info.json``, our sidecar next to LeRobot / RLDS / HDF5 exports).
:class:`Paraphrases` turns it into a table the loaders draw from: ``paraphrase="random"`` serves,
for each item, one of its task's recorded paraphrases, drawn from a generator seeded by
``(seed, epoch, item)`` so that a draw is the same in every process (DataLoader workers
included) and differs across items. Held-out paraphrases are never served: they are for evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..datasets.features import DatasetInfo
from ..sim.tasks import normalize_instruction

PARAPHRASE_MODES = ("recorded", "random")


def check_paraphrase_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`PARAPHRASE_MODES`; else a ValueError naming the option."""
    if mode not in PARAPHRASE_MODES:
        raise ValueError(f"unknown paraphrase={mode!r} (use one of {', '.join(map(repr, PARAPHRASE_MODES))})")
    return mode


@dataclass(frozen=True)
class Paraphrases:
    """Recorded paraphrases per task id, and which task an instruction text is a paraphrase of."""

    by_task: dict[str, tuple[str, ...]] = field(default_factory=dict)
    by_text: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_info(cls, info: DatasetInfo) -> Paraphrases:
        """The table a dataset's info ``extra["tasks"]`` gives (empty where it has none or a malformed one:
        augmentation then keeps every instruction as recorded)."""
        tasks = (info.extra or {}).get("tasks")
        by_task: dict[str, tuple[str, ...]] = {}
        by_text: dict[str, str] = {}
        if not isinstance(tasks, Mapping):
            return cls()
        for task_id, entry in tasks.items():
            texts = entry.get("paraphrases") if isinstance(entry, Mapping) else None
            if not isinstance(task_id, str) or not isinstance(texts, (list, tuple)):
                continue
            texts = tuple(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))
            if texts:
                by_task[task_id] = texts
                for t in texts:
                    by_text.setdefault(normalize_instruction(t), task_id)
        return cls(by_task, by_text)

    def candidates(self, task_id: str, instruction: str) -> tuple[str, ...]:
        """The recorded paraphrases of the episode's task: by its id, else by its instruction's text
        (an episode recorded before task ids); () when the task has none known."""
        if task_id in self.by_task:
            return self.by_task[task_id]
        found = self.by_text.get(normalize_instruction(instruction)) if instruction else None
        return self.by_task[found] if found is not None else ()

    def draw(self, task_id: str, instruction: str, key: tuple[int, ...]) -> str:
        """One recorded paraphrase drawn by ``key`` (e.g. ``(seed, epoch, item)``); the instruction
        verbatim when the task has no known paraphrases."""
        options = self.candidates(task_id, instruction)
        if not options:
            return instruction
        rng = np.random.default_rng([int(k) % 2**64 for k in key])  # a negative seed is a seed too
        return options[int(rng.integers(len(options)))]


def metadata_task_id(metadata: Mapping[str, Any]) -> str:
    """An episode's task id from its metadata ("" when it has none, or one another tool stored as non-text)."""
    value = metadata.get("task_id")
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else ""
