"""The DepthPro family (transformers ``DepthProForDepthEstimation``, e.g. apple/DepthPro-hf): video depth model,
export graph and tiny test prior.

DepthPro encodes an image with two DINOv2 ViTs: a patch encoder on overlapping patches of a 3-level image pyramid
and an image encoder on the whole image at low resolution. Its neck upsamples and projects these into five maps,
coarsest first (the image encoder's global map fused with the lowest-resolution patch map), and its decoder is a
DPT fusion stage: four fusion layers that each fuse the running map with the next finer level and upsample it 2x,
a last fusion layer at the finest level, then a convolutional head.

Video model: the two ViT encoders are frozen; the neck, the fusion stage and the head are fine-tuned. Three
zero-initialised :class:`TemporalBlock` s follow the first three of the fusion layers, where the model fuses its
levels from coarse to fine, as in Depth Anything V2 and DPT (Fig. 4a of the paper; DepthPro's decoder is DPT's):
those maps carry the global layout and scale of the scene, which is what flickers from frame to frame, at 1/16 to
1/4 of DepthPro's 1536-pixel input (96 to 384 pixels a side). The fourth fusion layer, the last one and the head
run per frame (they hold the largest maps). The blocks enter through forward hooks on the library's fusion layers
(:func:`temporal_hooks`); the library's neck, fusion stage and head run unchanged, in the order
``DepthProForDepthEstimation`` calls them.

Output: DepthPro's ``predicted_depth`` as it is, which is not metric on its own: it is the *canonical inverse
depth*, the inverse depth (1/m) a camera whose focal length equals the image width would see. Depth in metres
needs the focal length ``f`` in pixels of the actual camera: ``depth = f / (W * output)`` for a frame ``W`` pixels
wide (what transformers' ``post_process_depth_estimation`` does with DepthPro's estimated field of view). So this
family serves ``depth``: a disparity (larger = nearer), equal to the true inverse depth up to one factor per camera
(``W / f``), which the relative-depth alignment and losses absorb. DepthPro's field-of-view head is not used (and
not kept when a checkpoint has one): it estimates ``f`` frame by frame, a per-frame scale that would flicker on
top of whatever the temporal blocks stabilise and that the video model cannot learn to correct; a user who knows
the camera's focal length converts the disparity to metres with the formula above.

Input: DepthPro's processor normalisation (mean 0.5, std 0.5: RGB to [-1, 1]) and resize of every image to the
fixed square its pyramid is built for (1536 x 1536 for the released model: the patch size over the smallest
pyramid ratio), aspect not kept, as the processor does; the output is resized back to the frame. By default frames
are fed at their size, shrunk so the long side is at most that square's side. Training objective:
:class:`~bufferanytime.training.objectives.DepthObjective`.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DepthProConfig, DepthProForDepthEstimation

from bufferanytime.constants import CLIP_LEN_DEPTH, DEPTH_NUM_TEMPORAL_BLOCKS
from bufferanytime.families.base import Family, fan_in_init
from bufferanytime.models.base import TransformersVideoModel, as_temporal_config
from bufferanytime.models.temporal import TemporalBlock, TemporalConfig, temporal_hooks
from bufferanytime.tasks import DEPTH

DEPTH_PRO_MEAN, DEPTH_PRO_STD = 0.5, 0.5  # DepthProImageProcessor's image_mean / image_std (every channel)


class VideoDepthProModel(TransformersVideoModel):
    """``forward(frames (B,T,3,H,W) in [0,1]) -> canonical inverse depth (B,T,H,W)`` (a disparity, see the module
    docstring); ``per_frame=True``: the prior alone."""

    kind = DEPTH.kind
    family_name = "depth-pro"
    prior_class = DepthProForDepthEstimation
    trainable_prefixes = ("neck.", "fusion_stage.", "head.", "temporal.")
    default_clip_len = CLIP_LEN_DEPTH

    def __init__(self, prior: DepthProForDepthEstimation, prior_ref: str = "",
                 temporal: TemporalConfig | dict | None = None, per_frame: bool = False):
        super().__init__(prior_ref, as_temporal_config(temporal), per_frame)
        if self.temporal_config.layout != "stage":
            raise ValueError(f"the DepthPro model has one temporal layout, stage; got {self.temporal_config.layout!r}")
        config = prior.config
        #: the square every image is resized to: its smallest pyramid level is then exactly one encoder patch
        self.side = round(config.patch_size / min(config.scaled_images_ratios))
        self.backbone = prior.depth_pro.encoder.requires_grad_(False).eval()
        self.neck = prior.depth_pro.neck
        self.fusion_stage = prior.fusion_stage
        self.head = prior.head
        self.temporal = nn.ModuleList(
            TemporalBlock(config.fusion_hidden_size, self.temporal_config) for _ in range(DEPTH_NUM_TEMPORAL_BLOCKS))
        self._temporal_sites = list(zip(self.fusion_stage.intermediate, self.temporal, strict=False))

    def default_input_size(self) -> dict:
        """Frames as they are, shrunk to a long side of at most the model's square (it resizes them to it)."""
        return {"long_side": self.side, "upscale": False}

    # -- stages (the DepthObjective trains decode_head on cached backbone_features) ----------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` in [0,1] -> DepthPro's normalisation at its square input size (bilinear, as its
        processor)."""
        if tuple(images.shape[-2:]) != (self.side, self.side):
            images = F.interpolate(images, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return (images - DEPTH_PRO_MEAN) / DEPTH_PRO_STD

    @torch.no_grad()
    def backbone_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The frozen encoders' feature maps (image encoder's, then the patch encoder's, coarsest first)."""
        return list(self.backbone(pixel_values).features)

    def decode_head(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        """The library's neck, fusion stage (each temporal block hooked after its fusion layer) and head ->
        canonical inverse depth ``(N, h, w)`` at the model's output size (``size``: the square input, unused)."""
        with temporal_hooks([] if self.per_frame else self._temporal_sites, num_frames):
            fused = self.fusion_stage(self.neck(list(features)))
        return self.head(fused[-1])

    def decode_frames(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        disparity = self.decode_head(features, num_frames, (self.side, self.side))
        if disparity.shape[-2:] != tuple(size):
            disparity = F.interpolate(disparity[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        return disparity



class DepthProGraph(nn.Module):
    """Export graph: ``frames (B,T,3,H,W)`` -> ``(B,T,H,W)``, the eager forward (hooks included) as it is."""

    def __init__(self, model: VideoDepthProModel):
        super().__init__()
        self.model = model

    @staticmethod
    def multiple(model: VideoDepthProModel) -> int:
        """Any frame size: the model resizes every frame to its square."""
        return 1

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        with _sizes_as_lengths():
            return self.model(frames)


@contextmanager
def _sizes_as_lengths() -> Iterator[None]:
    """Within the ``with``, ``len(x)`` of a tensor in transformers' DepthPro module is ``x.shape[0]`` as it is (a
    symbolic size while ``torch.export`` traces). The library's patch encoder counts the patches of the window
    with ``len()``, which must give a Python int and so would fix the frame count T of the exported window; its
    split by those counts takes symbolic sizes as well. The same numbers either way: export only."""
    module = sys.modules[DepthProForDepthEstimation.__module__]
    module.len = lambda x: x.shape[0] if isinstance(x, torch.Tensor) else builtins.len(x)
    try:
        yield
    finally:
        del module.len


def make_tiny_depth_pro_prior(path: str | Path, seed: int = 0) -> Path:
    """A tiny random ``DepthProForDepthEstimation`` (2-layer DINOv2s, patch 16 on 32-pixel encoder patches, a
    128-pixel 3-level pyramid; DepthPro's structure, without the field-of-view head) whose inverse depth varies with
    the image: fan-in scaled decoder weights and a positive last bias keep the final ReLU alive."""
    torch.manual_seed(seed)
    vit = {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "mlp_ratio": 2, "patch_size": 16, "image_size": 32}
    config = DepthProConfig(fusion_hidden_size=16, patch_size=32, intermediate_hook_ids=[1, 0],
                            intermediate_feature_dims=[16, 16], scaled_images_ratios=[0.25, 0.5, 1],
                            scaled_images_overlap_ratios=[0.0, 0.5, 0.25], scaled_images_feature_dims=[16, 16, 16],
                            use_fov_model=False, image_model_config=dict(vit), patch_model_config=dict(vit),
                            fov_model_config=dict(vit))
    model = DepthProForDepthEstimation(config)
    fan_in_init([*model.depth_pro.neck.modules(), *model.fusion_stage.modules(), *model.head.modules()])
    last = [m for m in model.head.modules() if isinstance(m, nn.Conv2d)][-1]
    nn.init.constant_(last.bias, 1.0)
    model.save_pretrained(path)
    return Path(path)


FAMILY = Family(
    name=VideoDepthProModel.family_name,
    title="DepthPro",
    model_class=VideoDepthProModel,
    tasks=(DEPTH,),
    objective="bufferanytime.training.objectives:DepthObjective",
    graph=DepthProGraph,
    tiny_prior=lambda path, seed: make_tiny_depth_pro_prior(path, seed),
    source="transformers DepthProForDepthEstimation (apple/DepthPro-hf; canonical inverse depth, no FOV head)",
)
