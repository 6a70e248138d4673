"""Stored frames to model input, ``(3, h, w)`` uint8 RGB, with as few passes over the pixels as possible.

A JPEG wanted much smaller than it is stored is decoded at 1/2, 1/4 or 1/8 scale inside
libjpeg(-turbo) (DCT scaling: ``cv2.IMREAD_REDUCED_COLOR_*``), which skips most of the
inverse DCT and colour work, then resized to the exact size: bilinear for the last step of
less than 2x, ``INTER_AREA`` otherwise (as frames decoded at full size always are). The scale
chosen never goes below the requested size, so the final resize only shrinks (see
:func:`reduced_flag` for which scale). Measured on
640x480 frames wanted at 224x224: 0.73 + 0.08 ms instead of 1.86 + 1.31 ms, mean absolute
difference 1.3 levels from full decode + ``INTER_AREA``. Channel reordering (OpenCV decodes BGR) and the HWC -> CHW
transpose happen in one ``cv2.split`` into the output planes.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..datasets.images import check_header
from ..errors import DatasetError

_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
_JPEG_MAGIC = b"\xff\xd8"


def reduced_flag(stored_hw: tuple[int, int] | None, out_hw: tuple[int, int] | None) -> int:
    """The ``cv2.imdecode`` flag for a JPEG of ``stored_hw`` wanted at ``out_hw``.

    Half scale is taken whenever it still covers the output: libjpeg computes it from 4x4 DCT
    coefficients, close to a true 2x downscale. Quarter and eighth scale keep only 2x2 and 1x1
    coefficients (a box filter on 8x8 blocks), which alias; they are taken only when at least
    twice the output size remains, so that ``INTER_AREA`` smooths what they leave. (Measured on
    640x480 noise texture against full decode + ``INTER_AREA``: mean difference 1.9 levels at
    224x224, 2.3 at 60x50; eighth scale straight to 60x50 would be 6.6.) libjpeg rounds scaled
    sizes up, so 1/f of a dimension is ``ceil(d / f)``.
    """
    if stored_hw is None or out_hw is None:
        return cv2.IMREAD_COLOR
    (sh, sw), (h, w) = stored_hw, out_hw
    for f, flag in _REDUCED:
        margin = 1 if f == 2 else 2
        if -(-sh // f) >= margin * h and -(-sw // f) >= margin * w:
            return flag
    return cv2.IMREAD_COLOR


def _split_writes_in_place() -> bool:
    # cv2.split fills the given planes when their shape and dtype fit; checked once, because a
    # binding that returned fresh arrays instead would leave the output untouched.
    src = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    out = np.zeros((3, 2, 2), np.uint8)
    cv2.split(src, [out[0], out[1], out[2]])
    return bool(np.array_equal(out, src.transpose(2, 0, 1)))


_SPLIT_IN_PLACE = _split_writes_in_place()


def hwc_to_chw(img: np.ndarray, out: np.ndarray | None = None, *, bgr: bool = False) -> np.ndarray:
    """``(H, W, 3)`` -> ``(3, H, W)``; ``bgr=True`` also swaps the channels to RGB."""
    h, w = img.shape[:2]
    if out is None:
        out = np.empty((3, h, w), np.uint8)
    planes = [out[2], out[1], out[0]] if bgr else [out[0], out[1], out[2]]
    if _SPLIT_IN_PLACE and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3:
        cv2.split(img, planes)
    else:
        src = img[..., ::-1] if bgr else img
        np.copyto(out, src.transpose(2, 0, 1))
    return out


def shrink(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``img`` at ``size`` for frames decoded in full (video): halved by ``INTER_AREA`` (2x2 means,
    fast at an integer factor) while twice the size remains, then bilinear for the rest, like a
    half-scale JPEG decode. At 640x480 -> 224x224: 0.3 ms instead of 1.3 ms for ``INTER_AREA``."""
    if size is None:
        return img
    h, w = int(size[0]), int(size[1])
    while img.shape[0] >= 2 * h and img.shape[1] >= 2 * w:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if tuple(img.shape[:2]) == (h, w):
        return img
    if img.shape[0] < h or img.shape[1] < w:
        return resize_to(img, size)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def resize_to(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``img`` at ``size`` (``(height, width)``) with ``INTER_AREA``; unchanged when it is already."""
    if size is None or tuple(img.shape[:2]) == tuple(size):
        return img
    return cv2.resize(img, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA)


def decode_chw(
    data: np.ndarray | bytes | memoryview,
    size: tuple[int, int] | None,
    *,
    stored_hw: tuple[int, int] | None = None,
    where: str = "frame",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Stored JPEG/PNG bytes as a ``(3, h, w)`` uint8 RGB model input.

    ``size`` is ``(height, width)`` (None: as stored); ``stored_hw`` is the stored size when
    known (from the dataset's features), which enables reduced-size JPEG decoding; a frame
    whose header declares another size is refused undecoded (else the general pixel limit).
    """
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    check_header(buf, where, stored_hw)  # the declared size, before libjpeg allocates it
    flag = cv2.IMREAD_COLOR
    if size is not None and buf.size > 2 and buf[:2].tobytes() == _JPEG_MAGIC:
        flag = reduced_flag(stored_hw, size)
    img = cv2.imdecode(buf, flag) if buf.size else None
    if img is None:
        raise DatasetError(f"{where}: stored image bytes cannot be decoded (corrupt or empty)")
    # DCT scaling already averaged blocks of pixels; what is left is less than 2x, where bilinear
    # reads every source pixel and costs a seventh of INTER_AREA at a fractional scale.
    if (flag != cv2.IMREAD_COLOR and size is not None and tuple(img.shape[:2]) != tuple(size)
            and size[0] * 2 >= img.shape[0] and size[1] * 2 >= img.shape[1]):
        img = cv2.resize(img, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return hwc_to_chw(resize_to(img, size), out, bgr=True)
