"""Speed of the temporal block run on chunks of pixel sequences against one big batch (same output).

The block treats every pixel as an independent sequence of frames, so it can run on chunks of
``bufferanytime.models.temporal.CHUNK_ROWS`` (pixel, frame) rows; this measures what that buys, per shape, in one
run, with one torch thread. Shapes are the finest temporal block of the video depth model: the tiny prior at
96x128 (32 channels at 28x36) and the Depth Anything V2 Small / Base architectures at 266x350 (64 / 128 channels
at 76x100), with 32-frame and 8-frame windows. Usage:

    python benchmarks/temporal_block.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch

import bufferanytime.models.temporal as temporal
from bufferanytime.models.temporal import TemporalBlock

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
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
