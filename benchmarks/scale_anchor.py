"""What the metric scale anchor costs: model time of a metric video model with its anchor against without it.

The anchor (``VideoDepthModel.set_scale_anchor``) runs the frozen prior's own neck and head on every ``stride``-th
frame a window encodes, on the ViT features the video model computes anyway. Random weights in a Depth Anything V2
architecture (``--arch``) made metric (sigmoid times 80 m, as Depth Anything V2 Metric Outdoor), random temporal
blocks, sliding windows of ``--window`` frames; model seconds per frame (``Predictor.seconds``), the two models
alternated ``--repeats`` times in one process, the fastest of each counting, and each round's own ratio printed.

Usage:

    python benchmarks/scale_anchor.py [--arch small] [--size 518x924] [--frames 24] [--window 12] [--stride 2]
        [--precision bf16] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_video import random_video_model  # noqa: E402
from video_model_cost import model_ms, random_frames  # noqa: E402

from bufferanytime.inference import InferenceSettings  # noqa: E402
from bufferanytime.models import load_model  # noqa: E402
from bufferanytime.testing import make_sized_depth_prior  # noqa: E402

METRIC_MAX_DEPTH = 80  # metres: Depth Anything V2 Metric Outdoor's max_depth


def metric_prior(path: Path, arch: str) -> Path:
    """Random weights in the ``arch`` architecture with a metric head (the same weights; the config decides)."""
    make_sized_depth_prior(path, arch)
    config = json.loads((path / "config.json").read_text())
    config |= {"depth_estimation_type": "metric", "max_depth": METRIC_MAX_DEPTH}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="small")
    parser.add_argument("--size", default="518x924", help="HxW inference size")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--window", type=int, default=12)
    parser.add_argument("--stride", type=int, default=2, help="the anchor's stride (the embedded model's: 2)")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = map(int, args.size.split("x"))
    frames = random_frames(args.frames, height, width)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_video_model(metric_prior(Path(tmp) / "prior", args.arch), Path(tmp) / "model", args.window)
        models = {"plain": load_model("depth", model_dir), "anchored": load_model("depth", model_dir)}
        models["anchored"].set_scale_anchor(args.stride)
        settings = InferenceSettings(window=args.window, short_side=min(height, width), max_res=max(height, width),
                                     device="cpu", precision=args.precision)
        for model in models.values():  # warm-up: one-off kernel set-up is not the model's cost
            model_ms(model, frames[:4], settings)
        best, ratios = {name: float("inf") for name in models}, []
        for _ in range(args.repeats):
            times = {name: model_ms(model, frames, settings) for name, model in models.items()}
            best = {name: min(best[name], times[name]) for name in models}
            ratios.append(times["anchored"] / times["plain"])
    print(f"DA-V2-{args.arch.capitalize()} metric at {args.size}, {args.precision}, {args.threads} thread(s), window "
          f"{args.window}, stride {args.stride}: anchored {best['anchored']:.0f} ms/frame, without "
          f"{best['plain']:.0f} ms/frame, ratio {best['anchored'] / best['plain']:.3f}; per round "
          + ", ".join(f"{r:.3f}" for r in ratios), flush=True)


if __name__ == "__main__":
    main()
