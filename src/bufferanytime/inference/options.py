"""The options of a run (:class:`InferenceSettings`) and the checks that need no model, without importing torch.

The command line builds its parser and refuses bad option values from this module alone, so ``bufferanytime
depth --help`` and a bad option return in a fraction of a second (torch takes over a second to import, the
model libraries several more); :mod:`bufferanytime.inference.pipeline` re-exports every name defined here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bufferanytime.errors import InputError

MIN_INFERENCE_SIDE = 14  # --max-res / --short-side below one ViT patch cannot give the prior an image
SAVE_FORMATS = ("npz", "vis", "png16", "exr", "ply")  # ply: depth only (bufferanytime.geometry)
DEFAULT_SAVE = ("npz", "vis")
#: --precision choices -> the autocast dtype's name in torch (None: no autocast, fp32); see pipeline.PRECISIONS.
PRECISION_DTYPES: dict[str, str | None] = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}
#: What --precision accepts: ``auto`` (the default: bf16 where the device runs it fast, else fp32; see
#: :mod:`bufferanytime.inference.precision`) or one of PRECISION_DTYPES.
PRECISION_CHOICES = ("auto", *PRECISION_DTYPES)
# Overlap = window // DEFAULT_OVERLAP_DIVISOR frames unless given, at least MIN_OVERLAP. Every overlap frame runs
# through the decoder twice, so fewer is faster, but the blend needs room: with window 32, an overlap of 4 keeps
# the seam error at the interior's (1.03x), 2 does not (1.33x) (benchmarks/long_video.py (c)).
DEFAULT_OVERLAP_DIVISOR = 8
MIN_OVERLAP = 2


@dataclass
class InferenceSettings:
    """How a video is run through a model. ``None`` window/overlap/size means: derived from the model.

    ``short_side``/``max_res`` (either given) replace the model's own resize rule, see
    :func:`bufferanytime.inference.pipeline.size_rule`.
    """

    max_res: int | None = None
    short_side: int | None = None
    window: int | None = None
    overlap: int | None = None
    device: str = "auto"
    precision: str = "fp32"  # the library default; the command line defaults to "auto"
    save: tuple[str, ...] = DEFAULT_SAVE
    extra: dict = field(default_factory=dict)


def check_size_options(settings: InferenceSettings) -> None:
    """Refuse ``--short-side``/``--max-res`` below one ViT patch (smaller inputs carry no usable image)."""
    for flag, value in (("--short-side", settings.short_side), ("--max-res", settings.max_res)):
        if value is not None and value < MIN_INFERENCE_SIDE:
            raise InputError(f"{flag} must be at least {MIN_INFERENCE_SIDE} px (one 14-pixel ViT patch), got {value}")


def check_window_options(settings: InferenceSettings) -> None:
    """Refuse an ``--overlap`` not smaller than the ``--window`` given with it (checkable before loading a model)."""
    if settings.window and settings.overlap is not None and settings.overlap >= settings.window:
        raise InputError(f"--overlap ({settings.overlap}) must be smaller than --window ({settings.window})")
