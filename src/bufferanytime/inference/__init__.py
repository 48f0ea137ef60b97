"""Inference: sliding-window prediction over videos of any length (``run_video``), online prediction of live
streams frame by frame (``run_stream``), and output writing.

The names below are imported on first use (torch and the pipeline load only when asked for), so that
``bufferanytime.inference.options`` can be read by the command line without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module of this package defining it
_EXPORTS = {
    "FrameSource": "live",
    "InferenceSettings": "options",
    "OnlinePredictor": "online",
    "Predictor": "pipeline",
    "inference_size": "pipeline",
    "predict_frames": "pipeline",
    "resolve_device": "pipeline",
    "run_stream": "live",
    "run_video": "pipeline",
    "sliding_windows": "windows",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
