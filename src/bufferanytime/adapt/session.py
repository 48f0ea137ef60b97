"""Training on the footage with the trainer's objective: the zero-shot losses of the method, one clip per step.

The objective (:mod:`bufferanytime.training.objectives`) is the trainer's: for each clip its frozen part (features,
flows, the prior's targets) is prepared once and kept (in ``CACHE_DTYPE``, up to ``PREPARED_CACHE_BYTES``), and a
step back-propagates ``w_reg * regularization + stabilization`` into the trained weights (AdamW, linear warm-up,
then a constant rate, the gradient norm clipped to ``MAX_GRAD_NORM``). Unlike a training run, there is no moving
average: the validation loss (the same losses on the held-out clips, with a fixed regularization frame per clip: the
middle one) picks the weights kept, and the best weights so far are held as a copy.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from transformers.optimization import get_constant_schedule_with_warmup

from bufferanytime.adapt.footage import Clip, Footage
from bufferanytime.adapt.plan import Candidate, Costs
from bufferanytime.constants import DINOV2_PATCH
from bufferanytime.models.base import VideoModel, nearest_multiple
from bufferanytime.models.temporal import set_gradient_checkpointing
from bufferanytime.training.config import TrainConfig
from bufferanytime.training.objectives import objective_class

PREPARED_CACHE_BYTES = 1024 * 2**20  # prepared clips kept in memory; beyond, clips are prepared at every use
# Prepared clips are kept in half precision (float32 again for each step): 13 clips of the embedded depth model took
# 85 MB in float32, most of the steps' growth of the peak memory. float16 keeps 11 significant bits: flows within
# 0.01 px at 20 px, features and targets within 0.05 %; a tensor beyond its range stays float32.
CACHE_DTYPE = torch.float16
MAX_GRAD_NORM = 1.0
MEASURED_TIMES = 2  # passes timed when planning; the fastest counts (a cold first step took 3x a typical one)
# What "temporal" trains: the temporal blocks, and for depth the DPT fusion layers they sit between (the blocks'
# inputs then carry gradients: back-propagating into blocks whose input needs none crashes the CPU backward).
TEMPORAL_PREFIXES = ("temporal.", "neck.fusion_stage.")


@dataclass
class Losses:
    loss: float
    reg: float
    stable: float

    def to_dict(self) -> dict:
        return {"loss": self.loss, "reg": self.reg, "stable": self.stable}


def _nbytes(prepared: dict) -> int:
    return sum(t.numel() * t.element_size() for t in prepared.values() if isinstance(t, torch.Tensor))


def _compact(prepared: dict) -> tuple[dict, frozenset[str]]:
    """``prepared`` as it is kept: float32 tensors in ``CACHE_DTYPE`` where they fit its range; and their keys."""
    halved = frozenset(k for k, v in prepared.items() if _fits_cache_dtype(v))
    return {k: v.to(CACHE_DTYPE) if k in halved else v for k, v in prepared.items()}, halved


def _fits_cache_dtype(value) -> bool:
    return (isinstance(value, torch.Tensor) and value.dtype == torch.float32
            and bool(value.abs().max() < torch.finfo(CACHE_DTYPE).max))


def _expanded(kept: dict, halved: frozenset[str]) -> dict:
    """A kept clip (:func:`_compact`) as prepared, for a step: the tensors it halved in float32 again, the others
    (a model's own half-precision latents among them) as they are."""
    return {k: v.float() if k in halved else v for k, v in kept.items()}


def thread_counts() -> list[int]:
    """The torch thread counts a measure tries: the current one and one thread."""
    return sorted({torch.get_num_threads(), 1}, reverse=True)


class Session:
    """The model being adapted, its objective and optimizer, and the clips of the footage at one size."""

    def __init__(self, model: VideoModel, footage: Footage, config: TrainConfig, flow_model, device: torch.device,
                 seed: int):
        self.model = model.to(device)
        self.footage = footage
        self.config = config
        self.device = device
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.objective = objective_class(self.model).build(self.model, flow_model, config, device)
        # the temporal blocks (and the depth model's head) recompute their layers in the backward pass: a step saves
        # 0.13x as much for about 1.2x the time (a 10-frame clip of the embedded depth model), which keeps an
        # adaptation's peak memory near depth's
        set_gradient_checkpointing(self.model, True)
        self.multiple = int(getattr(model, "size_multiple", DINOV2_PATCH))
        self.fraction = 1.0
        self.params: dict[str, torch.nn.Parameter] = {}
        self.optimizer = None
        self.scheduler = None
        self._frames: dict[tuple[int, float], torch.Tensor] = {}
        self._prepared: dict[tuple[Clip, float], tuple[dict, frozenset[str]]] = {}
        self._cached_bytes = 0
        self.threads = torch.get_num_threads()  # torch threads of the steps (set by :meth:`measure`)

    # -- clips -------------------------------------------------------------------------------------------------
    def size(self, segment: int, fraction: float | None = None) -> tuple[int, int]:
        """Training size of a segment's frames at ``fraction`` of the inference size (multiples of the model's)."""
        fraction = self.fraction if fraction is None else fraction
        h, w = self.footage.segments[segment].frames.shape[1:3]
        return tuple(nearest_multiple(round(side * fraction), self.multiple) for side in (h, w))

    def pixels(self, fraction: float) -> float:
        """Mean frame pixels of the segments at ``fraction``."""
        sizes = [self.size(i, fraction) for i in range(len(self.footage.segments))]
        return float(np.mean([h * w for h, w in sizes]))

    def frames(self, segment: int, fraction: float | None = None) -> torch.Tensor:
        """A segment's frames at the training size: uint8 ``(T, 3, H, W)`` (resized once, then kept)."""
        fraction = self.fraction if fraction is None else fraction
        key = (segment, fraction)
        if key not in self._frames:
            import cv2

            h, w = self.size(segment, fraction)
            source = self.footage.segments[segment].frames
            resized = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in source])
            self._frames[key] = torch.from_numpy(np.ascontiguousarray(resized.transpose(0, 3, 1, 2)))
        return self._frames[key]

    def held_out_frames(self) -> list[np.ndarray]:
        """The held-out segments at the model's inference size, ``(T, H, W, 3)`` uint8 each: the guard rails check
        the weights at the size they will be run at, whatever size they were trained at (a run trained at half
        size on 4 frames passed its check at that size and flickered more at the full size)."""
        return [s.frames for s in self.footage.segments if s.span.held_out]

    def prepare(self, clip: Clip, keep: bool = True, fraction: float | None = None) -> dict:
        """The frozen part of a clip (see the module docstring), kept while the cache has room."""
        fraction = self.fraction if fraction is None else fraction
        key = (clip, fraction)
        if key in self._prepared:
            return _expanded(*self._prepared[key])
        frames = self.frames(clip.segment, fraction)[clip.start : clip.start + clip.length]
        kept = _compact(self.objective.prepare(frames.to(self.device).float() / 255.0, None))
        size = _nbytes(kept[0])
        if keep and self._cached_bytes + size <= PREPARED_CACHE_BYTES:
            self._prepared[key] = kept
            self._cached_bytes += size
        return _expanded(*kept)  # the same values at every use, kept or not

    def forget(self) -> None:
        """Drop the prepared clips and resized frames (after measuring at another size)."""
        self._prepared.clear()
        self._frames.clear()
        self._cached_bytes = 0

    # -- training ----------------------------------------------------------------------------------------------
    def start(self, fraction: float, trained: str, lr: float, warmup: int) -> None:
        """Train at ``fraction`` of the inference size: the trained weights, a new optimizer and schedule."""
        self.fraction = fraction
        for name, p in self.model.named_parameters():
            if name.startswith(self.model.trainable_prefixes):
                p.requires_grad_(trained == "all" or name.startswith(TEMPORAL_PREFIXES))
        self.params = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=lr, weight_decay=self.config.weight_decay)
        self.scheduler = get_constant_schedule_with_warmup(self.optimizer, warmup)
        self.model.train()

    def _losses(self, prepared: dict, reg_frame: int):
        return self.objective.losses(self.objective.net, [prepared], [reg_frame])

    def step(self, clip: Clip) -> Losses:
        """One optimizer step on ``clip`` with a random regularization frame; NaN losses when not finite (the
        update is then not applied)."""
        prepared = self.prepare(clip)
        reg = int(self.rng.integers(0, clip.length))
        losses = self._losses(prepared, reg)
        losses.loss.backward()
        grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in self.params.values() if p.grad is not None)
        if not (torch.isfinite(losses.loss.detach()) and grads_finite):
            self.optimizer.zero_grad(set_to_none=True)
            return Losses(float("nan"), float("nan"), float("nan"))
        torch.nn.utils.clip_grad_norm_(list(self.params.values()), MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return Losses(float(losses.loss.detach()), float(losses.reg), float(losses.stable))

    def validate(self, clips: list[Clip]) -> Losses:
        """Mean losses over the held-out ``clips`` (middle frame regularized); no weight changes."""
        self.model.eval()
        values = []
        # the normal objective differentiates its decoded frames (deferred back-propagation): gradients stay on
        context = nullcontext() if self.objective.loss_needs_grad else torch.no_grad()
        with context:
            for clip in clips:
                losses = self._losses(self.prepare(clip), clip.length // 2)
                values.append([float(losses.loss.detach()), float(losses.reg), float(losses.stable)])
        self.model.train()
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        mean = np.mean(values, axis=0)
        return Losses(float(mean[0]), float(mean[1]), float(mean[2]))

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the trainable weights (on the CPU)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.trainable_state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            own = self.model.state_dict()
            for name, value in state.items():
                own[name].copy_(value.to(own[name].device))

    # -- measuring ---------------------------------------------------------------------------------------------
    def measure(self, clip: Clip, candidate: Candidate) -> Costs:
        """Seconds per frame-pixel of preparing ``clip`` at ``candidate``, a forward pass and a step (the step is
        not applied: the weights are left as they were), at the number of torch threads that steps fastest, which
        it leaves set (``threads``): on a CPU that other processes share, two threads that wait for each other at
        every operation made a step 20-40x slower than one thread did."""
        clip = Clip(clip.segment, clip.start, min(candidate.clip_len, clip.length))
        h, w = self.size(clip.segment, candidate.side_fraction)
        unit = float(h * w * clip.length)
        best: tuple[int, float, float, float] | None = None
        for threads in thread_counts():
            torch.set_num_threads(threads)
            began = time.perf_counter()
            prepared = self.prepare(clip, keep=False, fraction=candidate.side_fraction)
            prepare = time.perf_counter() - began
            forward, step = math.inf, math.inf
            for _ in range(MEASURED_TIMES):  # the fastest: the first pass pays one-off costs (kernels, allocations)
                forward_once, step_once = self._time_step(prepared)
                forward, step = min(forward, forward_once), min(step, step_once)
            if best is None or step < best[3]:
                best = (threads, prepare, forward, step)
        self.threads, prepare, forward, step = best
        torch.set_num_threads(self.threads)
        self._frames.pop((clip.segment, candidate.side_fraction), None)
        return Costs(prepare / unit, forward / unit, step / unit)

    def _time_step(self, prepared: dict) -> tuple[float, float]:
        """Seconds of a forward pass and of a forward-backward pass on ``prepared`` (no update is applied)."""
        context = nullcontext() if self.objective.loss_needs_grad else torch.no_grad()
        began = time.perf_counter()
        with context:
            self._losses(prepared, 0)
        forward = time.perf_counter() - began
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        began = time.perf_counter()
        self._losses(prepared, 0).loss.backward()
        step = time.perf_counter() - began
        for p in trainable:
            p.grad = None
        return forward, step
