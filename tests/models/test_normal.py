import json
import shutil

import pytest
import torch
from diffusers import MarigoldNormalsPipeline
from safetensors.torch import load_file

from bufferanytime.errors import InputError
from bufferanytime.models import VideoNormalModel, load_model
from bufferanytime.models.base import WEIGHTS_NAME
from bufferanytime.models.normal import (
    EMBEDDING_KEY,
    EMBEDDING_NAME,
    compute_empty_prompt_embedding,
    to_camera_axes,
)
from bufferanytime.testing import make_tiny_normal_prior
from tests.helpers import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny models gain nothing from intra-op threads; on a shared machine they only wait for each other."""
    with one_torch_thread():
        yield


def _perturb_temporal(model: VideoNormalModel, std: float = 0.5) -> None:
    """Move every zero-initialised output projection, as training would."""
    with torch.no_grad():
        for name, param in model.temporal.named_parameters():
            if "proj_out" in name:
                param.normal_(std=std)


def _frames(b=1, t=6, h=64, w=64, seed=0):
    torch.manual_seed(seed)
    return torch.rand(b, t, 3, h, w)


def test_fresh_video_model_equals_per_frame_prior(tiny_normal_prior):
    model = VideoNormalModel.from_prior(tiny_normal_prior).eval()
    frames = _frames(b=2, t=5)
    with torch.no_grad():
        video = model(frames)
        model.per_frame = True
        per_frame = model(frames)
    assert video.shape == (2, 5, 3, 64, 64)
    assert per_frame.std(dim=(1, 3, 4)).min() > 0.05  # the random prior's output depends on the image (0.18)
    assert (video - per_frame).abs().max().item() <= 1e-5


def test_per_frame_mode_is_diffusers_marigold_pipeline_with_our_axes(tiny_normal_prior):
    """Single step from a zero latent through diffusers' own pipeline, x flipped to our convention."""
    model = VideoNormalModel.from_prior(tiny_normal_prior, per_frame=True).eval()
    frames = _frames(t=3)
    pipe = MarigoldNormalsPipeline.from_pretrained(str(tiny_normal_prior), text_encoder=None, tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.empty_text_embedding = model.empty_prompt_embedding
    with torch.no_grad():
        ours = model(frames)[0]
        reference = pipe(
            frames[0],
            num_inference_steps=1,
            ensemble_size=1,
            processing_resolution=0,
            latents=torch.zeros(3, 4, 8, 8),
            batch_size=3,
            output_type="pt",
        ).prediction
    assert model.timestep == 999
    assert torch.allclose(ours, to_camera_axes(reference), atol=1e-6)
    assert torch.equal(to_camera_axes(reference)[:, 0], -reference[:, 0])
    assert torch.equal(to_camera_axes(reference)[:, 1:], reference[:, 1:])


def test_unet_loop_without_temporal_blocks_is_the_diffusers_unet(tiny_normal_prior):
    model = VideoNormalModel.from_prior(tiny_normal_prior).eval()
    torch.manual_seed(0)
    for size in ((8, 8), (6, 10)):  # the second needs diffusers' forward_upsample_size path
        sample = torch.randn(4, 8, *size)
        context = model.empty_prompt_embedding.repeat(4, 1, 1)
        with torch.no_grad():
            ours = model._unet(sample, num_frames=4, per_frame=True)
            fresh = model._unet(sample, num_frames=2, per_frame=False)
            reference = model.unet(sample, model.timestep, encoder_hidden_states=context).sample
        assert torch.allclose(ours, reference, atol=1e-6)
        assert torch.allclose(fresh, reference, atol=1e-6)


def test_only_temporal_parameters_train(tiny_normal_prior):
    model = VideoNormalModel.from_prior(tiny_normal_prior).train()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("temporal.") for n in names)
    assert {n.split(".")[1] for n in names} == {"down", "mid", "up"}
    assert len(model.temporal["down"]) == len(model.unet.down_blocks)
    assert len(model.temporal["up"]) == len(model.unet.up_blocks)
    assert model.trainable_parameters() == [p for n, p in model.named_parameters() if n in names]
    assert not model.unet.training and not model.vae.training and model.temporal.training

    torch.manual_seed(0)
    normals = model(_frames(t=4))
    (normals * torch.randn_like(normals)).sum().backward()
    assert all(p.grad is None for p in model.unet.parameters())
    assert all(p.grad is None for p in model.vae.parameters())
    out_projections = [p for n, p in model.temporal.named_parameters() if "proj_out.weight" in n]
    assert len(out_projections) == len(model.unet.down_blocks) + 1 + len(model.unet.up_blocks)
    # real gradients, not just allocated ones (measured: mean absolute value 13-82)
    assert all(p.grad.abs().mean() > 1.0 for p in out_projections)


