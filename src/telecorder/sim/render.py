"""Offscreen RGB rendering of simulation states.

The renderer owns its own :class:`mujoco.MjData`, so a render thread can draw a state snapshot
(``SimEnv.snapshot()``) while the control thread keeps stepping the environment.
"""

from __future__ import annotations

import copy
import os

import numpy as np

from ._deps import _require_mujoco, ensure_gl_backend
from .randomize import copy_visuals

mujoco = _require_mujoco()

__all__ = ["SimRenderer", "ensure_gl_backend"]

_EGL_HELP = (
    "On headless Debian/Ubuntu install the EGL/Mesa runtime: "
    "sudo apt-get install libegl1 libgl1-mesa-dri libegl-mesa0 "
    "(and run with MUJOCO_GL=egl, set before mujoco is first imported)."
)


class SimRenderer:
    """Offscreen renderer; create it in the thread that will use it (GL context is per thread).

    Shadows, reflections and the skybox are switched off: on a software rasteriser (Mesa
    llvmpipe) the shadow pass alone costs ~4x the frame time, and a real-time recorder cannot
    afford that.
    """

    def __init__(self, model: mujoco.MjModel, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"render size must be positive, got {width}x{height}")
        self.model = model
        self.width = int(width)
        self.height = int(height)
        # The offscreen framebuffer size is part of the model; grow it on a private copy so the
        # caller's model (shared with the physics thread) is never mutated.
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            model = copy.deepcopy(model)
            model.vis.global_.offwidth = max(self.width, model.vis.global_.offwidth)
            model.vis.global_.offheight = max(self.height, model.vis.global_.offheight)
        self._model = model
        try:
            self._renderer = mujoco.Renderer(model, height=self.height, width=self.width)
        except Exception as exc:
            raise RuntimeError(
                f"Could not create a MuJoCo OpenGL context ({_backend_description()}): {exc}. "
                f"{_EGL_HELP}"
            ) from exc
        flags = self._renderer.scene.flags
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            flags[flag] = False
        self._data = mujoco.MjData(model)
        self._camera_ids = {
            model.camera(i).name: i for i in range(model.ncam) if model.camera(i).name
        }

    @property
    def camera_names(self) -> list[str]:
        return list(self._camera_ids)

    def render(self, qpos: np.ndarray, camera: str) -> np.ndarray:
        """Render ``qpos`` from the named model camera; returns RGB ``uint8`` of shape (H, W, 3)."""
        cam_id = self._camera_ids.get(camera)
        if cam_id is None:
            raise ValueError(f"unknown camera {camera!r}; the model has {self.camera_names}")
        qpos = np.asarray(qpos, dtype=np.float64)
        if qpos.shape != (self._model.nq,):
            raise ValueError(f"qpos must have shape ({self._model.nq},), got {qpos.shape}")
        if self._model is not self.model:
            # A private copy (larger framebuffer): follow the env's randomized lights/colours/cameras.
            copy_visuals(self.model, self._model)
        self._data.qpos[:] = qpos
        # Kinematics is all that drawing needs (poses of bodies, cameras, lights); skipping the
        # dynamics keeps a render call cheap and independent of velocities/controls.
        mujoco.mj_kinematics(self._model, self._data)
        # Tracking cameras/lights (mode="trackcom"/"targetbodycom") need subtree centres of mass.
        mujoco.mj_comPos(self._model, self._data)
        mujoco.mj_camlight(self._model, self._data)
        self._renderer.update_scene(self._data, camera=cam_id)
        return self._renderer.render()

    def close(self) -> None:
        renderer = getattr(self, "_renderer", None)
        if renderer is not None:
            renderer.close()
            self._renderer = None

    def __enter__(self) -> SimRenderer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _backend_description() -> str:
    # MuJoCo fixes its GL backend when it is first imported, so the environment variable as it
    # is now can differ from the backend actually in use (e.g. mujoco imported before us).
    try:
        from mujoco.rendering.classic import gl_context

        active = getattr(gl_context, "_MUJOCO_GL", None)
    except ImportError:
        active = None
    env = os.environ.get("MUJOCO_GL")
    if active is None:
        return f"MUJOCO_GL={env!r}"
    active_name = active or "glfw (default, needs a display)"
    if env is not None and env.lower().strip() != active:
        return (
            f"mujoco was imported with backend {active_name} before MUJOCO_GL={env!r} was set; "
            "set MUJOCO_GL in the environment or import telecorder.sim before mujoco"
        )
    return f"backend {active_name}"
