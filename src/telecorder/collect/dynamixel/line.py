"""The pseudo-terminal that stands in for a U2D2's serial port.

The emulator keeps the master side; clients open the slave path (``/dev/pts/N``) with any
serial library. The slave is put in raw mode at once, so no echo or newline translation
ever touches the binary packets, even before a client configures it. A pty has no real
line speed, but it stores the one a client sets, which lets the emulator refuse to hear
a client that opened the port at a different baud rate than the servos use (as a real
bus would only see garbage).
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import termios
import tty

# Linux termios2 (asm-generic): 4 flag words, c_line, 19 control chars, then ispeed and
# ospeed. pyserial sets non-standard rates (4.5 Mbps) through it with BOTHER.
_TCGETS2 = 0x802C542A
_BOTHER = 0o010000
_CBAUD = 0o010017
_TERMIOS2_SIZE = 44
_OSPEED_OFFSET = 40

_SPEEDS = {getattr(termios, name): int(name[1:]) for name in dir(termios)
           if name.startswith("B") and name[1:].isdigit()}


class PtyLine:
    """A master/slave pty pair; ``path`` is what a client opens."""

    def __init__(self, baudrate: int | None = None) -> None:
        self.master, self.slave = os.openpty()
        try:
            tty.setraw(self.slave)
            if baudrate is not None:
                self._set_speed(baudrate)
            os.set_blocking(self.master, False)
            self.path = os.ttyname(self.slave)
        except Exception:
            self.close()
            raise

    def _set_speed(self, baudrate: int) -> None:
        const = next((c for c, rate in _SPEEDS.items() if rate == baudrate), None)
        if const is None:
            return  # a rate termios cannot name; clients set it themselves
        attrs = termios.tcgetattr(self.slave)
        attrs[4] = attrs[5] = const
        termios.tcsetattr(self.slave, termios.TCSANOW, attrs)

    def speed(self) -> int | None:
        """The line speed the client configured, in bit/s; None when it cannot be told."""
        try:
            ospeed = termios.tcgetattr(self.slave)[5]
        except termios.error:
            return None
        if ospeed in _SPEEDS:
            return _SPEEDS[ospeed]
        if sys.platform.startswith("linux"):
            try:
                buf = fcntl.ioctl(self.slave, _TCGETS2, bytes(_TERMIOS2_SIZE))
            except OSError:
                return None
            cflag = struct.unpack_from("I", buf, 8)[0]
            if cflag & _CBAUD == _BOTHER:
                return struct.unpack_from("I", buf, _OSPEED_OFFSET)[0]
        return None

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
