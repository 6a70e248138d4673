"""``telecorder calibrate``: guide a person through calibrating an arm, or read a pose file.

Interactive steps (torque off throughout): hold the arm in the known pose; move every
joint through its range; open, then close the gripper. ``--pose-file`` replaces the
person: the arm is read where it stands and the file says which pose that is.
"""

from __future__ import annotations

import math
import select
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console

from .bus import DynamixelBus
from .calibration import (
    ArmCalibration,
    CalibrationError,
    PoseFile,
    calibrate,
    default_path,
)

DEFAULT_NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")


def calibrate_arm(
    bus: DynamixelBus,
    arm: str,
    *,
    out: Path | None = None,
    pose_file: Path | None = None,
    names: Sequence[str] | None = None,
    signs: Sequence[int] | None = None,
    known_pose: Sequence[float] | None = None,
    gripper: bool = True,
    console: Console | None = None,
    wait_enter: Callable[[str], None] | None = None,
    sweep_s: float = 20.0,
) -> tuple[ArmCalibration, Path]:
    console = console or Console()
    out = out or default_path(arm)
    bus.open()
    try:
        bus.set_torque(False)
        n_joints = len(bus.ids) - (1 if gripper else 0)
        if pose_file is not None:
            pf = PoseFile.load(pose_file)
            raw = bus.read_state(complete=True).position
            if len(pf.known_pose) != n_joints:
                raise CalibrationError(
                    f"{pose_file}: {len(pf.known_pose)} known-pose angles for {n_joints} arm joints "
                    f"(servo ids {bus.ids[:n_joints]})"
                )
            cal = calibrate(
                arm, bus.ids, pf.names[:n_joints], raw, pf.known_pose,
                signs=pf.signs, gripper_open_raw=pf.gripper_open if gripper else None,
                gripper_closed_raw=pf.gripper_closed if gripper else None,
                range_raw=(pf.range_min, pf.range_max) if pf.range_min and pf.range_max else None,
            )
        else:
            ask = wait_enter or _wait_enter
            names = list(names or DEFAULT_NAMES[:n_joints]) + [f"joint{i + 1}" for i in range(len(DEFAULT_NAMES), n_joints)]
            pose = list(known_pose) if known_pose is not None else [0.0] * n_joints
            console.print(f"[bold]Calibrating the {arm} arm[/] on {bus.port_name} (servos {bus.ids}); torque is off.")
            ask("1/4  Hold the arm in the known pose "
                f"({', '.join(f'{n}={math.degrees(a):.0f} deg' for n, a in zip(names, pose, strict=False))}) and press Enter")
            # Measurements that define the calibration: every servo's own reading, none kept from before.
            at_pose = bus.read_state(complete=True).position
            console.print(f"2/4  Move every joint through its full range, then press Enter (up to {sweep_s:.0f} s)")
            lo, hi = _sweep(bus, sweep_s)
            grip_open = grip_closed = None
            if gripper:
                ask("3/4  Open the gripper fully and press Enter")
                grip_open = float(bus.read_state(complete=True).position[-1])
                ask("4/4  Close the gripper fully and press Enter")
                grip_closed = float(bus.read_state(complete=True).position[-1])
            cal = calibrate(arm, bus.ids, names, at_pose, pose, signs=signs, gripper_open_raw=grip_open,
                            gripper_closed_raw=grip_closed, range_raw=(lo[:n_joints], hi[:n_joints]))
    finally:
        bus.close()
    path = cal.save(out)
    console.print(f"calibration saved to {path}")
    for j in cal.joints:
        console.print(f"  {j.name:14s} id {j.id:3d}  sign {j.sign:+d}  offset {math.degrees(j.offset):7.1f} deg  "
                      f"range {math.degrees(j.range_min):7.1f} .. {math.degrees(j.range_max):7.1f} deg")
    if cal.gripper:
        console.print(f"  gripper        id {cal.gripper.id:3d}  open {cal.gripper.open:.3f} rad  "
                      f"closed {cal.gripper.closed:.3f} rad")
    return cal, path


def _wait_enter(prompt: str) -> None:
    input(prompt + " ")


def _sweep(bus: DynamixelBus, max_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Track min/max of every servo until Enter (or the time limit) while a person moves the arm."""
    first = bus.read_state().position
    lo, hi = first.copy(), first.copy()
    end = time.monotonic() + max_s
    while time.monotonic() < end:
        pos = bus.read_state().position
        lo, hi = np.minimum(lo, pos), np.maximum(hi, pos)
        if sys.stdin.isatty() and select.select([sys.stdin], [], [], 0.02)[0]:
            sys.stdin.readline()
            break
        time.sleep(0.02)
    return lo, hi
