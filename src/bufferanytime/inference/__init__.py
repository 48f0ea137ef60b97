"""Inference: streaming, sliding-window prediction over videos of any length, and output writing."""

from bufferanytime.inference.pipeline import (
    InferenceSettings,
    Predictor,
    inference_size,
    predict_frames,
    resolve_device,
    run_video,
)
from bufferanytime.inference.windows import sliding_windows

__all__ = [
    "InferenceSettings",
    "Predictor",
    "inference_size",
    "predict_frames",
    "resolve_device",
    "run_video",
    "sliding_windows",
]
