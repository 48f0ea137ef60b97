"""The inference path of bidirectional temporal blocks: the attention channels first, vectorised over pixels, and
the fused linear layers, hold the values of the library's attention and of the unfused layers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bufferanytime.models.temporal as temporal
from bufferanytime.models.temporal import TemporalBlock, TemporalConfig, channels_first_attention
from tests.helpers import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a second thread only adds synchronisation, which a busy machine makes very slow."""
    with one_torch_thread():
        yield


@pytest.mark.parametrize("long_window", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_first_attention_is_the_library_attention(dtype, long_window, monkeypatch):
    """Queries, keys and values as the projection writes them channels first, (3 * heads * d, frames * pixels):
    the values of F.scaled_dot_product_attention on the same numbers (float32 arithmetic either way), whether a
    short window's multiply-adds or a long window's library kernel on a few pixels at a time (here 2 per step, so
    the last step holds 1) computes them."""
    monkeypatch.setattr(temporal, "LIBRARY_ATTENTION_FRAMES", 6 if long_window else 1 << 30)
    monkeypatch.setattr(temporal, "LIBRARY_ATTENTION_ROWS", 2 * 6)
    calls = []
    real = temporal._library_attention
    monkeypatch.setattr(temporal, "_library_attention", lambda *args: calls.append(1) or real(*args))
    torch.manual_seed(0)
    heads, dim_head, frames, pixels = 4, 8, 6, 11
    qkv = (torch.randn(3 * heads * dim_head, frames * pixels) * 2).to(dtype)
    work = torch.full((1 << 16,), float("nan"))  # stale work space must not leak into the result
    out = channels_first_attention(qkv, heads, frames, work)
    q, k, v = qkv.float().view(3, heads, dim_head, frames, pixels).permute(0, 4, 1, 3, 2)  # (pixels, heads, T, d)
    expected = F.scaled_dot_product_attention(q, k, v).permute(1, 3, 2, 0).reshape(heads * dim_head, -1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert len(calls) == int(long_window)


@pytest.mark.parametrize("long_window", [False, True])
def test_bidirectional_blocks_take_the_channels_first_path_with_the_autograd_values(monkeypatch, long_window):
    """Uneven chunks, the values of the training path within float rounding (fp32) and bf16 rounding (autocast),
    with either attention of the channels-first path; causal blocks keep their own path."""
    monkeypatch.setattr(temporal, "CHUNK_ROWS", 5 * 9)  # 9 pixels per chunk: 42 pixels in 5 uneven chunks
    monkeypatch.setattr(temporal, "LIBRARY_ATTENTION_FRAMES", 5 if long_window else 1 << 30)
    monkeypatch.setattr(temporal, "LIBRARY_ATTENTION_ROWS", 4 * 5)  # 4 pixels per step: 9 in 3 uneven steps
    calls = []
    real = TemporalBlock._channels_first_sequences
    monkeypatch.setattr(TemporalBlock, "_channels_first_sequences",
                        lambda self, *args: calls.append(1) or real(self, *args))
    torch.manual_seed(0)
    block = TemporalBlock(16, TemporalConfig(num_layers=2, num_heads=4))
    for parameter in block.parameters():
        nn.init.normal_(parameter, std=0.3)
    x = (torch.randn(5, 16, 6, 7) * 3 + 1).contiguous(memory_format=torch.channels_last)
    for autocast, tolerance in ((False, 1e-6), (True, 2e-2)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            with torch.enable_grad():
                reference = block(x, num_frames=5).detach()
            with torch.no_grad():
                lean = block(x, num_frames=5)
        assert lean.dtype == reference.dtype
        scale = float(reference.max() - reference.min())
        assert float((lean - reference).abs().max()) <= tolerance * scale
    assert len(calls) == 2 * 5
    causal = TemporalBlock(16, TemporalConfig(num_layers=1, num_heads=4, causal=True, horizon=2))
    with torch.no_grad():
        causal(x, num_frames=5)
    assert len(calls) == 2 * 5


def test_fused_linear_layers_equal_the_unfused_ones_and_fall_back(monkeypatch):
    torch.manual_seed(0)
    linear, x, residual = nn.Linear(8, 12), torch.randn(10, 8), torch.randn(10, 12)
    torch.testing.assert_close(temporal.linear_gelu(linear, x), F.gelu(linear(x)), rtol=0, atol=1e-6)
    torch.testing.assert_close(temporal.linear_add(linear, x, residual), residual + linear(x), rtol=0, atol=1e-6)
    monkeypatch.setattr(temporal, "_FUSED_LINEAR", {torch.float32: False})  # a build or CPU without the fused op
    assert torch.equal(temporal.linear_gelu(linear, x), F.gelu(linear(x)))
    assert torch.equal(temporal.linear_add(linear, x, residual), residual + linear(x))
