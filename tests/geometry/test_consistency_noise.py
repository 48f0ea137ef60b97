"""The depth-normal consistency check on depth like a real sensor's: quantised to millimetres, with Kinect-like
noise and range, checked against its own exact normals. Central differences give tens of degrees there; planes
fitted over a wider footprint stay within the target of 3 degrees, and the footprint barely biases exact depth."""

from __future__ import annotations

import numpy as np
import pytest

from bufferanytime.cli import consistency as cli
from bufferanytime.geometry import consistency
from bufferanytime.geometry.consistency import depth_normal_consistency
from bufferanytime.geometry.intrinsics import Intrinsics
from bufferanytime.synthetic import render_video
from tests.helpers import run_main

SIZE = (240, 320)
SEEDS = (0, 1, 2, 3)
FOOTPRINT = 8
KINECT_RANGE = (0.5, 4.0)  # metres; outside it the sensor gives no depth (0)


def kinect_like(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Axial noise of a Kinect v1 (std 1.2 mm + 1.9 mm (z - 0.4 m)^2, Nguyen, Izadi and Lovell 2012), stored in
    millimetres, no depth outside the range."""
    sigma = 0.0012 + 0.0019 * (depth - 0.4) ** 2
    noisy = np.round((depth + sigma * rng.standard_normal(depth.shape)) * 1000.0) / 1000.0
    return np.where((depth > KINECT_RANGE[0]) & (depth < KINECT_RANGE[1]), noisy, 0.0)


@pytest.fixture(scope="module")
def frames():
    out = []
    for seed in SEEDS:
        video = render_video(seed, 1, SIZE)
        k = video.intrinsics
        camera = Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"], SIZE[1], SIZE[0], "synthetic")
        exact = video.depth[0].astype(np.float64)
        out.append((kinect_like(exact, np.random.default_rng(seed)), exact, video.normal[0], camera))
    return out


def _angle(frames, which: int, footprint: int) -> list[float]:
    return [depth_normal_consistency([f[which]], [f[2]], f[3], footprint=footprint)["mean_deg"] for f in frames]


def test_sensor_depth_within_three_degrees_with_a_wider_footprint(frames):
    central = _angle(frames, 0, 0)
    fitted = _angle(frames, 0, FOOTPRINT)
    assert min(central) > 10.0  # one-pixel differences meet millimetre steps and noise
    assert np.mean(fitted) <= 3.0 and max(fitted) < 4.0, fitted


def test_the_footprint_barely_biases_exact_depth(frames):
    exact = _angle(frames, 1, FOOTPRINT)
    assert max(exact) < 1.6, exact


def test_a_crease_is_not_blurred():
    """A ridge of two planes meeting at a right angle (a box's edge) seen head on: next to it the off-centre windows
    keep each face's normal, where the centred window would average the two faces."""
    h, w, f = 40, 60, 50.0
    x = (np.arange(w) + 0.5 - w / 2) / f
    y = -(np.arange(h) + 0.5 - h / 2) / f
    rays = np.stack(np.broadcast_arrays(x[None, :], y[:, None], -np.ones((h, w))), axis=-1)
    apex = np.array([0.0, 0.0, -3.0])
    faces = np.array([[-1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]) / np.sqrt(2)  # left and right, facing the camera
    depth = np.max([(apex @ n) / (rays @ n) for n in faces], axis=0)  # the ridge: the farther plane is seen
    points = depth[..., None] * rays
    fitted = consistency.plane_normals(points, 4, np.zeros((h, w), bool))
    row = h // 2
    for col, face in ((w // 2 - 2, faces[0]), (w // 2 + 1, faces[1])):  # 2 and 1 pixels from the crease
        assert np.degrees(np.arccos(np.clip(fitted[row, col] @ face, -1, 1))) < 0.5
    assert np.isnan(fitted[:4]).all() and np.isnan(fitted[:, -4:]).all()  # windows leaving the image


def test_the_footprint_option_is_checked(tmp_path, capsys):
    assert cli.MAX_FOOTPRINT == consistency.MAX_FOOTPRINT
    code, err = run_main(capsys, "consistency", str(tmp_path), "--footprint", "40")
    assert code == 2 and err == [f"error: --footprint must be 0 to {cli.MAX_FOOTPRINT} pixels, got 40"]
