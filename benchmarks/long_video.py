"""Long videos in bounded memory, and the cost of the video model.

Reports, in one run, at low resolution:

(a) peak RSS of ``bufferanytime depth`` (its own ``VmHWM``, ``peak_memory.py``) on the first 100 and on all 1000
    frames of one video, and their ratio
    (target <= 1.15);
(b) model seconds per frame of the video model against ``--per-frame`` on the same frames, as a ratio
    (target <= 1.10; the paper: 33 s against 31 s);
(c) the seam error: OPW-style error (ground-truth flow, valid pixels, prediction normalised once per video) on
    frame pairs that straddle window boundaries, against pairs inside windows (target <= 1.2).

Default model: a tiny random Depth Anything prior with randomly initialised (non-zero) temporal blocks, so the
temporal path really runs. ``--model`` takes any video model (e.g. the embedded one).

(b) is also measured on random weights in the architectures of the published Depth Anything V2 sizes (``--archs``,
default small and base, at ``--arch-size`` on ``--arch-frames`` frames; ``--archs ''`` skips it): on the tiny
prior the ViT costs almost nothing, so the temporal blocks weigh far more than they do next to a real backbone.
Usage:

    python benchmarks/long_video.py [--model M] [--frames 1000] [--size 96x128] [--window 32] [--overlap 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from bufferanytime.flow import warp
from bufferanytime.inference import InferenceSettings, predict_frames
from bufferanytime.inference.windows import default_overlap
from bufferanytime.io import VideoWriter
from bufferanytime.models import VideoDepthModel, load_model
from bufferanytime.synthetic import render_video
from bufferanytime.testing import make_sized_depth_prior, make_tiny_prior

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import run_python  # noqa: E402

CLI = "import sys\nfrom bufferanytime.cli.main import entry\nsys.exit(entry(sys.argv[1:]))\n"  # the program


def make_long_video(path: Path, frames: int, height: int, width: int, seed: int = 0) -> None:
    """A smooth texture drifting across the frame with per-frame brightness flicker, written frame by frame."""
    rng = np.random.default_rng(seed)
    texture = cv2.resize(
        rng.random((height // 6, width // 3, 3)).astype(np.float32),
        (width * 2, height * 2),
        interpolation=cv2.INTER_CUBIC,
    )
    with VideoWriter(path, fps=24) as writer:
        for t in range(frames):
            x = int(round(width / 2 + width / 2 * np.sin(t / 40)))
            y = int(round(height / 2 + height / 2 * np.cos(t / 55)))
            frame = texture[y : y + height, x : x + width] * (1 + 0.2 * rng.uniform(-1, 1))
            writer.write((np.clip(frame, 0, 1) * 255).astype(np.uint8))


def run_cli(args: list[str]) -> tuple[int, dict]:
    """Run ``bufferanytime`` in a fresh process; return its own peak RSS (kB, ``VmHWM``) and the depth.meta.json of
    the output."""
    _, rss = run_python(["-c", CLI, *args], capture_output=True, text=True, check=True)
    output = Path(args[args.index("-o") + 1])
    meta = json.loads(next(output.glob("*/depth.meta.json")).read_text())
    return rss, meta


def random_video_model(prior: Path, out: Path, window: int) -> str:
    """A video model around ``prior`` whose temporal blocks are random (non-zero), so the temporal path costs."""
    torch.manual_seed(0)
    model = VideoDepthModel.from_prior(prior)
    for block in model.temporal:
        torch.nn.init.normal_(block.proj_out.weight, std=0.02)
    model.clip_len = window
    model.save_pretrained(out, copy_prior=True)
    return str(out)


def model_time(common: list[str], frames: int, out: Path, repeats: int) -> tuple[float, float]:
    """Model seconds per frame of the video model and of ``--per-frame`` on the first ``frames`` frames.

    The two runs alternate ``repeats`` times and the fastest of each counts, so a load that comes and goes on a
    shared machine does not decide the ratio.
    """
    video, frame = [], []
    for i in range(repeats):
        _, meta = run_cli([*common, "--max-frames", str(frames), "-o", str(out / f"video{i}")])
        video.append(meta["timings"]["model_s_per_frame"])
        _, meta = run_cli([*common, "--max-frames", str(frames), "--per-frame", "-o", str(out / f"frame{i}")])
        frame.append(meta["timings"]["model_s_per_frame"])
    return min(video), min(frame)


def cli_args(video: Path, model: str, size: tuple[int, int], window: int, overlap: int) -> list[str]:
    return [
        "depth",
        str(video),
        "--model",
        model,
        "--max-res",
        str(max(size)),
        "--window",
        str(window),
        "--overlap",
        str(overlap),
        "--device",
        "cpu",
        "-q",
    ]


def seam_error(model_path: str, size: tuple[int, int], frames: int, window: int, overlap: int) -> dict:
    video = render_video(7, frames, size, flicker=0.3)
    model = load_model("depth", model_path)
    settings = InferenceSettings(max_res=max(size), window=window, overlap=overlap, device="cpu")
    pred = np.stack(list(predict_frames(model, iter(video.rgb), settings)))
    t = np.median(pred)
    pred = (pred - t) / max(np.abs(pred - t).mean(), 1e-8)
    step = window - overlap
    starts = list(range(step, frames, step))  # frame indices where a new window's blend region begins
    seam_pairs = {s - 1 for s in starts} | {s + overlap - 1 for s in starts if s + overlap < frames}
    errors = {"seam": [], "interior": []}
    for k in range(frames - 1):
        flow = torch.from_numpy(video.flow_fwd[k]).permute(2, 0, 1)[None].float()
        nxt = torch.from_numpy(pred[k + 1])[None, None].float()
        warped = warp(nxt, flow)[0, 0].numpy()
        valid = video.flow_valid_fwd[k]
        errors["seam" if k in seam_pairs else "interior"].append(float(np.abs(warped - pred[k])[valid].mean()))
    seam, interior = float(np.mean(errors["seam"])), float(np.mean(errors["interior"]))
    return {
        "seam_pairs": len(errors["seam"]),
        "interior_pairs": len(errors["interior"]),
        "seam_opw": seam,
        "interior_opw": interior,
        "ratio": seam / interior,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="video model (default: tiny random prior + random temporal)")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", default="96x128")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument("--timing-frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2, help="alternating timing runs per mode for (b)")
    parser.add_argument("--archs", default="small,base", help="DA-V2 architectures for (b) ('' skips them)")
    parser.add_argument("--arch-size", default="266x350", help="frame size for (b) on those architectures")
    parser.add_argument("--arch-frames", type=int, default=64, help="frames for that measurement")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    overlap = default_overlap(args.window) if args.overlap is None else args.overlap
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_path = args.model
        if model_path is None:
            model_path = random_video_model(make_tiny_prior("depth", tmp / "prior"), tmp / "video", args.window)
        video = tmp / "long.mp4"
        make_long_video(video, args.frames, height, width)
        common = cli_args(video, model_path, (height, width), args.window, overlap)

        rss_100, _ = run_cli([*common, "--max-frames", "100", "-o", str(tmp / "out100")])
        rss_all, meta_all = run_cli([*common, "-o", str(tmp / "outall")])
        print(
            f"(a) peak RSS: 100 frames {rss_100 / 1024:.0f} MB, {meta_all['frames']} frames "
            f"{rss_all / 1024:.0f} MB, ratio {rss_all / rss_100:.3f} (target <= 1.15)"
        )

        video_s, frame_s = model_time(common, args.timing_frames, tmp / "time", args.repeats)
        print(
            f"(b) model time per frame: video {video_s * 1000:.1f} ms, per-frame prior {frame_s * 1000:.1f} ms, "
            f"ratio {video_s / frame_s:.3f} (target <= 1.10; window {args.window}, overlap {overlap})"
        )
        arch_size = tuple(map(int, args.arch_size.split("x")))
        archs = [arch for arch in args.archs.split(",") if arch]
        arch_video = tmp / "arch.mp4"
        if archs:
            make_long_video(arch_video, args.arch_frames, *arch_size)
        for arch in archs:
            prior = make_sized_depth_prior(tmp / f"{arch}_prior", arch)
            model = random_video_model(prior, tmp / arch, args.window)
            arch_args = cli_args(arch_video, model, arch_size, args.window, overlap)
            video_s, frame_s = model_time(arch_args, args.arch_frames, tmp / f"{arch}_time", args.repeats)
            print(
                f"(b) on the DA-V2-{arch.capitalize()} architecture at {args.arch_size}, {args.arch_frames} frames: "
                f"video {video_s * 1000:.0f} ms, per-frame prior {frame_s * 1000:.0f} ms, ratio {video_s / frame_s:.3f}"
            )

        seams = seam_error(model_path, (height, width), 4 * args.window, args.window, overlap)
        print(
            f"(c) seam error: {seams['seam_opw']:.4f} on {seams['seam_pairs']} pairs at window boundaries, "
            f"{seams['interior_opw']:.4f} on {seams['interior_pairs']} pairs inside windows, ratio "
            f"{seams['ratio']:.3f} (target <= 1.2)"
        )


if __name__ == "__main__":
    main()
