"""``bufferanytime demo``: run the method end to end on a real clip, with no set-up and no download.

It uses the embedded default model when the package has one; otherwise it builds a tiny RANDOM-weight prior on
the fly (so the outputs show the plumbing, not meaningful depth) and says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bufferanytime.errors import InputError
from bufferanytime.inference.pipeline import InferenceSettings, run_video
from bufferanytime.io.outputs import ensure_writable_dir
from bufferanytime.io.video import open_video

DEMO_CLIP = Path("data/videos/davis_rollercoaster.mp4")  # inside the shared sample-data folder
DEMO_FRAMES = 24
DEMO_MAX_RES = 256


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the video depth model on a sample clip (no set-up needed)",
                       description=__doc__)
    p.add_argument("-o", "--output", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    p.add_argument("--input", type=Path, default=None,
                   help=f"clip to process (default: ../shared/{DEMO_CLIP} next to the checkout)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _default_input() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / DEMO_CLIP
        if candidate.is_file():
            return candidate
    return None


def run(args: argparse.Namespace) -> int:
    from bufferanytime.models import DEFAULT_MODEL, load_model
    from bufferanytime.testing import make_tiny_prior

    out = ensure_writable_dir(args.output)
    clip = args.input or _default_input()
    if clip is None:
        raise InputError(f"no demo clip found (looked for ../shared/{DEMO_CLIP}); pass one with --input")
    if "depth" in DEFAULT_MODEL:
        model_name = DEFAULT_MODEL["depth"]
        print(f"Using the embedded depth model '{model_name}'.")
    else:
        model_name = str(make_tiny_prior("depth", out / "tiny-random-prior"))
        print("NOTE: no embedded depth model is shipped yet, so this demo runs on a tiny RANDOM-weight Depth "
              f"Anything prior built on the fly ({model_name}). The outputs show the pipeline, not real depth.")
    settings = InferenceSettings(max_res=DEMO_MAX_RES)
    for per_frame, name in ((False, "video_model"), (True, "per_frame_prior")):
        model = load_model("depth", model_name, per_frame=per_frame)
        source = open_video(clip, max_frames=DEMO_FRAMES)
        meta = run_video(model, source, out / name, settings, model_name=model_name, progress=not args.quiet)
        print(f"{name}: {meta['frames']} frames in {meta['timings']['total_s']:.1f} s -> {out / name}")
    return 0
