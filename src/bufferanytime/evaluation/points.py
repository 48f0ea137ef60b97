"""Evaluation in 3D on data with a known camera (the synthetic world): the per-frame point error.

Each predicted frame, after the alignment the depth metrics used (its fitted scale and shift in disparity, or none
for metric depth), is unprojected with the ground-truth intrinsics and compared with the unprojected ground truth:
``||P_pred - P_gt|| / z_gt`` per valid pixel (ground truth inside the depth range), averaged per frame. The report
gives the mean over frames (``point_rel``) and the std over frames (``point_rel_std``): how far, relative to
its distance, a predicted 3D point lies from the true one, and how much that flickers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bufferanytime.constants import EVAL_MIN_DEPTH
from bufferanytime.errors import InputError
from bufferanytime.geometry.intrinsics import parse_intrinsics
from bufferanytime.geometry.pointcloud import depth_kind
from bufferanytime.geometry.unproject import pixel_rays
from bufferanytime.tasks.metrics import aligned_depth


def point_metrics(task, pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], metrics: dict, info: dict,
                  dataset: str) -> dict[str, float]:
    """``point_rel`` and ``point_rel_std`` of a predicted video at the ground truth's size; ``{}`` when the sequence
    has no camera (``info["intrinsics_file"]``) or the task's buffer is not depth."""
    kind = depth_kind(task)
    if kind is None or not info.get("intrinsics_file") or not len(gt):
        return {}
    height, width = np.shape(gt[0])
    try:
        intrinsics = parse_intrinsics(info["intrinsics_file"]).resolve(height, width)
    except InputError as exc:  # worded for the command-line option; here the file is the dataset's
        raise InputError(str(exc).removeprefix("--intrinsics ")) from exc
    rays = pixel_rays(intrinsics, height, width)
    ray_length = np.linalg.norm(rays, axis=-1)
    cap = task.depth_cap(dataset)
    per_frame = []
    for p, g in zip(pred, gt, strict=True):
        g = np.asarray(g, dtype=np.float64)
        disparity = np.asarray(p, dtype=np.float64)
        if kind == "metric":
            disparity = 1.0 / np.maximum(disparity, EVAL_MIN_DEPTH)
        depth = aligned_depth(disparity, metrics["scale"], metrics["shift"], cap)
        valid = (g > EVAL_MIN_DEPTH) & (g < cap)
        # ||z_pred r - z_gt r|| / z_gt, r the pixel's ray (camera z = -1)
        error = np.abs(depth - g) * ray_length / np.where(valid, g, 1.0)
        per_frame.append(float(error[valid].mean()) if valid.any() else np.nan)
    values = np.array(per_frame)
    values = values[np.isfinite(values)]
    if not values.size:
        return {}
    return {"point_rel": float(values.mean()), "point_rel_std": float(values.std())}


def point_lines(report: dict) -> list[str]:
    """The report's 3D section (empty when no model has a point error)."""
    rows = [(m["label"], report["mean"].get(m["label"], {})) for m in report["models"]]
    rows = [(label, m) for label, m in rows if m.get("point_rel") is not None]
    if not rows:
        return []
    lines = ["", "## 3D points (ground-truth intrinsics)", "",
             "Each frame's depth, after the alignment above, unprojected with the ground-truth camera: mean "
             "||P − P*|| / z* over valid pixels per frame; mean over frames and its std over frames (flicker in 3D), "
             "averaged over sequences.", "", "| Model | point error ↓ | std over frames ↓ |", "|---|---:|---:|"]
    lines += [f"| {label} | {m['point_rel']:.4f} | {m.get('point_rel_std', float('nan')):.4f} |" for label, m in rows]
    return lines
