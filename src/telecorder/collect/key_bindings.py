"""What each key and button does, per teleop device: the one table every front-end reads.

The keyboard device, the gamepad, the live view's drawn key map, the terminal's key
reader and status line, and ``collect --help`` all take their bindings from here, so what
the screen advertises is what the device does. Session keys (save, re-record, quit, take
over) never share a key with a motion key: the keyboard device, whose letters and arrows
move the arm, saves with Enter, re-records with Backspace and quits with Esc; devices
without motion keys keep the terminal's n / r / q.

Key names are pygame's (``pygame.key.name``): ``"w"``, ``"up"``, ``"space"``, ``"return"``,
``"backspace"``, ``"escape"``. This module imports neither pygame nor any device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .interfaces import Event

# What the session keys do, in the order they are advertised.
SESSION_LABELS = {
    Event.SAVE_EPISODE: "save",
    Event.DISCARD_EPISODE: "re-record",
    Event.STOP: "save & quit",
    Event.INTERVENE: "take over / hand back",
    Event.SKIP_TASK: "skip instruction",
}

# The terminal's keys, for every device that has no motion keys of its own.
TERMINAL_SESSION_KEYS: dict[Event, tuple[str, ...]] = {
    Event.SAVE_EPISODE: ("n", "right"),
    Event.DISCARD_EPISODE: ("r", "left"),
    Event.STOP: ("q", "escape"),
    Event.INTERVENE: ("i",),
    # k, not n: n already saves. The same letter on every device: the keyboard moves with no k.
    Event.SKIP_TASK: ("k",),
}

# The keyboard device: letters and arrows move, so the session uses keys no motion key uses.
KEYBOARD_SESSION_KEYS: dict[Event, tuple[str, ...]] = {
    Event.SAVE_EPISODE: ("return",),
    Event.DISCARD_EPISODE: ("backspace",),
    Event.STOP: ("escape",),
    Event.INTERVENE: ("i",),
    Event.SKIP_TASK: ("k",),
}


@dataclass(frozen=True)
class MotionKey:
    """A key held to move the end effector: ``quantity[axis] += sign * speed`` while it is down."""

    key: str
    quantity: str  # "linear" (m/s, x y z), "angular" (rad/s, roll pitch yaw) or "gripper" (+ opens)
    axis: int
    sign: int
    label: str


# Robot base frame: +x forward, +y left, +z up; +pitch tips the tool nose down (like pushing a
# stick forward), +roll lowers its right side, +yaw turns it left.
KEYBOARD_MOTION: tuple[MotionKey, ...] = (
    MotionKey("w", "linear", 0, +1, "forward"), MotionKey("s", "linear", 0, -1, "back"),
    MotionKey("a", "linear", 1, +1, "left"), MotionKey("d", "linear", 1, -1, "right"),
    MotionKey("r", "linear", 2, +1, "up"), MotionKey("f", "linear", 2, -1, "down"),
    MotionKey("up", "angular", 1, +1, "pitch down"), MotionKey("down", "angular", 1, -1, "pitch up"),
    MotionKey("right", "angular", 0, +1, "roll right"), MotionKey("left", "angular", 0, -1, "roll left"),
    MotionKey("q", "angular", 2, +1, "yaw left"), MotionKey("e", "angular", 2, -1, "yaw right"),
    MotionKey("space", "gripper", 0, +1, "open"), MotionKey("c", "gripper", 0, -1, "close"),
)

# Two arms (--scene bimanual): the keyboard or pad drives one arm at a time and this key or
# button hands it to the other. Tab and the right stick's click are bound to nothing else; the
# right stick rather than the left, which steers all the time and is clicked by accident.
KEYBOARD_ARM_KEY = "tab"

# SDL joystick button numbers of an Xbox-style pad on Linux (pygame docs, "Xbox 360 Controller").
XBOX_BUTTONS = {"A": 0, "B": 1, "X": 2, "Y": 3, "LB": 4, "RB": 5, "Back": 6, "Start": 7, "LS": 8, "RS": 9}

# The gamepad's own buttons for the session events; GamepadMapping's defaults come from here.
PAD_SESSION_BUTTONS: dict[Event, str] = {
    Event.SAVE_EPISODE: "A",
    Event.DISCARD_EPISODE: "B",
    Event.STOP: "Start",
    Event.INTERVENE: "X",
    Event.SKIP_TASK: "Back",
}
PAD_ROTATION_BUTTON, PAD_DOWN_BUTTON, PAD_UP_BUTTON = "Y", "LB", "RB"
PAD_ARM_BUTTON = "RS"

# The gamepad's motion controls as the key map shows them (GamepadInput.read implements them).
PAD_MOTION: tuple[tuple[str, str], ...] = (
    ("move", f"left stick forward/back, left/right; right stick up/down; {PAD_DOWN_BUTTON}/{PAD_UP_BUTTON} down/up"),
    ("turn", f"{PAD_ROTATION_BUTTON} toggles rotation mode: left stick pitch/roll, right stick yaw"),
    ("gripper", "LT/RT open/close"),
)
# Drawn in the live view's key map only: collect --help carries help_text() as a copy (cli/collect.py).
PAD_ARMS: tuple[tuple[str, str], ...] = (
    ("arms", f"{PAD_ARM_BUTTON} (right stick click) drives the other arm (two arms; left first)"),
)

# VR controller buttons (rising edges) for the session events, and the re-centre button; the
# clutch mapping (vr/mapping.py) reads these. Touch controllers put x/y on the left hand and
# a/b on the right; Index has a/b on both and no menu button for applications.
VR_SESSION_BUTTONS: dict[Event, tuple[str, ...]] = {
    Event.SAVE_EPISODE: ("a",),
    Event.DISCARD_EPISODE: ("menu", "y"),
    Event.INTERVENE: ("x",),
}
VR_RECENTRE_BUTTONS: tuple[str, ...] = ("b",)
VR_MOTION: tuple[tuple[str, str], ...] = (
    ("move", f"hold squeeze (clutch) and move the controller; {'/'.join(VR_RECENTRE_BUTTONS)} re-centres"),
    ("gripper", "trigger closes"),
    ("arms", "two arms: each controller drives its own arm, left hand the left arm"),
)

_KEY_NAMES = {"return": "Enter", "backspace": "Backspace", "escape": "Esc", "space": "Space", "tab": "Tab",
              "up": "Up", "down": "Down", "left": "Left", "right": "Right"}

# What a key sends to a terminal in cbreak mode (arrow keys in normal and application mode).
_TERMINAL_BYTES = {
    "return": (b"\n", b"\r"),
    "backspace": (b"\x7f", b"\x08"),
    "escape": (b"\x1b",),
    "space": (b" ",),
    "up": (b"\x1b[A", b"\x1bOA"),
    "down": (b"\x1b[B", b"\x1bOB"),
    "right": (b"\x1b[C", b"\x1bOC"),
    "left": (b"\x1b[D", b"\x1bOD"),
}


def key_label(key: str) -> str:
    """How a key is written on screen: ``return`` -> ``Enter``."""
    return _KEY_NAMES.get(key, key)


def _pairs(motion: tuple[MotionKey, ...], quantity: str) -> str:
    """``w/s forward/back   a/d left/right``: the keys of one quantity, opposite directions paired."""
    out = []
    keys = [m for m in motion if m.quantity == quantity]
    for plus in (m for m in keys if m.sign > 0):
        minus = next((m for m in keys if m.axis == plus.axis and m.sign < 0), None)
        if minus is None:
            out.append(f"{key_label(plus.key)} {plus.label}")
            continue
        a, b = plus.label.split(), minus.label.split()
        shared = a[:-1] if a[:-1] == b[:-1] else []
        what = " ".join([*shared, f"{a[-1] if shared else plus.label}/{b[-1] if shared else minus.label}"])
        out.append(f"{key_label(plus.key)}/{key_label(minus.key)} {what}")
    return "   ".join(out)


def terminal_bytes(key: str) -> tuple[bytes, ...]:
    """The byte sequences a terminal delivers for a key; a letter arrives as itself."""
    if key in _TERMINAL_BYTES:
        return _TERMINAL_BYTES[key]
    if len(key) == 1:
        return (key.encode(),)
    raise ValueError(f"no terminal byte sequence known for key {key!r}")


@dataclass(frozen=True)
class Controls:
    """The bindings active for one device: session keys, motion keys or pad controls, and the window's role."""

    device: str
    session: dict[Event, tuple[str, ...]]
    motion: tuple[MotionKey, ...] = ()
    pad_session: dict[Event, str] = field(default_factory=dict)
    pad_motion: tuple[tuple[str, str], ...] = ()
    pad_name: str = "pad"  # what the key map calls the hand-held device: "pad", "controller"
    # The device reads its keys from the live view's window: no window, nobody can steer.
    needs_window: bool = False
    # collect opens the live view unless told --no-display.
    view_by_default: bool = False
    # The key that hands the device to the other arm on a two-arm robot ("" for none).
    arm_key: str = ""

    def session_keys(self) -> dict[str, Event]:
        """Key name -> session event."""
        return {key: event for event, keys in self.session.items() for key in keys}

    def motion_keys(self) -> dict[str, MotionKey]:
        return {m.key: m for m in self.motion}

    def first_key(self, event: Event) -> str:
        """The key advertised for an event."""
        return key_label(self.session[event][0])

    def hint(self, events: tuple[Event, ...] = (Event.SAVE_EPISODE, Event.DISCARD_EPISODE, Event.STOP)) -> str:
        """A short status-line reminder: ``Enter save  Backspace re-record  Esc save & quit``."""
        return "  ".join(f"{self.first_key(e)} {SESSION_LABELS[e]}" for e in events if e in self.session)

    def map_lines(self) -> list[str]:
        """The key map drawn in the live view, one line per group, motion first."""
        lines = []
        if self.motion:
            lines += [f"{title}:  {_pairs(self.motion, quantity)}"
                      for title, quantity in (("move", "linear"), ("turn", "angular"), ("gripper", "gripper"))]
        if self.arm_key:
            lines.append(f"arms:  {key_label(self.arm_key)} drives the other arm (two arms; left first)")
        lines += [f"{title}:  {what}" for title, what in self.pad_motion]
        if self.pad_session:
            lines.append(f"{self.pad_name}:  "
                         + "   ".join(f"{b} {SESSION_LABELS[e]}" for e, b in self.pad_session.items()))
        keys_line = "   ".join(
            " / ".join(key_label(k) for k in keys) + f" {SESSION_LABELS[e]}" for e, keys in self.session.items()
        )
        lines.append(f"keys:  {keys_line}" if not self.motion else f"session:  {keys_line}")
        return lines

    def terminal_line(self) -> str:
        """The terminal's reminder (rich markup)."""
        return "keys: " + ", ".join(
            "/".join(f"[bold]{key_label(k)}[/]" for k in keys) + f" {SESSION_LABELS[e]}"
            for e, keys in self.session.items()
        )


