"""Task lists for a recording session (``collect --tasks SPEC --task-order ORDER``).

A task list says which instruction each episode is recorded with. SPEC is a task suite's
name (``cubes``: every task of the suite, each with its recorded paraphrases), a file (``.txt``:
one instruction per line; ``.json`` / ``.yaml``: entries with ``task_id``, ``paraphrases`` and
``count``), or instructions separated by ``;``. Each instruction is matched against the task
suite (any case and spacing): a match gives the episode its ``task_id``, ``task_family`` and
``paraphrase_index`` and the simulator its success check; anything else is free text (task id
``""``), which a person or a policy may record but the scripted expert cannot.

Orders: ``cycle`` goes round the list, ``random`` draws a task (seeded), ``balanced`` records
the task with the fewest successful episodes next (ties: list order). The paraphrase of a task
is drawn from its paraphrases by a seeded generator. A task with a ``count`` is not chosen
again once it has that many successful episodes; when every task is done the session ends.

This module imports nothing heavy: the suites (``telecorder.sim.tasks``) are plain data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TelecorderError

ORDERS = ("cycle", "random", "balanced")
FILE_SUFFIXES = (".txt", ".json", ".yaml", ".yml")
# A task list is a few sentences: beyond this a file is something else, read into memory for nothing.
MAX_TASK_FILE_BYTES = 4 << 20
# An instruction is stored in every episode's HDF5 attributes (and in OXE, LeRobot and ALOHA files).
MAX_INSTRUCTION_CHARS = 2000


class TaskListError(TelecorderError):
    """A --tasks SPEC (or --task text) that cannot be recorded as given."""


def _tasks_module() -> Any:
    from ..sim import tasks

    return tasks


def suite_names() -> list[str]:
    return list(_tasks_module().SUITES)


def get_suite(name: str) -> Any:
    """The task suite called ``name`` (a ``sim.tasks.TaskSuite``), or a TaskListError naming the known ones."""
    suites = _tasks_module().SUITES
    if name not in suites:
        raise TaskListError(f"no task suite {name!r}; known suites: {', '.join(suites)}")
    return suites[name]


def suite_for_scene(scene: str | None) -> Any | None:
    """The task suite of a sim scene (``cubes`` -> the cubes suite), None for a scene without one."""
    if not scene:
        return None
    for suite in _tasks_module().SUITES.values():
        if suite.scene == scene:
            return suite
    return None


def normalize(text: str) -> str:
    return _tasks_module().normalize_instruction(text)


@dataclass(frozen=True)
class Instruction:
    """What one episode is recorded with: the text verbatim, and the suite task it names (if any)."""

    text: str
    task_id: str = ""
    paraphrase_index: int = -1
    family: str = ""
    task: Any = None  # the sim.tasks.Task the text is a paraphrase of; None for free text

    def attrs(self) -> dict[str, Any]:
        """The episode attributes (and index fields) of this instruction."""
        return {"task": self.text, "language_instruction": self.text, "task_id": self.task_id,
                "paraphrase_index": int(self.paraphrase_index), "task_family": self.family}


@dataclass
class TaskEntry:
    """One task of a list: the instructions it is recorded with and how many successes it wants."""

    key: str  # task_id, or the normalized text of a free instruction
    texts: tuple[str, ...]
    indices: tuple[int, ...]  # each text's paraphrase index (-1: not one of the task's paraphrases)
    task_id: str = ""
    family: str = ""
    task: Any = None
    count: int | None = None
    heldout: tuple[str, ...] = ()

    def instruction(self, k: int) -> Instruction:
        return Instruction(self.texts[k], self.task_id, self.indices[k], self.family, self.task)

    @property
    def matched(self) -> bool:
        """Every text is one of a suite task's paraphrases (what the scripted expert needs)."""
        return self.task is not None and all(i >= 0 for i in self.indices)


def suite_entry(task: Any, texts: Sequence[str] | None = None, count: int | None = None) -> TaskEntry:
    """The entry of a suite task, recorded with ``texts`` (default: its recorded paraphrases)."""
    texts = tuple(texts) if texts is not None else tuple(task.recorded)
    paraphrases = [normalize(p) for p in task.paraphrases]
    indices = tuple(paraphrases.index(normalize(t)) if normalize(t) in paraphrases else -1 for t in texts)
    return TaskEntry(task.task_id, texts, indices, task.task_id, task.family, task, count, tuple(task.heldout))


