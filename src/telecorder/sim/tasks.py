"""Language-conditioned tasks for the built-in ``cubes`` scene, and their paraphrases.

A :class:`Task` names what to do (``task_id``, ``family``, the object and where it goes), the
instructions that ask for it (``recorded`` paraphrases, used to record demonstrations, the first
being the canonical form; ``heldout`` ones, kept for evaluation only) and how the simulator
decides that it is done (:meth:`Task.success`, see :mod:`telecorder.sim.objects` for the exact
checks). The ``cubes`` suite (:data:`SUITES`) has 18 tasks in four families:

* ``pick``  x3: ``pick up the {c} cube`` -- the cube is lifted more than 5 cm above its rest height.
* ``bin``   x3: ``put the {c} cube in the bin`` -- the cube rests inside the bin, not held.
* ``stack`` x6: ``put the {c} cube on the {d} cube`` -- it rests on the other cube, not held.
* ``push``  x6: ``push the {c} cube to the left edge`` / ``right edge`` -- it is on the table in
  that edge zone (left = +y, the robot's left when it faces +x).

The ``bimanual`` suite (scene ``bimanual``, two arms) has one task, ALOHA's sim transfer:

* ``transfer`` x1: ``transfer the cube from the left gripper to the right gripper`` -- the left arm
  picks the cube up and hands it over; done when the cube is more than 5 cm above its rest height,
  held by the right gripper and no longer touched by the left arm.

This module does not import MuJoCo (the collector reads task lists without a simulator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["COLOURS", "FAMILIES", "SUITES", "Task", "TaskSuite", "get_suite", "normalize_instruction"]

COLOURS = ("red", "green", "blue")
FAMILIES = ("pick", "bin", "stack", "push", "transfer")


def normalize_instruction(text: str) -> str:
    """Lower-case, single spaces, no surrounding blanks and no trailing full stop(s)."""
    return re.sub(r"\s+", " ", str(text)).strip().rstrip(".").strip().lower()


@dataclass(frozen=True)
class Task:
    """One thing to do in a scene and the instructions that ask for it.

    Attributes:
        task_id: stable identifier, e.g. ``"pick_red"``, ``"bin_red"``, ``"stack_red_on_green"``,
            ``"push_red_left"``.
        family: ``"pick"``, ``"bin"``, ``"stack"`` or ``"push"``.
        recorded: paraphrases used for recording; ``recorded[0]`` is the canonical form.
        heldout: paraphrases never recorded, for evaluation (at least one).
        obj: the body the instruction names and the expert moves (``"red_cube"``).
        support: stack: the cube it goes on; bin: ``"bin"``; transfer: the arm that gives
            (``"left"``); otherwise None.
        side: push: ``"left"`` (+y) or ``"right"`` (-y); transfer: the arm that receives
            (``"right"``); otherwise None.
    """

    task_id: str
    family: str
    recorded: tuple[str, ...]
    heldout: tuple[str, ...]
    obj: str
    support: str | None = None
    side: str | None = None

    @property
    def paraphrases(self) -> tuple[str, ...]:
        """Recorded then held-out paraphrases (the index :meth:`TaskSuite.match` returns is into this)."""
        return self.recorded + self.heldout

    @property
    def instruction(self) -> str:
        """The canonical instruction (``recorded[0]``)."""
        return self.recorded[0]

    def success(self, env: Any) -> bool:
        """Whether the task is done in the :class:`~telecorder.sim.env.SimEnv` ``env``'s current state (see :func:`telecorder.sim.objects.task_success`)."""
        from .objects import task_success

        return task_success(env, self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (family, paraphrases, heldout, obj, support, side)."""
        return {"family": self.family, "paraphrases": list(self.recorded), "heldout": list(self.heldout),
                "obj": self.obj, "support": self.support, "side": self.side}


@dataclass(frozen=True)
class TaskSuite:
    """The tasks of one scene, looked up by id or by instruction text."""

    name: str
    scene: str
    tasks: tuple[Task, ...]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for task in self.tasks:
            for text in task.paraphrases:
                key = normalize_instruction(text)
                if key in seen and seen[key] != task.task_id:
                    raise ValueError(f"suite {self.name!r}: {text!r} is a paraphrase of both "
                                     f"{seen[key]!r} and {task.task_id!r}")
                seen[key] = task.task_id
        ids = [t.task_id for t in self.tasks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"suite {self.name!r}: duplicate task ids")

    @property
    def task_ids(self) -> list[str]:
        return [t.task_id for t in self.tasks]

    def by_id(self, task_id: str) -> Task:
        """The task with this id; ValueError listing the ids otherwise."""
        for task in self.tasks:
            if task.task_id == task_id:
                return task
        raise ValueError(f"suite {self.name!r} has no task {task_id!r}; known: {', '.join(self.task_ids)}")

    def match(self, text: str) -> tuple[Task, int] | None:
        """The task one of whose paraphrases ``text`` is (any case, spacing, trailing '.'), and
        the paraphrase's index in :attr:`Task.paraphrases`; None when it is none of them."""
        key = normalize_instruction(text)
        for task in self.tasks:
            for i, p in enumerate(task.paraphrases):
                if normalize_instruction(p) == key:
                    return task, i
        return None

    def describe(self) -> str:
        """One line per task: id and canonical instruction (for 'unknown instruction' messages)."""
        return "\n".join(f"  {t.task_id}: {t.instruction!r}" for t in self.tasks)


def _cubes_suite() -> TaskSuite:
    tasks: list[Task] = []
    for c in COLOURS:
        tasks.append(Task(
            f"pick_{c}", "pick",
            (f"pick up the {c} cube", f"grab the {c} block", f"lift the {c} cube"),
            (f"raise the {c} one off the table", f"take the {c} cube up"),
            obj=f"{c}_cube",
        ))
    for c in COLOURS:
        tasks.append(Task(
            f"bin_{c}", "bin",
            (f"put the {c} cube in the bin", f"place the {c} block into the bin",
             f"drop the {c} cube in the tray"),
            (f"move the {c} one into the bin", f"the {c} cube goes in the bin"),
            obj=f"{c}_cube", support="bin",
        ))
    for c in COLOURS:
        for d in COLOURS:
            if c == d:
                continue
            tasks.append(Task(
                f"stack_{c}_on_{d}", "stack",
                (f"put the {c} cube on the {d} cube", f"stack the {c} block on the {d} block",
                 f"place the {c} cube on top of the {d} one"),
                (f"set the {c} one onto the {d} cube", f"stack {c} on {d}"),
                obj=f"{c}_cube", support=f"{d}_cube",
            ))
    for c in COLOURS:
        for side in ("left", "right"):
            tasks.append(Task(
                f"push_{c}_{side}", "push",
                (f"push the {c} cube to the {side} edge", f"slide the {c} block to the {side}",
                 f"push the {c} cube {side}"),
                (f"shove the {c} one over to the {side} side", f"nudge the {c} cube toward the {side} edge"),
                obj=f"{c}_cube", side=side,
            ))
    return TaskSuite("cubes", "cubes", tuple(tasks))


def _bimanual_suite() -> TaskSuite:
    return TaskSuite("bimanual", "bimanual", (Task(
        "transfer", "transfer",
        ("transfer the cube from the left gripper to the right gripper", "hand the cube from the left arm to the right arm",
         "pass the cube from left to right"),
        ("give the cube to the right hand", "move the cube over to the right gripper"),
        obj="cube", support="left", side="right",
    ),))


SUITES: dict[str, TaskSuite] = {"cubes": _cubes_suite(), "bimanual": _bimanual_suite()}


def get_suite(name: str) -> TaskSuite:
    """The named task suite; ValueError listing the known suites otherwise."""
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"unknown task suite {name!r}; known suites: {', '.join(SUITES)}") from None
