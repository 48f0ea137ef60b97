"""Deferred back-propagation through a frame decoder (Sec. 3.1 and Algorithm 1 of the paper, Zhang et al. [60]).

A loss defined on decoded frames (e.g. the stabilization loss on normals decoded from latents) would need the
decoder's activations for every frame at once. Instead:

1. decode every chunk without gradient and concatenate the frames;
2. evaluate ``pixel_loss`` on all frames at once (so pairs that straddle chunk boundaries count) and take its
   gradient ``dL/dframes``;
3. re-decode chunk by chunk with gradient and pull ``dL/dframes`` of that chunk back to ``dL/dlatents``; only one
   chunk's decoder graph exists at a time;
4. return the surrogate ``sum(SG(dL/dlatents) * latents)``, whose gradient with respect to everything upstream of
   the latents is exactly that of ``pixel_loss(decode(latents))``.

This goes beyond Alg. 1, which evaluates the loss per chunk (and so ignores pairs across chunks) and scales it
by 1/K; here the gradient is the exact one of the full loss, with no extra factor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bufferanytime.constants import DEFERRED_CHUNK

FRAME_DIM = -4  # frames axis of (..., K, C, h, w) latents


def _chunks(num_frames: int, chunk: int) -> list[slice]:
    return [slice(i, min(i + chunk, num_frames)) for i in range(0, num_frames, chunk)]


def _take(x: torch.Tensor, sl: slice) -> torch.Tensor:
    index = [slice(None)] * x.ndim
    index[x.ndim + FRAME_DIM] = sl
    return x[tuple(index)]


def deferred_backward(
    latents: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    pixel_loss: Callable[[torch.Tensor], torch.Tensor],
    chunk: int = DEFERRED_CHUNK,
) -> torch.Tensor:
    """Scalar whose value is ``pixel_loss(decode(latents))`` and whose ``.backward()`` gives its exact gradient.

    Args:
        latents: ``(K, C, h, w)`` or ``(B, K, C, h, w)`` latents produced by the model (part of its graph).
        decode: maps a slice of latents along the frame axis, ``(..., k, C, h, w)``, to decoded frames
            ``(..., k, C', H, W)`` with the same leading dimensions (e.g. a wrapped VAE decoder). Its own
            parameters receive no gradient (it is treated as frozen).
        pixel_loss: maps all decoded frames ``(..., K, C', H, W)`` to a scalar.
        chunk: frames decoded at once with gradient (``DEFERRED_CHUNK`` = 4 in the paper).

    The decoder runs twice per frame (once without, once with gradient); peak decoder memory is that of one
    chunk plus the decoded frames themselves.
    """
    if latents.ndim not in (4, 5):
        raise ValueError(f"expected latents (K,C,h,w) or (B,K,C,h,w), got {tuple(latents.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    num_frames = latents.shape[FRAME_DIM]
    slices = _chunks(num_frames, chunk)
    detached = latents.detach()

    with torch.no_grad():
        frames = torch.cat([decode(_take(detached, sl)) for sl in slices], dim=FRAME_DIM)
    frames.requires_grad_(True)
    with torch.enable_grad():
        loss = pixel_loss(frames)
    if loss.numel() != 1:
        raise ValueError(f"pixel_loss must return a scalar, got shape {tuple(loss.shape)}")
    if not loss.requires_grad:  # the loss does not depend on the frames (e.g. everything masked)
        return loss.detach().reshape(()) + 0.0 * latents.sum()
    (grad_frames,) = torch.autograd.grad(loss, frames)
    del frames

    grad_latents = []
    for sl in slices:
        z = _take(detached, sl).requires_grad_(True)
        with torch.enable_grad():
            out = decode(z)
            (g,) = torch.autograd.grad(out, z, grad_outputs=_take(grad_frames, sl))
        grad_latents.append(g)
    grad = torch.cat(grad_latents, dim=FRAME_DIM)

    surrogate = (grad * latents).sum()
    return surrogate + (loss.detach().reshape(()) - surrogate.detach())
