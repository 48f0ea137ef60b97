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

from bufferanytime.constants import (
    DINOV2_PATCH,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MARIGOLD_E2E_FT_AXES,
    SILOG_LAMBDA,
    SYNTHETIC_MAX_DEPTH,
    SYNTHETIC_METRIC_MAX_DEPTH,
)
from bufferanytime.errors import InputError
from bufferanytime.io.arrays import array_to_tensor, channels_last, frames_to_tensor
from bufferanytime.losses import normalize_affine, silog_loss
from bufferanytime.models.base import nearest_multiple
from bufferanytime.synthetic import SyntheticVideoDataset
from bufferanytime.tasks import DEPTH, METRIC_DEPTH, NORMAL
from bufferanytime.tasks.metrics import median_depth_ratio
from bufferanytime.training.options import above, at_least, option

NORMAL_CROP = (96, 128)  # the normal prior trains on smaller crops: its decoder runs at full resolution
# The prior's channel convention: normals in ours times these signs (the VAE learns normal maps as such images).
_NORMAL_AXES = torch.tensor(MARIGOLD_E2E_FT_AXES, dtype=torch.float32).view(1, 3, 1, 1)
VAL_MAX_DEPTH = 100.0  # synthetic scenes are bounded rooms / grounds; every valid depth is far below this


@dataclass
class PriorTrainConfig:
    """Options of a prior training run; the defaults are the embedded models' settings (``train-prior`` flags)."""

    kind: str = DEPTH.name
    data: list[str] = field(default_factory=list)
    val: str | None = None
    steps: int = option(3000, "optimizer steps", at_least(1))
    batch_size: int = option(8, "images per step", at_least(1))
    lr: float = option(3e-4, "AdamW learning rate, after a linear warm-up, with a cosine decay", above(0))
    weight_decay: float = option(1e-4, "AdamW weight decay", at_least(0))
    crop: tuple[int, int] = option((126, 168), "depth: random training crop, sides multiples of the 14-pixel ViT "
                                   "patch", metavar="HxW")
    seed: int = option(0, "seed of the initial weights and of the batches", at_least(0))
    threads: int = option(2, "torch CPU threads", at_least(1))
    hidden_size: int = option(128, "depth: width of the small DINOv2 backbone (DA-V2-Small: 384)", at_least(1))
    num_layers: int = option(6, "depth: layers of the backbone (DA-V2-Small: 12)", at_least(1))
    fusion_hidden_size: int = option(32, "depth: channels of the DPT fusion", at_least(1))
    max_depth: int = option(int(SYNTHETIC_METRIC_MAX_DEPTH), "metric_depth: the sigmoid head's maximum depth, "
                            "whole metres (targets beyond it are clipped to it)", at_least(1))
    init: str | None = None  # metric_depth: a Depth Anything prior directory to start from (same architecture)


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
        rgb_t = frames_to_tensor(rgb)
        tgt_t = array_to_tensor(tgt) if tgt.ndim == 4 else torch.from_numpy(tgt.astype(np.float32))
        gain = torch.from_numpy(rng.uniform(0.8, 1.2, (size, 1, 1, 1))).float()  # mild photometric jitter
        return (rgb_t * gain).clamp(0, 1), tgt_t


def ssi_disparity_loss(pred: torch.Tensor, gt_depth: torch.Tensor) -> torch.Tensor:
    """Scale-and-shift-invariant L1 between predicted disparity and ``1 / gt_depth``, both median/MAD normalised."""
    return (normalize_affine(pred) - normalize_affine(1.0 / gt_depth.clamp_min(1e-3))).abs().mean()


_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _imagenet(images: torch.Tensor) -> torch.Tensor:
    """Depth Anything's input normalisation of ``(B,3,H,W)`` images in [0, 1]."""
    return (images - _MEAN) / _STD


