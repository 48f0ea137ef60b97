"""The camera solver on the synthetic world's exact depth and flow (every scene has moving objects): rotation,
trajectory and focal length within the targets, with margin; a static or too short video and lost tracking are
marked, not invented."""

from __future__ import annotations

import numpy as np
import pytest

from bufferanytime.geometry.camera import solve_cameras
from bufferanytime.geometry.camera_metrics import trajectory_errors, umeyama
from bufferanytime.geometry.intrinsics import Intrinsics
from bufferanytime.synthetic import render_video

SIZE = (96, 128)
# targets: 0.1 degrees per frame, ATE 1 % of the trajectory's length, focal length 2 %; asserted with margin
ROT_DEG_PER_FRAME, ATE_PCT, FOCAL_PCT = 0.05, 0.5, 1.0


@pytest.fixture(scope="module", params=[7, 8])
def video(request):
    return render_video(request.param, 24, SIZE)


def _given(video) -> Intrinsics:
    k = video.intrinsics
    return Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"], SIZE[1], SIZE[0], "exact")


def test_exact_depth_and_flow_give_the_camera(video):
    track = solve_cameras(video.depth, video.flow_fwd, video.flow_bwd, _given(video))
    errors = trajectory_errors(track.poses, np.stack(video.poses))
    assert track.tracked.all() and track.reliable and track.focal_source == "given"
    assert errors["rpe_rot_deg_per_frame"] < ROT_DEG_PER_FRAME
    assert errors["max_rot_error_deg"] < ROT_DEG_PER_FRAME * len(track.poses)
    assert errors["ate_pct_of_length"] < ATE_PCT
    assert errors["scale"] == pytest.approx(1.0, rel=0.01)  # metric depth gives metres


def test_the_focal_length_is_estimated_when_not_given(video):
    track = solve_cameras(video.depth, video.flow_fwd, video.flow_bwd)
    assert track.focal_source == "estimated"
    assert track.intrinsics.fx == pytest.approx(video.intrinsics["fx"], rel=FOCAL_PCT / 100)
    assert "estimated" in track.intrinsics.source
    errors = trajectory_errors(track.poses, np.stack(video.poses))
    assert errors["rpe_rot_deg_per_frame"] < ROT_DEG_PER_FRAME
    assert errors["ate_pct_of_length"] < ATE_PCT


def test_a_static_video_is_marked_unreliable_and_keeps_the_default_focal_length():
    depth = np.full((6, *SIZE), 2.0, np.float32)
    depth[:, :, : SIZE[1] // 2] = 3.0
    flow = np.zeros((5, *SIZE, 2), np.float32)
    track = solve_cameras(depth, flow, flow)
    assert not track.reliable and track.focal_source == "default"
    assert any("hardly moves" in w for w in track.warnings)
    assert any("focal length" in w for w in track.warnings)
    np.testing.assert_allclose(track.poses[track.tracked], np.broadcast_to(np.eye(4), (track.tracked.sum(), 4, 4)),
                               atol=1e-6)


def test_a_video_too_short_is_marked_unreliable():
    track = solve_cameras(np.ones((2, *SIZE), np.float32), np.zeros((1, *SIZE, 2), np.float32),
                          np.zeros((1, *SIZE, 2), np.float32))
    assert not track.reliable and "at least 3" in track.warnings[0]


def test_frames_whose_tracking_fails_are_marked_lost_without_a_pose():
    video = render_video(9, 12, SIZE)
    fwd, bwd = video.flow_fwd.copy(), video.flow_bwd.copy()
    noise = np.random.default_rng(0).normal(0, 20, fwd[8:].shape).astype(np.float32)
    fwd[8:], bwd[8:] = noise, -noise[..., ::-1, :, :]  # the flow from frame 8 on is garbage
    track = solve_cameras(video.depth, fwd, bwd, _given(video))
    assert track.tracked[:9].all() and not track.tracked[9:].any()
    assert np.isnan(track.poses[9:]).all() and np.isfinite(track.poses[:9]).all()
    assert not track.reliable and any("3 of 12 frames" in w for w in track.warnings)


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    R *= np.sign(np.linalg.det(R))
    s, R_est, t = umeyama(src, 2.5 * src @ R.T + [1.0, -2.0, 0.5])
    assert s == pytest.approx(2.5) and np.allclose(R_est, R) and np.allclose(t, [1.0, -2.0, 0.5])
