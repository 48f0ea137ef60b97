"""Depth metrics against an independent implementation of the DepthCrafter protocol; exact constructed cases;
normal angular metrics on known rotations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bufferanytime.evaluation import depth_metrics, fit_disparity_affine, normal_metrics


def reference_depth_metrics(pred: np.ndarray, gt: np.ndarray, max_depth: float) -> dict:
    """Written from DepthCrafter's benchmark/eval/eval.py + metric.py (domain 'depth'): whole-array lstsq, then
    per-frame metrics on masked frames, averaged over frames with valid pixels."""
    pred = np.clip(pred.astype(np.float64), 1e-3, None)
    valid = (gt > 1e-3) & (gt < max_depth)
    a = np.stack([pred[valid], np.ones(valid.sum())], axis=-1)
    b = 1.0 / (gt[valid].astype(np.float64) + 1e-8)
    (scale, shift), *_ = np.linalg.lstsq(a, b, rcond=None)
    aligned = np.clip(scale * pred + shift, 1e-3, None)
    depth = np.clip(1.0 / aligned, 1e-3, max_depth)
    rows = []
    for d, g, m in zip(depth, gt, valid, strict=True):
        n = m.sum()
        if n == 0:
            continue
        rel = np.where(m, np.abs(d - g) / np.where(m, g, 1.0), 0.0)
        sq = np.where(m, (d - g) ** 2, 0.0)
        hit = np.where(m, np.maximum(d / np.where(m, g, 1.0), np.where(m, g, 1.0) / d) < 1.25, False)
        rows.append((rel.sum() / n, np.sqrt(sq.sum() / n), hit.sum() / n))
    rows = np.array(rows)
    return {"abs_rel": rows[:, 0].mean(), "rmse": rows[:, 1].mean(), "delta1": rows[:, 2].mean(),
            "scale": scale, "shift": shift}


def random_case(seed: int, frames: int = 5, size: tuple[int, int] = (12, 17), max_depth: float = 10.0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.2, 1.3 * max_depth, (frames, *size))
    gt[rng.random(gt.shape) < 0.2] = -1.0  # invalid (KITTI-style) pixels
    gt[1] = 0.0  # a frame without any valid pixel: skipped
    noise = rng.normal(0, 0.3, gt.shape)
    pred = (2.0 / (np.abs(gt) + 0.1) + 0.5 + noise).astype(np.float32)  # disparity, some values below 1e-3
    pred[rng.random(pred.shape) < 0.05] *= -1
    return pred, gt, max_depth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_depth_metrics_match_independent_implementation(seed):
    pred, gt, max_depth = random_case(seed)
    ours = depth_metrics(pred, gt, max_depth)
    ref = reference_depth_metrics(pred, gt, max_depth)
    assert set(ours) == {"abs_rel", "delta1", "rmse"}
    for key in ours:
        assert ours[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    scale, shift = fit_disparity_affine(pred, gt, max_depth)
    assert (scale, shift) == pytest.approx((ref["scale"], ref["shift"]), rel=1e-9)


def test_affine_transform_of_inverse_depth_is_exact():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0.5, 70.0, (4, 9, 11))
    pred = 0.37 / gt + 2.5  # any positive scale and shift of the true disparity
    metrics = depth_metrics(pred, gt, max_depth=80.0)
    assert metrics["abs_rel"] < 1e-6  # only DepthCrafter's 1e-8 in 1 / (gt + 1e-8) separates it from 0
    assert metrics["delta1"] == 1.0
    assert metrics["rmse"] < 1e-5


def test_pixels_beyond_max_depth_are_ignored():
    rng = np.random.default_rng(4)
    gt = rng.uniform(1.0, 5.0, (3, 8, 8))
    pred = 1.0 / gt
    pred[:, :2] = 50.0  # wrong prediction ...
    gt[:, :2] = 200.0  # ... only where the ground truth is beyond max_depth
    assert depth_metrics(pred, gt, max_depth=10.0)["abs_rel"] < 1e-6


def test_memory_maps_and_masks(tmp_path):
    pred, gt, max_depth = random_case(5)
    np.save(tmp_path / "p.npy", pred)
    np.save(tmp_path / "g.npy", gt)
    mm = depth_metrics(np.load(tmp_path / "p.npy", mmap_mode="r"), np.load(tmp_path / "g.npy", mmap_mode="r"),
                       max_depth)
    assert mm == pytest.approx(depth_metrics(pred, gt, max_depth), rel=1e-12)
    keep = np.ones(gt.shape, bool)
    keep[:, :, :5] = False
    cut = depth_metrics(pred[:, :, 5:], gt[:, :, 5:], max_depth)
    assert depth_metrics(pred, gt, max_depth, valid=keep) == pytest.approx(cut, rel=1e-12)


def test_constant_prediction_matches_lstsq_minimum_norm():
    rng = np.random.default_rng(6)
    gt = rng.uniform(1.0, 5.0, (2, 6, 6))
    pred = np.full(gt.shape, 0.8, np.float32)
    ref = reference_depth_metrics(pred, gt, 10.0)
    assert fit_disparity_affine(pred, gt, 10.0) == pytest.approx((ref["scale"], ref["shift"]), rel=1e-9)
    assert depth_metrics(pred, gt, 10.0)["abs_rel"] == pytest.approx(ref["abs_rel"], rel=1e-9)


def test_no_valid_pixel_gives_nan():
    metrics = depth_metrics(np.ones((2, 4, 4)), np.zeros((2, 4, 4)), 10.0)
    assert all(math.isnan(v) for v in metrics.values())


def rotate_about_x(n: np.ndarray, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return n @ rot.T


def test_normal_metrics_on_known_angles():
    gt = np.zeros((2, 4, 5, 3), np.float32)
    gt[..., 2] = 1.0  # facing the camera
    angles = np.array([5.0, 10.0, 15.0, 25.0, 40.0])  # one per column
    pred = np.stack([rotate_about_x(gt[:, :, j], angles[j]) for j in range(5)], axis=2)
    pred *= 3.0  # predictions are normalised first
    m = normal_metrics(pred, gt)
    assert set(m) == {"mean", "median", "a11", "a22", "a30"}
    assert m["mean"] == pytest.approx(angles.mean(), abs=1e-6)
    assert m["median"] == pytest.approx(15.0, abs=1e-6)
    assert (m["a11"], m["a22"], m["a30"]) == pytest.approx((40.0, 60.0, 80.0))


def test_normal_metrics_masks_and_single_frame():
    rng = np.random.default_rng(7)
    gt = rng.normal(size=(6, 7, 3))
    gt /= np.linalg.norm(gt, axis=-1, keepdims=True)
    pred = -gt
    pred[:3] = gt[:3]  # right on the top half
    valid = np.zeros((6, 7), bool)
    valid[:3] = True
    assert normal_metrics(pred, gt, valid)["mean"] == pytest.approx(0.0, abs=1e-5)
    assert normal_metrics(pred, gt)["mean"] == pytest.approx(90.0, abs=1e-4)  # half 0, half 180 degrees
    gt[3:] = 0.0  # missing ground truth is not a direction
    assert normal_metrics(pred, gt)["a11"] == pytest.approx(100.0)
