"""AnimateDiff-style temporal block: self-attention across the frames of a clip, at every pixel.

The block is residual and its output projection starts at zero, so inserting it into an image model leaves
that model's output unchanged until training moves the projection (Sec. 3.3 of the paper). Frame positions
are encoded with fixed sinusoids, which exist for any number of frames, so a block trained on short clips
also runs on longer ones.

A causal block (``TemporalConfig.causal``) lets frame t attend only to frames ``max(0, t-H+1)..t`` (H =
``horizon``) and encodes positions with rotary embeddings on queries and keys (RoPE, Su et al. 2021) instead of
the sinusoids: an attention score then depends only on the offset between two frames, so a frame's keys and
values, once computed, stay valid as the stream moves on. :class:`KVCache` keeps them for the last H frames
(a fixed ring buffer) and :func:`streaming` attaches the caches to the layers for one call, which is how
``bufferanytime.inference.streaming.StreamingPredictor`` runs a causal model one frame at a time, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Pixels are independent sequences, so the block runs on chunks of about this many (pixel, frame) rows at a
# time. Same result; the intermediate tensors (the 4x-wide feed-forward above all) then stay in cache instead of
# streaming through memory, which makes the blocks faster on CPU (benchmarks/temporal_block.py; figures in
# docs/benchmarks.md).
CHUNK_ROWS = 4096
# A streamed frame (one row per pixel, through the key/value caches) runs on chunks twice as large: its attention
# is a few dozen passes vectorised over a chunk's pixels, whose fixed cost per pass then weighs half as much (the
# finest Small block's streamed frame took 6-10 % less time at 196x350 and 518x924 than with 4096 rows, one thread,
# when this was set; 2048 rows were slower still).
STREAM_CHUNK_ROWS = 8192
# From this many frames on, the inference path's attention runs as library matrix products and softmax
# (:func:`_library_attention`) on a copy of a few pixels' queries, keys and values at a time, about this many
# (pixel, frame) rows each. Below it, multiply-adds vectorised over pixels are faster
# (:func:`channels_first_attention`); but their passes over a frames x frames score tensor grow with the window's
# square, while the products keep a few pixels' scores in cache: the attention of one finest-block layer of the
# Small architecture at 518x924 took 150 against 50 ms per frame at 110 frames, 50 against 31 at 64, 39 against
# 29 at 40, 26 against 24 at 32 and 26 against 31 at 24 (AMD EPYC, one thread; the whole blocks:
# benchmarks/temporal_block.py --attention, docs/benchmarks.md).
LIBRARY_ATTENTION_FRAMES = 40
LIBRARY_ATTENTION_ROWS = 512


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
    # Causal blocks: frame t attends to frames max(0, t-horizon+1)..t only, positions by rotary embeddings.
    causal: bool = False
    horizon: int | None = None  # frames a causal block sees (itself included); required when causal

    def __post_init__(self) -> None:
        if self.causal and (self.horizon is None or self.horizon < 1):
            raise ValueError(f"a causal temporal block needs a horizon of at least 1 frame, got {self.horizon}")
        if not self.causal and self.horizon is not None:
            raise ValueError("a horizon applies to causal temporal blocks only")

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


def rotary_tables(positions: torch.Tensor, dim: int, max_period: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``(len(positions), dim)`` of rotary embeddings at integer ``positions``.

    Angles are computed in float64 and reduced modulo 2 pi, so frame 10**7 of a stream rotates as precisely as
    frame 10. Channel i is paired with channel i + dim/2 (the "rotate half" form); an odd last channel is not
    rotated.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / max(half, 1))
    angles = torch.remainder(positions.to(torch.float64)[:, None] * freqs[None].to(positions.device), 2 * math.pi)
    cos, sin = torch.cos(angles), torch.sin(angles)
    if dim % 2:
        cos, sin = F.pad(cos, (0, 1), value=1.0), F.pad(sin, (0, 1))
    cos, sin = torch.cat([cos[:, :half], cos], -1), torch.cat([sin[:, :half], sin], -1)
    return cos.to(dtype), sin.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (..., T, dim)`` by the tables of its T positions (see :func:`rotary_tables`)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half : 2 * half], x[..., :half], torch.zeros_like(x[..., 2 * half :])], dim=-1)
    return x * cos + rotated * sin


@lru_cache(maxsize=4)
def rotary_columns(position: int, dim: int, max_period: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``(dim, 1)`` float32 of the rotary embedding at one ``position``: :func:`rotary_tables` in plain
    float64 arithmetic (a handful of numbers, not worth tensor operations). Kept for the last few positions: every
    causal layer of a streamed model rotates its projection by the same tables for a frame."""
    half = dim // 2
    angles = [math.remainder(position * math.exp(-math.log(max_period) * i / max(half, 1)), 2 * math.pi)
              for i in range(half)]
    cos = [math.cos(a) for a in angles] * 2 + [1.0] * (dim % 2)
    sin = [math.sin(a) for a in angles] * 2 + [0.0] * (dim % 2)
    return torch.tensor(cos).view(dim, 1), torch.tensor(sin).view(dim, 1)


