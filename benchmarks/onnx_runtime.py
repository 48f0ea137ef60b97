"""ONNX Runtime against PyTorch on CPU for the graphs of ``bufferanytime export onnx``.

The video model (one window of ``--frames`` frames) and the per-frame prior (the same frames as a batch) are
exported once (not timed), then run alternately in PyTorch (the eager models as the command line runs them, fp32,
no autograd) and in ONNX Runtime (CPU execution provider), on the same inputs, with the same number of threads,
``--rounds`` times. Printed: ms per frame of each and the ratio ONNX Runtime / PyTorch (below 1: ONNX Runtime is
faster), and the largest difference between the two outputs relative to the output range.

Default: the embedded tiny models (depth and normals, at their own input sizes). ``--arch small`` adds random
weights in the Depth Anything V2 Small architecture at ``--arch-size`` (exporting it takes minutes).

    python benchmarks/onnx_runtime.py [--frames 8] [--rounds 5] [--threads 2] [--arch small --arch-size 266x476]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from bufferanytime.export.onnx import ImageGraph, export_size, export_task
from bufferanytime.models import load_model
from bufferanytime.testing import make_sized_depth_prior


def alternate(graph: torch.nn.Module, x: torch.Tensor, session, rounds: int) -> tuple[dict, float]:
    """Seconds of each runtime per round (PyTorch then ONNX Runtime, alternating) and their output difference
    relative to the output range."""
    feed = {session.get_inputs()[0].name: x.numpy()}
    times: dict[str, list[float]] = {"torch": [], "ort": []}
    with torch.no_grad():
        graph(x), session.run(None, feed)  # warm-up
        for _ in range(rounds):
            start = time.perf_counter()
            expected = graph(x).numpy()
            middle = time.perf_counter()
            got = session.run(None, feed)[0]
            times["torch"].append(middle - start)
            times["ort"].append(time.perf_counter() - middle)
    return times, float(np.abs(got - expected).max()) / max(float(expected.max() - expected.min()), 1e-12)


def compare(name: str, model, prior, size, args, folder: Path) -> None:
    """Export ``model`` and ``prior``, then time both graphs in both runtimes, alternating."""
    folder.mkdir()
    info = export_task(model, prior, folder, size, check=False)
    h, w = export_size(model, size)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    # PyTorch: the eager models, as the command line runs them (chunked decoding), in fp32
    cases = {"video": (model, torch.rand(1, args.frames, 3, h, w)),
             "prior": (ImageGraph(prior).eval(), torch.rand(args.frames, 3, h, w))}
    for role, (graph, x) in cases.items():
        session = onnxruntime.InferenceSession(str(folder / info["files"][role]["file"]), options,
                                               providers=["CPUExecutionProvider"])
        times, diff = alternate(graph, x, session, args.rounds)
        ratios = [o / t for o, t in zip(times["ort"], times["torch"], strict=True)]
        ms = {k: 1000 * statistics.median(v) / args.frames for k, v in times.items()}
        print(f"{name} {role} {h}x{w}: PyTorch {ms['torch']:.1f} ms/frame, ONNX Runtime {ms['ort']:.1f} ms/frame, "
              f"ratio {statistics.median(ratios):.3f}x (range {min(ratios):.3f}-{max(ratios):.3f}); "
              f"max |diff| {diff:.1e} of the range", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--arch", default="", help="also a Depth Anything V2 architecture: small, base")
    parser.add_argument("--arch-size", default="266x476")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("depth", "normal"):
            compare(f"tiny-synthetic {kind}", load_model(kind).eval(), load_model(kind, per_frame=True).eval(),
                    None, args, Path(tmp) / kind)
        if args.arch:
            prior_dir = make_sized_depth_prior(Path(tmp) / f"da-v2-{args.arch}", args.arch)
            size = tuple(int(v) for v in args.arch_size.split("x"))
            compare(f"DA-V2 {args.arch} (random weights)", load_model("depth", prior_dir).eval(),
                    load_model("depth", prior_dir, per_frame=True).eval(), size, args, Path(tmp) / args.arch)


if __name__ == "__main__":
    main()
