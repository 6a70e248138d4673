"""MuJoCo simulation: built-in scenes (pick, cubes), environment, tasks, kinematics, scripted experts.

Importing this package does not import MuJoCo; the names below load on first use and raise an
ImportError pointing at ``pip install 'telecorder[sim]'`` when MuJoCo is missing. Any module
here that needs MuJoCo selects the headless EGL backend first when there is no display (see
:func:`telecorder.sim.render.ensure_gl_backend`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._deps import ensure_gl_backend

if TYPE_CHECKING:
    from .env import DEFAULT_MODEL, SimEnv, SimModelError
    from .expert import ScriptedExpert
    from .kinematics import IKResult, Kinematics
    from .render import SimRenderer
    from .scenes import SCENES, scene_model
    from .tasks import SUITES, Task, TaskSuite, get_suite

__all__ = [
    "DEFAULT_MODEL",
    "SCENES",
    "SUITES",
    "IKResult",
    "Kinematics",
    "ScriptedExpert",
    "SimEnv",
    "SimModelError",
    "SimRenderer",
    "Task",
    "TaskSuite",
    "ensure_gl_backend",
    "get_suite",
    "scene_model",
]

_LOCATIONS = {
    "DEFAULT_MODEL": "telecorder.sim.env",
    "SimEnv": "telecorder.sim.env",
    "SimModelError": "telecorder.sim.env",
    "Kinematics": "telecorder.sim.kinematics",
    "IKResult": "telecorder.sim.kinematics",
    "ScriptedExpert": "telecorder.sim.expert",
    "SimRenderer": "telecorder.sim.render",
    "SCENES": "telecorder.sim.scenes",
    "scene_model": "telecorder.sim.scenes",
    "SUITES": "telecorder.sim.tasks",
    "Task": "telecorder.sim.tasks",
    "TaskSuite": "telecorder.sim.tasks",
    "get_suite": "telecorder.sim.tasks",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
