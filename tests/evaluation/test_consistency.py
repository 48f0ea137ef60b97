"""OPW: zero for predictions that move with the flow, invariant to one affine map per video, rising with
per-frame flicker; flows computed once and reused give the same value."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from bufferanytime.evaluation import SequenceFlows, estimate_flows, opw
from bufferanytime.flow import get_flow_model
from bufferanytime.io.arrays import flows_from_disk
from bufferanytime.synthetic import render_video

FLICKER_AMPLITUDES = (0.0, 0.05, 0.1, 0.2, 0.4)


def translating(frames: int, h: int, w: int, channels: int, seed: int, step: int = 1) -> np.ndarray:
    """A smooth random pattern moving ``step`` pixels right per frame: frame_{k+1}(x + step) = frame_k(x)."""
    rng = np.random.default_rng(seed)
    wide = w + step * frames + 8
    base = cv2.resize(rng.random((h // 4 + 2, wide // 4 + 2, channels)).astype(np.float32), (wide, h),
                      interpolation=cv2.INTER_CUBIC).reshape(h, wide, channels)
    return np.stack([base[:, wide - w - step * k : wide - step * k] for k in range(frames)])


@pytest.fixture(scope="module")
def scene():
    video = render_video(1, 6, (48, 64))
    gt_flows = SequenceFlows.from_flows(flows_from_disk(video.flow_fwd), flows_from_disk(video.flow_bwd),
                                        video.flow_valid_fwd, video.flow_valid_bwd)
    return video, gt_flows, estimate_flows(video.rgb)


def test_prediction_moving_with_the_flow_scores_zero():
    t, h, w = 5, 24, 32
    depth = translating(t, h, w, 1, seed=0)[..., 0] + 1.0
    fwd = np.zeros((t - 1, h, w, 2), np.float32)
    fwd[..., 0] = 1.0
    flows = SequenceFlows.from_flows(flows_from_disk(fwd), flows_from_disk(-fwd))
    assert flows.mask_fwd[:, :, -1].sum() == 0  # the last column moves out of the image
    assert flows.mask_fwd.mean() > 0.9  # ... and only it: the zero below is measured on almost every pixel
    assert opw(depth, flows=flows) < 1e-5
    rgb = (np.clip(translating(t, h, w, 3, seed=1), 0, 1) * 255).astype(np.uint8)
    assert opw(depth, rgb) < 0.05  # DIS on the RGB frames recovers the motion
    static = np.repeat(depth[:1], t, axis=0)  # not moving while the content moves
    assert opw(static, flows=flows) > 0.1


def test_one_affine_map_per_video_changes_nothing_per_frame_flicker_does(scene):
    video, flows, _ = scene
    disparity = 1.0 / video.depth
    base = opw(disparity, flows=flows)
    assert opw(3.0 * disparity + 7.0, flows=flows) == pytest.approx(base, rel=1e-4)
    flicker = disparity * np.array([1.0, 1.3, 1.0, 1.3, 1.0, 1.3])[:, None, None]
    assert opw(flicker, flows=flows) > 2 * base


def test_opw_of_ground_truth_is_small_and_rises_monotonically_with_flicker(scene):
    video, gt_flows, dis_flows = scene
    disparity = 1.0 / video.depth
    gains = np.random.default_rng(0).uniform(-1.0, 1.0, len(disparity))[:, None, None]
    for flows in (gt_flows, dis_flows):
        values = [opw(disparity * (1.0 + a * gains), flows=flows) for a in FLICKER_AMPLITUDES]
        assert values[0] < 0.1  # only the true change of depth along the camera motion remains
        assert all(b > a for a, b in zip(values, values[1:], strict=False)), values
        assert values[-1] > 5 * values[0]


def test_normals_are_not_normalised_and_flicker_counts(scene):
    video, flows, _ = scene
    gt = video.normal
    assert opw(gt, flows=flows) == opw(gt, flows=flows, normalize=False)
    assert opw(gt, flows=flows) < 0.1
    angle = np.radians(10.0)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]], np.float32)
    tilted = gt.copy()
    tilted[1::2] = gt[1::2] @ rot.T  # every other frame tilted by 10 degrees
    assert opw(tilted, flows=flows) > opw(gt, flows=flows) + 0.1


def test_flows_computed_once_match_flows_computed_inside(scene, tmp_path):
    video, _, dis_flows = scene
    disparity = 1.0 / video.depth
    inside = opw(disparity, video.rgb, get_flow_model("dis"))
    assert inside == pytest.approx(opw(disparity, flows=dis_flows), rel=1e-6)
    on_disk = estimate_flows(iter(video.rgb), directory=tmp_path / "flows")
    assert isinstance(on_disk.fwd, np.memmap)
    np.testing.assert_array_equal(np.asarray(on_disk.fwd), dis_flows.fwd)
    np.testing.assert_array_equal(np.asarray(on_disk.mask_bwd), dis_flows.mask_bwd)


def test_degenerate_inputs():
    assert math.isnan(opw(np.ones((1, 8, 8)), flows=SequenceFlows.from_flows(np.zeros((0, 2, 8, 8)),
                                                                             np.zeros((0, 2, 8, 8)))))
    flows = SequenceFlows.from_flows(np.zeros((2, 2, 8, 8), np.float32), np.zeros((2, 2, 8, 8), np.float32))
    assert opw(np.full((3, 8, 8), 2.0), flows=flows) == 0.0  # constant: perfectly consistent
    with pytest.raises(ValueError):
        opw(np.ones((5, 8, 8)), flows=flows)  # 5 frames need 4 pairs
    with pytest.raises(ValueError):
        opw(np.ones((3, 8, 8)))  # no frames, no flows
