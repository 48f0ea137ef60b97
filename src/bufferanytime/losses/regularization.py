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


LOG_DEPTH_EPS = 1e-6  # metres: depth is clamped to this before a logarithm


def log_depth(depth: torch.Tensor) -> torch.Tensor:
    """``log(max(depth, LOG_DEPTH_EPS))`` of metric depth (metres)."""
    return depth.clamp_min(LOG_DEPTH_EPS).log()


def log_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scale-preserving regularization for metric depth: ``mean |log pred - log target|``.

    Unlike :func:`affine_invariant_loss` it keeps the prior's metric scale (a global factor ``k`` on ``pred`` costs
    ``|log k|`` at every pixel), and it is scale-equivariant: a relative error costs the same at 1 m as at 50 m,
    so near and far pixels weigh alike. ``target`` (the metric prior's depth) receives no gradient.
    """
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    return (log_depth(pred) - log_depth(target.detach().to(pred.dtype))).abs().mean()


def silog_loss(pred: torch.Tensor, target: torch.Tensor, lam: float, valid: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al. 2014) as Depth Anything V2's metric training uses it:
    ``sqrt(mean(g^2) - lam * mean(g)^2)``, ``g = log pred - log target`` over ``valid`` pixels. ``lam < 1`` keeps a
    part ``1 - lam`` of the penalty on a global scale error, so the scale is learned."""
    g = log_depth(pred) - log_depth(target.detach().to(pred.dtype))
    if valid is not None:
        g = g[valid]
    return (g.square().mean() - lam * g.mean().square()).clamp_min(0).add(1e-12).sqrt()


def split_log_l1_loss(pred: torch.Tensor, target: torch.Tensor, scale_weight: float) -> torch.Tensor:
    """L1 in log depth split into shape and scale: ``mean |g - m| + scale_weight * |m|`` per map, with
    ``g = log pred - log target`` and ``m = median(g)`` (the map's log-scale offset), averaged over the batch.

    For the video regularization of metric depth: the shape term is scale-invariant, so the prior's per-frame
    scale flicker (a global change of its output from one frame to the next) is not imposed on the video model, and
    the scale term, weighted down, still pulls the scale of every frame towards the prior's, so that over many
    frames the video model keeps the prior's average metric scale (``scale_weight = 1`` is close to
    :func:`log_l1_loss`, which imposes each frame's scale, flicker included).
    """
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    g = (log_depth(pred) - log_depth(target.detach().to(pred.dtype))).flatten(-2)
    m = g.median(dim=-1, keepdim=True).values
    return (g - m).abs().mean() + scale_weight * m.abs().mean()
