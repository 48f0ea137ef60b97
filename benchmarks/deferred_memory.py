"""Peak memory of deferred back-propagation vs direct back-propagation through a VAE decoder.

A 16-frame clip of latents (from a small conv "video model") is decoded by a diffusers ``AutoencoderKL``
decoder, and a loss coupling adjacent decoded frames (the stabilization loss plus a frame-difference term) is
back-propagated to the model, either directly (the decoder's graph holds all 16 frames) or with
``deferred_backward`` (one chunk of ``DEFERRED_CHUNK`` frames at a time). Each method runs in a fresh
subprocess; its peak resident memory above the set-up baseline is its own ``VmHWM`` (``ru_maxrss`` would include the
parent's). Also checks that
both give the same gradient.

    python benchmarks/deferred_memory.py [--frames 16 --size 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from bufferanytime.constants import DEFERRED_CHUNK
from bufferanytime.losses import deferred_backward, stabilization_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import own_peak_kb  # noqa: E402

LATENT_CHANNELS = 4
VAE_DOWNSAMPLE = 4  # three blocks: two 2x resamplings


def _peak_mb() -> float:
    return own_peak_kb() / 1024


def run_method(method: str, frames: int, size: int) -> dict:
    torch.manual_seed(0)
    vae = (
        AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            latent_channels=LATENT_CHANNELS,
            norm_num_groups=16,
        )
        .eval()
        .requires_grad_(False)
    )
    model = torch.nn.Conv2d(3, LATENT_CHANNELS, VAE_DOWNSAMPLE, stride=VAE_DOWNSAMPLE)
    inputs = torch.rand(frames, 3, size, size)
    flows = 2 * torch.randn(frames - 1, 2, size, size)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z).sample

    def pixel_loss(g: torch.Tensor) -> torch.Tensor:
        return stabilization_loss(g, flows, -flows) + (g[1:] - g[:-1]).square().mean()

    with torch.no_grad():  # warm-up so one-time allocations land in the baseline of both methods
        decode(model(inputs[:1]))
    baseline = _peak_mb()
    start = time.perf_counter()
    latents = model(inputs)
    if method == "direct":
        loss = pixel_loss(decode(latents))
    else:
        loss = deferred_backward(latents, decode, pixel_loss, chunk=DEFERRED_CHUNK)
    loss.backward()
    seconds = time.perf_counter() - start
    return {
        "peak_mb": _peak_mb() - baseline,
        "seconds": seconds,
        "loss": float(loss),
        "grad": model.weight.grad.flatten().tolist(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="decoded frame side in pixels")
    parser.add_argument("--run", choices=["direct", "deferred"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_method(args.run, args.frames, args.size)))
        return 0

    results = {}
    for method in ("direct", "deferred"):
        cmd = [sys.executable, __file__, "--run", method, "--frames", str(args.frames), "--size", str(args.size)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    direct, deferred = results["direct"], results["deferred"]
    g_direct, g_deferred = torch.tensor(direct["grad"]), torch.tensor(deferred["grad"])
    rel = float((g_deferred - g_direct).norm() / g_direct.norm())
    print(
        f"{args.frames} frames of {args.size}x{args.size}, chunk {DEFERRED_CHUNK}, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"{'method':<10}{'peak MB':>10}{'seconds':>10}{'loss':>12}")
    for name, r in results.items():
        print(f"{name:<10}{r['peak_mb']:>10.0f}{r['seconds']:>10.2f}{r['loss']:>12.6f}")
    ratio = deferred["peak_mb"] / direct["peak_mb"]
    print(f"peak memory deferred / direct: {ratio:.3f}")
    print(f"relative gradient difference: {rel:.2e}")
    ok = ratio < 1 and rel < 1e-4
    print(f"claim deferred uses less memory with the same gradient: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
