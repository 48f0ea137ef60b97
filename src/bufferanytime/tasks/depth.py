"""Relative depth: disparity (larger = nearer) with an unknown scale and shift per video, one channel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bufferanytime.constants import EVAL_MAX_DEPTH, EVAL_MIN_DEPTH, SYNTHETIC_MAX_DEPTH
from bufferanytime.io.outputs import colorize_depth, robust_range
from bufferanytime.tasks.base import PNG16_MAX, Column, Task, write_png16_frames
from bufferanytime.tasks.metrics import aligned_disparity, depth_metrics, fit_disparity_affine, fit_disparity_scale

AFFINE_MIN_SCALE = 1e-12  # a constant prediction has s = 0; it is perfectly consistent, so any s > 0 does
MAX_DEPTH = {**EVAL_MAX_DEPTH, "synthetic": SYNTHETIC_MAX_DEPTH}  # depth cap of each evaluation dataset, metres


def fit_scale_shift(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``s, t`` minimising ``|s * source + t - target|^2`` over all elements."""
    x = source.reshape(-1).double()
    y = target.reshape(-1).double()
    xm, ym = x.mean(), y.mean()
    var = (x - xm).square().mean()
    if var <= 1e-20:
        return torch.ones((), dtype=torch.float64), ym - xm
    scale = ((x - xm) * (y - ym)).mean() / var
    return scale, ym - scale * xm


