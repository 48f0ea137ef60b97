"""The training-free online baseline: a bidirectional video model run over a rolling window of past frames.

What Video Depth Anything's streaming mode does: for every new frame, the model runs on the last ``window``
frames (the new one and the ones before it) and only the newest frame's output is kept. The frozen per-frame
stage (``encode_frames``) runs once per frame and its features are reused while the frame stays in the window
(:class:`~bufferanytime.inference.pipeline.Predictor`), so a frame costs one encoder pass plus the temporal part
over the window. Depth windows are brought onto the outputs already emitted for their older frames with the
task's :meth:`~bufferanytime.tasks.Task.align_window` (least-squares scale and shift, as sliding windows are
aligned offline), so the scale does not jump from frame to frame; normals need no alignment.

Same interface as :class:`bufferanytime.inference.streaming.StreamingPredictor`: ``reset()``, and
``step(frame)`` with a ``(3, H, W)`` frame in [0, 1] at the model's inference size, returning that frame's
buffer (depth ``(H, W)``, normals ``(3, H, W)``). Memory is bounded by the window, however long the stream.
"""

from __future__ import annotations

from collections import deque

import torch

from bufferanytime.inference.pipeline import Predictor, resolve_device
from bufferanytime.models.base import VideoModel


class RollingWindowPredictor:
    """Frame-by-frame prediction with a bidirectional model over the last ``window`` frames (default: its clip)."""

    def __init__(self, model: VideoModel, device: str | torch.device = "cpu", precision: str = "fp32",
                 window: int | None = None):
        self.window = 1 if model.per_frame else (window or model.clip_len)
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")
        device = device if isinstance(device, torch.device) else resolve_device(device)
        self.predictor = Predictor(model, device, precision)
        self.model, self.task = self.predictor.model, self.predictor.task
        self.reset()

    @property
    def seconds(self) -> float:
        """Model time of every step so far."""
        return self.predictor.seconds

    def reset(self) -> None:
        """Forget the past frames (start a new stream)."""
        self._frames: deque[torch.Tensor] = deque(maxlen=self.window)
        self._outputs: deque[torch.Tensor] = deque(maxlen=self.window - 1)
        self.predictor._tail = []

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """The buffer of ``frame`` (3, H, W), given the frames stepped before it."""
        if self._frames and frame.shape != self._frames[-1].shape:
            raise ValueError(f"frame size changed from {tuple(self._frames[-1].shape)} to {tuple(frame.shape)}")
        self._frames.append(frame)
        clip = torch.stack(tuple(self._frames))
        out = self.predictor(clip, reused=len(clip) - 1, keep=self.window - 1)
        if self._outputs:
            out = self.task.align_window(out, torch.stack(tuple(self._outputs)))
        newest = out[-1]
        if self.window > 1:
            self._outputs.append(newest)
        return newest
