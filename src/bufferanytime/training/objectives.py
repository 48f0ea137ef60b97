"""What one training step computes, for depth and for normals (Sec. 3.1, 3.2, Alg. 1 and 2 of the paper).

Each objective splits a step in two:

- :meth:`prepare` (frozen, no gradient, cacheable): per clip, the frozen encoder's output, the forward and
  backward optical flows between adjacent frames with their cycle-consistency masks, and the image prior's
  regularization targets (for the requested frames);
- :meth:`losses` (trainable): the video model's prediction for a batch of prepared clips, the regularization loss
  on ONE frame per clip and the stabilization loss on all frames; ``loss = w_reg * L_reg + L_stable`` (Eq. 3).

Depth (Depth Anything V2): the frozen ViT features feed the trainable DPT neck/head with temporal blocks; the
target is the prior's own disparity (a separate frozen copy of the prior: the video model's head is fine-tuned),
compared with :func:`~bufferanytime.losses.affine_invariant_loss` (Eq. 1). Normals (Marigold-E2E-FT): the frozen
VAE latents go through the U-Net with temporal blocks; the target is the prior's latent (the same frozen U-Net
without temporal blocks), compared with :func:`~bufferanytime.losses.latent_l2_loss` (Eq. 2), and the
stabilization loss on the decoded normals is back-propagated with :func:`~bufferanytime.losses.deferred_backward`.

Depth scale (``stable_norm``): the regularization loss is blind to the scale of the disparity, so on the raw
disparity (Alg. 2 as written, ``"none"``) the stabilization loss can always be lowered by shrinking the output,
with nothing to stop it. By default (``"clip"``) it is computed on the disparity normalised by ONE median and
mean absolute deviation per clip (the normalisation of Eq. 1, and of the OPW metric, over the whole clip): blind
to the clip's scale and shift like the regularization loss, while still counting any per-frame flicker.

Metric depth (a metric prior, ``model.task`` is METRIC_DEPTH): the regularization is an L1 in log depth, which
keeps the prior's metric scale, and the stabilization loss warps log depth (minus its clip median), so a relative
change weighs the same near and far (the task's ``regularization_loss`` and ``stable_buffers``; why in
docs/training.md).

Which objective trains a model is its prior family's choice (``Family.objective``, :mod:`bufferanytime.families`):
:func:`objective_class` of a model. :class:`DepthObjective` serves any family with a frozen encoder
(``preprocess``, ``backbone_features``) and a trainable depth decoder (``decode_head``); :class:`LatentObjective`
(also called :class:`NormalObjective`) any latent single-step family (``encode_latents``, ``predict_latents``,
``decode_latents``), whatever its task: the regularization compares latents, and the stabilization loss is the
task's on the decoded buffers (a one-channel decoded depth is stabilized as :class:`DepthObjective` stabilizes
disparity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from bufferanytime.constants import (
    CLIP_LEN_DEPTH,
    CLIP_LEN_NORMAL,
    LR_DEPTH,
    LR_NORMAL,
    MARIGOLD_NORMALS_EPS,
    TRAIN_RES_DEPTH,
    TRAIN_RES_NORMAL,
)
from bufferanytime.flow import FlowModel, cycle_mask
from bufferanytime.losses import deferred_backward, latent_l2_loss, stabilization_loss
from bufferanytime.losses.stabilization_3d import training_stabilization_3d
from bufferanytime.models import load_model
from bufferanytime.models.base import VideoModel
from bufferanytime.tasks import DEPTH, METRIC_DEPTH, NORMAL, Task

if TYPE_CHECKING:
    from bufferanytime.families.depth_anything_v2 import VideoDepthModel
    from bufferanytime.families.marigold_e2e_normals import VideoNormalModel

FROZEN_BATCH = 8  # frames sent through a frozen network at once while preparing a clip (bounds its memory)
FLOW_KEYS = ("flow_fwd", "flow_bwd", "cycle_fwd", "cycle_bwd")  # (L-1, ...) tensors of a prepared clip
CAMERA_KEYS = ("poses", "intrinsics")  # with --stabilization 3d: (L, 4, 4) and (4,) per clip, see clip_camera


@dataclass
class StepLosses:
    loss: torch.Tensor  # what to back-propagate
    reg: torch.Tensor  # detached values, for the log
    stable: torch.Tensor


def clip_flows(frames: torch.Tensor, flow_model: FlowModel, tau: float) -> dict[str, torch.Tensor]:
    """Flows between adjacent frames of ``(L,3,H,W)`` [0,1] frames and their cycle masks (Alg. 2)."""
    src, dst = frames[:-1].float(), frames[1:].float()
    with torch.autocast(frames.device.type, enabled=False):  # flows at full precision, whatever the training's
        fwd = flow_model(src, dst).float()
        bwd = flow_model(dst, src).float()
    return {
        "flow_fwd": fwd,
        "flow_bwd": bwd,
        "cycle_fwd": cycle_mask(fwd, bwd, tau),
        "cycle_bwd": cycle_mask(bwd, fwd, tau),
    }


def clip_length(prepared: dict[str, torch.Tensor]) -> int:
    return prepared["flow_fwd"].shape[0] + 1


def truncate(prepared: dict[str, torch.Tensor], length: int, frame_keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The first ``length`` frames of a prepared clip (batches are cut to their shortest clip)."""
    out = dict(prepared)
    for key in FLOW_KEYS:
        out[key] = prepared[key][: length - 1]
    for key in frame_keys:
        out[key] = prepared[key][:length]
    return out


