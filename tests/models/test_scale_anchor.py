"""The metric scale anchor: a metric video model's windows held at the frozen prior's scale in windowed inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bufferanytime.families.depth_anything_v2 import make_tiny_metric_prior
from bufferanytime.inference import InferenceSettings, predict_frames
from bufferanytime.models import VideoDepthModel


@pytest.fixture(scope="module")
def metric_prior(tmp_path_factory):
    return make_tiny_metric_prior(tmp_path_factory.mktemp("metric_prior"), seed=3)


def _frames(count: int = 12, seed: int = 0) -> list[np.ndarray]:
    """A smooth moving pattern, so that the tiny prior's depth varies within and between frames."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 10, 3)).astype(np.float32)
    out = []
    for i in range(count):
        big = np.kron(np.roll(base, i % 10, axis=1), np.ones((8, 8, 1)))
        out.append(np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8))
    return out


def _predict(model: VideoDepthModel, frames: list[np.ndarray]) -> np.ndarray:
    settings = InferenceSettings(window=6, overlap=2, precision="fp32", device="cpu")
    return np.stack(list(predict_frames(model.eval(), iter(frames), settings)))


def _drifted(prior, factor: float) -> VideoDepthModel:
    """A video model whose trained head puts every depth at about ``factor`` times the prior's (the last layer's
    bias moved: what drift in training does to a metric model's scale), with trained-looking temporal blocks."""
    torch.manual_seed(1)
    model = VideoDepthModel.from_prior(prior)
    with torch.no_grad():
        for block in model.temporal:
            for p in block.parameters():
                p.add_(0.05 * torch.randn_like(p))
        conv = model.head.conv3
        # sigmoid(x) * max_depth: shifting x by log(factor) scales small depths by about factor
        conv.bias.add_(float(np.log(factor)))
    return model


def _log_median_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per frame: median log a minus median log b."""
    return np.median(np.log(a.reshape(len(a), -1)), 1) - np.median(np.log(b.reshape(len(b), -1)), 1)


def test_anchor_holds_a_drifted_model_at_the_prior_scale(metric_prior):
    frames = _frames()
    prior = _predict(VideoDepthModel.from_prior(metric_prior, per_frame=True), frames)
    model = _drifted(metric_prior, 0.6)
    drifted = _predict(model, frames)
    model.set_scale_anchor(1)
    anchored = _predict(model, frames)
    assert np.mean(_log_median_ratio(drifted, prior)) < np.log(0.8)  # the drift is real
    # every frame of every window is an anchor: each window's mean log-median ratio is 0, so the video's is near 0
    assert abs(np.mean(_log_median_ratio(anchored, prior))) < 0.03
    # one factor per window: the shape within a window is the video model's own
    ratio = anchored[:4] / drifted[:4]
    assert np.allclose(ratio, ratio.flat[0], rtol=1e-4)


def test_anchor_on_a_model_fresh_from_its_prior_changes_nothing(metric_prior):
    frames = _frames(8)
    model = VideoDepthModel.from_prior(metric_prior)
    plain = _predict(model, frames)
    model.set_scale_anchor(2)
    assert np.allclose(_predict(model, frames), plain, rtol=1e-5)


def test_anchor_decodes_the_prior_on_every_stride_th_encoded_frame(metric_prior):
    model = VideoDepthModel.from_prior(metric_prior)
    model.set_scale_anchor(3)
    seen = []
    model.prior_decoder["head"].register_forward_hook(lambda module, args, out: seen.append(len(out)))
    frames = _frames(6)
    _predict(model, frames)  # one window of 6 frames, encoded in one chunk of 4 and one of 2
    assert sum(seen) == 2 + 1


def test_anchor_is_saved_and_loads_with_the_prior_own_decoder(metric_prior, tmp_path):
    model = _drifted(metric_prior, 0.6)
    model.set_scale_anchor(2)
    model.save_pretrained(tmp_path / "anchored")
    loaded = VideoDepthModel.from_pretrained(tmp_path / "anchored")
    assert loaded.scale_anchor == 2
    prior = VideoDepthModel.from_prior(metric_prior)
    for name, value in prior.head.state_dict().items():  # the frozen copy is the prior's, not the trained head
        assert torch.equal(loaded.prior_decoder["head"].state_dict()[name], value)
    assert not torch.equal(loaded.head.conv3.bias, prior.head.conv3.bias)
    assert not any(p.requires_grad for p in loaded.prior_decoder.parameters())
    assert not any(name.startswith("prior_decoder.") for name in loaded.trainable_state_dict())
    frames = _frames(8)
    assert np.allclose(_predict(loaded, frames), _predict(model, frames), rtol=1e-5)
    per_frame = VideoDepthModel.from_pretrained(tmp_path / "anchored", per_frame=True)
    assert per_frame.scale_anchor is None and per_frame.prior_decoder is None  # the prior alone needs no anchor


def test_anchor_needs_a_metric_prior_and_a_positive_stride(metric_prior, tiny_depth_prior):
    with pytest.raises(ValueError, match="relative"):
        VideoDepthModel.from_prior(tiny_depth_prior).set_scale_anchor(2)
    with pytest.raises(ValueError, match="at least 1"):
        VideoDepthModel.from_prior(metric_prior).set_scale_anchor(0)
    model = VideoDepthModel.from_prior(metric_prior)
    model.set_scale_anchor(2)
    model.set_scale_anchor(None)
    assert model.prior_decoder is None and "scale_anchor" not in model.config_dict()
