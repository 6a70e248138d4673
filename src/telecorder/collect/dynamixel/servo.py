"""One emulated X-series servo: its control table, the rules for reading and writing it, and its motion.

The control table is the byte image a real servo exposes; writes are checked the way
the firmware checks them (access, EEPROM lock while torque is on, field boundaries,
value ranges), and the RAM feedback fields are refreshed from a small motor model
whenever the servo is stepped to a new time.

The motor model is a first-order lag toward the goal (time constant ``TAU_S`` at the
default Position P gain, shorter with a larger gain) capped by the model's no-load speed,
the Velocity Limit and, when set, the Profile Velocity. It is solved in closed form, so
stepping over any interval is exact for a constant goal. The physical shaft angle
``position`` (ticks, 2048 = 0 rad) is what a hand moves; what the registers show is that
angle mirrored when Drive Mode bit 0 (reverse) is set (``4096 - angle``, so 2048 stays
2048) plus the Homing Offset, as the e-manual defines Present Position.

Not modelled: Bus Watchdog, indirect addressing, hardware-error shutdown, gravity and
external load; those registers read and write like any other.
"""

from __future__ import annotations

import math
import random

from . import protocol as p
from .control_table import (
    ADDR,
    BAUD_RATES,
    EEPROM_END,
    MODE_CURRENT,
    MODE_CURRENT_POSITION,
    MODE_EXTENDED_POSITION,
    MODE_POSITION,
    MODE_PWM,
    MODE_VELOCITY,
    TABLE_SIZE,
    TICKS_PER_REV,
    VELOCITY_UNIT_RPM,
    Field,
    baud_index,
    default_table,
    fields,
    model_spec,
    rad_to_ticks,
    ticks_to_rad,
)

TAU_S = 0.04  # position response time constant at the model's default Position P gain
VELOCITY_TAU_S = 0.03  # velocity response in velocity/PWM/current modes
IN_POSITION_TICKS = 10  # Moving Status bit 0 window
_POSITION_MODES = (MODE_POSITION, MODE_EXTENDED_POSITION, MODE_CURRENT_POSITION)
_VALID_MODES = (MODE_CURRENT, MODE_VELOCITY, MODE_POSITION, MODE_EXTENDED_POSITION, MODE_CURRENT_POSITION, MODE_PWM)
_TICKS_PER_S_PER_UNIT = VELOCITY_UNIT_RPM / 60.0 * TICKS_PER_REV  # one Present Velocity unit in ticks/s


