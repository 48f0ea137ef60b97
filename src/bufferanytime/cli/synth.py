"""``bufferanytime synth``: render synthetic videos with exact depth, normals and optical flow.

Video ``i`` uses seed ``S + i`` and goes to ``OUT/seq_<seed>/`` (layout in
:mod:`bufferanytime.synthetic.dataset`), so disjoint seed ranges give disjoint training and held-out sets.
A folder that already holds the same video (same seed, size, frames and nuisances) is kept, so an
interrupted run can be resumed; one made with other settings is an error unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from tqdm import tqdm

from bufferanytime.cli.args import finite_float, non_negative_float, positive_float
from bufferanytime.errors import InputError
from bufferanytime.io.outputs import check_output_root
from bufferanytime.synthetic import render_video, write_video_dir
from bufferanytime.synthetic.dataset import DEFAULT_FPS
from bufferanytime.synthetic.scene import CAMERA_MOTIONS, OBJECT_MOTIONS

# Limits checked before any work. A video is rendered whole in memory: its buffers take about 39 bytes per pixel
# of each frame, and casting one frame about 550 bytes per pixel of that frame.
MAX_SIDE = 2048  # pixels, height and width: about 2.3 GB to render one frame
MAX_FRAMES = 10_000  # per video
MAX_VIDEO_PIXELS = 64 * 2**20  # frames x height x width of one video: about 2.6 GB of buffers
MAX_VIDEOS = 100_000
LIMITS_HELP = (f"Limits: --size at most {MAX_SIDE}x{MAX_SIDE}, --frames at most {MAX_FRAMES}, frames x height x "
               f"width at most {MAX_VIDEO_PIXELS} (a video is held in memory whole: about 2.6 GB), --videos at "
               f"most {MAX_VIDEOS}.")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="render synthetic videos with exact depth, normals and optical flow",
        description="Render procedural videos (rooms or open ground, textured boxes, spheres and cylinders, a "
        "moving camera and moving objects), deterministic from a seed, with ground-truth metric depth, "
        "camera-space normals, forward/backward optical flow and flow validity masks. Video i uses seed "
        f"SEED+i and is written to OUT/seq_<seed>/. {LIMITS_HELP}",
    )
    parser.add_argument("-o", "--output", required=True, help="output directory")
    parser.add_argument("--videos", type=int, default=1, help=f"number of videos, at most {MAX_VIDEOS} (default 1)")
    parser.add_argument("--frames", type=int, default=12,
                        help=f"frames per video, 2 to {MAX_FRAMES} (default 12; see the limits above)")
    parser.add_argument("--size", default="240x320",
                        help=f"frame size HxW, 8x8 to {MAX_SIDE}x{MAX_SIDE} (default 240x320)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first video (default 0)")
    parser.add_argument(
        "--flicker", type=finite_float, default=0.0, help="per-frame light intensity jitter, relative amplitude"
    )
    parser.add_argument("--exposure", type=finite_float, default=0.0, help="per-frame global gain jitter, relative")
    parser.add_argument("--noise", type=non_negative_float, default=0.0, help="std of Gaussian pixel noise on [0, 1]")
    parser.add_argument(
        "--textures", default=None, help="folder of photos to crop textures from (default: procedural only)"
    )
    parser.add_argument(
        "--camera", choices=CAMERA_MOTIONS, default="wander",
        help="camera motion: wander (a smooth random path, the default), dolly (straight ahead at constant speed "
        "with a fixed orientation, like a car's camera), rotate (turning on the spot, no translation)",
    )
    parser.add_argument(
        "--objects", choices=OBJECT_MOTIONS, default="wander",
        help="object motion: wander (1-2 objects wander, the default), depth (1-2 objects move to and fro along "
        "the line of sight), static (nothing moves but the camera)",
    )
    parser.add_argument("--fps", type=positive_float, default=DEFAULT_FPS, help="frame rate of rgb.mp4 (> 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing sequence folders")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    """``"240x320"`` -> ``(240, 320)`` (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise InputError(f"--size must look like 240x320 (height x width), got {text!r}")
    height, width = int(match.group(1)), int(match.group(2))
    if height < 8 or width < 8:
        raise InputError(f"--size must be at least 8x8, got {height}x{width}")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise InputError(f"--size must be at most {MAX_SIDE}x{MAX_SIDE}, got {height}x{width}")
    return height, width


def _check(args: argparse.Namespace) -> tuple[int, int]:
    size = parse_size(args.size)
    if not 1 <= args.videos <= MAX_VIDEOS:
        raise InputError(f"--videos must be 1 to {MAX_VIDEOS}, got {args.videos}")
    if not 2 <= args.frames <= MAX_FRAMES:
        raise InputError(f"--frames must be 2 to {MAX_FRAMES}, got {args.frames}")
    if args.frames * size[0] * size[1] > MAX_VIDEO_PIXELS:
        raise InputError(f"--frames {args.frames} at --size {size[0]}x{size[1]}: {args.frames * size[0] * size[1]} "
                         f"pixels, more than the {MAX_VIDEO_PIXELS} a video may hold (it is rendered in memory "
                         f"whole); use fewer frames or a smaller size")
    if args.seed < 0:
        raise InputError(f"--seed must be non-negative, got {args.seed}")
    for name in ("flicker", "exposure"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise InputError(f"--{name} must be in [0, 1), got {getattr(args, name)}")
    if args.textures is not None and not Path(args.textures).is_dir():
        raise InputError(f"--textures folder not found: {args.textures}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a directory")
    check_output_root(out)
    return size


def _same_video(folder: Path, seed: int, size: tuple[int, int], args: argparse.Namespace) -> bool | None:
    """Whether ``folder`` holds this video already (None when it holds no complete video)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    wanted = {"flicker": args.flicker, "exposure": args.exposure, "noise": args.noise}
    motion = meta.get("motion", {"camera": "wander", "objects": "wander"})  # folders made before the options
    return (
        meta.get("seed") == seed
        and (meta.get("height"), meta.get("width")) == size
        and meta.get("num_frames") == args.frames
        and meta.get("nuisances") == wanted
        and motion == {"camera": args.camera, "objects": args.objects}
    )


def _conflict(folder: Path, seed: int, size: tuple[int, int], args: argparse.Namespace) -> str | None:
    """Why an existing ``folder`` must not be replaced (None when it holds this very video)."""
    same = _same_video(folder, seed, size, args)
    if same:
        return None
    what = "is not a synthetic video" if same is None else "holds a video made with other settings"
    return f"{folder} {what}; use --overwrite to replace it"


def run(args: argparse.Namespace) -> int:
    """Render the videos; one that cannot be written is reported in one line and the others still are."""
    from bufferanytime.cli.main import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE

    size = _check(args)
    out = Path(args.output)
    written = kept = failed = 0
    seeds = range(args.seed, args.seed + args.videos)
    for seed in tqdm(seeds, desc="synth", unit="video", disable=args.quiet):
        folder = out / f"seq_{seed:06d}"
        if folder.exists() and not args.overwrite:
            problem = _conflict(folder, seed, size, args)
            kept += problem is None
            if problem is not None:
                failed += 1
                tqdm.write(f"error: {problem}", file=sys.stderr)
            continue
        video = render_video(
            seed,
            args.frames,
            size,
            flicker=args.flicker,
            exposure=args.exposure,
            noise=args.noise,
            texture_dir=args.textures,
            camera=args.camera,
            objects=args.objects,
        )
        write_video_dir(video, folder, fps=args.fps)
        written += 1
    kept_note = f", kept {kept} existing" if kept else ""
    failed_note = f", {failed} failed" if failed else ""
    if written or kept:
        print(f"wrote {written} video(s) to {out}{kept_note}{failed_note}")
    if failed:
        return EXIT_PARTIAL if written or kept else EXIT_USAGE
    return EXIT_OK