def _lr_lambda(total: int, warmup: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return fn


CHECKPOINT_EVERY = 100  # steps between flushes of the log (and saves of the depth prior)


@dataclass
class _Run:
    """What every stage of a prior training writes to: the log, the start time, whether to show progress."""

    log: TextIO
    start: float
    progress: bool


def _optimize(
    parameters: list[torch.nn.Parameter],
    config: PriorTrainConfig,
    steps: int,
    warmup: int,
    step_loss: Callable[[], torch.Tensor],
    run: _Run,
    desc: str,
    stage: str | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> None:
    """AdamW with warm-up + cosine decay and gradient clipping over ``steps`` calls of ``step_loss``.

    Each step is one line of ``run.log``; every CHECKPOINT_EVERY steps (and at the end) the log is flushed and
    ``checkpoint`` (if given) is called.
    """
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps, warmup))
    bar = tqdm(range(steps), desc=desc, disable=not run.progress)
    for step in bar:
        loss = step_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        record = {"stage": stage} if stage else {}
        record.update({"step": step + 1, "loss": loss.item(), "time": round(time.time() - run.start, 2)})
        run.log.write(json.dumps(record) + "\n")
        if (step + 1) % CHECKPOINT_EVERY == 0 or step + 1 == steps:
            run.log.flush()
            if checkpoint is not None:
                checkpoint()


def _bank_predictions(model, bank: FrameBank):
    """``(prediction (H, W), ground truth (H, W))`` of every frame of ``bank``, the model in eval mode."""
    model.eval()
    with torch.no_grad():
        for start in range(0, len(bank), 16):
            rgb = frames_to_tensor(bank.rgb[start : start + 16])
            h, w = rgb.shape[-2:]
            size = (nearest_multiple(h, DINOV2_PATCH), nearest_multiple(w, DINOV2_PATCH))
            pred = model(pixel_values=_imagenet(F.interpolate(rgb, size=size, mode="bilinear", antialias=True)))
            pred = F.interpolate(pred.predicted_depth[:, None], size=(h, w), mode="bilinear")[:, 0].numpy()
            for k in range(len(pred)):
                yield pred[k], bank.target[start + k].astype(np.float32)
    model.train()


def _validate_depth(model, bank: FrameBank) -> dict:
    from bufferanytime.tasks.metrics import depth_metrics

    results = [depth_metrics(pred[None], gt[None], VAL_MAX_DEPTH) for pred, gt in _bank_predictions(model, bank)]
    return {key: float(np.mean([r[key] for r in results])) for key in results[0]}


