"""What the video depth model costs against its per-frame prior: model time in one process, peak memory in the CLI.

(a) Model seconds per frame (``Predictor.seconds``: the model's arithmetic, no decoding or writing) of the video
    model (sliding windows, frozen ViT features of the overlap reused) against the per-frame prior (what
    ``--per-frame`` runs: transformers' own neck and head, 8 frames per batch), on random weights in the Depth
    Anything V2 architectures (``--archs``) at ``--sizes``. The modes alternate ``--repeats`` times in one run and
    the fastest of each counts, so a load that comes and goes on a shared machine does not decide the ratio.
    Precisions: fp32 for both (``--precisions``), and bf16 for both. Target: <= 1.10 (Small), <= 1.05 (Base).
    Each round's own ratio is printed too: the machine's speed can drift between rounds, not within a pair.
(b) Peak RSS of ``bufferanytime depth`` (a fresh process each, its own ``VmHWM``, predictions file included) of the
    video model against ``--per-frame``, with the same settings (``--mem-arch`` at ``--mem-size``). Target <= 1.3.
    100 against 1000 frames is ``benchmarks/long_video.py`` (a).

Usage:

    python benchmarks/video_model_cost.py [--archs small,base] [--sizes 266x476] [--frames 60] [--window 32]
        [--overlap 4] [--repeats 2] [--mem-arch small] [--mem-size 266x476] [--mem-frames 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_video import make_long_video, random_video_model, run_cli  # noqa: E402

from bufferanytime.inference import InferenceSettings, predict_frames  # noqa: E402
from bufferanytime.inference.pipeline import Predictor  # noqa: E402
from bufferanytime.models import load_model  # noqa: E402
from bufferanytime.testing import make_sized_depth_prior  # noqa: E402


def random_frames(frames: int, height: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(frames)]


def model_ms(model, frames: list[np.ndarray], settings: InferenceSettings) -> float:
    """Model milliseconds per frame of one run of ``frames`` through ``model``."""
    predictor = Predictor(model, torch.device("cpu"), settings.precision)
    for _ in predict_frames(model, iter(frames), settings, predictor):
        pass
    return 1000 * predictor.seconds / len(frames)


def time_modes(model_dir: str, frames: list[np.ndarray], size: tuple[int, int], args, precision: str) -> dict:
    """Fastest model ms/frame of the video model and of its per-frame prior, alternating ``args.repeats`` times."""
    models = {"video": load_model("depth", model_dir), "prior": load_model("depth", model_dir, per_frame=True)}
    common = {"short_side": min(size), "max_res": max(size), "device": "cpu", "precision": precision}
    settings = {"video": InferenceSettings(window=args.window, overlap=args.overlap, **common),
                "prior": InferenceSettings(**common)}
    for mode in models:  # warm-up: one-off kernel set-up is not the model's cost
        model_ms(models[mode], frames[:4], settings[mode])
    best = {mode: float("inf") for mode in models}
    ratios = []  # each round's video / prior: a drift of the machine's speed between rounds cancels in it
    for _ in range(args.repeats):
        times = {mode: model_ms(models[mode], frames, settings[mode]) for mode in models}
        best = {mode: min(best[mode], times[mode]) for mode in models}
        ratios.append(times["video"] / times["prior"])
    return {**best, "round_ratios": ratios}


def memory(tmp: Path, args) -> None:
    height, width = map(int, args.mem_size.split("x"))
    prior = make_sized_depth_prior(tmp / "mem_prior", args.mem_arch)
    model = random_video_model(prior, tmp / "mem_model", args.window)
    video = tmp / "mem.mp4"
    make_long_video(video, args.mem_frames, height, width)
    common = ["depth", str(video), "--model", model, "--short-side", str(min(height, width)), "--max-res",
              str(max(height, width)), "--device", "cpu", "--precision", args.mem_precision, "-q"]
    rss = {}
    # --per-frame runs the prior in its own batches of 8 (a --window would set that batch size)
    for mode, extra in (("video", ["--window", str(args.window), "--overlap", str(args.overlap)]),
                        ("prior", ["--per-frame"])):
        rss[mode], _ = run_cli([*common, *extra, "-o", str(tmp / f"mem_{mode}")])
    print(f"(b) peak RSS in the CLI, DA-V2-{args.mem_arch.capitalize()} at {args.mem_size}, {args.mem_frames} frames, "
          f"window {args.window}, {args.mem_precision}: video {rss['video'] / 1024:.0f} MB, per-frame prior "
          f"{rss['prior'] / 1024:.0f} MB, ratio {rss['video'] / rss['prior']:.3f} (target <= 1.3)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="small,base")
    parser.add_argument("--sizes", default="266x476", help="comma-separated HxW inference sizes")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--frames", type=int, default=60, help="60 = two windows of 32 overlapping by 4")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mem-arch", default="small", help="'' skips (b)")
    parser.add_argument("--mem-size", default="266x476")
    parser.add_argument("--mem-frames", type=int, default=60)
    parser.add_argument("--mem-precision", default="fp32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.mem_arch:
            memory(tmp, args)
        for arch in filter(None, args.archs.split(",")):
            model_dir = random_video_model(make_sized_depth_prior(tmp / f"{arch}_prior", arch), tmp / arch, args.window)
            for text in args.sizes.split(","):
                size = tuple(map(int, text.split("x")))
                frames = random_frames(args.frames, *size)
                for precision in args.precisions.split(","):
                    best = time_modes(model_dir, frames, size, args, precision)
                    print(f"(a) DA-V2-{arch.capitalize()} at {text}, {precision}, window {args.window} overlap "
                          f"{args.overlap}: video {best['video']:.0f} ms/frame, per-frame prior {best['prior']:.0f} "
                          f"ms/frame, ratio {best['video'] / best['prior']:.3f}; per round "
                          + ", ".join(f"{r:.3f}" for r in best["round_ratios"]), flush=True)


if __name__ == "__main__":
    main()