class ServoState:
    """Control-table bytes plus motor state of one servo. Not thread-safe: the bus serialises access."""

    def __init__(self, servo_id: int, model: str = "xl330-m288", *, baudrate: int = 1_000_000,
                 position_rad: float = 0.0, now: float = 0.0, physics_hz: float = 1000.0,
                 rng: random.Random | None = None) -> None:
        if not 0 <= servo_id <= p.MAX_ID:
            raise ValueError(f"servo id must be 0..{p.MAX_ID}, got {servo_id}")
        self.spec = model_spec(model)
        self.fields = fields(self.spec.name)
        # (start, end, mask, signed) by name: get/set run dozens of times per reply, so they skip Field.
        self._slots = {name: (f.address, f.end, (1 << (8 * f.size)) - 1, f.signed) for name, f in self.fields.items()}
        self._field_at: list[Field | None] = [None] * TABLE_SIZE
        for f in self.fields.values():
            for a in range(f.address, f.end):
                self._field_at[a] = f
        self._baud_index = baud_index(baudrate)
        # The ID it was built with: faults and hand motion follow the physical servo, not its current ID.
        self.serial = servo_id
        self.physics_dt = 1.0 / physics_hz if physics_hz > 0 else 0.0
        self.rng = rng or random.Random()
        self.table = bytearray(TABLE_SIZE)
        self.position = rad_to_ticks(position_rad)  # physical shaft angle, ticks
        self.velocity = 0.0  # ticks/s
        self.registered: tuple[int, bytes] | None = None
        self._stale = False  # moved without the feedback registers refreshed
        self._boot(now, factory=True)

    # -- registers -------------------------------------------------------------------------

    def get(self, name: str) -> int:
        start, end, _, signed = self._slots[name]
        return int.from_bytes(self.table[start:end], "little", signed=signed)

    def set(self, name: str, value: int) -> None:
        """Store a value without the checks a bus write gets (feedback fields, tests)."""
        start, end, mask, _ = self._slots[name]
        # Registers wrap like the firmware's fixed-width integers do.
        self.table[start:end] = (int(value) & mask).to_bytes(end - start, "little")

    def has(self, name: str) -> bool:
        return name in self.fields

    @property
    def id(self) -> int:
        return self.table[ADDR.ID]

    @property
    def baudrate(self) -> int:
        return BAUD_RATES[self.table[ADDR.BAUD_RATE]]

    @property
    def torque_enabled(self) -> bool:
        return self.table[ADDR.TORQUE_ENABLE] == 1

    @property
    def hardware_error(self) -> bool:
        return self.table[ADDR.HARDWARE_ERROR_STATUS] != 0

    @property
    def position_rad(self) -> float:
        """Physical joint angle in radians."""
        return ticks_to_rad(self.position)

    def set_position_rad(self, rad: float) -> None:
        self.position = rad_to_ticks(rad)
        self.velocity = 0.0
        self._refresh_feedback(self._last_step)

    def read(self, address: int, length: int) -> tuple[int, bytes]:
        """``(error number, data)`` for a Read of ``length`` bytes; reserved bytes read as 0."""
        if length <= 0:
            return p.ERR_DATA_LENGTH, b""
        if address < 0 or address + length > TABLE_SIZE:
            return p.ERR_ACCESS, b""
        return p.ERR_NONE, bytes(self.table[address : address + length])

    def check_write(self, address: int, data: bytes) -> int:
        """The error number a Write of ``data`` at ``address`` gets (0: it would be accepted)."""
        end = address + len(data)
        if not data:
            return p.ERR_DATA_LENGTH
        if address < 0 or end > TABLE_SIZE:
            return p.ERR_ACCESS
        touched: list[Field] = []
        a = address
        while a < end:
            f = self._field_at[a]
            if f is None or not f.writable:
                return p.ERR_ACCESS
            if f.address < address or f.end > end:
                return p.ERR_DATA_LENGTH  # a write must cover whole fields
            touched.append(f)
            a = f.end
        if self.torque_enabled and address < EEPROM_END:
            return p.ERR_ACCESS  # EEPROM is locked while torque is on
        new = bytearray(self.table)
        new[address:end] = data
        for f in touched:
            err = self._check_value(f, f.decode(new[f.address : f.end]), new)
            if err:
                return err
        return p.ERR_NONE

    def write(self, address: int, data: bytes, now: float) -> int:
        """Apply a Write (after stepping to ``now``); returns the error number, 0 when applied."""
        err = self.check_write(address, data)
        if err:
            if self._stale:
                self._refresh_feedback(self._last_step)
            return err
        self.step(now, refresh=False)  # the registers are refreshed once, after the write
        was_torque = self.torque_enabled
        end = address + len(data)
        self.table[address:end] = data
        goal_written = address < ADDR.GOAL_POSITION + 4 and end > ADDR.GOAL_PWM
        if goal_written and not was_torque and self.get("drive_mode") & 0x08:
            self.table[ADDR.TORQUE_ENABLE] = 1  # Drive Mode bit 3: torque on by goal update
        self._refresh_feedback(now)
        return p.ERR_NONE

    def reg_write(self, address: int, data: bytes) -> int:
        err = self.check_write(address, data)
        if not err:
            self.registered = (address, bytes(data))
            self.table[ADDR.REGISTERED_INSTRUCTION] = 1
        return err

    def action(self, now: float) -> int:
        if self.registered is None:
            return p.ERR_INSTRUCTION  # Action without a Reg Write
        address, data = self.registered
        self.registered = None
        self.table[ADDR.REGISTERED_INSTRUCTION] = 0
        return self.write(address, data, now)

    def clear_multi_turn(self) -> int:
        """The Clear instruction: bring the shaft angle back within one turn (only when stopped)."""
        if self.table[ADDR.MOVING]:
            return p.ERR_RESULT_FAIL
        self.position %= TICKS_PER_REV
        self._refresh_feedback(self._last_step)
        return p.ERR_NONE

    def reboot(self, now: float) -> None:
        """Restart: RAM back to defaults, EEPROM kept, goal = present position, torque off."""
        self._boot(now, factory=False)

    def factory_reset(self, option: int, now: float) -> int:
        """Factory Reset: 0xFF resets everything, 0x01 keeps the ID, 0x02 keeps ID and baud rate."""
        if option not in (0x01, 0x02, 0xFF):
            return p.ERR_DATA_RANGE
        keep_id, keep_baud = self.id, self.table[ADDR.BAUD_RATE]
        self._boot(now, factory=True)
        # A factory reset restores ID 1 and 57600 bps unless the option keeps them.
        self.table[ADDR.ID] = keep_id if option in (0x01, 0x02) else 1
        self.table[ADDR.BAUD_RATE] = keep_baud if option == 0x02 else 1
        return p.ERR_NONE

    def _boot(self, now: float, *, factory: bool) -> None:
        defaults = default_table(self.spec.name)
        if factory:
            self.table[:] = defaults
            # The bus configures new servos with the requested ID and line speed, as a
            # user would have before wiring them into a chain.
            self.table[ADDR.ID] = self.serial
            self.table[ADDR.BAUD_RATE] = self._baud_index
        else:
            self.table[EEPROM_END:] = defaults[EEPROM_END:]
        self.registered = None
        self._boot_time = now
        self._last_step = now
        self.velocity = 0.0
        self._refresh_feedback(now)
        # Goal Position starts at Present Position, so enabling torque after power-up holds still.
        self.set("goal_position", self.get("present_position"))
        self._refresh_feedback(now)

    def _check_value(self, f: Field, value: int, new: bytearray) -> int:
        if f.low is not None and f.high is not None and not f.low <= value <= f.high:
            return p.ERR_DATA_RANGE
        # Goals may not exceed their limit registers (taking any limit written in the same packet).
        limits = {"goal_pwm": "pwm_limit", "goal_current": "current_limit", "goal_velocity": "velocity_limit"}
        if f.name in limits:
            lf = self.fields[limits[f.name]]
            if abs(value) > lf.decode(new[lf.address : lf.end]):
                return p.ERR_DATA_LIMIT
        if f.name == "operating_mode" and (value not in _VALID_MODES or (
                value in (MODE_CURRENT, MODE_CURRENT_POSITION) and not self.spec.has_current_control)):
            return p.ERR_DATA_RANGE
        return p.ERR_NONE

    # -- motion ----------------------------------------------------------------------------

    def _to_register(self, angle_ticks: float) -> float:
        """Shaft angle -> the register frame (reverse mirror, then homing offset)."""
        mirrored = TICKS_PER_REV - angle_ticks if self.table[ADDR.DRIVE_MODE] & 0x01 else angle_ticks
        return mirrored + self.get("homing_offset")

    def _from_register(self, value: float) -> float:
        v = value - self.get("homing_offset")
        return TICKS_PER_REV - v if self.table[ADDR.DRIVE_MODE] & 0x01 else v

    def _direction(self) -> int:
        return -1 if self.table[ADDR.DRIVE_MODE] & 0x01 else 1

    def _max_speed(self) -> float:
        """Speed cap in ticks/s: no-load speed, Velocity Limit, Profile Velocity (0 = unlimited)."""
        vmax = self.spec.max_ticks_per_s
        limit = self.get("velocity_limit")
        if limit > 0:
            vmax = min(vmax, limit * _TICKS_PER_S_PER_UNIT)
        profile = self.get("profile_velocity")
        if profile > 0 and self.get("operating_mode") in _POSITION_MODES and not self.get("drive_mode") & 0x04:
            vmax = min(vmax, profile * _TICKS_PER_S_PER_UNIT)
        return vmax

    def _target_ticks(self) -> float:
        """The commanded shaft angle in position modes, with Min/Max Position Limit applied in mode 3."""
        goal = self.get("goal_position")
        if self.get("operating_mode") == MODE_POSITION:
            goal = min(max(goal, self.get("min_position_limit")), self.get("max_position_limit"))
        return self._from_register(goal)

    def step(self, now: float, hand_ticks: float | None = None, hand_ticks_per_s: float = 0.0, *,
             refresh: bool = True) -> None:
        """Advance the motor to ``now`` (monotonic seconds) and refresh the feedback registers.

        ``hand_ticks`` is where a hand holds the shaft; it applies only while torque is off.
        Time advances in whole control periods (``physics_hz``), as a servo's feedback does.
        ``refresh=False`` leaves the registers to a refresh that follows at once (a write's).
        """
        if self.physics_dt > 0:
            now = self._boot_time + math.floor((now - self._boot_time) / self.physics_dt) * self.physics_dt
        dt = now - self._last_step
        if dt <= 0:
            if refresh and self._stale:
                self._refresh_feedback(self._last_step)
            return
        if not self.torque_enabled:
            if hand_ticks is not None:
                self.position = hand_ticks
                self.velocity = hand_ticks_per_s
            else:
                self.velocity = 0.0
        else:
            mode = self.get("operating_mode")
            if mode in _POSITION_MODES:
                self._step_position(dt)
            else:
                self._step_velocity(dt, self._velocity_command(mode))
        self._last_step = now
        if refresh:
            self._refresh_feedback(now)
        else:
            self._stale = True

    def _velocity_command(self, mode: int) -> float:
        """The steady-state shaft speed (ticks/s) the non-position modes drive toward."""
        vmax = self.spec.max_ticks_per_s
        d = self._direction()
        if mode == MODE_VELOCITY:
            return d * self.get("goal_velocity") * _TICKS_PER_S_PER_UNIT
        if mode == MODE_PWM:
            return d * vmax * self.get("goal_pwm") / 885.0
        limit = max(self.get("current_limit"), 1) if self.has("current_limit") else 1
        return d * vmax * self.get("goal_current") / limit  # current mode, unloaded shaft

    def _tau(self) -> float:
        gain = self.get("position_p_gain")
        default = self.fields["position_p_gain"].default
        if gain <= 0:
            return math.inf
        return min(max(TAU_S * default / gain, 0.005), 2.0)

    def _step_position(self, dt: float) -> None:
        target = self._target_ticks()
        tau = self._tau()
        vmax = self._max_speed()
        start = self.position
        if math.isinf(tau) or vmax <= 0:
            self.velocity = 0.0
            return
        err = target - start
        # Closed form of dx/dt = clamp((target - x) / tau, ±vmax): constant speed until the
        # error is small enough for the lag to be slower than the cap, then exponential.
        knee = vmax * tau
        remaining = dt
        if abs(err) > knee:
            t_cap = (abs(err) - knee) / vmax
            if remaining <= t_cap:
                self.position = start + math.copysign(vmax * remaining, err)
                self.velocity = math.copysign(vmax, err)
                return
            err = math.copysign(knee, err)
            remaining -= t_cap
        err *= math.exp(-remaining / tau)
        self.position = target - err
        self.velocity = err / tau

    def _step_velocity(self, dt: float, command: float) -> None:
        vmax = self.spec.max_ticks_per_s
        if self.get("velocity_limit") > 0:
            vmax = min(vmax, self.get("velocity_limit") * _TICKS_PER_S_PER_UNIT)
        command = min(max(command, -vmax), vmax)
        v0 = self.velocity
        decay = math.exp(-dt / VELOCITY_TAU_S)
        self.position += command * dt + (v0 - command) * VELOCITY_TAU_S * (1.0 - decay)
        self.velocity = command + (v0 - command) * decay

    def _effort(self, target: float | None = None) -> float:
        """Motor effort as a fraction of stall (-1..1): what the controller pushes against.

        ``target``: the commanded shaft angle where the caller has it already.
        """
        if not self.torque_enabled:
            return 0.0
        mode = self.get("operating_mode")
        vmax = max(self.spec.max_ticks_per_s, 1.0)
        if mode in _POSITION_MODES:
            # A stiff position loop: ~300 ticks of error saturates; plus friction while moving.
            err = (self._target_ticks() if target is None else target) - self.position
            effort = err / 300.0 + 0.08 * self.velocity / vmax
        else:
            effort = 0.1 * self._velocity_command(mode) / vmax + 0.05 * math.copysign(1.0, self.velocity)
        return max(-1.0, min(1.0, effort))

    def _refresh_feedback(self, now: float) -> None:
        self._stale = False
        d = self._direction()
        present = self._to_register(self.position)
        self.set("present_position", round(present))
        vel_units = round(d * self.velocity / _TICKS_PER_S_PER_UNIT)
        self.set("present_velocity", vel_units)
        mode = self.get("operating_mode")
        target = self._target_ticks() if self.torque_enabled and mode in _POSITION_MODES else None
        effort = d * self._effort(target)
        noise = self.rng.gauss(0.0, 0.004) if self.torque_enabled else 0.0
        if self.spec.current_unit_ma is not None:
            ma = (effort + noise) * self.spec.stall_current_a * 1000.0
            current = round(ma / self.spec.current_unit_ma)
            limit = self.get("current_limit")
            self.set("present_current", max(-limit, min(limit, current)))
        else:
            self.set("present_current", max(-1000, min(1000, round((effort + noise) * 1000))))
        pwm_limit = self.get("pwm_limit")
        pwm = round(885 * (0.8 * d * self.velocity / max(self.spec.max_ticks_per_s, 1.0) + 0.2 * effort))
        self.set("present_pwm", max(-pwm_limit, min(pwm_limit, pwm)) if self.torque_enabled else 0)
        moving = abs(vel_units) > self.get("moving_threshold")
        self.table[ADDR.MOVING] = 1 if moving else 0
        status = 0
        if target is not None:
            target_reg = self._to_register(target)
            if abs(target_reg - present) <= IN_POSITION_TICKS:
                status |= 0x01
            elif moving:
                status |= 0x02
            self.set("position_trajectory", round(target_reg))
            self.set("velocity_trajectory", vel_units)
        elif self.torque_enabled:
            self.set("velocity_trajectory", round(d * self._velocity_command(mode) / _TICKS_PER_S_PER_UNIT))
            self.set("position_trajectory", round(present))
        else:
            self.set("velocity_trajectory", 0)
            self.set("position_trajectory", round(present))
        self.table[ADDR.MOVING_STATUS] = status
        self.set("realtime_tick", int((now - self._boot_time) * 1000) % 32768)
