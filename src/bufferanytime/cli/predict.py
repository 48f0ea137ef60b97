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

from bufferanytime.batch.options import add_batch_options, check_batch_options
from bufferanytime.cli.adapt_first import ADAPTED_DIR, add_adapt_option, check_adapt_option
from bufferanytime.cli.args import add_options, check_outside_input, given_options, positive_int
from bufferanytime.cli.online import add_online_options, run_online
from bufferanytime.cli.points import check_point_clouds
from bufferanytime.errors import InputError
from bufferanytime.geometry.camera_formats import check_camera_formats
from bufferanytime.inference.options import GROUPS, PER_FRAME_BATCH, InferenceSettings

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
# Frames decoded ahead of the model before its first window is known (the embedded models' windows are 10 frames).
DECODE_AHEAD_START = 8
#: The command line's own defaults of inference options (the library's are the fields' defaults).
CLI_DEFAULTS = {"precision": "auto"}


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
        add_options(p, InferenceSettings, InferenceSettings.option_names(kind), CLI_DEFAULTS, GROUPS)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no 'wrote ...' lines")
        add_online_options(p)
        add_batch_options(p)
        add_adapt_option(p)
        p.set_defaults(func=run, kind=kind)


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
    """The checked inference options of the command (InputError on a bad value or calibration file)."""
    names = InferenceSettings.option_names(args.kind)
    settings = InferenceSettings(**given_options(args, InferenceSettings, names, CLI_DEFAULTS))
    settings.device = _device(settings.device)
    check_point_clouds(settings.check(), args.kind)
    check_camera_formats(settings.save, args.kind)
    return settings


def _model_window(args: argparse.Namespace) -> int | None:
    """The clip length in a saved video model's config, the first window of a run without ``--window``; None for
    a prior or a Hub id."""
    from bufferanytime.models import resolve_model_path
    from bufferanytime.models.base import read_config

    try:
        config = read_config(Path(resolve_model_path(args.kind, args.model)))
    except InputError:  # reported by the loading itself
        return None
    return int(config["clip_len"]) if config and "clip_len" in config else None


def _load(args: argparse.Namespace, settings: InferenceSettings, first: VideoSource) -> tuple[Predictor, dict]:
    """The model on its device, checked against the settings; and what to record about it.

    The first input's first window is decoded meanwhile: at first ``DECODE_AHEAD_START`` frames, then, once torch
    is imported and the model's config read, up to its first window (frames held beyond it would only add to the
    peak memory where a model's windows are short)."""
    given = settings.window or (PER_FRAME_BATCH if args.per_frame else None)
    first.decode_ahead(given or DECODE_AHEAD_START)
    try:
        if given is None:
            first.decode_ahead(_model_window(args))
        from bufferanytime.inference.pipeline import load_predictor

        return load_predictor(args.kind, args.model, settings, per_frame=args.per_frame)
    except BaseException:
        first.close()
        raise


def run(args: argparse.Namespace) -> int:
    from bufferanytime.io.outputs import check_output_root

    settings = _settings(args)
    check_batch_options(args)
    check_adapt_option(args)
    if args.online is not None:
        return run_online(args, settings)
    if not args.inputs:
        raise InputError("no INPUT given: pass videos, image folders or images, or --online SOURCE")
    if args.engine is not None:  # a batch: manifest, resume, retries (bufferanytime.batch)
        from bufferanytime.batch.run import run_batch

        return run_batch(args, settings)
    out_root = check_output_root(args.output)
    paths, failures = _expand(args.inputs)
    paths = _process_split(paths)
    total = len(paths) + failures
    sources, failed = _open(paths, args)
    failures += failed
    if not sources:
        return 2 if failures else 0
    adapted = None
    if args.adapt is not None:  # adapt on the inputs first (cli.adapt_first), then predict with that model
        from bufferanytime.cli.adapt_first import adapt_first

        args.model, adapted = adapt_first(args, [s.path for s in sources], out_root, settings.device)
    predictor, model_info = _load(args, settings, sources[0])
    from bufferanytime.inference.pipeline import run_video

    if adapted is not None:
        model_info["adapt"] = adapted
    used: set[str] = {ADAPTED_DIR} if adapted is not None else set()
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
        finally:
            source.close()  # frames decoded ahead for an input that failed before reading them
    if failures == 0:
        return 0
    return 2 if failures >= total else 1
