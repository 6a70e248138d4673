"""The ALOHA / ACT file layout: one ``episode_<i>.hdf5`` per demo, as ACT's recording scripts write them.

::

    /observations/qpos           (T, D)        joint positions (ALOHA: grippers normalized 0 = closed, 1 = open)
    /observations/qvel           (T, D)        joint velocities
    /observations/effort         (T, D)        servo effort (real robot only)
    /observations/images/<cam>   (T, H, W, 3)  uint8 RGB, or (T, L) uint8 JPEG rows padded with zeros
    /action                      (T, A)        joint position targets
    /compress_len                (n_cams, T)   byte length of each JPEG row (compressed files only)
    attributes on / : sim (bool), compress (bool), language_instruction (verbatim), task_id ("" for none)

Compressed files follow aloha's ``record_episodes.py`` exactly, including its quirk: the RGB
frame is handed to ``cv2.imencode`` as if it were BGR, so the JPEG holds red where a viewer
expects blue, and ACT's loader, which decodes without converting, gets RGB back. We write and
read them the same way so that ACT trains on the colours it would have recorded.

What ACT has no place for stays where ACT does not look: per-step timing and extra features
in ``/telecorder/...`` inside each file, and the schema (fps, names, units, robot) and per-episode
metadata (task, success, ...) in ``telecorder_meta.json`` next to the files (see :mod:`..hdf5_common`).

This module names the places in a file, shared by :mod:`.reader` and :mod:`.writer`.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import h5py
import numpy as np

from ...datasets.images import check_header
from ..base import ConversionError
from ..hdf5_common import EXTRA_DATA, EXTRAS

ALOHA_FPS = 50.0  # ALOHA's control loop and ACT's sim both step every DT = 0.02 s
DEFAULT_JPEG_QUALITY = 50  # aloha's record_episodes.py
IMAGES = "observations/images"
COMPRESS_LEN = "compress_len"

# Where our features live in an ACT file; anything else goes by the rules in ``feature_location``.
STANDARD = {
    "observation.state": "observations/qpos",
    "observation.velocity": "observations/qvel",
    "observation.effort": "observations/effort",
    "action": "action",
}
STANDARD_NAMES = {loc: name for name, loc in STANDARD.items()}
_RESERVED_ROOT = {"observations", "action", COMPRESS_LEN, "telecorder"}

# File attributes of an episode fitted to --episode-length: its recorded length and padded/cut/unchanged.
ORIGINAL_LENGTH_ATTR = "telecorder_original_length"
LENGTH_FIT_ATTR = "telecorder_length_fit"

IS_PAD = "is_pad"  # under EXTRAS: which steps are --episode-length padding

_EPISODE_FILE = re.compile(r"^episode_(\d+)\.hdf5$")

# ACT's ALOHA layout: 7 values per arm, left arm first (constants.py STATE_NAMES).
_ARM = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
ALOHA_JOINT_NAMES = tuple(f"{side}_{j}" for side in ("left", "right") for j in _ARM)
ALOHA_UNITS = {
    "observation.state": "rad; grippers normalized 0 = closed, 1 = open",
    "observation.velocity": "rad/s; grippers in normalized units per second",
    "observation.effort": "servo effort as reported by the driver",
    "action": "absolute joint position targets, rad; grippers normalized 0 = closed, 1 = open",
}


def feature_location(name: str) -> str:
    """Where a numeric feature is stored in an ACT episode file (a path without leading slash)."""
    if name in STANDARD:
        return STANDARD[name]
    head, _, rest = name.partition(".")
    if head == "observation" and rest and "." not in rest and rest not in ("qpos", "qvel", "effort", "images"):
        return f"observations/{rest}"
    if "." not in name and name not in _RESERVED_ROOT:
        return name  # e.g. mobile ALOHA's base_action, at the root where ACT++ looks for it
    return f"{EXTRAS}/{EXTRA_DATA}/{name.replace('.', '/')}"


def episode_files(folder: Path) -> dict[int, Path]:
    """The ``episode_<i>.hdf5`` files in ``folder`` by their number, in order."""
    out = {}
    for p in folder.iterdir():
        m = _EPISODE_FILE.match(p.name)
        if m and p.is_file():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def is_jpeg_rows(ds: h5py.Dataset) -> bool:
    """Whether ``ds`` holds one zero-padded JPEG byte row per step (T, L), as compressed files do."""
    return ds.dtype == np.uint8 and ds.ndim == 2


def encode_act_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """JPEG bytes as aloha's recorder makes them: the RGB array passed to OpenCV unconverted."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb), (cv2.IMWRITE_JPEG_QUALITY, int(quality)))
    if not ok:
        raise ConversionError(f"OpenCV could not encode a {rgb.shape} frame as JPEG")
    return buf.reshape(-1)


def decode_act_jpeg(row: np.ndarray, where: str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """The RGB frame of one JPEG row as ACT's loader gets it (see the quirk above)."""
    # The size the header declares is checked before decoding: a damaged header can claim 30000x30000.
    check_header(np.ascontiguousarray(row), where, expected_hw)
    # No BGR->RGB swap: the bytes hold RGB laid out as BGR, so OpenCV's "BGR" output is RGB.
    img = cv2.imdecode(np.ascontiguousarray(row), cv2.IMREAD_COLOR) if row.size else None
    if img is None:
        raise ConversionError(f"{where}: JPEG row cannot be decoded (corrupt or empty)")
    return img
