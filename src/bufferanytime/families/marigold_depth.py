"""The Marigold depth family: diffusers ``MarigoldDepthPipeline`` checkpoints as a video depth model.

Priors: prs-eth's Marigold depth v1-1 (Ke et al., *Marigold: Affordable Adaptation of Diffusion-Based Image
Generators for Image Analysis*; Hub id ``prs-eth/marigold-depth-v1-1``) and the single-step Marigold-E2E-FT depth
(Garcia et al., *Fine-Tuning Image-Conditional Diffusion Models is Easier than You Think*; ``GonzaloMG/marigold-e2e-
ft-depth``), in diffusers' layout: ``model_index.json`` (``_class_name`` ``MarigoldDepthPipeline``), ``unet/``,
``vae/``, ``scheduler/`` and ``text_encoder/`` + ``tokenizer/`` (only to compute the empty-prompt embedding once;
copies written here store it instead, as the normals families do).

The video model is the Marigold normals one (:class:`VideoNormalModel` is subclassed, not copied): frozen VAE and
U-Net, zero-initialised temporal blocks hooked into the U-Net, prediction in latent space, single-step from a zero
latent at the last timestep of a trailing-spaced DDIM scheduler with v-prediction (Marigold's trailing single-step
mode; E2E-FT's inference, which Garcia et al., Sec. 3, show to match Marigold's multi-step ensembled inference).
Training objective: :class:`~bufferanytime.training.objectives.LatentObjective`, as the normals (the
regularization on latents, Eq. 2; the stabilization on the decoded depth through deferred back-propagation).

Decoding is diffusers' ``MarigoldDepthPipeline.decode_prediction``: the mean of the 3 decoded channels, clipped to
[-1, 1] and mapped to [0, 1]. For ``prediction_type`` ``"depth"`` (every Marigold depth checkpoint) that is
affine-invariant DEPTH, larger = farther. This package's depth buffer is relative disparity (larger = nearer), so
the model outputs ``1 - depth``: an affine-invariant NEARNESS. The choice, and what it is not:

- it is an affine map of the prior's depth, so it keeps all of the prior's information and its ordering matches
  disparity's: sliding windows (least-squares scale and shift), the per-clip normalised stabilization loss, OPW and
  the colour maps all work on it unchanged;
- it is affine in depth, NOT in inverse depth: the DepthCrafter-protocol evaluation (one scale and shift per video
  fitted in disparity) is applied to it as to any relative-disparity output, and can only fit it approximately
  (a scene with a large depth range scores worse than the prior's depth would after an affine fit in depth).
  Inverting the depth instead would need the unknown shift of Marigold's affine-invariant depth (``1 / depth`` of
  an affine-invariant depth is not an affine-invariant disparity), so no inversion would be honest either.

A checkpoint with ``prediction_type`` ``"disparity"`` (diffusers supports it) is passed through as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, MarigoldDepthPipeline, UNet2DConditionModel

from bufferanytime.errors import InputError
from bufferanytime.families.base import Family
from bufferanytime.families.marigold_e2e_normals import (
    MODEL_INDEX_NAME,
    REQUIRED_SUBDIRS,
    NormalGraph,
    VideoNormalModel,
    save_pipeline,
    tiny_marigold_components,
)
from bufferanytime.models.base import resolve_dir
from bufferanytime.models.temporal import TemporalConfig
from bufferanytime.tasks import DEPTH

PRIOR_ID = "prs-eth/marigold-depth-v1-1"
PREDICTION_TYPES = ("depth", "disparity")  # diffusers MarigoldDepthPipeline.supported_prediction_types
V1_1_DENOISING_STEPS = 4  # model_index.json of prs-eth/marigold-depth-v1-1 (written by the tiny prior, as real)


def write_marigold_depth_prior(
    directory: Path,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    scheduler: DDIMScheduler,
    embedding: torch.Tensor | None,
    prediction_type: str = PREDICTION_TYPES[0],
    default_denoising_steps: int | None = None,
    processing_resolution: int | None = None,
) -> None:
    """Write a prior in the ``MarigoldDepthPipeline`` layout (no text encoder), plus the empty-prompt embedding."""
    directory = Path(directory)
    pipeline = MarigoldDepthPipeline(
        unet=unet, vae=vae, scheduler=scheduler, text_encoder=None, tokenizer=None, prediction_type=prediction_type,
        scale_invariant=True, shift_invariant=True, default_denoising_steps=default_denoising_steps,
        default_processing_resolution=processing_resolution,
    )
    save_pipeline(pipeline, directory, embedding)


class VideoMarigoldDepthModel(VideoNormalModel):
    """``forward(frames (B,T,3,H,W) in [0,1]) -> nearness (B,T,H,W)`` in [0, 1] (``1 - `` the prior's
    affine-invariant depth; see the module docstring). The stages are :class:`VideoNormalModel`'s; only decoding
    differs (:meth:`decode_latents` gives ``(N,1,H,W)``)."""

    kind = DEPTH.kind
    family_name = "marigold-depth"

    #: The checkpoint's ``prediction_type`` (``"depth"`` is output as ``1 - depth``) and its declared number of
    #: denoising steps (kept in copies; prediction here is always single-step).
    prediction_type: str = PREDICTION_TYPES[0]
    denoising_steps: int | None = None

    @classmethod
    def from_prior(
        cls, name_or_path: str | Path, temporal: TemporalConfig | dict | None = None, per_frame: bool = False
    ) -> VideoMarigoldDepthModel:
        """Build the video model around a ``MarigoldDepthPipeline`` checkpoint: a Hub id or a local directory."""
        directory = resolve_dir(name_or_path)
        missing = [name for name in REQUIRED_SUBDIRS if not (directory / name).is_dir()]
        if missing:
            raise InputError(f"{name_or_path}: not a Marigold depth directory (missing {', '.join(missing)}/)")
        index_file = directory / MODEL_INDEX_NAME
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
        prediction_type = index.get("prediction_type") or PREDICTION_TYPES[0]
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported Marigold prediction_type {prediction_type!r}; expected one of "
                             f"{PREDICTION_TYPES}")
        model = super().from_prior(name_or_path, temporal, per_frame)
        model.prediction_type = prediction_type
        model.denoising_steps = index.get("default_denoising_steps")
        return model

    def save_prior(self, destination: str | Path) -> None:
        """Write this model's prior (U-Net, VAE, scheduler, empty-prompt embedding) as a Marigold depth directory."""
        write_marigold_depth_prior(
            Path(destination), self.unet, self.vae, self.scheduler, self.empty_prompt_embedding,
            prediction_type=self.prediction_type, default_denoising_steps=self.denoising_steps,
            processing_resolution=self.processing_resolution,
        )

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Depth latents ``(N,4,h,w)`` -> nearness ``(N,1,H,W)`` in [0, 1] (differentiable): diffusers'
        ``decode_prediction`` (channel mean, clipped, to [0, 1]), then ``1 - depth`` for a depth checkpoint."""
        images = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        value = images.mean(dim=1, keepdim=True).clamp(-1.0, 1.0) * 0.5 + 0.5
        return 1.0 - value if self.prediction_type == PREDICTION_TYPES[0] else value

    def decode_frames(self, features: list[torch.Tensor], num_frames: int, size: tuple[int, int]) -> torch.Tensor:
        """The temporal stage on ``encode_frames`` output of B*T frames -> nearness ``(B*T, H, W)`` at ``size``."""
        rgb_latents = features[0].unflatten(0, (-1, num_frames))
        latents = self.predict_latents(rgb_latents).flatten(0, 1)
        nearness = torch.cat([self.decode_latents(chunk) for chunk in latents.split(self.decode_chunk)])
        if nearness.shape[-2:] != tuple(size):
            nearness = F.interpolate(nearness, size=tuple(size), mode="bilinear", align_corners=False)
        return nearness[:, 0]


class MarigoldDepthGraph(NormalGraph):
    """Export graph: ``frames (B,T,3,H,W)`` in [0,1] -> nearness ``(B,T,H,W)`` (the normals graph, one channel)."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return super().forward(frames)[:, :, 0]


def make_tiny_marigold_depth_prior(path: str | Path, seed: int = 0) -> Path:
    """A tiny random ``MarigoldDepthPipeline`` prior at ``path``: the smallest Marigold components
    (:func:`~bufferanytime.families.marigold_e2e_normals.tiny_marigold_components`) with v1-1's ``prediction_type`` and
    ``default_denoising_steps``."""
    path = Path(path)
    parts = tiny_marigold_components(seed)
    write_marigold_depth_prior(path, parts["unet"], parts["vae"], parts["scheduler"], parts["embedding"],
                               default_denoising_steps=V1_1_DENOISING_STEPS)
    return path


FAMILY = Family(
    name=VideoMarigoldDepthModel.family_name,
    title="Marigold depth",
    model_class=VideoMarigoldDepthModel,
    tasks=(DEPTH,),
    objective="bufferanytime.training.objectives:LatentObjective",
    graph=MarigoldDepthGraph,
    tiny_prior=lambda path, seed: make_tiny_marigold_depth_prior(path, seed),
    source=f"diffusers MarigoldDepthPipeline layout, single step from zero noise, output 1 - depth ({PRIOR_ID})",
)
