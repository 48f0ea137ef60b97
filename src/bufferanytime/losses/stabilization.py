"""Optical-flow based temporal stabilization loss, Sec. 3.2 and Algorithm 2 of the paper.

Warping semantics (those of :func:`bufferanytime.flow.warp`): ``flow_fwd[k]`` goes from frame k to frame k+1,
``flow_bwd[k]`` from frame k+1 to frame k, and ``warp(G[k+1], flow_fwd[k])`` is ``G[k+1]`` brought onto the pixel
grid of frame k. Algorithm 2's structure is kept with these semantics:

- forward term, on the grid of frame k (k = 1..K-1): ``|warp(G[k+1], O_fwd[k]) - G[k]|`` masked by the cycle
  mask ``cycle_mask(O_fwd[k], O_bwd[k])`` (which lives on frame k and also drops points whose target falls
  outside frame k+1) and by the edge mask of frame k;
- backward term, on the grid of frame k+1: ``|warp(G[k], O_bwd[k]) - G[k+1]|`` masked by
  ``cycle_mask(O_bwd[k], O_fwd[k])`` and the edge mask of frame k+1;
- each term is the L1 norm (summed over channels and pixels) divided by ``(K-1) H W``; the loss is the mean of
  the two terms (and of the batch).

Masks carry no gradient: flows are treated as constants, and the edge mask comes from OpenCV's Canny on a
detached copy of the predicted buffers.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

from bufferanytime.constants import CYCLE_TAU, EDGE_MANHATTAN_RADIUS
from bufferanytime.flow.warp import cycle_mask, inside_mask, warp
from bufferanytime.io.arrays import channels_last

# The paper gives no Canny parameters. Each frame is mapped to uint8 by a robust per-frame normalisation
# (these percentiles of all its values, over all channels, go to 0 and 255, values beyond are clipped), then
# OpenCV's Canny runs with these hysteresis thresholds (3x3 Sobel, L1 gradient norm). The Sobel response is about
# 4x a one-pixel step and 8x a ramp's slope (uint8 units per pixel), so a step of ~10 % of the frame's range
# passes the high threshold, while only ramps steeper than ~5 % of the range per pixel reach the low one.
EDGE_NORM_PERCENTILES = (2.0, 98.0)
CANNY_LOW = 50
CANNY_HIGH = 100
# A frame whose robust range is below this (in buffer units) is treated as flat: no edges.
EDGE_MIN_RANGE = 1e-6
# Warped validity below this (bilinear blend of 0/1 validity) counts as invalid.
_VALID_WARP_MIN = 1.0 - 1e-3


def diamond_kernel(radius: int = EDGE_MANHATTAN_RADIUS) -> np.ndarray:
    """uint8 ``(2r+1, 2r+1)`` structuring element of the offsets with Manhattan norm ``<= radius``."""
    offsets = np.abs(np.arange(-radius, radius + 1))
    return (offsets[:, None] + offsets[None, :] <= radius).astype(np.uint8)


@functools.cache
def _dilation_kernel(radius: int) -> np.ndarray:
    """:func:`diamond_kernel`, built once per radius (read-only: shared by every call)."""
    kernel = diamond_kernel(radius)
    kernel.flags.writeable = False
    return kernel


def canny_edges(frame: np.ndarray) -> np.ndarray:
    """Canny edges of one ``(C, H, W)`` float buffer after robust uint8 normalisation, bool ``(H, W)``.

    Three-channel buffers (normals) go through OpenCV's multi-channel Canny (gradient of the strongest channel);
    other channel counts are handled channel by channel and the edges OR-ed.
    """
    frame = np.nan_to_num(frame.astype(np.float32))
    lo, hi = np.percentile(frame, EDGE_NORM_PERCENTILES)
    if hi - lo < EDGE_MIN_RANGE:
        return np.zeros(frame.shape[-2:], dtype=bool)
    u8 = np.clip((frame - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)
    if u8.shape[0] == 3:
        return cv2.Canny(np.ascontiguousarray(channels_last(u8)), CANNY_LOW, CANNY_HIGH) > 0
    edges = np.zeros(frame.shape[-2:], dtype=bool)
    for channel in u8:
        edges |= cv2.Canny(np.ascontiguousarray(channel), CANNY_LOW, CANNY_HIGH) > 0
    return edges


@torch.no_grad()
def edge_keep_mask(buffers: torch.Tensor, radius: int = EDGE_MANHATTAN_RADIUS) -> torch.Tensor:
    """Edge mask ``M_edge`` of Alg. 2: True where a pixel is farther than ``radius`` (Manhattan) from every edge.

    ``buffers`` is ``(..., C, H, W)``; the result is bool ``(..., H, W)`` on the same device. The paper's text says
    "Manhattan distance smaller than 3" and Alg. 2 "Dilate(kernel_size=3)"; we mask distances ``<= radius``
    (a diamond of radius ``EDGE_MANHATTAN_RADIUS`` = 3), the more conservative reading.
    """
    lead, (c, h, w) = buffers.shape[:-3], buffers.shape[-3:]
    frames = buffers.detach().float().reshape(-1, c, h, w).cpu().numpy()
    kernel = _dilation_kernel(radius)
    keep = np.empty((frames.shape[0], h, w), dtype=bool)
    for i, frame in enumerate(frames):
        near = cv2.dilate(canny_edges(frame).astype(np.uint8), kernel)
        keep[i] = near == 0
    return torch.from_numpy(keep).reshape(*lead, h, w).to(buffers.device)


def _with_batch(x: torch.Tensor | None, ndim: int) -> torch.Tensor | None:
    return x if x is None or x.ndim == ndim else x.unsqueeze(0)


def stabilization_loss(
    buffers: torch.Tensor,
    flow_fwd: torch.Tensor,
    flow_bwd: torch.Tensor,
    *,
    tau: float = CYCLE_TAU,
    edge_mask: bool | torch.Tensor = True,
    valid: torch.Tensor | None = None,
    cycle_fwd: torch.Tensor | None = None,
    cycle_bwd: torch.Tensor | None = None,
) -> torch.Tensor:
    """Temporal stabilization loss of Algorithm 2 (see the module docstring for the exact semantics).

    Args:
        buffers: predicted geometry ``(B, K, C, H, W)`` or ``(K, C, H, W)``, e.g. C = 1 depth or C = 3 normals.
        flow_fwd: flows frame k -> k+1, ``(B, K-1, 2, H, W)`` or ``(K-1, 2, H, W)``, pixels.
        flow_bwd: flows frame k+1 -> k, same shape.
        tau: cycle-consistency threshold in pixels.
        edge_mask: True to mask pixels near Canny edges of ``buffers`` (:func:`edge_keep_mask`), False for no edge
            mask, or a precomputed bool keep-mask ``(B, K, H, W)`` (True = use the pixel).
        valid: optional bool ``(B, K, H, W)`` of usable pixels per frame (e.g. not padding); a term is kept only
            where its own pixel is valid and the pixel it samples from the other frame is valid too.
        cycle_fwd: optional precomputed ``cycle_mask(flow_fwd, flow_bwd, tau)``, bool ``(B, K-1, H, W)`` on the
            grids of frames 1..K-1 (e.g. cached with the flows).
        cycle_bwd: optional precomputed ``cycle_mask(flow_bwd, flow_fwd, tau)`` on the grids of frames 2..K.

    Returns:
        A scalar tensor, differentiable with respect to ``buffers``.
    """
    buffers = _with_batch(buffers, 5)
    flow_fwd, flow_bwd = _with_batch(flow_fwd, 5), _with_batch(flow_bwd, 5)
    b, k, c, h, w = buffers.shape
    expected = (b, k - 1, 2, h, w)
    if tuple(flow_fwd.shape) != expected or tuple(flow_bwd.shape) != expected:
        raise ValueError(
            f"flows must be {expected} for buffers {tuple(buffers.shape)}, "
            f"got {tuple(flow_fwd.shape)} and {tuple(flow_bwd.shape)}"
        )
    if k < 2:
        return buffers.sum() * 0.0
    n = b * (k - 1)
    ff = flow_fwd.detach().to(buffers.dtype).reshape(n, 2, h, w)
    fb = flow_bwd.detach().to(buffers.dtype).reshape(n, 2, h, w)
    with torch.no_grad():
        m_fwd, m_bwd = _cycle_masks(ff, fb, tau, cycle_fwd, cycle_bwd, (b, k, h, w))
        m_fwd, m_bwd = _edge_masks(m_fwd, m_bwd, buffers, edge_mask)
        if valid is not None:
            m_fwd, m_bwd = valid_pair_masks(m_fwd, m_bwd, _with_batch(valid, 4), ff, fb, buffers.dtype)
    prev = buffers[:, :-1].reshape(n, c, h, w)
    nxt = buffers[:, 1:].reshape(n, c, h, w)
    err_fwd = (warp(nxt, ff) - prev).abs() * m_fwd.reshape(n, 1, h, w)  # grid of frame k
    err_bwd = (warp(prev, fb) - nxt).abs() * m_bwd.reshape(n, 1, h, w)  # grid of frame k+1
    norm = b * (k - 1) * h * w  # (K-1) H W per clip, averaged over the batch
    return 0.5 * (err_fwd.sum() + err_bwd.sum()) / norm


def _cycle_masks(ff: torch.Tensor, fb: torch.Tensor, tau: float, cycle_fwd: torch.Tensor | None,
                 cycle_bwd: torch.Tensor | None, shape: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward and backward cycle masks ``(B, K-1, H, W)`` of flattened flows ``(B*(K-1), 2, H, W)``: computed,
    or the given (cached) ones restricted to points that land inside the other frame."""
    b, k, h, w = shape
    n = b * (k - 1)
    if cycle_fwd is None:
        m_fwd = cycle_mask(ff, fb, tau)
    else:
        m_fwd = _with_batch(cycle_fwd, 4).reshape(n, h, w).bool() & inside_mask(ff)
    if cycle_bwd is None:
        m_bwd = cycle_mask(fb, ff, tau)
    else:
        m_bwd = _with_batch(cycle_bwd, 4).reshape(n, h, w).bool() & inside_mask(fb)
    return m_fwd.view(b, k - 1, h, w), m_bwd.view(b, k - 1, h, w)


