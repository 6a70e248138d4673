"""Encoding of camera frames for storage: RGB in memory, standard JPEG/PNG on disk.

OpenCV's codecs assume BGR channel order. Frames are RGB everywhere in telecorder,
so they are swapped on the way in and out; the stored bytes are ordinary images that
any decoder shows with the right colours (unlike ACT's HDF5 files, whose JPEG rows
hold RGB data encoded as if it were BGR).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import DatasetError


def encode_image(rgb: np.ndarray, encoding: str = "jpeg", quality: int = 90) -> np.ndarray:
    """Encode an RGB uint8 (H, W, 3) frame; returns the file bytes as a uint8 array."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, (cv2.IMWRITE_JPEG_QUALITY, int(quality)))
    elif encoding == "png":
        # Level 1: PNG is chosen for losslessness, not size; higher levels cost 3-5x the time.
        ok, buf = cv2.imencode(".png", bgr, (cv2.IMWRITE_PNG_COMPRESSION, 1))
    else:
        raise ValueError(f"unknown image encoding {encoding!r} (use 'jpeg' or 'png')")
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} {rgb.dtype} frame as {encoding}")
    return buf.reshape(-1)


def decode_image(data: np.ndarray | bytes, where: str = "frame") -> np.ndarray:
    """Decode stored JPEG/PNG bytes into an RGB uint8 (H, W, 3) array."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise DatasetError(f"{where}: stored image bytes cannot be decoded (corrupt or empty)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
