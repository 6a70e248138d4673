"""A test feeder for Monado's ``remote`` driver: scripted controller states over TCP.

Monado's remote driver (``P_OVERRIDE_ACTIVE_CONFIG=remote``) listens on 127.0.0.1:4242 once a
client creates an OpenXR instance, writes two ``struct r_remote_data`` (its reset state and its
current state), then reads one ``struct r_remote_data`` per update and reports the latest to
OpenXR: head pose and, per hand, pose, velocities, trigger, squeeze, thumbstick, trackpad and
buttons (src/xrt/drivers/remote/r_interface.h, header "mndrmt3\\0"). The driver's tracking
origin is the stage space, so a pose sent here is the pose OpenXR reports in STAGE.

The layout below is that header's, field by field, little-endian and without padding beyond
what the header spells out (every member is 4-byte aligned; the total is 376 bytes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PORT = 4242
HEADER = b"mndrmt3\0"

_POSE = "7f"  # xrt_quat (x, y, z, w), xrt_vec3 position
_VIEW = "4f" + _POSE + "I"  # xrt_fov (4 angles), pose, uint32 pad
_HEAD = _VIEW * 2 + _POSE + "?3x"  # views[2], centre, per_view_data_valid, pad
# pose, linear/angular velocity, hand_curl[5], trigger, squeeze, squeeze_force, thumbstick(2),
# trackpad_force, trackpad(2), then 13 bools and 3 padding bools
_CONTROLLER = _POSE + "3f3f5f" + "fff2ff2f" + "13?3x"
_FORMAT = "<8s" + _HEAD + _CONTROLLER + _CONTROLLER
SIZE = struct.calcsize(_FORMAT)
assert SIZE == 376, SIZE


# Where the driver puts the controllers before anyone sends anything (r_hub.c).
DRIVER_LEFT = (-0.2, 1.3, -0.5)
DRIVER_RIGHT = (0.2, 1.3, -0.5)


@dataclass
class HandState:
    """What one controller reports: pose in the stage frame and its inputs."""

    position: Sequence[float] = DRIVER_RIGHT
    orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)  # quaternion x, y, z, w
    trigger: float = 0.0
    squeeze: float = 0.0
    a: bool = False
    b: bool = False
    system: bool = False
    active: bool = True

    def matrix(self) -> np.ndarray:
        """4x4 pose, as telecorder's pose stream stores it."""
        x, y, z, w = self.orientation
        m = np.eye(4)
        m[:3, :3] = [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
        m[:3, 3] = self.position
        return m

    def _fields(self) -> list[object]:
        x, y, z, w = self.orientation
        px, py, pz = self.position
        return [
            x, y, z, w, px, py, pz,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0,  # no velocities: the runtime must not extrapolate
            0.0, 0.0, 0.0, 0.0, 0.0,  # hand curl
            self.trigger, self.squeeze, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            False, self.active,  # hand_tracking_active, active
            self.system, False, self.a, False, self.b, False,
            self.trigger >= 0.95, self.trigger > 0.0, False, False, False,
        ]


@dataclass
class Frame:
    """One update: both hands (the head stays at standing height, looking forward)."""

    left: HandState = field(default_factory=lambda: HandState(position=DRIVER_LEFT))
    right: HandState = field(default_factory=HandState)

    def pack(self) -> bytes:
        identity_view = [0.0] * 4 + [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0] + [0]
        head = identity_view * 2 + [0.0, 0.0, 0.0, 1.0, 0.0, 1.6, 0.0, False]
        return struct.pack(_FORMAT, HEADER, *head, *self.left._fields(), *self.right._fields())


def unpack_positions(data: bytes) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Left and right controller positions of one packed ``r_remote_data``."""
    values = struct.unpack(_FORMAT, data[:SIZE])
    head_len = len(struct.unpack("<" + _HEAD, bytes(struct.calcsize("<" + _HEAD))))
    per_hand = len(struct.unpack("<" + _CONTROLLER, bytes(struct.calcsize("<" + _CONTROLLER))))
    left = values[1 + head_len:1 + head_len + per_hand]
    right = values[1 + head_len + per_hand:]
    return tuple(left[4:7]), tuple(right[4:7])


class RemoteFeeder:
    """Connects to the runtime's remote driver and sends frames; keeps a log of what it sent.

    ``log`` holds ``(time.monotonic_ns() after sending, Frame)``; the recorder runs on the same
    machine and clock, so the test can line the two up.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = PORT) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.log: list[tuple[int, Frame]] = []

    def connect(self, timeout_s: float = 90.0) -> None:
        """Retry until the runtime listens (it starts when the client creates its instance)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=5.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"Monado's remote driver did not listen on {self.host}:{self.port} "
                        f"within {timeout_s:g} s"
                    ) from None
                time.sleep(0.05)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout_s)
        # The driver greets with its reset and current states (its header left unset). Their
        # controller positions are the driver's defaults: proof the layout matches the runtime's.
        greeting = b""
        while len(greeting) < 2 * SIZE:
            chunk = sock.recv(2 * SIZE - len(greeting))
            if not chunk:
                raise ConnectionError("the remote driver closed the connection during its greeting")
            greeting += chunk
        left, right = unpack_positions(greeting[:SIZE])
        if not (np.allclose(left, DRIVER_LEFT, atol=1e-6) and np.allclose(right, DRIVER_RIGHT, atol=1e-6)):
            raise ConnectionError(f"remote-driver layout mismatch: reset positions {left}, {right}")
        self.sock = sock

    def send(self, frame: Frame) -> None:
        assert self.sock is not None, "connect() first"
        self.sock.sendall(frame.pack())
        self.log.append((time.monotonic_ns(), frame))

    def play(self, keyframes: Sequence[tuple[float, Frame]], rate_hz: float = 100.0) -> None:
        """Hold each frame for its duration, resending at ``rate_hz`` (as a tracker streams)."""
        for hold_s, frame in keyframes:
            end = time.monotonic() + hold_s
            while True:
                self.send(frame)
                left = end - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(1.0 / rate_hz, left))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class FeederThread(threading.Thread):
    """Connects and plays keyframes in the background; ``error`` holds what went wrong, if anything."""

    def __init__(self, keyframes: Sequence[tuple[float, Frame]], connect_timeout_s: float = 90.0) -> None:
        super().__init__(daemon=True)
        self.keyframes = list(keyframes)
        self.connect_timeout_s = connect_timeout_s
        self.feeder = RemoteFeeder()
        self.started_ns: list[int] = []  # monotonic, just before each keyframe was first sent
        self.sent_ns: list[int] = []  # monotonic, once it was sent
        self.started_unix: list[float] = []  # the same instants on the wall clock
        self.error: BaseException | None = None
        self.disconnected_at: int | None = None  # keyframe being played when the runtime went away
        self.go = threading.Event()  # set to start playing once connected
        self.connected = threading.Event()

    def run(self) -> None:
        try:
            self.feeder.connect(self.connect_timeout_s)
            self.connected.set()
            self.go.wait()
            for k, (hold_s, frame) in enumerate(self.keyframes):
                self.started_unix.append(time.time())
                self.started_ns.append(time.monotonic_ns())
                try:
                    self.feeder.send(frame)
                    self.sent_ns.append(time.monotonic_ns())
                    self.feeder.play([(hold_s, frame)])
                except (BrokenPipeError, ConnectionResetError):
                    # The client closed the runtime (e.g. collect finished on the save button).
                    self.disconnected_at = k
                    return
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.connected.set()

    def finish(self, timeout_s: float = 120.0) -> None:
        self.join(timeout_s)
        if self.is_alive():
            raise TimeoutError("the remote feeder did not finish")
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.feeder.close()


# -- finding the runtime that scripts/vr_runtime.sh built

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = "monado-5980804.tar.gz"


def vendor_dir() -> Path:
    return Path(os.environ.get("TELECORDER_VENDOR") or ROOT.parent / "shared" / "vendor")


def monado_manifest() -> Path:
    """The built runtime's manifest (XR_RUNTIME_JSON).

    Skips only where the vendor archive is absent (nothing to build from) or the machine cannot
    install Monado's build dependencies (``vr_runtime.sh`` says which); a missing build is a
    failure that says how to make it, since ``make test`` builds it first.
    """
    import pytest

    archive = vendor_dir() / ARCHIVE
    if not archive.is_file():
        pytest.skip(f"{archive} is absent: no Monado source to build the OpenXR runtime from")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "vr_runtime.sh"), "--print"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode == 3:  # the machine cannot install the build dependencies (no apt-get/root/mirror)
        pytest.skip(proc.stderr.strip())
    if proc.returncode != 0:
        pytest.fail(f"Monado is not built ({proc.stderr.strip()}): run `make vr-runtime` "
                    "(scripts/vr_runtime.sh) first")
    return Path(proc.stdout.strip())


def runtime_env(manifest: Path, config: str | None = "remote") -> dict[str, str]:
    """Environment for a client process that loads Monado in-process, headless.

    ``config`` picks Monado's active configuration (``remote``: controllers fed over TCP by
    :class:`RemoteFeeder`; None: Monado's default, here a simulated HMD without controllers).
    """
    # COLUMNS: console lines unwrapped, so tests find paths and names whole.
    env = dict(os.environ, XR_RUNTIME_JSON=str(manifest), XRT_COMPOSITOR_NULL="1", XRT_LOG="warning",
               PYTHONUNBUFFERED="1", COLUMNS="400")
    env.pop("P_OVERRIDE_ACTIVE_CONFIG", None)
    if config is not None:
        env["P_OVERRIDE_ACTIVE_CONFIG"] = config
    return env


@contextlib.contextmanager
def port_lock(timeout_s: float = 900.0) -> Iterator[None]:
    """Hold the machine-wide lock on Monado's fixed port 4242 (other pytest processes may want it)."""
    path = Path(tempfile.gettempdir()) / "telecorder-monado-remote-4242.lock"
    with path.open("a") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"port 4242 stayed in use by another test (lock {path})") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
