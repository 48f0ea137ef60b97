"""OpenCV's DIS optical flow (Kroeger et al., ECCV 2016): CPU, no weights, a fast baseline."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from bufferanytime.io.arrays import channels_first, tensor_to_frames


def _to_gray_u8(images: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) RGB in [0, 1] -> (N,H,W) uint8 luma."""
    return np.stack([cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY) for im in tensor_to_frames(images)])


class DISFlow:
    """``(src, dst) -> flow``: DIS at OpenCV's MEDIUM preset on grayscale uint8, pair by pair.

    ``src``/``dst`` are ``(N, 3, H, W)`` RGB in [0, 1]; the flow is ``(N, 2, H, W)`` float32 in pixels on the
    input's device, with ``src(p)`` matching ``dst(p + flow(p))`` (OpenCV's own convention).
    """

    name = "dis"

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> None:
        self.preset = preset

    def __call__(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        if src.shape != dst.shape or src.ndim != 4 or src.shape[1] != 3:
            raise ValueError(f"expected two (N,3,H,W) images of equal shape, got {src.shape} and {dst.shape}")
        dis = cv2.DISOpticalFlow_create(self.preset)
        flows = [dis.calc(a, b, None) for a, b in zip(_to_gray_u8(src), _to_gray_u8(dst), strict=True)]
        return torch.from_numpy(np.ascontiguousarray(channels_first(np.stack(flows)))).to(src.device)
