"""Session keys read from the terminal without Enter (the active device's, see :mod:`.key_bindings`).

Most devices use n / Right save, r / Left re-record, q / Esc save and quit, i take over /
hand back; the keyboard device, whose letters move the arm, uses Enter, Backspace, Esc and i.
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

from ..interfaces import Event
from ..key_bindings import TERMINAL, Controls, terminal_bytes


def _byte_map(controls: Controls) -> dict[bytes, Event]:
    return {seq: event for key, event in controls.session_keys().items() for seq in terminal_bytes(key)}


def parse_keys(data: bytes, controls: Controls = TERMINAL) -> list[Event]:
    """Events in a chunk of terminal input; arrow keys arrive as three-byte escape sequences."""
    keys = _byte_map(controls)
    events, i = [], 0
    while i < len(data):
        if data[i : i + 2] in (b"\x1b[", b"\x1bO"):
            # An arrow or function key: its own binding if it has one, never a lone Esc.
            ev = keys.get(data[i : i + 3])
            if ev is not None:
                events.append(ev)
            i += 3
            continue
        ev = keys.get(data[i : i + 1].lower())
        if ev is not None:
            events.append(ev)
        i += 1
    return events


class TerminalKeys:
    """Context manager that puts the terminal in cbreak mode and collects key events."""

    def __init__(self, stream: object = None, controls: Controls = TERMINAL) -> None:
        self._stream = stream if stream is not None else sys.stdin
        self.controls = controls
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
            events = parse_keys(data, self.controls)
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
