"""MuJoCo simulation: built-in tabletop arm scene, environment, kinematics, scripted expert.

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

__all__ = [
    "DEFAULT_MODEL",
    "IKResult",
    "Kinematics",
    "ScriptedExpert",
    "SimEnv",
    "SimModelError",
    "SimRenderer",
    "ensure_gl_backend",
]

_LOCATIONS = {
    "DEFAULT_MODEL": "telecorder.sim.env",
    "SimEnv": "telecorder.sim.env",
    "SimModelError": "telecorder.sim.env",
    "Kinematics": "telecorder.sim.kinematics",
    "IKResult": "telecorder.sim.kinematics",
    "ScriptedExpert": "telecorder.sim.expert",
    "SimRenderer": "telecorder.sim.render",
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
