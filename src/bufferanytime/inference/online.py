"""Online prediction: one frame in, that frame's buffer out, with a step predictor of either mode.

``rolling``: :class:`~bufferanytime.inference.rolling.RollingWindowPredictor`, the training-free baseline (any
video model run over a window of past frames). ``stream``: the causal model's exact incremental
``StreamingPredictor`` (:mod:`bufferanytime.inference.streaming`). Both take ``(3, h, w)`` frames in [0, 1] at
the model's inference size; :func:`predict_online` resizes each ``(H, W, 3)`` uint8 frame to that size and the
buffer back to the frame's size, as :func:`~bufferanytime.inference.pipeline.predict_frames` does offline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from bufferanytime.errors import InputError
from bufferanytime.inference.pipeline import InferenceSettings, _resized_input, resolve_device, scaled_size, size_rule
from bufferanytime.inference.precision import resolve_precision
from bufferanytime.inference.rolling import RollingWindowPredictor
from bufferanytime.inference.streaming import StreamingPredictor
from bufferanytime.io.arrays import frame_to_tensor
from bufferanytime.models.base import VideoModel
from bufferanytime.tasks import get_task

ONLINE_MODES = ("rolling", "stream")


def resolve_mode(model: VideoModel, mode: str = "auto") -> str:
    """The online mode of ``model``: ``auto`` is ``stream`` for a causal model (its exact incremental inference),
    else ``rolling`` (the training-free window of past frames); ``stream`` or ``rolling`` stay as they are."""
    if mode != "auto":
        return mode
    return "stream" if getattr(model.temporal_config, "causal", False) else "rolling"


class OnlinePredictor:
    """A step predictor of ``mode`` with the model time of its steps (``seconds``) and its task."""

    online = True

    def __init__(self, model: VideoModel, mode: str, device: str | torch.device = "cpu", precision: str = "fp32",
                 window: int | None = None):
        if mode not in ONLINE_MODES:
            raise InputError(f"unknown online mode {mode!r}; expected one of {', '.join(ONLINE_MODES)}")
        self.mode, self.model = mode, model
        self.task = getattr(model, "task", None) or get_task(model.kind)
        self.device = device = device if isinstance(device, torch.device) else resolve_device(device)
        self.precision = resolve_precision(precision, device, model)  # auto -> bf16 or fp32 for this device
        if mode == "rolling":
            self.stepper = RollingWindowPredictor(model, device, self.precision, window)
        else:
            self.stepper = StreamingPredictor(model, device=device, precision=self.precision)
        self.seconds = 0.0

    @property
    def window(self) -> int | None:
        """Frames of context of the rolling window (None for the streaming model, which has its horizon)."""
        return getattr(self.stepper, "window", None)

    def reset(self) -> None:
        self.stepper.reset()

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        with torch.no_grad():
            out = self.stepper.step(frame).float().cpu()
        self.seconds += time.perf_counter() - start
        return out


def predict_online(predictor: OnlinePredictor, frames: Iterable[np.ndarray], settings: InferenceSettings
                   ) -> Iterator[np.ndarray]:
    """One buffer per ``(H, W, 3)`` uint8 frame, in disk layout at the frame's size, computed frame by frame.

    The predictor is reset first: every call is a new stream.
    """
    rule = size_rule(predictor.model, settings)
    predictor.reset()
    for frame in frames:
        yield predict_one(predictor, frame, rule)


def predict_one(predictor: OnlinePredictor, frame: np.ndarray, rule: dict) -> np.ndarray:
    """The buffer of one frame (disk layout, at the frame's size), given the frames stepped before it."""
    size = frame.shape[:2]
    tensor = frame_to_tensor(_resized_input(frame, scaled_size(*size, rule)))
    task = predictor.task
    return task.resize(task.frame_to_disk(predictor.step(tensor)), size)
