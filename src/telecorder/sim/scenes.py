"""The built-in simulation scenes, by name (``--scene``).

* ``pick`` (default): the tabletop arm and one red cube to pick up (``assets/tabletop_arm.xml``).
* ``cubes``: the same arm with a red, a green and a blue cube and a shallow bin
  (``assets/cubes.xml``), the scene of the ``cubes`` task suite (:mod:`telecorder.sim.tasks`).
* ``bimanual``: two of the arm facing each other across the table and one cube
  (``assets/bimanual.xml``), the scene of the ``bimanual`` suite (hand the cube from left to right).

This module only names files; it does not import MuJoCo.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BIMANUAL_MODEL", "CUBES_MODEL", "DEFAULT_SCENE", "PICK_MODEL", "SCENES", "scene_model"]

_ASSETS = Path(__file__).resolve().parent / "assets"

#: Today's single-cube scene; the same file as :data:`telecorder.sim.env.DEFAULT_MODEL`.
PICK_MODEL: Path = _ASSETS / "tabletop_arm.xml"
CUBES_MODEL: Path = _ASSETS / "cubes.xml"
BIMANUAL_MODEL: Path = _ASSETS / "bimanual.xml"

SCENES: dict[str, Path] = {"pick": PICK_MODEL, "cubes": CUBES_MODEL, "bimanual": BIMANUAL_MODEL}
DEFAULT_SCENE = "pick"


def scene_model(name: str) -> Path:
    """The MJCF file of a built-in scene; ValueError naming the known scenes otherwise."""
    try:
        return SCENES[name]
    except KeyError:
        raise ValueError(f"unknown scene {name!r}; built-in scenes: {', '.join(SCENES)}") from None
