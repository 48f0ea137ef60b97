"""``bufferanytime depth`` and ``bufferanytime normal``: run a video model over videos, frame folders or images.

Several inputs are processed one after the other; a bad input (or a failed write, such as a full disk) is
reported on one line and skipped. Exit code: 0 when every input succeeded, 1 when some failed and others
succeeded, 2 when none succeeded. SIGTERM stops the run like Ctrl-C (see ``cli.main``): nothing half-written
is left. Under ``accelerate launch --num_processes N`` the inputs are split across the processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bufferanytime.cli.args import MAX_INFERENCE_SIDE, MAX_WINDOW, check_outside_input, int_at_most, positive_int
from bufferanytime.cli.online import add_online_options, run_online
from bufferanytime.cli.points import POINT_CLOUD_COMMANDS, add_point_cloud_arguments, point_cloud_options
from bufferanytime.errors import InputError
from bufferanytime.inference.options import (
    DEFAULT_OVERLAP_DIVISOR,
    DEFAULT_SAVE,
    MIN_OVERLAP,
    PRECISION_CHOICES,
    SAVE_FORMATS,
    InferenceSettings,
    check_size_options,
    check_window_options,
)

# torch and the model libraries are imported only once the inputs are checked (see run), the video and image
# libraries only by run: `--help` and a bad option need none of them.
if TYPE_CHECKING:
    from bufferanytime.inference.pipeline import Predictor
    from bufferanytime.io.video import VideoSource

DESCRIPTIONS = {
    "depth": "Predict temporally consistent relative depth (disparity) for videos. Writes into OUT/<name>/ "
    "depth.npz (array 'disparity', float32 (T,H,W), larger = nearer), depth_vis.mp4 and depth.meta.json; "
    "other files there (e.g. the normal outputs) are kept. A metric model (e.g. --model tiny-synthetic-metric) "
    "writes metric_depth.npz (array 'depth', metres) and metric_depth_* files instead.",
    "normal": "Predict temporally consistent surface normals for videos. Writes into OUT/<name>/ normal.npz "
    "(array 'normal', float32 (T,H,W,3), unit vectors, x right, y up, z towards the camera), normal_vis.mp4 "
    "and normal.meta.json; other files there (e.g. the depth outputs) are kept.",
}
# Options of one sub-command's models only (the normal model decodes its VAE latents in chunks).
MODEL_OPTIONS = {
    "normal": [("--decode-chunk", {"type": int_at_most(MAX_WINDOW, 1, "MAX_WINDOW"), "metavar": "N", "default": None,
                                   "help": f"frames decoded by the VAE at once (default 4, at most {MAX_WINDOW})"})],
}
SIZE_HELP = ("Default: the model's own input size (Depth Anything V2 priors: short side 518, enlarging small "
             "frames, long side at most 2072; Marigold priors: long side 768; embedded models: the size they were "
             "trained at). Outputs are always at the input resolution.")


def register(sub: argparse._SubParsersAction) -> None:
    for kind in DESCRIPTIONS:
        p = sub.add_parser(kind, help=DESCRIPTIONS[kind].split(".")[0], description=DESCRIPTIONS[kind])
        p.add_argument("inputs", nargs="*", metavar="INPUT",
                       help="video file (mp4/mov/avi/mkv/webm), folder of images, image, or .txt list of these "
                       "(none with --online)")
        p.add_argument("-o", "--output", required=True, type=Path,
                       help="output directory (created when the first result is written; never an input folder)")
        p.add_argument("--model", default=None,
                       help="registered model name, saved video-model directory, or prior directory / Hugging Face "
                       "id (default: the embedded model)")
        p.add_argument("--per-frame", action="store_true",
                       help="run the image prior alone, frame by frame (the baseline without temporal blocks)")
        p.add_argument("--max-frames", type=positive_int, metavar="N", default=None,
                       help="process at most N frames (after --stride); a video needs at least 2")
        p.add_argument("--stride", type=positive_int, metavar="N", default=1, help="use every N-th frame (default 1)")
        p.add_argument("--short-side", type=int_at_most(MAX_INFERENCE_SIDE, None, "MAX_INFERENCE_SIDE"), metavar="N",
                       default=None,
                       help=f"resize frames so their short side is N px for inference (enlarging small ones), "
                       f"14 to {MAX_INFERENCE_SIDE}. {SIZE_HELP}")
        p.add_argument("--max-res", type=int_at_most(MAX_INFERENCE_SIDE, None, "MAX_INFERENCE_SIDE"), metavar="N",
                       default=None,
                       help=f"longest side used for inference, at most N px (never enlarges; with --short-side it "
                       f"caps the long side). 14 to {MAX_INFERENCE_SIDE}.")
        p.add_argument("--window", type=int_at_most(MAX_WINDOW, 1, "MAX_WINDOW"), metavar="N", default=None,
                       help=f"frames per sliding window, 2 to {MAX_WINDOW} (default: the model's training clip "
                       "length)")
        p.add_argument("--overlap", type=int_at_most(MAX_WINDOW - 1, 0, "below MAX_WINDOW"), metavar="N",
                       default=None,
                       help=f"frames shared by consecutive windows, fewer than the window (so at most "
                            f"{MAX_WINDOW - 1}; default: window // "
                            f"{DEFAULT_OVERLAP_DIVISOR}, at least {MIN_OVERLAP})")
        for flag, options in MODEL_OPTIONS.get(kind, ()):
            p.add_argument(flag, **options)
        if kind in POINT_CLOUD_COMMANDS:
            add_point_cloud_arguments(p)
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default: auto")
        p.add_argument("--precision", default="auto", choices=list(PRECISION_CHOICES),
                       help="auto (default): bf16 autocast where the device runs it fast (CUDA with bf16, CPUs with "
                       "native bf16), else fp32; the choice is recorded in the meta file. A half-precision window "
                       "whose output is not finite is recomputed in fp32")
        p.add_argument("--save", action="append", type=save_formats, default=None, metavar="FORMATS",
                       help=f"comma-separated formats to write, exactly these (repeatable): npz (the array), vis "
                       f"(visualisation mp4), png16 (16-bit PNGs, scale in the meta file), exr (float32 OpenEXR), ply "
                       f"(depth only: a point cloud per frame in KIND_ply/, see the camera options). "
                       f"The meta file is always written. Default: {','.join(DEFAULT_SAVE)}")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no 'wrote ...' lines")
        add_online_options(p)
        p.set_defaults(func=run, kind=kind)


def save_formats(text: str) -> tuple[str, ...]:
    """argparse type of --save: ``npz,png16`` -> ("npz", "png16"), each one of SAVE_FORMATS."""
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in SAVE_FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(unknown) or repr(text)}; choose from "
                                         f"{', '.join(SAVE_FORMATS)}")
    return formats


def _process_split(paths: list[Path]) -> list[Path]:
    """The share of ``paths`` of this process when launched by accelerate/torchrun with several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return paths[rank::world] if world > 1 else paths