def pick_target(prepared: dict[str, torch.Tensor], frame: int) -> torch.Tensor:
    """The regularization target of ``frame`` among the frames the clip was prepared for."""
    frames = prepared["target_frames"].tolist()
    if frame not in frames:
        raise KeyError(f"no regularization target prepared for frame {frame} (have {frames})")
    return prepared["targets"][frames.index(frame)]


def clip_targets(prepared: dict[str, torch.Tensor], length: int) -> torch.Tensor:
    """The regularization targets of the first ``length`` frames of a clip prepared for all its frames."""
    return torch.stack([pick_target(prepared, frame) for frame in range(length)])


def _resized(disparity: torch.Tensor, size) -> torch.Tensor:
    """Disparity ``(N, h, w)`` at the preprocessed size -> ``(N, H, W)`` at the clip's ``size`` (bilinear)."""
    if tuple(disparity.shape[-2:]) == tuple(size):
        return disparity
    return F.interpolate(disparity[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


class DepthNet(nn.Module):
    """The trainable path of the depth model, from frozen ViT features to disparity at the clip's resolution.

    A module of its own so that distributed data parallel wraps exactly what receives gradients.
    """

    def __init__(self, model: VideoDepthModel):
        super().__init__()
        self.model = model

    def forward(self, features: list[torch.Tensor], num_frames: int, pixel_size, out_size) -> torch.Tensor:
        return _resized(self.model.decode_head(features, num_frames, tuple(pixel_size)), out_size)


class NormalNet(nn.Module):
    """The trainable path of a latent model: RGB latents to predicted latents (U-Net + temporal blocks)."""

    def __init__(self, model: VideoNormalModel):
        super().__init__()
        self.model = model

    def forward(self, rgb_latents: torch.Tensor) -> torch.Tensor:
        return self.model.predict_latents(rgb_latents)


def _stabilization(buffers: torch.Tensor, flows: dict[str, torch.Tensor], config) -> torch.Tensor:
    """Alg. 2 on ``buffers`` (B, K, C, H, W) with the clip's (cached) flows and cycle masks and the run's settings."""
    return stabilization_loss(
        buffers,
        flows["flow_fwd"],
        flows["flow_bwd"],
        tau=config.tau,
        edge_mask=config.edge_mask,
        cycle_fwd=flows["cycle_fwd"],
        cycle_bwd=flows["cycle_bwd"],
    )


def _camera(clips: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The batch's camera poses ``(B, L, 4, 4)`` and intrinsics ``(B, 4)`` (added to each clip by the trainer)."""
    return {k: torch.stack([c[k] for c in clips]) for k in CAMERA_KEYS}


def _depth_stabilization(disparity: torch.Tensor, flows: dict[str, torch.Tensor], clips: list[dict], config,
                         task: Task) -> torch.Tensor:
    """The stabilization loss of a depth output ``(B, L, H, W)`` (relative disparity, or metric depth)."""
    if config.stabilization == "3d":  # the camera's motion accounted for (losses.stabilization_3d)
        return training_stabilization_3d(disparity, flows, _camera(clips), config,
                                         metric=task.name == METRIC_DEPTH.name)
    if config.stable_norm == "clip":  # one normalisation per clip: scale-free, like the regularization
        return _stabilization(task.stable_buffers(disparity)[:, :, None], flows, config)
    return _stabilization(disparity[:, :, None], flows, config)


class Objective:
    """The training side of a task: what a step computes for one kind of buffer, and that kind's defaults.

    ``defaults`` are the paper's per-kind options (``clip_len``, ``lr``, ``res``) used when a run leaves them
    unset; ``noun`` names the kind in ``--help``. ``net`` is the trainable module (what data parallelism wraps).
    """

    task: Task
    defaults: dict
    noun: str
    net: nn.Module
    # What a run of `bufferanytime adapt` may train: only the temporal blocks (the rest of the model is frozen by
    # the method), or, in its light setting, the temporal blocks plus ``light_extra`` (named in the printed plan).
    temporal_only: bool = False
    light_extra: str = ""
    # The learning rate of `bufferanytime adapt` when none is given (None: ``defaults["lr"]``, the paper's).
    adapt_lr: float | None = None
    # Its regularization weight when none is given (None: the paper's W_REG).
    adapt_w_reg: float | None = None
    # The weight instead where the footage's camera hardly moves along its axis (adapt.footage.FORWARD_MOTION), so
    # that the buffer is steady along the flow where the scene is (None: adapt_w_reg for all footage).
    adapt_w_reg_steady: float | None = None
    # Whether the loss differentiates the model's outputs themselves (deferred back-propagation through a decoder),
    # so that even a loss computed only to be read (validation) needs autograd on.
    loss_needs_grad: bool = False

    @classmethod
    def build(cls, model, flow_model: FlowModel, config, device: torch.device) -> Objective:
        """The objective of a run: ``model`` is the video model being trained (already on its device)."""
        return cls(model, flow_model, config)

    def frame_tensor_keys(self, prepared: dict) -> tuple[str, ...]:
        """The per-frame tensors of a prepared clip (cut with the clip by :func:`truncate`)."""
        raise NotImplementedError

    def prepare(self, frames: torch.Tensor, target_frames: list[int] | None) -> dict[str, torch.Tensor]:
        """The frozen, cacheable part of a step for ``frames (L,3,H,W)`` in [0,1]."""
        raise NotImplementedError

    def losses(self, net: nn.Module, clips: list[dict[str, torch.Tensor]], reg_frames: list[int]) -> StepLosses:
        """The trainable part of a step on prepared clips of equal length, one regularization frame each."""
        raise NotImplementedError


class DepthObjective(Objective):
    task = DEPTH
    defaults = {"clip_len": CLIP_LEN_DEPTH, "lr": LR_DEPTH, "res": (TRAIN_RES_DEPTH, TRAIN_RES_DEPTH)}
    noun = "depth"
    light_extra = " and fusion layers"  # training the blocks alone crashes autograd on CPU: the fusion layers too
    # An adaptation affords hundreds of steps on a CPU, not the paper's thousands: at its 1e-4 the held-out OPW had
    # hardly moved after 40 steps. Chosen on benchmarks/adapt_domain_shift.py's 6 validation clips (5-minute
    # budget, early stop after 8 validations, regularization weight 1, AbsRel within 0.3 % for all): OPW 0.79x the
    # shipped model's at 5e-4, 0.80x at 3e-4, 0.82x at 1e-3.
    adapt_lr = 5e-4
    # Half the paper's: with few steps the prior's pull held the weights where the new domain's flicker was still
    # high. Chosen on the same validation clips, with a wandering camera and with one moving straight ahead
    # (learning rate 5e-4, the guard rails' PRIOR_TOLERANCE 0.5): OPW 0.83x and 0.83x at 0.5, AbsRel -0.3 % and
    # +2.2 %; at 0.25, 0.78x on the second with AbsRel +3.9 %; at 1, 0.97x with +2.6 % (docs/adapt.md).
    adapt_w_reg = 0.5
    # Where the camera does not move along its axis, depth is steady along the flow, and the stabilization loss can
    # be trusted further. On the validation clips with a camera turning on the spot (the same settings): OPW 0.76x
    # the shipped model's at 0.25, AbsRel -0.3 %, against 0.85x, +0.4 % at 0.5; with a wandering camera 0.80x, AbsRel
    # -0.6 % at 0.25 (docs/adapt.md).
    adapt_w_reg_steady = 0.25

    def __init__(self, model: VideoDepthModel, prior: VideoDepthModel, flow_model: FlowModel, config):
        """``prior``: the frozen image prior that sets the regularization targets (see :meth:`build`)."""
        self.model = model
        self.prior = prior
        self.flow_model = flow_model
        self.config = config
        self.net = DepthNet(model)
        self.task = model.task  # relative or metric: the prior decides, and with it the losses

    @classmethod
    def build(cls, model: VideoDepthModel, flow_model: FlowModel, config, device: torch.device) -> DepthObjective:
        """With a frozen copy of the prior of its own, whose ViT is the model's (the same frozen weights: its
        features are computed and held once); the video model's head is fine-tuned, the prior's is not."""
        prior = load_model(model.prior_ref, per_frame=True)
        prior.backbone = model.backbone
        return cls(model, prior.requires_grad_(False).eval().to(device), flow_model, config)

    def frame_tensor_keys(self, prepared: dict) -> tuple[str, ...]:
        return tuple(k for k in prepared if k.startswith("features."))

    @torch.no_grad()
    def prepare(self, frames: torch.Tensor, target_frames: list[int] | None) -> dict[str, torch.Tensor]:
        """``frames (L,3,H,W)`` in [0,1] -> features, flows, masks, and prior disparity for ``target_frames``
        (``None``: all frames)."""
        length = frames.shape[0]
        pixel_values = self.model.preprocess(frames)
        chunks = [self.model.backbone_features(p) for p in pixel_values.split(FROZEN_BATCH)]
        features = [torch.cat(level) for level in zip(*chunks, strict=True)]
        every = target_frames is None or self.task.clip_anchor
        targets_for = list(range(length)) if every else list(target_frames)
        # One frame at a time, so that a target is bitwise the same whether computed for one frame (no cache)
        # or for all (cache): --cache changes the speed of a run, not its result.
        targets = [
            self._prior_disparity([f[i : i + 1] for f in features], pixel_values.shape[-2:], frames.shape[-2:])
            for i in targets_for
        ]
        prepared = {f"features.{i}": f for i, f in enumerate(features)}
        prepared["pixel_size"] = torch.tensor(pixel_values.shape[-2:], dtype=torch.int64)
        prepared.update(clip_flows(frames, self.flow_model, self.config.tau))
        prepared["targets"] = torch.cat(targets).float()
        prepared["target_frames"] = torch.tensor(targets_for, dtype=torch.int64)
        return prepared

    def _prior_disparity(self, features, pixel_size, out_size) -> torch.Tensor:
        return _resized(self.prior.decode_head(features, features[0].shape[0], tuple(pixel_size)), out_size)

    def losses(self, net: nn.Module, clips: list[dict[str, torch.Tensor]], reg_frames: list[int]) -> StepLosses:
        """``clips``: prepared clips of equal length L on the device; ``reg_frames``: one frame index per clip."""
        batch, length = len(clips), clip_length(clips[0])
        keys = sorted(self.frame_tensor_keys(clips[0]), key=lambda k: int(k.split(".")[1]))
        features = [torch.cat([c[k] for c in clips]) for k in keys]
        height, width = clips[0]["flow_fwd"].shape[-2:]
        pixel_size = clips[0]["pixel_size"].tolist()
        disparity = net(features, length, pixel_size, (height, width)).float().reshape(batch, length, height, width)
        rows = torch.arange(batch, device=disparity.device)
        picked = disparity[rows, torch.tensor(reg_frames, device=disparity.device)]
        targets = torch.stack([pick_target(c, f) for c, f in zip(clips, reg_frames, strict=True)]).float()
        loss_reg = self.task.regularization_loss(picked, targets)
        if self.task.clip_anchor:
            priors = torch.stack([clip_targets(c, length) for c in clips]).float()
            loss_reg = loss_reg + self.task.clip_scale_loss(disparity, priors)
        flows = {k: torch.stack([c[k] for c in clips]) for k in FLOW_KEYS}
        loss_stable = _depth_stabilization(disparity, flows, clips, self.config, self.task)
        loss = self.config.w_reg * loss_reg + loss_stable
        return StepLosses(loss, loss_reg.detach(), loss_stable.detach())


class LatentObjective(Objective):
    """A latent single-step model (Marigold normals or depth): Eq. 2 on latents, Alg. 2 on the decoded buffers
    ``decode_latents`` gives, ``(N, C, H, W)`` with the task's channels (3: unit normals, 1: a depth buffer)."""

    task = NORMAL
    defaults = {"clip_len": CLIP_LEN_NORMAL, "lr": LR_NORMAL, "res": (TRAIN_RES_NORMAL, TRAIN_RES_NORMAL)}
    noun = "normals"
    temporal_only = True  # U-Net and VAE stay frozen (the paper, section 4)
    loss_needs_grad = True  # the stabilization loss is back-propagated through the VAE decoder (deferred)

    def __init__(self, model: VideoNormalModel, flow_model: FlowModel, config):
        self.model = model
        self.flow_model = flow_model
        self.config = config
        self.net = NormalNet(model)
        self.task = model.task  # what the decoded buffers are: the stabilization loss is that task's

    def frame_tensor_keys(self, prepared: dict) -> tuple[str, ...]:
        return ("rgb_latents",)

    @torch.no_grad()
    def prepare(self, frames: torch.Tensor, target_frames: list[int] | None) -> dict[str, torch.Tensor]:
        """``frames (L,3,H,W)`` in [0,1] -> VAE latents, flows, masks, and prior latents for ``target_frames``."""
        length = frames.shape[0]
        latents = torch.cat([self.model.encode_latents(chunk[None])[0] for chunk in frames.split(FROZEN_BATCH)])
        targets_for = list(range(length)) if target_frames is None else list(target_frames)
        # One frame at a time: the same bits with and without the cache (see DepthObjective.prepare).
        targets = [self.model.predict_latents(latents[i : i + 1][None], per_frame=True)[0] for i in targets_for]
        prepared = {"rgb_latents": latents}
        prepared.update(clip_flows(frames, self.flow_model, self.config.tau))
        prepared["targets"] = torch.cat(targets).float()
        prepared["target_frames"] = torch.tensor(targets_for, dtype=torch.int64)
        return prepared

    def losses(self, net: nn.Module, clips: list[dict[str, torch.Tensor]], reg_frames: list[int]) -> StepLosses:
        batch = len(clips)
        rgb_latents = torch.stack([c["rgb_latents"] for c in clips])
        height, width = clips[0]["flow_fwd"].shape[-2:]
        latents = net(rgb_latents.to(self.model.vae.dtype))
        rows = torch.arange(batch, device=latents.device)
        picked = latents[rows, torch.tensor(reg_frames, device=latents.device)].float()
        targets = torch.stack([pick_target(c, f) for c, f in zip(clips, reg_frames, strict=True)]).float()
        loss_reg = latent_l2_loss(picked, targets)
        flows = {k: torch.stack([c[k] for c in clips]) for k in FLOW_KEYS}

        def decode(z: torch.Tensor) -> torch.Tensor:  # (B, k, 4, h, w) -> (B, k, C, H, W) decoded buffers
            buffers = self.model.decode_latents(z.flatten(0, 1)).float()
            if tuple(buffers.shape[-2:]) != (height, width):
                buffers = F.interpolate(buffers, size=(height, width), mode="bilinear", align_corners=False)
                if buffers.shape[1] == NORMAL.channels:  # unit vectors again, as the model's own resize does
                    buffers = F.normalize(buffers, dim=1, eps=MARIGOLD_NORMALS_EPS)
            return buffers.unflatten(0, z.shape[:2])

        def stable(buffers: torch.Tensor) -> torch.Tensor:  # (B, K, C, H, W) decoded buffers -> the loss
            if buffers.shape[2] == 1:  # a depth buffer: stabilized as DepthObjective stabilizes disparity
                return _depth_stabilization(buffers[:, :, 0], flows, clips, self.config, self.task)
            if self.config.stabilization == "3d":
                return training_stabilization_3d(buffers, flows, _camera(clips), self.config)
            return _stabilization(buffers, flows, self.config)

        loss_stable = deferred_backward(latents, decode, stable, chunk=self.config.deferred_chunk)
        loss = self.config.w_reg * loss_reg + loss_stable
        return StepLosses(loss, loss_reg.detach(), loss_stable.detach())


NormalObjective = LatentObjective  # the name it had when it served the Marigold-E2E-FT normals only


def objective_class(model: VideoModel | Task | str) -> type[Objective]:
    """The objective that trains ``model``: its prior family's; for a model kind or task (before any model is
    loaded, e.g. for the defaults of a run), that of the kind's first family."""
    from bufferanytime.families import default_family, get_family
    from bufferanytime.tasks import get_task

    if isinstance(model, VideoModel):
        return model.family.objective_class()
    return get_family(default_family(get_task(model).kind)).objective_class()
