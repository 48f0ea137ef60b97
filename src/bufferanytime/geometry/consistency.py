"""Depth-normal consistency: do the depth and the normals predicted for one video describe the same surfaces?

Per frame, the normals implied by the depth (central differences of its unprojected points with the camera
intrinsics, :func:`~bufferanytime.geometry.unproject.normals_from_depth`) are compared with the predicted normals:
the angle ``arccos(n_depth . n_pred)`` in degrees, averaged over the pixels where both are defined and the depth
is continuous (no jump above ``edge_rtol`` to a 4-neighbour; the image border has no central difference). Over
time: the mean of the per-frame means and their standard deviation over frames (a flickering disagreement).

No alignment is fitted: a wrong depth shape or wrong intrinsics show as a larger angle. For relative depth the
unknown shift matters (the scale does not): depth is taken as ``1 / disparity`` (zero shift).

Sensor depth (``footprint``). One-pixel central differences suit smooth predicted depth, but not a sensor's: depth
quantised to millimetres with Kinect-like noise (axial std ``1.2 mm + 1.9 mm (z - 0.4 m)^2``) gives a few
millimetres of noise against a few millimetres between neighbouring points, so the implied normals are off by
tens of degrees even where the surface is a perfect plane. With ``footprint = R >= 1`` the normal is instead that
of the least-squares plane through the unprojected points of the ``(2R+1) x (2R+1)`` window around the pixel (its
covariance's eigenvector of least variance), which averages the noise over ``(2R+1)^2`` points; pixels whose window
reaches a depth discontinuity or the image border are left out. Noise floor (synthetic rooms and outdoor scenes at
240x320, exact normals against the depth quantised and noised as above; ``CONSISTENCY_NOISE_FLOOR``): see
docs/evaluation.md. A wider footprint lowers the noise and blurs creases (box edges) over its width.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from bufferanytime.errors import InputError
from bufferanytime.geometry.intrinsics import Intrinsics, IntrinsicsSpec, intrinsics_from_values
from bufferanytime.geometry.pointcloud import depth_kind, npz_frames, npz_member_shape
from bufferanytime.geometry.unproject import depth_edges, normals_from_points, pixel_rays, relative_depth

CONSISTENCY_EDGE_RTOL = 0.05  # depth jumps above 5 % to a neighbour are discontinuities, not surface slope
MAX_FOOTPRINT = 32  # pixels: the plane-fit window's radius at most (a 65 x 65 window)
# An off-centre window replaces the centred one only when its residual variance is this many times smaller: across
# a crease the centred window's residual is far larger, on a smoothly curved surface all windows fit about as well
# (and an off-centre one would tilt the normal by the curvature over the offset).
CREASE_RATIO = 4.0


def plane_normals(points: np.ndarray, footprint: int, excluded: np.ndarray) -> np.ndarray:
    """Unit normals ``(H, W, 3)`` of least-squares planes through ``points`` in ``(2R+1)^2`` windows, facing the
    camera; NaN where the centred window holds an ``excluded`` pixel or leaves the image.

    The window centred on the pixel is used, unless one of the eight that hold the pixel at a corner or an edge
    midpoint fits ``CREASE_RATIO`` times better (least residual variance): next to a crease (the edge of a box) such
    a window lies on the pixel's own face, so the normal is not blurred across the crease. Pixels whose centred
    window meets a discontinuity are not compared (an off-centre window on a curved surface tilts the normal).
    """
    import cv2

    size = (2 * footprint + 1,) * 2
    h, w = points.shape[:2]
    p = np.where(excluded[..., None], 0.0, points)
    box = {"ddepth": -1, "ksize": size, "normalize": True, "borderType": cv2.BORDER_CONSTANT}
    mean = np.stack([cv2.boxFilter(p[..., i], **box) for i in range(3)], axis=-1)
    cov = np.empty((h, w, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            cov[..., i, j] = cov[..., j, i] = cv2.boxFilter(p[..., i] * p[..., j], **box) - mean[..., i] * mean[..., j]
    values, vectors = np.linalg.eigh(cov.reshape(-1, 3, 3))
    residual = values[:, 0].reshape(h, w)
    normals = vectors[:, :, 0].reshape(h, w, 3)
    blocked = cv2.dilate(excluded.astype(np.uint8), np.ones(size, np.uint8), borderType=cv2.BORDER_CONSTANT,
                         borderValue=1) > 0
    residual[blocked] = np.inf
    centred_ok = np.isfinite(residual)
    best = np.where(centred_ok, residual / CREASE_RATIO, np.inf)  # the centred window, unless another fits much
    out = np.where(centred_ok[..., None], normals, np.nan)  # better (a crease, not a curve)
    for dy in (-footprint, 0, footprint):
        for dx in (-footprint, 0, footprint):
            if dy == dx == 0:
                continue
            shifted = np.full((h, w), np.inf)  # the window centred at (y + dy, x + dx), for the pixel (y, x)
            ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
            xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
            shifted[yd, xd] = residual[ys, xs]
            better = (shifted < best) & centred_ok
            best[better] = shifted[better]
            candidate = np.full((h, w, 3), np.nan)
            candidate[yd, xd] = normals[ys, xs]
            out[better] = candidate[better]
    out *= np.where(np.sum(out * points, axis=-1, keepdims=True) > 0, -1.0, 1.0)  # towards the camera
    return out


def frame_angles(depth: np.ndarray, normals: np.ndarray, intrinsics: Intrinsics,
                 edge_rtol: float = CONSISTENCY_EDGE_RTOL, rays: np.ndarray | None = None, footprint: int = 0
                 ) -> np.ndarray:
    """Angles in degrees ``(H, W)`` between depth-implied and given normals; NaN where not compared.

    ``footprint`` 0: central differences of neighbouring pixels; R >= 1: planes fitted over ``(2R+1)^2`` windows
    (for sensor depth; module docstring)."""
    depth = np.asarray(depth, dtype=np.float64)
    rays = pixel_rays(intrinsics, *depth.shape) if rays is None else rays
    edges = depth_edges(depth, edge_rtol)
    points = np.where(edges[..., None], 0.0, depth[..., None]) * rays
    implied = plane_normals(points, footprint, edges) if footprint else normals_from_points(depth[..., None] * rays)
    cos = np.sum(implied * np.asarray(normals, dtype=np.float64), axis=-1)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    angles[edges | ~np.isfinite(cos)] = np.nan
    return angles


def depth_normal_consistency(depths: Iterable[np.ndarray], normals: Iterable[np.ndarray], intrinsics: Intrinsics,
                             edge_rtol: float = CONSISTENCY_EDGE_RTOL, footprint: int = 0) -> dict:
    """Per-frame mean angles (degrees) of a video and their mean and std over frames, and the pixels compared."""
    if not 0 <= footprint <= MAX_FOOTPRINT:
        raise InputError(f"--footprint must be 0 to {MAX_FOOTPRINT} pixels, got {footprint}")
    per_frame, fractions, rays = [], [], None
    for depth, normal in zip(depths, normals, strict=True):
        rays = pixel_rays(intrinsics, *np.shape(depth)) if rays is None else rays
        angles = frame_angles(depth, normal, intrinsics, edge_rtol, rays, footprint)
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
        "footprint": footprint,
        "derivative": f"planes fitted over {2 * footprint + 1}x{2 * footprint + 1} pixels" if footprint
        else "central differences of neighbouring pixels",
    }


def output_consistency(folder: Path, spec: IntrinsicsSpec | None = None,
                       edge_rtol: float = CONSISTENCY_EDGE_RTOL, footprint: int = 0) -> dict:
    """The consistency of the depth and normal outputs of one input (``OUT/<name>/``), one entry per depth buffer.

    Intrinsics: ``spec`` when given, else those recorded in the depth run's meta file, else the default.
    InputError when the folder lacks the normal outputs or every depth output, or when their sizes differ.
    """
    from bufferanytime.tasks import NORMAL, TASKS

    normal_path = folder / NORMAL.files.npz
    normal_shape = npz_member_shape(normal_path, NORMAL.array_key)
    if normal_shape is None:
        raise InputError(f"{folder}: no readable {NORMAL.files.npz} (run `bufferanytime normal` into the same output)")
    results = {}
    for name in TASKS.list():
        task = TASKS.get(name)
        path = folder / task.files.npz
        if depth_kind(task) is None or not path.is_file():
            continue
        shape = npz_member_shape(path, task.array_key)
        if shape is None or (*shape, 3) != tuple(normal_shape):
            raise InputError(f"{path}: shape {shape} does not match {normal_path} {normal_shape}")
        intrinsics = _intrinsics(folder / task.files.meta, spec, shape[1], shape[2])
        depths = (_as_depth(task, frame) for frame in npz_frames(path, task.array_key))
        result = depth_normal_consistency(depths, npz_frames(normal_path, NORMAL.array_key), intrinsics, edge_rtol,
                                          footprint)
        result["intrinsics"] = intrinsics.to_meta()
        result["depth"] = ("relative disparity taken as depth = 1 / disparity (zero shift assumed)"
                           if depth_kind(task) == "relative" else "metric depth, metres")
        results[task.files.npz] = result
    if not results:
        raise InputError(f"{folder}: no depth output next to {NORMAL.files.npz} (run `bufferanytime depth` into the "
                         "same output)")
    return results


def _as_depth(task, frame: np.ndarray) -> np.ndarray:
    return relative_depth(frame, 1.0) if depth_kind(task) == "relative" else np.asarray(frame, np.float64)


def _intrinsics(meta_path: Path, spec: IntrinsicsSpec | None, height: int, width: int) -> Intrinsics:
    """``spec`` resolved, or the intrinsics recorded in a run's meta file, or the default."""
    if spec is None and meta_path.is_file():
        try:
            recorded = json.loads(meta_path.read_text()).get("intrinsics")
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict):
            values = [recorded.get(k) for k in ("fx", "fy", "cx", "cy", "width", "height")]
            source = f"{recorded.get('source', '')} (recorded in {meta_path.name})"
            return replace(intrinsics_from_values([float(v) for v in values], str(meta_path)), source=source).for_size(
                height, width)
    return (spec or IntrinsicsSpec()).resolve(height, width)
