"""Argument types and checks shared by the sub-commands.

The ``*_int`` and ``*_float`` functions are argparse types: argparse turns their errors into one-line usage
errors (exit 2). ``nan`` and ``inf`` parse as floats in Python, so every float option goes through one of the
float types here. :func:`check_device` raises :class:`InputError` for a device this machine does not have, and
:func:`check_outside_input` for an output folder inside the input folder.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bufferanytime.io.video import VideoSource

# Upper limits of the size options, said in their --help and checked when the options are parsed (one line, before
# any work), so that a typo such as --short-side 100000 is refused instead of allocating tens of GB:
#: --short-side, --max-res, export --size: 4096 px is 8x Depth Anything V2's own short side (518) and twice its
#: long side (2072); a ViT's attention at that size already needs tens of GB.
MAX_INFERENCE_SIDE = 4096
#: --window, --overlap, --decode-chunk: frames held at once (the paper's longest clip is 110 frames).
MAX_WINDOW = 1024
#: export --frames: the length of the example window traced at export (T stays dynamic in the ONNX file).
MAX_EXPORT_FRAMES = 64


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def int_at_most(limit: int, low: int | None = 1, name: str = "") -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` (None: checked later, by the command) to ``limit``, a documented
    limit (``name``, the constant, is said in the message)."""

    def parse(text: str) -> int:
        value = _int(text)
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit}{f' ({name})' if name else ''}, got {value}")
        return value

    parse.__name__ = f"integer up to {limit}"  # how argparse names the type in its own messages
    return parse


def finite_float(text: str) -> float:
    """A float that is neither NaN nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0 (rates, learning rates, frame rates)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite float >= 0 (amplitudes, noise levels)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def check_device(name: str) -> str:
    """``name`` if this machine has that torch device (``auto`` always); InputError otherwise, in one line."""
    from bufferanytime.inference.pipeline import resolve_device

    resolve_device(name)
    return name


def check_outside_input(source: VideoSource, target: Path) -> Path:
    """``target`` (the outputs of ``source``); InputError when it would lie inside a folder input (the outputs
    would mix with the frames)."""
    from bufferanytime.errors import InputError

    if source.kind == "folder":
        folder, resolved = source.path.resolve(), target.resolve()
        if resolved == folder or folder in resolved.parents:
            raise InputError(f"{source.path}: its outputs would go into the input folder itself ({target}); "
                             "choose an -o outside it")
    return target
