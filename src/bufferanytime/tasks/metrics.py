"""Per-frame accuracy metrics: video depth (DepthCrafter benchmark protocol) and surface normals.

Depth follows ``benchmark/eval/eval.py`` and ``benchmark/eval/metric.py`` of github.com/Tencent/DepthCrafter
(``--domain depth``, the setting of its tables and of Table 1 of the paper) step by step:

1. valid pixels: ``EVAL_MIN_DEPTH < gt < max_depth`` (and ``valid`` when given);
2. the prediction (relative disparity) is clipped to ``>= EVAL_MIN_DEPTH``;
3. ONE scale ``s`` and shift ``t`` per video minimise ``sum (s * pred + t - 1 / (gt + DISPARITY_EPS))^2`` over the
   valid pixels of all frames (``np.linalg.lstsq`` there; closed form here, see :func:`fit_disparity_affine`);
4. ``s * pred + t`` is clipped to ``>= EVAL_MIN_DEPTH``, inverted to depth and clipped to
   ``[EVAL_MIN_DEPTH, max_depth]``;
5. AbsRel ``mean |d - gt| / gt``, RMSE ``sqrt(mean (d - gt)^2)`` and delta1 (fraction with
   ``max(d / gt, gt / d) < 1.25``) are computed per frame over its valid pixels and averaged over the frames that
   have valid pixels (frames without any are skipped).

Everything is accumulated frame by frame in float64, so ``pred`` and ``gt`` may be memory maps of any length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bufferanytime.constants import DELTA1_THRESHOLD, DISPARITY_EPS, EVAL_MIN_DEPTH, NORMAL_ANGLE_THRESHOLDS

DEPTH_KEYS = ("abs_rel", "delta1", "rmse")
NORMAL_KEYS = ("mean", "median", "a11", "a22", "a30")
NORMAL_MIN_NORM = 1e-6  # ground-truth normals shorter than this are missing values, not directions


def _frame(x: Sequence[np.ndarray] | np.ndarray | None, i: int) -> np.ndarray | None:
    return None if x is None else np.asarray(x[i])


def valid_depth_mask(gt: np.ndarray, max_depth: float, valid: np.ndarray | None = None,
                     min_depth: float = EVAL_MIN_DEPTH) -> np.ndarray:
    """The benchmark's valid pixels of one or more frames: ``min_depth < gt < max_depth`` (and ``valid``)."""
    mask = (gt > min_depth) & (gt < max_depth)
    return mask if valid is None else mask & np.asarray(valid, dtype=bool)


def fit_disparity_affine(
    pred: Sequence[np.ndarray] | np.ndarray,
    gt: Sequence[np.ndarray] | np.ndarray,
    max_depth: float,
    valid: Sequence[np.ndarray] | np.ndarray | None = None,
    min_depth: float = EVAL_MIN_DEPTH,
) -> tuple[float, float]:
    """Least-squares ``(scale, shift)`` with ``scale * clip(pred, min_depth) + shift ~ 1 / (gt + 1e-8)``.

    One pair for the whole video, over the valid pixels of all frames. Two passes over the frames (means, then
    centred sums) keep it exact in float64 without holding the video in memory. It equals ``np.linalg.lstsq`` on
    ``[pred, 1]``, including the minimum-norm answer when the prediction is constant; ``(nan, nan)`` when no pixel
    is valid.
    """
    n, sum_x, sum_y = 0, 0.0, 0.0
    for i in range(len(pred)):
        x, y = _valid_pairs(pred, gt, valid, i, max_depth, min_depth)
        n += x.size
        sum_x += float(x.sum())
        sum_y += float(y.sum())
    if n == 0:
        return math.nan, math.nan
    mean_x, mean_y = sum_x / n, sum_y / n
    sxx, sxy = 0.0, 0.0
    for i in range(len(pred)):
        x, y = _valid_pairs(pred, gt, valid, i, max_depth, min_depth)
        dx = x - mean_x
        sxx += float(np.dot(dx, dx))
        sxy += float(np.dot(dx, y - mean_y))
    if sxx <= 0.0:  # constant prediction c: lstsq returns the minimum-norm (s, t) with s * c + t = mean_y
        scale = mean_y * mean_x / (mean_x * mean_x + 1.0)
        return scale, mean_y / (mean_x * mean_x + 1.0)
    scale = sxy / sxx
    return scale, mean_y - scale * mean_x


