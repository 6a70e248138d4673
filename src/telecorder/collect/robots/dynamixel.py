"""A Dynamixel arm as the follower robot: position-controlled, or limp for kinesthetic teaching."""

from __future__ import annotations

import numpy as np

from ...datasets.features import FeatureSpec
from ..dynamixel.bus import DynamixelBus
from ..dynamixel.calibration import ArmCalibration
from ..dynamixel.control_table import MODE_EXTENDED_POSITION
from ..interfaces import Robot

STATE_UNIT = "measured joint positions in radians (calibrated); gripper normalized 0 = closed, 1 = open"


class DynamixelRobot(Robot):
    """Follower arm on a serial port.

    With ``torque=True`` it tracks commanded joint targets (clamped to the calibrated
    ranges). With ``torque=False`` a person moves it (kinesthetic teaching); when the
    session ends its goal is set to where it stands before torque returns, so it does
    not jump.
    """

    def __init__(
        self,
        bus: DynamixelBus,
        calibration: ArmCalibration,
        *,
        torque: bool = True,
        robot_type: str = "dynamixel_arm",
    ) -> None:
        if list(calibration.ids) != list(bus.ids):
            raise ValueError(f"calibration is for servo ids {calibration.ids}, the bus has {bus.ids}")
        self.bus, self.calibration, self.torque = bus, calibration, torque
        self.robot_type = robot_type
        self._lower, self._upper = calibration.lower, calibration.upper
        self._need_complete = False

    def connect(self) -> None:
        self.bus.open()
        self.bus.minimize_return_delay()
        # Extended position mode: calibrated joints may sit beyond one turn of raw ticks.
        self.bus.set_operating_mode(MODE_EXTENDED_POSITION)
        if self.torque:
            self._hold_where_it_stands()

    def _hold_where_it_stands(self) -> None:
        raw = self.bus.read_state().position
        self.bus.write_goal_positions(raw)
        self.bus.set_torque(True)

    def features(self) -> list[FeatureSpec]:
        names = tuple(self.calibration.names)
        action_unit = (
            "the next measured joint positions (kinesthetic teaching: the arm is moved by hand)"
            if not self.torque
            else "absolute joint position targets in radians; gripper 0 = closed, 1 = open; "
            "the command issued after observing this step"
        )
        return [
            FeatureSpec("observation.state", "float32", (len(names),), names=names, unit=STATE_UNIT),
            FeatureSpec("observation.velocity", "float32", (len(names),), names=names,
                        unit="measured joint velocities in rad/s (gripper in raw servo rad/s)"),
            FeatureSpec("action", "float32", (len(names),), names=names, unit=action_unit),
        ]

    def reset(self, seed: int | None = None) -> None:
        # An episode starts: its first observation is what the start check compares, so it must
        # hold what every servo says now, not a value a servo that just went silent kept.
        self._need_complete = True

    def observe(self) -> dict[str, np.ndarray]:
        state = self.bus.read_state(velocity=True, complete=self._need_complete)
        self._need_complete = False
        signs = np.array([j.sign for j in self.calibration.joints] + ([1] if self.calibration.gripper else []))
        return {
            "observation.state": self.calibration.to_calibrated(state.position).astype(np.float32),
            "observation.velocity": (signs * state.velocity).astype(np.float32),
        }

    def act(self, action: np.ndarray) -> np.ndarray:
        target = np.clip(np.asarray(action, dtype=np.float64), self._lower, self._upper)
        if self.torque:
            self.bus.write_goal_positions(self.calibration.to_raw(target))
        return target.astype(np.float32)

    def counters(self) -> dict[str, int]:
        return self.bus.errors.to_dict()

    def disconnect(self) -> None:
        try:
            if self.bus.is_open:
                self._hold_where_it_stands()
        finally:
            self.bus.close()


class EmulatedFollower(DynamixelRobot):
    """A follower on a bus emulator this process started: the emulator stops once the arm lets go.

    The arm's own ``disconnect`` still talks to the bus (it holds the arm where it stands), so
    the emulator must outlive it; a teleop or cleanup that stopped it first would leave that
    last transaction on a hung-up line.
    """

    def __init__(self, bus: DynamixelBus, calibration: ArmCalibration, emulator: object, *,
                 torque: bool = True) -> None:
        super().__init__(bus, calibration, torque=torque, robot_type="emulated_arm")
        self.emulator = emulator

    def disconnect(self) -> None:
        try:
            super().disconnect()
        finally:
            self.emulator.stop()
