"""The chunked window decoding of the video depth model equals the library's neck and head with hooked blocks."""

import pytest
import torch

from bufferanytime.models import VideoDepthModel
from bufferanytime.models.depth import DECODE_CHUNK
from bufferanytime.models.temporal import set_gradient_checkpointing, temporal_hooks
from bufferanytime.testing import make_sized_depth_prior
from tests.helpers import saved_bytes


def _library_decode(model: VideoDepthModel, features: list[torch.Tensor], frames: int, size) -> torch.Tensor:
    """The reference: transformers' neck forward with the blocks hooked after fusion layers 0-2, then the head."""
    patch_h, patch_w = size[0] // model.patch_size, size[1] // model.patch_size
    with temporal_hooks(model._temporal_sites, frames):
        fused = model.neck(features, patch_h, patch_w)
    return model.head(fused, patch_h, patch_w)


def _random_blocks(model: VideoDepthModel) -> VideoDepthModel:
    torch.manual_seed(1)
    for block in model.temporal:
        torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    return model.eval()


@pytest.fixture(scope="module")
def small_architecture(tmp_path_factory):
    return make_sized_depth_prior(tmp_path_factory.mktemp("small") / "prior", "small")


@pytest.mark.parametrize("prior", ["tiny", "small"])
def test_chunked_window_decoding_equals_the_library_neck(prior, tiny_depth_prior, small_architecture):
    model = _random_blocks(VideoDepthModel.from_prior(tiny_depth_prior if prior == "tiny" else small_architecture))
    clips, frames, size = 2, DECODE_CHUNK + 3, (42, 70)  # chunks that do not divide the window, two clips
    with torch.no_grad():
        features = model.encode_frames(torch.rand(clips * frames, 3, *size))
        reference = _library_decode(model, features, frames, size)
        ours = model.decode_head(features, frames, size)
        without_blocks = model.head(model.neck(features, size[0] // 14, size[1] // 14), size[0] // 14, size[1] // 14)
    output_range = (reference.max() - reference.min()).item()
    assert output_range > 0.1
    assert (reference - without_blocks).abs().max().item() > 1e-2 * output_range  # the blocks really act
    assert (ours - reference).abs().max().item() <= 1e-4 * output_range


def test_chunked_window_decoding_gives_the_same_gradients(tiny_depth_prior):
    model = _random_blocks(VideoDepthModel.from_prior(tiny_depth_prior)).train()
    size, frames = (28, 42), DECODE_CHUNK + 1
    features = model.encode_frames(torch.rand(frames, 3, *size))
    grads = []
    for decode in (_library_decode, VideoDepthModel.decode_head):
        model.zero_grad()
        decode(model, features, frames, size).square().mean().backward()
        # fusion layer 0's residual unit has no input in the library either: it gets no gradient in both
        grads.append(torch.cat([p.grad.flatten() if p.grad is not None else torch.full((p.numel(),), torch.nan)
                                for p in model.trainable_parameters()]))
    assert torch.equal(grads[0].isnan(), grads[1].isnan())
    reference, ours = grads[0].nan_to_num(), grads[1].nan_to_num()
    assert reference.abs().max() > 0
    # float32 summation order differs between the paths (CI saw 1.2e-4 of the largest gradient); a wrong gradient
    # is off by its own size
    assert (reference - ours).abs().max() <= 1e-3 * reference.abs().max()


def _saved_bytes_and_grads(model: VideoDepthModel, features: list[torch.Tensor], frames: int, size):
    """Bytes of the tensors autograd keeps for the backward pass of one decode, and the trainable gradients."""
    kept, out = saved_bytes(lambda: model.decode_head(features, frames, size))
    params = [p for p in model.trainable_parameters() if p.requires_grad]
    grads = torch.autograd.grad(out.square().mean(), params, allow_unused=True)
    return kept, [g for g in grads if g is not None]


def test_gradient_checkpointing_recomputes_the_head_for_the_same_gradients(tiny_depth_prior):
    model = _random_blocks(VideoDepthModel.from_prior(tiny_depth_prior)).train()
    size, frames = (56, 84), 2 * DECODE_CHUNK + 1
    features = model.encode_frames(torch.rand(frames, 3, *size))
    kept, grads = _saved_bytes_and_grads(model, features, frames, size)
    model.gradient_checkpointing = True  # the model's own layers only, not its temporal blocks
    kept_checkpointed, grads_checkpointed = _saved_bytes_and_grads(model, features, frames, size)
    assert kept_checkpointed < 0.8 * kept  # the full-resolution head maps (a third of what the decoding kept)
    assert len(grads_checkpointed) == len(grads) > 0
    for a, b in zip(grads_checkpointed, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    set_gradient_checkpointing(model, False)  # the model's flag with its blocks'
    assert not model.gradient_checkpointing
    set_gradient_checkpointing(model, True)
    assert model.gradient_checkpointing and all(block.gradient_checkpointing for block in model.temporal)
