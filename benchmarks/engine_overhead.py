"""``--engine ray`` against ``--engine local`` on the same short clips: what Ray costs on one machine.

Writes ``--clips`` short clips (a moving texture, ``--frames`` frames at ``--size``), then alternates, ``--rounds``
times (the order flipped each round, so a change in the machine's speed affects both alike):

- **local**: ``bufferanytime depth CLIPS --engine local`` in a fresh process (one model load, torch's threads, or
  ``--local-threads``);
- **ray**: ``bufferanytime depth CLIPS --engine ray --num-workers W --cpus-per-worker 1``: a fresh process that
  starts a Ray instance on this machine (or joins ``--address``) and W workers, each loading the model.

Each is timed from process start to exit: start-up, Ray's start and the model loads included. Every run writes
into a new output folder, so nothing is skipped. Printed: each time, the median of each engine, and
``ray / local``.

    python benchmarks/engine_overhead.py [--clips 24] [--frames 16] [--size 96x128] [--workers 2] [--rounds 2]
                                         [--model NAME] [--address HOST:PORT] [--local-threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bufferanytime.io.video import write_video


def clip(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random texture moving one pixel per frame: ``(T, H, W, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.random((height // 8 + 2, (width + frames) // 8 + 2, 3)), (width + frames, height),
                      interpolation=cv2.INTER_CUBIC)
    return (np.clip(np.stack([base[:, t : t + width] for t in range(frames)]), 0, 1) * 255).astype(np.uint8)


def run(engine: str, clips: list[Path], out: Path, args: argparse.Namespace) -> float:
    """Seconds of one ``bufferanytime depth --engine ENGINE`` process over ``clips``."""
    command = [sys.executable, "-m", "bufferanytime", "depth", *map(str, clips), "-o", str(out), "-q",
               "--engine", engine, "--precision", "fp32"]
    if args.model:
        command += ["--model", args.model]
    if engine == "ray":
        command += ["--num-workers", str(args.workers), "--cpus-per-worker", "1"]
        command += ["--address", args.address] if args.address else []
    env = dict(os.environ)
    if engine == "local" and args.local_threads:
        env["OMP_NUM_THREADS"] = str(args.local_threads)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{engine} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", default="96x128", help="HxW of the clips")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=None, help="default: the embedded model")
    parser.add_argument("--address", default=None, help="join this Ray cluster instead of starting one per run")
    parser.add_argument("--local-threads", type=int, default=None,
                        help="torch threads of the local engine (default: torch's own, one per core)")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    times: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="engine-overhead-") as tmp:
        root = Path(tmp)
        clips = []
        for i in range(args.clips):
            clips.append(root / "clips" / f"clip{i:02d}.mp4")
            clips[-1].parent.mkdir(exist_ok=True)
            write_video(clips[-1], clip(args.frames, height, width, i), fps=25)
        for r in range(args.rounds):
            for engine in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                seconds = run(engine, clips, root / f"out-{engine}-{r}", args)
                times[engine].append(seconds)
                print(f"round {r + 1} {engine}: {seconds:.1f} s", flush=True)
    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"{cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"median local {local:.1f} s, ray {ray:.1f} s: ray / local = {ray / local:.3f}x")


if __name__ == "__main__":
    main()
