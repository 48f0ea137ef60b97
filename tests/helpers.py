"""Small data generators shared by tests."""

from __future__ import annotations

import cv2
import numpy as np


def moving_pattern(frames: int = 6, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random texture translating one pixel per frame: ``(T, H, W, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    base = rng.random((height // 4 + 2, (width + frames) // 4 + 2, 3))
    big = cv2.resize(base, ((width + frames) + 8, height + 8), interpolation=cv2.INTER_CUBIC)
    clip = np.stack([big[4 : 4 + height, t : t + width] for t in range(frames)])
    return (np.clip(clip, 0, 1) * 255).astype(np.uint8)
