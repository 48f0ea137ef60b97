"""Video models and the one way to create them by name: :func:`load_model`.

``load_model(kind, name_or_path)`` accepts a registered name (the embedded models), a saved video-model
directory, or a prior (a Depth Anything V2 / Marigold-E2E-FT directory or Hugging Face id), which is wrapped
into a fresh video model whose temporal blocks are still zero (i.e. it behaves exactly like the prior).
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from transformers.utils import logging as hf_logging

from bufferanytime.errors import InputError
from bufferanytime.models.base import VideoModel, read_config, resolve_dir
from bufferanytime.models.depth import VideoDepthModel
from bufferanytime.models.normal import VideoNormalModel
from bufferanytime.models.temporal import TemporalBlock, TemporalConfig

hf_logging.disable_progress_bar()

MODEL_CLASSES: dict[str, type[VideoModel]] = {"depth": VideoDepthModel, "normal": VideoNormalModel}

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# Embedded models shipped inside the package: name -> {kind: directory relative to bufferanytime/weights}.
# Demonstration models trained on procedural scenes, not real-world models: see "Embedded models" in the README and
# each model's prior_training_record.json / video_training_record.json.
EMBEDDED: dict[str, dict[str, str]] = {
    "tiny-synthetic": {
        kind: f"tiny-synthetic/{kind}"
        for kind in ("depth", "normal")
        if (WEIGHTS_DIR / "tiny-synthetic" / kind / "config.json").is_file()
    }
}
DEFAULT_MODEL: dict[str, str] = {kind: "tiny-synthetic" for kind in EMBEDDED["tiny-synthetic"]}


def model_class(kind: str) -> type[VideoModel]:
    if kind not in MODEL_CLASSES:
        raise InputError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[kind]


def resolve_model_path(kind: str, name_or_path: str | Path | None) -> str:
    """Turn ``None`` (the default) or a registered name into a directory; pass paths and Hub ids through."""
    if name_or_path is None:
        if kind not in DEFAULT_MODEL:
            raise InputError(f"no default {kind} model is available; pass --model DIR_OR_HF_ID")
        name_or_path = DEFAULT_MODEL[kind]
    name = str(name_or_path)
    if name in EMBEDDED:
        if kind not in EMBEDDED[name]:
            raise InputError(f"embedded model {name!r} has no {kind} variant")
        return str(WEIGHTS_DIR / EMBEDDED[name][kind])
    return name


def load_model(kind: str, name_or_path: str | Path | None = None, per_frame: bool = False) -> VideoModel:
    """Create a video model of ``kind`` ("depth" or "normal") from a name, a directory or a Hub id.

    ``per_frame=True`` returns the prior alone, applied frame by frame: the baseline of every comparison.
    Every failure to read the files (missing, truncated, corrupt, non-finite weights) is one InputError.
    """
    cls = model_class(kind)
    location = resolve_model_path(kind, name_or_path)
    directory = resolve_dir(location)
    try:
        if read_config(directory) is not None:
            return cls.from_pretrained(directory, per_frame=per_frame)
        return cls.from_prior(location, per_frame=per_frame)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise InputError(f"{location}: cannot load a {kind} model ({type(exc).__name__}: {_first_line(exc)})") from exc


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


__all__ = [
    "MODEL_CLASSES",
    "TemporalBlock",
    "TemporalConfig",
    "VideoDepthModel",
    "VideoModel",
    "VideoNormalModel",
    "load_model",
]
