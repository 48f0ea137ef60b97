"""The camera solver on the synthetic world's exact depth and flow (every scene has moving objects): rotation,
trajectory and focal length within the targets, with margin; a static or too short video and lost tracking are
marked, not invented; the optional window refinement keeps the exact camera and its normal equations are those of
the reprojection errors' derivatives."""

from __future__ import annotations

import numpy as np
import pytest

from bufferanytime.geometry.camera import CameraSettings, _exp, _normal_equations, solve_cameras
from bufferanytime.geometry.camera_metrics import trajectory_errors, umeyama
from bufferanytime.geometry.camera_outputs import video_camera
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


def test_the_window_refinement_keeps_the_exact_camera(video):
    track = solve_cameras(video.depth, video.flow_fwd, video.flow_bwd, _given(video), CameraSettings(window=8))
    errors = trajectory_errors(track.poses, np.stack(video.poses))
    assert track.tracked.all()
    assert errors["rpe_rot_deg_per_frame"] < ROT_DEG_PER_FRAME and errors["ate_pct_of_length"] < ATE_PCT


def test_the_refinement_normal_equations_are_those_of_numeric_derivatives():
    rng = np.random.default_rng(3)
    poses = np.stack([_exp(rng.normal(0, 0.05, 6)) for _ in range(3)])
    K = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    edges = [(0, 1), (1, 2), (0, 2)]
    points = [rng.normal(0, 1, (5, 3)) + [0, 0, 6] for _ in edges]
    xy = [rng.uniform(0, 128, (5, 2)) for _ in edges]
    variable = {1: 0, 2: 1}  # frame 0 fixed

    def residuals(delta: np.ndarray) -> np.ndarray:
        moved = poses.copy()
        for f, n in variable.items():
            moved[f] = poses[f] @ _exp(delta[6 * n : 6 * n + 6])
        out = []
        for (a, b), p, obs in zip(edges, points, xy, strict=True):
            q = p @ (np.linalg.inv(moved[b]) @ moved[a])[:3, :3].T + (np.linalg.inv(moved[b]) @ moved[a])[:3, 3]
            out.append((q[:, :2] / q[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2] - obs).ravel())
        return np.concatenate(out)

    J = np.stack([(residuals(e) - residuals(-e)) / 2e-6 for e in np.eye(12) * 1e-6], axis=1)
    motions = np.stack([np.linalg.inv(poses[b]) @ poses[a] for a, b in edges])
    H, g = _normal_equations(motions, np.repeat(np.arange(3), 5), np.arange(0, 15, 5),
                             [(variable.get(a, -1), variable.get(b, -1)) for a, b in edges],
                             np.concatenate(points), np.concatenate(xy), K, 1e9, 2)
    np.testing.assert_allclose(H, J.T @ J, rtol=1e-4, atol=1e-6 * np.abs(H).max())
    np.testing.assert_allclose(g, J.T @ residuals(np.zeros(12)), rtol=1e-4, atol=1e-6 * np.abs(g).max())


def test_a_video_in_memory_gives_its_camera_from_frames_and_depth(video):
    """What training's estimated cameras use: Lucas-Kanade tracks of the frames (not the exact flow), the focal
    length estimated, given back at the frames' size."""
    track = video_camera(list(video.rgb), list(video.depth))
    errors = trajectory_errors(track.poses, np.stack(video.poses))
    assert track.tracked.all() and track.focal_source == "estimated"
    assert (track.intrinsics.width, track.intrinsics.height) == (SIZE[1], SIZE[0])
    assert track.intrinsics.fx == pytest.approx(video.intrinsics["fx"], rel=0.15)
    assert errors["rpe_rot_deg_per_frame"] < 2 * ROT_DEG_PER_FRAME
    assert errors["ate_pct_of_length"] < 4 * ATE_PCT
