"""Video models (an image prior of any registered family with temporal blocks) and the one way to create them by
name: :func:`load_model`; :func:`list_models` names the registered (embedded) models.

``load_model(path)`` accepts a registered name (the embedded models), a saved video-model directory, or a prior
(a checkpoint directory or Hugging Face id of any family of :mod:`bufferanytime.families`), which is wrapped into a
fresh video model whose temporal blocks are still zero (i.e. it behaves exactly like the prior). The family is
read from the checkpoint's own config; ``load_model(kind, name_or_path)`` also checks that it makes that kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from bufferanytime.errors import InputError
from bufferanytime.models.base import CONFIG_NAME, VideoModel, check_digests, read_config, resolve_dir
from bufferanytime.models.temporal import TemporalBlock, TemporalConfig
from bufferanytime.registry import Registry
from bufferanytime.tasks import list_tasks

if TYPE_CHECKING:
    from bufferanytime.families.depth_anything_v2 import VideoDepthModel
    from bufferanytime.families.marigold_e2e_normals import VideoNormalModel

#: The video-model classes of the embedded models' families, reachable as attributes of this package
#: (``models.VideoDepthModel``) and imported when first asked for: each family module pulls in transformers or
#: diffusers (seconds of start-up), and a command imports only the family it loads.
LAZY_CLASSES = {"VideoDepthModel": "bufferanytime.families.depth_anything_v2",
                "VideoNormalModel": "bufferanytime.families.marigold_e2e_normals"}

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
    """The kinds the embedded model ``name`` ships (``weights/NAME/KIND``), and their directories."""
    folders = {kind: WEIGHTS_DIR / name / kind for kind in list_tasks()}
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
    """The video-model class of the first family of model kind ``kind`` (its module imported now)."""
    from bufferanytime.families import default_family, get_family

    if kind not in list_tasks():
        raise InputError(f"unknown model kind {kind!r}; choose one of {', '.join(list_tasks())}")
    return get_family(default_family(kind)).model_class


def __getattr__(name: str) -> Any:
    """``VideoDepthModel`` / ``VideoNormalModel``, imported when first asked for (see :data:`LAZY_CLASSES`)."""
    if name in LAZY_CLASSES:
        import importlib

        return getattr(importlib.import_module(LAZY_CLASSES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_model_path(kind: str | None, name_or_path: str | Path | None) -> str:
    """Turn ``None`` (the default of ``kind``) or a registered name into a directory; pass paths and Hub ids
    through. Without ``kind``, a registered name must ship one kind only."""
    if name_or_path is None:
        if kind not in DEFAULT_MODEL:
            raise InputError(f"no default {kind} model is available; pass --model DIR_OR_HF_ID")
        name_or_path = DEFAULT_MODEL[kind]
    name = str(name_or_path)
    if name in MODELS:
        variants = MODELS.get(name)
        if kind is None and len(variants) == 1:
            return str(next(iter(variants.values())))
        if kind is None:
            raise InputError(f"embedded model {name!r} has {' and '.join(variants)} variants; name the kind")
        if kind not in variants:
            raise InputError(f"embedded model {name!r} has no {kind} variant")
        return str(variants[kind])
    return name


def _split(kind: str | Path | None, name_or_path: str | Path | None) -> tuple[str | None, str | Path | None]:
    """``load_model(path)`` or ``load_model(kind, name_or_path)``: a lone first argument that is no model kind is
    the model."""
    if name_or_path is None and kind is not None and str(kind) not in list_tasks():
        return None, kind
    if kind is not None and str(kind) not in list_tasks():
        raise InputError(f"unknown model kind {kind!r}; choose one of {', '.join(list_tasks())}")
    return (None if kind is None else str(kind)), name_or_path


def load_model(kind: str | Path | None = None, name_or_path: str | Path | None = None,
               per_frame: bool = False) -> VideoModel:
    """Create a video model from a name, a directory or a Hub id: ``load_model(path)``, or
    ``load_model(kind, name_or_path)`` (``name_or_path=None``: the default model of ``kind``), which also refuses a
    checkpoint whose family does not make ``kind``.

    The family (:mod:`bufferanytime.families`) is read from the checkpoint's config. ``per_frame=True`` returns
    the prior alone, applied frame by frame: the baseline of every comparison. Every failure to read the files
    (unknown family, missing, truncated, corrupt, non-finite weights) is one InputError.
    """
    from bufferanytime.families import family_of

    kind, name_or_path = _split(kind, name_or_path)
    if kind is None and name_or_path is None:
        raise InputError("load_model needs a model: a name, a directory or a Hugging Face id")
    location = resolve_model_path(kind, name_or_path)
    directory = resolve_dir(location)
    try:
        family = family_of(directory)
    except InputError as exc:  # no model there, or one of a family this package does not know
        detail = str(exc).removeprefix(f"{directory}: ")
        raise InputError(f"{location}: cannot load a{f' {kind}' if kind else ''} model: {detail}") from None
    if kind is not None and not family.produces(kind):
        raise InputError(f"{location}: a {family.title} checkpoint makes {family.kind} models, not {kind}")
    cls = family.model_class
    try:
        if read_config(directory) is not None:
            return cls.from_pretrained(directory, per_frame=per_frame)
        check_digests(directory)  # a prior with tensors_sha256.json (the shipped ones) is verified first
        return cls.from_prior(location, per_frame=per_frame)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        what = kind or family.kind
        raise InputError(f"{location}: cannot load a {what} model ({type(exc).__name__}: {_first_line(exc)})") from exc


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "TemporalBlock",
    "TemporalConfig",
    "VideoDepthModel",
    "VideoModel",
    "VideoNormalModel",
    "list_models",
    "load_model",
]
