"""Time slices (Fig. 5 and 6 of the paper): one pixel column of a video over time, as an image.

A slice of a ``(T, H, W, ...)`` video at column ``x`` is the ``(H, T, ...)`` image whose column ``t`` is column
``x`` of frame ``t``. A temporally stable prediction gives horizontal bands that follow the slice of the RGB
video; per-frame flicker shows as vertical stripes. Slices are coloured by their task (:meth:`Task.to_rgb`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np

SLICE_MIN_WIDTH = 128  # slices of short videos are widened (each frame repeated) to at least this many pixels
LABEL_HEIGHT = 18  # pixels of the caption strip above each panel
LABEL_SCALES = (0.4, 0.35, 0.3)  # OpenCV font scales tried in turn until the caption fits its panel
PANEL_GAP = 6  # pixels between panels
MARKER_RGB = (255, 0, 0)  # the sliced column, drawn on the first frame
BACKGROUND = 255


def column_index(width: int, column: float | None = None) -> int:
    """The sliced column: ``column`` is a fraction of the width (default 0.5, the centre)."""
    fraction = 0.5 if column is None else float(column)
    return min(width - 1, max(0, int(fraction * width)))


def time_slice(frames: Iterable[np.ndarray], x: int) -> np.ndarray:
    """``(H, T, ...)``: column ``x`` of every frame, side by side in time order."""
    return np.stack([np.asarray(f)[:, x] for f in frames], axis=1)


def _text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]


def _panel(image: np.ndarray, label: str, width: int | None = None) -> np.ndarray:
    if width is not None and image.shape[1] != width:
        image = cv2.resize(image, (width, image.shape[0]), interpolation=cv2.INTER_NEAREST)
    h, w = image.shape[:2]
    caption = np.full((LABEL_HEIGHT, w, 3), BACKGROUND, np.uint8)
    text, scale = label, LABEL_SCALES[0]
    for scale in LABEL_SCALES:  # shrink the font first, then cut the text
        if _text_width(text, scale) <= w - 2:
            break
    while len(text) > 3 and _text_width(text, scale) > w - 2:
        text = text[:-3] + ".."
    cv2.putText(caption, text, (1, LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([caption, image], axis=0)


def compose_slices(first_frame: np.ndarray, x: int, slices: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """One image: the first frame with the sliced column marked, then each labelled ``(H, T, 3)`` slice.

    Slices are widened by repeating each frame so that short videos stay readable.
    """
    marked = np.array(first_frame, dtype=np.uint8, copy=True)
    marked[:, x] = MARKER_RGB
    panels = [_panel(marked, "frame 0")]
    for label, image in slices:
        t = image.shape[1]
        panels.append(_panel(image, label, t * max(1, math.ceil(SLICE_MIN_WIDTH / t))))
    height = max(p.shape[0] for p in panels)
    gap = np.full((height, PANEL_GAP, 3), BACKGROUND, np.uint8)
    row = []
    for i, p in enumerate(panels):
        if p.shape[0] < height:
            p = np.concatenate([p, np.full((height - p.shape[0], p.shape[1], 3), BACKGROUND, np.uint8)])
        row += [gap, p] if i else [p]
    return np.concatenate(row, axis=1)
