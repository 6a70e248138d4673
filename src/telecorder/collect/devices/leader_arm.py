"""Leader-arm teleoperation (GELLO, Koch, ALOHA style) and kinesthetic teaching.

The leader's servos are limp; a person moves it, and each tick its calibrated joint
angles become the follower's targets. Safety, in the order applied:

1. at the start of an episode the leader must be near the follower (``start_tolerance``
   rad per joint); otherwise the session stops with a message naming the joint, because
   snapping the follower to a distant pose is how arms hit tables. Between episodes the
   follower keeps following the leader (the session drives it through the reset period, as
   GELLO and LeRobot do), so the check is about where the operator put the leader, not about
   how quickly the host got from one episode to the next; it compares readings every
   leader servo gave at that moment, so a servo that has just died is reported as such;
2. within that tolerance the follower ramps from where it stands to the leader over
   ``ramp_s`` seconds;
3. targets are clamped to the follower's joint limits (done by the follower robot) and
   each tick's change is limited to ``max_step`` rad;
4. a joint that keeps moving the opposite way on the follower than on the leader gets
   one warning (a reversed drive mode on a servo, or swapped IDs).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from ...errors import DeviceError
from ..dynamixel.bus import DynamixelBus
from ..dynamixel.calibration import ArmCalibration
from ..interfaces import Teleop, TeleopOutput
from ..start_ramp import StartRamp


class LeaderArmTeleop(Teleop):
    device_type = "leader_arm"
    follows_between_episodes = True

    def __init__(
        self,
        bus: DynamixelBus,
        calibration: ArmCalibration,
        *,
        fps: float,
        start_tolerance: float = 0.6,
        ramp_s: float = 1.0,
        max_step: float = 0.25,
        on_disconnect: Callable[[], None] | None = None,
        on_episode_start: Callable[[], None] | None = None,
        arm: str | None = None,
    ) -> None:
        self.bus, self.calibration, self.fps = bus, calibration, fps
        self._on_episode_start = on_episode_start
        # One of two arms ("left"/"right"): its messages name the arm and its joints as the dataset does.
        self.arm = arm
        self.joint_names = [f"{arm}_{n}" for n in calibration.names] if arm else list(calibration.names)
        # The start check, ramp and step limit, shared with 'telecorder replay'.
        self.ramp = StartRamp(self.joint_names, fps=fps, start_tolerance=start_tolerance, ramp_s=ramp_s,
                              max_step=max_step, source=f"{arm + ' ' if arm else ''}leader arm ({bus.port_name})",
                              remedy=f"move the {arm + ' ' if arm else ''}leader to the follower's pose before "
                                     "starting")
        self._on_disconnect = on_disconnect
        self._prev_leader: np.ndarray | None = None
        self._prev_follower: np.ndarray | None = None
        self._agree = np.zeros(len(calibration.ids))
        self._motion = np.zeros(len(calibration.ids))
        self._warned: set[int] = set()

    def connect(self) -> None:
        self.bus.open()
        self.bus.minimize_return_delay()  # also leaves torque off: the leader is moved by hand

    def start_episode(self) -> None:
        self.ramp.reset()
        if self._on_episode_start is not None:
            self._on_episode_start()

    def rebase(self) -> None:
        """Someone else (a policy) drove the follower: ramp from where it stands to the leader again.

        The start check is skipped here: the operator moved the leader away on purpose to
        take over, and the ramp and the per-tick step limit bring the follower over smoothly.
        """
        self.ramp.reset(check=False)

    def leader_pose(self, *, complete: bool = False) -> np.ndarray:
        """The leader's calibrated joints; ``complete``: as every servo reports it this cycle."""
        try:
            state = self.bus.read_state(complete=complete)
        except DeviceError as e:
            if self.arm is None:
                raise
            raise DeviceError(f"{self.arm} leader arm: {e}") from None
        return self.calibration.to_calibrated(state.position)

    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        # The start check compares what every leader servo says now: a servo that just died would
        # otherwise be checked where it last stood, and the operator told to move the leader
        # instead of being told the servo stopped answering.
        leader = self.leader_pose(complete=not self.ramp.started)
        follower = np.asarray(observation["observation.state"], dtype=np.float64)
        command = self.ramp.command(leader, follower)
        self._check_directions(leader, follower)
        return TeleopOutput(command)

    def _check_directions(self, leader: np.ndarray, follower: np.ndarray) -> None:
        if self._prev_leader is not None and self._prev_follower is not None:
            dl, df = leader - self._prev_leader, follower - self._prev_follower
            # Motion both arms share, signed by whether they went the same way (radians).
            shared = np.minimum(np.abs(dl), np.abs(df))
            self._agree += np.sign(dl * df) * shared
            self._motion += shared
            for k in np.nonzero((self._motion > 0.2) & (self._agree < -0.5 * self._motion))[0]:
                if int(k) not in self._warned:
                    self._warned.add(int(k))
                    warnings.warn(
                        f"joint {self.joint_names[k]!r} moves the opposite way on the follower; "
                        "check its sign in the calibrations (and that no servo IDs are swapped)",
                        stacklevel=2,
                    )
        self._prev_leader, self._prev_follower = leader, follower

    def counters(self) -> dict[str, int]:
        return self.bus.errors.to_dict()

    def disconnect(self) -> None:
        try:
            self.bus.close()
        finally:
            if self._on_disconnect is not None:
                self._on_disconnect()


class KinestheticTeleop(Teleop):
    """The follower itself is the input device: torque off, moved by hand; action = next state."""

    device_type = "kinesthetic"
    action_from_next_state = True

    def __init__(
        self,
        on_disconnect: Callable[[], None] | None = None,
        on_episode_start: Callable[[], None] | None = None,
    ) -> None:
        self._on_disconnect = on_disconnect
        self._on_episode_start = on_episode_start

    def connect(self) -> None:
        pass

    def start_episode(self) -> None:
        if self._on_episode_start is not None:
            self._on_episode_start()

    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        # The current state for now; when the episode is committed the writer shifts the column
        # so that action[t] = state[t+1].
        return TeleopOutput(np.asarray(observation["observation.state"], dtype=np.float64))

    def disconnect(self) -> None:
        if self._on_disconnect is not None:
            self._on_disconnect()
