"""Dynamixel Protocol 2.0: packet framing, the X-series control table, and a servo-chain emulator.

The emulator (:class:`BusEmulator`) serves a pseudo-terminal that ``dynamixel_sdk`` opens
like a U2D2, so drivers and recordings can run without hardware; it keeps the time a real
bus and USB adapter would (:mod:`.wire`).
"""

from .control_table import ADDR, MODEL_NUMBERS, MODELS, ModelSpec, rad_to_ticks, ticks_to_rad
from .emulator import BusEmulator, BusStats, FaultConfig
from .hand import HandMotion
from .protocol import Packet, PacketParser, build_packet, build_status, crc16, stuff, unstuff
from .servo import ServoState

__all__ = [
    "ADDR",
    "MODELS",
    "MODEL_NUMBERS",
    "BusEmulator",
    "BusStats",
    "FaultConfig",
    "HandMotion",
    "ModelSpec",
    "Packet",
    "PacketParser",
    "ServoState",
    "build_packet",
    "build_status",
    "crc16",
    "rad_to_ticks",
    "stuff",
    "ticks_to_rad",
    "unstuff",
]
