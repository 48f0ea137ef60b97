"""The Depth Anything V2 family: the video depth model, its export graph and its tiny test prior.

Video model: Depth Anything V2 with temporal blocks between the fusion stages of its DPT neck.
The ViT backbone is frozen and always runs without gradient; the DPT refinement (reassemble, fusion, head) is
fine-tuned and three zero-initialised :class:`TemporalBlock` s sit after the first three of the four fusion
layers (Fig. 4a of the paper). The library's own submodules (reassemble stage, convs, fusion layers, head) are
called in the library's order, with each block applied to its fusion layer's output; the per-frame parts run in
chunks of frames, so only the fused maps the blocks need are held for a whole window. Any
``DepthAnythingForDepthEstimation`` of transformers works as the prior, at any size. Output: relative disparity,
larger = nearer; or metres for a metric prior (``depth_estimation_type: "metric"``), which serves ``metric_depth``.

Input: the ImageNet normalisation, sides resized to the nearest multiple of the 14-pixel patch; by default the
short side is 518 (Depth Anything V2's processor). Export graph: the library's DPT neck with the temporal blocks
as forward hooks. Training objective: :class:`~bufferanytime.training.objectives.DepthObjective`.
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

from bufferanytime.constants import (
    CLIP_LEN_DEPTH,
    DEPTH_NUM_TEMPORAL_BLOCKS,
    DINOV2_PATCH,
    IMAGENET_MEAN,
    IMAGENET_STD,
)
from bufferanytime.families.base import Family, fan_in_init
from bufferanytime.losses import log_depth
from bufferanytime.models.base import (
    TransformersVideoModel,
    as_temporal_config,
    nearest_multiple,
    resolve_dir,
    stack_chunks,
)
from bufferanytime.models.temporal import TemporalBlock, TemporalConfig, capture_output, temporal_hooks
from bufferanytime.tasks import DEPTH, METRIC_DEPTH, Task

# Frames per chunk of the per-frame parts of the decoder in a window (reassemble, convs, fusion, head): they run on
# a few frames at a time, so only what the temporal blocks need is held for the whole window. 4 frames: the
# fastest of 1-32 on CPU (fusion layer 3 + head) and the smallest peak memory within 2 % of it.
DECODE_CHUNK = 4
METRIC = "metric"  # transformers' DepthAnythingConfig.depth_estimation_type of metric priors
DA_V2_SHORT_SIDE = 518  # Depth Anything V2's input size (short side, a multiple of its 14-pixel patch)
# config.json key of a metric video model's scale anchor: {"stride": k}, the frozen prior's depth taken on every
# k-th frame a window encodes (VideoDepthModel.set_scale_anchor)
SCALE_ANCHOR_KEY = "scale_anchor"


class VideoDepthModel(TransformersVideoModel):
    """``forward(frames (B,T,3,H,W) in [0,1]) -> disparity (B,T,H,W)``.

    Frames are normalised with the ImageNet statistics and resized to the nearest multiple of the patch size
    inside; the output is resized back to ``(H, W)``. With ``per_frame=True`` the temporal blocks are skipped,
    which, for a model fresh from its prior, is exactly the prior applied frame by frame.
    """

    kind = DEPTH.kind
    family_name = "depth-anything-v2"
    prior_class = DepthAnythingForDepthEstimation
    trainable_prefixes = ("neck.", "head.", "temporal.")
    default_clip_len = CLIP_LEN_DEPTH

    def default_input_size(self) -> dict:
        """Depth Anything V2's processor: short side 518 (enlarging small frames); the long side is capped at
        4x that so extreme panoramas stay within memory."""
        return {"short_side": DA_V2_SHORT_SIDE, "long_side": 4 * DA_V2_SHORT_SIDE, "upscale": True}

    def __init__(
        self,
        prior: DepthAnythingForDepthEstimation,
        prior_ref: str = "",
        temporal: TemporalConfig | dict | None = None,
        per_frame: bool = False,
    ):
        super().__init__(prior_ref, as_temporal_config(temporal), per_frame)
        if self.temporal_config.layout != "stage":
            raise ValueError(f"the depth model has one temporal layout, 'stage'; got {self.temporal_config.layout!r}")
        self.patch_size = prior.config.patch_size
        self.backbone = prior.backbone.requires_grad_(False).eval()
        self.neck = prior.neck
        self.head = prior.head
        #: "metric" priors (Depth Anything V2 Metric: sigmoid times max_depth) output metres, see :attr:`task`
        self.depth_type = prior.config.depth_estimation_type
        if self.depth_type == METRIC and not (prior.config.max_depth or 0) > 0:
            raise ValueError("a metric Depth Anything prior needs a positive max_depth (metres) in its config.json")
        self.max_depth = float(prior.config.max_depth) if self.depth_type == METRIC else None
        channels = prior.config.fusion_hidden_size
        self.temporal = nn.ModuleList(
            TemporalBlock(channels, self.temporal_config) for _ in range(DEPTH_NUM_TEMPORAL_BLOCKS)
        )
        # (fusion layer, temporal block) pairs: a block follows each of the first three fusion layers
        self._temporal_sites = list(zip(self.neck.fusion_stage.layers, self.temporal, strict=False))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        #: Metric models: the frozen prior's own neck and head (see :meth:`set_scale_anchor`), and the stride of
        #: the frames they decode; None: no anchor.
        self.scale_anchor: int | None = None
        self.prior_decoder: nn.ModuleDict | None = None

    @property
    def task(self) -> Task:
        """METRIC_DEPTH (depth in metres) for a metric prior, else DEPTH (relative disparity)."""
        return METRIC_DEPTH if self.depth_type == METRIC else DEPTH

    # -- the metric scale anchor ---------------------------------------------------------------------------------
    def set_scale_anchor(self, stride: int | None) -> None:
        """Hold each window's metric scale at the frozen prior's: in windowed inference (:meth:`decode_window`) the
        window's depth is multiplied by ``exp(mean_i (median log D_prior,i - median log D_i))`` over every
        ``stride``-th frame ``i`` it encodes. The stabilization loss is blind to scale and the training anchor
        (``MetricDepthTask.clip_scale_loss``) holds it only on scenes like the training clips, so held out the video
        model's median depth drifted from the prior's on far scenes (docs/embedded_models.md). The mean over a
        window's frames averages the prior's frame-to-frame scale flicker out; a window's scale is one factor, so
        its steadiness is the video model's.

        Costs the prior's own neck and head on one frame in ``stride`` (the ViT features are shared) and a copy of
        their weights, read from the prior's checkpoint (``prior_ref``), whatever training did to this model's.
        :meth:`from_pretrained` sets it from ``config.json`` (:meth:`configure`); ``None`` turns it off.
        """
        if stride is None:
            self.scale_anchor, self.prior_decoder = None, None
            return
        if self.depth_type != METRIC:
            raise ValueError("a scale anchor holds metric depth; this model's prior is relative")
        if int(stride) < 1:
            raise ValueError(f"the scale anchor's stride must be at least 1, got {stride}")
        if self.prior_decoder is None:
            decoder = self._frozen_decoder()
            decoder.load_state_dict(_prior_decoder_state(self.prior_ref))
            self.prior_decoder = decoder
        self.scale_anchor = int(stride)

    def configure(self, config: dict) -> None:
        """The scale anchor of a saved metric model (``"scale_anchor": {"stride": k}``); not per frame, where the
        model is its prior. Called before the trained weights load, while the neck and head still hold the prior's:
        the frozen copy is taken from them instead of reading them from the prior's checkpoint a second time."""
        anchor = config.get(SCALE_ANCHOR_KEY)
        if anchor and not self.per_frame:
            if self.depth_type == METRIC:
                self.prior_decoder = self._frozen_decoder()
            self.set_scale_anchor(int(anchor["stride"]))

    def _frozen_decoder(self) -> nn.ModuleDict:
        """A frozen copy of this model's neck and head, as they are now."""
        decoder = nn.ModuleDict({"neck": copy.deepcopy(self.neck), "head": copy.deepcopy(self.head)})
        return decoder.requires_grad_(False).eval()

    def config_dict(self) -> dict:
        config = super().config_dict()
        if self.scale_anchor is not None:
            config[SCALE_ANCHOR_KEY] = {"stride": self.scale_anchor}
        return config

    def train(self, mode: bool = True) -> VideoDepthModel:
        super().train(mode)
        if self.prior_decoder is not None:
            self.prior_decoder.eval()  # frozen
        return self

    def _prior_log_medians(self, features: list[torch.Tensor], patch_h: int, patch_w: int) -> torch.Tensor:
        """``(N,)`` float32: the median log depth of the frozen prior on every ``scale_anchor``-th frame of the N
        frames of ``features`` (ViT features), NaN on the others."""
        frames = len(features[0])
        picked = torch.arange(0, frames, self.scale_anchor, device=features[0].device)
        decoder = self.prior_decoder
        depth = decoder["head"](decoder["neck"]([f[picked] for f in features], patch_h, patch_w), patch_h, patch_w)
        medians = torch.full((frames,), float("nan"), dtype=torch.float32, device=depth.device)
        medians[picked] = _log_medians(depth)
        return medians

    def _anchored(self, depth: torch.Tensor, prior_medians: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``depth (B*T, h, w)`` with each video's window scaled so that its mean log-median ratio to the prior over
        the anchor frames is zero (float32)."""
        depth = depth.float()
        videos = depth.unflatten(0, (-1, num_frames))
        for video, medians in zip(videos, prior_medians.unflatten(0, (-1, num_frames)), strict=True):
            picked = torch.isfinite(medians)
            if picked.any():
                video.mul_(torch.exp((medians[picked] - _log_medians(video[picked])).mean()))
        return depth


    # -- stages, exposed for training (the frozen features can be cached) -----------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` in [0,1] -> normalised pixel values with sides that are multiples of the patch size."""
        size = (nearest_multiple(images.shape[-2], DINOV2_PATCH), nearest_multiple(images.shape[-1], DINOV2_PATCH))
        if size != tuple(images.shape[-2:]):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    @torch.no_grad()
    def backbone_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Frozen ViT features (one tensor per DPT input layer) of ``(N,3,h,w)`` preprocessed pixels."""
        return list(self.backbone(pixel_values).feature_maps)

    def decode_head(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        """DPT neck (with temporal blocks) and head; ``features`` of N = B*T frames at pixel size ``size``.

        Returns disparity ``(N, h, w)`` at the preprocessed size. Per frame (``per_frame``), this is the library's
        neck and head as they are. With temporal blocks, the window is decoded by :meth:`_decode_window`: the same
        modules in the same order, but only the fused features the blocks need are ever held for all frames.
        """
        patch_h, patch_w = size[0] // self.patch_size, size[1] // self.patch_size
        if self.per_frame:
            return self.head(self.neck(features, patch_h, patch_w), patch_h, patch_w)
        return self._decode_window(features, num_frames, patch_h, patch_w)

    def _decode_window(self, features: list[torch.Tensor], num_frames: int, patch_h: int, patch_w: int) -> torch.Tensor:
        """Reassemble + convs in chunks of frames, then :meth:`_fuse_window`."""
        return self._fuse_window(self._neck_levels(features, patch_h, patch_w), num_frames, patch_h, patch_w)

    def _fuse_window(
        self, levels: list[list[torch.Tensor]], num_frames: int, patch_h: int, patch_w: int
    ) -> torch.Tensor:
        """Fusion layers 0-2 each followed by its temporal block on the whole window, then fusion layer 3 + head in
        chunks (they hold the largest maps and are per frame). ``levels``: :meth:`_neck_maps` per level, finest
        first, each as chunks of frames; the list is emptied as its maps are used up. Each fusion layer's chunks are
        written into one window tensor, which its temporal block then updates in place: a level's maps are held once.

        Feature maps are channels-last: the DPT convolutions run 1.5x faster that way on CPU (docs/benchmarks.md).
        """
        levels.reverse()  # coarsest first, as the fusion stage takes them
        layers, frames = self.neck.fusion_stage.layers, sum(len(part) for part in levels[0])  # B * num_frames
        sizes = [level[0].shape[2:] for level in levels[1:-1]] + [self._finest_size(patch_h, patch_w)]
        fused: list[torch.Tensor] | None = None
        for i, (layer, block) in enumerate(zip(layers, self.temporal, strict=False)):
            level, levels[i], size = levels[i], [], sizes[i]
            window = stack_chunks((layer(part, size=size) if fused is None else layer(prev, part, size=size)
                                   for prev, part in zip(fused or level, level, strict=True)), frames)
            del level, fused
            window = block(window, num_frames, inplace=True).contiguous(memory_format=torch.channels_last)
            fused = list(window.split(DECODE_CHUNK))
            del window
        last, finest = layers[len(self.temporal)], levels.pop()

        def finish(prev: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
            return self.head([last(prev, self._finest_map(projection))], patch_h, patch_w)

        if self.gradient_checkpointing and torch.is_grad_enabled():
            # the head's full-resolution maps held a third of a training step's saved tensors (docs/adapt.md)
            finish = partial(checkpoint, finish, use_reentrant=False)
        return stack_chunks((finish(fused.pop(0), finest.pop(0)) for _ in range(len(finest))), frames)

    def _neck_maps(self, features: list[torch.Tensor], patch_h: int, patch_w: int) -> list[torch.Tensor]:
        """The neck's per-frame part: reassemble stage + convs, one channels-last map per level (finest first),
        except that the finest level stops at its reassemble projection (:meth:`_finest_map` finishes it).

        The finest level is only needed by the last fusion layer, which runs a few frames at a time: held as the
        projection (48 channels at the patch grid for Small), a window's finest level takes under 5 % of the memory of
        the finished maps (64 channels at 4x the grid: 550 MB for 110 frames at 518x924 in bf16). Its 4x upsampling
        is recomputed from the projection, about 0.1 % of the ViT's arithmetic.
        """
        with capture_output(self.neck.reassemble_stage.layers[0].projection) as projection:
            maps = self.neck.reassemble_stage(features, patch_h, patch_w)
        finest = projection[0].contiguous(memory_format=torch.channels_last)
        return [finest] + [conv(m.contiguous(memory_format=torch.channels_last))
                           for conv, m in zip(self.neck.convs[1:], maps[1:], strict=True)]

    def _finest_map(self, projection: torch.Tensor) -> torch.Tensor:
        """The finest level's map from its reassemble projection: the reassemble layer's resize, then its conv."""
        resized = self.neck.reassemble_stage.layers[0].resize(projection)
        return self.neck.convs[0](resized.contiguous(memory_format=torch.channels_last))

    def _finest_size(self, patch_h: int, patch_w: int) -> tuple[int, int]:
        """Spatial size of the finest level: the patch grid times its reassemble factor (a transposed convolution
        with kernel and stride equal to the factor)."""
        factor = int(self.neck.config.reassemble_factors[0])
        return patch_h * factor, patch_w * factor

    def _neck_levels(self, features: list[torch.Tensor], patch_h: int, patch_w: int) -> list[list[torch.Tensor]]:
        """:meth:`_neck_maps` in chunks of DECODE_CHUNK frames: per level, the list of its chunks."""
        chunks = [self._neck_maps([f[start : start + DECODE_CHUNK] for f in features], patch_h, patch_w)
                  for start in range(0, len(features[0]), DECODE_CHUNK)]
        return [list(level) for level in zip(*chunks, strict=True)]

    def _patch_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """ViT patches (rows, columns) of a frame of ``size`` after :meth:`preprocess`."""
        return tuple(nearest_multiple(side, DINOV2_PATCH) // self.patch_size for side in size)

    # -- inference in windows (bufferanytime.inference.Predictor) ----------------------------------------------
    def encode_window(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every per-frame stage of ``(N,3,H,W)`` frames in [0,1]: the frozen ViT and, with temporal blocks, the
        neck's reassemble stage and convs (:meth:`_neck_maps`: the finest level as its projection; no gradient
        needed: inference only).

        The predictor keeps these for the overlap frames of the next window, so overlap frames cost only the
        fusion layers, the blocks and the head again; and a window's ViT features are never all held at once.
        """
        features = self.encode_frames(images)
        if self.per_frame:
            return features
        grid = self._patch_grid(images.shape[-2:])
        maps = self._neck_maps(features, *grid)
        return maps if self.scale_anchor is None else [*maps, self._prior_log_medians(features, *grid)]

    def decode_window(self, maps: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        """:meth:`encode_window` output of B*T frames -> disparity ``(B*T, H, W)`` at ``size`` (metres for a metric
        prior, held at the prior's scale when the model has a scale anchor)."""
        if self.per_frame:
            return self.decode_frames(maps, num_frames, size)
        prior_medians = maps.pop() if self.scale_anchor is not None else None
        levels = [list(level.split(DECODE_CHUNK)) for level in maps]
        maps.clear()  # the levels hold the maps now: each is freed as soon as the fusion has used it
        depth = self._fuse_window(levels, num_frames, *self._patch_grid(size))
        if prior_medians is not None:
            depth = self._anchored(depth, prior_medians, num_frames)
        return self._resized(depth, size)

    def decode_frames(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        """The temporal stage on ``encode_frames`` output of B*T frames -> disparity ``(B*T, H, W)`` at ``size``."""
        size_in = (nearest_multiple(size[0], DINOV2_PATCH), nearest_multiple(size[1], DINOV2_PATCH))
        return self._resized(self.decode_head(features, num_frames, size_in), size)

    @staticmethod
    def _resized(disparity: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(N, h, w)`` disparity at the preprocessed size -> at the frames' ``size``."""
        if disparity.shape[-2:] != tuple(size):
            disparity = F.interpolate(disparity[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        return disparity


def _prior_decoder_state(prior_ref: str) -> dict[str, torch.Tensor]:
    """The neck and head weights of the Depth Anything checkpoint ``prior_ref`` (its safetensors files, one or
    sharded), named as in ``{"neck": ..., "head": ...}``; the ViT's are not read."""
    directory = resolve_dir(prior_ref)
    state = {}
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), "pt") as weights:
            state |= {name: weights.get_tensor(name) for name in weights.keys()  # noqa: SIM118 (not a dict)
                      if name.startswith(("neck.", "head."))}
    return state


def _log_medians(depth: torch.Tensor) -> torch.Tensor:
    """``(N,)`` float32: the median over each frame's pixels of the log of ``depth (N, h, w)`` (metres)."""
    return log_depth(depth.float()).flatten(1).median(dim=1).values


class DepthGraph(nn.Module):
    """Export graph: ``frames (B,T,3,H,W)`` in [0,1] -> ``(B,T,H,W)``: ViT, the library's DPT neck with the temporal
    blocks hooked in after their fusion layers, head (the eager path decodes the same modules in chunks of frames,
    equal within float rounding)."""

    def __init__(self, model: VideoDepthModel):
        super().__init__()
        self.model = model

    @staticmethod
    def multiple(model: VideoDepthModel) -> int:
        """Input sides must be multiples of the ViT patch."""
        return model.patch_size

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        m = self.model
        b, t, _, h, w = frames.shape
        features = m.backbone_features(m.preprocess(frames.flatten(0, 1)))
        patch_h, patch_w = h // m.patch_size, w // m.patch_size
        with temporal_hooks([] if m.per_frame else m._temporal_sites, t):
            out = m.head(m.neck(features, patch_h, patch_w), patch_h, patch_w)
        return out.unflatten(0, (b, t))


# -- tiny random priors in the exact on-disk format (tests, benchmarks) ---------------------------------------------

def depth_anything_config(
    hidden: int, layers: int, heads: int, out_indices: list[int], neck: list[int], fusion: int, mlp_ratio: int,
    head_hidden: int,
):
    """A relative-depth Depth Anything config: a DINOv2 backbone (patch 14, ``hidden`` wide, ``layers`` deep) whose
    ``out_indices`` layers feed a DPT neck of widths ``neck`` fused at ``fusion`` channels."""
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
    fan_in_init([*prior.neck.modules(), *prior.head.modules()])
    torch.nn.init.constant_(prior.head.conv3.bias, 1.0)


def make_tiny_depth_prior(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny informative random Depth Anything prior to ``path`` (seeding torch's global generator with
    ``seed``) and return the path."""
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
    hidden, layers, heads, out_indices, neck, fusion = DEPTH_ANYTHING_V2_SIZES[size]
    config = depth_anything_config(hidden, layers, heads, out_indices, neck, fusion, mlp_ratio=4, head_hidden=32)
    torch.manual_seed(seed)
    prior = DepthAnythingForDepthEstimation(config)
    make_informative(prior)
    prior.save_pretrained(path)
    return path


FAMILY = Family(
    name=VideoDepthModel.family_name,
    title="Depth Anything V2",
    model_class=VideoDepthModel,
    tasks=(DEPTH, METRIC_DEPTH),
    objective="bufferanytime.training.objectives:DepthObjective",
    graph=DepthGraph,
    tiny_prior=lambda path, seed: make_tiny_depth_prior(path, seed),
    prior_trainers={DEPTH.name: "bufferanytime.training.prior:train_depth_prior",
                    METRIC_DEPTH.name: "bufferanytime.training.prior:train_metric_depth_prior"},
    source="transformers DepthAnythingForDepthEstimation (Depth Anything V2, relative or metric)",
)
