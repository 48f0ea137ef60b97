"""A temporal block equals its definition, written out plainly here, within 1e-4 of the output's range: the fast
paths (chunks of pixels, group statistics per frame, the norm as one multiply-add, cached streaming) change how
the arithmetic is arranged, never what it computes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bufferanytime.models.temporal import (
    KVCache,
    TemporalBlock,
    TemporalConfig,
    attention_layers,
    sinusoidal_positions,
    streaming,
)
from tests.helpers import one_torch_thread

TOLERANCE = 1e-4  # of the output's range


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def _rotate(x: torch.Tensor, positions: torch.Tensor, max_period: float) -> torch.Tensor:
    """Rotary embedding, channel i paired with i + dim/2, angles in float64."""
    half = x.shape[-1] // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    angles = positions.double()[:, None] * freqs[None]
    cos, sin = torch.cos(angles).float(), torch.sin(angles).float()
    first, second = x[..., :half], x[..., half : 2 * half]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def _reference_layer(layer, x: torch.Tensor, horizon: int | None, max_period: float) -> torch.Tensor:
    """One attention layer on ``(S, T, dim)`` sequences, head by head, as the definition reads."""
    seqs, frames, dim = x.shape
    h = F.layer_norm(x, (dim,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
    if horizon is None:
        h = h + sinusoidal_positions(frames, dim, max_period)
    q, k, v = (h @ layer.to_qkv.weight.T).chunk(3, dim=-1)
    heads, outputs = layer.num_heads, []
    t = torch.arange(frames)
    allowed = torch.ones(frames, frames, dtype=torch.bool) if horizon is None else (
        (t[:, None] - t[None] >= 0) & (t[:, None] - t[None] < horizon))
    for i in range(heads):
        part = slice(i * dim // heads, (i + 1) * dim // heads)
        qh, kh, vh = q[..., part], k[..., part], v[..., part]
        if horizon is not None:
            qh, kh = _rotate(qh, t, max_period), _rotate(kh, t, max_period)
        scores = (qh @ kh.transpose(-1, -2)) / math.sqrt(qh.shape[-1])
        outputs.append(scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ vh)
    x = x + layer.to_out(torch.cat(outputs, dim=-1))
    return x + layer.ff(layer.norm2(x))


def _reference_block(block: TemporalBlock, x: torch.Tensor, frames: int, horizon: int | None) -> torch.Tensor:
    """``x + block(x)`` on ``(T, C, H, W)`` maps of one clip."""
    t, c, height, width = x.shape
    y = F.group_norm(x, block.norm.num_groups, block.norm.weight, block.norm.bias, block.norm.eps)
    y = block.proj_in(y.permute(2, 3, 0, 1).reshape(height * width, t, c))
    for layer in block.layers:
        y = _reference_layer(layer, y, horizon, layer.max_period)
    return x + block.proj_out(y).reshape(height, width, t, c).permute(2, 3, 0, 1)


def _random_block(channels: int, causal: bool, seed: int) -> TemporalBlock:
    torch.manual_seed(seed)
    block = TemporalBlock(channels, TemporalConfig(num_heads=8, causal=causal, horizon=4 if causal else None))
    torch.nn.init.normal_(block.proj_out.weight, std=0.3)
    torch.nn.init.normal_(block.norm.weight, mean=1.0, std=0.3)
    torch.nn.init.normal_(block.norm.bias, std=0.3)
    return block.eval()


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_block_equals_its_definition_on_both_paths(causal, monkeypatch):
    import bufferanytime.models.temporal as temporal

    monkeypatch.setattr(temporal, "CHUNK_ROWS", 7 * 13)  # 13 pixels per chunk: 99 pixels in 8 uneven chunks
    block = _random_block(64, causal, seed=3)
    x = (torch.randn(7, 64, 9, 11) * 2 + 3).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = _reference_block(block, x, 7, 4 if causal else None)
        lean = block(x, 7)  # the inference path (channels-last, no gradients)
    with torch.enable_grad():
        autograd = block(x.contiguous(), 7).detach()
    scale = float(expected.max() - expected.min())
    assert float((lean - x).abs().max()) > 0.1 * scale  # the block does change its input
    for got in (lean, autograd):
        assert float((got - expected).abs().max()) <= TOLERANCE * scale


def test_streamed_frames_equal_the_definition():
    """One frame at a time through the caches: each equals the offline definition's frame."""
    block = _random_block(64, True, seed=4)
    x = (torch.randn(9, 64, 5, 6) * 2 + 3).contiguous(memory_format=torch.channels_last)
    layers = attention_layers(block)
    caches = [KVCache(4) for _ in layers]
    with torch.no_grad():
        expected = _reference_block(block, x, 9, 4)
        streamed = []
        for position in range(9):
            for cache in caches:
                cache.position = position
            with streaming(layers, caches):
                streamed.append(block(x[position : position + 1], 1))
    scale = float(expected.max() - expected.min())
    assert float((torch.cat(streamed) - expected).abs().max()) <= TOLERANCE * scale


def test_streamed_frames_under_bf16_autocast_stay_within_bf16_rounding_of_the_definition():
    """A bf16 cache is read through float32 work space (the conversion path): within bf16 rounding."""
    block = _random_block(64, True, seed=5)
    x = (torch.randn(9, 64, 5, 6) * 2 + 3).contiguous(memory_format=torch.channels_last)
    layers = attention_layers(block)
    caches = [KVCache(4, scratch={}) for _ in layers]
    with torch.no_grad():
        expected = _reference_block(block, x, 9, 4)
        streamed = []
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for position in range(9):
                for cache in caches:
                    cache.position = position
                with streaming(layers, caches):
                    streamed.append(block(x[position : position + 1], 1).float())
    assert caches[0].buffers[0][0].dtype == torch.bfloat16
    scale = float(expected.max() - expected.min())
    difference = (torch.cat(streamed) - expected).abs()
    assert float(difference.max()) <= 2e-2 * scale
    assert float(difference.mean()) <= 2e-3 * scale
