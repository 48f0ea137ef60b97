"""Our video depth model against Video Depth Anything's own code and model, default against default.

Video Depth Anything (VDA) is imported at run time from ``../shared/peers/video-depth-anything`` (Apache-2.0; never
copied into the project), its Small architecture (``vits``, features 64) with random weights, as ours: random weights
in the Depth Anything V2 Small architecture with random (non-zero) temporal blocks. Both run on the same decoded
frames of a real clip, each at its defaults: VDA's ``infer_video_depth`` (windows of 32 frames, 10 shared, bf16
autocast on CPU, ``fp32=False``) and our ``predict_frames`` (the model's window of 110 frames, ``--precision auto``).
Without xformers (CPU), VDA's DINOv2 and motion-module attention run its plain-attention fallback.
VDA's code needs ``einops`` and ``easydict``: ``pip install -e '.[bench]'``.

(a) time per output frame, the two alternated ``--rounds`` times in this one process, and the median of the rounds'
    ratios;
(b) ``--memory``: the peak memory of a fresh process running each once (its own ``VmHWM``, ``peak_memory.py``);
(c) ``--stream``: per frame, our causal stream (``StreamingPredictor``, horizon 10, frames resized to the same size)
    against VDA's streaming model (``video_depth_stream.infer_video_depth_one``, as its ``run_streaming.py``),
    alternated frame by frame after both have warmed up.

Usage:

    python benchmarks/vs_vda.py [--video V] [--frames 66] [--size 518] [--rounds 2] [--threads N] [--memory]
        [--stream [--stream-frames 12]]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))
from long_video import random_video_model  # noqa: E402
from peak_memory import run_python  # noqa: E402
from streaming import causal_model  # noqa: E402

from bufferanytime.inference import InferenceSettings, predict_frames  # noqa: E402
from bufferanytime.io.video import open_video  # noqa: E402
from bufferanytime.models import load_model  # noqa: E402
from bufferanytime.testing import make_sized_depth_prior  # noqa: E402

PEER = BENCHMARKS.parents[1] / "shared" / "peers" / "video-depth-anything"
DEFAULT_VIDEO = BENCHMARKS.parents[1] / "shared" / "data" / "videos" / "elephant.mp4"
VDA_SMALL = {"encoder": "vits", "features": 64, "out_channels": [48, 96, 192, 384]}


def import_vda() -> tuple[type, type]:
    """VDA's offline and streaming model classes, from the peer checkout. Its preprocessing imports
    ``torchvision.transforms.Compose``; where torchvision does not load beside this torch, a stand-in of that one
    class (apply each transform in turn) is provided."""
    try:
        from torchvision.transforms import Compose  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure to load the wheel
        transforms = types.ModuleType("torchvision.transforms")

        class Compose:
            def __init__(self, steps):
                self.steps = steps

            def __call__(self, sample):
                for step in self.steps:
                    sample = step(sample)
                return sample

        transforms.Compose = Compose
        package = types.ModuleType("torchvision")
        package.transforms = transforms
        sys.modules.update({"torchvision": package, "torchvision.transforms": transforms})
    sys.path.insert(0, str(PEER))
    from video_depth_anything.video_depth import VideoDepthAnything
    from video_depth_anything.video_depth_stream import VideoDepthAnything as VideoDepthAnythingStream

    return VideoDepthAnything, VideoDepthAnythingStream


def vda_model(cls: type) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls(**VDA_SMALL).eval()


def run_vda(model, frames: np.ndarray, size: int) -> int:
    depths, _ = model.infer_video_depth(frames, -1, input_size=size, device="cpu", fp32=False)
    return len(depths)


def run_ours(model, frames: np.ndarray, size: int) -> int:
    settings = InferenceSettings(short_side=size, device="cpu", precision="auto")
    return sum(1 for _ in predict_frames(model, iter(frames), settings))


def offline_times(ours, vda, frames: np.ndarray, size: int, rounds: int) -> None:
    """Print each round's seconds per output frame and the median ratio ours / VDA."""
    ratios = []
    run_ours(ours, frames[:4], size)  # warm-up: one-off kernel set-up
    run_vda(vda, frames[:4], size)
    for i in range(rounds):
        seconds = {}
        for name, run, model in (("ours", run_ours, ours), ("vda", run_vda, vda))[:: 1 if i % 2 == 0 else -1]:
            start = time.perf_counter()
            count = run(model, frames, size)
            seconds[name] = (time.perf_counter() - start) / count
        ratios.append(seconds["ours"] / seconds["vda"])
        print(f"round {i + 1}: ours {1000 * seconds['ours']:.0f} ms/frame, VDA {1000 * seconds['vda']:.0f} ms/frame, "
              f"ours / VDA {ratios[-1]:.3f}", flush=True)
    print(f"(a) time per output frame at {size}, {len(frames)} frames, {torch.get_num_threads()} thread(s): ours / VDA "
          f"median {statistics.median(ratios):.3f}x (range {min(ratios):.3f}-{max(ratios):.3f})", flush=True)


