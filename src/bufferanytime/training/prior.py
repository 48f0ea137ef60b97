"""Supervised training of small single-image priors on synthetic data (for the embedded demonstration models).

The real priors (Depth Anything V2, Marigold-E2E-FT) cannot be downloaded here, so the package ships small
priors of the same classes, trained by this module on procedural scenes of :mod:`bufferanytime.synthetic`:

- depth: a ``DepthAnythingForDepthEstimation`` with a small DINOv2 backbone, trained from scratch with a
  scale-and-shift-invariant disparity loss (both maps normalised by median and mean absolute deviation, L1,
  as MiDaS / Depth Anything do);
- normals: a Marigold-layout model (tiny ``AutoencoderKL`` + ``UNet2DConditionModel``, single step from zero
  noise); see :func:`train_normal_prior`.

Each run writes the prior in its real on-disk format plus ``training_record.json`` (config, data seeds, time,
validation metrics).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bufferanytime.constants import IMAGENET_MEAN, IMAGENET_STD
from bufferanytime.errors import InputError
from bufferanytime.losses import normalize_affine
from bufferanytime.synthetic import SyntheticVideoDataset

NORMAL_CROP = (96, 128)  # the normal prior trains on smaller crops: its decoder runs at full resolution
VAL_MAX_DEPTH = 100.0  # synthetic scenes are bounded rooms / grounds; every valid depth is far below this


@dataclass
class PriorTrainConfig:
    """Options of a prior training run (the defaults are the embedded models' settings)."""

    kind: str = "depth"
    data: list[str] = field(default_factory=list)
    val: str | None = None
    steps: int = 3000
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-4
    crop: tuple[int, int] = (126, 168)  # multiple of the 14-pixel ViT patch
    seed: int = 0
    threads: int = 2
    # depth prior size (a small DINOv2; DA-V2-Small has hidden 384, 12 layers)
    hidden_size: int = 128
    num_layers: int = 6
    fusion_hidden_size: int = 32


class FrameBank:
    """All frames of one or more synthetic-layout folders, held as uint8 RGB + float16 targets.

    Prior training samples single images, so a small training set is kept in memory for speed.
    """

    def __init__(self, roots: list[str | Path], target: str):
        rgb, tgt, seeds = [], [], []
        for root in roots:
            dataset = SyntheticVideoDataset(root)
            for i in range(len(dataset)):
                item = dataset[i]
                seeds.append(int(item["meta"]["seed"]))
                rgb.extend(np.asarray(item["rgb"]))
                tgt.extend(np.asarray(item[target], dtype=np.float16))
        if not rgb:
            raise InputError(f"no synthetic frames found under {', '.join(map(str, roots))}")
        self.rgb = np.stack(rgb)
        self.target = np.stack(tgt)
        self.seeds = sorted(seeds)

    def __len__(self) -> int:
        return len(self.rgb)

    def batch(self, rng: np.random.Generator, size: int, crop: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch of crops: RGB ``(B,3,h,w)`` in [0,1] and targets ``(B,h,w)`` or ``(B,3,h,w)``."""
        idx = rng.integers(0, len(self), size)
        h, w = self.rgb.shape[1:3]
        ch, cw = crop
        ys, xs = rng.integers(0, h - ch + 1, size), rng.integers(0, w - cw + 1, size)
        rgb = np.stack([self.rgb[i, y : y + ch, x : x + cw] for i, y, x in zip(idx, ys, xs, strict=True)])
        tgt = np.stack([self.target[i, y : y + ch, x : x + cw] for i, y, x in zip(idx, ys, xs, strict=True)])
        rgb_t = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0
        tgt_t = torch.from_numpy(tgt.astype(np.float32))
        if tgt_t.ndim == 4:
            tgt_t = tgt_t.permute(0, 3, 1, 2)
        gain = torch.from_numpy(rng.uniform(0.8, 1.2, (size, 1, 1, 1))).float()  # mild photometric jitter
        return (rgb_t * gain).clamp(0, 1), tgt_t


def ssi_disparity_loss(pred: torch.Tensor, gt_depth: torch.Tensor) -> torch.Tensor:
    """Scale-and-shift-invariant L1 between predicted disparity and ``1 / gt_depth``, both median/MAD normalised."""
    return (normalize_affine(pred) - normalize_affine(1.0 / gt_depth.clamp_min(1e-3))).abs().mean()


def _imagenet(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _lr_lambda(total: int, warmup: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return fn


CHECKPOINT_EVERY = 500  # steps between flushes of the log (and saves of the depth prior)


def _optimize(
    parameters: list[torch.nn.Parameter],
    config: PriorTrainConfig,
    steps: int,
    warmup: int,
    step_loss: Callable[[], torch.Tensor],
    log: TextIO,
    start: float,
    desc: str,
    progress: bool,
    stage: str | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> None:
    """AdamW with warm-up + cosine decay and gradient clipping over ``steps`` calls of ``step_loss``.

    Each step is one line of ``log``; every CHECKPOINT_EVERY steps (and at the end) the log is flushed and
    ``checkpoint`` (if given) is called.
    """
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps, warmup))
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        loss = step_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        record = {"stage": stage} if stage else {}
        record.update({"step": step + 1, "loss": loss.item(), "time": round(time.time() - start, 2)})
        log.write(json.dumps(record) + "\n")
        if (step + 1) % CHECKPOINT_EVERY == 0 or step + 1 == steps:
            log.flush()
            if checkpoint is not None:
                checkpoint()


def _validate_depth(model, bank: FrameBank) -> dict:
    from bufferanytime.evaluation.metrics import depth_metrics

    model.eval()
    results = []
    with torch.no_grad():
        for start in range(0, len(bank), 16):
            rgb = torch.from_numpy(bank.rgb[start : start + 16]).permute(0, 3, 1, 2).float() / 255.0
            h, w = rgb.shape[-2:]
            size = (round(h / 14) * 14, round(w / 14) * 14)
            pred = model(pixel_values=_imagenet(F.interpolate(rgb, size=size, mode="bilinear", antialias=True)))
            pred = F.interpolate(pred.predicted_depth[:, None], size=(h, w), mode="bilinear")[:, 0].numpy()
            for k in range(len(pred)):
                gt = bank.target[start + k].astype(np.float32)
                results.append(depth_metrics(pred[k : k + 1], gt[None], VAL_MAX_DEPTH))
    model.train()
    return {key: float(np.mean([r[key] for r in results])) for key in results[0]}


def train_depth_prior(config: PriorTrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train a small Depth Anything prior from scratch; write it (transformers format) to ``out_dir``."""
    from transformers import DepthAnythingForDepthEstimation

    from bufferanytime.testing import tiny_depth_config

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    train = FrameBank(config.data, "depth")
    val = FrameBank([config.val], "depth") if config.val else None
    model = DepthAnythingForDepthEstimation(
        tiny_depth_config(config.hidden_size, config.num_layers, config.fusion_hidden_size, heads=4)
    ).train()
    # The relative head ends in a ReLU; a positive start keeps it out of the dead (all-zero, no-gradient) regime.
    torch.nn.init.constant_(model.head.conv3.bias, 1.0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "train_log.jsonl", "w")  # noqa: SIM115
    start = time.time()

    def step_loss() -> torch.Tensor:
        rgb, depth = train.batch(rng, config.batch_size, config.crop)
        return ssi_disparity_loss(model(pixel_values=_imagenet(rgb)).predicted_depth, depth)

    _optimize(list(model.parameters()), config, config.steps, min(500, config.steps // 10), step_loss, log, start,
              "depth prior", progress, checkpoint=lambda: model.save_pretrained(out_dir))
    log.close()
    record = {
        "kind": "depth",
        "config": asdict(config),
        "train_seeds": [train.seeds[0], train.seeds[-1]] if train.seeds else [],
        "train_frames": len(train),
        "val_seeds": val.seeds if val else [],
        "seconds": round(time.time() - start, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "val_metrics": _validate_depth(model, val) if val else {},
    }
    model.save_pretrained(out_dir)
    (out_dir / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def normal_prior_components(seed: int = 0) -> dict:
    """The embedded normal prior's architecture: the Marigold (Stable Diffusion 2) classes, scaled down.

    A 3-level VAE (downsampling by 4, so that a small decoder keeps detail) and a 2-level U-Net with
    cross-attention on the stored empty-prompt embedding, v-prediction DDIM scheduler with trailing spacing.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

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
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    embedding = torch.randn(1, 2, unet.config.cross_attention_dim) * 0.5
    return {"vae": vae, "unet": unet, "scheduler": scheduler, "embedding": embedding}


def _angular_error_deg(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    cos = (F.normalize(pred, dim=1) * F.normalize(gt, dim=1)).sum(dim=1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def train_normal_prior(config: PriorTrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train a small Marigold-layout normals prior in two stages; write it (diffusers layout) to ``out_dir``.

    1. The VAE learns to auto-encode both RGB frames and normal maps (as images in the prior's channel
       convention), as Stable Diffusion's VAE does for Marigold; ``scaling_factor`` makes latents unit-variance.
    2. With the VAE frozen, the U-Net is trained end to end through the single step from zero noise and the
       decoder, with an angular (1 - cosine) loss on the decoded normals, as Marigold-E2E-FT does.
    """
    from bufferanytime.constants import MARIGOLD_E2E_FT_AXES
    from bufferanytime.models.normal import VideoNormalModel, write_marigold_prior

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    train = FrameBank(config.data, "normal")
    val = FrameBank([config.val], "normal") if config.val else None
    parts = normal_prior_components(config.seed)
    vae, unet = parts["vae"], parts["unet"]
    axes = torch.tensor(MARIGOLD_E2E_FT_AXES, dtype=torch.float32).view(1, 3, 1, 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "train_log.jsonl", "w")  # noqa: SIM115
    start = time.time()
    vae_steps = config.steps // 3
    crop = NORMAL_CROP

    vae.train()

    def vae_loss() -> torch.Tensor:
        rgb, normal = train.batch(rng, config.batch_size, crop)
        images = torch.cat([rgb * 2 - 1, normal * axes])  # RGB and normals, both as [-1, 1] images
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        return (recon - images).abs().mean() + 1e-6 * posterior.kl().mean()

    _optimize(list(vae.parameters()), config, vae_steps, min(200, vae_steps // 10), vae_loss, log, start,
              "normal prior: VAE", progress, stage="vae")
    vae.eval()
    with torch.no_grad():
        rgb, normal = train.batch(rng, 32, crop)
        latents = vae.encode(torch.cat([rgb * 2 - 1, normal * axes])).latent_dist.mode()
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))

    model = VideoNormalModel(vae=vae, unet=unet, scheduler=parts["scheduler"],
                             empty_prompt_embedding=parts["embedding"], per_frame=True)
    model.unet.requires_grad_(True).train()
    unet_steps = config.steps - vae_steps

    def unet_loss() -> torch.Tensor:
        rgb, normal = train.batch(rng, config.batch_size, crop)
        pred = model.decode_latents(model.predict_latents(model.encode_latents(rgb[:, None]))[:, 0])
        return (1 - (pred * normal).sum(dim=1)).mean()

    _optimize(list(model.unet.parameters()), config, unet_steps, min(200, unet_steps // 10), unet_loss, log, start,
              "normal prior: U-Net", progress, stage="unet")
    log.close()
    model.unet.requires_grad_(False).eval()
    write_marigold_prior(out_dir, model.unet, model.vae, model.scheduler, model.empty_prompt_embedding)
    record = {
        "kind": "normal",
        "config": asdict(config),
        "stages": {"vae_steps": vae_steps, "unet_steps": unet_steps},
        "train_seeds": [train.seeds[0], train.seeds[-1]] if train.seeds else [],
        "train_frames": len(train),
        "val_seeds": val.seeds if val else [],
        "seconds": round(time.time() - start, 1),
        "parameters": {"vae": sum(p.numel() for p in vae.parameters()),
                       "unet": sum(p.numel() for p in unet.parameters())},
        "val_metrics": _validate_normal(out_dir, val) if val else {},
    }
    (out_dir / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _validate_normal(prior_dir: Path, bank: FrameBank) -> dict:
    """Metrics of the saved prior (reloaded, as users load it) on held-out frames."""
    from bufferanytime.evaluation.metrics import normal_metrics
    from bufferanytime.models.normal import VideoNormalModel

    model = VideoNormalModel.from_prior(prior_dir, per_frame=True).eval()
    preds = []
    with torch.no_grad():
        for start in range(0, len(bank), 8):
            rgb = torch.from_numpy(bank.rgb[start : start + 8]).permute(0, 3, 1, 2).float() / 255.0
            preds.append(model(rgb[:, None])[:, 0].permute(0, 2, 3, 1).numpy())
    pred = np.concatenate(preds)
    return {k: float(v) for k, v in normal_metrics(pred, bank.target.astype(np.float32)).items()}
