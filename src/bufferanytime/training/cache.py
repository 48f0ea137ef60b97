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
processes and killed runs never leave a half-written entry. An entry carries its key, its clip spec and the
names, types and shapes of its tensors; one that is unreadable, or whose key, clip or tensors do not match the
clip it would serve (a file moved or copied over another, a file rewritten by something else), counts as a miss:
the clip is computed again and its entry overwritten (one warning per process says so). A failed write (full disk)
stops the run with ``DIR: no space left on device`` and leaves no partial entry.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize

from bufferanytime.errors import InputError
from bufferanytime.io.atomic import atomic_path
from bufferanytime.training.data import ClipSpec

CACHE_VERSION = 2  # 2: keys from content hashes
# Tensors kept at full precision whatever the cache dtype: flows are small and their errors move pixels.
EXACT_PREFIXES = ("flow_",)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def cache_directory(directory: str | Path) -> Path:
    """``directory``, created if missing: InputError when it, or a folder above it, is a file (``--cache FILE``).

    Called before a run writes anything, so that a bad ``--cache`` leaves nothing behind."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: not a folder (--cache needs a folder to keep its entries in)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise InputError(f"{path}: cannot create the --cache folder ({exc.filename} is not a folder)") from exc
    return path


def clip_text(spec: ClipSpec) -> str:
    """The clip spec as stored in an entry (canonical JSON)."""
    return json.dumps(spec.to_dict(), sort_keys=True, default=list)


def tensor_layout(tensors: dict[str, torch.Tensor]) -> str:
    """Names, types and shapes of ``tensors`` (canonical JSON): an entry whose tensors differ from it is a miss."""
    return json.dumps({name: [str(t.dtype), list(t.shape)] for name, t in tensors.items()}, sort_keys=True)


class ClipCache:
    """``load(spec) -> dict | None`` and ``save(spec, tensors)`` under ``directory``; picklable for workers."""

    def __init__(self, directory: str | Path, context: dict, dtype: str = "float32"):
        self.directory = cache_directory(directory)
        self.dtype = dtype
        self._warned = False  # a mismatched entry is reported once per process
        self.context = {**context, "cache_version": CACHE_VERSION, "cache_dtype": dtype}

    def key(self, spec: ClipSpec) -> str:
        text = json.dumps({"context": self.context, "clip": spec.to_dict()}, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, spec: ClipSpec) -> Path:
        key = self.key(spec)
        return self.directory / key[:2] / f"{key}.safetensors"

    def load(self, spec: ClipSpec) -> dict[str, torch.Tensor] | None:
        """The entry of ``spec``, or None: missing, unreadable, or not this clip's (see the module docstring)."""
        path = self.path(spec)
        if not path.is_file():
            return None
        tensors, metadata = read_entry(path)
        if tensors is not None and set(metadata) == {"clip"}:
            return None  # an entry of the earlier format (no key, no layout): replaced as it is recomputed
        expected = {"key": self.key(spec), "clip": clip_text(spec)}
        if tensors is None or any(metadata.get(k) != v for k, v in expected.items()) or \
                metadata.get("layout") != tensor_layout(tensors):
            self._report_mismatch(path)
            return None
        return tensors

    def _report_mismatch(self, path: Path) -> None:
        if not self._warned:
            self._warned = True
            print(f"warning: {path}: cache entry damaged or not this clip's; it is computed again and replaced "
                  "(further ones are not reported)", file=sys.stderr, flush=True)

    def save(self, spec: ClipSpec, tensors: dict[str, torch.Tensor]) -> None:
        """Store ``spec``'s tensors; an OSError (full disk) names the cache folder and leaves no partial entry."""
        dtype = DTYPES[self.dtype]
        stored = {}
        for name, value in tensors.items():
            value = value.detach().to("cpu")
            if value.is_floating_point() and not name.startswith(EXACT_PREFIXES):
                value = value.to(dtype)
            stored[name] = value.contiguous()
        metadata = {"key": self.key(spec), "clip": clip_text(spec), "layout": tensor_layout(stored)}
        data = serialize(stored, metadata=metadata)
        path = self.path(spec)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                write_entry(tmp, data)
        except OSError as exc:
            if exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror, str(self.directory)) from exc


def read_entry(path: Path) -> tuple[dict[str, torch.Tensor] | None, dict[str, str]]:
    """An entry's tensors and metadata; ``(None, {})`` when it is not a readable safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as entry:
            metadata = entry.metadata() or {}
            return {name: entry.get_tensor(name) for name in entry.keys()}, metadata
    except (OSError, SafetensorError, ValueError, RuntimeError):
        return None, {}


def write_entry(path: Path, data: bytes) -> None:
    """Write one serialized entry (a function of its own, so that tests can fill the disk here)."""
    path.write_bytes(data)
