"""Cost of streaming a causal video model, frame by frame.

Reports, in one run:

(a) time per frame of ``StreamingPredictor.step`` on a causal depth model against the per-frame prior on the same
    frames at batch 1, alternating frame by frame after the cache has filled (target <= 1.10x), with the step's
    key/value cache as it is and as it was (``--previous``: ``temporal_block.PreviousKVCache``, a third side of the
    alternation). Default: random weights in the Depth Anything V2 Small architecture (``make_sized_depth_prior``),
    random non-zero temporal blocks, horizon 10, frames at the model's default input size (short side 518;
    ``--size`` to change), ``--precision`` fp32 or bf16 (autocast, as the command line runs), ``--threads``; with
    one thread the times are the CPU time of the thread running the model, so other work on the machine does not
    count (``temporal_block.cpu_clock``);
(b) peak RSS (the ``VmHWM`` of a fresh process, ``peak_memory.py``) when streaming 100 and 1000 frames, and the
    ratio (target <= 1.05x), with the size of the key/value caches. Default: the tiny prior at 126x168 so that 1000
    frames run in minutes (``--mem-arch small`` for the real architecture).

Usage:

    python benchmarks/streaming.py [--size 518x924] [--pairs 12] [--horizon 10] [--precision fp32] [--threads N]
        [--previous] [--mem-arch tiny] [--mem-size 126x168]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bufferanytime.inference.streaming import StreamingPredictor
from bufferanytime.models import VideoDepthModel
from bufferanytime.models.temporal import TemporalBlock
from bufferanytime.testing import make_sized_depth_prior, make_tiny_prior

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import run_python  # noqa: E402
from temporal_block import cpu_clock  # noqa: E402


def prior_dir(arch: str, root: Path) -> Path:
    """A random-weight prior: ``tiny`` (the tests') or a Depth Anything V2 size (small, base, large)."""
    if arch == "tiny":
        return make_tiny_prior("depth", root / "tiny")
    return make_sized_depth_prior(root / arch, arch)


def causal_model(prior: Path, horizon: int) -> VideoDepthModel:
    """A causal video model whose temporal blocks are random (non-zero), so the temporal path really costs."""
    torch.manual_seed(0)
    model = VideoDepthModel.from_prior(prior, temporal={"causal": True, "horizon": horizon}).eval()
    for block in model.modules():
        if isinstance(block, TemporalBlock):
            torch.nn.init.normal_(block.proj_out.weight, std=0.02)
    return model


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def time_per_frame(prior: Path, size: tuple[int, int], horizon: int, pairs: int, precision: str = "fp32",
                   previous: bool = False) -> dict:
    """Median seconds per frame of the stream step (and of the step with the previous cache) and of the per-frame
    prior, alternated frame by frame; each ratio is of the medians."""
    model = causal_model(prior, horizon)
    streams = {"stream": StreamingPredictor(model, precision=precision)}
    if previous:
        from temporal_block import PreviousKVCache

        streams["previous"] = StreamingPredictor(model, precision=precision)
        streams["previous"].caches = [PreviousKVCache(horizon) for _ in streams["previous"].layers]
    per_frame = VideoDepthModel.from_prior(prior, per_frame=True).eval()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    frames = torch.rand(horizon + pairs, 3, *size)
    for frame in frames[:horizon]:  # fill the caches: from here on every step attends to H frames
        for stream in streams.values():
            stream.step(frame)
    times: dict[str, list[float]] = {"prior": [], **{name: [] for name in streams}}

    def run_prior(frame: torch.Tensor) -> None:
        with autocast:
            per_frame(frame[None, None])

    with torch.no_grad():
        run_prior(frames[0])  # warm-up
        for i, frame in enumerate(frames[horizon:]):
            order = [("prior", run_prior), *((name, stream.step) for name, stream in streams.items())]
            for name, run in order if i % 2 == 0 else order[::-1]:
                start = cpu_clock()
                run(frame)
                times[name].append(cpu_clock() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {**medians, **{f"{name}_ratio": medians[name] / medians["prior"] for name in streams}}


MEMORY_SNIPPET = """
import sys, torch
sys.path.insert(0, {bench!r})
from streaming import causal_model
from bufferanytime.inference.streaming import StreamingPredictor
torch.set_num_threads(1)
stream = StreamingPredictor(causal_model({prior!r}, {horizon}))
generator = torch.Generator().manual_seed(0)
for _ in range({frames}):
    stream.step(torch.rand(3, {h}, {w}, generator=generator))
print("CACHE_BYTES", stream.cache_bytes())
"""


def peak_rss(prior: Path, size: tuple[int, int], horizon: int, frames: int) -> tuple[int, int]:
    """Peak RSS (kB, its own ``VmHWM``) of a fresh process streaming ``frames`` frames, and its cache size in bytes."""
    code = MEMORY_SNIPPET.format(bench=str(Path(__file__).parent), prior=str(prior), horizon=horizon, frames=frames,
                                 h=size[0], w=size[1])
    done, rss = run_python(["-c", code], capture_output=True, text=True, check=True)
    out = done.stdout.split()
    return rss, int(out[out.index("CACHE_BYTES") + 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="small", help="prior architecture of the time run (tiny, small, base)")
    parser.add_argument("--size", default="518x924", help="frame size HxW of the time run (short side 518)")
    parser.add_argument("--pairs", type=int, default=12, help="frames timed with each of the two")
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="of the time run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the time run (0: torch's default)")
    parser.add_argument("--previous", action="store_true", help="also time the step with the previous cache")
    parser.add_argument("--mem-arch", default="tiny", help="prior architecture of the memory run")
    parser.add_argument("--mem-size", default="126x168", help="frame size HxW of the memory run")
    parser.add_argument("--skip-time", action="store_true", help="only the memory run")
    parser.add_argument("--skip-memory", action="store_true", help="only the time run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.skip_time:
            result = time_per_frame(prior_dir(args.arch, root), parse_size(args.size), args.horizon, args.pairs,
                                    args.precision, args.previous)
            previous = (f"; with the previous cache {1000 * result['previous']:.1f} ms/frame, ratio "
                        f"{result['previous_ratio']:.3f}") if args.previous else ""
            print(f"(a) {args.arch} at {args.size}, {args.precision}, {torch.get_num_threads()} thread(s), horizon "
                  f"{args.horizon}, median of {args.pairs}: stream {1000 * result['stream']:.1f} ms/frame, per-frame "
                  f"prior {1000 * result['prior']:.1f} ms/frame, ratio {result['stream_ratio']:.3f} (target <= 1.10)"
                  f"{previous}", flush=True)
        if args.skip_memory:
            return
        prior = prior_dir(args.mem_arch, root) if args.mem_arch != args.arch or args.skip_time else root / args.arch
        size = parse_size(args.mem_size)
        rss100, cache100 = peak_rss(prior, size, args.horizon, 100)
        rss1000, cache1000 = peak_rss(prior, size, args.horizon, 1000)
        print(f"(b) {args.mem_arch} at {args.mem_size}: peak RSS 100 frames {rss100 / 1024:.0f} MB, 1000 frames "
              f"{rss1000 / 1024:.0f} MB, ratio {rss1000 / rss100:.3f} (target <= 1.05); key/value caches "
              f"{cache100 / 2**20:.2f} MB after 100 frames, {cache1000 / 2**20:.2f} MB after 1000")


if __name__ == "__main__":
    main()
