"""``--precision auto``: bf16 autocast where the device runs it fast, fp32 elsewhere.

bf16 is chosen on CUDA devices that support it, and on CPUs with native bf16 arithmetic (the ``avx512_bf16`` or
``amx_bf16`` flags) where a one-off micro-benchmark, run once per process, confirms that bf16 convolutions and
matrix products beat fp32 (emulated bf16 is slower than fp32). A model can refuse half precision for ``auto``
(``VideoModel.auto_precision = "fp32"``), e.g. when bf16 moves its scores by more than the project allows.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch
import torch.nn.functional as F

AUTO = "auto"
# bf16 must take at most this fraction of fp32's time in the micro-benchmark to be chosen: a clear win, not noise.
BF16_SPEEDUP_NEEDED = 0.8
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def resolve_precision(requested: str, device: torch.device, model: object = None) -> str:
    """The precision a run uses: ``requested`` itself unless it is ``auto``, which becomes bf16 or fp32."""
    if requested != AUTO:
        return requested
    if getattr(model, "auto_precision", None) == "fp32":
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_native_bf16() and cpu_bf16_is_faster():
        return "bf16"
    return "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether the CPU advertises bf16 instructions (Linux ``/proc/cpuinfo`` flags; False where it is absent)."""
    try:
        flags = CPUINFO.read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


@functools.cache
def cpu_bf16_is_faster() -> bool:
    """A 3x3 convolution and a matrix product of DPT-decoder / ViT widths, bf16 against fp32, best of 5 each.

    Run once per process (well under a second, most of it the one-off set-up of each kernel) and cached.
    """
    generator = torch.Generator().manual_seed(0)
    image, kernel = torch.randn(1, 64, 32, 32, generator=generator), torch.randn(64, 64, 3, 3, generator=generator)
    tokens, weight = torch.randn(256, 384, generator=generator), torch.randn(1536, 384, generator=generator)

    def work(dtype: torch.dtype) -> float:
        x, k, t, w = (v.to(dtype) for v in (image, kernel, tokens, weight))
        F.conv2d(x, k, padding=1), F.linear(t, w)  # the first calls pay one-off set-up costs
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            F.conv2d(x, k, padding=1)
            F.linear(t, w)
            best = min(best, time.perf_counter() - start)
        return best

    return work(torch.bfloat16) <= BF16_SPEEDUP_NEEDED * work(torch.float32)
