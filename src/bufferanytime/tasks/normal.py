"""Surface normals: unit vectors in camera coordinates (x right, y up, z towards the camera), three channels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bufferanytime.io.arrays import array_to_tensor, channels_last
from bufferanytime.io.outputs import normals_to_rgb
from bufferanytime.tasks.base import PNG16_MAX, Column, Task, write_png16_frames
from bufferanytime.tasks.metrics import angular_error, normal_metrics

RESIZE_MIN_NORM = 1e-8  # resized normals are renormalised; shorter vectors (a cancelling blend) stay near zero


class NormalTask(Task):
    """Unit normals: windows blended then renormalised, no normalisation before OPW, ``n * 0.5 + 0.5`` colours."""

    name = "normal"
    array_key = "normal"
    channels = 3
    gt_dtype = np.float32
    title = "Video normals"
    exr_channels = ("X", "Y", "Z")
    columns = (Column("mean", "Mean ↓", 2), Column("median", "Median ↓", 2), Column("a11", "11.25° ↑", 2),
               Column("a22", "22.5° ↑", 2), Column("a30", "30° ↑", 2), Column("opw", "OPW ↓", 3),
               Column("seconds_per_frame", "s/frame", 3))
    definitions = (
        "Mean / Median angular error (degrees) and the percentage of pixels under 11.25°, 22.5°, 30°, over all "
        "valid pixels of a sequence, then averaged over sequences.",
    )
    opw_note = "unit normals, not normalised."
    window_note = "blend the overlap linearly, then renormalise each normal to unit length"
    prior_distance_scale = 1.0  # degrees of mean angular error
    units = "unit vectors in camera coordinates (x right, y up, z towards the camera)"

    def prior_distance(self, pred: np.ndarray, prior: np.ndarray) -> float:
        """Mean angular error (degrees) between a model's normals and the prior's."""
        return float(np.mean(angular_error(pred, prior)))

    def frame_to_disk(self, frame: torch.Tensor) -> np.ndarray:
        return channels_last(frame.numpy()).astype(np.float32)

    def frame_from_disk(self, frame: np.ndarray) -> torch.Tensor:
        return array_to_tensor(frame)

    def after_blend(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(frames, dim=1)

    def after_resize(self, frame: np.ndarray) -> np.ndarray:
        return frame / np.maximum(np.linalg.norm(frame, axis=-1, keepdims=True), RESIZE_MIN_NORM)

    def to_rgb(self, frame: np.ndarray, value_range: tuple[float, float] | None = None,
               invalid: np.ndarray | None = None) -> np.ndarray:
        rgb = normals_to_rgb(np.nan_to_num(frame))
        if invalid is not None:
            rgb[invalid] = 0
        return rgb

    def vis_info(self, value_range: tuple[float, float] | None) -> dict:
        return {"mapping": "rgb = n * 0.5 + 0.5"}

    def write_png16(self, frames: np.ndarray, folder: Path) -> dict:
        write_png16_frames(folder, (np.round((np.clip(f, -1, 1) * 0.5 + 0.5) * PNG16_MAX).astype(np.uint16)
                                    for f in frames))
        return {"dir": folder.name, "decode": f"normal = png / {PNG16_MAX} * 2 - 1 (RGB = xyz)"}

    def headline(self, metrics: dict) -> str:
        return f"mean {metrics['mean']:.2f}°, median {metrics['median']:.2f}°"

    def has_ground_truth(self, sequence) -> bool:
        return sequence.read_normal is not None

    def read_ground_truth(self, sequence, index: int) -> np.ndarray:
        return np.asarray(sequence.read_normal(index), dtype=np.float32)

    def score(self, pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], dataset: str,
              align: str | None = None) -> dict[str, float]:
        """DSINE's angular-error metrics."""
        return normal_metrics(pred, gt)

    def gt_slice_rgb(self, gt_slice: np.ndarray, dataset: str) -> tuple[np.ndarray, None]:
        return self.to_rgb(gt_slice, None), None
