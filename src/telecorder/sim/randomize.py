"""Seeded visual randomization of a scene: lighting, colours, camera poses (``--randomize``).

Every :meth:`SimEnv.reset` with a non-empty ``randomize`` set draws new values from the env's
generator (after the object layout, so the layout of a seed does not depend on it) and writes
them into the model, starting from the values in the file each time (no drift):

* ``lighting``: each light's direction turned by up to 25 degrees, its diffuse intensity scaled
  by 0.6..1.4; the headlight's ambient by 0.7..1.3.
* ``colors``: table, legs, floor and wall colours jittered (brightness x 0.8..1.15 and +-0.06 per
  channel, so the table never turns red, green or blue), the bin's kept light and grey-ish; the cubes only in brightness (x 0.85..1.1), so red, green and blue stay
  recognizably what the instructions name.
* ``camera``: each camera moved by up to 5 mm per axis and turned by up to 2 degrees.

The applied values are part of :meth:`SimEnv.scene_state` (key ``"visuals"``) so replay puts
the same look back. Without ``randomize`` nothing is drawn or written: the scene is as before.
"""

from __future__ import annotations

import numpy as np

from ._deps import _require_mujoco

mujoco = _require_mujoco()

__all__ = ["RANDOMIZE_KINDS", "SceneRandomizer", "parse_randomize"]

RANDOMIZE_KINDS = frozenset({"lighting", "colors", "camera"})
_DISTRACTOR_MATERIALS = ("table", "table_leg", "floor", "wall")
_FIELDS = ("light_dir", "light_diffuse", "mat_rgba", "cam_pos", "cam_quat")


def parse_randomize(value: str | frozenset[str] | set[str] | None) -> frozenset[str]:
    """``"lighting,colors"`` (or a set) -> frozenset, ValueError naming the allowed kinds."""
    if value is None:
        return frozenset()
    kinds = {v.strip().lower() for v in value.split(",")} if isinstance(value, str) else {str(v) for v in value}
    kinds.discard("")
    bad = sorted(kinds - RANDOMIZE_KINDS)
    if bad:
        raise ValueError(f"unknown randomization {', '.join(bad)}; choose from {', '.join(sorted(RANDOMIZE_KINDS))}")
    return frozenset(kinds)


def _random_rotation_quat(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-max_angle, max_angle)
    return np.array([np.cos(angle / 2), *(np.sin(angle / 2) * axis)])


class SceneRandomizer:
    """Remembers a model's nominal visual parameters and writes randomized or nominal ones."""

    def __init__(self, model: mujoco.MjModel, kinds: frozenset[str]) -> None:
        self.model = model
        self.kinds = parse_randomize(kinds)
        self._nominal = {f: getattr(model, f).copy() for f in _FIELDS}
        self._headlight = np.array(model.vis.headlight.ambient, dtype=np.float64)
        names = [model.material(i).name for i in range(model.nmat)]
        self._distractors = [i for i, n in enumerate(names) if n in _DISTRACTOR_MATERIALS]
        self._bin = [i for i, n in enumerate(names) if n == "bin"]
        self._cubes = [i for i, n in enumerate(names) if n == "cube" or n.endswith("_cube")]
        self.applied = False

    def apply(self, rng: np.random.Generator) -> None:
        """Draw and write new values for the enabled kinds (nothing at all when none is enabled)."""
        if not self.kinds:
            return
        m, nom = self.model, self._nominal
        for f in _FIELDS:
            getattr(m, f)[:] = nom[f]
        m.vis.headlight.ambient[:] = self._headlight
        if "lighting" in self.kinds:
            for i in range(m.nlight):
                q = _random_rotation_quat(rng, np.deg2rad(25.0))
                d = np.empty(3)
                mujoco.mju_rotVecQuat(d, nom["light_dir"][i], q)
                m.light_dir[i] = d / np.linalg.norm(d)
                m.light_diffuse[i] = np.clip(nom["light_diffuse"][i] * rng.uniform(0.6, 1.4), 0.0, 1.0)
            m.vis.headlight.ambient[:] = np.clip(self._headlight * rng.uniform(0.7, 1.3), 0.0, 1.0)
        if "colors" in self.kinds:
            for i in self._distractors:
                m.mat_rgba[i, :3] = np.clip(nom["mat_rgba"][i, :3] * rng.uniform(0.8, 1.15) + rng.uniform(-0.06, 0.06, 3),
                                            0.0, 1.0)
            for i in self._bin:
                # Light and grey-ish: one brightness plus a small tint, never cube-like saturation.
                m.mat_rgba[i, :3] = np.clip(rng.uniform(0.75, 0.97) + rng.uniform(-0.04, 0.04, 3), 0.0, 1.0)
            for i in self._cubes:
                m.mat_rgba[i, :3] = np.clip(nom["mat_rgba"][i, :3] * rng.uniform(0.85, 1.1), 0.0, 1.0)
        if "camera" in self.kinds:
            for i in range(m.ncam):
                m.cam_pos[i] = nom["cam_pos"][i] + rng.uniform(-0.005, 0.005, 3)
                q = np.empty(4)
                mujoco.mju_mulQuat(q, _random_rotation_quat(rng, np.deg2rad(2.0)), nom["cam_quat"][i])
                m.cam_quat[i] = q / np.linalg.norm(q)
        self.applied = True

    def state(self) -> dict[str, list[float]] | None:
        """The visual parameters now in the model (JSON-ready), or None while they are the file's."""
        if not self.applied:
            return None
        out = {f: getattr(self.model, f).ravel().tolist() for f in _FIELDS}
        out["headlight_ambient"] = list(map(float, self.model.vis.headlight.ambient))
        return out

    def restore(self, state: dict[str, list[float]] | None) -> None:
        """Write saved values back (None: the file's values)."""
        m = self.model
        if state is None:
            if self.applied:
                for f in _FIELDS:
                    getattr(m, f)[:] = self._nominal[f]
                m.vis.headlight.ambient[:] = self._headlight
                self.applied = False
            return
        for f in _FIELDS:
            target = getattr(m, f)
            values = np.asarray(state[f], dtype=np.float64)
            if values.size != target.size:
                raise ValueError(f"saved visual parameter {f} has {values.size} values, the model {target.size}")
            target[:] = values.reshape(target.shape)
        m.vis.headlight.ambient[:] = np.asarray(state.get("headlight_ambient", self._headlight), dtype=np.float64)
        self.applied = True


def copy_visuals(src: mujoco.MjModel, dst: mujoco.MjModel) -> None:
    """Copy the randomizable parameters (a renderer's private model copy follows the env's)."""
    for f in _FIELDS:
        getattr(dst, f)[:] = getattr(src, f)
    dst.vis.headlight.ambient[:] = src.vis.headlight.ambient
