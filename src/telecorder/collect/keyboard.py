"""Session keys read from the terminal without Enter: n/→ save, r/← re-record, q/Esc quit, i take over/hand back.

When standard input is not a terminal (CI, pipes, nohup) keys are disabled and the
session runs on its limits (episode count and time) alone.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import tty

from .interfaces import Event

_KEYS = {
    b"n": Event.SAVE_EPISODE,
    b"\x1b[C": Event.SAVE_EPISODE,
    b"r": Event.DISCARD_EPISODE,
    b"\x1b[D": Event.DISCARD_EPISODE,
    b"i": Event.INTERVENE,
    b"q": Event.STOP,
    b"\x1b": Event.STOP,
}


def parse_keys(data: bytes) -> list[Event]:
    """Events in a chunk of terminal input; arrow keys arrive as three-byte escape sequences."""
    events, i = [], 0
    while i < len(data):
        if data[i : i + 3] in (b"\x1b[C", b"\x1b[D"):
            events.append(_KEYS[data[i : i + 3]])
            i += 3
            continue
        if data[i : i + 2] in (b"\x1b[", b"\x1bO"):
            i += 3  # another arrow or function key: ignore it rather than read it as Esc
            continue
        ev = _KEYS.get(data[i : i + 1].lower())
        if ev is not None:
            events.append(ev)
        i += 1
    return events


class TerminalKeys:
    """Context manager that puts the terminal in cbreak mode and collects key events."""

    def __init__(self, stream: object = None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        self.enabled = False
        self._fd = -1
        self._saved: list | None = None
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TerminalKeys:
        try:
            self._fd = self._stream.fileno()  # type: ignore[attr-defined]
            self.enabled = os.isatty(self._fd)
        except (AttributeError, OSError, ValueError):
            self.enabled = False
        if self.enabled:
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)  # keeps ISIG, so Ctrl-C still interrupts
            self._thread = threading.Thread(target=self._read_loop, name="tc-keys", daemon=True)
            self._thread.start()
        return self

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 32)
            except OSError:
                return
            if not data:
                return
            events = parse_keys(data)
            if events:
                with self._lock:
                    self._events.extend(events)

    def poll(self) -> set[Event]:
        """Events since the last call."""
        with self._lock:
            events, self._events = set(self._events), []
        return events

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