def _validate_metric_depth(model, bank: FrameBank) -> dict:
    """Metric AbsRel / delta1 with no alignment (and the median ratio gt / prediction) up to the synthetic cap."""
    results = []
    for pred, gt in _bank_predictions(model, bank):
        results.append(METRIC_DEPTH.score(pred[None], gt[None], "synthetic", align="none")
                       | {"median_ratio": median_depth_ratio(pred[None], gt[None], SYNTHETIC_MAX_DEPTH)})
    keys = ("abs_rel", "delta1", "rmse", "median_ratio")
    return {key: float(np.nanmean([r[key] for r in results])) for key in keys} | {"align": "none",
                                                                                  "max_depth": SYNTHETIC_MAX_DEPTH}


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
    run = _Run(open(out_dir / "train_log.jsonl", "w"), time.time(), progress)  # noqa: SIM115

    def step_loss() -> torch.Tensor:
        rgb, depth = train.batch(rng, config.batch_size, config.crop)
        return ssi_disparity_loss(model(pixel_values=_imagenet(rgb)).predicted_depth, depth)

    _optimize(list(model.parameters()), config, config.steps, min(500, config.steps // 10), step_loss, run,
              "depth prior", checkpoint=lambda: model.save_pretrained(out_dir))
    run.log.close()
    record = {
        "kind": DEPTH.name,
        "config": asdict(config),
        "train_seeds": [train.seeds[0], train.seeds[-1]] if train.seeds else [],
        "train_frames": len(train),
        "val_seeds": val.seeds if val else [],
        "seconds": round(time.time() - run.start, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "val_metrics": _validate_depth(model, val) if val else {},
    }
    model.save_pretrained(out_dir)
    (out_dir / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def metric_prior(config: PriorTrainConfig):
    """A metric ``DepthAnythingForDepthEstimation`` (sigmoid head times ``config.max_depth``): the weights of
    ``config.init`` when given (its last head layer restarted near the data's typical depth), else a new one."""
    from transformers import DepthAnythingForDepthEstimation

    from bufferanytime.testing import metric_config, tiny_depth_config

    if config.init is None:
        model_config = tiny_depth_config(config.hidden_size, config.num_layers, config.fusion_hidden_size, heads=4)
        model = DepthAnythingForDepthEstimation(metric_config(model_config, config.max_depth))
    else:
        relative = DepthAnythingForDepthEstimation.from_pretrained(config.init)
        model = DepthAnythingForDepthEstimation(metric_config(relative.config, config.max_depth))
        model.load_state_dict(relative.state_dict())
    conv = model.head.conv3  # a relative head's output means disparity: restart it, small, at a typical depth
    torch.nn.init.normal_(conv.weight, std=1e-3)
    torch.nn.init.constant_(conv.bias, math.log(TYPICAL_DEPTH / (config.max_depth - TYPICAL_DEPTH)))
    return model.train()


TYPICAL_DEPTH = 5.0  # metres: about the median z-depth of the synthetic scenes; where the metric head starts


def train_metric_depth_prior(config: PriorTrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train a small metric Depth Anything prior on the synthetic world's exact z-depth (metres), with the
    scale-invariant log loss of Depth Anything V2's metric training (lambda 0.5: the scale is learned too)."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    train = FrameBank(config.data, "depth")
    val = FrameBank([config.val], "depth") if config.val else None
    model = metric_prior(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(open(out_dir / "train_log.jsonl", "w"), time.time(), progress)  # noqa: SIM115

    def step_loss() -> torch.Tensor:
        rgb, depth = train.batch(rng, config.batch_size, config.crop)
        pred = model(pixel_values=_imagenet(rgb)).predicted_depth
        return silog_loss(pred, depth.clamp(max=config.max_depth), SILOG_LAMBDA, valid=depth > 0)

    _optimize(list(model.parameters()), config, config.steps, min(100, config.steps // 10), step_loss, run,
              "metric depth prior", checkpoint=lambda: model.save_pretrained(out_dir))
    run.log.close()
    record = {
        "kind": METRIC_DEPTH.name,
        "config": asdict(config),
        "loss": f"SILog, lambda {SILOG_LAMBDA}, on z-depth clipped to max_depth",
        "train_seeds": [train.seeds[0], train.seeds[-1]] if train.seeds else [],
        "train_frames": len(train),
        "val_seeds": val.seeds if val else [],
        "seconds": round(time.time() - run.start, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "val_metrics": _validate_metric_depth(model, val) if val else {},
    }
    model.save_pretrained(out_dir)
    (out_dir / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def train_normal_prior(config: PriorTrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train a small Marigold-layout normals prior in two stages; write it (diffusers layout) to ``out_dir``.

    1. The VAE learns to auto-encode both RGB frames and normal maps (as images in the prior's channel
       convention), as Stable Diffusion's VAE does for Marigold; ``scaling_factor`` makes latents unit-variance.
    2. With the VAE frozen, the U-Net is trained end to end through the single step from zero noise and the
       decoder, with an angular (1 - cosine) loss on the decoded normals, as Marigold-E2E-FT does.
    """
    from bufferanytime.families.marigold_e2e_normals import normal_prior_components, write_marigold_prior

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    train = FrameBank(config.data, "normal")
    val = FrameBank([config.val], "normal") if config.val else None
    parts = normal_prior_components(config.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(open(out_dir / "train_log.jsonl", "w"), time.time(), progress)  # noqa: SIM115
    vae_steps = config.steps // 3
    _train_vae(parts["vae"], train, rng, config, vae_steps, run)
    model = _train_unet(parts, train, rng, config, config.steps - vae_steps, run)
    run.log.close()
    model.unet.requires_grad_(False).eval()
    write_marigold_prior(out_dir, model.unet, model.vae, model.scheduler, model.empty_prompt_embedding)
    record = {
        "kind": NORMAL.name,
        "config": asdict(config),
        "stages": {"vae_steps": vae_steps, "unet_steps": config.steps - vae_steps},
        "train_seeds": [train.seeds[0], train.seeds[-1]] if train.seeds else [],
        "train_frames": len(train),
        "val_seeds": val.seeds if val else [],
        "seconds": round(time.time() - run.start, 1),
        "parameters": {"vae": sum(p.numel() for p in model.vae.parameters()),
                       "unet": sum(p.numel() for p in model.unet.parameters())},
        "val_metrics": _validate_normal(out_dir, val) if val else {},
    }
    (out_dir / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _train_vae(vae, train: FrameBank, rng: np.random.Generator, config: PriorTrainConfig, steps: int,
               run: _Run) -> None:
    """Stage 1: the VAE auto-encodes RGB frames and normal maps alike; then its latents are scaled to unit std."""
    vae.train()

    def vae_loss() -> torch.Tensor:
        rgb, normal = train.batch(rng, config.batch_size, NORMAL_CROP)
        images = torch.cat([rgb * 2 - 1, normal * _NORMAL_AXES])  # RGB and normals, both as [-1, 1] images
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        return (recon - images).abs().mean() + 1e-6 * posterior.kl().mean()

    _optimize(list(vae.parameters()), config, steps, min(200, steps // 10), vae_loss, run, "normal prior: VAE",
              stage="vae")
    vae.eval()
    with torch.no_grad():
        rgb, normal = train.batch(rng, 32, NORMAL_CROP)
        latents = vae.encode(torch.cat([rgb * 2 - 1, normal * _NORMAL_AXES])).latent_dist.mode()
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))


def _train_unet(parts: dict, train: FrameBank, rng: np.random.Generator, config: PriorTrainConfig, steps: int,
                run: _Run):
    """Stage 2: the U-Net, end to end through the frozen VAE's decoder, with a 1 - cosine loss on normals."""
    from bufferanytime.families.marigold_e2e_normals import VideoNormalModel

    model = VideoNormalModel(vae=parts["vae"], unet=parts["unet"], scheduler=parts["scheduler"],
                             empty_prompt_embedding=parts["embedding"], per_frame=True)
    model.unet.requires_grad_(True).train()

    def unet_loss() -> torch.Tensor:
        rgb, normal = train.batch(rng, config.batch_size, NORMAL_CROP)
        pred = model.decode_latents(model.predict_latents(model.encode_latents(rgb[:, None]))[:, 0])
        return (1 - (pred * normal).sum(dim=1)).mean()

    _optimize(list(model.unet.parameters()), config, steps, min(200, steps // 10), unet_loss, run,
              "normal prior: U-Net", stage="unet")
    return model


def _validate_normal(prior_dir: Path, bank: FrameBank) -> dict:
    """Metrics of the saved prior (reloaded, as users load it) on held-out frames."""
    from bufferanytime.families.marigold_e2e_normals import VideoNormalModel
    from bufferanytime.tasks.metrics import normal_metrics

    model = VideoNormalModel.from_prior(prior_dir, per_frame=True).eval()
    preds = []
    with torch.no_grad():
        for start in range(0, len(bank), 8):
            rgb = frames_to_tensor(bank.rgb[start : start + 8])
            preds.append(channels_last(model(rgb[:, None])[:, 0]))
    pred = np.concatenate(preds)
    return {k: float(v) for k, v in normal_metrics(pred, bank.target.astype(np.float32)).items()}
