"""Per-frame regularization losses that keep the video model close to the image model (Sec. 3.1)."""

from __future__ import annotations

import torch

# Added to the scale s of the affine normalisation so that constant maps (s = 0) give 0 instead of NaN.
AFFINE_EPS = 1e-6


def normalize_affine(depth: torch.Tensor) -> torch.Tensor:
    """``(D - t) / s`` per map, with ``t = median(D)`` and ``s = mean |D - t|`` over the last two dims."""
    flat = depth.flatten(-2)
    t = flat.median(dim=-1, keepdim=True).values
    centred = flat - t
    s = centred.abs().mean(dim=-1, keepdim=True)
    return (centred / (s + AFFINE_EPS)).view_as(depth)


def affine_invariant_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Affine-invariant relative loss, Eq. (1) of the paper.

    ``pred`` and ``target`` are ``(B, H, W)`` or ``(H, W)`` depth/disparity maps; each map is normalised by its
    own offset (median) and scale (mean absolute deviation from the median), then the loss is the mean of the
    squared differences over the pixels ("L2 / HW" of the paper, read as the mean squared error), averaged over
    the batch. ``target`` (the image model's prediction) receives no gradient.
    """
    if pred.shape != target.shape or pred.ndim not in (2, 3):
        raise ValueError(f"expected equal (B,H,W) or (H,W) shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    diff = normalize_affine(pred) - normalize_affine(target.detach().to(pred.dtype))
    return diff.square().mean()


def latent_l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2 loss between latent maps, Eq. (2) of the paper: mean of squared differences over all elements.

    Shapes are any equal shapes, e.g. ``(B, C, h, w)``; ``target`` (the image model's latent) gets no gradient.
    """
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    return (pred - target.detach().to(pred.dtype)).square().mean()
