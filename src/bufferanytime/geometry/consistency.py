"""Depth-normal consistency: do the depth and the normals predicted for one video describe the same surfaces?

Per frame, the normals implied by the depth (central differences of its unprojected points with the camera
intrinsics, :func:`~bufferanytime.geometry.unproject.normals_from_depth`) are compared with the predicted normals:
the angle ``arccos(n_depth . n_pred)`` in degrees, averaged over the pixels where both are defined and the depth
is continuous (no jump above ``edge_rtol`` to a 4-neighbour; the image border has no central difference). Over
time: the mean of the per-frame means and their standard deviation over frames (a flickering disagreement).

No alignment is fitted: a wrong depth shape or wrong intrinsics show as a larger angle. For relative depth the
unknown shift matters (the scale does not): depth is taken as ``1 / disparity`` (zero shift).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from bufferanytime.geometry.intrinsics import Intrinsics
from bufferanytime.geometry.unproject import depth_edges, normals_from_points, pixel_rays

CONSISTENCY_EDGE_RTOL = 0.05  # depth jumps above 5 % to a neighbour are discontinuities, not surface slope


def frame_angles(depth: np.ndarray, normals: np.ndarray, intrinsics: Intrinsics,
                 edge_rtol: float = CONSISTENCY_EDGE_RTOL, rays: np.ndarray | None = None) -> np.ndarray:
    """Angles in degrees ``(H, W)`` between depth-implied and given normals; NaN where not compared."""
    depth = np.asarray(depth, dtype=np.float64)
    rays = pixel_rays(intrinsics, *depth.shape) if rays is None else rays
    implied = normals_from_points(depth[..., None] * rays)
    cos = np.sum(implied * np.asarray(normals, dtype=np.float64), axis=-1)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    angles[depth_edges(depth, edge_rtol) | ~np.isfinite(cos)] = np.nan
    return angles


def depth_normal_consistency(depths: Iterable[np.ndarray], normals: Iterable[np.ndarray], intrinsics: Intrinsics,
                             edge_rtol: float = CONSISTENCY_EDGE_RTOL) -> dict:
    """Per-frame mean angles (degrees) of a video and their mean and std over frames, and the pixels compared."""
    per_frame, fractions, rays = [], [], None
    for depth, normal in zip(depths, normals, strict=True):
        rays = pixel_rays(intrinsics, *np.shape(depth)) if rays is None else rays
        angles = frame_angles(depth, normal, intrinsics, edge_rtol, rays)
        valid = np.isfinite(angles)
        per_frame.append(float(angles[valid].mean()) if valid.any() else float("nan"))
        fractions.append(float(valid.mean()))
    values = np.array(per_frame)
    finite = values[np.isfinite(values)]
    return {
        "mean_deg": float(finite.mean()) if finite.size else float("nan"),
        "std_over_frames_deg": float(finite.std()) if finite.size else float("nan"),
        "per_frame_deg": per_frame,
        "compared_fraction": float(np.mean(fractions)) if fractions else float("nan"),
        "edge_rtol": edge_rtol,
    }
