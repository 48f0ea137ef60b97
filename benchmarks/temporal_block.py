"""Speed of the temporal block run on chunks of pixel sequences against one big batch (same output).

The block treats every pixel as an independent sequence of frames, so it can run on chunks of
``bufferanytime.models.temporal.CHUNK_ROWS`` (pixel, frame) rows; this measures what that buys, per shape, in one
run, with one torch thread. Shapes are the finest temporal block of the video depth model: the tiny prior at
96x128 (32 channels at 28x36) and the Depth Anything V2 Small / Base architectures at 266x350 (64 / 128 channels
at 76x100), with 32-frame and 8-frame windows.

``--stream``: one streamed frame through the finest causal block of the Small architecture at its default input
size (64 channels at 148x264, horizon 10, cache full), with the key/value cache as it is (pixels last, the
attention as multiply-adds vectorised over pixels, the rotary tables once per frame) against the cache as it was
(pixels first, the attention as batched matrix-vector products, ``one_query_attention``; kept below), alternated,
in fp32 and under bf16 autocast, with ``--threads`` torch threads.

``--share``: the share of the temporal blocks in the video model's time (random weights in the Small architecture,
frames of ``--size``, one window of ``--window`` frames, ``--precision``), timed by hooks around each block, with
the blocks' inference path as it is (``current``: the attention channels first, vectorised over pixels,
``channels_first_attention``) and as it was before (``previous``: the library's attention kernel on pixel-major
sequences, the path causal blocks still take), alternated ``--repeats`` times in this one process, with
``--threads`` torch threads. With one thread the times are the CPU time of the thread running the model, so other
work on the machine does not count.

``--attention``: the finest bidirectional block of the Small architecture at its default input size (64 channels
at 148x264; timed on a quarter of its rows, reported per frame of the whole map), one thread, at windows of
``--windows`` frames, in fp32 and under bf16 autocast, with the attention as it is (``current``: multiply-adds
vectorised over pixels below ``LIBRARY_ATTENTION_FRAMES``, the library kernel on a few pixels at a time from
there on) against the multiply-adds at every window (``multiply-adds``), alternated ``--repeats`` times.

Usage:

    python benchmarks/temporal_block.py [--repeats 5] [--stream | --share [--size 518x924] [--window 12]
        | --attention [--windows 12,32,64,110]]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import bufferanytime.models.temporal as temporal
from bufferanytime.models.temporal import KVCache, TemporalBlock, TemporalConfig, attention_layers, streaming

SHAPES = [  # (label, channels, height, width, frames)
    ("tiny prior, 96x128 input", 32, 28, 36, 32),
    ("DA-V2-Small, 266x350 input", 64, 76, 100, 32),
    ("DA-V2-Small, 266x350 input", 64, 76, 100, 8),
    ("DA-V2-Base, 266x350 input", 128, 76, 100, 8),
]


def median_seconds(block: TemporalBlock, x: torch.Tensor, frames: int, repeats: int) -> float:
    block(x, frames)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(x, frames)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def one_query_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The previous cache's attention of one query frame ``q (s, heads, 1, d)`` over ``keys``/``values (s, heads, n,
    d)``: two batched matrix-vector products."""
    weights = torch.matmul(keys, q.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5).softmax(-2)  # (s, heads, n, 1)
    return torch.matmul(weights.transpose(-1, -2), values)


class PreviousKVCache(KVCache):
    """The key/value cache before its rework (the figures' "before"): pixels first, queries and keys projected
    unrotated and then rotated by tables computed for every chunk, the attention as batched matrix-vector products
    (``one_query_attention``). Also used by benchmarks/streaming.py."""

    def qkv_weight(self, weight: torch.Tensor, heads: int, max_period: float) -> torch.Tensor:
        self.max_period = max_period
        return weight

    def attend_frame(self, h: torch.Tensor, weight: torch.Tensor, heads: int, rows: slice) -> torch.Tensor:
        """The projection as one linear layer, pixels first, then :meth:`attend`; ``(dim, s)`` like the current."""
        seqs, dim = h.shape[0], weight.shape[0] // 3
        q, k, v = torch.nn.functional.linear(h, weight).reshape(seqs, 1, 3, heads, -1).permute(2, 0, 3, 1, 4)
        return self.attend(q, k, v, rows).transpose(1, 2).reshape(seqs, dim).T

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: slice) -> torch.Tensor:
        positions = torch.arange(self.position, self.position + 1, device=q.device)
        cos, sin = temporal.rotary_tables(positions, q.shape[-1], self.max_period, q.dtype)
        q, k = temporal.apply_rotary(q, cos, sin), temporal.apply_rotary(k, cos, sin)
        shape = (k.shape[0], k.shape[1], self.horizon, k.shape[3])
        if rows.start not in self.buffers:
            self.buffers[rows.start] = (k.new_zeros(shape), v.new_zeros(shape))
        keys, values = self.buffers[rows.start]
        slot = self.position % self.horizon
        keys[:, :, slot] = k[:, :, 0]
        values[:, :, slot] = v[:, :, 0]
        filled = min(self.position + 1, self.horizon)
        return one_query_attention(q, keys[:, :, :filled], values[:, :, :filled])


