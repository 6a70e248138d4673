"""Encoding of camera frames for storage: RGB in memory, standard JPEG/PNG on disk.

OpenCV's codecs assume BGR channel order. Frames are RGB everywhere in telecorder,
so they are swapped on the way in and out; the stored bytes are ordinary images that
any decoder shows with the right colours (unlike ACT's HDF5 files, whose JPEG rows
hold RGB data encoded as if it were BGR).
"""

from __future__ import annotations

import io
import warnings

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


# The most pixels a stored frame may declare when no feature shape says what to expect:
# an 8K frame is 33 million. OpenCV's own limit (2^30) lets a 1 KB JPEG whose header claims
# 30000x30000 allocate 2.7 GB before it finds that the data is missing.
MAX_IMAGE_PIXELS = 40_000_000

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def header_size(data: np.ndarray | bytes | memoryview) -> tuple[int, int] | None:
    """``(height, width)`` that stored image bytes declare, read from the header alone (the
    JPEG start-of-frame segment, the PNG ``IHDR`` chunk, Pillow for other formats); None when
    no size can be read (not an image, or the header is cut short)."""
    # A view, not a copy: the walk below jumps from segment header to segment header.
    b = memoryview(np.ascontiguousarray(data, dtype=np.uint8) if isinstance(data, np.ndarray) else data).cast("B")
    if b[:8] == _PNG_MAGIC:
        if len(b) < 24 or b[12:16] != b"IHDR":
            return None
        return int.from_bytes(b[20:24], "big"), int.from_bytes(b[16:20], "big")
    if b[:2] != b"\xff\xd8":
        return _other_header_size(b)
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(b[i + 2:i + 4], "big")
        if marker in _SOF:
            if length < 7 or i + 9 > len(b):
                return None
            return int.from_bytes(b[i + 5:i + 7], "big"), int.from_bytes(b[i + 7:i + 9], "big")
        if marker in (0xD9, 0xDA) or length < 2:  # end of image, or scan data before any frame header
            return None
        i += 2 + length
    return None


def _other_header_size(b: memoryview) -> tuple[int, int] | None:
    """Another format OpenCV decodes (WebP, BMP, TIFF ...): Pillow, when installed, reads its
    size from the header without decoding the pixels."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own "decompression bomb" warning: the caller decides
            with Image.open(io.BytesIO(b)) as im:
                w, h = im.size
    except Exception:  # Pillow raises many kinds on bytes it cannot parse: all mean "size unknown"
        return None
    return int(h), int(w)


def check_header(data: np.ndarray | bytes | memoryview, where: str,
                 expected_hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """The ``(height, width)`` the bytes declare, checked before anything is decoded: against
    ``expected_hw`` (the feature's shape; either orientation, as an EXIF rotation may swap
    them) when given, else against :data:`MAX_IMAGE_PIXELS`."""
    hw = header_size(data)
    if hw is None:
        raise DatasetError(f"{where}: stored image bytes cannot be decoded (corrupt or empty: no JPEG or PNG "
                           "header giving the size)")
    h, w = hw
    if h < 1 or w < 1:
        raise DatasetError(f"{where}: the stored image declares a size of {w}x{h}; it is corrupt")
    if expected_hw is not None:
        eh, ew = int(expected_hw[0]), int(expected_hw[1])
        if (h, w) not in ((eh, ew), (ew, eh)):
            raise DatasetError(f"{where}: the stored image declares {w}x{h} pixels, but the feature holds "
                               f"{ew}x{eh} frames; the frame is corrupt (not decoded)")
    elif h * w > MAX_IMAGE_PIXELS:
        raise DatasetError(f"{where}: the stored image declares {w}x{h} pixels, over the {MAX_IMAGE_PIXELS} "
                           "telecorder decodes; the frame is corrupt or not a camera frame (not decoded)")
    return hw


def decode_image(data: np.ndarray | bytes, where: str = "frame",
                 expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode stored JPEG/PNG bytes into an RGB uint8 (H, W, 3) array, once the header's size
    passes :func:`check_header`."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    check_header(buf, where, expected_hw)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise DatasetError(f"{where}: stored image bytes cannot be decoded (corrupt or empty)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
