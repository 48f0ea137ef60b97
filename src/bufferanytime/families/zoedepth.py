"""The ZoeDepth family (transformers ``ZoeDepthForDepthEstimation``, e.g. Intel/zoedepth-nyu, Intel/zoedepth-kitti,
Intel/zoedepth-nyu-kitti): video metric depth model, export graph and tiny test prior.

ZoeDepth is a BEiT backbone, a DPT neck (reassemble stage, convs, four fusion layers), a relative-depth head and a
metric bins head (seed bins from the neck's bottleneck, refined by attractors at each fused level, then a
per-pixel distribution over the bins conditioned on the relative head). Its output is depth in metres.

Video model: the BEiT backbone is frozen; the neck, the relative head and the metric head are fine-tuned, and three
zero-initialised :class:`TemporalBlock` s follow the first three of the four fusion layers, as in Depth Anything
V2 and DPT (Fig. 4a of the paper; the neck is DPT's). They enter through forward hooks on the library's fusion
layers (:func:`temporal_hooks`), so every fused map the metric head reads (its attractors take all four fused
levels) is the temporally mixed one. The library's neck and heads run unchanged, in the order
``ZoeDepthForDepthEstimation`` calls them. Output: metric depth (metres): task ``metric_depth``.

Input: ZoeDepth's processor normalisation (mean 0.5, std 0.5: RGB to [-1, 1]), sides resized to the nearest
multiple of twice the BEiT patch (the processor's 32 for patch 16: the coarsest reassemble level halves the patch
grid exactly); by default the short side is 384, ZoeDepth's processor size (it fits 384x512). ZoeDepth's
processor also reflect-pads each image by ``3 sqrt(side / 2)`` pixels before resizing and crops that border off
the prediction; this model does not: its output must cover the frame as it is for the training objective and the
export graph, so a real checkpoint's depth near the borders differs slightly from its processor pipeline's.
Training objective: :class:`~bufferanytime.training.objectives.DepthObjective` (metric: log-depth losses).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.overrides import TorchFunctionMode
from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation

from bufferanytime.constants import CLIP_LEN_DEPTH, DEPTH_NUM_TEMPORAL_BLOCKS
from bufferanytime.families.base import Family, fan_in_init
from bufferanytime.models.base import TransformersVideoModel, as_temporal_config, nearest_multiple
from bufferanytime.models.temporal import TemporalBlock, TemporalConfig, temporal_hooks
from bufferanytime.tasks import METRIC_DEPTH, Task

ZOE_SHORT_SIDE = 384  # ZoeDepthImageProcessor's size (384 x 512, aspect kept)
ZOE_MEAN, ZOE_STD = 0.5, 0.5  # ZoeDepthImageProcessor's image_mean / image_std (every channel)


class VideoZoeDepthModel(TransformersVideoModel):
    """``forward(frames (B,T,3,H,W) in [0,1]) -> depth in metres (B,T,H,W)``; ``per_frame=True``: the prior
    alone."""

    kind = METRIC_DEPTH.kind
    family_name = "zoedepth"
    prior_class = ZoeDepthForDepthEstimation
    trainable_prefixes = ("neck.", "relative_head.", "metric_head.", "temporal.")
    default_clip_len = CLIP_LEN_DEPTH

    def __init__(self, prior: ZoeDepthForDepthEstimation, prior_ref: str = "",
                 temporal: TemporalConfig | dict | None = None, per_frame: bool = False):
        super().__init__(prior_ref, as_temporal_config(temporal), per_frame)
        if prior.neck.reassemble_stage is None:
            raise ValueError("only ZoeDepth on a plain ViT backbone (BEiT) is supported, not on a hierarchical one")
        if self.temporal_config.layout != "stage":
            raise ValueError(f"the ZoeDepth model has one temporal layout, stage; got {self.temporal_config.layout!r}")
        self.patch_size = prior.patch_size
        self.backbone = prior.backbone.requires_grad_(False).eval()
        self.neck = prior.neck
        self.relative_head = prior.relative_head
        self.metric_head = prior.metric_head
        self.temporal = nn.ModuleList(
            TemporalBlock(prior.config.fusion_hidden_size, self.temporal_config)
            for _ in range(DEPTH_NUM_TEMPORAL_BLOCKS))
        self._temporal_sites = list(zip(self.neck.fusion_stage.layers, self.temporal, strict=False))

    @property
    def task(self) -> Task:
        """METRIC_DEPTH: ZoeDepth's bins head gives depth in metres."""
        return METRIC_DEPTH

    def default_input_size(self) -> dict:
        """Short side 384 (enlarging small frames), the long side capped at 4x that."""
        return {"short_side": ZOE_SHORT_SIDE, "long_side": 4 * ZOE_SHORT_SIDE, "upscale": True}

    @property
    def multiple(self) -> int:
        """Every input side is a multiple of this: twice the patch, so the coarsest level halves the grid exactly."""
        return 2 * self.patch_size

    # -- stages (the DepthObjective trains decode_head on cached backbone_features) ----------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` in [0,1] -> ZoeDepth's normalisation, sides multiples of twice the patch."""
        size = self._pixel_size(images.shape[-2:])
        if size != tuple(images.shape[-2:]):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (images - ZOE_MEAN) / ZOE_STD

    @torch.no_grad()
    def backbone_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The frozen BEiT's feature maps that feed the neck (its ``out_features``, CLS token included)."""
        return list(self.backbone(pixel_values).feature_maps)

    def decode_head(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        """The library's neck (each temporal block hooked after its fusion layer), relative head and metric head, as
        ``ZoeDepthForDepthEstimation`` chains them -> depth in metres ``(N, h, w)``."""
        patch_h, patch_w = size[0] // self.patch_size, size[1] // self.patch_size
        with temporal_hooks([] if self.per_frame else self._temporal_sites, num_frames):
            fused, bottleneck = self.neck(list(features), patch_h, patch_w)
        relative, outconv = self.relative_head(fused)
        depth, _ = self.metric_head(outconv_activation=outconv, bottleneck=bottleneck, feature_blocks=fused,
                                    relative_depth=relative)
        return depth[:, 0]

    def decode_frames(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        depth = self.decode_head(features, num_frames, self._pixel_size(size))
        if depth.shape[-2:] != tuple(size):
            depth = F.interpolate(depth[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        return depth

    def _pixel_size(self, size) -> tuple[int, int]:
        return nearest_multiple(size[0], self.multiple), nearest_multiple(size[1], self.multiple)



class ZoeDepthGraph(nn.Module):
    """Export graph: ``frames (B,T,3,H,W)`` -> depth in metres ``(B,T,H,W)``, the eager forward (hooks included)."""

    def __init__(self, model: VideoZoeDepthModel):
        super().__init__()
        self.model = model

    @staticmethod
    def multiple(model: VideoZoeDepthModel) -> int:
        return model.multiple

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        with _ExactSplits():
            return self.model(frames)


class _ExactSplits(TorchFunctionMode):
    """Within the ``with``, ``x.split(n)`` with a symbolic ``n`` that divides ``len(x)`` is ``x.unflatten(0, (-1,
    n)).unbind(0)``: the same tensors. ZoeDepth's reassemble stage concatenates its levels of N images and splits
    them back in chunks of N; ``torch.export`` cannot tell the number of chunks for a symbolic N (it would fix the
    frame count T of the exported window), but it can divide."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.split and len(args) == 2 and isinstance(args[1], torch.SymInt) and \
                kwargs in ({}, {"dim": 0}):
            tensor, size = args
            if statically_known_true(tensor.shape[0] % size == 0):
                return tensor.unflatten(0, (-1, size)).unbind(0)
        return func(*args, **kwargs)


def make_tiny_zoedepth_prior(path: str | Path, seed: int = 0) -> Path:
    """A tiny random ``ZoeDepthForDepthEstimation`` (4-layer BEiT with relative position bias, patch 8, one bins
    head over 0-10 m, ZoeDepth-NYU's structure) whose depth varies with the image: fan-in scaled decoder weights,
    and bin centres bounded to the head's depth range ("normed") so the depth is a few metres."""
    torch.manual_seed(seed)
    backbone = BeitConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                          intermediate_size=64, use_relative_position_bias=True, reshape_hidden_states=False,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = ZoeDepthConfig(backbone_config=backbone, neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32,
                            num_relative_features=8, bottleneck_features=32, bin_embedding_dim=16,
                            num_attractors=[4, 4, 2, 1], bin_centers_type="normed",
                            bin_configurations=[{"n_bins": 16, "min_depth": 0.001, "max_depth": 10.0}])
    model = ZoeDepthForDepthEstimation(config)
    fan_in_init([*model.neck.modules(), *model.relative_head.modules(), *model.metric_head.modules()])
    nn.init.constant_(model.relative_head.conv3.bias, 1.0)  # keeps the relative head's last ReLU alive
    model.save_pretrained(path)
    return Path(path)


FAMILY = Family(
    name=VideoZoeDepthModel.family_name,
    title="ZoeDepth",
    model_class=VideoZoeDepthModel,
    tasks=(METRIC_DEPTH,),
    objective="bufferanytime.training.objectives:DepthObjective",
    graph=ZoeDepthGraph,
    tiny_prior=lambda path, seed: make_tiny_zoedepth_prior(path, seed),
    source="transformers ZoeDepthForDepthEstimation (BEiT backbone, metric, e.g. Intel/zoedepth-nyu-kitti)",
)