def _valid_pairs(pred, gt, valid, i: int, max_depth: float, min_depth: float) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(gt[i], dtype=np.float64)
    mask = valid_depth_mask(g, max_depth, _frame(valid, i), min_depth)
    x = np.maximum(np.asarray(pred[i], dtype=np.float64)[mask], min_depth)
    y = 1.0 / (g[mask] + DISPARITY_EPS)
    return x, y


def fit_disparity_scale(
    pred: Sequence[np.ndarray] | np.ndarray,
    gt: Sequence[np.ndarray] | np.ndarray,
    max_depth: float,
    min_depth: float = EVAL_MIN_DEPTH,
) -> float:
    """Least-squares ``scale`` with ``scale * clip(pred, min_depth) ~ 1 / (gt + 1e-8)`` (no shift), one per video
    over the valid pixels of all frames (``--align scale`` of relative disparity); NaN when none is valid."""
    sxx, sxy = 0.0, 0.0
    for i in range(len(pred)):
        x, y = _valid_pairs(pred, gt, None, i, max_depth, min_depth)
        sxx += float(np.dot(x, x))
        sxy += float(np.dot(x, y))
    return sxy / sxx if sxx > 0.0 else math.nan


def median_depth_ratio(
    depth: Sequence[np.ndarray] | np.ndarray,
    gt: Sequence[np.ndarray] | np.ndarray,
    max_depth: float,
    min_depth: float = EVAL_MIN_DEPTH,
    step: int = 2,
) -> float:
    """``median(gt / depth)`` over the valid pixels of all frames (every ``step``-th row and column): the one
    scale that ``--align scale`` applies to predicted metric depth; NaN when no pixel is valid."""
    ratios = []
    for i in range(len(depth)):
        g = np.asarray(gt[i], dtype=np.float64)[::step, ::step]
        d = np.maximum(np.asarray(depth[i], dtype=np.float64)[::step, ::step], min_depth)
        mask = valid_depth_mask(g, max_depth, None, min_depth)
        ratios.append(g[mask] / d[mask])
    values = np.concatenate(ratios) if ratios else np.zeros(0)
    return float(np.median(values)) if values.size else math.nan


def aligned_disparity(pred: np.ndarray, scale: float, shift: float, min_depth: float = EVAL_MIN_DEPTH
                      ) -> np.ndarray:
    """Relative disparity with the fitted ``scale``/``shift``: ``scale * clip(pred) + shift``, clipped to
    ``>= min_depth`` as in the benchmark (before it is inverted to depth)."""
    return np.maximum(scale * np.maximum(pred, min_depth) + shift, min_depth)


def aligned_depth(pred: np.ndarray, scale: float, shift: float, max_depth: float,
                  min_depth: float = EVAL_MIN_DEPTH) -> np.ndarray:
    """Metric depth from relative disparity with the fitted ``scale``/``shift``, clipped as in the benchmark."""
    disparity = aligned_disparity(np.asarray(pred, dtype=np.float64), scale, shift, min_depth)
    return np.clip(1.0 / disparity, min_depth, max_depth)


