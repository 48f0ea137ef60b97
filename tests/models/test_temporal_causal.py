"""Causal temporal blocks: horizon mask, rotary (relative) frame positions, zero init, config round trip."""

import pytest
import torch

from bufferanytime.models import VideoDepthModel, VideoNormalModel
from bufferanytime.models.temporal import (
    TemporalAttentionLayer,
    TemporalBlock,
    TemporalConfig,
    attention_layers,
    make_causal,
    pixels_last_attention,
    rotary_tables,
)
from tests.helpers import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def test_causal_frame_sees_only_itself_and_the_horizon_before_it():
    torch.manual_seed(0)
    horizon = 3
    layer = TemporalAttentionLayer(8, num_heads=2, ff_mult=2, max_period=10000.0, horizon=horizon)
    x = torch.randn(4, 9, 8)
    x2 = x.clone()
    x2[1, 4] += torch.randn(8)  # change frame 4 of pixel 1
    diff = (layer(x2) - layer(x)).abs().sum(dim=-1)[1]
    assert diff[4 : 4 + horizon].min() > 1e-4  # frames 4, 5, 6 see it
    assert diff[:4].max() == 0 and diff[4 + horizon :].max() == 0  # the past and frames beyond the horizon do not


def test_causal_output_depends_on_frame_offsets_only_not_on_absolute_positions():
    torch.manual_seed(0)
    horizon = 4
    layer = TemporalAttentionLayer(16, num_heads=2, ff_mult=2, max_period=10000.0, horizon=horizon)
    x = torch.randn(5, 20, 16)
    full = layer(x)
    for t in (horizon - 1, 10, 19):
        alone = layer(x[:, t - horizon + 1 : t + 1])  # the same frames at positions 0..H-1 instead of t-H+1..t
        torch.testing.assert_close(alone[:, -1], full[:, t], rtol=0, atol=1e-5)


def test_rotary_tables_are_precise_far_into_a_stream():
    positions = torch.tensor([3, 10**7 + 3])
    cos, sin = rotary_tables(positions, 8, 10000.0, torch.float32)
    exact = torch.tensor([3.0, 10**7 + 3.0], dtype=torch.float64)[:, None] / 10000.0 ** (torch.arange(4) / 4)[None]
    assert torch.allclose(cos[:, :4].double(), torch.cos(exact), atol=1e-6)
    assert torch.allclose(sin[:, :4].double(), torch.sin(exact), atol=1e-6)


def test_fresh_causal_block_is_identity():
    torch.manual_seed(0)
    block = TemporalBlock(16, TemporalConfig(num_heads=4, causal=True, horizon=3))
    x = torch.randn(2 * 6, 16, 3, 4)
    assert torch.equal(block(x, num_frames=6), x)


def test_config_needs_a_horizon_when_causal_and_old_configs_load_unchanged():
    with pytest.raises(ValueError, match="horizon"):
        TemporalConfig(causal=True)
    with pytest.raises(ValueError, match="causal"):
        TemporalConfig(horizon=4)
    old = {"num_layers": 2, "num_heads": 8, "head_dim": None, "ff_mult": 4, "norm_groups": 32, "max_period": 1e4}
    config = TemporalConfig(**old)
    assert not config.causal and config.horizon is None
    assert TemporalConfig(**TemporalConfig(causal=True, horizon=5).to_dict()) == TemporalConfig(causal=True, horizon=5)


def test_make_causal_keeps_the_weights_and_changes_the_config(tiny_depth_prior):
    model = VideoDepthModel.from_prior(tiny_depth_prior)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    make_causal(model, 4)
    assert model.temporal_config.causal and model.temporal_config.horizon == 4
    assert all(layer.horizon == 4 for layer in attention_layers(model))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kind", ["depth", "normal"])
def test_untrained_causal_model_equals_its_prior_exactly(kind, tiny_depth_prior, tiny_normal_prior, tmp_path):
    cls, prior = (VideoDepthModel, tiny_depth_prior) if kind == "depth" else (VideoNormalModel, tiny_normal_prior)
    model = cls.from_prior(prior, temporal={"causal": True, "horizon": 3}).eval()
    frames = torch.rand(1, 5, 3, 64, 64)
    with torch.no_grad():
        video = model(frames)
        model.per_frame = True
        per_frame = model(frames)
    output_range = (per_frame.max() - per_frame.min()).item()
    assert output_range > 0.1
    # the same bound as the bidirectional test (tests/models/test_depth.py): x + 0 through another memory layout
    assert (video - per_frame).abs().max().item() <= 1e-5 * output_range
    model.per_frame = False
    model.save_pretrained(tmp_path / "m", copy_prior=True)
    loaded = cls.from_pretrained(tmp_path / "m")
    assert loaded.temporal_config.causal and loaded.temporal_config.horizon == 3
    assert all(layer.horizon == 3 for layer in attention_layers(loaded))


def _pixels_last(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """:func:`pixels_last_attention` on pixels-first inputs (``(s, heads, n, d)``), back to ``(s, heads, 1, d)``."""
    s, heads, n, d = keys.shape
    scores, out = torch.empty(n, heads, s), torch.empty(heads, d, s)
    converted = () if dtype == torch.float32 else (torch.empty(n + 2, heads, s), torch.empty(heads, d, s))
    pixels_last_attention(q[:, :, 0].permute(1, 2, 0).float(), keys.permute(2, 1, 3, 0).to(dtype),
                          values.permute(2, 1, 3, 0).to(dtype), scores, out, *converted)
    return out.permute(2, 0, 1)[:, :, None]


@pytest.mark.parametrize("cached", [1, 3, 10])
def test_cached_attention_equals_the_library_kernel(cached):
    generator = torch.Generator().manual_seed(cached)
    q = torch.randn(37, 4, 1, 5, generator=generator)
    keys, values = (torch.randn(37, 4, cached, 5, generator=generator) for _ in range(2))
    expected = torch.nn.functional.scaled_dot_product_attention(q, keys, values)
    got = _pixels_last(q, keys, values, torch.float32)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)
    # a bf16 cache is read through float32 work space: the library kernel on the same bf16-rounded keys and values
    rounded = [t.bfloat16().float() for t in (keys, values)]
    assert torch.allclose(_pixels_last(q, keys, values, torch.bfloat16),
                          torch.nn.functional.scaled_dot_product_attention(q, *rounded), atol=1e-5)
    if cached > 1:  # the weights really depend on the keys: changing one cached frame changes the output
        keys[:, :, 0] += 1.0
        assert not torch.allclose(_pixels_last(q, keys, values, torch.float32), expected, atol=1e-3)
