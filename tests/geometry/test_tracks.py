"""Point tracks for the camera: Lucas-Kanade tracks follow the image and end where they cannot be checked, tracks
carried by a dense flow end where the two flows disagree, crowding tracks are thinned to the oldest, and the solver
finds the camera from the tracks of rendered frames (moving objects included)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bufferanytime.geometry.camera import solve_tracks
from bufferanytime.geometry.camera_metrics import trajectory_errors
from bufferanytime.geometry.intrinsics import Intrinsics
from bufferanytime.geometry.tracks import FrameTracker, Tracks, TrackSettings, _Grid, tracks_from_flow
from bufferanytime.synthetic import render_video


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).uniform(0, 255, (height, width)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 1.5).astype(np.uint8)


def test_lucas_kanade_tracks_follow_a_shifted_image_and_end_where_it_leaves():
    image = _texture(80, 120)
    shift = np.float32([[1, 0, 3], [0, 1, -2]])  # 3 px right, 2 px up per frame
    frames = [image]
    for _ in range(3):
        frames.append(cv2.warpAffine(frames[-1], shift, (120, 80), borderMode=cv2.BORDER_REFLECT))
    tracker = FrameTracker(80, 120, TrackSettings(points=200))
    for frame in frames:
        tracker.add(frame)
    tracks = tracker.tracks
    index, xy_last = tracks.pair(0, 3)
    assert len(index) > 100  # most points of frame 0 are still tracked in frame 3
    inner = (tracks.xy[0][index, 0] > 12) & (tracks.xy[0][index, 0] < 100) & (tracks.xy[0][index, 1] > 12) & (
        tracks.xy[0][index, 1] < 68)
    moved = xy_last[inner] - tracks.xy[0][index][inner]
    np.testing.assert_allclose(np.median(moved, axis=0), [9.0, -6.0], atol=0.1)
    assert np.mean(np.linalg.norm(moved - [9.0, -6.0], axis=1) < 0.5) > 0.9
    assert len(np.intersect1d(tracks.ids[0], tracks.ids[3])) == len(index)
    assert len(tracks.ids[3]) >= len(index)  # new tracks fill the cells the old ones left


def test_tracks_from_flow_end_where_the_flows_disagree():
    height, width = 40, 60
    fwd = np.zeros((2, height, width, 2), np.float32)
    fwd[..., 0] = 2.0  # everything moves 2 px right
    bwd = -fwd.copy()
    bwd[1, :, 30:] = 0.0  # ... but the second backward flow disagrees on the right half of frame 2
    tracks = tracks_from_flow(fwd, bwd, height, width, TrackSettings(points=60))
    index, xy = tracks.pair(0, 1)
    np.testing.assert_allclose(xy, tracks.xy[0][index] + [2.0, 0.0], atol=1e-5)
    index2, xy2 = tracks.pair(0, 2)
    assert len(index2) and np.all(xy2[:, 0] < 30)  # none lands where the check fails
    assert np.all(tracks.xy[0][index2][:, 0] < 26)


def test_crowded_tracks_keep_the_oldest_of_each_cell():
    grid = _Grid(20, 20, 4)  # cells of 10 px
    ids = np.array([3, 5, 7, 9])
    xy = np.array([[1.0, 1.0], [2.0, 2.0], [15.0, 1.0], [1.0, 15.0]], np.float32)
    kept_ids, kept_xy = grid.thin(ids, xy)
    assert kept_ids.tolist() == [3, 7, 9]
    np.testing.assert_array_equal(kept_xy[0], [1.0, 1.0])


def test_tracks_pair_only_the_tracks_seen_in_both_frames():
    tracks = Tracks(10, 10)
    tracks.append(np.array([0, 1, 2]), np.array([[1, 1], [2, 2], [3, 3]]))
    tracks.append(np.array([1, 2, 3]), np.array([[4, 4], [5, 5], [6, 6]]))
    index, xy = tracks.pair(0, 1)
    assert index.tolist() == [1, 2] and xy.tolist() == [[4, 4], [5, 5]]


@pytest.mark.parametrize("seed", [11])
def test_the_camera_of_rendered_frames_from_their_tracks(seed):
    video = render_video(seed, 16, (96, 128))
    tracker = FrameTracker(96, 128)
    for frame in video.rgb:
        tracker.add(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    k = video.intrinsics
    given = Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"], 128, 96, "exact")
    track = solve_tracks(video.depth, tracker.tracks, given)
    errors = trajectory_errors(track.poses, np.stack(video.poses))
    assert track.tracked.all()
    assert errors["rpe_rot_deg_per_frame"] < 0.1  # the target on exact geometry holds on tracked frames too
    assert errors["ate_pct_of_length"] < 3.0


def test_tracks_too_short_for_the_focal_length_keep_the_default_one_and_say_so():
    video = render_video(7, 16, (96, 128))
    full = tracks_from_flow(video.flow_fwd, video.flow_bwd, 96, 128)
    short = Tracks(96, 128)  # the same points, but every track is renumbered after 6 frames, half of them 3 frames
    for k in range(len(full)):  # later: consecutive frames share tracks, frames 6 or more apart none
        ids = full.ids[k] + ((k + 3 * (full.ids[k] % 2)) // 6) * 10**6
        order = np.argsort(ids)
        short.append(ids[order], full.xy[k][order])
    track = solve_tracks(video.depth, short)
    assert track.focal_source == "default" and track.tracked.all()
    assert any("too few points are tracked over 12 frames" in w for w in track.warnings)