@dataclass
class TaskList:
    entries: list[TaskEntry]
    order: str = "cycle"
    seed: int | None = None
    suite: Any = None  # the suite the instructions were matched against (None: none)
    source: str = ""  # what the list came from, for messages: "--tasks cubes", "--task"
    successes: dict[str, int] = field(default_factory=dict)
    episodes: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise TaskListError(f"--task-order {self.order!r}: choose one of {', '.join(ORDERS)}")
        if not self.entries:
            raise TaskListError(f"{self.source or '--tasks'}: the task list is empty")
        self._rng = np.random.default_rng(self.seed)
        self._cursor = 0
        self._avoid: str | None = None
        for e in self.entries:
            self.successes.setdefault(e.key, 0)
            self.episodes.setdefault(e.key, 0)
            self.skipped.setdefault(e.key, 0)

    # -- building ----------------------------------------------------------------------

    @classmethod
    def single(cls, text: str, suite: Any = None, source: str = "--task") -> TaskList:
        """One instruction for every episode (``--task TEXT``), matched against ``suite`` if given."""
        return cls([_entry_for_texts([text], [suite] if suite is not None else [])], source=source,
                   suite=suite if suite is not None and _match(text, [suite]) else None)

    @classmethod
    def from_suite(cls, suite: Any, order: str = "cycle", seed: int | None = None) -> TaskList:
        return cls([suite_entry(t) for t in suite.tasks], order=order, seed=seed, suite=suite,
                   source=f"--tasks {suite.name}")

    # -- what the session asks ---------------------------------------------------------

    @property
    def multiple(self) -> bool:
        """More than one instruction to choose from (the person must be told which one is next)."""
        return len(self.entries) > 1 or len(self.entries[0].texts) > 1

    @property
    def target(self) -> int | None:
        """Episodes the counts ask for, when every entry has a count."""
        counts = [e.count for e in self.entries]
        return sum(counts) if all(c is not None for c in counts) else None  # type: ignore[misc]

    def _open(self) -> list[int]:
        return [i for i, e in enumerate(self.entries) if e.count is None or self.successes[e.key] < e.count]

    def next(self) -> Instruction | None:
        """The instruction of the next episode; None once every task has its count."""
        open_ = self._open()
        if not open_:
            return None
        if self._avoid is not None and len(open_) > 1:
            # Just skipped (cannot be done in this layout): never offered again straight away.
            open_ = [i for i in open_ if self.entries[i].key != self._avoid] or open_
        self._avoid = None
        if self.order == "cycle":
            n = len(self.entries)
            pick = next(i for i in ((self._cursor + k) % n for k in range(n)) if i in open_)
            self._cursor = (pick + 1) % n
        elif self.order == "random":
            pick = open_[int(self._rng.integers(len(open_)))]
        else:
            pick = min(open_, key=lambda i: (self.successes[self.entries[i].key], i))
        entry = self.entries[pick]
        return entry.instruction(int(self._rng.integers(len(entry.texts))) if len(entry.texts) > 1 else 0)

    def _key(self, instr: Instruction) -> str | None:
        for e in self.entries:
            if (instr.task_id and e.task_id == instr.task_id) or instr.text in e.texts:
                return e.key
        return None

    def record(self, instr: Instruction, success: bool | None) -> None:
        """A saved episode of ``instr``; a success (or an operator's save where nothing can judge) counts."""
        key = self._key(instr)
        if key is None:
            return
        self.episodes[key] += 1
        if success is not False:
            self.successes[key] += 1

    def skip(self, instr: Instruction) -> None:
        key = self._key(instr)
        if key is not None:
            self.skipped[key] += 1
            self._avoid = key

    def count_existing(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Count the episodes a resumed dataset already holds (index lines); returns how many matched."""
        by_text = {normalize(t): e.key for e in self.entries for t in e.texts}
        by_id = {e.task_id: e.key for e in self.entries if e.task_id}
        n = 0
        for rec in records:
            key = by_id.get(str(rec.get("task_id") or "")) or by_text.get(normalize(str(rec.get("task") or "")))
            if key is None:
                continue
            n += 1
            self.episodes[key] += 1
            if rec.get("success") is not False:
                self.successes[key] += 1
        return n

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def info_extra(self) -> dict[str, Any]:
        """info.json ``extra``: ``task_suite`` and ``tasks`` (task_id -> family, paraphrases, heldout)."""
        tasks = {}
        for e in self.entries:
            if not e.task_id:
                continue
            if e.task is not None:
                tasks[e.task_id] = {"family": e.task.family, "paraphrases": list(e.task.recorded),
                                    "heldout": list(e.task.heldout)}
            else:
                tasks[e.task_id] = {"family": e.family, "paraphrases": list(e.texts), "heldout": list(e.heldout)}
        out: dict[str, Any] = {}
        if self.suite is not None:
            out["task_suite"] = self.suite.name
        if tasks:
            out["tasks"] = tasks
        return out

    def unmatched(self) -> list[str]:
        """Instructions that are none of the suite's paraphrases."""
        return [t for e in self.entries for t, i in zip(e.texts, e.indices, strict=True) if e.task is None or i < 0]

    def check_expert(self, who: str, suite: Any) -> None:
        """Refuse instructions the scripted expert cannot do: each must be a paraphrase of a task of ``suite``."""
        bad = [t for t in self.unmatched()]
        wrong = [e.task_id for e in self.entries if e.task is not None and suite is not None
                 and e.task_id not in {t.task_id for t in suite.tasks}]
        if suite is None:
            raise TaskListError(f"{self.source}: {who} performs the tasks of a task suite, and this scene has none; "
                                "record a suite's scene (--scene cubes --tasks cubes), or drop the task list")
        if bad or wrong:
            what = bad[0] if bad else wrong[0]
            raise TaskListError(
                f"{self.source}: {who} can only do the tasks of suite {suite.name!r}, and {what!r} is none of them"
                f"{f' ({len(bad)} such instructions)' if len(bad) > 1 else ''}; known tasks: {known_tasks(suite)}"
            )

    def describe(self) -> str:
        n = len(self.entries)
        texts = sum(len(e.texts) for e in self.entries)
        suite = f" of suite {self.suite.name!r}" if self.suite is not None else ""
        return f"{n} task(s){suite}, {texts} instruction(s), order {self.order}"


def known_tasks(suite: Any) -> str:
    """``pick_red ('pick up the red cube'), ...``: a suite's tasks for an error message."""
    return ", ".join(f"{t.task_id} ({t.recorded[0]!r})" for t in suite.tasks)


def _match(text: str, suites: Sequence[Any]) -> tuple[Any, int] | None:
    for suite in suites:
        hit = suite.match(text)
        if hit is not None:
            return hit
    return None


def _entry_for_texts(texts: Sequence[str], suites: Sequence[Any], count: int | None = None) -> TaskEntry:
    """An entry for instructions without a task id: a suite task if they all match one, else free text."""
    hits = [_match(t, suites) for t in texts]
    if hits and all(h is not None for h in hits) and len({h[0].task_id for h in hits}) == 1:  # type: ignore[index]
        task = hits[0][0]  # type: ignore[index]
        return TaskEntry(task.task_id, tuple(texts), tuple(h[1] for h in hits), task.task_id, task.family,  # type: ignore[index]
                         task, count, tuple(task.heldout))
    return TaskEntry(normalize(texts[0]), tuple(texts), tuple(-1 for _ in texts), count=count)


def check_instruction(text: str, where: str) -> None:
    """An instruction short enough to store with every episode; else one line saying where it is."""
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise TaskListError(f"{where}: an instruction of {len(text)} characters ({text[:40]!r}...); instructions "
                            f"may have at most {MAX_INSTRUCTION_CHARS}")


def _group(texts: Sequence[str], suites: Sequence[Any]) -> list[TaskEntry]:
    """One entry per task: instructions naming the same suite task (or the same free text) go together."""
    entries: dict[str, TaskEntry] = {}
    for text in texts:
        check_instruction(text, "--tasks")
        e = _entry_for_texts([text], suites)
        have = entries.get(e.key)
        if have is None:
            entries[e.key] = e
        elif text not in have.texts:
            have.texts += e.texts
            have.indices += e.indices
    return list(entries.values())


def parse_task_spec(spec: str, *, scene: str | None = None, order: str = "cycle",
                    seed: int | None = None) -> TaskList:
    """A TaskList from ``--tasks SPEC``: a suite name, a .txt/.json/.yaml file, or ``a; b; c``.

    Instructions are matched against the suite the SPEC names (a file's ``suite`` key), else the
    ``scene``'s suite, else every suite (a real robot's scene is whatever the person built).
    """
    text = spec.strip()
    if not text:
        raise TaskListError("--tasks is empty; give a suite name (e.g. cubes), a file, or instructions separated by ';'")
    known = _tasks_module().SUITES
    if text in known:
        suite = known[text]
        if scene is not None and suite.scene != scene:
            raise TaskListError(f"--tasks {text} is the task suite of scene {suite.scene!r}, not of --scene {scene}; "
                                f"use --scene {suite.scene}")
        return TaskList.from_suite(suite, order, seed)
    path = Path(text).expanduser()
    is_file = path.suffix.lower() in FILE_SUFFIXES or (";" not in text and path.is_file())
    if is_file:
        return _from_file(path, scene=scene, order=order, seed=seed)
    items = [t.strip() for t in text.split(";") if t.strip()]
    if len(items) == 1 and " " not in items[0]:
        raise TaskListError(f"--tasks {text!r} is no task suite ({', '.join(known)}), no file, and no list of "
                            "instructions (separate them with ';'); for one instruction use --task TEXT")
    suites = _suites_for(scene, None)
    entries = _group(items, suites)
    return TaskList(entries, order=order, seed=seed, suite=_used_suite(entries, suites), source="--tasks")


def _suites_for(scene: str | None, named: str | None) -> list[Any]:
    if named is not None:
        return [get_suite(named)]
    own = suite_for_scene(scene)
    if own is not None:
        return [own]
    return list(_tasks_module().SUITES.values()) if scene in (None, "") else []


def _used_suite(entries: Sequence[TaskEntry], suites: Sequence[Any]) -> Any:
    ids = {e.task_id for e in entries if e.task is not None}
    for suite in suites:
        if ids and ids <= {t.task_id for t in suite.tasks}:
            return suite
    return None


def _from_file(path: Path, *, scene: str | None, order: str, seed: int | None) -> TaskList:
    where = f"--tasks {path}"
    if path.exists() and not path.is_file():
        raise TaskListError(f"{where}: not a regular file (a folder, device or pipe); give a .txt/.json/.yaml "
                            "file of instructions")
    if not path.is_file():
        raise TaskListError(f"{where}: no such file (give a task suite name, a .txt/.json/.yaml file, or "
                            "instructions separated by ';')")
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_TASK_FILE_BYTES:
                raise TaskListError(f"{where}: {size} bytes is no task list (at most {MAX_TASK_FILE_BYTES >> 20} MiB); "
                                    "give the file of instructions")
            raw = fh.read(MAX_TASK_FILE_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TaskListError(f"{where}: cannot read it ({e})") from e
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        lines = [ln.strip() for ln in raw.splitlines()]
        items = [ln for ln in lines if ln and not ln.startswith("#")]
        if not items:
            raise TaskListError(f"{where}: no instructions in it (one per line; '#' starts a comment)")
        suites = _suites_for(scene, None)
        entries = _group(items, suites)
        return TaskList(entries, order=order, seed=seed, suite=_used_suite(entries, suites), source=where)
    if suffix == ".json":
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as e:
            raise TaskListError(f"{where}: not valid JSON ({type(e).__name__}: {str(e)[:120]})") from e
    else:
        try:
            import yaml
        except ImportError:
            raise TaskListError(f"{where}: reading YAML needs PyYAML (pip install pyyaml); or write the list as "
                                ".json or .txt") from None
        try:
            doc = yaml.safe_load(raw)
        except RecursionError as e:
            raise TaskListError(f"{where}: not valid YAML (nested too deeply)") from e
        except yaml.YAMLError as e:
            raise TaskListError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from e
    named = None
    if isinstance(doc, dict):
        named = doc.get("suite")
        if named is not None and not isinstance(named, str):
            raise TaskListError(f"{where}: 'suite' must be a suite name ({', '.join(suite_names())})")
        doc = doc.get("tasks")
    if not isinstance(doc, list) or not doc:
        raise TaskListError(f"{where}: expected a list of tasks (or an object with 'tasks': [...]), each "
                            "{'task_id': ..., 'paraphrases': [...], 'count': N} or an instruction string")
    if named is not None:
        suite = get_suite(named)
        if scene is not None and suite.scene != scene:
            raise TaskListError(f"{where}: suite {named!r} belongs to scene {suite.scene!r}, not --scene {scene}")
    suites = _suites_for(scene, named)
    entries = [_file_entry(item, k, where, suites) for k, item in enumerate(doc)]
    keys = [e.key for e in entries]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise TaskListError(f"{where}: task {dup!r} is listed twice; give each task one entry")
    return TaskList(entries, order=order, seed=seed, suite=_used_suite(entries, suites), source=where)


def _file_entry(item: Any, k: int, where: str, suites: Sequence[Any]) -> TaskEntry:
    at = f"{where}: task {k + 1}"
    if isinstance(item, str):
        item = {"paraphrases": [item]}
    if not isinstance(item, dict):
        raise TaskListError(f"{at}: expected an object or an instruction string, not {type(item).__name__}")
    unknown = set(item) - {"task_id", "paraphrases", "count", "family", "heldout", "instruction"}
    if unknown:
        raise TaskListError(f"{at}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; use task_id, "
                            "paraphrases, count (and family, heldout for your own tasks)")
    texts = item.get("paraphrases", item.get("instruction"))
    if isinstance(texts, str):
        texts = [texts]
    if texts is not None and (not isinstance(texts, list) or not texts
                              or not all(isinstance(t, str) and t.strip() for t in texts)):
        raise TaskListError(f"{at}: 'paraphrases' must be a non-empty list of instruction strings")
    count = item.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise TaskListError(f"{at}: 'count' must be a whole number of episodes, at least 1, not {count!r}")
    heldout = item.get("heldout") or []
    if not isinstance(heldout, list) or not all(isinstance(t, str) for t in heldout):
        raise TaskListError(f"{at}: 'heldout' must be a list of instruction strings")
    task_id = item.get("task_id")
    if task_id is not None and (not isinstance(task_id, str) or not task_id.strip()):
        raise TaskListError(f"{at}: 'task_id' must be a non-empty string")
    texts = [t.strip() for t in texts] if texts is not None else None
    for t in [*(texts or ()), *heldout]:
        check_instruction(t, at)
    suite_task = None
    if task_id:
        suite_task = next((t for s in suites for t in s.tasks if t.task_id == task_id), None)
    if suite_task is not None:
        for t in texts or []:
            hit = _match(t, suites)
            if hit is not None and hit[0].task_id != task_id:
                raise TaskListError(f"{at}: {t!r} is task {hit[0].task_id!r} of the suite, not {task_id!r}")
        return suite_entry(suite_task, texts, count)
    if texts is None:
        known = f"; known tasks: {known_tasks(suites[0])}" if suites else ""
        raise TaskListError(f"{at}: task {task_id!r} is no suite task, so it needs 'paraphrases'{known}")
    if task_id:
        # Your own task: its paraphrases are numbered in the order given.
        family = item.get("family") or ""
        if not isinstance(family, str):
            raise TaskListError(f"{at}: 'family' must be a string")
        return TaskEntry(task_id, tuple(texts), tuple(range(len(texts))), task_id, family, None, count,
                         tuple(heldout))
    entry = _entry_for_texts(texts, suites, count)
    if entry.task is None and len(texts) > 1:
        raise TaskListError(f"{at}: several paraphrases without a 'task_id': name the task they all describe")
    return entry
