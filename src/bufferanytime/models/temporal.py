"""AnimateDiff-style temporal block: self-attention across the frames of a clip, at every pixel.

The block is residual and its output projection starts at zero, so inserting it into an image model leaves
that model's output unchanged until training moves the projection (Sec. 3.3 of the paper). Frame positions
are encoded with fixed sinusoids, which exist for any number of frames, so a block trained on short clips
also runs on longer ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Pixels are independent sequences, so the block runs on chunks of about this many (pixel, frame) rows at a
# time. Same result; the intermediate tensors (the 4x-wide feed-forward above all) then stay in cache instead of
# streaming through memory: 1.35-1.84x faster blocks on one CPU thread (benchmarks/temporal_block.py).
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
        self.norm1 = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(S, T, dim)``, S independent sequences (pixels) of T frames."""
        seqs, frames, dim = x.shape
        h = self.norm1(x) + sinusoidal_positions(frames, dim, self.max_period, x.device, x.dtype)
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
