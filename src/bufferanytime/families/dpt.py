"""The DPT family (transformers ``DPTForDepthEstimation``, e.g. Intel/dpt-large, MiDaS 3.0): video depth model,
export graph and tiny test prior.

Video model: the ViT encoder is frozen; the DPT neck (reassemble, convs, fusion) and head are fine-tuned, and three
zero-initialised :class:`TemporalBlock` s follow the first three of the four fusion layers, as in Depth Anything V2
(Fig. 4a of the paper; both decoders are DPT's). They enter through forward hooks on the library's fusion layers
(:func:`temporal_hooks`): the library's own neck and head run unchanged. Output: relative inverse depth (larger =
nearer), as DPT's MiDaS training gives. Only the plain-ViT DPT is supported (not DPT-hybrid, nor a DPT on another
backbone: their encoders return other feature lists).

Input: DPT's processor normalisation (mean 0.5, std 0.5: RGB to [-1, 1]), sides resized to the nearest multiple of
the ViT patch (the position embeddings are interpolated by the library); by default the short side is 384, DPT's
training size. Training objective: :class:`~bufferanytime.training.objectives.DepthObjective`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DPTConfig, DPTForDepthEstimation

from bufferanytime.constants import CLIP_LEN_DEPTH, DEPTH_NUM_TEMPORAL_BLOCKS
from bufferanytime.families.base import Family, fan_in_init
from bufferanytime.models.base import (
    TransformersVideoModel,
    as_temporal_config,
    nearest_multiple,
)
from bufferanytime.models.temporal import TemporalBlock, TemporalConfig, temporal_hooks
from bufferanytime.tasks import DEPTH

DPT_SHORT_SIDE = 384  # DPT's training and processor size
DPT_MEAN, DPT_STD = 0.5, 0.5  # DPTImageProcessor's image_mean / image_std (every channel)


class VideoDPTModel(TransformersVideoModel):
    """``forward(frames (B,T,3,H,W) in [0,1]) -> disparity (B,T,H,W)``; ``per_frame=True``: the prior alone."""

    kind = DEPTH.kind
    family_name = "dpt"
    prior_class = DPTForDepthEstimation
    trainable_prefixes = ("neck.", "head.", "temporal.")
    default_clip_len = CLIP_LEN_DEPTH

    def __init__(self, prior: DPTForDepthEstimation, prior_ref: str = "",
                 temporal: TemporalConfig | dict | None = None, per_frame: bool = False):
        super().__init__(prior_ref, as_temporal_config(temporal), per_frame)
        if prior.config.is_hybrid or prior.backbone is not None:
            raise ValueError("only the plain-ViT DPT is supported (not DPT-hybrid or a DPT on another backbone)")
        if self.temporal_config.layout != "stage":
            raise ValueError(f"the DPT model has one temporal layout, 'stage'; got {self.temporal_config.layout!r}")
        self.patch_size = prior.config.patch_size
        self.out_indices = list(prior.config.backbone_out_indices)
        self.backbone = prior.dpt.requires_grad_(False).eval()
        self.neck = prior.neck
        self.head = prior.head
        channels = prior.config.fusion_hidden_size
        self.temporal = nn.ModuleList(
            TemporalBlock(channels, self.temporal_config) for _ in range(DEPTH_NUM_TEMPORAL_BLOCKS))
        self._temporal_sites = list(zip(self.neck.fusion_stage.layers, self.temporal, strict=False))

    def default_input_size(self) -> dict:
        """Short side 384 (enlarging small frames), the long side capped at 4x that."""
        return {"short_side": DPT_SHORT_SIDE, "long_side": 4 * DPT_SHORT_SIDE, "upscale": True}


    # -- stages (the DepthObjective trains decode_head on cached backbone_features) ----------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` in [0,1] -> DPT's normalisation, sides multiples of the patch."""
        size = self._pixel_size(images.shape[-2:])
        if size != tuple(images.shape[-2:]):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (images - DPT_MEAN) / DPT_STD

    @torch.no_grad()
    def backbone_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The frozen ViT's hidden states that feed the neck (``backbone_out_indices``, as the library picks them)."""
        hidden = self.backbone(pixel_values, output_hidden_states=True).hidden_states[1:]
        return [hidden[i] for i in self.out_indices]

    def decode_head(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        """The library's neck and head, each temporal block hooked after its fusion layer -> ``(N, h, w)``."""
        patch_h, patch_w = size[0] // self.patch_size, size[1] // self.patch_size
        with temporal_hooks([] if self.per_frame else self._temporal_sites, num_frames):
            return self.head(self.neck(list(features), patch_h, patch_w))

    def decode_frames(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        disparity = self.decode_head(features, num_frames, self._pixel_size(size))
        if disparity.shape[-2:] != tuple(size):
            disparity = F.interpolate(disparity[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        return disparity

    def _pixel_size(self, size) -> tuple[int, int]:
        return nearest_multiple(size[0], self.patch_size), nearest_multiple(size[1], self.patch_size)



class DPTGraph(nn.Module):
    """Export graph: ``frames (B,T,3,H,W)`` -> ``(B,T,H,W)``, the eager forward (hooks included) as it is."""

    def __init__(self, model: VideoDPTModel):
        super().__init__()
        self.model = model

    @staticmethod
    def multiple(model: VideoDPTModel) -> int:
        return model.patch_size

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model(frames)


def make_tiny_dpt_prior(path: str | Path, seed: int = 0) -> Path:
    """A tiny random ``DPTForDepthEstimation`` (4-layer ViT, patch 8, DPT-large's structure) whose disparity varies
    with the image: fan-in scaled neck and head weights and a positive last bias keep the final ReLU alive."""
    torch.manual_seed(seed)
    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=64, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32, reassemble_factors=[4, 2, 1, 0.5])
    model = DPTForDepthEstimation(config)
    fan_in_init([*model.neck.modules(), *model.head.modules()])
    last = [m for m in model.head.modules() if isinstance(m, nn.Conv2d)][-1]
    nn.init.constant_(last.bias, 1.0)
    model.save_pretrained(path)
    return Path(path)


FAMILY = Family(
    name=VideoDPTModel.family_name,
    title="DPT",
    model_class=VideoDPTModel,
    tasks=(DEPTH,),
    objective="bufferanytime.training.objectives:DepthObjective",
    graph=DPTGraph,
    tiny_prior=lambda path, seed: make_tiny_dpt_prior(path, seed),
    source="transformers DPTForDepthEstimation (plain ViT, e.g. Intel/dpt-large)",
)
