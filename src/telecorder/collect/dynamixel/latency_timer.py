"""The latency timer of an FTDI USB-serial adapter (U2D2, USB2Dynamixel), read from sysfs.

An FTDI chip holds the servos' replies until its buffer fills or its latency timer expires
(see :mod:`.wire`): 16 ms from the factory, which caps a read-write loop near 60 Hz; GELLO
and LeRobot have users lower it to 1 ms. Linux shows the timer of ``/dev/ttyUSBn`` at
``/sys/bus/usb-serial/devices/ttyUSBn/latency_timer``. The sysfs root can be moved with
``TELECORDER_SYSFS_ROOT`` (tests use a fake one).
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from pathlib import Path

SYSFS_ROOT_ENV = "TELECORDER_SYSFS_ROOT"
FAST_MS = 1  # what GELLO and LeRobot set, and the lowest the chip allows
UDEV_RULE = 'ACTION=="add", SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio", ATTR{latency_timer}="1"'
UDEV_FILE = "/etc/udev/rules.d/99-ftdi-low-latency.rules"
_USB_SERIAL = re.compile(r"ttyUSB\d+")

_warned: set[str] = set()
_warned_lock = threading.Lock()


class LatencyTimerWarning(UserWarning):
    """A serial adapter whose latency timer slows every read down."""


def sysfs_root() -> Path:
    return Path(os.environ.get(SYSFS_ROOT_ENV) or "/sys")


def latency_timer_file(port: str | os.PathLike[str], root: Path | None = None) -> Path | None:
    """The sysfs file of the adapter behind ``port`` (``/dev/serial/by-id`` links resolved), if it has one.

    Only USB-serial ports (``ttyUSBn``, the last such name on the way through symlinks) have
    one; a pseudo-terminal, an ACM device or a Windows port gives None.
    """
    device = next((name for name in reversed(_link_chain(port)) if _USB_SERIAL.fullmatch(name)), None)
    if device is None:
        return None
    path = (root or sysfs_root()) / "bus" / "usb-serial" / "devices" / device / "latency_timer"
    return path if path.is_file() else None


def _link_chain(port: str | os.PathLike[str]) -> list[str]:
    """The names ``port`` leads through to its device: ``usb-FTDI_...-port0``, then ``ttyUSB0``."""
    path, names = Path(port), []
    for _ in range(40):  # a link loop ends here
        names.append(path.name)
        if not path.is_symlink():
            break
        target = Path(os.readlink(path))
        path = target if target.is_absolute() else path.parent / target
    names.append(os.path.basename(os.path.realpath(port)))
    return names


def read_latency_timer_ms(port: str | os.PathLike[str], root: Path | None = None) -> int | None:
    """The adapter's latency timer in ms, or None where there is none to read (or it cannot be read)."""
    path = latency_timer_file(port, root)
    if path is None:
        return None
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def lowering_advice(path: Path) -> str:
    """The commands that set the timer to 1 ms now, and at every plug-in."""
    return (f"lower it to {FAST_MS} ms with `echo {FAST_MS} | sudo tee {path}` (until the adapter is unplugged), "
            f"and for good with the udev rule '{UDEV_RULE}' in {UDEV_FILE} "
            "(then `sudo udevadm control --reload-rules && sudo udevadm trigger`)")


def check_latency_timer(port: str | os.PathLike[str], root: Path | None = None) -> int | None:
    """Read the adapter's latency timer; warn once per adapter when it is above 1 ms. Returns the ms read."""
    path = latency_timer_file(port, root)
    if path is None:
        return None
    ms = read_latency_timer_ms(port, root)
    if ms is None or ms <= FAST_MS:
        return ms
    key = str(path)
    with _warned_lock:
        if key in _warned:
            return ms
        _warned.add(key)
    warnings.warn(
        f"{port}: the USB adapter's latency timer is {ms} ms, so each read waits up to {ms} ms for the adapter "
        f"to pass the reply on (a read-write loop manages about {1000 // ms} cycles a second); "
        + lowering_advice(path),
        LatencyTimerWarning,
        stacklevel=3,
    )
    return ms
