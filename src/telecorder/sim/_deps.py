"""Optional-dependency handling shared by the simulation modules."""

from __future__ import annotations

import os
import sys
from types import ModuleType

MUJOCO_MISSING_MSG = (
    "telecorder.sim needs the MuJoCo physics engine, which is not installed. "
    "Install it with: pip install 'telecorder[sim]'"
)


def ensure_gl_backend() -> None:
    """Pick the EGL offscreen backend on headless Linux before MuJoCo is imported.

    MuJoCo's Python bindings choose their OpenGL backend once, at ``import mujoco``, from
    ``MUJOCO_GL``; the default (GLFW) needs an X display and fails on servers. Calling this
    first makes headless rendering work out of the box while leaving any explicit user choice,
    desktop sessions and macOS (which uses CGL) alone.
    """
    if not sys.platform.startswith("linux"):
        return
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    if "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"
    if os.environ["MUJOCO_GL"].lower() == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def _require_mujoco() -> ModuleType:
    """Import and return :mod:`mujoco`, with an actionable message when it is missing."""
    ensure_gl_backend()
    try:
        import mujoco
    except ImportError as exc:
        raise ImportError(MUJOCO_MISSING_MSG) from exc
    return mujoco
