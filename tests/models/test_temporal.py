import pytest
import torch

from bufferanytime.models.temporal import (
    TemporalAttentionLayer,
    TemporalBlock,
    TemporalConfig,
    set_gradient_checkpointing,
    sinusoidal_positions,
)
from tests.helpers import one_torch_thread, saved_bytes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a second thread only adds synchronisation, which a busy machine makes very slow."""
    with one_torch_thread():
        yield


def test_fresh_block_is_identity_and_trains_away_from_it():
    torch.manual_seed(0)
    block = TemporalBlock(16, TemporalConfig(num_layers=2, num_heads=4))
    x = torch.randn(2 * 5, 16, 3, 4)
    assert torch.equal(block(x, num_frames=5), x)
    torch.nn.init.normal_(block.proj_out.weight)
    assert not torch.allclose(block(x, num_frames=5), x)


def test_attention_mixes_frames_of_one_pixel_only_and_block_runs_on_any_length():
    torch.manual_seed(0)
    layer = TemporalAttentionLayer(8, num_heads=2, ff_mult=2, max_period=10000.0)
    x = torch.randn(4, 7, 8)  # 4 pixels, 7 frames
    x2 = x.clone()
    x2[1, 3] += torch.randn(8)  # change frame 3 of pixel 1
    diff = (layer(x2) - layer(x)).abs().sum(dim=-1)  # (pixels, frames)
    assert diff[1].min() > 0  # every frame of that pixel sees the change
    assert diff[[0, 2, 3]].max() == 0  # no other pixel does

    block = TemporalBlock(8, TemporalConfig(num_layers=1, num_heads=2))
    torch.nn.init.normal_(block.proj_out.weight)
    long = torch.randn(200, 8, 1, 1)  # longer than any training clip
    assert torch.isfinite(block(long, num_frames=200)).all()


def test_sinusoidal_positions_distinguish_frames():
    enc = sinusoidal_positions(300, 32, 10000.0)
    assert enc.shape == (300, 32)
    dist = torch.cdist(enc, enc) + torch.eye(300) * 1e3
    assert dist.min() > 1e-3


def test_block_gives_the_same_output_and_gradients_in_chunks(monkeypatch):
    import bufferanytime.models.temporal as temporal

    torch.manual_seed(0)
    block = TemporalBlock(16, TemporalConfig(num_layers=2, num_heads=4))
    torch.nn.init.normal_(block.proj_out.weight)
    x = torch.randn(2 * 5, 16, 6, 7, requires_grad=True)
    whole = block(x, num_frames=5)
    (grad_whole,) = torch.autograd.grad(whole.square().sum(), x)
    monkeypatch.setattr(temporal, "CHUNK_ROWS", 5 * 9)  # 9 pixels per chunk: 84 pixels in 10 uneven chunks
    chunked = block(x, num_frames=5)
    (grad_chunked,) = torch.autograd.grad(chunked.square().sum(), x)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_chunked, grad_whole, rtol=1e-5, atol=1e-5)


def _saved_bytes_and_grads(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, list[torch.Tensor]]:
    kept, out = saved_bytes(lambda: model(x, num_frames=5))
    return kept, list(torch.autograd.grad(out.square().sum(), [x, *model.parameters()]))


def test_gradient_checkpointing_keeps_less_for_the_same_gradients():
    torch.manual_seed(0)
    block = TemporalBlock(16, TemporalConfig(num_layers=2, num_heads=4))
    torch.nn.init.normal_(block.proj_out.weight)
    x = torch.randn(2 * 5, 16, 6, 7, requires_grad=True)
    kept, grads = _saved_bytes_and_grads(block, x)
    with torch.no_grad():
        inferred = block(x, num_frames=5)
    set_gradient_checkpointing(block, True)
    kept_checkpointed, grads_checkpointed = _saved_bytes_and_grads(block, x)
    assert kept_checkpointed < 0.5 * kept
    for a, b in zip(grads_checkpointed, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.no_grad():  # inference is untouched
        assert torch.equal(block(x, num_frames=5), inferred)
    set_gradient_checkpointing(block, False)
    assert not block.gradient_checkpointing


def test_position_encoding_is_built_once_per_length_and_equals_the_definition():
    layer = TemporalAttentionLayer(16, 2, 2, 10000.0)
    first = layer.positions(5, 16, torch.device("cpu"), torch.float32)
    assert layer.positions(5, 16, torch.device("cpu"), torch.float32) is first
    assert torch.equal(first, sinusoidal_positions(5, 16, 10000.0))
    assert layer.positions(7, 16, torch.device("cpu"), torch.float32).shape == (7, 16)


def test_inference_path_writes_chunks_into_the_output_with_the_values_of_the_autograd_path(monkeypatch):
    """Without gradients a channels-last clip takes the memory-lean path: the values of the path
    training uses, causal or not, with uneven chunks: within float rounding in fp32 (the group norm's statistics
    are summed in another order), within bf16 rounding under bf16 autocast."""
    import bufferanytime.models.temporal as temporal

    monkeypatch.setattr(temporal, "CHUNK_ROWS", 5 * 9)  # 9 pixels per chunk: 42 pixels in 5 uneven chunks
    lean_calls = []
    lean_path = TemporalBlock._forward_lean
    monkeypatch.setattr(TemporalBlock, "_forward_lean",
                        lambda self, *args: lean_calls.append(1) or lean_path(self, *args))
    for causal, seed in ((False, 0), (True, 1)):
        torch.manual_seed(seed)
        config = TemporalConfig(num_layers=2, num_heads=4, causal=causal, horizon=3 if causal else None)
        block = TemporalBlock(16, config)
        torch.nn.init.normal_(block.proj_out.weight, std=0.5)
        torch.nn.init.normal_(block.norm.weight, mean=1.0, std=0.3)
        torch.nn.init.normal_(block.norm.bias, std=0.3)
        x = (torch.randn(5, 16, 6, 7) * 3 + 1).contiguous(memory_format=torch.channels_last)
        for autocast, tolerance in ((False, 1e-6), (True, 1e-2)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                with torch.enable_grad():
                    reference = block(x, num_frames=5)
                with torch.no_grad():
                    lean = block(x, num_frames=5)
            assert lean.dtype == reference.dtype
            assert lean.is_contiguous(memory_format=torch.channels_last)
            assert (lean - x).abs().max() > 0.1  # the block does change its input
            scale = float(reference.detach().max() - reference.detach().min())
            difference = (lean - reference.detach()).abs()
            assert float(difference.max()) <= tolerance * scale
            assert float(difference.mean()) <= tolerance * scale / 10
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.no_grad():
                own = x.clone(memory_format=torch.channels_last)  # a copy the block may overwrite, not x itself
                in_place = block(own, num_frames=5, inplace=True)
            assert in_place.data_ptr() == own.data_ptr()  # the result is written into its input
            assert torch.equal(in_place, lean)  # and is the same as written into a new tensor
    assert len(lean_calls) == 8  # the no-grad calls only
