"""The layout contract, in one place: tensors channel-first in memory, arrays channel-last on disk.

In memory (torch, and numpy arrays handed between modules) images are ``(..., C, H, W)``: frames ``(N, 3, H, W)``
float in [0, 1], flows ``(N, 2, H, W)`` in pixels. On disk (video frames, ``flow.npz``, the synthetic set's
``.npy`` files, OpenCV) they are ``(..., H, W, C)``: frames ``(H, W, 3)`` uint8, flows ``(T-1, H, W, 2)``.
Code converts between the two only through these functions.
"""

from __future__ import annotations

import numpy as np
import torch


def frame_to_tensor(frame: np.ndarray) -> torch.Tensor:
    """A uint8 ``(H, W, 3)`` frame -> ``(3, H, W)`` float32 in [0, 1] (a copy: frames may be read-only)."""
    return torch.tensor(frame, dtype=torch.float32).permute(2, 0, 1) / 255.0


def frame_to_uint8_tensor(frame: np.ndarray) -> torch.Tensor:
    """A uint8 ``(H, W, 3)`` frame -> ``(3, H, W)`` uint8 (a copy): a quarter of the memory of float32, for frames
    that wait in a window; :func:`unit_float` turns them into frames in [0, 1] when they are used."""
    return torch.tensor(frame).permute(2, 0, 1)


def unit_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> float32 in [0, 1], the same values as :func:`frame_to_tensor`; float frames as they are."""
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames


def frames_to_tensor(frames: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` frames -> ``(N, 3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


def tensor_to_frames(images: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` float in [0, 1] -> uint8 ``(N, H, W, 3)`` (rounded), e.g. for OpenCV."""
    return (images.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def channels_first(array: np.ndarray) -> np.ndarray:
    """A view ``(..., C, H, W)`` of a channel-last array ``(..., H, W, C)`` (memory maps stay lazy)."""
    return np.moveaxis(array, -1, -3)


def channels_last(array: np.ndarray | torch.Tensor) -> np.ndarray:
    """A numpy view ``(..., H, W, C)`` of a channel-first array or CPU tensor ``(..., C, H, W)``."""
    return np.moveaxis(np.asarray(array), -3, -1)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """A channel-last float array ``(..., H, W, C)`` -> a float32 tensor ``(..., C, H, W)`` (shares a contiguous
    float32 array's memory)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).movedim(-1, -3)


def flows_from_disk(flows: np.ndarray) -> np.ndarray:
    """On-disk flows ``(T-1, H, W, 2)`` -> the memory layout ``(T-1, 2, H, W)``, as a view (lazy for memmaps)."""
    if np.ndim(flows) != 4 or np.shape(flows)[-1] != 2:
        raise ValueError(f"expected on-disk flows (T-1, H, W, 2), got {np.shape(flows)}")
    return channels_first(flows)


def flows_to_disk(flows: np.ndarray | torch.Tensor) -> np.ndarray:
    """Flows ``(N, 2, H, W)`` (array or CPU tensor) -> the on-disk layout ``(N, H, W, 2)``, as a view."""
    if np.ndim(flows) != 4 or np.shape(flows)[1] != 2:
        raise ValueError(f"expected flows (N, 2, H, W), got {tuple(np.shape(flows))}")
    return channels_last(flows)
