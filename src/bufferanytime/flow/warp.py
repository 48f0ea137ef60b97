"""Backward warping with optical flow, and the forward-backward (cycle) consistency check.

Conventions (those of the package): flow ``(N, 2, H, W)`` in pixels, channel 0 = x (right), 1 = y (down);
a flow from ``src`` to ``dst`` says that ``src(p)`` matches ``dst(p + flow(p))``. Pixel ``(i, j)`` covers
``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``; ``grid_sample`` with ``align_corners=False``
uses exactly this convention, so the centre of pixel ``(i, j)`` moved by ``flow`` is sampled at normalised
coordinate ``2 * (j + 0.5 + flow_x) / W - 1`` (and likewise for y).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bufferanytime.constants import CYCLE_TAU


def _sample_grid(flow: torch.Tensor) -> torch.Tensor:
    """Normalised ``grid_sample`` coordinates (N,H,W,2) of the points ``p + flow(p)``."""
    _, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype) + 0.5
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype) + 0.5
    x = (xs.view(1, 1, w) + flow[:, 0]) * (2.0 / w) - 1.0
    y = (ys.view(1, h, 1) + flow[:, 1]) * (2.0 / h) - 1.0
    return torch.stack([x, y], dim=-1)


def warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinear backward warping: ``out(p) = x(p + flow(p))``.

    With ``flow`` the flow from frame k to frame k+1, ``warp(x_{k+1}, flow)`` is ``x_{k+1}`` brought onto the
    pixel grid of frame k. ``x`` is ``(N, C, H, W)``, ``flow`` ``(N, 2, H, W)``. Samples outside the image take
    the nearest edge value (``padding_mode="border"``) or 0 (``"zeros"``); either way they are meaningless, and
    losses should drop them with :func:`inside_mask` (which :func:`cycle_mask` includes by default).
    Differentiable with respect to ``x`` and ``flow``.
    """
    if x.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"expected x (N,C,H,W) and flow (N,2,H,W), got {tuple(x.shape)} and {tuple(flow.shape)}")
    if x.shape[0] != flow.shape[0] or x.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"x {tuple(x.shape)} and flow {tuple(flow.shape)} differ in batch or size")
    grid = _sample_grid(flow.to(x.dtype))
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def inside_mask(flow: torch.Tensor) -> torch.Tensor:
    """Bool ``(N, H, W)``: True where ``p + flow(p)`` can be interpolated from pixels of the image.

    That is, the point lies within the hull of the pixel centres, ``[0.5, W - 0.5] x [0.5, H - 0.5]``, so all
    bilinear taps are real pixels; in the outer half-pixel band :func:`warp` would extrapolate from the border.
    """
    _, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype) + 0.5
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype) + 0.5
    x = xs.view(1, 1, w) + flow[:, 0]
    y = ys.view(1, h, 1) + flow[:, 1]
    return (x >= 0.5) & (x <= w - 0.5) & (y >= 0.5) & (y <= h - 0.5)


@torch.no_grad()
def cycle_error(flow_fwd: torch.Tensor, flow_bwd: torch.Tensor) -> torch.Tensor:
    """``|| flow_fwd(p) + flow_bwd(p + flow_fwd(p)) ||_2`` for every pixel p of flow_fwd's source frame, (N,H,W)."""
    return (flow_fwd + warp(flow_bwd, flow_fwd)).norm(dim=1)


@torch.no_grad()
def cycle_mask(
    flow_fwd: torch.Tensor, flow_bwd: torch.Tensor, tau: float = CYCLE_TAU, require_inside: bool = True
) -> torch.Tensor:
    """Forward-backward consistency mask (Eq. 6 / Alg. 2 of the paper), bool ``(N, H, W)``.

    ``flow_fwd`` goes from frame a to frame b and ``flow_bwd`` from b back to a. A pixel p of frame a (the mask
    lives on the pixel grid of ``flow_fwd``'s source frame) is True where following the forward flow and then
    the backward flow returns within ``tau`` pixels of p: ``|| flow_fwd(p) + flow_bwd(p + flow_fwd(p)) || < tau``
    (strict, as in Alg. 2). With ``require_inside`` the point ``p + flow_fwd(p)`` must also fall inside frame b,
    since ``flow_bwd`` is undefined outside it. For the mask of the other direction swap the arguments.
    """
    if flow_fwd.shape != flow_bwd.shape:
        raise ValueError(f"flow shapes differ: {tuple(flow_fwd.shape)} vs {tuple(flow_bwd.shape)}")
    mask = cycle_error(flow_fwd, flow_bwd) < tau
    if require_inside:
        mask &= inside_mask(flow_fwd)
    return mask
