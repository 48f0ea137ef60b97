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


def output_consistency(folder: Path, spec: IntrinsicsSpec | None = None,
                       edge_rtol: float = CONSISTENCY_EDGE_RTOL) -> dict:
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
        result = depth_normal_consistency(depths, npz_frames(normal_path, NORMAL.array_key), intrinsics, edge_rtol)
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
