"""``--precision auto``: bf16 autocast where the device has native bf16 arithmetic, fp32 elsewhere.

The choice is a pure function of what the machine is and what the model says (:func:`choose_precision`), never
of a timing: two runs of the same command on the same machine use the same precision, whatever else the machine
is doing. bf16 is chosen on CUDA devices that support it and on CPUs with native bf16 instructions (the
``amx_bf16`` or ``avx512_bf16`` flags: there bf16 convolutions and matrix products run faster than fp32, while
emulated bf16 elsewhere is slower than fp32). A model can refuse half precision for ``auto``
(``VideoModel.auto_precision = "fp32"`` in its config.json), e.g. when bf16 moves its scores by more than allowed.
"""

from __future__ import annotations

from pathlib import Path

import torch

AUTO = "auto"
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # native bf16 arithmetic (x86: AVX512-BF16, AMX)
CPUINFO = Path("/proc/cpuinfo")


def resolve_precision(requested: str, device: torch.device, model: object = None) -> str:
    """The precision a run uses: ``requested`` itself unless it is ``auto``, which becomes bf16 or fp32."""
    if requested != AUTO:
        return requested
    features = cpu_bf16_features() if device.type == "cpu" else frozenset()
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return choose_precision(device.type, features, getattr(model, "auto_precision", None), cuda_bf16)


def choose_precision(device_type: str, cpu_features: frozenset[str], auto_precision: str | None,
                     cuda_bf16: bool = False) -> str:
    """``auto`` resolved from the device type, the CPU's bf16 flags, the model's ``auto_precision`` and, on CUDA,
    whether the device supports bf16: ``"bf16"`` or ``"fp32"``. Nothing else enters the choice."""
    if auto_precision == "fp32":
        return "fp32"
    if device_type == "cuda":
        return "bf16" if cuda_bf16 else "fp32"
    if device_type == "cpu" and cpu_features & CPU_BF16_FLAGS:
        return "bf16"
    return "fp32"


def cpu_bf16_features() -> frozenset[str]:
    """The CPU's native bf16 flags: Linux ``/proc/cpuinfo`` where it exists, and torch's own CPU probe (which
    also covers other systems). Empty on CPUs without them."""
    flags: set[str] = set()
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.partition(":")[2].split())
    except OSError:
        pass
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if probe is not None and probe():
        flags.add("avx512_bf16")
    return frozenset(flags & CPU_BF16_FLAGS)
