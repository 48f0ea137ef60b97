"""Flow -> colour image with the Middlebury colour wheel (Baker et al., ICCV 2007).

Hue encodes the direction, saturation the magnitude relative to ``max_magnitude`` (white = no motion).
For a video use one ``max_magnitude`` for all frames (e.g. the largest magnitude in the clip), so that colours
are comparable over time. Beyond ``max_magnitude`` colours are darkened, as in the reference code.
"""

from __future__ import annotations

import numpy as np

# Number of hues between the six primaries of the wheel: red-yellow, yellow-green, green-cyan, cyan-blue,
# blue-magenta, magenta-red (chosen by Baker et al. for perceptual uniformity).
_SEGMENTS = (15, 6, 4, 11, 13, 6)


def make_colorwheel() -> np.ndarray:
    """The 55 x 3 RGB wheel in [0, 1], starting at red and going through yellow, green, cyan, blue, magenta."""
    corners = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1], [1, 0, 0]], float)
    rows = []
    for i, n in enumerate(_SEGMENTS):
        t = np.floor(255 * np.arange(n) / n)[:, None] / 255
        rows.append(corners[i] * (1 - t) + corners[i + 1] * t)
    return np.concatenate(rows)


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """``(H, W, 2)`` flow in pixels -> ``(H, W, 3)`` uint8 RGB. ``max_magnitude`` defaults to this frame's max."""
    flow = np.nan_to_num(np.asarray(flow, dtype=np.float64))
    u, v = flow[..., 0], flow[..., 1]
    rad = np.hypot(u, v)
    scale = float(rad.max()) if max_magnitude is None else float(max_magnitude)
    rad = rad / (scale + 1e-5)
    wheel = make_colorwheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % n
    f = (fk - k0)[..., None]
    col = (1 - f) * wheel[k0] + f * wheel[k1]
    small = (rad <= 1)[..., None]
    col = np.where(small, 1 - rad[..., None] * (1 - col), col * 0.75)
    return np.floor(255 * col).astype(np.uint8)
