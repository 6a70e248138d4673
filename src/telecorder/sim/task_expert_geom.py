"""Scene geometry the task experts plan with: heights to clear, the bin's floor, jaw clearances.

Read from the compiled model and the current ``env.data`` (world boxes of the bin's geoms,
object poses), so the experts need nothing from the scene beyond the multi-object SimEnv API.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ._deps import _require_mujoco

if TYPE_CHECKING:
    from .env import SimEnv
    from .tasks import Task

mujoco = _require_mujoco()

__all__ = ["SceneGeometry", "body_yaw", "face_yaw", "wrap_quarter"]

# Centre of an open jaw pad from the grasp axis (slide 32 mm + pad offset 5 mm) and its half width.
JAW_REACH = 0.037
JAW_HALF = 0.009
# Objects above this centre height are in the air (held), not obstacles on the table.
IN_AIR_Z = 0.09
# Edge zones when the task module does not say: the cube centre beyond this |y| (m).
DEFAULT_EDGE_Y = 0.17
# Free space kept between a pushed cube's path and anything else (m).
LANE_MARGIN = 0.006
# x range of the lanes a cube is pushed along to an edge (reachable top-down at |y| ~ 0.19).
PUSH_LANE_X = (0.105, 0.23)
# The jaws go down no nearer the base than this (m): the folded arm cannot point them down there.
PUSHER_MIN_R = 0.11
# ... and no farther than this (m): the reach of the arm pointing them down at the table.
PUSHER_MAX_R = 0.27
# A push along y keeps the jaws at least this far from the base (m).
PUSH_MIN_R = 0.14


def wrap_quarter(angle: float) -> float:
    """``angle`` modulo 90 degrees, in [-45, 45) degrees (a cube looks the same every quarter turn)."""
    q = math.pi / 2
    return (angle + q / 2) % q - q / 2


def face_yaw(quat: np.ndarray) -> float:
    """Yaw (rad) of a wxyz quaternion about world z (for a cube resting on a face)."""
    w, x, y, z = (float(v) for v in quat)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def body_yaw(xmat: np.ndarray) -> float:
    """Yaw of a body frame given its 3x3 rotation matrix."""
    m = np.asarray(xmat).reshape(3, 3)
    return math.atan2(m[1, 0], m[0, 0])


class SceneGeometry:
    """What the experts need to know about the scene's static target and the free cubes."""

    def __init__(self, env: SimEnv) -> None:
        self.env = env
        m = env.model
        target = getattr(env, "target", None)
        self.target = target
        self._bin_body = -1
        self._bin_geoms: list[int] = []
        if target:
            bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, target)
            if bid >= 0:
                self._bin_body = bid
                # The bin's geoms: those of its body and its descendants.
                inside = {bid}
                for b in range(m.nbody):
                    if int(m.body_parentid[b]) in inside and b != 0:
                        inside.add(b)
                self._bin_geoms = [g for g in range(m.ngeom) if int(m.geom_bodyid[g]) in inside]
            else:
                gid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, target)
                if gid >= 0:
                    self._bin_geoms = [gid]

    # ------------------------------------------------------------------ boxes

    def _geom_boxes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """World axis-aligned (lo, hi) boxes of the bin's collision geoms."""
        m, d = self.env.model, self.env.data
        boxes = []
        for g in self._bin_geoms:
            size = np.array(m.geom_size[g], dtype=np.float64)
            gtype = int(m.geom_type[g])
            if gtype == int(mujoco.mjtGeom.mjGEOM_BOX):
                half = size
            elif gtype == int(mujoco.mjtGeom.mjGEOM_CYLINDER):
                half = np.array([size[0], size[0], size[1]])
            else:
                r = float(m.geom_rbound[g])
                half = np.array([r, r, r])
            rot = np.asarray(d.geom_xmat[g]).reshape(3, 3)
            ext = np.abs(rot) @ half
            c = np.array(d.geom_xpos[g], dtype=np.float64)
            boxes.append((c - ext, c + ext))
        return boxes

    def bin_place(self) -> tuple[np.ndarray, float, float]:
        """(centre xy, floor top z, yaw) of the bin: where a cube is released into it."""
        center = np.asarray(self.env.target_position(), dtype=np.float64)[:2].copy()
        floor = 0.0
        for lo, hi in self._geom_boxes():
            if lo[0] <= center[0] <= hi[0] and lo[1] <= center[1] <= hi[1]:
                floor = max(floor, float(hi[2]))
        yaw = body_yaw(self.env.data.xmat[self._bin_body]) if self._bin_body >= 0 else 0.0
        return center, floor, yaw

    def _object_tops(self, exclude: str | None = None) -> list[float]:
        half = 0.5 * float(self.env.cube_size)
        tops = []
        for name in self.env.objects:
            if name == exclude:
                continue
            pos, _ = self.env.object_pose(name)
            if pos[2] < IN_AIR_Z:
                tops.append(float(pos[2]) + half * math.sqrt(3.0))
        return tops

    def clear_height(self, exclude: str | None = None) -> float:
        """Highest point of the resting cubes and the bin (the arm passes above it)."""
        tops = self._object_tops(exclude)
        tops += [float(hi[2]) for _, hi in self._geom_boxes()]
        return max([0.0, *tops])

    def jaw_clearance(self, center: np.ndarray, yaw: float, exclude: str) -> float:
        """Least free distance (m) around the two open jaw pads of a grasp at ``center``, ``yaw``."""
        half = 0.5 * float(self.env.cube_size)
        axis = np.array([math.cos(yaw), math.sin(yaw)])
        pads = [center[:2] + JAW_REACH * axis, center[:2] - JAW_REACH * axis]
        best = math.inf
        for name in self.env.objects:
            if name == exclude:
                continue
            pos, _ = self.env.object_pose(name)
            for pad in pads:
                gap = float(np.linalg.norm(pad - pos[:2])) - half * math.sqrt(2.0) - JAW_HALF
                best = min(best, gap)
        for lo, hi in self._geom_boxes():
            for pad in pads:
                dx = max(lo[0] - pad[0], 0.0, pad[0] - hi[0])
                dy = max(lo[1] - pad[1], 0.0, pad[1] - hi[1])
                best = min(best, math.hypot(dx, dy) - JAW_HALF)
        return best

    def push_goal_y(self, task: Task) -> float:
        """The y the pushed cube's centre must pass (signed by the task's side)."""
        from .objects import PUSH_EDGE_Y

        return PUSH_EDGE_Y if task.side == "left" else -PUSH_EDGE_Y

    def _obstacles(self, exclude: str) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
        """Other resting cubes (centres) and the bin (xy box) as seen from above."""
        cubes = []
        for name in self.env.objects:
            if name == exclude:
                continue
            pos, _ = self.env.object_pose(name)
            if pos[2] < IN_AIR_Z:
                cubes.append(np.asarray(pos[:2], dtype=np.float64))
        boxes = [(lo[:2], hi[:2]) for lo, hi in self._geom_boxes()]
        if boxes:
            boxes = [(np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0))]
        return cubes, boxes

    def _band_clear(self, axis: int, lane: float, start: float, end: float, exclude: str, back: float,
                    cubes_too: bool = True) -> bool:
        """Whether a cube pushed along ``axis`` from ``start`` to ``end`` (its centre) on the line
        ``other coordinate = lane``, with the pusher ``back`` behind it, hits no other cube
        (unless ``cubes_too`` is False) or the bin; the pusher's start spot must be free of both."""
        # A pushed cube turns until a face lies against the jaws: its half width, plus a little.
        r = 0.5 * float(self.env.cube_size) + 0.003
        corner = 0.5 * float(self.env.cube_size) * math.sqrt(2.0)
        sign = 1.0 if end >= start else -1.0
        lo_a = min(start - sign * back, end + sign * r)
        hi_a = max(start - sign * back, end + sign * r)
        other = 1 - axis
        spot = np.zeros(2)
        spot[axis], spot[other] = start - sign * back, lane
        cubes, boxes = self._obstacles(exclude)
        for c in cubes:
            if float(np.linalg.norm(c - spot)) < corner + JAW_HALF + 0.006:
                return False  # the jaws would come down on it
            if cubes_too and abs(c[other] - lane) < 2 * r + LANE_MARGIN and lo_a - r <= c[axis] <= hi_a + r:
                return False
        for lo, hi in boxes:
            if lo[other] - r - LANE_MARGIN < lane < hi[other] + r + LANE_MARGIN and lo[axis] - r < hi_a and hi[axis] + r > lo_a:
                return False
        return True

    @staticmethod
    def _lane_reachable(x: float, y0: float, y1: float, back: float = 0.046) -> bool:
        """Whether the jaws can track a push of the cube along y at ``x`` from ``y0`` to ``y1``:
        near the base the folded arm cannot keep them pointing down (they swing outward), and
        far out it cannot get them down to the table."""
        sign = 1.0 if y1 >= y0 else -1.0
        start, end = y0 - sign * back, y1 - sign * 0.03
        lo, hi = min(start, end), max(start, end)
        nearest = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
        farthest = max(abs(lo), abs(hi))
        return math.hypot(x, nearest) >= PUSH_MIN_R and math.hypot(x, farthest) <= PUSHER_MAX_R + 0.01

    def push_lane(self, task: Task, pos: np.ndarray, back: float) -> float | None:
        """The x at which to push the cube along y to its edge.

        Its own x when that way is clear; else the nearest lane it can be shifted to along x
        first (the bin or other cubes are in the way). Another cube in the way is only a soft
        obstacle (it gets pushed along): without a lane clear of everything, the nearest one clear
        of the bin is taken. The jaws' start spots must be within reach. None: no lane.
        """
        goal = self.push_goal_y(task) + (0.02 if task.side == "left" else -0.02)
        x0, y0 = float(pos[0]), float(pos[1])
        lanes = sorted(np.arange(PUSH_LANE_X[0], PUSH_LANE_X[1] + 1e-9, 0.005), key=lambda x: abs(x - x0))
        for cubes_too in (True, False):
            if self._band_clear(1, x0, y0, goal, task.obj, back, cubes_too) and self._lane_reachable(x0, y0, goal, back):
                return x0
            for x in lanes:
                pusher = math.hypot(x0 - back if x > x0 else x0 + back, y0)
                if (abs(x - x0) < 0.01 or not PUSHER_MIN_R <= pusher <= PUSHER_MAX_R
                        or not self._lane_reachable(float(x), y0, goal, back)):
                    continue
                if (self._band_clear(1, float(x), y0, goal, task.obj, back, cubes_too)
                        and self._band_clear(0, y0, x0, float(x), task.obj, back, cubes_too)):
                    return float(x)
        return None

    def relocation_spot(self, task: Task, pos: np.ndarray, back: float) -> np.ndarray | None:
        """Nearest free table spot from which the cube has a clear straight push to its edge
        (where to set it down when no push gets it past the bin), or None. When the bin blocks
        every reachable lane, that is a spot beyond the bin, near the edge."""
        goal = self.push_goal_y(task) + (0.02 if task.side == "left" else -0.02)
        cubes, boxes = self._obstacles(task.obj)
        for cubes_too in (True, False):  # a cube in the way is pushed along, if it must be
            best, best_d = None, math.inf
            for x in np.arange(PUSH_LANE_X[0], PUSH_LANE_X[1] + 1e-9, 0.01):
                for y in np.arange(-0.16, 0.161, 0.01):
                    d = math.hypot(x - pos[0], y - pos[1])
                    if d >= best_d or math.hypot(x, y) < 0.12:
                        continue
                    if any(math.hypot(x - c[0], y - c[1]) < 0.07 for c in cubes):
                        continue
                    if any(lo[0] - 0.03 < x < hi[0] + 0.03 and lo[1] - 0.03 < y < hi[1] + 0.03 for lo, hi in boxes):
                        continue
                    if (self._lane_reachable(float(x), float(y), goal, back)
                            and self._band_clear(1, float(x), float(y), goal, task.obj, back, cubes_too)):
                        best, best_d = np.array([x, y]), d
            if best is not None:
                return best
        return None