def causal_mask(frames: int, horizon: int, device=None) -> torch.Tensor:
    """``(frames, frames)`` boolean, True where query frame t may attend to key frame s: ``0 <= t - s < horizon``."""
    offset = torch.arange(frames, device=device)[:, None] - torch.arange(frames, device=device)[None]
    return (offset >= 0) & (offset < horizon)


class KVCache:
    """Keys and values of one causal attention layer for the last ``horizon`` frames of a stream.

    One ring buffer per chunk of pixel rows (``(horizon, 2 * dim, s)``: per frame its keys then its values, channels
    first and pixels last, so that the projection writes a frame's slot directly and the attention of all pixels of
    a chunk runs as a few passes vectorised over pixels), allocated on the first frame and written in place: the
    size does not change however long the stream runs. The float32 work space of
    the attention (``scratch``, keyed by shape) is allocated once too, and may be one dict shared by all the caches
    of a model (a chunk's attention is done before the next starts), so nothing is allocated per frame. Keys are
    stored rotated to their frame's absolute position, so they are never recomputed: the rotation of the current
    frame is folded into the query and key projection (:meth:`qkv_weight`). ``position`` is the index of the frame
    being processed; the owner (the streaming predictor) advances it once per frame, for every layer.
    """

    def __init__(self, horizon: int, scratch: dict | None = None):
        self.horizon = horizon
        self.position = 0
        self.buffers: dict[int, tuple[torch.Tensor]] = {}  # first pixel row of a chunk -> (its ring buffer,)
        self.scratch: dict[tuple, tuple[torch.Tensor, ...]] = {} if scratch is None else scratch
        self._qkv: tuple | None = None  # the projection's weight rotated to the current position (qkv_weight)
        self._terms: dict[tuple, tuple] = {}  # the attention's operand views per chunk and fill level (attend_frame)

    def nbytes(self) -> int:
        """Bytes held by the key/value buffers (0 before the first frame)."""
        return sum(t.numel() * t.element_size() for group in self.buffers.values() for t in group)

    def qkv_weight(self, weight: torch.Tensor, heads: int, max_period: float) -> torch.Tensor:
        """The fused query/key/value projection ``weight`` with the rotary embedding of the current position applied
        to its query and key rows, and the attention's scale ``d ** -0.5`` to its query rows: projecting with it gives
        rotated (and scaled) queries and keys directly (both are linear), in one matrix product instead of a
        projection, two rotations and a scaling per chunk. Built once per frame."""
        key = (weight.data_ptr(), weight._version, weight.dtype, heads, max_period)
        rows, inputs = weight.shape[0] // 3, weight.shape[1]
        dim = rows // heads
        if self._qkv is None or self._qkv[0] != key:  # per head: the query and key rows, scaled, and their
            qk = weight.detach()[: 2 * rows].float().view(2 * heads, dim, inputs).clone()  # "rotate half" partner
            qk[:heads] *= dim**-0.5
            zero, one = torch.zeros(dim, device=qk.device), torch.ones(dim, device=qk.device)
            partner = apply_rotary(qk.transpose(1, 2), zero, one).transpose(1, 2)
            self._qkv = (key, qk, partner.contiguous(), weight.detach().float().clone(), None)
        _, qk, partner, out, position = self._qkv
        if position != self.position:  # rotated = cos * rows + sin * partner rows, written into the fused weight
            cos, sin = (t.to(weight.device) for t in rotary_columns(self.position, dim, max_period))
            rotated = out[: 2 * rows].view(2 * heads, dim, inputs)
            torch.mul(qk, cos, out=rotated).addcmul_(partner, sin)
            self._qkv = (*self._qkv[:4], self.position)
        return out

    def work(self, seqs: int, heads: int, dim: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Float32 work space of one chunk's attention: scores, query, output, and for a cache in another type one
        key slice and one value frame converted to float32 (:func:`pixels_last_attention`)."""
        key = (self.horizon, seqs, heads, dim, like.device, like.dtype)
        if key not in self.scratch:
            sizes = [(self.horizon, heads, seqs), (heads, dim, seqs), (heads, dim, seqs)]
            if like.dtype != torch.float32:
                sizes += [(self.horizon, heads, seqs), (heads, dim, seqs)]
            self.scratch[key] = tuple(torch.empty(size, device=like.device) for size in sizes)
        return self.scratch[key]

    def ring(self, rows: slice, channels: int, seqs: int, like: torch.Tensor) -> torch.Tensor:
        """The ``(horizon, channels, s)`` ring buffer of the chunk of pixel rows ``rows`` (each frame's keys, then
        its values, channels first), allocated on the stream's first frame."""
        if rows.start not in self.buffers:
            if self.position:
                raise ValueError("the frame has another size than the stream's first frame; reset the stream")
            self.buffers[rows.start] = (like.new_zeros((self.horizon, channels, seqs)),)
        (ring,) = self.buffers[rows.start]
        if ring.shape != (self.horizon, channels, seqs) or ring.dtype != like.dtype:
            raise ValueError("the frame has another size or type than the stream's first frame; reset the stream")
        return ring

    def attend_frame(self, h: torch.Tensor, weight: torch.Tensor, heads: int, rows: slice) -> torch.Tensor:
        """Attention of the current frame's normalised features ``h (s, dim)`` (pixel rows ``rows``) over the cached
        frames of the horizon, this one included, with ``weight`` from :meth:`qkv_weight`: ``(dim, s)`` float32.

        The key/value projection is written straight into the frame's ring slot, channels first, and the query's
        into the float32 work space (a copy under another type): no layout change anywhere, and the output is the
        layout the output projection reads transposed."""
        seqs, dim = h.shape[0], weight.shape[0] // 3
        dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else h.dtype
        weight, h_t = weight.to(dtype), h.to(dtype).T
        ring = self.ring(rows, 2 * dim, seqs, h_t)
        scores, query, out, *converted = self.work(seqs, heads, dim // heads, ring)
        with torch.autocast(h.device.type, enabled=False):
            torch.mm(weight[dim:], h_t, out=ring[self.position % self.horizon])
            if dtype == torch.float32:
                torch.mm(weight[:dim], h_t, out=query.view(dim, seqs))
            else:
                query.view(dim, seqs).copy_(torch.mm(weight[:dim], h_t))
        filled = min(self.position + 1, self.horizon)  # before the horizon fills up, slots 0..position hold frames
        key = (rows.start, filled, scores.data_ptr())
        if key not in self._terms:  # views of the ring and the work space, made once per chunk and fill level
            keys, values = (part.unflatten(1, (heads, dim // heads)) for part in ring[:filled].split(dim, 1))
            self._terms[key] = (keys, values, attention_terms(query, keys, values, scores[:filled]))
        keys, values, terms = self._terms[key]
        pixels_last_attention(query, keys, values, scores[:filled], out, *converted, scaled=True, terms=terms)
        return out.view(dim, seqs)


def pixels_last_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scores: torch.Tensor,
                          out: torch.Tensor, key_slice: torch.Tensor | None = None,
                          value_frame: torch.Tensor | None = None, scaled: bool = False,
                          terms: tuple | None = None) -> None:
    """Softmax attention of one query frame ``query (heads, d, s)`` over ``keys``/``values (n, heads, d, s)``, into
    ``out (heads, d, s)``, with ``scores (n, heads, s)`` as scratch; float32 arithmetic whatever the cache's type
    (keys and values of another type are converted a slice at a time into ``key_slice (>= n, heads, s)`` and
    ``value_frame (heads, d, s)``). ``scaled``: the query is scaled by ``d ** -0.5`` already. ``terms``: the
    operands' views (:func:`attention_terms`), made once by a caller that attends over the same tensors again.

    The same arithmetic as ``F.scaled_dot_product_attention`` (scale ``d ** -0.5``), as 2 x (d + n) multiply-adds
    vectorised over the pixels, writing only into the given tensors: with pixels last, a head's d and n are loops
    of a few steps, where with pixels first they were 8-wide matrix products per pixel and head, the library
    kernels' worst case (benchmarks/temporal_block.py --stream, docs/benchmarks.md).
    """
    n, dim = len(keys), query.shape[1]
    key_terms, value_terms = terms or attention_terms(query, keys, values, scores)
    for j, (part, query_part) in enumerate(key_terms):
        part = part if key_slice is None else key_slice[:n].copy_(part)
        if j == 0:
            torch.mul(part, query_part, out=scores)
        else:
            scores.addcmul_(part, query_part)
    if not scaled:
        scores.mul_(dim**-0.5)
    scores.sub_(scores.amax(0)).exp_()
    total = scores.sum(0)
    for i, (part, weight) in enumerate(value_terms):
        part = part if value_frame is None else value_frame.copy_(part)
        if i == 0:
            torch.mul(part, weight, out=out)
        else:
            out.addcmul_(part, weight)
    out.div_(total[:, None])  # the softmax's normalisation, on the d-wide output rather than the n-wide weights


def attention_terms(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scores: torch.Tensor) -> tuple:
    """The pairs of views :func:`pixels_last_attention` multiplies: (key slice j, query row j) for each of the d
    channels, (value frame i, weight row i) for each of the n frames."""
    return ([(keys[:, :, j], query[:, j]) for j in range(query.shape[1])],
            [(values[i], scores[i, :, None]) for i in range(len(keys))])


def channels_first_attention(qkv: torch.Tensor, heads: int, frames: int, work: torch.Tensor,
                             plans: dict | None = None, scaled: bool = False) -> torch.Tensor:
    """Softmax attention over frames at every pixel of a chunk, in the channels-first layout of
    :meth:`TemporalAttentionLayer.forward_frames_first`: ``qkv (3 * dim, frames * s)`` (queries, keys, values;
    rows head-major; columns frame-major, pixels last) -> ``(dim, frames * s)`` float32. ``scaled``: the queries
    are scaled by ``d ** -0.5`` already (folded into the projection).

    The arithmetic of ``F.scaled_dot_product_attention`` (scale ``d ** -0.5``, float32 whatever ``qkv``'s type) as
    d + frames multiply-adds vectorised over the pixels of the chunk: queries, keys and values are views of the
    projection's output (no layout change), and with pixels last each step runs over all pixels and heads at once,
    where the library kernels run thousands of 8-wide, frames-long problems one by one (about 4x slower:
    benchmarks/temporal_block.py, docs/benchmarks.md). The softmax's normalisation is applied to the output
    (``d`` rows per frame) rather than to the weights (``frames`` rows). ``work``: float32, at least ``(4 * dim +
    heads * frames) * frames * s`` elements, overwritten. ``plans``: a dict kept by the caller while ``work`` lives,
    where the operand views of each chunk size are made once instead of for every chunk and layer (a fifth of the
    attention's time at 4096 rows).
    """
    if frames >= LIBRARY_ATTENTION_FRAMES:
        return _library_attention(qkv, heads, frames, work, scaled)
    key = (qkv.shape, heads, frames, work.data_ptr())
    plan = None if plans is None else plans.get(key)
    if plan is None:
        plan = _attention_plan(qkv.shape[0] // 3, qkv.shape[1], heads, frames, work)
        if plans is not None:
            plans[key] = plan
    qkv32, q, scores, out, score_terms, out_terms = plan
    qkv32.copy_(qkv)
    if not scaled:
        q.mul_(q.shape[1] ** -0.5)
    torch.mul(*score_terms[0], out=scores)  # scores[h, t, u] = q[h, :, t] . k[h, :, u], for all pixels at once
    for query, key_ in score_terms[1:]:
        scores.addcmul_(query, key_)
    scores.sub_(scores.amax(2, keepdim=True)).exp_()
    total = scores.sum(2, keepdim=True)  # (heads, t, 1, s)
    torch.mul(*out_terms[0], out=out)  # out[h, :, t] = sum_u scores[h, t, u] v[h, :, u]
    for weight, value in out_terms[1:]:
        out.addcmul_(weight, value)
    out.div_(total.transpose(1, 2))
    return out.view(qkv32.shape[0] // 3, -1)


def _library_attention(qkv: torch.Tensor, heads: int, frames: int, work: torch.Tensor, scaled: bool) -> torch.Tensor:
    """:func:`channels_first_attention` for long windows: per pixel and head, the scores as a batched matrix product
    (``frames x d`` by ``d x frames``), the library's softmax over their last dimension, and the output transposed,
    values ``d x frames`` by the weights read transposed (a product whose wide side is the frames: 2.8x faster than
    weights by values, whose output is d wide). About ``LIBRARY_ATTENTION_ROWS // frames`` pixels at a time, their
    queries, keys and values copied pixel-major into ``work``; the result is written channels first into ``work``."""
    dim, columns = qkv.shape[0] // 3, qkv.shape[1]
    dim_head, seqs = dim // heads, columns // frames
    step = min(seqs, max(1, LIBRARY_ATTENTION_ROWS // frames))
    out = work[: dim * columns].view(heads, dim_head, frames, seqs)
    staged = work[dim * columns :]
    query = staged[: dim * frames * step].view(step, heads, frames, dim_head)  # the output takes its place
    keys_values = staged[dim * frames * step : 3 * dim * frames * step].view(2, step, heads, dim_head, frames)
    scores = staged[3 * dim * frames * step : (3 * dim + heads * frames) * frames * step].view(-1, frames, frames)
    source = qkv.view(3, heads, dim_head, frames, seqs)
    for start in range(0, seqs, step):
        n = min(step, seqs - start)
        q, kv = query[:n], keys_values[:, :n]
        q.copy_(source[0, ..., start : start + n].permute(3, 0, 2, 1))
        kv.copy_(source[1:, ..., start : start + n].permute(0, 4, 1, 2, 3))
        if not scaled:
            q.mul_(dim_head**-0.5)
        weights = torch.bmm(q.view(-1, frames, dim_head), kv[0].view(-1, dim_head, frames), out=scores[: n * heads])
        weights = torch.softmax(weights, -1)
        attended = query.view(-1)[: n * dim * frames].view(n, heads, dim_head, frames)
        torch.bmm(kv[1].view(-1, dim_head, frames), weights.transpose(1, 2), out=attended.view(-1, dim_head, frames))
        out[..., start : start + n].copy_(attended.permute(1, 2, 3, 0))
    return out.view(dim, columns)


def _attention_plan(dim: int, columns: int, heads: int, frames: int, work: torch.Tensor) -> tuple:
    """The views of ``work`` that :func:`channels_first_attention` reads and writes for ``columns`` columns."""
    dim_head, seqs = dim // heads, columns // frames
    parts = work[: 4 * dim * columns].view(4, dim, columns)
    scores = work[4 * dim * columns : (4 * dim + heads * frames) * columns].view(heads, frames, frames, seqs)
    qkv32 = parts[:3].view(3 * dim, columns)
    q, k, v = (t.view(heads, dim_head, frames, seqs) for t in qkv32.split(dim))
    score_terms = [(q[:, j, :, None], k[:, j, None]) for j in range(dim_head)]
    out_terms = [(scores[:, None, :, u], v[:, :, None, u]) for u in range(frames)]
    return qkv32, q, scores, parts[3].view(heads, dim_head, frames, seqs), score_terms, out_terms


_FUSED_LINEAR: dict[torch.dtype, bool] = {}  # dtype -> whether oneDNN's fused linear runs here (probed once)


def _fused_linear_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The type a linear layer computes ``x`` in (autocast's, else ``x``'s) if oneDNN's fused linear + GELU / + add
    (``torch.ops.mkldnn._linear_pointwise``, what torch.compile emits on CPU) runs it here and gives the unfused
    values on a probe; else None (another device, a build without oneDNN, a CPU without that type)."""
    if x.device.type != "cpu":
        return None
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    if dtype not in _FUSED_LINEAR:
        try:  # outside autocast, which would change the reference's type
            with torch.autocast("cpu", enabled=False):
                _FUSED_LINEAR[dtype] = _fused_linear_probe(dtype)
        except (AttributeError, RuntimeError, NotImplementedError):
            _FUSED_LINEAR[dtype] = False
    return dtype if _FUSED_LINEAR[dtype] else None


def _fused_linear_probe(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused linear + GELU and linear + add give the unfused values on a small input."""
    probe, weight = torch.linspace(-2, 2, 8).view(2, 4).to(dtype), torch.ones(3, 4, dtype=dtype)
    fused = torch.ops.mkldnn._linear_pointwise(probe, weight, None, "gelu", [], "none")
    added = torch.ops.mkldnn._linear_pointwise.binary(probe, fused, weight, None, "add")
    product = F.linear(probe.float(), weight.float())
    return bool(torch.allclose(fused.float(), F.gelu(product), atol=0.05)
                and torch.allclose(added.float(), product + fused.float(), atol=0.05))


def linear_gelu(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``F.gelu(linear(x))`` (exact GELU), as one oneDNN call where it runs (:func:`_fused_linear_dtype`): the
    activation is applied as the product is written instead of in a pass of its own over the 4x-wide features."""
    dtype = _fused_linear_dtype(x)
    if dtype is None:
        return F.gelu(linear(x))
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), linear.weight.to(dtype), linear.bias.to(dtype), "gelu",
                                              [], "none")


def linear_add(linear: nn.Linear, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``residual + linear(x)``, as one oneDNN call where it runs and ``residual`` has the computing type. An ``x``
    read transposed (a channels-first attention output) goes to the BLAS product with ``residual`` as its
    accumulator instead, which reads it as it is where oneDNN first copies it (1.3-1.5x faster at 4096 rows)."""
    dtype = _fused_linear_dtype(x)
    if dtype is None or residual.dtype != dtype:
        return residual + linear(x)
    if x.dim() == 2 and x.stride(0) == 1 and x.shape[1] > 1:
        with torch.autocast(x.device.type, enabled=False):
            return torch.addmm(residual, x.to(dtype), linear.weight.to(dtype).T).add_(linear.bias.to(dtype))
    return torch.ops.mkldnn._linear_pointwise.binary(x.to(dtype), residual, linear.weight.to(dtype),
                                                     linear.bias.to(dtype), "add")


class TemporalAttentionLayer(nn.Module):
    """Pre-norm self-attention over frames followed by a GELU feed-forward.

    Bidirectional (default): sinusoidal frame positions are added to the normalised input. Causal: queries and
    keys are rotated by their frame position (RoPE) and a frame attends to the last ``horizon`` frames only; with
    a :class:`KVCache` attached (``self.cache``, see :func:`streaming`) the input is one new frame and the earlier
    ones come from the cache.
    """

    def __init__(self, dim: int, num_heads: int, ff_mult: int, max_period: float, horizon: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.max_period = max_period
        #: None: bidirectional; else the causal horizon in frames
        self.horizon = horizon
        self.cache: KVCache | None = None
        # Frame-position encodings built once per (frames, device, dtype), not on every call.
        self._positions: dict[tuple, torch.Tensor] = {}
        self._scaled_qkv: tuple | None = None  # (weight's identity and version, weight with scaled query rows)
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

    def forward(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """``x``: ``(S, T, dim)``, S independent sequences (pixels) of T frames; ``rows``: which pixels of the
        whole frame these S are (used only with a cache)."""
        seqs, frames, dim = x.shape
        if self.cache is not None:
            return self._forward_cached(x, rows if rows is not None else slice(0, seqs))
        h = self.norm1(x)
        if self.horizon is None:
            h = h + self.positions(frames, dim, x.device, x.dtype)
        q, k, v = self.to_qkv(h).reshape(seqs, frames, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if self.horizon is None:
            attn = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = self._causal_attention(q, k, v)
        x = x + self.to_out(attn.transpose(1, 2).reshape(seqs, frames, dim))
        return x + self.ff(self.norm2(x))

    def _forward_cached(self, x: torch.Tensor, rows: slice) -> torch.Tensor:
        """:meth:`forward` of one streamed frame ``x (S, 1, dim)`` through the cache: queries and keys come out of
        the projection rotated to the frame's position (:meth:`KVCache.qkv_weight`), the attention is
        :meth:`KVCache.attend_frame` (channels first, read transposed by the output projection), and without
        gradients the output projection and the feed-forward run as oneDNN's fused linear + add / + GELU."""
        seqs, frames, dim = x.shape
        if frames != 1:
            raise ValueError("a streaming temporal layer takes one frame at a time")
        y = x.reshape(seqs, dim)
        weight = self.cache.qkv_weight(self.to_qkv.weight, self.num_heads, self.max_period)
        attn = self.cache.attend_frame(self._norm_as_input(self.norm1, y), weight, self.num_heads, rows).T
        first, act, second = self.ff
        if torch.is_grad_enabled() or not (isinstance(act, nn.GELU) and act.approximate == "none"):
            y = y + self.to_out(attn.to(y.dtype))
            return (y + self.ff(self.norm2(y))).view(seqs, 1, dim)
        y = linear_add(self.to_out, attn, y)
        return linear_add(second, linear_gelu(first, self._norm_as_input(self.norm2, y)), y).view(seqs, 1, dim)

    def forward_frames_first(self, y: torch.Tensor, frames: int, work: torch.Tensor, plans: dict | None = None
                             ) -> torch.Tensor:
        """:meth:`forward` of a bidirectional layer without a cache, on ``y (frames * s, dim)``: the rows of a chunk of
        s pixels, frame-major. The query/key/value projection is written channels first, ``(3 * dim, frames * s)``
        (one matrix product reading ``h`` transposed), which is the layout :func:`channels_first_attention` reads its
        operands from as they are; the output projection reads the attention's result transposed: no copy for a
        layout change anywhere. The attention's scale is folded into the projection's query rows
        (:meth:`_scaled_qkv_weight`); ``plans``: see :func:`channels_first_attention`."""
        dim = y.shape[1]
        h = self._norm_as_input(self.norm1, y).view(frames, -1, dim) + self.positions(frames, dim, y.device,
                                                                                       y.dtype)[:, None]
        attn = channels_first_attention(torch.matmul(self._scaled_qkv_weight(), h.view(-1, dim).T), self.num_heads,
                                        frames, work, plans, scaled=True)
        y = linear_add(self.to_out, attn.T, y)
        first, act, second = self.ff
        if not (isinstance(act, nn.GELU) and act.approximate == "none"):
            return y + self.ff(self.norm2(y))
        return linear_add(second, linear_gelu(first, self._norm_as_input(self.norm2, y)), y)

    def _scaled_qkv_weight(self) -> torch.Tensor:
        """The query/key/value projection's weight with its query rows scaled by ``d ** -0.5`` (made once per version
        of the weight; inference only)."""
        weight = self.to_qkv.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._scaled_qkv is None or self._scaled_qkv[0] != key:
            scaled = weight.detach().clone()
            scaled[: len(scaled) // 3] *= (len(scaled) // 3 // self.num_heads) ** -0.5
            self._scaled_qkv = (key, scaled)
        return self._scaled_qkv[1]

    @staticmethod
    def _norm_as_input(norm: nn.LayerNorm, y: torch.Tensor) -> torch.Tensor:
        """``norm(y)``; under autocast, in ``y``'s type when that is the type the next linear layer computes in
        (float32 statistics and weights, one rounding of the output), where autocast writes float32 that the linear
        layer then converts: one pass over the features instead of two."""
        if not (torch.is_autocast_enabled(y.device.type) and y.dtype == torch.get_autocast_dtype(y.device.type)):
            return norm(y)
        with torch.autocast(y.device.type, enabled=False):
            return F.layer_norm(y, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def _causal_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Rotary positions, then the horizon mask (offline; a streamed frame goes through :meth:`_forward_cached`)."""
        frames = q.shape[2]
        cos, sin = rotary_tables(torch.arange(frames, device=q.device), q.shape[-1], self.max_period, q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(frames, self.horizon, q.device))


class TemporalBlock(nn.Module):
    """GroupNorm, projection in, ``num_layers`` temporal attention layers, zero-initialised projection out, residual.

    Input and output are ``(B*T, C, H, W)`` feature maps with frames of a clip contiguous (``b * T + t``).
    """

    def __init__(self, channels: int, config: TemporalConfig | None = None):
        super().__init__()
        config = config or TemporalConfig()
        heads = max(1, min(config.num_heads, channels))
        inner = heads * (config.head_dim or max(1, channels // heads))
        horizon = config.horizon if config.causal else None
        self.norm = nn.GroupNorm(math.gcd(config.norm_groups, channels), channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.layers = nn.ModuleList(
            TemporalAttentionLayer(inner, heads, config.ff_mult, config.max_period, horizon)
            for _ in range(config.num_layers)
        )
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        # Recompute the layers in the backward pass instead of keeping what they save (torch.utils.checkpoint):
        # the finest block's attention and 4x-wide feed-forward held over half of a training step's saved tensors.
        # Same gradients; the layers' forward runs twice. Off unless a caller sets it (as diffusers' models do).
        self.gradient_checkpointing = False

    def _sequences(self, y: torch.Tensor, rows: slice) -> torch.Tensor:
        """Projection in, attention layers, projection out on ``(S, T, C)`` pixel sequences (pixels ``rows``)."""
        y = self.proj_in(y)
        for layer in self.layers:
            y = layer(y, rows)
        return self.proj_out(y)

    def forward(self, x: torch.Tensor, num_frames: int, inplace: bool = False) -> torch.Tensor:
        """``x + block(x)``; with ``inplace`` (a caller that no longer needs ``x``) the inference path may write the
        result into ``x`` itself and return it."""
        bt, c, h, w = x.shape
        b = bt // num_frames
        streamed = any(layer.cache is not None for layer in self.layers)
        chunk = STREAM_CHUNK_ROWS if streamed else max(1, CHUNK_ROWS // num_frames)
        if b == 1 and not torch.is_grad_enabled() and x.is_contiguous(memory_format=torch.channels_last):
            return self._forward_lean(x, chunk, inplace)
        y = self.norm(x).reshape(b, num_frames, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, num_frames, c)
        sequences = self._sequences
        if self.gradient_checkpointing and torch.is_grad_enabled():
            def sequences(part: torch.Tensor, rows: slice) -> torch.Tensor:
                return checkpoint(self._sequences, part, rows, use_reentrant=False)
        y = torch.cat([sequences(y[i : i + chunk], slice(i, i + chunk)) for i in range(0, len(y), chunk)])
        y = y.reshape(b, h, w, num_frames, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)
        return x + y

    def _forward_lean(self, x: torch.Tensor, chunk: int, inplace: bool = False) -> torch.Tensor:
        """Inference on one clip of channels-last maps ``(T, C, H, W)``, a chunk of pixels at a time from start to
        end: the group norm from per-frame statistics, the attention layers, and ``x + block`` written straight
        into the output. A window's maps are held twice (input, output) instead of six times (the normalised
        maps in float32, the chunks' outputs, their concatenation, its transpose); the values are those of the
        other path up to float rounding in the norm; with ``inplace``, once (each chunk of pixels depends on its own
        input only, and the norm's statistics are taken first). The (pixel, frame, channel) views are views."""
        t, c, h, w = x.shape
        scale, shift = self._norm_affine(x)  # (T, C) each, float32: normed = x * scale + shift
        channels_first = self._channels_first()
        axis = 1 if channels_first else 0  # of the pixels: chunks (T, s, C) for channels-first layers, else (s, T, C)
        flat = x.permute(0, 2, 3, 1).reshape(t, h * w, c)
        flat, scale, shift = (flat, scale[:, None], shift[:, None]) if channels_first else (flat.transpose(0, 1),
                                                                                           scale, shift)
        rows = min(chunk, h * w) * t
        normed_buffer = x.new_empty(rows * c, dtype=torch.float32)  # reused per chunk, as the work space
        work = x.new_empty(self._work_size(rows, t) if channels_first else 0, dtype=torch.float32)
        plans: dict = {}  # the attention's views of ``work``, per chunk size (channels_first_attention)
        out = out_flat = None
        for i in range(0, h * w, chunk):
            part = flat.narrow(axis, i, min(chunk, h * w - i))
            normed = torch.addcmul(shift, part, scale, out=normed_buffer[: part.numel()].view(part.shape))
            part_out = (self._channels_first_sequences(normed, work, plans) if channels_first
                        else self._sequences(normed, slice(i, i + chunk)))
            if out is None:
                dtype = torch.promote_types(x.dtype, part_out.dtype)
                out = x if inplace and dtype == x.dtype else torch.empty_like(x, dtype=dtype,
                                                                             memory_format=torch.channels_last)
                out_flat = out.permute(0, 2, 3, 1).view(t, h * w, c)
                out_flat = out_flat if channels_first else out_flat.transpose(0, 1)
            torch.add(part, part_out, out=out_flat.narrow(axis, i, part.shape[axis]))
        return out

    def _channels_first(self) -> bool:
        """Whether the inference path runs the layers channels first (:meth:`_channels_first_sequences`): every
        layer bidirectional and without a cache (causal layers run through :meth:`_sequences`)."""
        bidirectional = all(layer.horizon is None and layer.cache is None for layer in self.layers)
        return bidirectional and self.proj_in.out_features > 1  # batch norm's kernel needs two channels or more

    def _work_size(self, columns: int, frames: int) -> int:
        """Float32 elements of the attention's work space for ``columns`` (frame, pixel) columns."""
        return (4 * self.proj_in.out_features + self.layers[0].num_heads * frames) * columns

    def _channels_first_sequences(self, normed: torch.Tensor, work: torch.Tensor, plans: dict | None = None
                                  ) -> torch.Tensor:
        """:meth:`_sequences` on a chunk ``normed (T, s, C)`` (frames first), through the layers'
        :meth:`~TemporalAttentionLayer.forward_frames_first`."""
        t, s, c = normed.shape
        y = self.proj_in(normed.view(t * s, c))
        for layer in self.layers:
            y = layer.forward_frames_first(y, t, work, plans)
        return self.proj_out(y).view(t, s, c)

    def _group_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and 1 / std of each frame's channel groups, per channel ``(T, C)``, in float32.

        Taken by GroupNorm's own kernel (the statistics of the autograd path), one frame at a time so that only a
        frame is held in float32; it reads channels-last maps in place, where a reduction over each group's rows
        first copied the frame to channels-first and took 4-8x longer."""
        groups, c = self.norm.num_groups, x.shape[1]
        stats = [torch.native_group_norm(frame.float(), None, None, 1, c, frame[0, 0].numel(), groups,
                                         self.norm.eps)[1:] for frame in x.split(1)]
        mean, rstd = (torch.cat(values) for values in zip(*stats, strict=True))  # (T, groups) each
        return mean.repeat_interleave(c // groups, dim=1), rstd.repeat_interleave(c // groups, dim=1)

    def _norm_affine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``scale``, ``shift`` ``(T, C)`` such that the group norm of ``x`` is ``x * scale + shift``: one pass."""
        mean, rstd = self._group_statistics(x)
        scale = rstd * self.norm.weight.float()
        return scale, self.norm.bias.float() - mean * scale


def attention_layers(model: nn.Module) -> list[TemporalAttentionLayer]:
    """Every temporal attention layer of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, TemporalAttentionLayer)]


def set_gradient_checkpointing(model: nn.Module, on: bool) -> None:
    """Turn :attr:`TemporalBlock.gradient_checkpointing` on or off in every temporal block of ``model``, and the
    model's own ``gradient_checkpointing`` (a :class:`~bufferanytime.models.base.VideoModel`'s) where it has one."""
    for module in model.modules():
        if isinstance(module, TemporalBlock):
            module.gradient_checkpointing = on
    if hasattr(model, "gradient_checkpointing"):
        model.gradient_checkpointing = on


def make_causal(model: nn.Module, horizon: int) -> None:
    """Turn every temporal block of ``model`` causal with ``horizon`` in place, keeping all weights.

    The weights of a causal block have the shapes of a bidirectional one, so a trained bidirectional model is a
    starting point for causal training (only the position encoding and the mask change). The model's
    ``temporal_config``, if it has one, is updated so that it is saved as causal.
    """
    for layer in attention_layers(model):
        layer.horizon = horizon
    if isinstance(getattr(model, "temporal_config", None), TemporalConfig):
        model.temporal_config = replace(model.temporal_config, causal=True, horizon=horizon)


@contextmanager
def streaming(layers: Sequence[TemporalAttentionLayer], caches: Sequence[KVCache]) -> Iterator[None]:
    """Within the ``with``, each causal layer of ``layers`` reads and writes its cache of ``caches`` (same order)."""
    if any(layer.horizon is None for layer in layers):
        raise ValueError("streaming needs causal temporal layers")
    for layer, cache in zip(layers, caches, strict=True):
        layer.cache = cache
    try:
        yield
    finally:
        for layer in layers:
            layer.cache = None


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
def capture_output(module: nn.Module) -> Iterator[list]:
    """Within the ``with``, every output of ``module`` is appended to the yielded list (a forward hook, removed
    after): how a model keeps an intermediate of a library module it calls as a whole."""
    outputs: list = []
    handle = module.register_forward_hook(lambda _m, _a, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()


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
