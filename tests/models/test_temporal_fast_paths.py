"""The inference paths of the temporal blocks give the values of the plain modules: the streamed layer (projection
into the ring buffers, scale and rotation folded into the weight, chunks of any size) and the fused or BLAS
linear + residual."""

from __future__ import annotations

import pytest
import torch

import bufferanytime.models.temporal as temporal
from bufferanytime.models.temporal import (
    KVCache,
    TemporalBlock,
    TemporalConfig,
    apply_rotary,
    attention_layers,
    linear_add,
    rotary_columns,
    rotary_tables,
    streaming,
)
from tests.helpers import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def _offline_and_streamed(block: TemporalBlock, x: torch.Tensor, horizon: int) -> tuple:
    layers = attention_layers(block)
    caches = [KVCache(horizon, scratch={}) for _ in layers]
    streamed = []
    with torch.no_grad():
        offline = block(x.contiguous(), len(x))  # the autograd layout's path: the library attention with a mask
        for position in range(len(x)):
            for cache in caches:
                cache.position = position
            with streaming(layers, caches):
                streamed.append(block(x[position : position + 1], 1))
    return offline, torch.cat(streamed), caches


def test_streamed_frames_in_uneven_chunks_equal_the_offline_causal_block(monkeypatch):
    """Every chunk of pixels has its own ring buffer; 30 pixels in chunks of 7 (the last one of 2)."""
    monkeypatch.setattr(temporal, "STREAM_CHUNK_ROWS", 7)
    torch.manual_seed(0)
    block = TemporalBlock(16, TemporalConfig(num_heads=4, causal=True, horizon=3)).eval()
    torch.nn.init.normal_(block.proj_out.weight, std=0.5)
    x = torch.randn(8, 16, 5, 6).contiguous(memory_format=torch.channels_last)
    offline, streamed, caches = _offline_and_streamed(block, x, 3)
    assert [len(cache.buffers) for cache in caches] == [5, 5]
    scale = float(offline.max() - offline.min())
    assert float((offline - x).abs().max()) > 0.1 * scale  # the block does change its input
    assert float((streamed - offline).abs().max()) <= 1e-5 * scale


def _rotation(position: int, dim: int) -> torch.Tensor:
    """The rotary embedding at ``position`` as a matrix: column j is the rotation of unit vector j."""
    cos, sin = rotary_tables(torch.tensor([position]), dim, 10000.0, torch.float64)
    return apply_rotary(torch.eye(dim, dtype=torch.float64), cos, sin).T.float()


@pytest.mark.parametrize("dim", [6, 7])
def test_the_projection_weight_is_rotated_and_scaled_by_the_rotary_tables_far_into_a_stream(dim):
    position = 10**7 + 3
    cos, sin = rotary_tables(torch.tensor([position]), dim, 10000.0, torch.float32)
    columns = rotary_columns(position, dim, 10000.0)
    torch.testing.assert_close(torch.cat(columns, 1).T, torch.cat([cos, sin]), rtol=0, atol=1e-6)
    weight = torch.randn(3 * 2 * dim, 4)  # 2 heads
    cache = KVCache(2)
    cache.position = position
    rotated = cache.qkv_weight(weight, 2, 10000.0)
    heads = weight.view(6, dim, 4)
    torch.testing.assert_close(rotated[: 2 * dim].view(2, dim, 4), _rotation(position, dim) @ heads[:2] * dim**-0.5)
    torch.testing.assert_close(rotated[2 * dim : 4 * dim].view(2, dim, 4), _rotation(position, dim) @ heads[2:4])
    torch.testing.assert_close(rotated[4 * dim :], weight[4 * dim :])
    cache.position += 1  # the next frame: rotated in the same buffer, by the next position's rotation
    assert cache.qkv_weight(weight, 2, 10000.0).data_ptr() == rotated.data_ptr()
    torch.testing.assert_close(rotated[2 * dim : 3 * dim], _rotation(position + 1, dim) @ heads[2])


@pytest.mark.parametrize("transposed", [False, True])
def test_linear_add_equals_the_linear_layer_plus_the_residual(transposed):
    torch.manual_seed(1)
    linear = torch.nn.Linear(8, 8)
    x = torch.randn(8, 37).T if transposed else torch.randn(37, 8)
    residual = torch.randn(37, 8)
    with torch.no_grad():
        torch.testing.assert_close(linear_add(linear, x, residual), residual + linear(x), rtol=1e-5, atol=1e-5)