def compare_stream_caches(repeats: int, horizon: int = 10) -> None:
    """Print the median time of one streamed frame through the finest Small block with the previous and the current
    cache, in fp32 and bf16, their ratio and the largest difference of their outputs."""
    torch.manual_seed(0)
    block = TemporalBlock(64, TemporalConfig(causal=True, horizon=horizon)).eval()
    torch.nn.init.normal_(block.proj_out.weight, std=0.02)
    frames = torch.randn(horizon + repeats, 64, 148, 264).contiguous(memory_format=torch.channels_last)
    layers = attention_layers(block)
    for precision in ("fp32", "bf16"):
        kinds = {"previous": PreviousKVCache, "current": KVCache}
        caches = {name: [kind(horizon) for _ in layers] for name, kind in kinds.items()}  # each streams the frames
        times: dict[str, list[float]] = {name: [] for name in kinds}
        outputs = {}
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for position, frame in enumerate(frames.split(1)):
                for name in list(kinds)[:: 1 if position % 2 else -1]:  # alternate which runs first
                    for cache in caches[name]:
                        cache.position = position
                    with streaming(layers, caches[name]):
                        start = time.perf_counter()
                        outputs[name] = block(frame, 1)
                    if position >= horizon:
                        times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(values) for name, values in times.items()}
        scale = float(outputs["previous"].max() - outputs["previous"].min())
        diff = float((outputs["current"].float() - outputs["previous"].float()).abs().max()) / scale
        print(f"streamed frame, DA-V2-Small finest block (64 ch at 148x264), horizon {horizon}, {precision}, "
              f"{torch.get_num_threads()} thread(s), median of {repeats}: "
              + ", ".join(f"{name} cache {1000 * t:.0f} ms" for name, t in medians.items())
              + f", current / previous {medians['current'] / medians['previous']:.2f}, max difference "
              f"{diff:.1e} of the range", flush=True)


def cpu_clock():
    """The clock of the --share figures: with one torch thread, the CPU time of this thread (which runs the model),
    so that other work on the machine does not count; else the wall clock."""
    return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()


def block_timer(model: torch.nn.Module) -> list[float]:
    """Hooks on every temporal block of ``model`` adding each call's seconds to the returned one-item list."""
    total, started = [0.0], []
    for block in model.modules():
        if isinstance(block, TemporalBlock):
            block.register_forward_pre_hook(lambda *_: started.append(cpu_clock()))
            block.register_forward_hook(lambda *_: total.__setitem__(0, total[0] + cpu_clock() - started.pop()))
    return total


