"""Video models (Depth Anything V2 / Marigold-E2E-FT priors with temporal blocks) and the one way to create
them by name: :func:`load_model`; :func:`list_models` names the registered (embedded) models.

``load_model(kind, name_or_path)`` accepts a registered name (the embedded models), a saved video-model
directory, or a prior (a Depth Anything V2 / Marigold-E2E-FT directory or Hugging Face id), which is wrapped
into a fresh video model whose temporal blocks are still zero (i.e. it behaves exactly like the prior).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from bufferanytime.errors import InputError
from bufferanytime.models.base import CONFIG_NAME, VideoModel, check_digests, read_config, resolve_dir
from bufferanytime.models.temporal import TemporalBlock, TemporalConfig
from bufferanytime.registry import Registry
from bufferanytime.tasks import DEPTH, NORMAL

if TYPE_CHECKING:
    from bufferanytime.models.depth import VideoDepthModel
    from bufferanytime.models.normal import VideoNormalModel

#: The video-model class of each kind of buffer, as ``module:Class``, imported by :func:`model_class` on first
#: use: the normal model pulls in diffusers and the depth model transformers (seconds of start-up each), and a
#: command imports only the one it runs (``bufferanytime depth`` never imports diffusers).
MODEL_CLASSES: Registry[str] = Registry("model kind")
MODEL_CLASSES.register(DEPTH.name, "bufferanytime.models.depth:VideoDepthModel")
MODEL_CLASSES.register(NORMAL.name, "bufferanytime.models.normal:VideoNormalModel")
#: The lazily imported classes, also reachable as attributes of this package (``models.VideoDepthModel``).
LAZY_CLASSES = {"VideoDepthModel": DEPTH.name, "VideoNormalModel": NORMAL.name}

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: Models loadable by name: name -> {kind: directory}. The embedded ones ship inside the package
#: (bufferanytime/weights/NAME/KIND): demonstration models trained on procedural scenes, not real-world models;
#: see docs/embedded_models.md and each model's prior_training_record.json / video_training_record.json.
MODELS: Registry[dict[str, Path]] = Registry("model")
EMBEDDED_NAME = "tiny-synthetic"
#: The embedded causal models (trained with ``train --causal``, streamed exactly by ``StreamingPredictor``).
CAUSAL_EMBEDDED_NAME = "tiny-synthetic-causal"
#: The embedded metric depth model (a metric prior, output in metres; docs/embedded_models.md).
METRIC_EMBEDDED_NAME = "tiny-synthetic-metric"


def _embedded(name: str) -> dict[str, Path]:
    """The kinds the embedded model ``name`` ships, and their directories."""
    folders = {kind: WEIGHTS_DIR / name / kind for kind in MODEL_CLASSES}
    return {kind: folder for kind, folder in folders.items() if (folder / CONFIG_NAME).is_file()}


MODELS.register(EMBEDDED_NAME, _embedded(EMBEDDED_NAME))
if _embedded(CAUSAL_EMBEDDED_NAME):
    MODELS.register(CAUSAL_EMBEDDED_NAME, _embedded(CAUSAL_EMBEDDED_NAME))
if _embedded(METRIC_EMBEDDED_NAME):
    MODELS.register(METRIC_EMBEDDED_NAME, _embedded(METRIC_EMBEDDED_NAME))
#: The model ``load_model(kind)`` loads without a name: the embedded one, for each kind it has.
DEFAULT_MODEL: dict[str, str] = {kind: EMBEDDED_NAME for kind in MODELS.get(EMBEDDED_NAME)}


def list_models(kind: str | None = None) -> list[str]:
    """Names ``load_model`` accepts besides paths and Hub ids; with ``kind``, those that have that kind."""
    return [name for name in MODELS if kind is None or kind in MODELS.get(name)]


def model_class(kind: str) -> type[VideoModel]:
    """The video-model class of ``kind`` ("depth" or "normal"), its module imported on first use."""
    module, name = MODEL_CLASSES.get(kind).split(":")
    return getattr(importlib.import_module(module), name)


def __getattr__(name: str) -> Any:
    """``VideoDepthModel`` / ``VideoNormalModel``, imported when first asked for (see :data:`MODEL_CLASSES`)."""
    if name in LAZY_CLASSES:
        return model_class(LAZY_CLASSES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_model_path(kind: str, name_or_path: str | Path | None) -> str:
    """Turn ``None`` (the default) or a registered name into a directory; pass paths and Hub ids through."""
    if name_or_path is None:
        if kind not in DEFAULT_MODEL:
            raise InputError(f"no default {kind} model is available; pass --model DIR_OR_HF_ID")
        name_or_path = DEFAULT_MODEL[kind]
    name = str(name_or_path)
    if name in MODELS:
        if kind not in MODELS.get(name):
            raise InputError(f"embedded model {name!r} has no {kind} variant")
        return str(MODELS.get(name)[kind])
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
        check_digests(directory)  # a prior with tensors_sha256.json (the shipped ones) is verified first
        return cls.from_prior(location, per_frame=per_frame)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise InputError(f"{location}: cannot load a {kind} model ({type(exc).__name__}: {_first_line(exc)})") from exc


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "MODEL_CLASSES",
    "TemporalBlock",
    "TemporalConfig",
    "VideoDepthModel",
    "VideoModel",
    "VideoNormalModel",
    "list_models",
    "load_model",
]