def align_depth(new: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Map the whole new window ``new`` (T, H, W) onto ``previous`` (its first O frames' reference)."""
    scale, shift = fit_scale_shift(new[: previous.shape[0]], previous)
    return (new.double() * scale + shift).to(new.dtype)


def affine_parameters(frames: Sequence[np.ndarray] | np.ndarray) -> tuple[float, float]:
    """``(t, s)`` of a whole video: ``t = median``, ``s = mean |D - t|`` over all pixels of all frames.

    The numpy, whole-video form of :func:`bufferanytime.losses.normalize_affine` (which normalises each map
    of a batch of tensors): one ``(t, s)`` per video, in float64.
    """
    values = np.asarray(frames, dtype=np.float32).reshape(-1)
    t = float(np.median(values))
    s = float(np.mean(np.abs(values.astype(np.float64) - t)))
    return t, max(s, AFFINE_MIN_SCALE)


class DepthTask(Task):
    """Relative disparity: windows aligned by least squares, OPW after one affine normalisation per video."""

    name = "depth"
    array_key = "disparity"
    channels = 1
    gt_dtype = np.float64
    title = "Video depth"
    exr_channels = ("Y",)
    columns = (Column("abs_rel", "AbsRel ↓", 3), Column("delta1", "δ1 ↑", 3), Column("opw", "OPW ↓", 3),
               Column("seconds_per_frame", "s/frame", 3))
    definitions = (
        "AbsRel = mean |d − d*| / d*, δ1 = fraction of pixels with max(d / d*, d* / d) < 1.25, per frame over "
        "valid pixels, averaged over frames, then over sequences. d is the prediction after one least-squares "
        "scale and shift per video in disparity space, inverted and clipped to the depth range.",
    )
    opw_note = "disparity normalised once per video by its median and mean absolute deviation."
    window_note = ("fit one least-squares scale and shift of each new window onto the previous outputs on the overlap, "
                   "then blend the overlap linearly")
    units = "relative disparity (unknown scale and shift, larger = nearer)"
    alignments = ("affine", "scale")  # "none" has no meaning for a relative prediction
    default_align = "affine"
    disparity = True
    prior_distance_scale = 0.02  # the regularization loss (normalised disparity; log depth for metric depth)

    def frame_to_disk(self, frame: torch.Tensor) -> np.ndarray:
        return frame.reshape(frame.shape[-2:]).numpy().astype(np.float32)

    def frame_from_disk(self, frame: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))[None]

    def align_window(self, new: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return align_depth(new, previous)

    # --- training: what a depth objective compares for this buffer --------------------------------------------
    def regularization_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Against the prior's output ``(B, H, W)``: Eq. 1, affine-invariant (blind to the scale and shift)."""
        from bufferanytime.losses import affine_invariant_loss

        return affine_invariant_loss(pred, target)

    def stable_buffers(self, output: torch.Tensor) -> torch.Tensor:
        """What the stabilization loss warps with ``--stable-norm clip``: ``(B, L, H, W)`` disparity normalised by
        ONE median / mean absolute deviation per clip (scale-free, as Eq. 1)."""
        from bufferanytime.losses import normalize_affine

        b, length, h, w = output.shape
        return normalize_affine(output.reshape(b, length * h, w)).reshape(output.shape)

    def opw_normalization(self, frames: Sequence[np.ndarray] | np.ndarray) -> tuple[float, float]:
        return affine_parameters(frames)

    def aligned_opw_values(self, frame: np.ndarray, metrics: dict) -> np.ndarray:
        return aligned_disparity(frame, metrics["scale"], metrics["shift"])

    def vis_range(self, frames: np.ndarray) -> tuple[float, float]:
        return robust_range(frames)

    def to_rgb(self, frame: np.ndarray, value_range: tuple[float, float] | None,
               invalid: np.ndarray | None = None) -> np.ndarray:
        lo, hi = value_range
        rgb = colorize_depth(np.nan_to_num(frame, nan=lo), lo, hi)
        if invalid is not None:
            rgb[invalid] = 0
        return rgb

    def vis_info(self, value_range: tuple[float, float] | None) -> dict:
        return {"range": list(value_range), "colormap": "inferno", "normalisation": "global robust percentiles"}

    def write_png16(self, frames: np.ndarray, folder: Path) -> dict:
        peak = float(max(np.max(frame) for frame in frames)) or 1.0
        scale = PNG16_MAX / peak
        write_png16_frames(folder, (np.round(np.clip(f, 0, None) * scale).astype(np.uint16) for f in frames))
        return {"dir": folder.name, "decode": "disparity = png / scale", "scale": scale}

    def headline(self, metrics: dict) -> str:
        return f"AbsRel {metrics['abs_rel']:.3f}, δ1 {metrics['delta1']:.3f}"

    def has_ground_truth(self, sequence) -> bool:
        return sequence.read_depth is not None

    def read_ground_truth(self, sequence, index: int) -> np.ndarray:
        return np.asarray(sequence.read_depth(index), dtype=np.float64)

    def depth_cap(self, dataset: str) -> float:
        return MAX_DEPTH[dataset]

    def score(self, pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], dataset: str,
              align: str | None = None) -> dict[str, float]:
        """The DepthCrafter metrics (``affine``, default) or with a scale alone in disparity (``scale``), and the
        per-video scale and shift they fitted."""
        if self.check_align(align) == "scale":
            scale, shift = fit_disparity_scale(pred, gt, MAX_DEPTH[dataset]), 0.0
        else:
            scale, shift = fit_disparity_affine(pred, gt, MAX_DEPTH[dataset])
        return depth_metrics(pred, gt, MAX_DEPTH[dataset], affine=(scale, shift)) | {"scale": scale, "shift": shift}

    def gt_slice_rgb(self, gt_slice: np.ndarray, dataset: str) -> tuple[np.ndarray, tuple[float, float]]:
        """Metric depth inverted to disparity; invalid pixels black; the colour range of the valid ones."""
        valid = (gt_slice > EVAL_MIN_DEPTH) & (gt_slice < MAX_DEPTH[dataset])
        gt_disp = np.where(valid, 1.0 / np.where(valid, gt_slice, 1.0), np.nan)
        value_range = robust_range(gt_disp[valid]) if valid.any() else (0.0, 1.0)
        return self.to_rgb(gt_disp, value_range, ~valid), value_range

    def pred_slice_rgb(self, pred_slice: np.ndarray, metrics: dict, value_range: tuple[float, float] | None
                       ) -> np.ndarray:
        """Disparity after the fitted scale and shift, in the ground truth's colours."""
        return self.to_rgb(aligned_disparity(pred_slice, metrics["scale"], metrics["shift"]), value_range)

    def report_lines(self, report: dict) -> list[str]:
        fitted = ("one scale per video (no shift), fitted in disparity" if report.get("align") == "scale"
                  else "one scale and shift per video, fitted in disparity (DepthCrafter protocol)")
        return [f"- depth range: ({EVAL_MIN_DEPTH}, {report['max_depth']}) m; alignment "
                f"**{report.get('align') or self.default_align}**: {fitted}"]
