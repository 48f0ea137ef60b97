"""Cost of the two temporal-block layouts of the video normal model: parameters and time per frame.

``TemporalConfig.layout``: "stage" puts one block after every down block, the mid block and every up block of the
U-Net (today's embedded model: 9 blocks on Stable Diffusion 2); "layer" puts one after every resnet/attention
pair, where AnimateDiff's UNetMotion (the architecture the paper adapts) has its motion modules (21 on SD2).
This measures, in one run, the U-Net + temporal blocks stage (``predict_latents``; the VAE is the same for both)
on random latents, alternating the layouts (and the prior alone, frame by frame, as a reference) so that machine
load hits all alike; it prints medians and ratios against the "stage" layout measured in the same run.

Models: the embedded tiny normal prior (its own input size) and a U-Net in the Stable Diffusion 2 configuration
of Marigold-E2E-FT with random weights (costs what the real one costs). Usage:

    python benchmarks/motion_layout.py [--repeats 3] [--frames 4] [--latent 32] [--skip-sd2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import UNet2DConditionModel

from bufferanytime.models import MODELS, VideoNormalModel
from bufferanytime.models.base import read_config
from bufferanytime.models.temporal import TemporalBlock, TemporalConfig
from bufferanytime.testing import tiny_normal_components

LAYOUTS = ("stage", "layer")

# Marigold-E2E-FT's U-Net: Stable Diffusion 2's, with 8 input channels (RGB latents + noise latents).
SD2_UNET = {
    "sample_size": 96,
    "in_channels": 8,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}
SD2_PROMPT_TOKENS = 2  # the empty prompt: BOS + EOS


def tiny_models() -> dict[str, VideoNormalModel]:
    """The embedded normal model's prior, per frame and with each layout."""
    prior = MODELS.get("tiny-synthetic")["normal"] / "prior"
    models = {"prior": VideoNormalModel.from_prior(prior, per_frame=True)}
    for layout in LAYOUTS:
        models[layout] = VideoNormalModel.from_prior(prior, temporal=TemporalConfig(layout=layout))
    return models


def sd2_models() -> dict[str, VideoNormalModel]:
    """An SD2-sized U-Net (random weights, shared by all three) with a tiny VAE, which is not timed."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD2_UNET).eval()
    parts = tiny_normal_components()
    embedding = torch.randn(1, SD2_PROMPT_TOKENS, SD2_UNET["cross_attention_dim"])

    def build(**kwargs) -> VideoNormalModel:
        return VideoNormalModel(unet, parts["vae"], parts["scheduler"], embedding, **kwargs)

    models = {"prior": build(per_frame=True)}
    for layout in LAYOUTS:
        models[layout] = build(temporal=TemporalConfig(layout=layout))
    return models


def perturb(model: VideoNormalModel) -> None:
    """Non-zero output projections, so no block can be skipped as a no-op (it is not: same cost either way)."""
    with torch.no_grad():
        for name, p in model.temporal.named_parameters():
            if "proj_out" in name:
                p.normal_(std=0.02)


def temporal_macs_per_frame(model: VideoNormalModel, latents: torch.Tensor) -> float:
    """Multiply-adds of the temporal blocks' linear layers per frame (rows x weights; attention over a few
    frames adds little), counted on one call: a machine-independent measure of their cost."""
    linear = {block: sum(m.weight.numel() for m in block.modules() if isinstance(m, torch.nn.Linear))
              for block in model.temporal.modules() if isinstance(block, TemporalBlock)}
    total = 0

    def count(block, args, _output):
        nonlocal total
        x = args[0]
        total += x.shape[0] * x.shape[2] * x.shape[3] * linear[block]

    handles = [block.register_forward_hook(count) for block in linear]
    with torch.no_grad():
        model.predict_latents(latents)
    for handle in handles:
        handle.remove()
    return total / latents.shape[1]


def time_per_frame(models: dict[str, VideoNormalModel], latents: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds per frame of ``predict_latents`` of each model, the models alternating in every round."""
    frames = latents.shape[1]
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model.predict_latents(latents)
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model.predict_latents(latents)
                times[name].append((time.perf_counter() - start) / frames)
    return {name: statistics.median(values) for name, values in times.items()}


def report(label: str, models: dict[str, VideoNormalModel], latents: torch.Tensor, repeats: int) -> None:
    for layout in LAYOUTS:
        perturb(models[layout])
    unet_params = sum(p.numel() for p in models["prior"].unet.parameters())
    seconds = time_per_frame(models, latents, repeats)
    macs = {layout: temporal_macs_per_frame(models[layout], latents) for layout in LAYOUTS}
    b, t, c, h, w = latents.shape
    print(f"\n{label}: U-Net {unet_params / 1e6:.1f} M parameters, {t} frames of {h}x{w} latents, "
          f"median of {repeats}")
    print("| layout | temporal blocks | temporal parameters | vs U-Net | temporal GMACs / frame | s / frame "
          "| vs stage | vs prior alone |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("prior", *LAYOUTS):
        model = models[name]
        blocks = 0 if name == "prior" else len(model._temporal_sites)
        params = 0 if name == "prior" else sum(p.numel() for p in model.temporal.parameters())
        print(f"| {name if name != 'prior' else 'prior alone'} | {blocks} | {params / 1e6:.2f} M | "
              f"{params / unet_params:.1%} | {macs.get(name, 0) / 1e9:.3f} | {seconds[name]:.4f} | "
              f"{seconds[name] / seconds['stage']:.2f} | {seconds[name] / seconds['prior']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4, help="frames per clip (SD2); the tiny model uses 8")
    parser.add_argument("--latent", type=int, default=32, help="SD2 latent side (x8 pixels): 32 = 256 px")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-sd2", action="store_true", help="only the embedded tiny model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} torch thread(s); fresh temporal blocks (their cost does not depend on their weights)")
    torch.manual_seed(0)
    tiny = tiny_models()
    rule = read_config(MODELS.get("tiny-synthetic")["normal"])["input_size"]  # the embedded model's input size
    side = (rule["short_side"] // 8, rule["long_side"] // 8)
    report("embedded tiny normal prior", tiny, torch.randn(1, 8, 4, *side), args.repeats)
    if not args.skip_sd2:
        latents = torch.randn(1, args.frames, 4, args.latent, args.latent)
        report("Stable Diffusion 2 U-Net (Marigold-E2E-FT size)", sd2_models(), latents, args.repeats)


if __name__ == "__main__":
    main()
