"""Speed of the temporal block run on chunks of pixel sequences against one big batch (same output).

The block treats every pixel as an independent sequence of frames, so it can run on chunks of
``bufferanytime.models.temporal.CHUNK_ROWS`` (pixel, frame) rows; this measures what that buys, per shape, in one
run, with one torch thread. Shapes are the finest temporal block of the video depth model: the tiny prior at
96x128 (32 channels at 28x36) and the Depth Anything V2 Small / Base architectures at 266x350 (64 / 128 channels
at 76x100), with 32-frame and 8-frame windows.

``--stream``: one streamed frame through the finest causal block of the Small architecture at its default input
size (64 channels at 148x264, horizon 10, cache full), with the cache attention as two batched matrix-vector
products (``one_query_attention``, what the code runs) against ``F.scaled_dot_product_attention``, alternated,
with torch's default threads.
Usage:

    python benchmarks/temporal_block.py [--repeats 5] [--stream]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

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


def compare_stream_attention(repeats: int, horizon: int = 10) -> None:
    """Print the median time of one streamed frame with the cache attention by matrix-vector products and by the
    library kernel, and their ratio."""
    torch.manual_seed(0)
    block = TemporalBlock(64, TemporalConfig(causal=True, horizon=horizon)).eval()
    torch.nn.init.normal_(block.proj_out.weight, std=0.02)
    x = torch.randn(1, 64, 148, 264).contiguous(memory_format=torch.channels_last)
    layers = attention_layers(block)
    kernels = {"matrix-vector": temporal.one_query_attention,
               "scaled_dot_product_attention": F.scaled_dot_product_attention}
    caches = {name: [KVCache(horizon) for _ in layers] for name in kernels}  # each streams the same frames
    times: dict[str, list[float]] = {name: [] for name in kernels}
    outputs = {}
    try:
        with torch.no_grad():
            for position in range(horizon + repeats):
                for name in list(kernels)[:: 1 if position % 2 else -1]:  # alternate which runs first
                    temporal.one_query_attention = kernels[name]
                    for cache in caches[name]:
                        cache.position = position
                    with streaming(layers, caches[name]):
                        start = time.perf_counter()
                        outputs[name] = block(x, 1)
                    if position >= horizon:
                        times[name].append(time.perf_counter() - start)
    finally:
        temporal.one_query_attention = kernels["matrix-vector"]
    medians = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    diff = (outputs["matrix-vector"] - outputs["scaled_dot_product_attention"]).abs().max().item()
    print(f"streamed frame, DA-V2-Small finest block (64 ch at 148x264), horizon {horizon}: "
          + ", ".join(f"{name} {1000 * t:.0f} ms" for name, t in medians.items())
          + f", ratio {medians['matrix-vector'] / medians['scaled_dot_product_attention']:.2f}, max difference "
          f"{diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stream", action="store_true", help="only the streamed-frame comparison")
    args = parser.parse_args()
    if args.stream:  # with torch's default threads, as the CLI and benchmarks/streaming.py run
        compare_stream_attention(args.repeats)
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
