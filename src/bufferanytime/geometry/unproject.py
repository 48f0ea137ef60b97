"""Depth to 3D points in camera coordinates (x right, y up, z towards the camera: points in front have z < 0),
normals implied by a depth map, and depth discontinuities (where unprojected points fly between surfaces).

Depth is z-depth, the distance along the optical axis (the synthetic world's definition, not the ray length):
the point of pixel (i, j) is ``z * ((x - cx) / fx, -(y - cy) / fy, -1)`` with (x, y) = (j + 0.5, i + 0.5).
Relative disparity has an unknown scale and shift; :func:`relative_depth` assumes zero shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bufferanytime.geometry.intrinsics import Intrinsics
from bufferanytime.io.outputs import strided_sample

MEDIAN_SAMPLE_PIXELS = 2_000_000  # pixels sampled evenly over a video to estimate its median depth


def pixel_rays(intrinsics: Intrinsics, height: int, width: int) -> np.ndarray:
    """``(H, W, 3)`` float64 directions through the pixel centres, scaled to a camera z of ``-1``."""
    x = np.arange(width, dtype=np.float64) + 0.5
    y = np.arange(height, dtype=np.float64) + 0.5
    rx = np.broadcast_to(((x - intrinsics.cx) / intrinsics.fx)[None, :], (height, width))
    ry = np.broadcast_to((-(y - intrinsics.cy) / intrinsics.fy)[:, None], (height, width))
    return np.stack([rx, ry, -np.ones((height, width))], axis=-1)


def unproject(depth: np.ndarray, intrinsics: Intrinsics, rays: np.ndarray | None = None) -> np.ndarray:
    """Camera-coordinate points ``(H, W, 3)`` float64 of a z-depth map ``(H, W)``; ``rays`` may be precomputed."""
    depth = np.asarray(depth, dtype=np.float64)
    rays = pixel_rays(intrinsics, *depth.shape) if rays is None else rays
    return depth[..., None] * rays


def relative_depth_scale(disparity: Sequence[np.ndarray], median_depth: float = 1.0) -> float:
    """The ``s`` for which ``s / disparity`` has median ``median_depth`` over a whole video ``(T, H, W)``.

    One scale per video (not per frame), so the point clouds keep the video's own changes of depth over time.
    """
    sample = strided_sample(disparity, MEDIAN_SAMPLE_PIXELS).astype(np.float64)
    sample = sample[np.isfinite(sample) & (sample > 0)]
    if sample.size == 0:
        return median_depth
    return float(median_depth * np.median(sample))


def relative_depth(disparity: np.ndarray, scale: float) -> np.ndarray:
    """``scale / disparity`` (zero shift assumed); NaN where the disparity is not positive."""
    disparity = np.asarray(disparity, dtype=np.float64)
    positive = disparity > 0
    return np.where(positive, scale / np.where(positive, disparity, 1.0), np.nan)


def depth_edges(depth: np.ndarray, rtol: float) -> np.ndarray:
    """Pixels whose depth differs from a 4-neighbour's by more than ``rtol`` of the nearer one, or not finite.

    ``|z - z_n| / min(z, z_n) > rtol``: invariant to the depth's scale, so the same threshold serves metric and
    relative depth. Both pixels of a jump are marked (flying pixels sit on either side).
    """
    z = np.asarray(depth, dtype=np.float64)
    bad = ~np.isfinite(z) | (z <= 0)
    zz = np.where(bad, np.nan, z)
    edge = bad.copy()
    for axis in (0, 1):
        a, b = (zz[1:], zz[:-1]) if axis == 0 else (zz[:, 1:], zz[:, :-1])
        with np.errstate(invalid="ignore"):
            jump = np.abs(a - b) / np.minimum(a, b)
        far = ~(jump <= rtol)  # NaN (an invalid neighbour) counts as a jump
        if axis == 0:
            edge[1:] |= far
            edge[:-1] |= far
        else:
            edge[:, 1:] |= far
            edge[:, :-1] |= far
    return edge


def normals_from_points(points: np.ndarray) -> np.ndarray:
    """Unit normals ``(H, W, 3)`` of a point map by central differences, facing the camera; NaN on the border.

    ``n = (P[i+1, j] - P[i-1, j]) x (P[i, j+1] - P[i, j-1])`` (image down x image right): a plane facing the
    camera gets ``(0, 0, 1)``. Differences across a depth discontinuity are meaningless: mask with
    :func:`depth_edges`.
    """
    normals = np.full(points.shape, np.nan)
    dx = points[1:-1, 2:] - points[1:-1, :-2]
    dy = points[2:, 1:-1] - points[:-2, 1:-1]
    n = np.cross(dy, dx)
    with np.errstate(invalid="ignore", divide="ignore"):
        normals[1:-1, 1:-1] = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return normals


def normals_from_depth(depth: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """The unit normals ``(H, W, 3)`` implied by a z-depth map and the camera (NaN where undefined)."""
    return normals_from_points(unproject(depth, intrinsics))