def depth_metrics(
    pred: Sequence[np.ndarray] | np.ndarray,
    gt: Sequence[np.ndarray] | np.ndarray,
    max_depth: float,
    valid: Sequence[np.ndarray] | np.ndarray | None = None,
    min_depth: float = EVAL_MIN_DEPTH,
    affine: tuple[float, float] | None = None,
) -> dict[str, float]:
    """AbsRel, delta1 and RMSE of a video's relative disparity against metric depth (DepthCrafter protocol).

    Args:
        pred: relative disparity ``(T, H, W)`` (larger = nearer) at the ground truth's size; any sequence of
            ``(H, W)`` frames, e.g. a memory map.
        gt: metric depth ``(T, H, W)``; pixels outside ``(min_depth, max_depth)`` are invalid.
        max_depth: the dataset's cap (``EVAL_MAX_DEPTH``: KITTI 80, ScanNet 10, Bonn 10, Sintel 70).
        valid: optional extra bool mask ``(T, H, W)``.
        affine: the :func:`fit_disparity_affine` of these arguments when the caller has it already (saves its
            two passes over the video); fitted here when None.

    Returns:
        ``{"abs_rel", "delta1", "rmse"}``, each the mean over the frames with valid pixels (NaN if none has any).
        See the module docstring for every step.
    """
    if len(pred) != len(gt):
        raise ValueError(f"pred has {len(pred)} frames, gt {len(gt)}")
    scale, shift = affine or fit_disparity_affine(pred, gt, max_depth, valid, min_depth)
    if math.isnan(scale):
        return dict.fromkeys(DEPTH_KEYS, math.nan)
    sums = dict.fromkeys(DEPTH_KEYS, 0.0)
    frames = 0
    for i in range(len(pred)):
        g = np.asarray(gt[i], dtype=np.float64)
        p = np.asarray(pred[i])
        if p.shape != g.shape:
            raise ValueError(f"frame {i}: pred {p.shape} and gt {g.shape} differ; resize pred to the gt size first")
        mask = valid_depth_mask(g, max_depth, _frame(valid, i), min_depth)
        n = int(mask.sum())
        if n == 0:
            continue
        d = aligned_depth(p[mask], scale, shift, max_depth, min_depth)
        g = g[mask]
        sums["abs_rel"] += float(np.sum(np.abs(d - g) / g)) / n
        sums["rmse"] += math.sqrt(float(np.sum((d - g) ** 2)) / n)
        sums["delta1"] += float(np.sum(np.maximum(d / g, g / d) < DELTA1_THRESHOLD)) / n
        frames += 1
    return {k: v / frames for k, v in sums.items()}


def angular_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Angle in degrees between ``(..., 3)`` normals (both normalised first), as DSINE's ``compute_normal_error``."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    p = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
    cos = np.clip(np.sum(p * g, axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def normal_metrics(
    pred: Sequence[np.ndarray] | np.ndarray,
    gt: Sequence[np.ndarray] | np.ndarray,
    valid: Sequence[np.ndarray] | np.ndarray | None = None,
) -> dict[str, float]:
    """Angular error statistics of predicted unit normals ``(T, H, W, 3)`` (or one ``(H, W, 3)`` frame).

    The metrics of DSINE (Bae & Davison 2024, the protocol the paper follows for Table 2), with all valid pixels of
    the video pooled: ``mean`` and ``median`` angle in degrees, and ``a11``, ``a22``, ``a30`` the percentage of
    pixels with an angle strictly below 11.25, 22.5 and 30 degrees. Valid pixels: finite ground truth of length
    above ``NORMAL_MIN_NORM`` (and ``valid`` when given). NaN when no pixel is valid.
    """
    if np.asarray(pred[0]).ndim == 2:  # a single (H, W, 3) frame
        pred, gt = [pred], [gt]
        valid = None if valid is None else [valid]
    if len(pred) != len(gt):
        raise ValueError(f"pred has {len(pred)} frames, gt {len(gt)}")
    errors = []
    for i in range(len(pred)):
        g = np.asarray(gt[i], dtype=np.float64)
        p = np.asarray(pred[i])
        if p.shape != g.shape or g.shape[-1] != 3:
            raise ValueError(f"frame {i}: expected equal (H, W, 3) normals, got {p.shape} and {g.shape}")
        mask = np.all(np.isfinite(g), axis=-1) & (np.linalg.norm(np.nan_to_num(g), axis=-1) > NORMAL_MIN_NORM)
        if valid is not None:
            mask &= np.asarray(valid[i], dtype=bool)
        errors.append(angular_error(p[mask], g[mask]))
    err = np.concatenate(errors) if errors else np.zeros(0)
    if err.size == 0:
        return dict.fromkeys(NORMAL_KEYS, math.nan)
    out = {"mean": float(np.mean(err)), "median": float(np.median(err))}
    for key, threshold in zip(NORMAL_KEYS[2:], NORMAL_ANGLE_THRESHOLDS, strict=True):
        out[key] = 100.0 * float(np.mean(err < threshold))
    return out
