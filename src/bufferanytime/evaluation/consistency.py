"""Temporal consistency: OPW, the optical-flow based warping error of a predicted video.

Papers define OPW differently; here it is, exactly (the spirit of the paper's stabilization loss, Eq. 4-6 and
Alg. 2, measured on a prediction instead of trained on):

1. Normalisation (depth only): the relative disparity ``D`` of the whole video becomes ``(D - t) / s`` with
   ``t = median(D)`` and ``s = mean |D - t|`` taken over ALL pixels of ALL frames at once. One ``(t, s)`` per
   video removes the unknown global affine ambiguity but keeps (and so counts) per-frame scale/shift flicker.
   Normals are unit vectors and are used as they are.
2. Flow: between each pair of adjacent frames ``(k, k+1)``, ``k = 0..T-2``, forward ``O_f`` (k -> k+1) and
   backward ``O_b`` (k+1 -> k) flows computed on the RGB frames (RAFT-small with the official weights, DIS
   otherwise; never anything derived from the evaluated method), or the ground-truth flows of a synthetic set.
3. Masks: the forward term uses the pixels ``p`` of frame k with ``||O_f(p) + O_b(p + O_f(p))|| < tau``
   (``CYCLE_TAU`` pixels) whose target ``p + O_f(p)`` lies inside frame k+1 (:func:`bufferanytime.flow.cycle_mask`);
   the backward term the same with the roles swapped, on the pixels of frame k+1. With ground-truth flow the
   flow's own validity (not occluded, lands in the image) is required as well.
4. Terms: forward ``E_f = mean_{p in M_f} || D_{k+1}(p + O_f(p)) - D_k(p) ||_1`` and backward
   ``E_b = mean_{p in M_b} || D_k(p + O_b(p)) - D_{k+1}(p) ||_1``, with bilinear sampling
   (:func:`bufferanytime.flow.warp`) and the L1 norm over channels (the absolute difference for depth, the sum of
   the three absolute component differences for normals).
5. OPW = the mean of all ``E_f`` and ``E_b`` over the ``T - 1`` pairs (each term counts once; a term whose mask is
   empty is left out). Lower is better; NaN for a video with fewer than two frames or no matched pixel.

Unlike the training loss (which divides by all ``H * W`` pixels), each term is a mean over its matched pixels, so
the value does not depend on how many pixels the flow could match.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bufferanytime.constants import CYCLE_TAU
from bufferanytime.flow import FlowModel, cycle_mask, get_flow_model, warp
from bufferanytime.io.outputs import NpyStreamWriter

FLOW_BATCH = 4  # frame pairs sent to the flow model at once
AFFINE_MIN_SCALE = 1e-12  # a constant prediction has s = 0; it is perfectly consistent, so any s > 0 does


@dataclass
class SequenceFlows:
    """Flows between the adjacent frames of one video and the masks of the OPW terms (on-disk layout).

    ``fwd[k]`` goes from frame k to k+1 and ``bwd[k]`` from k+1 to k, ``(T-1, H, W, 2)`` float32 pixels;
    ``mask_fwd[k]`` (pixels of frame k) and ``mask_bwd[k]`` (pixels of frame k+1) are ``(T-1, H, W)`` bool.
    Arrays may be memory maps. Computed once per video and reused for every evaluated model.
    """

    fwd: np.ndarray
    bwd: np.ndarray
    mask_fwd: np.ndarray
    mask_bwd: np.ndarray
    method: str = ""

    def __len__(self) -> int:
        return len(self.fwd)

    @classmethod
    def from_flows(
        cls,
        fwd: np.ndarray,
        bwd: np.ndarray,
        valid_fwd: np.ndarray | None = None,
        valid_bwd: np.ndarray | None = None,
        tau: float = CYCLE_TAU,
        method: str = "",
    ) -> SequenceFlows:
        """Masks from the cycle check (and, e.g. for ground-truth flow, the flows' own validity masks)."""
        if np.shape(fwd) != np.shape(bwd) or np.ndim(fwd) != 4 or np.shape(fwd)[-1] != 2:
            raise ValueError(f"expected fwd and bwd (T-1, H, W, 2), got {np.shape(fwd)} and {np.shape(bwd)}")
        masks_f, masks_b = [], []
        for k in range(len(fwd)):
            m_f, m_b = _pair_masks(fwd[k], bwd[k], tau)
            if valid_fwd is not None:
                m_f &= np.asarray(valid_fwd[k], dtype=bool)
            if valid_bwd is not None:
                m_b &= np.asarray(valid_bwd[k], dtype=bool)
            masks_f.append(m_f)
            masks_b.append(m_b)
        h, w = np.shape(fwd)[1:3]
        empty = np.zeros((0, h, w), bool)
        return cls(fwd, bwd, np.stack(masks_f) if masks_f else empty, np.stack(masks_b) if masks_b else empty, method)


def _flow_tensor(flow: np.ndarray) -> torch.Tensor:
    """``(H, W, 2)`` (disk layout) -> ``(1, 2, H, W)``."""
    return torch.from_numpy(np.array(flow, dtype=np.float32)).permute(2, 0, 1)[None]  # a writable copy


def _pair_masks(fwd: np.ndarray, bwd: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    f, b = _flow_tensor(fwd), _flow_tensor(bwd)
    return cycle_mask(f, b, tau)[0].numpy(), cycle_mask(b, f, tau)[0].numpy()


def _to_unit(frames: list[np.ndarray]) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` frames -> ``(N, 3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


def estimate_flows(
    frames: Iterable[np.ndarray],
    flow_model: FlowModel | None = None,
    tau: float = CYCLE_TAU,
    directory: str | Path | None = None,
    progress: bool = False,
    desc: str = "flow",
) -> SequenceFlows:
    """Forward/backward flows and OPW masks of a video of uint8 RGB ``(H, W, 3)`` frames, streamed.

    ``flow_model`` defaults to DIS. With ``directory`` the flows and masks are written there as raw files and
    returned as memory maps (a long video's flows do not fit in memory); otherwise they are kept in memory.
    """
    flow_model = flow_model or get_flow_model("dis")
    names = ("fwd", "bwd", "mask_fwd", "mask_bwd")
    if directory is not None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        writers = {n: NpyStreamWriter(directory / f"{n}.raw", bool if n.startswith("mask") else np.float32)
                   for n in names}
        sinks = {n: writers[n].append for n in names}
    else:
        lists: dict[str, list] = {n: [] for n in names}
        sinks = {n: lists[n].append for n in names}

    def flush(src: list[np.ndarray], dst: list[np.ndarray]) -> None:
        a, b = _to_unit(src), _to_unit(dst)
        with torch.no_grad():
            fwd, bwd = flow_model(a, b).float(), flow_model(b, a).float()
            m_f, m_b = cycle_mask(fwd, bwd, tau), cycle_mask(bwd, fwd, tau)
        for i in range(len(src)):
            sinks["fwd"](fwd[i].permute(1, 2, 0).numpy())
            sinks["bwd"](bwd[i].permute(1, 2, 0).numpy())
            sinks["mask_fwd"](m_f[i].numpy())
            sinks["mask_bwd"](m_b[i].numpy())

    previous = None
    src, dst = [], []
    shape = None
    for frame in tqdm(frames, desc=desc, unit="frame", disable=not progress, leave=False):
        frame = np.asarray(frame, dtype=np.uint8)
        shape = frame.shape[:2]
        if previous is not None:
            src.append(previous)
            dst.append(frame)
            if len(src) == FLOW_BATCH:
                flush(src, dst)
                src, dst = [], []
        previous = frame
    if src:
        flush(src, dst)
    method = getattr(flow_model, "name", type(flow_model).__name__)
    h, w = shape or (0, 0)
    arrays = {}
    for n in names:
        dtype = bool if n.startswith("mask") else np.float32
        if directory is not None:
            writers[n].close()
            arrays[n] = writers[n].read() if writers[n].count else None
        else:
            arrays[n] = np.stack(lists[n]) if lists[n] else None
        if arrays[n] is None:  # fewer than two frames
            arrays[n] = np.zeros((0, h, w) if dtype is bool else (0, h, w, 2), dtype)
    return SequenceFlows(**arrays, method=method)


def affine_normalisation(pred: Sequence[np.ndarray] | np.ndarray) -> tuple[float, float]:
    """``(t, s)`` of the whole video: ``t = median``, ``s = mean |D - t|`` over all pixels of all frames."""
    values = np.asarray(pred, dtype=np.float32).reshape(-1)
    t = float(np.median(values))
    s = float(np.mean(np.abs(values.astype(np.float64) - t)))
    return t, max(s, AFFINE_MIN_SCALE)


def _as_channels(frame: np.ndarray, kind: str) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))
    return x[None, None] if kind == "depth" else x.permute(2, 0, 1)[None]


def _masked_l1(a: torch.Tensor, b: torch.Tensor, mask: np.ndarray) -> float | None:
    m = torch.from_numpy(np.array(mask, dtype=bool))
    count = int(m.sum())
    if count == 0:
        return None
    return float((a - b).abs().sum(dim=1)[0][m].double().sum()) / count


def opw(
    pred: Sequence[np.ndarray] | np.ndarray,
    frames: Sequence[np.ndarray] | np.ndarray | None = None,
    flow_model: FlowModel | None = None,
    *,
    flows: SequenceFlows | None = None,
    tau: float = CYCLE_TAU,
    normalize: bool | None = None,
) -> float:
    """OPW of a predicted video (lower = more consistent); see the module docstring for the exact definition.

    Args:
        pred: relative disparity ``(T, H, W)`` or unit normals ``(T, H, W, 3)`` (any sequence of frames).
        frames: the RGB frames ``(T, H, W, 3)`` uint8, used to compute the flows when ``flows`` is not given.
        flow_model: ``(src, dst) -> flow`` callable (:func:`bufferanytime.flow.get_flow_model`); DIS if None.
        flows: precomputed :class:`SequenceFlows` (e.g. computed once per video for all models, or ground truth).
        tau: cycle-check threshold in pixels, used when the flows are computed here.
        normalize: apply the per-video median / mean-absolute-deviation normalisation; default: True for depth,
            False for normals.
    """
    first = np.asarray(pred[0])
    if first.ndim == 2:
        kind = "depth"
    elif first.ndim == 3 and first.shape[-1] == 3:
        kind = "normal"
    else:
        raise ValueError(f"expected depth (T,H,W) or normals (T,H,W,3), got frames of shape {first.shape}")
    if len(pred) < 2:
        return math.nan
    if flows is None:
        if frames is None:
            raise ValueError("opw needs the RGB frames (or precomputed flows)")
        flows = estimate_flows(frames, flow_model, tau)
    if len(flows) != len(pred) - 1 or tuple(flows.fwd.shape[1:3]) != tuple(first.shape[:2]):
        raise ValueError(
            f"flows {tuple(flows.fwd.shape)} do not fit a prediction of {len(pred)} frames of {first.shape[:2]}"
        )
    if normalize is None:
        normalize = kind == "depth"
    t, s = affine_normalisation(pred) if normalize else (0.0, 1.0)

    def load(k: int) -> torch.Tensor:
        return _as_channels((np.asarray(pred[k], dtype=np.float32) - t) / s, kind)

    terms: list[float] = []
    current = load(0)
    for k in range(len(pred) - 1):
        nxt = load(k + 1)
        fwd, bwd = _flow_tensor(flows.fwd[k]), _flow_tensor(flows.bwd[k])
        for term in (
            _masked_l1(warp(nxt, fwd), current, flows.mask_fwd[k]),  # on the grid of frame k
            _masked_l1(warp(current, bwd), nxt, flows.mask_bwd[k]),  # on the grid of frame k+1
        ):
            if term is not None:
                terms.append(term)
        current = nxt
    return float(np.mean(terms)) if terms else math.nan
