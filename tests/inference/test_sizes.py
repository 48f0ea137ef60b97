"""Each model's own input size: the rule, its defaults, its record and the options."""

from __future__ import annotations

import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.inference import InferenceSettings, inference_size, predict_frames
from bufferanytime.models import load_model
from tests.helpers import moving_pattern


@pytest.fixture(scope="module")
def da_v2(tiny_depth_prior):
    return load_model("depth", tiny_depth_prior)


@pytest.mark.parametrize(("size", "expected"), [
    ((375, 1242), (518, 1716)),  # KITTI: short side 518, as Depth Anything V2's processor (not 156x518)
    ((1080, 1920), (518, 921)),
    ((48, 64), (518, 691)),  # small frames are enlarged, as the processor does
    ((100, 1000), (207, 2072)),  # a 10:1 panorama: the long side is capped at 4 x 518
])
def test_depth_anything_v2_prior_uses_its_processors_short_side(da_v2, size, expected):
    assert inference_size(da_v2, *size) == expected


def test_options_replace_the_models_rule(da_v2):
    assert inference_size(da_v2, 1080, 1920, max_res=518) == (291, 518)  # --max-res caps the long side ...
    assert inference_size(da_v2, 48, 64, max_res=518) == (48, 64)  # ... and never enlarges
    assert inference_size(da_v2, 48, 64, short_side=96) == (96, 128)  # --short-side enlarges
    assert inference_size(da_v2, 375, 1242, short_side=518, max_res=1280) == (386, 1280)
    with pytest.raises(InputError, match="at least 14"):
        inference_size(da_v2, 48, 64, max_res=13)


def test_embedded_models_run_at_their_training_size():
    depth, normal = load_model("depth"), load_model("normal")
    assert inference_size(depth, 480, 640) == (126, 168)  # trained on 126x168 clips
    assert inference_size(normal, 480, 640) == (96, 128)  # trained on 96x128 clips
    assert inference_size(depth, 540, 960) == (94, 168)


def test_marigold_prior_uses_its_processing_resolution(tiny_normal_prior):
    assert inference_size(load_model("normal", tiny_normal_prior), 48, 64) == (576, 768)


def test_saved_model_keeps_its_input_size(da_v2, tmp_path):
    da_v2.input_size = {"short_side": 140, "long_side": 280, "upscale": False}
    try:
        da_v2.save_pretrained(tmp_path / "video")
    finally:
        da_v2.input_size = None
    loaded = load_model("depth", tmp_path / "video")
    assert inference_size(loaded, 480, 640) == (140, 187)
    assert inference_size(loaded, 48, 64) == (48, 64)  # upscale False: small frames stay as they are
    assert inference_size(load_model("depth", tmp_path / "video", per_frame=True), 480, 640) == (140, 187)


def test_predict_frames_feeds_the_model_at_that_size_and_answers_at_the_input_size(da_v2):
    seen = []
    original = da_v2.encode_frames

    def recording(images):
        seen.append(tuple(images.shape[-2:]))
        return original(images)

    da_v2.encode_frames = recording
    try:
        out = list(predict_frames(da_v2, iter(moving_pattern(frames=2, height=28, width=42)),
                                  InferenceSettings(device="cpu")))
    finally:
        del da_v2.encode_frames
    assert seen == [(518, 777)]
    assert [o.shape for o in out] == [(28, 42)] * 2 and all(np.isfinite(o).all() for o in out)
