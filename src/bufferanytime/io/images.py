"""Image files to arrays: the one reader of RGB frames and the one reader of 16-bit depth PNGs.

Every image the package reads (video frames given as image folders, training clips, benchmark frames, synthetic
frames, texture photos) goes through :func:`read_rgb`: 8- or 16-bit PNG, JPEG, TIFF, ... to ``(H, W, 3)`` uint8
RGB, 16-bit values scaled to 8 bits (``round(v / 257)``), not clipped. A file that cannot be read is one
:class:`~bufferanytime.errors.InputError` naming it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from bufferanytime.errors import InputError

MAX_FRAME_PIXELS = 1 << 27  # 134 M pixels (e.g. 16384x8192): larger headers are refused before decoding
UINT16_TO_UINT8 = 257.0  # 65535 / 255: maps 16-bit values onto 8 bits with the same [0, 1] meaning
INVALID_DEPTH = -1.0  # what DepthCrafter's benchmark writes where a 16-bit depth PNG holds 0


def open_image(path: str | Path, what: str = "image") -> Image.Image:
    """PIL's lazy open (header only), with its size limits turned into one-line errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image header claims more than the limit of {MAX_FRAME_PIXELS:,} pixels") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable {what} ({type(exc).__name__})") from exc


def _is_16_bit(img: Image.Image) -> bool:
    """16-bit grey (mode I;16*) or 16-bit RGB, which PIL opens as 8-bit RGB (its tiles' raw mode says 16)."""
    raw_modes = " ".join(str(tile.args) for tile in img.tile)
    return img.mode.startswith("I;16") or ";16" in raw_modes


def _read_16_bit(path: Path) -> np.ndarray:
    """A 16-bit grey or colour image as uint8 RGB, each value scaled by 255/65535 and rounded."""
    wide = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if wide is None or wide.dtype != np.uint16:
        raise InputError(f"{path}: cannot read this 16-bit image")
    if wide.ndim == 2:
        wide = cv2.cvtColor(wide, cv2.COLOR_GRAY2RGB)
    else:
        wide = cv2.cvtColor(wide, cv2.COLOR_BGRA2RGB if wide.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return np.round(wide / UINT16_TO_UINT8).astype(np.uint8)


def to_uint8_rgb(path: str | Path, img: Image.Image) -> np.ndarray:
    """Decode an opened image as ``(H, W, 3)`` uint8 RGB; 16-bit scaled, 32-bit refused."""
    if img.mode in ("F", "I") or img.mode.startswith("I;32"):
        raise InputError(f"{path}: {img.mode} (32-bit) images are not supported; save as 8- or 16-bit")
    if _is_16_bit(img):
        return _read_16_bit(Path(path))
    return np.asarray(img.convert("RGB"))


def read_rgb(path: str | Path, what: str = "image") -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (16-bit scaled down, not clipped); one InputError if unreadable."""
    try:
        with open_image(path, what) as img:
            return to_uint8_rgb(path, img)
    except (UnidentifiedImageError, OSError) as exc:  # truncated or corrupt data, found while decoding
        raise InputError(f"{path}: not a readable {what} ({type(exc).__name__})") from exc


def read_png_depth(path: str | Path, scale: float, zero_invalid: bool = True) -> np.ndarray:
    """A 16-bit depth PNG as float64 metres: ``png / scale``, with 0 -> -1 (invalid) when ``zero_invalid``.

    Read with all 16 bits (KITTI depth is ``png / 256`` and goes up to 255.99 m)."""
    what = "depth PNG"
    try:
        with open_image(path, what) as img:
            raw = np.asarray(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable {what} ({type(exc).__name__})") from exc
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32, np.uint32):
        raise InputError(f"{path}: expected a single-channel 16-bit depth PNG, got {raw.dtype} {raw.shape}")
    depth = raw.astype(np.float64) / scale
    if zero_invalid:
        depth[raw == 0] = INVALID_DEPTH
    return depth
