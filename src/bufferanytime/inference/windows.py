"""Sliding-window inference over a frame stream, in bounded memory.

Frames arrive one at a time; the model runs on windows of ``window`` frames that overlap by ``overlap`` frames.
Only the current window (inputs and outputs) lives in memory. Each new window is first brought into agreement
with what was already produced on the overlapping frames (:meth:`Task.align_window`: for depth one
least-squares scale and shift fitted on the overlap frames), then the overlap is blended linearly and projected
back onto valid values (:meth:`Task.after_blend`: normals are renormalised).

When the whole video fits in one window, the output is exactly that window's output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from bufferanytime.inference.options import DEFAULT_OVERLAP_DIVISOR, MIN_OVERLAP
from bufferanytime.tasks import Task


def default_overlap(window: int) -> int:
    return 0 if window < 2 * MIN_OVERLAP else max(MIN_OVERLAP, window // DEFAULT_OVERLAP_DIVISOR)


def blend_weights(overlap: int, dtype: torch.dtype) -> torch.Tensor:
    """Weights of the NEW window on the overlap frames: linear ramp strictly between 0 and 1."""
    return torch.arange(1, overlap + 1, dtype=dtype) / (overlap + 1)


def stitch(task: Task, new: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Combine a new window's output ``new`` (T, ...) with the previous output on its first O frames."""
    overlap = previous.shape[0]
    new = task.align_window(new, previous)
    w = blend_weights(overlap, new.dtype).view(-1, *([1] * (new.ndim - 1)))
    head = task.after_blend((1 - w) * previous + w * new[:overlap])
    return torch.cat([head, new[overlap:]])


def sliding_windows(
    frames: Iterable[torch.Tensor],
    predict: Callable[[torch.Tensor, int], torch.Tensor],
    task: Task,
    window: int,
    overlap: int,
) -> Iterator[torch.Tensor]:
    """Yield one output per input frame, in order, running ``predict`` on overlapping windows.

    ``frames`` yields ``(3, H, W)`` tensors; ``predict(clip, reused)`` maps a clip ``(T, 3, H, W)`` to outputs
    ``(T, ...)``, where the first ``reused`` frames of the clip are the last frames of the previous call's clip
    (so per-frame work on them, such as frozen encoder features, can be reused).
    """
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got {window}, {overlap}")
    inputs: list[torch.Tensor] = []
    previous: torch.Tensor | None = None  # outputs on the frames shared with the next window
    for frame in frames:
        inputs.append(frame)
        if len(inputs) == window:
            out = _predict(predict, task, inputs, previous)
            yield from out[: window - overlap]
            previous = out[window - overlap :] if overlap else None
            inputs = inputs[window - overlap :]
    if previous is not None and len(inputs) == previous.shape[0]:
        yield from previous  # the stream ended right after a full window
    elif inputs:
        yield from _predict(predict, task, inputs, previous)


def _predict(predict: Callable[[torch.Tensor, int], torch.Tensor], task: Task, inputs: list[torch.Tensor],
             previous: torch.Tensor | None) -> torch.Tensor:
    """One window's outputs, stitched onto ``previous`` (the outputs on its first frames) when there is one."""
    out = predict(torch.stack(inputs), 0 if previous is None else len(previous))
    return out if previous is None else stitch(task, out, previous)
