"""Task files for ``telecorder edit set-task --from-file``: which episode gets which instruction.

A CSV of ``EPISODES,TASK`` rows, the shape a spreadsheet exports: episode numbers or
ranges in the first column, the instruction in the second (quoted when it holds commas).
Every mistake is reported with the file and line, before anything is changed.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .edit_publish import EditError
from .stats import parse_ranges

__all__ = ["TaskFile", "read_task_file"]

_TASK_HEADERS = {"task", "tasks", "instruction", "language_instruction"}


class TaskFile(dict[int, str]):
    """``{episode: task}`` read from a file, remembering the line of each episode for errors."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.line_of: dict[int, int] = {}


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
    line_of = tasks.line_of
    reader = csv.reader(text.splitlines())
    for row in reader:
        lineno = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path}:{lineno}"
        if len(row) != 2:
            raise EditError(f"{where}: expected 2 columns (episodes,task), found {len(row)}; "
                            "put a task that holds commas in double quotes")
        cell, task = row[0].strip(), row[1].strip()
        try:
            numbers = parse_ranges(cell, what="episodes")
        except ValueError as e:
            if lineno == 1 and (cell.lower().startswith("episode") or task.lower() in _TASK_HEADERS):
                continue  # a header line; any other unreadable first row is a mistake, said so
            raise EditError(f"{where}: {cell!r} is not an episode number or range like 0-4") from e
        if not numbers:
            raise EditError(f"{where}: no episode number given")
        if not task:
            raise EditError(f"{where}: the task text is empty")
        for n in numbers:
            if n in tasks:
                raise EditError(f"{where}: episode {n} is given a task on line {line_of[n]} already")
            tasks[n], line_of[n] = task, lineno
    if not tasks:
        raise EditError(f"{path}: no rows of episodes,task found")
    return tasks