def _edge_masks(m_fwd: torch.Tensor, m_bwd: torch.Tensor, buffers: torch.Tensor,
                edge_mask: bool | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks without pixels near edges: of ``buffers`` (``edge_mask`` True), or a given keep-mask."""
    if isinstance(edge_mask, torch.Tensor):
        keep = _with_batch(edge_mask, 4).bool().to(buffers.device)
    elif edge_mask:
        keep = edge_keep_mask(buffers)
    else:
        return m_fwd, m_bwd
    return m_fwd & keep[:, :-1], m_bwd & keep[:, 1:]


def valid_pair_masks(m_fwd: torch.Tensor, m_bwd: torch.Tensor, valid: torch.Tensor, ff: torch.Tensor,
                     fb: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks ``(B, K-1, H, W)`` where a pixel is valid and so is the pixel it samples from the other frame
    (all the pixels it is interpolated from); ``valid (B, K, H, W)`` (moved to the masks' device), flattened flows
    ``(B*(K-1), 2, H, W)``."""
    b, k1, h, w = m_fwd.shape
    n = b * k1
    valid = valid.to(m_fwd.device)
    vf = valid.to(dtype)
    sampled_next = warp(vf[:, 1:].reshape(n, 1, h, w), ff, padding_mode="zeros")
    sampled_prev = warp(vf[:, :-1].reshape(n, 1, h, w), fb, padding_mode="zeros")
    m_fwd = m_fwd & valid[:, :-1].bool() & (sampled_next.view(b, k1, h, w) >= _VALID_WARP_MIN)
    m_bwd = m_bwd & valid[:, 1:].bool() & (sampled_prev.view(b, k1, h, w) >= _VALID_WARP_MIN)
    return m_fwd, m_bwd