KEYBOARD = Controls("keyboard", KEYBOARD_SESSION_KEYS, motion=KEYBOARD_MOTION, needs_window=True, view_by_default=True,
                    arm_key=KEYBOARD_ARM_KEY)
GAMEPAD = Controls("gamepad", TERMINAL_SESSION_KEYS, pad_session=PAD_SESSION_BUTTONS, pad_motion=PAD_MOTION + PAD_ARMS,
                   view_by_default=True)
VR = Controls("vr", TERMINAL_SESSION_KEYS, pad_session={e: "/".join(b) for e, b in VR_SESSION_BUTTONS.items()},
              pad_motion=VR_MOTION, pad_name="controller")
TERMINAL = Controls("terminal", TERMINAL_SESSION_KEYS)
ALL_CONTROLS = (KEYBOARD, GAMEPAD, VR, TERMINAL)


def controls_for(device: str | None, intervene: str | None = None) -> Controls:
    """The bindings a ``collect`` run uses: the device's, or with a policy, the intervening device's."""
    name = intervene if device == "policy" and intervene else device
    return {"keyboard": KEYBOARD, "gamepad": GAMEPAD, "vr": VR}.get(name or "", TERMINAL)


def help_text() -> str:
    """The key paragraph of ``collect --help``."""
    kb = KEYBOARD
    every = ", ".join(" or ".join(key_label(k) for k in keys) + f" {SESSION_LABELS[e]}"
                      for e, keys in TERMINAL.session.items())
    motion = "\n".join(f"    {title:8} {_pairs(kb.motion, q).replace('   ', ', ')}"
                       for title, q in (("move", "linear"), ("turn", "angular"), ("gripper", "gripper")))
    session = ", ".join(f"{kb.first_key(e)} {SESSION_LABELS[e]}" for e in kb.session)
    pad_motion = "\n".join(f"    {title:8} {what}" for title, what in PAD_MOTION)
    pad = ", ".join(f"{b} {SESSION_LABELS[e]}" for e, b in PAD_SESSION_BUTTONS.items())
    return (
        "keys while recording, in the terminal and in the live window:\n"
        f"  every device: {every}\n"
        "  except --device keyboard, whose keys are held in the live window (it needs one):\n"
        f"{motion}\n"
        f"    {'session':8} {session}\n"
        f"    {'arms':8} {key_label(KEYBOARD_ARM_KEY)} switches the arm it drives (two-arm robots: --scene bimanual)\n"
        "  --device gamepad (and the keys of every device):\n"
        f"{pad_motion}\n"
        f"    {'session':8} {pad}\n"
        f"    {'arms':8} {PAD_ARM_BUTTON} (right-stick click) switches the arm it drives (two-arm robots)\n"
        "Ctrl-C discards the episode in progress; every episode saved before stays intact.\n"
    )