MEMORY_SNIPPET = """
import json, sys, numpy as np, torch
sys.path.insert(0, {bench!r})
import vs_vda
torch.set_num_threads({threads})
frames = np.load({frames!r})
if {side!r} == "vda":
    count = vs_vda.run_vda(vs_vda.vda_model(vs_vda.import_vda()[0]), frames, {size})
else:
    count = vs_vda.run_ours(vs_vda.load_model("depth", {model!r}), frames, {size})
print(json.dumps({{"frames": count}}))
"""


def peak_memory(model_dir: str, frames: np.ndarray, size: int, threads: int, tmp: Path) -> None:
    """Print the peak memory of a fresh process running each side once on ``frames``."""
    np.save(tmp / "frames.npy", frames)
    peaks = {}
    for side in ("ours", "vda"):
        code = MEMORY_SNIPPET.format(bench=str(BENCHMARKS), threads=threads or torch.get_num_threads(),
                                     frames=str(tmp / "frames.npy"), side=side, size=size, model=model_dir)
        done, peaks[side] = run_python(["-c", code], capture_output=True, text=True, check=True)
        json.loads(done.stdout.strip().splitlines()[-1])
    print(f"(b) peak memory at {size}, {len(frames)} frames: ours {peaks['ours'] / 1024:.0f} MB, VDA "
          f"{peaks['vda'] / 1024:.0f} MB, ours / VDA {peaks['ours'] / peaks['vda']:.3f}x", flush=True)


def stream_times(prior: Path, vda_cls: type, frames: np.ndarray, size: int, count: int) -> None:
    """Print the median time per frame of our causal stream and of VDA's streaming model, alternated."""
    from bufferanytime.inference.streaming import StreamingPredictor

    ours, vda = StreamingPredictor(causal_model(prior, 10), precision="bf16"), vda_model(vda_cls)
    height, width = frames.shape[1:3]
    shape = (size, round(size * width / height / 14) * 14) if width >= height else (
        round(size * height / width / 14) * 14, size)

    def ours_step(frame: np.ndarray) -> None:
        tensor = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
        ours.step(F.interpolate(tensor, shape, mode="bicubic", align_corners=False)[0].clamp(0, 1))

    def vda_step(frame: np.ndarray) -> None:
        vda.infer_video_depth_one(frame, input_size=size, device="cpu", fp32=False)

    times: dict[str, list[float]] = {"ours": [], "vda": []}
    for i, frame in enumerate(frames[: 10 + count]):
        for name, step in ((("ours", ours_step), ("vda", vda_step))[:: 1 if i % 2 == 0 else -1]):
            start = time.perf_counter()
            step(frame)
            if i >= 10:  # both warmed up: our cache full, VDA's window of cached states built
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"(c) stream at {size} ({shape[0]}x{shape[1]}), median of {count} frames: ours {1000 * medians['ours']:.0f} "
          f"ms/frame, VDA's streaming {1000 * medians['vda']:.0f} ms/frame, ours / VDA "
          f"{medians['ours'] / medians['vda']:.3f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=66, help="66 = three VDA windows (32 frames, 22 new each)")
    parser.add_argument("--size", type=int, default=518, help="inference short side of both")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (a); 0 skips it")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--memory", action="store_true", help="also (b), the peak memory of each in a fresh process")
    parser.add_argument("--stream", action="store_true", help="only (c), the streaming comparison")
    parser.add_argument("--stream-frames", type=int, default=12)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = np.stack(list(open_video(args.video, max_frames=max(args.frames, 10 + args.stream_frames))))
    vda_cls, vda_stream_cls = import_vda()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prior = make_sized_depth_prior(tmp / "prior", "small")
        if args.stream:
            return stream_times(prior, vda_stream_cls, frames, args.size, args.stream_frames)
        model_dir = random_video_model(prior, tmp / "ours", 110)
        frames = frames[: args.frames]
        if args.rounds:
            offline_times(load_model("depth", model_dir), vda_model(vda_cls), frames, args.size, args.rounds)
        if args.memory:
            peak_memory(model_dir, frames, args.size, args.threads, tmp)


if __name__ == "__main__":
    main()
