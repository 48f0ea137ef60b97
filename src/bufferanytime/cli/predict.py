"""``bufferanytime depth`` and ``bufferanytime normal``: run a video model over videos, frame folders or images.

Several inputs are processed one after the other; a bad input is reported on one line and skipped. Exit code:
0 when every input succeeded, 1 when some failed and others succeeded, 2 when none succeeded. Under
``accelerate launch --num_processes N`` the inputs are split across the processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bufferanytime.cli.args import non_negative_int, positive_int
from bufferanytime.errors import InputError
from bufferanytime.inference.pipeline import (
    DEFAULT_MAX_RES,
    PRECISIONS,
    SAVE_FORMATS,
    InferenceSettings,
    Predictor,
    resolve_device,
    run_video,
)
from bufferanytime.inference.windows import DEFAULT_OVERLAP_DIVISOR, MIN_OVERLAP
from bufferanytime.io.outputs import ensure_writable_dir
from bufferanytime.io.video import expand_inputs, open_video

DESCRIPTIONS = {
    "depth": "Predict temporally consistent relative depth (disparity) for videos. Writes OUT/<name>/depth.npz "
    "(array 'disparity', float32 (T,H,W), larger = nearer), depth_vis.mp4 and meta.json.",
    "normal": "Predict temporally consistent surface normals for videos. Writes OUT/<name>/normal.npz "
    "(array 'normal', float32 (T,H,W,3), unit vectors, x right, y up, z towards the camera), normal_vis.mp4 "
    "and meta.json.",
}


def register(sub: argparse._SubParsersAction) -> None:
    for kind in ("depth", "normal"):
        p = sub.add_parser(kind, help=DESCRIPTIONS[kind].split(".")[0], description=DESCRIPTIONS[kind])
        p.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="video file (mp4/mov/avi/mkv/webm), folder of images, image, or .txt list of these")
        p.add_argument("-o", "--output", required=True, type=Path, help="output directory (created if needed)")
        p.add_argument("--model", default=None,
                       help="registered model name, saved video-model directory, or prior directory / Hugging Face "
                       "id (default: the embedded model)")
        p.add_argument("--per-frame", action="store_true",
                       help="run the image prior alone, frame by frame (the baseline without temporal blocks)")
        p.add_argument("--max-frames", type=positive_int, default=None,
                       help="process at most N frames (after --stride)")
        p.add_argument("--stride", type=positive_int, default=1, help="use every N-th frame (default 1)")
        p.add_argument("--max-res", type=positive_int, default=DEFAULT_MAX_RES,
                       help=f"longest side used for inference; outputs are resized back (default {DEFAULT_MAX_RES})")
        p.add_argument("--window", type=positive_int, default=None,
                       help="frames per sliding window (default: the model's training clip length)")
        p.add_argument("--overlap", type=non_negative_int, default=None,
                       help=f"frames shared by consecutive windows (default: window // {DEFAULT_OVERLAP_DIVISOR}, "
                            f"at least {MIN_OVERLAP})")
        if kind == "normal":
            p.add_argument("--decode-chunk", type=positive_int, default=None,
                           help="frames decoded by the VAE at once (default 4)")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default: auto")
        p.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="default: fp32")
        p.add_argument("--save", nargs="+", default=["npz"], choices=SAVE_FORMATS,
                       help="output formats besides the visualisation: npz (default), png16 (16-bit PNGs, scale "
                       "in meta.json), exr (float32 OpenEXR)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        p.set_defaults(func=run, kind=kind)


def _process_split(paths: list[Path]) -> list[Path]:
    """The share of ``paths`` of this process when launched by accelerate/torchrun with several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return paths[rank::world] if world > 1 else paths


def _device(name: str) -> str:
    if name in ("auto", "cuda") and "LOCAL_RANK" in os.environ and resolve_device(name).type == "cuda":
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return name


def run(args: argparse.Namespace) -> int:
    from bufferanytime.models import load_model

    if args.window is not None and args.overlap is not None and args.overlap >= args.window:
        raise InputError(f"--overlap ({args.overlap}) must be smaller than --window ({args.window})")
    out_root = ensure_writable_dir(args.output)
    paths = _process_split(expand_inputs(args.inputs))
    settings = InferenceSettings(
        max_res=args.max_res,
        window=args.window,
        overlap=args.overlap,
        device=_device(args.device),
        precision=args.precision,
        save=tuple(dict.fromkeys(args.save)),
    )
    model = load_model(args.kind, args.model, per_frame=args.per_frame)
    if getattr(args, "decode_chunk", None):
        model.decode_chunk = args.decode_chunk
    predictor = Predictor(model, resolve_device(settings.device), settings.precision)
    failures, used = 0, set()
    for path in paths:
        try:
            source = open_video(path, max_frames=args.max_frames, stride=args.stride)
            name = source.name
            suffix = 2
            while name in used:
                name, suffix = f"{source.name}-{suffix}", suffix + 1
            run_video(model, source, out_root / name, settings, model_name=str(args.model or "default"),
                      progress=not args.quiet, predictor=predictor)
            used.add(name)
        except InputError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
    if failures == 0:
        return 0
    return 2 if failures == len(paths) else 1
