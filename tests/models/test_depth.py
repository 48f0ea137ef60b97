import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import DepthAnythingForDepthEstimation

from bufferanytime.models import VideoDepthModel, load_model
from bufferanytime.models.base import WEIGHTS_NAME


def _prior_per_frame(prior_dir, frames, model):
    prior = DepthAnythingForDepthEstimation.from_pretrained(str(prior_dir)).eval()
    b, t, _, h, w = frames.shape
    with torch.no_grad():
        return prior(pixel_values=model.preprocess(frames.flatten(0, 1))).predicted_depth.reshape(b, t, h, w)


def test_fresh_video_model_equals_prior_per_frame(tiny_depth_prior):
    torch.manual_seed(0)
    model = VideoDepthModel.from_prior(tiny_depth_prior).eval()
    frames = torch.rand(2, 5, 3, 56, 84)
    with torch.no_grad():
        video = model(frames)
    model.per_frame = True
    with torch.no_grad():
        per_frame = model(frames)
    assert video.shape == (2, 5, 56, 84)
    output_range = (per_frame.max() - per_frame.min()).item()
    assert output_range > 0.1  # the tiny prior's output varies with the image: the comparison below means something
    assert (video - per_frame).abs().max().item() <= 1e-5 * output_range


def test_per_frame_mode_is_exactly_the_transformers_prior(tiny_depth_prior):
    model = VideoDepthModel.from_prior(tiny_depth_prior, per_frame=True).eval()
    frames = torch.rand(1, 3, 3, 42, 70)
    with torch.no_grad():
        ours = model(frames)
    reference = _prior_per_frame(tiny_depth_prior, frames, model)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_only_head_and_temporal_parameters_train(tiny_depth_prior):
    torch.manual_seed(0)
    model = VideoDepthModel.from_prior(tiny_depth_prior).train()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("neck.", "head.", "temporal.")) for n in names)
    assert any(n.startswith("temporal.") for n in names) and any(n.startswith("head.") for n in names)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not model.backbone.training  # frozen parts stay in eval mode
    model(torch.rand(1, 3, 3, 28, 28)).mean().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    # real gradients, not just allocated ones (measured: mean absolute value 0.2 in the head, 0.015 temporal)
    assert model.head.conv3.weight.grad.abs().mean() > 1e-2
    for block in model.temporal:  # zero-initialised output projections: the first thing a fresh block learns
        assert block.proj_out.weight.grad.abs().mean() > 1e-3


def test_save_and_load_round_trip(tiny_depth_prior, tmp_path):
    torch.manual_seed(0)
    model = VideoDepthModel.from_prior(tiny_depth_prior).eval()
    for block in model.temporal:
        torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    model.clip_len = 12
    model.save_pretrained(tmp_path / "video")
    config = json.loads((tmp_path / "video" / "config.json").read_text())
    assert config["bufferanytime_model"] == "depth" and config["clip_len"] == 12
    saved = load_file(str(tmp_path / "video" / WEIGHTS_NAME))
    assert saved and all(k.startswith(("neck.", "head.", "temporal.")) for k in saved)

    frames = torch.rand(1, 4, 3, 28, 42)
    loaded = load_model("depth", tmp_path / "video").eval()
    assert loaded.clip_len == 12
    with torch.no_grad():
        assert torch.equal(loaded(frames), model(frames))
        # per-frame from a trained model is the untouched prior, not the fine-tuned head without temporal blocks
        baseline = load_model("depth", tmp_path / "video", per_frame=True).eval()(frames)
    assert torch.allclose(baseline, _prior_per_frame(tiny_depth_prior, frames, model), atol=1e-6)


def test_copy_prior_makes_a_self_contained_directory(tiny_depth_prior, tmp_path):
    model = VideoDepthModel.from_prior(tiny_depth_prior)
    model.save_pretrained(tmp_path / "video", copy_prior=True)
    assert json.loads((tmp_path / "video" / "config.json").read_text())["prior"] == "prior"
    moved = tmp_path / "moved"
    (tmp_path / "video").rename(moved)
    frames = torch.rand(1, 2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(load_model("depth", moved).eval()(frames), model.eval()(frames))


def test_temporal_blocks_follow_the_first_three_fusion_layers_and_only_during_a_call(tiny_depth_prior):
    model = VideoDepthModel.from_prior(tiny_depth_prior).eval()
    layers = model.neck.fusion_stage.layers
    assert [site for site, _ in model._temporal_sites] == list(layers[:3])
    hooks_before = [len(m._forward_hooks) for m in model.modules()]  # transformers may hook modules itself
    with torch.no_grad():
        for p in model.temporal.parameters():
            p.normal_(std=0.05)
        model(torch.rand(1, 2, 3, 42, 56))
    assert [len(m._forward_hooks) for m in model.modules()] == hooks_before
    with pytest.raises(ValueError, match="one temporal layout"):
        VideoDepthModel.from_prior(tiny_depth_prior, temporal={"layout": "layer"})
