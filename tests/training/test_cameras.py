"""The estimated camera of a training video: solved at the camera's working size whatever the video's size, with
intrinsics given back at the video's size; a lost frame's pose survives the run folder's file as "no pose"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bufferanytime.geometry import camera_outputs
from bufferanytime.geometry.camera_outputs import CAMERA_SIDE
from bufferanytime.io.outputs import write_image
from bufferanytime.models import load_model
from bufferanytime.synthetic import render_video
from bufferanytime.training import cameras
from bufferanytime.training.cameras import VideoCamera, estimate_camera
from bufferanytime.training.data import discover_videos


def test_a_large_video_is_solved_at_the_working_size(tiny_depth_prior, tmp_path, monkeypatch):
    folder = tmp_path / "big"
    folder.mkdir()
    height, width = 240, 400  # the long side above CAMERA_SIDE
    for k, frame in enumerate(render_video(3, 5, (height, width)).rgb):
        write_image(folder / f"{k:04d}.png", frame)
    seen = []
    real = camera_outputs.video_camera

    def spy(frames, depth, intrinsics):
        seen.append((frames[0].shape, np.shape(depth[0])))
        return real(frames, depth, intrinsics)

    monkeypatch.setattr(cameras, "video_camera", spy)
    video = discover_videos([folder])[0]
    camera = estimate_camera(video, load_model("depth", tiny_depth_prior), torch.device("cpu"))
    assert seen and max(seen[0][0][:2]) == CAMERA_SIDE and seen[0][1] == seen[0][0][:2], seen
    assert camera.poses.shape == (5, 4, 4) and camera.source == "estimated"
    k = camera.intrinsics
    assert k["cx"] == pytest.approx(width / 2) and k["cy"] == pytest.approx(height / 2)
    assert k["fx"] == pytest.approx(k["fy"], rel=0.01)  # square pixels, up to the working size's rounding


def test_a_lost_pose_round_trips_as_none():
    poses = np.repeat(np.eye(4)[None], 3, axis=0)
    poses[1] = np.nan
    camera = VideoCamera(poses, {"fx": 50.0, "fy": 50.0, "cx": 32.0, "cy": 24.0}, "estimated")
    data = camera.to_dict()
    assert data["poses"][1] is None
    back = VideoCamera.from_dict(data)
    assert np.isnan(back.poses[1]).all() and np.array_equal(back.poses[[0, 2]], poses[[0, 2]])
    clip_poses, k = back.clip([0, 1], (0, 0, 64, 48), (24, 32))
    assert np.isnan(clip_poses[1]).all()
    np.testing.assert_allclose(k, [25.0, 25.0, 16.0, 12.0])