def test_outputs_are_finite_unit_vectors_at_the_input_size(tiny_normal_prior):
    model = VideoNormalModel.from_prior(tiny_normal_prior).eval()
    _perturb_temporal(model)
    with torch.no_grad():
        normals = model(_frames(t=3, h=50, w=70))
        latents = model.encode_latents(_frames(t=3, h=50, w=70))
    assert normals.shape == (1, 3, 3, 50, 70)
    assert torch.isfinite(normals).all()
    assert torch.allclose(normals.norm(dim=2), torch.ones(1, 3, 50, 70), atol=1e-5)
    assert latents.shape == (1, 3, 4, 6, 8)  # 50x70 -> 48x64 (nearest multiples of 16) -> latents / 8


def test_stages_compose_to_forward_and_decode_in_chunks_equals_at_once(tiny_normal_prior):
    model = VideoNormalModel.from_prior(tiny_normal_prior).eval()
    _perturb_temporal(model)
    frames = _frames(t=7)
    with torch.no_grad():
        latents = model.predict_latents(model.encode_latents(frames))
        at_once = model.decode_latents(latents.flatten(0, 1)).unflatten(0, (1, 7))
        model.decode_chunk = 3
        chunked = model(frames)
    assert latents.shape == (1, 7, 4, 8, 8)
    assert (chunked - at_once).abs().max().item() <= 1e-4  # batch-size dependent rounding only


def test_temporal_blocks_mix_frames_once_trained(tiny_normal_prior):
    model = VideoNormalModel.from_prior(tiny_normal_prior).eval()
    _perturb_temporal(model)
    frames = _frames(t=4)
    changed = frames.clone()
    changed[:, 0] = torch.rand_like(changed[:, 0])
    with torch.no_grad():
        latents, latents_changed = model.encode_latents(frames), model.encode_latents(changed)
        video = model.predict_latents(latents)
        video_changed = model.predict_latents(latents_changed)
        per_frame = model.predict_latents(latents, per_frame=True)
        per_frame_changed = model.predict_latents(latents_changed, per_frame=True)
    assert (video[:, 3] - video_changed[:, 3]).abs().mean() > 1e-2  # frame 0 reaches frame 3 (measured 0.1)
    assert torch.equal(per_frame[:, 3], per_frame_changed[:, 3])  # ... but not frame by frame
    assert (video - per_frame).abs().mean() > 1e-2  # measured 0.3


def test_save_and_load_round_trip(tiny_normal_prior, tmp_path):
    model = VideoNormalModel.from_prior(tiny_normal_prior).eval()
    _perturb_temporal(model)
    frames = _frames(t=3)
    model.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["bufferanytime_model"] == "normal"
    assert config["clip_len"] == 32
    weights = load_file(str(tmp_path / "saved" / WEIGHTS_NAME))
    assert weights and all(k.startswith("temporal.") for k in weights)

    loaded = VideoNormalModel.from_pretrained(tmp_path / "saved").eval()
    registered = load_model("normal", tmp_path / "saved").eval()
    with torch.no_grad():
        expected = model(frames)
        assert torch.equal(loaded(frames), expected)
        assert torch.equal(registered(frames), expected)


def test_copy_prior_makes_a_self_contained_directory(tiny_normal_prior, tmp_path):
    prior = tmp_path / "prior-original"
    shutil.copytree(tiny_normal_prior, prior)
    model = VideoNormalModel.from_prior(prior).eval()
    _perturb_temporal(model)
    frames = _frames(t=3)
    with torch.no_grad():
        expected = model(frames)
    model.save_pretrained(tmp_path / "saved", copy_prior=True)
    shutil.rmtree(prior)

    copied = tmp_path / "saved" / "prior"
    assert json.loads((copied / "model_index.json").read_text())["_class_name"] == "MarigoldNormalsPipeline"
    assert (copied / EMBEDDING_NAME).is_file() and not (copied / "text_encoder").exists()
    loaded = load_model("normal", tmp_path / "saved").eval()
    with torch.no_grad():
        assert torch.equal(loaded(frames), expected)


