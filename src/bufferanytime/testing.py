"""Tiny random-weight priors in the exact on-disk format of the real ones, for tests and benchmarks.

Like the test suites of transformers and diffusers, these build the real classes with tiny configs, so every
code path that loads a real Depth Anything V2 or Marigold checkpoint runs on them unchanged.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import DepthAnythingForDepthEstimation


def depth_anything_config(
    hidden: int, layers: int, heads: int, out_indices: list[int], neck: list[int], fusion: int, mlp_ratio: int,
    head_hidden: int,
):
    """A relative-depth Depth Anything config: a DINOv2 backbone (patch 14, ``hidden`` wide, ``layers`` deep) whose
    ``out_indices`` layers feed a DPT neck of widths ``neck`` fused at ``fusion`` channels."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(
        image_size=518,
        patch_size=14,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        mlp_ratio=mlp_ratio,
        out_indices=out_indices,
        reshape_hidden_states=False,
        apply_layernorm=True,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=hidden,
        neck_hidden_sizes=neck,
        fusion_hidden_size=fusion,
        head_hidden_size=head_hidden,
        depth_estimation_type="relative",
    )


def tiny_depth_config(hidden_size: int = 32, layers: int = 4, fusion: int = 32, heads: int = 2):
    """A Depth Anything config with a tiny DINOv2 backbone (patch 14), same structure as DA-V2-Small."""
    neck = [hidden_size // 2, hidden_size, hidden_size * 2, hidden_size * 2]
    out_indices = list(range(1, layers + 1))[-4:]
    return depth_anything_config(hidden_size, layers, heads, out_indices, neck, fusion, mlp_ratio=2, head_hidden=16)


def make_informative(prior: DepthAnythingForDepthEstimation) -> None:
    """Re-initialise a random Depth Anything's DPT neck and head in place so its disparity varies with the image.

    The library's default initialisation makes a random DPT's output constant (1.0 +- 1e-6: activations shrink
    layer after layer), so tests could not see a wrong resize, colour order or frame order, and training kills its
    last ReLU. Fan-in scaled weights keep activations O(1), like a real prior; the last bias keeps the ReLU active.
    Draws from torch's global generator: seed it first.
    """
    for module in [*prior.neck.modules(), *prior.head.modules()]:
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            fan_in = module.weight[0].numel() if isinstance(module, torch.nn.Conv2d) else module.weight[:, 0].numel()
            torch.nn.init.normal_(module.weight, std=fan_in**-0.5)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    torch.nn.init.constant_(prior.head.conv3.bias, 1.0)


def make_tiny_prior(kind: str, path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random prior of ``kind`` ("depth" or "normal") to ``path`` and return the path.

    ``depth``: a ``DepthAnythingForDepthEstimation`` directory (``config.json`` + safetensors), loadable with
    ``VideoDepthModel.from_prior``, whose disparity varies with the image (see :func:`make_informative`).
    ``normal``: a Marigold-layout directory (see :func:`make_tiny_normal_prior`).
    """
    if kind not in TINY_PRIORS:
        raise ValueError(f"unknown prior kind {kind!r}; expected one of {', '.join(TINY_PRIORS)}")
    return TINY_PRIORS[kind](Path(path), seed=seed)


def make_tiny_depth_prior(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny informative random Depth Anything prior to ``path`` (seeding torch's global generator with
    ``seed``) and return the path."""
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(tiny_depth_config())
    make_informative(model)
    model.save_pretrained(path)
    return Path(path)


def metric_config(config, max_depth: int):
    """A copy of a Depth Anything ``config`` for metric depth: transformers' head then ends in a sigmoid times
    ``max_depth`` (metres), as the Depth Anything V2 Metric checkpoints (20 m indoor, 80 m outdoor)."""
    metric = copy.deepcopy(config)
    metric.depth_estimation_type = "metric"
    metric.max_depth = int(max_depth)  # transformers' DepthAnythingConfig types it as an int
    return metric


def make_tiny_metric_prior(path: str | Path, seed: int = 0, max_depth: int = 20) -> Path:
    """Write a tiny informative random METRIC Depth Anything prior to ``path`` and return the path.

    Its depth (metres, in ``(0, max_depth)``) varies with the image like :func:`make_tiny_depth_prior`'s disparity,
    and its last layer is set so that the typical output is a few metres, far from the sigmoid's flat ends.
    """
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(metric_config(tiny_depth_config(), max_depth))
    make_informative(model)
    torch.nn.init.normal_(model.head.conv3.weight, std=0.1)
    torch.nn.init.constant_(model.head.conv3.bias, -1.5)  # sigmoid(-1.5) * 20 m = 3.6 m
    model.save_pretrained(path)
    return Path(path)


# The published Depth Anything V2 sizes (ViT width, depth, heads, DPT input layers, neck widths, fusion width),
# from the configs of depth-anything/Depth-Anything-V2-{Small,Base,Large}-hf.
DEPTH_ANYTHING_V2_SIZES = {
    "small": (384, 12, 6, [3, 6, 9, 12], [48, 96, 192, 384], 64),
    "base": (768, 12, 12, [3, 6, 9, 12], [96, 192, 384, 768], 128),
    "large": (1024, 24, 16, [5, 12, 18, 24], [256, 512, 1024, 1024], 256),
}


def make_sized_depth_prior(path: str | Path, size: str = "small", seed: int = 0) -> Path:
    """Random weights in the architecture of Depth Anything V2 ``size`` (small, base, large), for benchmarks.

    Costs what the real prior of that size costs, so speed and memory figures measured on it carry over.
    """
    from transformers import DepthAnythingForDepthEstimation

    hidden, layers, heads, out_indices, neck, fusion = DEPTH_ANYTHING_V2_SIZES[size]
    config = depth_anything_config(hidden, layers, heads, out_indices, neck, fusion, mlp_ratio=4, head_hidden=32)
    torch.manual_seed(seed)
    prior = DepthAnythingForDepthEstimation(config)
    make_informative(prior)
    prior.save_pretrained(path)
    return path


def tiny_normal_components(seed: int = 0) -> dict:
    """Tiny random instances of the real classes, in the Marigold-E2E-FT (Stable Diffusion 2) configuration."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 32, 32),  # four levels: downsampling by 8, like Stable Diffusion's VAE
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    # Random decoders give near-zero vectors at some pixels, where normalising amplifies rounding noise; like a
    # real normals model, lean the output towards the camera (z) so every pixel has a well-defined direction.
    with torch.no_grad():
        vae.decoder.conv_out.bias[2] += 1.0
    scheduler = sd2_scheduler()
    # The empty prompt tokenises to BOS + EOS: two tokens of cross_attention_dim features.
    embedding = torch.randn(1, 2, unet.config.cross_attention_dim)
    return {"unet": unet, "vae": vae, "scheduler": scheduler, "embedding": embedding}


def sd2_scheduler():
    """Stable Diffusion 2's scheduler config (v-prediction), with the trailing spacing of E2E-FT inference."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )


def normal_prior_components(seed: int = 0) -> dict:
    """The embedded normal prior's architecture (``train-prior normal``): the Marigold classes, scaled down.

    A 3-level VAE (downsampling by 4, so that a small decoder keeps detail) and a 2-level U-Net with
    cross-attention on the stored empty-prompt embedding, v-prediction DDIM scheduler with trailing spacing.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=8, sample_size=128,
    )
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=8, out_channels=4, block_out_channels=(48, 96), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=48, attention_head_dim=(4, 8), use_linear_projection=True, norm_num_groups=16,
    )
    embedding = torch.randn(1, 2, unet.config.cross_attention_dim) * 0.5
    return {"vae": vae, "unet": unet, "scheduler": sd2_scheduler(), "embedding": embedding}


def _tiny_text_encoder(hidden_size: int, work_dir: Path):
    """A tiny CLIP tokenizer (BOS/EOS/pad and one word) and text encoder of width ``hidden_size``."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2, "a</w>": 3}
    (work_dir / "vocab.json").write_text(json.dumps(vocab))
    (work_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        vocab_file=str(work_dir / "vocab.json"),
        merges_file=str(work_dir / "merges.txt"),
        pad_token="!",
        model_max_length=77,
    )
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    return tokenizer, CLIPTextModel(config).eval()


def make_tiny_normal_prior(path: str | Path, seed: int = 0, text_encoder: bool = False) -> Path:
    """Write a tiny random Marigold-layout normals prior to ``path`` and return the path.

    By default the empty-prompt embedding is stored (``empty_prompt_embedding.safetensors``) and there is no text
    encoder; ``text_encoder=True`` writes a tiny ``text_encoder/`` + ``tokenizer/`` instead, like a real checkpoint.
    """
    from bufferanytime.models.normal import write_marigold_prior

    path = Path(path)
    parts = tiny_normal_components(seed)
    if not text_encoder:
        write_marigold_prior(path, parts["unet"], parts["vae"], parts["scheduler"], parts["embedding"])
        return path
    with tempfile.TemporaryDirectory() as work_dir:
        tokenizer, encoder = _tiny_text_encoder(parts["unet"].config.cross_attention_dim, Path(work_dir))
        write_marigold_prior(
            path, parts["unet"], parts["vae"], parts["scheduler"], None, text_encoder=encoder, tokenizer=tokenizer
        )
    return path


#: The tiny prior of each kind of video model (see :func:`make_tiny_prior`).
TINY_PRIORS = {"depth": make_tiny_depth_prior, "normal": make_tiny_normal_prior}
