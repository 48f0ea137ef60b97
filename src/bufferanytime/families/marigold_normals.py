"""The Marigold normals v1-1 family (prs-eth): the video normal model, its export graph and its tiny test prior.

The prior is a ``MarigoldNormalsPipeline`` checkpoint of prs-eth (Ke et al., *Marigold: Affordable Adaptation of
Diffusion-Based Image Generators for Image Analysis*; Hub id ``prs-eth/marigold-normals-v1-1``), in the same
diffusers layout as Marigold-E2E-FT (:mod:`~bufferanytime.families.marigold_e2e_normals`): both declare the
``_class_name`` ``MarigoldNormalsPipeline``. They are told apart by the marker of this family's registration:
prs-eth's multi-step v1-1 checkpoints declare ``"default_denoising_steps": 4`` in ``model_index.json``
(:data:`V1_1_DENOISING_STEPS`), while E2E-FT checkpoints are single-step (the tiny prior of each writes the value its
real checkpoints have).

Everything but the axes is Marigold-E2E-FT's (:class:`VideoNormalModel` is subclassed, not copied): frozen VAE and
U-Net, zero-initialised temporal blocks hooked into the U-Net, the training objective
:class:`~bufferanytime.training.objectives.LatentObjective` (regularization in latent space, stabilization on the
decoded normals with deferred back-propagation). Prediction is single-step from a zero latent at the last timestep
of a trailing-spaced DDIM scheduler: Marigold's trailing single-step mode, which Garcia et al. (*Fine-Tuning
Image-Conditional Diffusion Models is Easier than You Think*, Sec. 3) show to match the multi-step, ensembled
inference of the Marigold checkpoints; v1-1's own default of 4 steps from noise is not used (a video model must be
deterministic per frame for the temporal blocks and the sliding windows to agree).

Axes: v1-1 normals already use ours (x right, y up, z towards the camera: diffusers' Marigold documentation), so
unlike E2E-FT there is no x flip.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from bufferanytime.constants import MARIGOLD_NORMALS_EPS
from bufferanytime.families.base import Family
from bufferanytime.families.marigold_e2e_normals import (
    MODEL_INDEX_NAME,
    NormalGraph,
    VideoNormalModel,
    tiny_marigold_components,
    write_marigold_prior,
)
from bufferanytime.io.atomic import write_text_atomic
from bufferanytime.tasks import NORMAL

PRIOR_ID = "prs-eth/marigold-normals-v1-1"
STEPS_KEY = "default_denoising_steps"
V1_1_DENOISING_STEPS = 4  # model_index.json of prs-eth/marigold-normals-v1-1 (and marigold-depth-v1-1)


def set_index_keys(directory: Path, **keys: object) -> None:
    """Set ``keys`` in the ``model_index.json`` of a pipeline directory (the rest of the file kept)."""
    file = Path(directory) / MODEL_INDEX_NAME
    index = json.loads(file.read_text())
    index.update(keys)
    write_text_atomic(file, json.dumps(index, indent=2, sort_keys=True) + "\n")


class VideoMarigoldNormalsModel(VideoNormalModel):
    """``forward(frames (B,T,3,H,W) in [0,1]) -> unit normals (B,T,3,H,W)``: :class:`VideoNormalModel` on a
    Marigold normals v1-1 prior, whose decoded normals are already in our axes."""

    family_name = "marigold-normals"

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normal latents ``(N,4,h,w)`` -> unit normals ``(N,3,H,W)`` (differentiable): diffusers'
        ``MarigoldNormalsPipeline.decode_prediction`` and ``normalize_normals``, no change of axes."""
        images = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        images = images.clamp(-1.0, 1.0)
        if not self.use_full_z_range:
            images = torch.cat([images[:, :2], images[:, 2:] * 0.5 + 0.5], dim=1)
        return F.normalize(images, dim=1, eps=MARIGOLD_NORMALS_EPS)

    def save_prior(self, destination: str | Path) -> None:
        """As :meth:`VideoNormalModel.save_prior`, keeping the marker that says the copy is a v1-1 checkpoint."""
        super().save_prior(destination)
        set_index_keys(Path(destination), **{STEPS_KEY: V1_1_DENOISING_STEPS})


def make_tiny_marigold_normals_prior(path: str | Path, seed: int = 0) -> Path:
    """A tiny random Marigold normals v1-1 prior at ``path`` (:func:`tiny_marigold_components`) with v1-1's
    ``default_denoising_steps``, and the empty-prompt embedding stored."""
    path = Path(path)
    parts = tiny_marigold_components(seed)
    write_marigold_prior(path, parts["unet"], parts["vae"], parts["scheduler"], parts["embedding"])
    set_index_keys(path, **{STEPS_KEY: V1_1_DENOISING_STEPS})
    return path


FAMILY = Family(
    name=VideoMarigoldNormalsModel.family_name,
    title="Marigold normals v1-1",
    model_class=VideoMarigoldNormalsModel,
    tasks=(NORMAL,),
    objective="bufferanytime.training.objectives:LatentObjective",
    graph=NormalGraph,
    tiny_prior=lambda path, seed: make_tiny_marigold_normals_prior(path, seed),
    source=f"diffusers MarigoldNormalsPipeline with {STEPS_KEY} {V1_1_DENOISING_STEPS}, single step from zero "
           f"noise ({PRIOR_ID})",
)
