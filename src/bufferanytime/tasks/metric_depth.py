"""Metric depth: z-depth along the optical axis in metres (larger = farther), one channel.

A metric prior (a Depth Anything V2 whose config says ``depth_estimation_type: "metric"``) and every video model
built on it serve this task. It is a model *kind* "depth" (the ``bufferanytime depth`` command, the depth video
model) but a different buffer, so nothing of it may be mistaken for relative disparity:

- files: ``metric_depth.npz`` (array ``depth``, float32 ``(T, H, W)``, metres), ``metric_depth_vis.mp4``,
  ``metric_depth_png16/``, ``metric_depth_exr/``, ``metric_depth.meta.json``. A stem of its own (rather than the
  same ``depth.npz`` with another key) means a relative and a metric run into the same ``OUT/<stem>/`` keep both
  results side by side, and a reader of ``depth.npz`` can never receive metres by accident;
- png16: ``depth_m = png / 256`` (KITTI's convention), 0 = no value, so 1/256 m steps up to 255.996 m;
- sliding windows: each new window is moved halfway to the previous one's scale on the overlap (``WINDOW_PULL``),
  never fully (fitting each window to the last would let the scale drift along a long video);
- OPW: on log depth, ``|log D_k+1(p') - log D_k(p)|``, i.e. the relative change, so near and far pixels weigh alike
  and no per-video normalisation is needed (a global scale cancels);
- evaluation: AbsRel / delta1 with ``--align none`` (default: the metres as predicted), ``scale`` (one median
  ratio per video) or ``affine`` (the DepthCrafter protocol on ``1 / depth`` as disparity);
- training: the regularization and stabilization losses are taken on log depth (scale-preserving; see
  ``docs/training.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bufferanytime.constants import EVAL_MIN_DEPTH
from bufferanytime.io.outputs import colorize_depth, robust_range
from bufferanytime.tasks.base import PNG16_MAX, Column, write_png16_frames
from bufferanytime.tasks.depth import MAX_DEPTH, DepthTask
from bufferanytime.tasks.metrics import aligned_disparity, depth_metrics, fit_disparity_affine, median_depth_ratio

PNG16_METRES = 256.0  # png16 = round(depth_m * 256), as KITTI's depth maps
LOG_EPS = 1e-6  # metres: depth is clamped to this before a logarithm
ALIGNMENTS = ("none", "scale", "affine")
# Weight of the per-frame log-scale term of the metric regularization (split_log_l1_loss). With 1 (a plain L1 in
# log depth) the prior's per-frame scale flicker is imposed on the video model: on the validation clips the
# tiny metric model kept 0.92x of its prior's OPW after 200 steps, the global log-scale changes between frames
# (0.01-0.12) being most of it. A tenth frees them, while the scale is still held on average (docs/training.md).
METRIC_SCALE_WEIGHT = 0.1
# Weight (times w_reg) of the clip-level scale anchor (MetricDepthTask.clip_scale_loss): the mean log-ratio to the
# prior over ALL frames of a training clip. The per-frame scale term above weighs 0.1 x w_reg (0.015 at the last
# stage) and the stabilization is blind to scale, so held out the video model's per-video median drifted by up to
# 8 % from the prior's; the clip mean averages the prior's frame-to-frame scale flicker out, so it can weigh as
# much as the shape term without imposing that flicker (chosen on the validation clips, docs/training.md).
CLIP_SCALE_WEIGHT = 1.0
# Fraction of the log-scale step at a window's overlap that sliding windows remove (MetricDepthTask.align_window).
# Windows are scaled independently (each by its own anchor to the prior, VideoDepthModel.set_scale_anchor), so a
# seam may step; chosen on the validation videos (seeds 61000-61011, 24 frames; 61100-61105, 64 frames) among 0,
# 0.25, 0.5 and 0.75 by the videos within 5 % of the prior's median depth (17, 17, 17, 16 of 18), then OPW: on
# the 64-frame videos 0.446x, 0.433x, 0.420x, 0.409x the prior's (docs/embedded_models.md).
WINDOW_PULL = 0.5


def _aligned_inverse(depth: np.ndarray, metrics: dict) -> np.ndarray:
    """``1 / depth`` after the scale and shift that :meth:`MetricDepthTask.score` fitted to it (in ``metrics``)."""
    return aligned_disparity(1.0 / np.maximum(depth, EVAL_MIN_DEPTH), metrics["scale"], metrics["shift"])


def log_depth(depth: np.ndarray) -> np.ndarray:
    """Natural logarithm of depth in metres, clamped to LOG_EPS (float32)."""
    return np.log(np.maximum(np.asarray(depth, dtype=np.float32), LOG_EPS))


class MetricDepthTask(DepthTask):
    """Depth in metres: windows pulled halfway to each other's scale, OPW on log depth, metrics with a chosen
    alignment (default none)."""

    name = "metric_depth"
    array_key = "depth"
    units = "metres"
    disparity = False
    alignments = ALIGNMENTS
    default_align = "none"
    title = "Metric video depth"
    columns = (Column("abs_rel", "AbsRel ↓", 3), Column("delta1", "δ1 ↑", 3), Column("opw", "OPW ↓", 4),
               Column("median_depth", "median depth (m)", 3), Column("seconds_per_frame", "s/frame", 3))
    definitions = (
        "AbsRel = mean |d − d*| / d*, δ1 = fraction of pixels with max(d / d*, d* / d) < 1.25, per frame over "
        "valid pixels, averaged over frames, then over sequences. d is the predicted depth in metres after the "
        "alignment named in the header (none: as predicted; scale: times one median ratio d*/d per video; affine: "
        "one least-squares scale and shift per video on 1/d, the DepthCrafter protocol), clipped to the depth range.",
        "median depth = the median of the predicted depth over all pixels of the video (metres, before alignment); "
        "the ratio of two models' medians shows whether they keep the same metric scale.",
    )
    opw_note = "log depth in metres, used as it is (a relative difference; a global scale cancels)."
    window_note = (f"multiply each new window by exp({WINDOW_PULL:g} x the median over the overlap's pixels of "
                   "log(previous output) - log(new)), then blend the overlap linearly")

    @property
    def kind(self) -> str:
        return "depth"

    def align_window(self, new: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """``new`` scaled by ``WINDOW_PULL`` of the median log ratio of ``previous`` to it on the overlap: each
        window's scale becomes an exponential average of the windows' own scales, so seams step less and the scale
        cannot drift along a video (a full fit to the previous window would carry the first window's scale to the
        end, errors included)."""
        from bufferanytime.losses import log_depth as torch_log_depth

        ratio = torch_log_depth(previous.float()) - torch_log_depth(new[: len(previous)].float())
        return new * torch.exp(WINDOW_PULL * ratio.median()).to(new.dtype)

    def regularization_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L1 in log depth, scale-invariant per frame plus a weighted per-frame scale term: keeps the prior's
        average metric scale (docs/training.md)."""
        from bufferanytime.losses import split_log_l1_loss

        return split_log_l1_loss(pred, target, METRIC_SCALE_WEIGHT)

    clip_anchor = True

    def clip_scale_loss(self, pred: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """``CLIP_SCALE_WEIGHT * |mean over the clip of (log pred - log prior)|``, averaged over the batch: holds
        each clip's metric scale (its geometric mean) to the prior's, while the frames' scales may differ from the
        prior's (its flicker). A mean rather than a median: its gradient reaches every pixel, a median's only one."""
        from bufferanytime.losses import log_depth as torch_log_depth

        if pred.shape != prior.shape:
            raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(prior.shape)}")
        ratio = (torch_log_depth(pred) - torch_log_depth(prior.detach().to(pred.dtype))).flatten(1)
        return CLIP_SCALE_WEIGHT * ratio.mean(dim=1).abs().mean()

    def stable_buffers(self, output: torch.Tensor) -> torch.Tensor:
        """``(B, L, H, W)`` metric depth as log depth minus its median over the clip: differences are relative
        changes, so near and far weigh alike, and a global scale (which the regularization fixes) does not enter."""
        from bufferanytime.losses import log_depth as torch_log_depth

        logs = torch_log_depth(output)
        return logs - logs.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)

    def opw_values(self, frame: np.ndarray) -> np.ndarray:
        return log_depth(frame)

    def opw_normalization(self, frames: Sequence[np.ndarray] | np.ndarray) -> tuple[float, float]:
        return 0.0, 1.0

    def aligned_opw_values(self, frame: np.ndarray, metrics: dict) -> np.ndarray:
        """Log depth after the alignment."""
        return log_depth(1.0 / _aligned_inverse(frame, metrics))

    def to_rgb(self, frame: np.ndarray, value_range: tuple[float, float] | None,
               invalid: np.ndarray | None = None) -> np.ndarray:
        """Inverse depth in the colours of the relative task (near = bright), ``value_range`` in metres."""
        near, far = value_range
        inverse = 1.0 / np.maximum(np.nan_to_num(np.asarray(frame, dtype=np.float32), nan=far), LOG_EPS)
        rgb = colorize_depth(inverse, 1.0 / max(far, LOG_EPS), 1.0 / max(near, LOG_EPS))
        if invalid is not None:
            rgb[invalid] = 0
        return rgb

    def vis_info(self, value_range: tuple[float, float] | None) -> dict:
        return {"range": list(value_range), "units": self.units, "colormap": "inferno on 1 / depth (near = bright)",
                "normalisation": "global robust percentiles of the depth"}

    def write_png16(self, frames: np.ndarray, folder: Path) -> dict:
        top = PNG16_MAX / PNG16_METRES
        write_png16_frames(folder, (np.round(np.clip(f, 0, top) * PNG16_METRES).astype(np.uint16) for f in frames))
        return {"dir": folder.name, "decode": "depth_m = png / scale (0 = no value)", "scale": PNG16_METRES,
                "units": self.units}

    def score(self, pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], dataset: str,
              align: str | None = None) -> dict[str, float]:
        """Metrics of depth in metres after ``align``; ``scale``/``shift`` are those applied to ``1 / depth``."""
        align, cap = self.check_align(align), MAX_DEPTH[dataset]
        inverse = _Inverse(pred)
        if align == "affine":
            scale, shift = fit_disparity_affine(inverse, gt, cap)
        else:
            scale, shift = (1.0 / median_depth_ratio(pred, gt, cap) if align == "scale" else 1.0), 0.0
        metrics = depth_metrics(inverse, gt, cap, affine=(scale, shift))
        return metrics | {"scale": scale, "shift": shift, "median_depth": _median(pred)}

    def pred_slice_rgb(self, pred_slice: np.ndarray, metrics: dict, value_range: tuple[float, float] | None
                       ) -> np.ndarray:
        """The predicted metres after the alignment, in the ground truth's colours."""
        return DepthTask.to_rgb(self, _aligned_inverse(pred_slice, metrics), value_range)

    def vis_range(self, frames: np.ndarray) -> tuple[float, float]:
        return robust_range(frames)

    def report_lines(self, report: dict) -> list[str]:
        align = report.get("align") or self.default_align
        return [f"- depth range: ({EVAL_MIN_DEPTH}, {report['max_depth']}) m; predictions in metres, alignment "
                f"**{align}**" + (" (none: the metres as predicted)" if align == "none" else "")]


class _Inverse:
    """A depth video read as ``1 / depth`` (disparity) frame by frame, for the disparity-space metrics."""

    def __init__(self, depth: Sequence[np.ndarray]):
        self.depth = depth

    def __len__(self) -> int:
        return len(self.depth)

    def __getitem__(self, i: int) -> np.ndarray:
        return 1.0 / np.maximum(np.asarray(self.depth[i], dtype=np.float64), EVAL_MIN_DEPTH)


def _median(frames: Sequence[np.ndarray], step: int = 2) -> float:
    """Median of all pixels of a video (every ``step``-th row and column, so a long video stays cheap)."""
    return float(np.median(np.concatenate([np.asarray(f)[::step, ::step].ravel() for f in frames])))
