"""Per-clip cache of what never changes during training (``--cache DIR``).

The frozen parts of a step are deterministic functions of the clip: the optical flows and their cycle masks,
the image prior's regularization targets (for every frame of the clip, so any frame can be the step's one
regularization frame), and the frozen encoder's output (Depth Anything's ViT features, or Marigold's VAE
latents). A clip is keyed by a hash of its :class:`~bufferanytime.training.data.ClipSpec` (video path and the
SHA-256 of its bytes, start, stride, length, crop, resolution) and of the run's *context* (kind, the SHA-256 of
the prior's files and of the flow weights, flow method, tau, precision, cache dtype): keys follow content, not
paths or modification times, so a cache directory can be shared by runs, and an entry is only reused by a run
that would compute exactly the same tensors, even after a prior or frames are replaced in place.

Each entry is one safetensors file, written under a temporary name and renamed when complete, so concurrent
processes and killed runs never leave a half-written entry; an unreadable entry counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bufferanytime.io.atomic import atomic_path
from bufferanytime.training.data import ClipSpec

CACHE_VERSION = 2  # 2: keys from content hashes
# Tensors kept at full precision whatever the cache dtype: flows are small and their errors move pixels.
EXACT_PREFIXES = ("flow_",)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ClipCache:
    """``load(spec) -> dict | None`` and ``save(spec, tensors)`` under ``directory``; picklable for workers."""

    def __init__(self, directory: str | Path, context: dict, dtype: str = "float32"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.context = {**context, "cache_version": CACHE_VERSION, "cache_dtype": dtype}

    def key(self, spec: ClipSpec) -> str:
        text = json.dumps({"context": self.context, "clip": spec.to_dict()}, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, spec: ClipSpec) -> Path:
        key = self.key(spec)
        return self.directory / key[:2] / f"{key}.safetensors"

    def load(self, spec: ClipSpec) -> dict[str, torch.Tensor] | None:
        path = self.path(spec)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))
        except (OSError, SafetensorError, ValueError):
            return None

    def save(self, spec: ClipSpec, tensors: dict[str, torch.Tensor]) -> None:
        dtype = DTYPES[self.dtype]
        stored = {}
        for name, value in tensors.items():
            value = value.detach().to("cpu")
            if value.is_floating_point() and not name.startswith(EXACT_PREFIXES):
                value = value.to(dtype)
            stored[name] = value.contiguous()
        path = self.path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(stored, str(tmp), metadata={"clip": json.dumps(spec.to_dict(), default=list)})
