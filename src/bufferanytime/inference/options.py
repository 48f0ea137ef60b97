"""The options of a run (:class:`InferenceSettings`) and the checks that need no model, without importing torch.

Each option is declared once, as a field of :class:`InferenceSettings` (:func:`bufferanytime.options.option`):
its default, help, limits (checks), choices and where it is offered. From that one field come the flag of
``bufferanytime depth|normal`` (:mod:`bufferanytime.cli.predict`) and of ``eval``, the evaluation config, the
web app's control and the check with its error line (:meth:`InferenceSettings.check`).

The command line builds its parser and refuses bad option values from this module alone, so ``bufferanytime
depth --help`` and a bad option return in a fraction of a second (torch takes over a second to import, the
model libraries several more); :mod:`bufferanytime.inference.pipeline` re-exports every name defined here.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields

from bufferanytime.errors import InputError
from bufferanytime.geometry.intrinsics import DEFAULT_FOV_DEG, PIXEL_CENTRES, parse_intrinsics
from bufferanytime.geometry.options import DEFAULT_DROP_EDGES, PointCloudOptions
from bufferanytime.options import Check, above, at_least, check_values, info, limited, option

MIN_INFERENCE_SIDE = 14  # --max-res / --short-side below one ViT patch cannot give the prior an image
# Upper limits of the size options, said in their --help and checked when the options are parsed (one line, before
# any work), so that a typo such as --short-side 100000 is refused instead of allocating tens of GB:
#: --short-side, --max-res, export --size: 4096 px is 8x Depth Anything V2's own short side (518) and twice its
#: long side (2072); a ViT's attention at that size already needs tens of GB.
MAX_INFERENCE_SIDE = 4096
#: --window, --overlap, --decode-chunk: frames held at once (the paper's longest clip is 110 frames).
MAX_WINDOW = 1024
SAVE_FORMATS = ("npz", "vis", "png16", "exr", "ply",  # ply: depth only (bufferanytime.geometry)
                "poses", "colmap", "nerfstudio", "exr-multi", "fused", "rrd")  # the camera: depth only
DEFAULT_SAVE = ("npz", "vis")
#: --precision choices -> the autocast dtype's name in torch (None: no autocast, fp32); see pipeline.PRECISIONS.
PRECISION_DTYPES: dict[str, str | None] = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}
#: What --precision accepts: ``auto`` (the default: bf16 where the device runs it fast, else fp32; see
#: :mod:`bufferanytime.inference.precision`) or one of PRECISION_DTYPES.
PRECISION_CHOICES = ("auto", *PRECISION_DTYPES)
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # what --device accepts (cuda:N: the N-th GPU)
# Overlap = window // DEFAULT_OVERLAP_DIVISOR frames unless given, at least MIN_OVERLAP. Every overlap frame runs
# through the decoder twice, so fewer is faster, but the blend needs room: with window 32, an overlap of 4 keeps
# the seam error at the interior's (1.03x), 2 does not (1.33x) (benchmarks/long_video.py (c)).
DEFAULT_OVERLAP_DIVISOR = 8
MIN_OVERLAP = 2
PER_FRAME_BATCH = 8  # frames per forward pass of the per-frame baseline (no temporal context, no overlap)
SIZE_HELP = ("Default: the model's own input size (Depth Anything V2 priors: short side 518, enlarging small "
             "frames, long side at most 2072; Marigold priors: long side 768; embedded models: the size they were "
             "trained at). Outputs are always at the input resolution.")
CAMERA = "camera and point clouds (--save ply)"  # the --help section of the camera options
#: The description of each --help section of the options (OptionInfo.group).
GROUPS = {
    CAMERA: "PLY files hold points in camera coordinates (x right, y up, z towards the camera: points in front have "
    "z < 0) with the input's colours, and normals when OUT/<name>/normal.npz of the same input exists (run "
    "`bufferanytime normal` first). The intrinsics are recorded in the meta file.",
}


def save_formats(text: str) -> tuple[str, ...]:
    """The argparse type of --save: ``npz,png16`` -> ("npz", "png16"), each one of SAVE_FORMATS."""
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in SAVE_FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(unknown) or repr(text)}; choose from "
                                         f"{', '.join(SAVE_FORMATS)}")
    return formats


def _side() -> Check:
    """A size option's check: at least one ViT patch (after parsing, with the other options), at most the limit
    (when the flag is parsed)."""
    at_least_a_patch = Check(lambda v: v >= MIN_INFERENCE_SIDE,
                             f"must be at least {MIN_INFERENCE_SIDE} px (one 14-pixel ViT patch), got {{value}}")
    return limited(at_least_a_patch, MAX_INFERENCE_SIDE, "MAX_INFERENCE_SIDE")


def _is_device(name: str) -> bool:
    return re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name) is not None


@dataclass
class InferenceSettings:
    """How a video is run through a model: every inference option, each declared once by its field here.

    ``None`` window/overlap/size means: derived from the model. ``short_side``/``max_res`` (either given) replace
    the model's own resize rule, see :func:`bufferanytime.inference.pipeline.size_rule`. Declaring a field with
    :func:`~bufferanytime.options.option` is the whole of adding an option; using its value is the other place.
    """

    max_res: int | None = option(
        None, "longest side used for inference, at most N px (never enlarges; with --short-side it caps the long "
        f"side). 14 to {MAX_INFERENCE_SIDE}.", _side(), metavar="N",
        app="Input size (long side, px; 0: the model's own)")
    short_side: int | None = option(
        None, f"resize frames so their short side is N px for inference (enlarging small ones), 14 to "
        f"{MAX_INFERENCE_SIDE}. {SIZE_HELP}", _side(), metavar="N")
    window: int | None = option(
        None, f"frames per sliding window, 2 to {MAX_WINDOW} (default: the model's training clip length)",
        limited(at_least(1), MAX_WINDOW, "MAX_WINDOW"), metavar="N", app="Window (frames; 0: the model's own)")
    overlap: int | None = option(
        None, f"frames shared by consecutive windows, fewer than the window (so at most {MAX_WINDOW - 1}; default: "
        f"window // {DEFAULT_OVERLAP_DIVISOR}, at least {MIN_OVERLAP})",
        limited(at_least(0), MAX_WINDOW - 1, "below MAX_WINDOW"), metavar="N")
    decode_chunk: int | None = option(
        None, f"frames decoded by the VAE at once (default 4, at most {MAX_WINDOW})",
        limited(at_least(1), MAX_WINDOW, "MAX_WINDOW"), metavar="N", kinds=("normal",))
    device: str = option("auto", "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps (default {default})",
                         Check(_is_device, f"must be one of {', '.join(DEVICES)}, got {{value!r}}"),
                         metavar="{" + ",".join(DEVICES) + "}")
    precision: str = option(
        "fp32", "auto: bf16 autocast where the device runs it fast (CUDA with bf16, CPUs with native bf16), else "
        "fp32; the choice is recorded in the meta file. A half-precision window whose output is not finite is "
        "recomputed in fp32 (default {default})", choices=PRECISION_CHOICES, app="Precision")
    save: tuple[str, ...] = option(
        DEFAULT_SAVE, "comma-separated formats to write, exactly these (repeatable): npz (the array), vis "
        "(visualisation mp4), png16 (16-bit PNGs, scale in the meta file), exr (float32 OpenEXR), ply (depth only: a "
        "point cloud per frame in KIND_ply/, see the camera options); the camera, depth only (docs/camera.md): poses "
        "(camera.json, camera_tum.txt), colmap (colmap/), nerfstudio (nerfstudio/transforms.json), exr-multi "
        "(exr_multi/: Z, N.x N.y N.z and the camera per frame), fused (fused.ply: one world-space cloud), rrd "
        "(scene.rrd, a rerun recording; needs bufferanytime[camera]). The meta file is always written. Default: "
        "{default}", split=save_formats, metavar="FORMATS")
    intrinsics: str | None = option(
        None, "fx,fy,cx,cy in pixels of the input frames (OpenCV pixel centres unless --pixel-centres says "
        "otherwise), or fx,fy,cx,cy,W,H for W x H frames (scaled to the input's size); or a file: a synthetic "
        "meta.json, a KITTI or KITTI-360 calibration (P2:, P_rect_02:, P_rect_00: or K: line), a COLMAP cameras.txt "
        "(first camera, pinhole part), or bare numbers fx fy cx cy (DeepV2D's intrinsics.txt) or a 3x3 matrix",
        metavar="VALUES|FILE", group=CAMERA, kinds=("depth",))
    pixel_centres: str | None = option(
        None, "how to read the cx, cy of --intrinsics: opencv = the top-left pixel's centre is (0, 0) (OpenCV, "
        "KITTI, DeepV2D), colmap = it is (0.5, 0.5) (COLMAP, this tool's meta files). Default: opencv for numbers, a "
        "file's own format's convention. Recorded in the meta file", choices=tuple(PIXEL_CENTRES),
        aliases=("--pixel-centers",), group=CAMERA, kinds=("depth",))
    fov: float | None = option(
        None, f"horizontal field of view in degrees, square pixels, centred principal point (default when neither "
        f"is given: {DEFAULT_FOV_DEG:g} degrees)", metavar="DEG", group=CAMERA, kinds=("depth",))
    ply_stride: int = option(1, "keep every N-th pixel in x and y (default {default}: every pixel)", at_least(1),
                             metavar="N", group=CAMERA, kinds=("depth",))
    ply_drop_edges: float = option(
        DEFAULT_DROP_EDGES, "drop points whose depth jumps by more than R (relative) to a neighbouring pixel: the "
        "flying pixels between surfaces (default {default}; 0 keeps all)", at_least(0), metavar="R", group=CAMERA,
        kinds=("depth",))
    depth_scale: float = option(
        1.0, "relative depth only: the median depth of the video's points (zero shift is assumed, depth = s / "
        "disparity; default {default})", above(0), metavar="S", group=CAMERA, kinds=("depth",))

    def __post_init__(self) -> None:
        self.save = tuple(dict.fromkeys(self.save))  # each format once, in the order first given

    @classmethod
    def option_names(cls, kind: str | None = None) -> list[str]:
        """The options a ``kind`` of command takes (None: every option), in declaration order."""
        return [f.name for f in fields(cls) if kind is None or not info(f).kinds or kind in info(f).kinds]

    def check(self) -> InferenceSettings:
        """``self``, or InputError naming the first option out of its limits (no model needed); reads the
        ``--intrinsics`` file, so that a bad one is refused before any work."""
        check_values(self)
        check_window_options(self)
        self.point_cloud()
        return self

    def point_cloud(self) -> PointCloudOptions:
        """The camera and point-cloud options (``--intrinsics`` read and checked once); InputError when unusable."""
        key = (self.intrinsics, self.fov, self.pixel_centres)
        cached = self.__dict__.get("_camera")  # not a field: the parsed file, kept while the options stay the same
        if cached is None or cached[0] != key:
            cached = self.__dict__["_camera"] = (key, parse_intrinsics(*key))
        return PointCloudOptions(cached[1], self.ply_stride, self.ply_drop_edges, self.depth_scale)


def check_size_options(settings: InferenceSettings) -> None:
    """Refuse ``--short-side``/``--max-res`` below one ViT patch (smaller inputs carry no usable image)."""
    by_name = {f.name: f for f in fields(settings)}
    for name in ("short_side", "max_res"):
        value, check = getattr(settings, name), info(by_name[name]).check
        if value is not None and not check.ok(value):
            raise InputError(f"--{name.replace('_', '-')} {check.text.format(value=value)}")


def check_window_options(settings: InferenceSettings) -> None:
    """Refuse an ``--overlap`` not smaller than the ``--window`` given with it (checkable before loading a model)."""
    if settings.window and settings.overlap is not None and settings.overlap >= settings.window:
        raise InputError(f"--overlap ({settings.overlap}) must be smaller than --window ({settings.window})")


def scaled_size(height: int, width: int, rule: dict) -> tuple[int, int]:
    """The largest size (aspect kept) with short side <= ``short_side`` and long side <= ``long_side`` of a size
    ``rule`` (:func:`bufferanytime.inference.pipeline.size_rule`), enlarging only where ``rule["upscale"]``."""
    scales = []
    if rule.get("short_side"):
        scales.append(rule["short_side"] / min(height, width))
    if rule.get("long_side"):
        scales.append(rule["long_side"] / max(height, width))
    scale = min(scales, default=1.0)
    if not rule.get("upscale"):
        scale = min(scale, 1.0)
    return max(1, round(height * scale)), max(1, round(width * scale))
