"""Training speed with and without ``--cache``, as a ratio measured in the same run.

Renders a few synthetic videos, builds a random-weight prior with Depth Anything V2 Small's architecture (or
uses ``--model``), and trains twice for ``--epochs`` epochs over the same clips: once without a cache, once with
one (the first epoch fills it, later epochs read it). Reports steps per second of the uncached run and of the
cached run's epochs that hit the cache (the frozen ViT, the optical flow and the prior's targets are skipped),
and their ratio. The first step of each run (warm-up of lazy initialisations) is left out; the two settings
alternate ``--repeats`` times and the medians are reported, so that a busy machine affects both alike.

    python benchmarks/train_cache.py                      # DIS flow, CPU
    python benchmarks/train_cache.py --flow raft-small --flow-weights ../shared/weights/raft-small.pth
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bufferanytime.synthetic import render_video, write_video_dir
from bufferanytime.testing import make_sized_depth_prior
from bufferanytime.training import TrainConfig, train


def steps_per_second(run: Path, hits_only: bool) -> tuple[float, int]:
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()][1:]
    if hits_only:
        entries = [e for e in entries if e["cache_hits"] == len(e["clips"])]
    times = [e["step_time"] for e in entries]
    return len(times) / sum(times), len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12, help="frames per synthetic video")
    parser.add_argument("--size", default="120x160", help="synthetic video size HxW")
    parser.add_argument("--clip-len", type=int, default=8)
    parser.add_argument("--res", default="84x112", help="training resolution HxW")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default=None, help="prior directory (default: random DA-V2-Small architecture)")
    parser.add_argument("--flow", default="dis", choices=["dis", "raft-small"])
    parser.add_argument("--flow-weights", default=None)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each setting (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier timings)")
    parser.add_argument("--gpu", action="store_true", help="train on the GPU if there is one (default: CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in range(args.videos):
            write_video_dir(render_video(seed, args.frames, (height, width), flicker=0.2), tmp / "data" / f"seq_{seed}")
        model = args.model or str(make_sized_depth_prior(tmp / "prior", "small"))
        steps = args.videos * args.epochs
        common = {
            "kind": "depth",
            "data": [str(tmp / "data")],
            "model": model,
            "steps": steps,
            "clip_len": args.clip_len,
            "res": args.res,
            "warmup": 0,
            "workers": 0,
            "cpu": True,
            "quiet": True,
            "save_every": steps,
            "flow": args.flow,
            "flow_weights": args.flow_weights,
        }
        results: dict[str, list[tuple[float, int, float]]] = {"no cache": [], "cache": []}
        for repeat in range(args.repeats):
            for name, extra in (("no cache", {}), ("cache", {"cache": str(tmp / "cache")})):
                run = tmp / f"{name.replace(' ', '_')}_{repeat}"
                config = TrainConfig().updated({**common, **extra, "out": str(run), "cpu": not args.gpu}, "benchmark")
                started = time.perf_counter()
                train(config)
                wall = time.perf_counter() - started
                results[name].append((*steps_per_second(run, hits_only=bool(extra)), wall))

    def median(name: str) -> tuple[float, int, float]:
        rows = results[name]
        return float(np.median([r[0] for r in rows])), sum(r[1] for r in rows), float(np.median([r[2] for r in rows]))

    (base, base_n, base_wall), (cached, cached_n, cached_wall) = median("no cache"), median("cache")
    print(f"\n{args.videos} videos, clips of {args.clip_len} frames at {args.res}, flow {args.flow}, "
          f"{args.epochs} epochs x {args.repeats} repeats, {torch.get_num_threads()} CPU thread(s)")
    print(f"{'':28s} {'steps/s':>9s} {'steps':>6s} {'run wall s':>11s}")
    print(f"{'without --cache':28s} {base:9.3f} {base_n:6d} {base_wall:11.1f}")
    print(f"{'with --cache (cache hits)':28s} {cached:9.3f} {cached_n:6d} {cached_wall:11.1f}")
    print(f"speed-up of a cached step: {cached / base:.2f}x")
    if args.flow == "raft-small":
        print("(RAFT-small upsamples frames to a short side of RAFT_MIN_SIDE first: small clips pay for large flows)")

if __name__ == "__main__":
    main()
