"""Unprojection against the synthetic world's own geometry, and the normals a depth map implies."""

from __future__ import annotations

import numpy as np
import pytest

from bufferanytime.geometry import Intrinsics, depth_edges, normals_from_depth, pixel_rays, unproject
from bufferanytime.geometry.consistency import depth_normal_consistency
from bufferanytime.geometry.unproject import relative_depth, relative_depth_scale
from bufferanytime.synthetic import render_video
from bufferanytime.synthetic.renderer import _cast
from bufferanytime.synthetic.scene import sample_scene
from bufferanytime.synthetic.textures import TextureBank

SEED, FRAMES, SIZE = 50003, 3, (36, 48)


@pytest.fixture(scope="module")
def world():
    """A tiny rendered clip and the scene it was rendered from (rebuilt from the seed, as render_video does)."""
    video = render_video(SEED, FRAMES, SIZE)
    scene_rng, texture_rng, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(SEED).spawn(3))
    scene = sample_scene(scene_rng, FRAMES, SIZE, TextureBank(texture_rng, None))
    return video, scene


def _intrinsics(video) -> Intrinsics:
    k = video.intrinsics
    return Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"], video.size[1], video.size[0], "synthetic")


def test_unprojected_ground_truth_lies_on_the_scene_surfaces(world):
    """Each point of the ground-truth depth, moved to the world by the camera pose, is where a ray cast by the
    renderer towards it hits the scene (the same object): the pixel model and z-depth match the renderer's."""
    video, scene = world
    intrinsics = _intrinsics(video)
    for t in range(FRAMES):
        points = unproject(video.depth[t], intrinsics).reshape(-1, 3)
        assert np.all(points[:, 2] < 0)  # in front of the camera: z < 0
        pose = video.poses[t]
        world_points = points @ pose[:3, :3].T + pose[:3, 3]
        direction = world_points - pose[:3, 3]
        distance = np.linalg.norm(direction, axis=1)
        hits = _cast(scene.objects, t, pose[:3, 3], direction / distance[:, None])
        assert np.array_equal(hits.index, video.object_id[t].ravel())
        relative = np.abs(hits.depth - distance) / distance
        assert relative.max() < 1e-4


def test_a_half_pixel_error_in_the_ray_model_would_be_seen(world):
    """The check above is sharp: rays through pixel corners instead of centres leave the surfaces."""
    video, scene = world
    k = _intrinsics(video)
    shifted = Intrinsics(k.fx, k.fy, k.cx + 0.5, k.cy + 0.5, k.width, k.height)
    points = unproject(video.depth[0], shifted).reshape(-1, 3)
    pose = video.poses[0]
    direction = points @ pose[:3, :3].T
    distance = np.linalg.norm(direction, axis=1)
    hits = _cast(scene.objects, 0, pose[:3, 3], direction / distance[:, None])
    assert np.median(np.abs(hits.depth - distance) / distance) > 1e-3


def test_rays_follow_the_pixel_centre_convention():
    k = Intrinsics(10.0, 20.0, 2.0, 1.0)
    rays = pixel_rays(k, 2, 4)
    assert rays.shape == (2, 4, 3)
    np.testing.assert_allclose(rays[0, 0], [(0.5 - 2.0) / 10.0, -(0.5 - 1.0) / 20.0, -1.0])
    np.testing.assert_allclose(rays[1, 3], [(3.5 - 2.0) / 10.0, -(1.5 - 1.0) / 20.0, -1.0])


def test_ground_truth_depth_and_normals_agree_and_a_flipped_field_does_not(world):
    video, _ = world
    intrinsics = _intrinsics(video)
    result = depth_normal_consistency(video.depth, video.normal, intrinsics)
    assert result["mean_deg"] < 3.0, result
    assert result["compared_fraction"] > 0.35  # tiny frames: many pixels border a depth jump
    assert len(result["per_frame_deg"]) == FRAMES
    flipped = video.normal * np.array([-1.0, 1.0, 1.0], np.float32)  # x mirrored: a wrong axis convention
    assert depth_normal_consistency(video.depth, flipped, intrinsics)["mean_deg"] > 20.0
    rotated = video.normal[..., [1, 2, 0]]
    assert depth_normal_consistency(video.depth, rotated, intrinsics)["mean_deg"] > 45.0


def test_a_plane_gives_its_normal_and_no_edges():
    k = Intrinsics(50.0, 50.0, 16.0, 12.0)
    rays = pixel_rays(k, 24, 32)
    # plane through (0, 0, -2) with normal (0, 0.6, 0.8): n . (z r) = n . p0
    n = np.array([0.0, 0.6, 0.8])
    depth = (n @ np.array([0.0, 0.0, -2.0])) / (rays @ n)
    normals = normals_from_depth(depth, k)
    np.testing.assert_allclose(normals[1:-1, 1:-1], np.broadcast_to(n, (22, 30, 3)), atol=1e-9)
    assert np.isnan(normals[0]).all()
    assert not depth_edges(depth, 0.05).any()
    step = depth.copy()
    step[:, 16:] *= 1.5
    edges = depth_edges(step, 0.05)
    assert edges[:, 15:17].all() and edges.sum() == 2 * 24


def test_relative_depth_has_the_requested_median_and_zero_shift():
    disparity = np.array([[[1.0, 2.0], [4.0, 0.0]]])
    scale = relative_depth_scale(disparity, 3.0)
    depth = relative_depth(disparity, scale)
    assert np.isnan(depth[0, 1, 1])
    assert np.nanmedian(depth) == pytest.approx(3.0)
    assert depth[0, 0, 0] / depth[0, 0, 1] == pytest.approx(2.0)
