"""AnimateDiff-style temporal block: self-attention across the frames of a clip, at every pixel.

The block is residual and its output projection starts at zero, so inserting it into an image model leaves
that model's output unchanged until training moves the projection (Sec. 3.3 of the paper). Frame positions
are encoded with fixed sinusoids, which exist for any number of frames, so a block trained on short clips
also runs on longer ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Pixels are independent sequences, so the block runs on chunks of about this many (pixel, frame) rows at a
# time. Same result; the intermediate tensors (the 4x-wide feed-forward above all) then stay in cache instead of
# streaming through memory, which makes the blocks faster on CPU (benchmarks/temporal_block.py; figures in
# docs/benchmarks.md).
CHUNK_ROWS = 4096


@dataclass
class TemporalConfig:
    """Hyper-parameters of every temporal block of a model (stored in the model's config.json)."""

    num_layers: int = 2  # AnimateDiff motion modules use two temporal self-attention layers
    num_heads: int = 8
    head_dim: int | None = None  # default: channels // num_heads
    ff_mult: int = 4
    norm_groups: int = 32
    max_period: float = 10000.0  # of the sinusoidal frame-position encoding
    # Where the blocks sit in the normal model's U-Net: "stage" (one after every down block, the mid block and
    # every up block: today's embedded model) or "layer" (one after every resnet/attention pair, the layout of
    # AnimateDiff's UNetMotion that the paper adapts). The depth model has one layout (between fusion stages).
    layout: str = "stage"

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_positions(num_frames: int, dim: int, max_period: float, device=None, dtype=None) -> torch.Tensor:
    """Transformer sinusoidal encoding ``(num_frames, dim)`` of frame indices 0..num_frames-1."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=device, dtype=torch.float32) / half)
    angles = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None] * freqs[None]
    enc = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if dim % 2:
        enc = F.pad(enc, (0, 1))
    return enc.to(dtype)


class TemporalAttentionLayer(nn.Module):
    """Pre-norm self-attention over frames (with frame positions added) followed by a GELU feed-forward."""

    def __init__(self, dim: int, num_heads: int, ff_mult: int, max_period: float):
        super().__init__()
        self.num_heads = num_heads
        self.max_period = max_period
        # Frame-position encodings built once per (frames, device, dtype), not on every call.
        self._positions: dict[tuple, torch.Tensor] = {}
        self.norm1 = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))

    def positions(self, frames: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The sinusoidal encoding of ``frames`` positions, computed on first use and cached."""
        key = (frames, dim, device, dtype)
        if key not in self._positions:
            self._positions[key] = sinusoidal_positions(frames, dim, self.max_period, device, dtype)
        return self._positions[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(S, T, dim)``, S independent sequences (pixels) of T frames."""
        seqs, frames, dim = x.shape
        h = self.norm1(x) + self.positions(frames, dim, x.device, x.dtype)
        q, k, v = self.to_qkv(h).reshape(seqs, frames, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.to_out(attn.transpose(1, 2).reshape(seqs, frames, dim))
        return x + self.ff(self.norm2(x))


class TemporalBlock(nn.Module):
    """GroupNorm, projection in, ``num_layers`` temporal attention layers, zero-initialised projection out, residual.

    Input and output are ``(B*T, C, H, W)`` feature maps with frames of a clip contiguous (``b * T + t``).
    """

    def __init__(self, channels: int, config: TemporalConfig | None = None):
        super().__init__()
        config = config or TemporalConfig()
        heads = max(1, min(config.num_heads, channels))
        inner = heads * (config.head_dim or max(1, channels // heads))
        self.norm = nn.GroupNorm(math.gcd(config.norm_groups, channels), channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.layers = nn.ModuleList(
            TemporalAttentionLayer(inner, heads, config.ff_mult, config.max_period) for _ in range(config.num_layers)
        )
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def _sequences(self, y: torch.Tensor) -> torch.Tensor:
        """Projection in, attention layers, projection out on ``(S, T, C)`` pixel sequences."""
        y = self.proj_in(y)
        for layer in self.layers:
            y = layer(y)
        return self.proj_out(y)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        b = bt // num_frames
        y = self.norm(x).reshape(b, num_frames, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, num_frames, c)
        chunk = max(1, CHUNK_ROWS // num_frames)
        y = torch.cat([self._sequences(part) for part in y.split(chunk)])
        y = y.reshape(b, h, w, num_frames, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)
        return x + y


def _mix(output, block: TemporalBlock, num_frames: int):
    """Apply ``block`` to the features in a library module's output.

    A tensor (a resnet, a mid or up block); a 1-tuple (an attention with ``return_dict=False``); or a down block's
    ``(features, skips)``, whose skip equal to its output carries the mixed features too (the block acts as the
    last layer of the down block).
    """
    if isinstance(output, torch.Tensor):
        return block(output, num_frames)
    features, rest = output[0], output[1:]
    mixed = block(features, num_frames)
    if len(rest) == 1 and isinstance(rest[0], tuple):
        return mixed, tuple(mixed if r is features else r for r in rest[0])
    return (mixed, *rest)


@contextmanager
def temporal_hooks(sites: Sequence[tuple[nn.Module, TemporalBlock]], num_frames: int) -> Iterator[None]:
    """Within the ``with``, each ``(module, block)`` of ``sites`` has ``block`` applied to its output.

    This is how temporal blocks enter a library model (a DPT neck, a diffusers U-Net) without copying its
    ``forward``: a forward hook per site, registered for one call and removed after it, so the library model
    is unchanged outside (and ``num_frames`` is passed, not stored).
    """
    handles = [
        module.register_forward_hook(lambda _m, _a, out, block=block: _mix(out, block, num_frames))
        for module, block in sites
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