def temporal_share(args) -> None:
    """Print, per round and as medians, the temporal blocks' share of the model time, previous against current."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from long_video import random_video_model

    from bufferanytime.inference import InferenceSettings, predict_frames
    from bufferanytime.inference.pipeline import Predictor
    from bufferanytime.models import load_model
    from bufferanytime.testing import make_sized_depth_prior

    height, width = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_video_model(make_sized_depth_prior(Path(tmp) / "prior", "small"), Path(tmp) / "m",
                                       args.window)
        model = load_model("depth", model_dir)
    frames = [np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8)
              for i in range(args.window)]
    settings = InferenceSettings(window=args.window, short_side=min(height, width), max_res=max(height, width),
                                 device="cpu", precision=args.precision)
    class TimedPredictor(Predictor):
        seconds_cpu = 0.0

        def __call__(self, *args, **kwargs):
            start = cpu_clock()
            try:
                return super().__call__(*args, **kwargs)
            finally:
                self.seconds_cpu += cpu_clock() - start

    predictor, blocks = TimedPredictor(model, torch.device("cpu"), args.precision), block_timer(model)
    channels_first = TemporalBlock._channels_first
    paths = {"previous": lambda self: False, "current": channels_first}  # previous: SDPA on pixel-major sequences
    shares: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(args.repeats + 1):  # round 0 is a warm-up
        for name in list(paths)[:: 1 if round_ % 2 else -1]:
            TemporalBlock._channels_first = paths[name]
            before, blocks[0] = predictor.seconds_cpu, 0.0
            for _ in predict_frames(model, iter(frames), settings, predictor):
                pass
            seconds = predictor.seconds_cpu - before
            if round_:
                shares[name].append(blocks[0] / seconds)
                print(f"round {round_} {name}: model {1000 * seconds / len(frames):.0f} ms/frame, temporal blocks "
                      f"{1000 * blocks[0] / len(frames):.0f} ms/frame, share {100 * shares[name][-1]:.1f} %",
                      flush=True)
    TemporalBlock._channels_first = channels_first
    print(f"temporal blocks' share of the video model's time, Small at {args.size}, window {args.window}, "
          f"{args.precision}, {torch.get_num_threads()} thread(s), median of {args.repeats}: "
          + ", ".join(f"{name} {100 * statistics.median(values):.1f} %" for name, values in shares.items()))


def compare_attentions(repeats: int, windows: list[int]) -> None:
    """Print the median time per frame of the finest Small block with the attention as it is and with the
    multiply-adds at every window, their ratio and the largest difference of their outputs."""
    torch.manual_seed(0)
    block = TemporalBlock(64).eval()
    torch.nn.init.normal_(block.proj_out.weight, std=0.02)
    threshold, rows = temporal.LIBRARY_ATTENTION_FRAMES, 148 // 4
    kinds = {"current": threshold, "multiply-adds": 1 << 30}
    for frames in windows:
        x = torch.randn(frames, 64, rows, 264).contiguous(memory_format=torch.channels_last)
        for precision in ("fp32", "bf16"):
            times: dict[str, list[float]] = {name: [] for name in kinds}
            outputs = {}
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                for round_ in range(repeats + 1):  # round 0 is a warm-up
                    for name in list(kinds)[:: 1 if round_ % 2 else -1]:
                        temporal.LIBRARY_ATTENTION_FRAMES = kinds[name]
                        start = time.thread_time()
                        outputs[name] = block(x, frames)
                        if round_:
                            times[name].append((time.thread_time() - start) * 4 / frames)
            temporal.LIBRARY_ATTENTION_FRAMES = threshold
            medians = {name: statistics.median(values) for name, values in times.items()}
            reference = outputs["multiply-adds"].float()
            diff = float((outputs["current"].float() - reference).abs().max() / (reference.max() - reference.min()))
            print(f"finest Small block (64 ch at 148x264), window {frames}, {precision}, 1 thread, median of "
                  f"{repeats}: " + ", ".join(f"{name} {1000 * t:.0f} ms/frame" for name, t in medians.items())
                  + f", current / multiply-adds {medians['current'] / medians['multiply-adds']:.2f}, max "
                  f"difference {diff:.1e} of the range", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stream", action="store_true", help="only the streamed-frame comparison")
    parser.add_argument("--share", action="store_true", help="only the temporal blocks' share in the video model")
    parser.add_argument("--size", default="518x924", help="--share: frame size HxW")
    parser.add_argument("--window", type=int, default=12, help="--share: frames of the window")
    parser.add_argument("--precision", default="bf16", help="--share: fp32 or bf16")
    parser.add_argument("--threads", type=int, default=0, help="--share: torch threads (0: torch's default)")
    parser.add_argument("--attention", action="store_true", help="only the attention of long windows")
    parser.add_argument("--windows", default="12,32,64,110", help="--attention: window lengths")
    args = parser.parse_args()
    if args.attention:
        torch.set_num_threads(1)
        compare_attentions(args.repeats, [int(w) for w in args.windows.split(",")])
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.share:
        temporal_share(args)
        return
    if args.stream:
        compare_stream_caches(args.repeats)
        return
    torch.set_num_threads(1)
    chunk_rows = temporal.CHUNK_ROWS
    print(f"chunks of {chunk_rows} rows vs one batch, median of {args.repeats}, 1 thread")
    for label, channels, height, width, frames in SHAPES:
        torch.manual_seed(0)
        block = TemporalBlock(channels).eval()
        torch.nn.init.normal_(block.proj_out.weight, std=0.02)
        x = torch.randn(frames, channels, height, width)
        with torch.no_grad():
            temporal.CHUNK_ROWS = chunk_rows
            chunked = block(x, frames)
            t_chunked = median_seconds(block, x, frames, args.repeats)
            temporal.CHUNK_ROWS = 1 << 62  # one chunk: the whole batch at once
            whole = block(x, frames)
            t_whole = median_seconds(block, x, frames, args.repeats)
        temporal.CHUNK_ROWS = chunk_rows
        diff = (chunked - whole).abs().max().item()
        print(
            f"{label}, {channels} ch at {height}x{width}, {frames} frames: one batch {t_whole * 1000:.0f} ms, "
            f"chunked {t_chunked * 1000:.0f} ms, speed-up {t_whole / t_chunked:.2f}x, max difference {diff:.1e}"
        )


if __name__ == "__main__":
    main()
