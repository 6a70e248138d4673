"""Task files for ``telecorder edit set-task --from-file``: which episode gets which instruction.

A CSV of ``EPISODES,TASK`` rows, the shape a spreadsheet exports: episode numbers or
ranges in the first column, the instruction in the second (quoted when it holds commas).
Every mistake is reported with the file and line, before anything is changed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ..sim.tasks import normalize_instruction
from .edit_publish import EditError
from .ranges import EpisodeRanges, RangeError, RangeLimitError, compact, parse_episode_ranges

__all__ = ["TaskFile", "read_task_file", "task_list_fields"]

_TASK_HEADERS = {"task", "tasks", "instruction", "language_instruction"}
# Python's csv refuses fields over 131072 characters with a bare error; a row is checked
# against this documented limit first (an instruction is a sentence, not a document).
MAX_TASK_LINE = 100_000


class TaskFile(Mapping[int, str]):
    """``{episode: task}`` read from a file, held as the ranges the file gives (``0-4``
    stays two numbers until :meth:`resolve` checks it against a dataset's episodes), with
    the line of each range for errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[tuple[EpisodeRanges, str, int]] = []  # (episodes, task, line)

    def _row(self, n: object) -> tuple[EpisodeRanges, str, int] | None:
        return next((r for r in self.rows if n in r[0]), None)

    def __getitem__(self, n: int) -> str:
        row = self._row(n)
        if row is None:
            raise KeyError(n)
        return row[1]

    def __contains__(self, n: object) -> bool:
        return self._row(n) is not None

    def __iter__(self) -> Iterator[int]:
        for ranges, _, _ in self.rows:
            yield from ranges

    def __len__(self) -> int:
        return sum(len(r[0]) for r in self.rows)

    def line_of(self, n: int) -> int:
        row = self._row(n)
        if row is None:
            raise KeyError(n)
        return row[2]

    def resolve(self, indices: Sequence[int], dataset: Path) -> dict[int, str]:
        """``{episode: task}`` for a dataset holding ``indices``; an episode it lacks is an
        error naming the line that asks for it (checked before any range is expanded)."""
        for ranges, _, line in self.rows:
            missing = ranges.absent(indices, limit=1)
            if missing:
                raise EditError(f"{self.path}:{line}: {dataset} has no episode {missing[0]} "
                                f"(it has {compact(sorted(indices)) or 'none'}); nothing was changed")
        return {n: task for ranges, task, _ in self.rows for n in ranges}


def read_task_file(path: str | Path) -> TaskFile:
    """``EPISODES,TASK`` rows (``3,pick up the cube`` or ``0-4,"stack, then push"``); a first
    line like ``episode_index,task`` is a header. Any bad row is an error naming its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise EditError(f"{path}: no such task file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise EditError(f"{path}: cannot be read as UTF-8 text ({e})") from e
    tasks = TaskFile(path)
    # One line is one row: an instruction never spans lines, so a quote left open is a
    # mistake to report, not a licence to join the rows below it into one task.
    for lineno, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        if len(line) > MAX_TASK_LINE:
            raise EditError(f"{where}: the line is {len(line)} characters long; a task row may have at "
                            f"most {MAX_TASK_LINE}")
        try:
            rows = list(csv.reader([line], strict=True))
        except csv.Error as e:
            raise EditError(f"{where}: not a CSV row ({e}); a quote opened on a line must close on it, "
                            'as in 0-4,"stack, then push"') from e
        row = rows[0] if rows else []
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise EditError(f"{where}: expected 2 columns (episodes,task), found {len(row)}; "
                            "put a task that holds commas in double quotes")
        cell, task = row[0].strip(), row[1].strip()
        try:
            numbers = parse_episode_ranges(cell, what=f"{where}: episodes")
        except RangeError as e:
            if lineno == 1 and (cell.lower().startswith("episode") or task.lower() in _TASK_HEADERS):
                continue  # a header line; any other unreadable first row is a mistake, said so
            if isinstance(e, RangeLimitError):
                raise EditError(str(e)) from e
            raise EditError(f"{where}: {cell!r} is not an episode number or range like 0-4") from e
        if not numbers:
            raise EditError(f"{where}: no episode number given")
        if not task:
            raise EditError(f"{where}: the task text is empty")
        tasks.rows.append((numbers, task, lineno))
    if not tasks.rows:
        raise EditError(f"{path}: no rows of episodes,task found")
    _check_overlaps(tasks)
    return tasks


def _check_overlaps(tasks: TaskFile) -> None:
    """An episode given two tasks is an error naming both lines (found on the sorted ranges,
    without expanding them)."""
    spans = sorted((lo, hi, line) for ranges, _, line in tasks.rows for lo, hi in ranges.parts)
    reach: tuple[int, int] | None = None  # (highest number so far, its line)
    for lo, hi, line in spans:
        if reach is not None and lo <= reach[0]:
            first, later = sorted((reach[1], line))
            raise EditError(f"{tasks.path}:{later}: episode {lo} is given a task on line {first} already")
        if reach is None or hi > reach[0]:
            reach = (hi, line)


def task_list_fields(text: str, tasks: object) -> dict[str, object]:
    """``task_id``, ``task_family`` and ``paraphrase_index`` for an instruction relabelled in a
    dataset recorded from a task list (``tasks``: info.json's ``extra["tasks"]``): the task whose
    paraphrase it is (any case and spacing), else none, so that no episode keeps the id of an
    instruction it no longer has."""
    wanted = normalize_instruction(text)
    for task_id, task in (tasks.items() if isinstance(tasks, Mapping) else ()):
        if not isinstance(task, Mapping):
            continue
        paraphrases = [*(task.get("paraphrases") or ()), *(task.get("heldout") or ())]
        for i, paraphrase in enumerate(paraphrases):
            if isinstance(paraphrase, str) and normalize_instruction(paraphrase) == wanted:
                return {"task_id": str(task_id), "task_family": str(task.get("family") or ""), "paraphrase_index": i}
    return {"task_id": "", "task_family": "", "paraphrase_index": -1}
