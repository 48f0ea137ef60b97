"""StreamingPredictor: one frame at a time equals the offline causal forward; constant memory; refusals."""

import pytest
import torch

from bufferanytime.errors import InputError
from bufferanytime.inference.streaming import NOT_CAUSAL, StreamingPredictor
from bufferanytime.models import VideoDepthModel, VideoNormalModel
from bufferanytime.models.temporal import TemporalBlock
from tests.helpers import one_torch_thread

HORIZON = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def _causal_model(kind, depth_prior, normal_prior, horizon=HORIZON):
    """A tiny causal model whose temporal blocks are far from identity (every weight random)."""
    cls, prior = (VideoDepthModel, depth_prior) if kind == "depth" else (VideoNormalModel, normal_prior)
    model = cls.from_prior(prior, temporal={"causal": True, "horizon": horizon, "num_heads": 2}).eval()
    generator = torch.Generator().manual_seed(1)
    for block in model.modules():
        if isinstance(block, TemporalBlock):
            for p in block.parameters():
                p.data = torch.randn(p.shape, generator=generator) * 0.3
    return model


def _offline_and_streamed(model, frames):
    with torch.no_grad():
        offline = model(frames[None])[0]
    predictor = StreamingPredictor(model)
    streamed = torch.stack([predictor.step(frame) for frame in frames])
    return offline, streamed, predictor


@pytest.mark.parametrize("kind", ["depth", "normal"])
def test_streaming_equals_the_offline_causal_forward(kind, tiny_depth_prior, tiny_normal_prior):
    model = _causal_model(kind, tiny_depth_prior, tiny_normal_prior)
    torch.manual_seed(0)
    frames = torch.rand(3 * HORIZON + 1, 3, 64, 64)
    offline, streamed, _ = _offline_and_streamed(model, frames)
    with torch.no_grad():
        model.per_frame = True
        per_frame = model(frames[None])[0]
        model.per_frame = False
    output_range = (offline.max() - offline.min()).item()
    assert streamed.shape == offline.shape
    # the temporal blocks change the output: the equality below is not that of two per-frame passes
    assert (offline - per_frame).abs().max().item() > 0.05 * output_range
    assert (streamed - offline).abs().max().item() <= 1e-4 * output_range


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cache_memory_is_constant_after_the_first_frame(precision, tiny_depth_prior, tiny_normal_prior):
    """The key/value ring buffers and the attention's work space (one, shared by all layers) are allocated on the
    first frame and then only written in place."""
    model = _causal_model("depth", tiny_depth_prior, tiny_normal_prior)
    predictor = StreamingPredictor(model, precision=precision)
    frames = torch.rand(4 * HORIZON, 3, 56, 56)
    sizes, pointers = [], []
    for frame in frames:
        predictor.step(frame)
        sizes.append(predictor.cache_bytes())
        held = [t for c in predictor.caches for group in (*c.buffers.values(), *c.scratch.values()) for t in group]
        pointers.append([t.data_ptr() for t in held])
    assert sizes[0] > 0 and len(set(sizes)) == 1  # allocated once, for H frames
    assert all(p == pointers[0] for p in pointers)  # written in place, never reallocated
    assert all(c.scratch is predictor.caches[0].scratch for c in predictor.caches)
    assert predictor.frames_seen == len(frames)


def test_reset_starts_a_new_stream(tiny_depth_prior, tiny_normal_prior):
    model = _causal_model("depth", tiny_depth_prior, tiny_normal_prior)
    predictor = StreamingPredictor(model)
    frames = torch.rand(4, 3, 56, 56)
    first = predictor.step(frames[0])
    for frame in frames[1:]:
        predictor.step(frame)
    predictor.reset()
    assert predictor.frames_seen == 0
    torch.testing.assert_close(predictor.step(frames[0]), first, rtol=0, atol=1e-6)


def test_a_bidirectional_model_or_a_bad_frame_is_refused(tiny_depth_prior, tiny_normal_prior):
    with pytest.raises(InputError, match=NOT_CAUSAL):
        StreamingPredictor(VideoDepthModel.from_prior(tiny_depth_prior))
    predictor = StreamingPredictor(_causal_model("depth", tiny_depth_prior, tiny_normal_prior))
    with pytest.raises(InputError, match="must be"):
        predictor.step(torch.rand(1, 3, 56, 56))
