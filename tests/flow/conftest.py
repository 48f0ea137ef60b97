"""Shared helpers for the flow tests: the real RAFT-small checkpoint (optional) and textured test images."""

from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
RAFT_WEIGHTS = SHARED / "weights" / "raft-small.pth"


@pytest.fixture
def raft_weights() -> Path:
    if not RAFT_WEIGHTS.is_file():
        pytest.skip(f"RAFT-small checkpoint not found at {RAFT_WEIGHTS}")
    return RAFT_WEIGHTS


def textured_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth multi-scale colour texture, (H, W, 3) float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for scale, weight in ((4, 0.5), (8, 0.3), (16, 0.2)):
        noise = rng.random((h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        img += (
            weight
            * cv2.resize(noise, (w + 2 * scale, h + 2 * scale), interpolation=cv2.INTER_CUBIC)[
                scale : scale + h, scale : scale + w
            ]
        )
    return np.clip(img, 0, 1)


def make_shifted_pair(h: int, w: int, dx: float, dy: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(src, dst)`` with ``dst(p + (dx, dy)) = src(p)``, i.e. true flow src -> dst is ``(dx, dy)`` everywhere."""
    big = textured_image(h + 32, w + 32, seed)
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(big, m, (w + 32, h + 32), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return big[16 : 16 + h, 16 : 16 + w], np.clip(moved[16 : 16 + h, 16 : 16 + w], 0, 1)


@pytest.fixture
def shifted_pair():
    return make_shifted_pair


@pytest.fixture(autouse=True)
def _tiny_tensors_one_thread(one_torch_thread):
    """Every test here runs on tiny tensors: one torch thread (fixture in tests/conftest.py)."""
