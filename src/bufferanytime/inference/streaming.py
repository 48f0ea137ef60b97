"""Exact incremental inference of a causal video model: one frame in, that frame's buffer out.

A causal model's temporal blocks let frame t see frames ``t-H+1..t`` only, with rotary frame positions
(:mod:`bufferanytime.models.temporal`), so the keys and values a frame contributes never change once computed.
:class:`StreamingPredictor` keeps them, per temporal block and layer, in fixed ring buffers of H frames
(:class:`~bufferanytime.models.temporal.KVCache`): a new frame costs one per-frame pass of the model, whose
temporal blocks attend from that frame to the cache. No window is recomputed, memory is constant however long the
stream runs, and the output equals the model's offline forward over the same frames (tests/inference/
test_streaming.py). A bidirectional model cannot be streamed this way: its frames see the future.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from bufferanytime.errors import InputError
from bufferanytime.inference.pipeline import PRECISIONS
from bufferanytime.models.base import VideoModel
from bufferanytime.models.temporal import KVCache, attention_layers, streaming

NOT_CAUSAL = "not a causal model; use the rolling-window baseline"


class StreamingPredictor:
    """``step(frame (3,H,W) in [0,1]) -> that frame's buffer``: depth ``(H, W)``, normals ``(3, H, W)``, float32
    on the CPU, equal to ``model(frames)[0, t]`` over the frames stepped so far (since :meth:`reset`).

    Frames must already be at the model's inference size and keep one size within a stream.
    """

    def __init__(self, model: VideoModel, device: torch.device | str = "cpu", precision: str = "fp32"):
        if not model.temporal_config.causal:
            raise InputError(NOT_CAUSAL)
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = PRECISIONS[precision]
        self.horizon = int(model.temporal_config.horizon)
        self.layers = attention_layers(model)
        self.caches: list[KVCache] = []
        self.reset()

    @property
    def frames_seen(self) -> int:
        """Frames stepped since the last :meth:`reset`."""
        return self._position

    def reset(self) -> None:
        """Forget the cached frames: the next frame starts a new stream."""
        scratch: dict = {}  # the attention's work space, shared by all layers: they run one after another
        self.caches = [KVCache(self.horizon, scratch) for _ in self.layers]
        self._position = 0

    def cache_bytes(self) -> int:
        """Bytes held by the key/value caches and the attention's work space: constant once the first frame has
        been seen."""
        work = {id(t): t for cache in self.caches for group in cache.scratch.values() for t in group}
        return sum(cache.nbytes() for cache in self.caches) + sum(t.numel() * t.element_size() for t in work.values())

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """The buffer of ``frame`` given the frames of the horizon before it (one per-frame pass of the model)."""
        if frame.ndim != 3 or frame.shape[0] != 3:
            raise InputError(f"a stream frame must be (3, H, W), got {tuple(frame.shape)}")
        size = tuple(frame.shape[-2:])
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        for cache in self.caches:
            cache.position = self._position
        with autocast, streaming(self.layers, self.caches):
            features = self.model.encode_frames(frame[None].to(self.device))
            out = self.model.decode_frames(features, 1, size)[0]
        self._position += 1
        return out.float().cpu()
