"""The X-series control table: addresses, sizes, access, value ranges and per-model defaults.

Values follow the ROBOTIS e-manual pages of each model. Addresses below 64 are EEPROM
(writable only while torque is off), the rest RAM. Positions are in encoder ticks,
4096 per revolution, with 2048 the middle of the range (0 rad in telecorder's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TICKS_PER_REV = 4096
CENTER_TICKS = 2048
VELOCITY_UNIT_RPM = 0.229  # Present/Goal Velocity, Velocity Limit, Profile Velocity
EEPROM_END = 64
TABLE_SIZE = 148  # up to Backup Ready(147); indirect addressing is not modelled

BAUD_RATES = {0: 9_600, 1: 57_600, 2: 115_200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000, 6: 4_000_000, 7: 4_500_000}

# Operating modes (Operating Mode(11)).
MODE_CURRENT = 0
MODE_VELOCITY = 1
MODE_POSITION = 3
MODE_EXTENDED_POSITION = 4
MODE_CURRENT_POSITION = 5
MODE_PWM = 16


class ADDR:
    """Addresses of the fields drivers use most."""

    MODEL_NUMBER = 0
    FIRMWARE_VERSION = 6
    ID = 7
    BAUD_RATE = 8
    RETURN_DELAY_TIME = 9
    DRIVE_MODE = 10
    OPERATING_MODE = 11
    SECONDARY_ID = 12
    PROTOCOL_TYPE = 13
    HOMING_OFFSET = 20
    MOVING_THRESHOLD = 24
    TEMPERATURE_LIMIT = 31
    MAX_VOLTAGE_LIMIT = 32
    MIN_VOLTAGE_LIMIT = 34
    PWM_LIMIT = 36
    CURRENT_LIMIT = 38
    VELOCITY_LIMIT = 44
    MAX_POSITION_LIMIT = 48
    MIN_POSITION_LIMIT = 52
    SHUTDOWN = 63
    TORQUE_ENABLE = 64
    LED = 65
    STATUS_RETURN_LEVEL = 68
    REGISTERED_INSTRUCTION = 69
    HARDWARE_ERROR_STATUS = 70
    VELOCITY_I_GAIN = 76
    VELOCITY_P_GAIN = 78
    POSITION_D_GAIN = 80
    POSITION_I_GAIN = 82
    POSITION_P_GAIN = 84
    FEEDFORWARD_2ND_GAIN = 88
    FEEDFORWARD_1ST_GAIN = 90
    BUS_WATCHDOG = 98
    GOAL_PWM = 100
    GOAL_CURRENT = 102
    GOAL_VELOCITY = 104
    PROFILE_ACCELERATION = 108
    PROFILE_VELOCITY = 112
    GOAL_POSITION = 116
    REALTIME_TICK = 120
    MOVING = 122
    MOVING_STATUS = 123
    PRESENT_PWM = 124
    PRESENT_CURRENT = 126  # Present Load (0.1 %) on the XL430
    PRESENT_VELOCITY = 128
    PRESENT_POSITION = 132
    VELOCITY_TRAJECTORY = 136
    POSITION_TRAJECTORY = 140
    PRESENT_INPUT_VOLTAGE = 144
    PRESENT_TEMPERATURE = 146
    BACKUP_READY = 147


@dataclass(frozen=True)
class Field:
    """One control-table item. ``low``/``high`` bound what a write may store (None: unchecked)."""

    name: str
    address: int
    size: int
    writable: bool
    default: int = 0
    low: int | None = None
    high: int | None = None
    signed: bool = False

    @property
    def eeprom(self) -> bool:
        return self.address < EEPROM_END

    @property
    def end(self) -> int:
        return self.address + self.size

    def decode(self, raw: bytes | bytearray) -> int:
        return int.from_bytes(raw, "little", signed=self.signed)

    def encode(self, value: int) -> bytes:
        # Registers wrap like the firmware's fixed-width integers do.
        mask = (1 << (8 * self.size)) - 1
        return (int(value) & mask).to_bytes(self.size, "little")


@dataclass(frozen=True)
class ModelSpec:
    """A servo model: identity, control-table defaults that differ, and motor figures for the physics."""

    name: str
    number: int
    firmware: int
    no_load_rpm: float  # at the nominal voltage below
    stall_current_a: float
    nominal_voltage: float  # what Present Input Voltage reports, in volts
    current_unit_ma: float | None  # Present/Goal Current unit; None: the model reports load in 0.1 %
    max_baud_index: int
    defaults: dict[str, int] = field(default_factory=dict)

    @property
    def max_velocity_units(self) -> int:
        """No-load speed in Present Velocity units (0.229 rev/min)."""
        return int(self.no_load_rpm / VELOCITY_UNIT_RPM)

    @property
    def has_current_control(self) -> bool:
        return self.current_unit_ma is not None

    @property
    def max_ticks_per_s(self) -> float:
        return self.no_load_rpm / 60.0 * TICKS_PER_REV


def _x_fields(model: ModelSpec) -> dict[str, Field]:
    d = model.defaults
    vel_limit_max = d.get("velocity_limit_max", 1023)
    current = model.has_current_control
    fields = [
        Field("model_number", 0, 2, False, model.number),
        Field("model_information", 2, 4, False, 0),
        Field("firmware_version", 6, 1, False, model.firmware),
        Field("id", 7, 1, True, 1, 0, 252),
        Field("baud_rate", 8, 1, True, 1, 0, model.max_baud_index),
        Field("return_delay_time", 9, 1, True, 250, 0, 254),
        Field("drive_mode", 10, 1, True, 0, 0, 13),
        Field("operating_mode", 11, 1, True, MODE_POSITION, 0, 16),
        Field("secondary_id", 12, 1, True, 255, 0, 255),
        Field("protocol_type", 13, 1, True, 2, 1, 22),
        Field("homing_offset", 20, 4, True, 0, -1_044_479, 1_044_479, signed=True),
        Field("moving_threshold", 24, 4, True, 10, 0, 1023),
        Field("temperature_limit", 31, 1, True, d["temperature_limit"], 0, 100),
        Field("max_voltage_limit", 32, 2, True, d["max_voltage"], d["min_voltage"], d["max_voltage"]),
        Field("min_voltage_limit", 34, 2, True, d.get("min_voltage_default", d["min_voltage"]), d["min_voltage"],
              d["max_voltage"]),
        Field("pwm_limit", 36, 2, True, 885, 0, 885),
        Field("velocity_limit", 44, 4, True, d["velocity_limit"], 0, vel_limit_max),
        Field("max_position_limit", 48, 4, True, 4095, 0, 4095),
        Field("min_position_limit", 52, 4, True, 0, 0, 4095),
        Field("startup_configuration", 60, 1, True, 0, 0, 3),
        Field("shutdown", 63, 1, True, d.get("shutdown", 52), 0, 255),
        Field("torque_enable", 64, 1, True, 0, 0, 1),
        Field("led", 65, 1, True, 0, 0, 1),
        Field("status_return_level", 68, 1, True, 2, 0, 2),
        Field("registered_instruction", 69, 1, False, 0),
        Field("hardware_error_status", 70, 1, False, 0),
        Field("velocity_i_gain", 76, 2, True, d["velocity_i_gain"], 0, 16383),
        Field("velocity_p_gain", 78, 2, True, d["velocity_p_gain"], 0, 16383),
        Field("position_d_gain", 80, 2, True, d.get("position_d_gain", 0), 0, 16383),
        Field("position_i_gain", 82, 2, True, d.get("position_i_gain", 0), 0, 16383),
        Field("position_p_gain", 84, 2, True, d["position_p_gain"], 0, 16383),
        Field("feedforward_2nd_gain", 88, 2, True, 0, 0, 16383),
        Field("feedforward_1st_gain", 90, 2, True, 0, 0, 16383),
        Field("bus_watchdog", 98, 1, True, 0, 0, 127),
        # Goal PWM/Current/Velocity are bounded by their limit registers at write time.
        Field("goal_pwm", 100, 2, True, 0, signed=True),
        Field("goal_velocity", 104, 4, True, 0, signed=True),
        Field("profile_acceleration", 108, 4, True, 0, 0, 32767),
        Field("profile_velocity", 112, 4, True, 0, 0, 32767),
        Field("goal_position", 116, 4, True, 0, -1_048_575, 1_048_575, signed=True),
        Field("realtime_tick", 120, 2, False, 0),
        Field("moving", 122, 1, False, 0),
        Field("moving_status", 123, 1, False, 0),
        Field("present_pwm", 124, 2, False, 0, signed=True),
        Field("present_current", 126, 2, False, 0, signed=True),
        Field("present_velocity", 128, 4, False, 0, signed=True),
        Field("present_position", 132, 4, False, 0, signed=True),
        Field("velocity_trajectory", 136, 4, False, 0, signed=True),
        Field("position_trajectory", 140, 4, False, 0, signed=True),
        Field("present_input_voltage", 144, 2, False, round(model.nominal_voltage * 10)),
        Field("present_temperature", 146, 1, False, 30),
        Field("backup_ready", 147, 1, False, 0),
    ]
    if current:
        fields.append(Field("current_limit", 38, 2, True, d["current_limit"], 0, d["current_limit"]))
        fields.append(Field("goal_current", 102, 2, True, 0, signed=True))
    return {f.name: f for f in sorted(fields, key=lambda f: f.address)}


MODELS: dict[str, ModelSpec] = {
    "xl330-m288": ModelSpec(
        "xl330-m288", 1200, 52, no_load_rpm=103.0, stall_current_a=1.47, nominal_voltage=5.0,
        current_unit_ma=1.0, max_baud_index=6,
        defaults=dict(temperature_limit=70, max_voltage=70, min_voltage=31, min_voltage_default=35, velocity_limit=445,
                      velocity_limit_max=2047, current_limit=1750, shutdown=53, velocity_i_gain=1600,
                      velocity_p_gain=180, position_p_gain=400),
    ),
    "xl330-m077": ModelSpec(
        "xl330-m077", 1190, 52, no_load_rpm=383.0, stall_current_a=1.47, nominal_voltage=5.0,
        current_unit_ma=1.0, max_baud_index=6,
        defaults=dict(temperature_limit=70, max_voltage=70, min_voltage=31, min_voltage_default=35, velocity_limit=1620,
                      velocity_limit_max=2047, current_limit=1750, shutdown=53, velocity_i_gain=400,
                      velocity_p_gain=40, position_i_gain=400, position_p_gain=400),
    ),
    "xl430-w250": ModelSpec(
        "xl430-w250", 1060, 52, no_load_rpm=61.0, stall_current_a=1.4, nominal_voltage=12.0,
        current_unit_ma=None, max_baud_index=7,
        defaults=dict(temperature_limit=72, max_voltage=140, min_voltage=60, velocity_limit=265,
                      velocity_i_gain=1000, velocity_p_gain=100, position_d_gain=4000, position_p_gain=640),
    ),
    "xm430-w350": ModelSpec(
        "xm430-w350", 1020, 52, no_load_rpm=46.0, stall_current_a=2.3, nominal_voltage=12.0,
        current_unit_ma=2.69, max_baud_index=7,
        defaults=dict(temperature_limit=80, max_voltage=160, min_voltage=95, velocity_limit=350,
                      current_limit=1193, velocity_i_gain=1920, velocity_p_gain=100, position_p_gain=800),
    ),
    "xm540-w270": ModelSpec(
        "xm540-w270", 1120, 52, no_load_rpm=30.0, stall_current_a=4.4, nominal_voltage=12.0,
        current_unit_ma=2.69, max_baud_index=7,
        defaults=dict(temperature_limit=80, max_voltage=160, min_voltage=95, velocity_limit=128,
                      current_limit=2047, velocity_i_gain=1920, velocity_p_gain=100, position_p_gain=900),
    ),
}

# Model name -> model number, as Ping and Model Number(0) report it.
MODEL_NUMBERS: dict[str, int] = {name: spec.number for name, spec in MODELS.items()}

_FIELDS = {name: _x_fields(spec) for name, spec in MODELS.items()}


def model_spec(name: str) -> ModelSpec:
    """The spec of a model by name (``xl330-m288``; case and an ``-t``/``-r`` suffix are ignored)."""
    key = name.lower().strip()
    for suffix in ("-t", "-r"):
        if key.endswith(suffix) and key[: -len(suffix)] in MODELS:
            key = key[: -len(suffix)]
    if key not in MODELS:
        raise ValueError(f"unknown Dynamixel model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[key]


def fields(model: str) -> dict[str, Field]:
    """The control table of a model, keyed by field name, in address order."""
    return _FIELDS[model_spec(model).name]


def default_table(model: str) -> bytearray:
    """Control-table bytes as a servo of this model comes from the factory (reserved bytes 0)."""
    table = bytearray(TABLE_SIZE)
    for f in fields(model).values():
        table[f.address : f.end] = f.encode(f.default)
    return table


def ticks_to_rad(ticks: float) -> float:
    return (ticks - CENTER_TICKS) * (2.0 * math.pi / TICKS_PER_REV)


def rad_to_ticks(rad: float) -> float:
    return CENTER_TICKS + rad * (TICKS_PER_REV / (2.0 * math.pi))


def baud_index(baudrate: int) -> int:
    """The Baud Rate(8) value for a line speed in bit/s."""
    for idx, rate in BAUD_RATES.items():
        if rate == baudrate:
            return idx
    raise ValueError(f"baud rate {baudrate} is not a Dynamixel X-series rate ({', '.join(map(str, BAUD_RATES.values()))})")