def _device(name: str) -> str:
    if name not in ("auto", "cuda") or "LOCAL_RANK" not in os.environ:
        return name
    from bufferanytime.inference.pipeline import resolve_device

    return f"cuda:{os.environ['LOCAL_RANK']}" if resolve_device(name).type == "cuda" else name


def _expand(inputs: list[str]) -> tuple[list[Path], int]:
    """Inputs with ``.txt`` lists expanded; a list that cannot be used is reported and counted as a failure."""
    from bufferanytime.io.video import expand_inputs

    paths, failures = [], 0
    for item in inputs:
        try:
            paths += expand_inputs([item])
        except InputError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
    return paths, failures


def _open(paths: list[Path], args: argparse.Namespace) -> tuple[list[VideoSource], int]:
    """Every input opened, and so checked (type, size, frame count, truncation), before the model is loaded: bad
    inputs are reported at once, and a run none of whose inputs can be used never imports torch or a model."""
    from bufferanytime.io.video import open_video

    sources, failures = [], 0
    for path in paths:
        try:
            sources.append(open_video(path, max_frames=args.max_frames, stride=args.stride, per_frame=args.per_frame))
        except InputError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
    return sources, failures


def _target(out_root: Path, source: VideoSource, used: set[str]) -> Path:
    """``OUT/<stem>`` of an input (``<stem>-2`` ... for repeated stems); refuses one inside a folder input."""
    if not source.name:
        raise InputError(f"{source.path}: cannot name its outputs (the input has no name)")
    name, suffix = source.name, 2
    while name in used:
        name, suffix = f"{source.name}-{suffix}", suffix + 1
    return check_outside_input(source, out_root / name)


def _settings(args: argparse.Namespace) -> InferenceSettings:
    save = tuple(dict.fromkeys(f for group in args.save or [DEFAULT_SAVE] for f in group))
    settings = InferenceSettings(max_res=args.max_res, short_side=args.short_side, window=args.window,
                                 overlap=args.overlap, device=_device(args.device), precision=args.precision,
                                 save=save)
    check_size_options(settings)
    check_window_options(settings)
    points = point_cloud_options(args, args.kind, save)
    if points is not None:
        settings.extra["points"] = points
    return settings


def _load(args: argparse.Namespace, settings: InferenceSettings) -> tuple[Predictor, dict]:
    """The model on its device, checked against the settings; and what to record about it."""
    from bufferanytime.inference.pipeline import Predictor, resolve_device, window_warning
    from bufferanytime.models import DEFAULT_MODEL, load_model, resolve_model_path

    device = resolve_device(settings.device)
    location = resolve_model_path(args.kind, args.model)
    model = load_model(args.kind, args.model, per_frame=args.per_frame)
    if getattr(args, "decode_chunk", None):
        model.decode_chunk = args.decode_chunk
    warning = window_warning(model, settings)
    if warning:
        print(warning, file=sys.stderr)
    path = Path(location)
    info = {"name": str(args.model or DEFAULT_MODEL.get(args.kind)),
            "path": str(path.resolve()) if path.exists() else location}
    return Predictor(model, device, settings.precision), info


def run(args: argparse.Namespace) -> int:
    from bufferanytime.io.outputs import check_output_root

    settings = _settings(args)
    if args.online is not None:
        return run_online(args, settings)
    if not args.inputs:
        raise InputError("no INPUT given: pass videos, image folders or images, or --online SOURCE")
    out_root = check_output_root(args.output)
    paths, failures = _expand(args.inputs)
    paths = _process_split(paths)
    total = len(paths) + failures
    sources, failed = _open(paths, args)
    failures += failed
    if not sources:
        return 2 if failures else 0
    from bufferanytime.inference.pipeline import run_video

    predictor, model_info = _load(args, settings)
    used: set[str] = set()
    for source in sources:
        path = source.path
        try:
            target = _target(out_root, source, used)
            meta = run_video(predictor.model, source, target, settings, model_info, progress=not args.quiet,
                             predictor=predictor)
            used.add(target.name)
            if not args.quiet:
                print(f"wrote {target}/ ({', '.join(meta['written'])})")
        except InputError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
        except OSError as exc:  # e.g. a full disk: nothing of this input was left, the next one may still fit
            failures += 1
            print(f"error: {path}: cannot write the {args.kind} outputs to {out_root} "
                  f"({exc.strerror or exc}); nothing was written for this input", file=sys.stderr)
    if failures == 0:
        return 0
    return 2 if failures >= total else 1