def test_per_frame_model_of_a_trained_model_is_the_prior(tiny_normal_prior, tmp_path):
    model = VideoNormalModel.from_prior(tiny_normal_prior).eval()
    _perturb_temporal(model)
    model.save_pretrained(tmp_path / "saved")
    frames = _frames(t=4)
    baseline = load_model("normal", tmp_path / "saved", per_frame=True).eval()
    prior = load_model("normal", tiny_normal_prior).eval()
    assert isinstance(prior, VideoNormalModel)
    with torch.no_grad():
        expected = prior(frames)
        assert torch.equal(baseline(frames), expected)
        assert (model(frames) - expected).abs().max() > 1e-4


def test_empty_prompt_embedding_is_computed_once_from_a_text_encoder(tmp_path):
    prior = make_tiny_normal_prior(tmp_path / "with-text-encoder", text_encoder=True)
    assert not (prior / EMBEDDING_NAME).exists()
    model = VideoNormalModel.from_prior(prior).eval()
    embedding = compute_empty_prompt_embedding(prior)
    assert embedding.shape == (1, 2, model.unet.config.cross_attention_dim)  # BOS, EOS
    assert torch.equal(model.empty_prompt_embedding, embedding)

    VideoNormalModel.copy_prior(str(prior), tmp_path / "copy")
    assert torch.equal(load_file(str(tmp_path / "copy" / EMBEDDING_NAME))[EMBEDDING_KEY], embedding)
    copy = VideoNormalModel.from_prior(tmp_path / "copy").eval()
    frames = _frames(t=2)
    with torch.no_grad():
        assert torch.equal(copy(frames), model(frames))


def test_bad_prior_directories_are_input_errors(tiny_normal_prior, tmp_path):
    with pytest.raises(InputError, match="missing unet"):
        VideoNormalModel.from_prior(tmp_path)
    broken = tmp_path / "no-embedding"
    shutil.copytree(tiny_normal_prior, broken)
    (broken / EMBEDDING_NAME).unlink()
    with pytest.raises(InputError, match="text_encoder"):
        load_model("normal", broken)


def test_layer_layout_has_a_block_after_every_resnet_attention_pair(tiny_normal_prior, tmp_path):
    """The paper's (AnimateDiff UNetMotion) layout: fresh it is the prior; trained it mixes frames; it round-trips."""
    stage = VideoNormalModel.from_prior(tiny_normal_prior)
    model = VideoNormalModel.from_prior(tiny_normal_prior, temporal={"layout": "layer"}).eval()
    unet = model.unet
    pairs = sum(len(b.attentions or b.resnets) if hasattr(b, "attentions") else len(b.resnets)
                for b in [*unet.down_blocks, *unet.up_blocks]) + len(unet.mid_block.attentions)
    assert len(model._temporal_sites) == pairs == 7 and len(stage._temporal_sites) == 5
    assert set(model.trainable_state_dict()).isdisjoint(stage.trainable_state_dict())
    frames = _frames(t=4)
    with torch.no_grad():
        fresh = model(frames)
        prior = model.predict_latents(model.encode_latents(frames), per_frame=True)
        assert torch.equal(model.predict_latents(model.encode_latents(frames)), prior)
        _perturb_temporal(model)
        trained = model(frames)
    assert (trained - fresh).abs().mean() > 1e-2
    model.save_pretrained(tmp_path / "layer")
    assert json.loads((tmp_path / "layer" / "config.json").read_text())["temporal"]["layout"] == "layer"
    with torch.no_grad():
        assert torch.equal(load_model("normal", tmp_path / "layer").eval()(frames), trained)
    with pytest.raises(ValueError, match="unknown temporal layout"):
        VideoNormalModel.from_prior(tiny_normal_prior, temporal={"layout": "everywhere"})


def test_hooks_are_gone_after_each_call(tiny_normal_prior):
    """Temporal blocks enter the U-Net only for the duration of a call: the library model is left unchanged."""
    model = VideoNormalModel.from_prior(tiny_normal_prior).eval()
    _perturb_temporal(model)
    hooks_before = [len(m._forward_hooks) for m in model.modules()]
    with torch.no_grad():
        model(_frames(t=2))
    assert [len(m._forward_hooks) for m in model.modules()] == hooks_before
    assert not any(m._forward_hooks for m in model.unet.modules())
