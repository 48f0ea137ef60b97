"""Speed of the synthetic renderer: seconds for a 12-frame 240x320 video (target: under 10 s on 2 cores).

Renders several seeds (rooms and outdoor scenes differ in cost) and prints the wall-clock and CPU
seconds per video (CPU time shows what the renderer costs when other processes share the cores), the
ratio to the 10 s budget, and the ratio to a baseline measured in the same run (the same frames simply
written out as PNG + npy + mp4, which any generator pays). Exits with 1 if the median exceeds the budget.

    python benchmarks/synthetic_speed.py [--seeds 3] [--frames 12] [--size 240 320]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bufferanytime.synthetic import render_video, write_video_dir

BUDGET_SECONDS = 10.0  # the time budget for a 12-frame 240x320 video on 2 cores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="number of videos (seeds 0..N-1)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    args = parser.parse_args()

    render_video(0, 2, (16, 16))  # warm-up: imports and first-call overheads
    times, cpu_times, write_times, kinds = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            start, cpu_start = time.perf_counter(), time.process_time()
            video = render_video(seed, args.frames, tuple(args.size))
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            kinds.append(video.scene_kind)
            start = time.perf_counter()
            write_video_dir(video, Path(tmp) / f"seq_{seed}")
            write_times.append(time.perf_counter() - start)

    h, w = args.size
    for seed, (t, ct, wt, kind) in enumerate(zip(times, cpu_times, write_times, kinds, strict=True)):
        print(
            f"seed {seed} ({kind:7s}): render {t:6.2f} s wall, {ct:6.2f} s CPU "
            f"({t / args.frames * 1e3:4.0f} ms/frame)  write {wt:5.2f} s"
        )
    median = float(np.median(times))
    baseline = float(np.median(write_times))
    print(
        f"{args.frames}-frame {h}x{w} video: median {median:.2f} s wall (max {max(times):.2f} s), "
        f"median {float(np.median(cpu_times)):.2f} s CPU"
    )
    print(f"ratio to the {BUDGET_SECONDS:.0f} s budget: {median / BUDGET_SECONDS:.2f} (target < 1)")
    print(f"ratio to writing the same video to disk (baseline, same run): {median / baseline:.1f}")
    return 0 if median < BUDGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
