"""The footage's camera motion along its axis (``adapt.footage.forward_motion``) and the regularization weight an
adaptation takes from it: lower where depth is steady along the flow."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bufferanytime.adapt import run
from bufferanytime.adapt.footage import FORWARD_MOTION, Segment, Span, forward_motion
from bufferanytime.adapt.record import RECORD_NAME
from bufferanytime.synthetic import render_video
from tests.adapt.conftest import FRAMES, SIZE


def _segment(frames: np.ndarray) -> Segment:
    return Segment(Span(0, 0, len(frames), False), frames)


def _texture(seed: int, size: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize((rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8), (size, size),
                      interpolation=cv2.INTER_CUBIC)


def _zoom(texture: np.ndarray, rate: float, frames: int = 10, out: tuple[int, int] = (120, 160)) -> np.ndarray:
    """A camera moving into a flat textured wall: each frame the image expands by ``rate`` about its centre."""
    centre = (texture.shape[1] / 2, texture.shape[0] / 2)
    shots = []
    for t in range(frames):
        matrix = cv2.getRotationMatrix2D(centre, 0.0, (1 + rate) ** t)
        warped = cv2.warpAffine(texture, matrix, texture.shape[1::-1], flags=cv2.INTER_LINEAR)
        y, x = (texture.shape[0] - out[0]) // 2, (texture.shape[1] - out[1]) // 2
        shots.append(warped[y : y + out[0], x : x + out[1]])
    return np.stack(shots)


def _pan(texture: np.ndarray, step: int, frames: int = 10, out: tuple[int, int] = (120, 160)) -> np.ndarray:
    return np.stack([texture[50 : 50 + out[0], 20 + step * t : 20 + step * t + out[1]] for t in range(frames)])


@pytest.mark.parametrize("rate", [0.02, 0.04, -0.03])
def test_a_camera_moving_along_its_axis_is_measured_by_the_image_s_expansion(rate):
    measured = np.mean([forward_motion([_segment(_zoom(_texture(seed), rate))]) for seed in range(3)])
    assert measured == pytest.approx(abs(rate), rel=0.25)
    assert measured >= FORWARD_MOTION


def test_a_panning_camera_has_no_motion_along_its_axis():
    measured = [forward_motion([_segment(_pan(_texture(seed), step=3))]) for seed in range(3)]
    assert max(measured) < FORWARD_MOTION / 4


def test_the_synthetic_world_s_cameras_are_told_apart():
    """Driving straight ahead against turning on the spot, as the validation clips of the domain-shift benchmark."""
    size = (96, 128)
    dolly = [forward_motion([_segment(render_video(s, 12, size, camera="dolly").rgb)]) for s in range(3)]
    rotate = [forward_motion([_segment(render_video(s, 12, size, camera="rotate").rgb)]) for s in range(3)]
    assert np.median(dolly) >= FORWARD_MOTION > np.median(rotate)
    assert np.mean(dolly) > 3 * np.mean(rotate)


def test_the_default_weight_follows_the_motion_for_depth_only(tmp_path):
    from bufferanytime.models import load_model

    depth = load_model("depth")
    low, high = run.default_w_reg(depth, FORWARD_MOTION / 2), run.default_w_reg(depth, FORWARD_MOTION * 2)
    assert low < high == run.default_w_reg(depth)
    normal = load_model("normal")
    assert run.default_w_reg(normal, 0.0) == run.default_w_reg(normal, 1.0) == run.default_w_reg(normal)


@pytest.mark.parametrize("given", [None, 0.7])
def test_an_adaptation_records_the_motion_and_uses_its_weight_unless_one_is_given(tmp_path, given, capsys):
    from bufferanytime.cli.main import main

    frames = render_video(3, FRAMES, SIZE, flicker=0.3, camera="rotate").rgb
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.ascontiguousarray(frame[..., ::-1]))
    out = tmp_path / "model"
    option = [] if given is None else ["--w-reg", str(given)]
    assert main(["adapt", "depth", str(folder), "-o", str(out), "--budget", "2steps", *option]) == 0
    record = json.loads((out / RECORD_NAME).read_text())
    captured = capsys.readouterr()
    said = captured.out + captured.err
    if given is None:
        from bufferanytime.models import load_model

        motion = record["footage_forward_motion"]
        assert record["settings"]["w_reg"] == run.default_w_reg(load_model("depth"), motion)
        assert "camera motion along its axis: little" in said
    else:
        assert record["settings"]["w_reg"] == given and "footage_forward_motion" not in record
