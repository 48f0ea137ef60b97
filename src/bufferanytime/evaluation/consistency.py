"""Temporal consistency: OPW, the optical-flow based warping error of a predicted video.

Papers define OPW differently; here it is, exactly (the spirit of the paper's stabilization loss, Eq. 4-6 and
Alg. 2, measured on a prediction instead of trained on):

1. Normalisation (the task's :meth:`~bufferanytime.tasks.Task.opw_normalization`): the relative disparity ``D``
   of the whole video becomes ``(D - t) / s`` with ``t = median(D)`` and ``s = mean |D - t|`` taken over ALL
   pixels of ALL frames at once. One ``(t, s)`` per video removes the unknown global affine ambiguity but keeps
   (and so counts) per-frame scale/shift flicker. Normals are unit vectors and are used as they are. Metric
   depth (metres) is compared as its logarithm (:meth:`~bufferanytime.tasks.Task.opw_values`), not normalised:
   the difference of logs is the relative change, so near and far weigh alike and a global scale cancels.
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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bufferanytime.constants import CYCLE_TAU
from bufferanytime.flow import FlowModel, cycle_mask, get_flow_model, warp
from bufferanytime.io.arrays import frames_to_tensor
from bufferanytime.io.outputs import NpyStreamWriter
from bufferanytime.tasks import DEPTH, NORMAL, Task

FLOW_BATCH = 4  # frame pairs sent to the flow model at once
FLOW_ARRAYS = {"fwd": np.float32, "bwd": np.float32, "mask_fwd": bool, "mask_bwd": bool}  # SequenceFlows' arrays


@dataclass
class SequenceFlows:
    """Flows between the adjacent frames of one video and the masks of the OPW terms (memory layout).

    ``fwd[k]`` goes from frame k to k+1 and ``bwd[k]`` from k+1 to k, ``(T-1, 2, H, W)`` float32 pixels;
    ``mask_fwd[k]`` (pixels of frame k) and ``mask_bwd[k]`` (pixels of frame k+1) are ``(T-1, H, W)`` bool.
    Arrays may be memory maps (or views of them, e.g. :func:`bufferanytime.io.arrays.flows_from_disk` of a
    ``(T-1, H, W, 2)`` file). Computed once per video and reused for every evaluated model.
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
        if np.shape(fwd) != np.shape(bwd) or np.ndim(fwd) != 4 or np.shape(fwd)[1] != 2:
            raise ValueError(f"expected fwd and bwd (T-1, 2, H, W), got {np.shape(fwd)} and {np.shape(bwd)}")
        masks_f, masks_b = [], []
        for k in range(len(fwd)):
            m_f, m_b = _pair_masks(fwd[k], bwd[k], tau)
            if valid_fwd is not None:
                m_f &= np.asarray(valid_fwd[k], dtype=bool)
            if valid_bwd is not None:
                m_b &= np.asarray(valid_bwd[k], dtype=bool)
            masks_f.append(m_f)
            masks_b.append(m_b)
        h, w = np.shape(fwd)[2:]
        empty = np.zeros((0, h, w), bool)
        return cls(fwd, bwd, np.stack(masks_f) if masks_f else empty, np.stack(masks_b) if masks_b else empty, method)


def _flow_tensor(flow: np.ndarray) -> torch.Tensor:
    """One flow ``(2, H, W)`` -> ``(1, 2, H, W)``, a writable copy."""
    return torch.from_numpy(np.array(flow, dtype=np.float32))[None]


def _pair_masks(fwd: np.ndarray, bwd: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    f, b = _flow_tensor(fwd), _flow_tensor(bwd)
    return cycle_mask(f, b, tau)[0].numpy(), cycle_mask(b, f, tau)[0].numpy()


class _FlowStore:
    """Where :func:`estimate_flows` puts its arrays: raw files read back as memory maps, or lists in memory."""

    def __init__(self, directory: str | Path | None):
        self.writers: dict[str, NpyStreamWriter] = {}
        self.lists: dict[str, list] = {n: [] for n in FLOW_ARRAYS}
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.writers = {n: NpyStreamWriter(Path(directory) / f"{n}.raw", t) for n, t in FLOW_ARRAYS.items()}

    def add(self, arrays: dict[str, torch.Tensor]) -> None:
        for name, batch in arrays.items():
            append = self.writers[name].append if self.writers else self.lists[name].append
            for item in batch.numpy():
                append(item)

    def result(self, size: tuple[int, int], method: str) -> SequenceFlows:
        """The flows and masks; empty ``(0, ...)`` arrays for a video of fewer than two frames."""
        arrays = {}
        for name, dtype in FLOW_ARRAYS.items():
            if self.writers:
                self.writers[name].close()
                arrays[name] = self.writers[name].read() if self.writers[name].count else None
            else:
                arrays[name] = np.stack(self.lists[name]) if self.lists[name] else None
            if arrays[name] is None:
                arrays[name] = np.zeros((0, *((2,) if dtype is np.float32 else ()), *size), dtype)
        return SequenceFlows(**arrays, method=method)


def _pair_batches(frames: Iterable[np.ndarray], sizes: list) -> Iterator[tuple[list, list]]:
    """Batches of at most FLOW_BATCH adjacent-frame pairs (src, dst) of uint8 frames; records the frame size."""
    previous, src, dst = None, [], []
    for frame in frames:
        frame = np.asarray(frame, dtype=np.uint8)
        sizes[:] = [frame.shape[:2]]
        if previous is not None:
            src.append(previous)
            dst.append(frame)
            if len(src) == FLOW_BATCH:
                yield src, dst
                src, dst = [], []
        previous = frame
    if src:
        yield src, dst


@torch.no_grad()
def _batch_flows(flow_model: FlowModel, src: list, dst: list, tau: float) -> dict[str, torch.Tensor]:
    """Forward and backward flows ``(N, 2, H, W)`` of a batch of pairs, and their cycle masks."""
    a, b = frames_to_tensor(src), frames_to_tensor(dst)
    fwd, bwd = flow_model(a, b).float(), flow_model(b, a).float()
    return {"fwd": fwd, "bwd": bwd, "mask_fwd": cycle_mask(fwd, bwd, tau), "mask_bwd": cycle_mask(bwd, fwd, tau)}


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
    store = _FlowStore(directory)
    sizes: list[tuple[int, int]] = []
    frames = tqdm(frames, desc=desc, unit="frame", disable=not progress, leave=False)
    for src, dst in _pair_batches(frames, sizes):
        store.add(_batch_flows(flow_model, src, dst, tau))
    method = getattr(flow_model, "name", type(flow_model).__name__)
    return store.result(sizes[0] if sizes else (0, 0), method)


def _masked_l1(a: torch.Tensor, b: torch.Tensor, mask: np.ndarray) -> float | None:
    m = torch.from_numpy(np.array(mask, dtype=bool))
    count = int(m.sum())
    if count == 0:
        return None
    return float((a - b).abs().sum(dim=1)[0][m].double().sum()) / count


def task_of(pred: Sequence[np.ndarray] | np.ndarray) -> Task:
    """The task of a predicted video from its frames' shape: ``(H, W)`` disparity or ``(H, W, 3)`` normals."""
    first = np.asarray(pred[0])
    if first.ndim == 2:
        return DEPTH
    if first.ndim == 3 and first.shape[-1] == 3:
        return NORMAL
    raise ValueError(f"expected depth (T,H,W) or normals (T,H,W,3), got frames of shape {first.shape}")


def _checked_flows(pred, frames, flow_model: FlowModel | None, flows: SequenceFlows | None, tau: float
                   ) -> SequenceFlows:
    """The given flows, or those of ``frames``; ValueError when they do not fit the prediction."""
    if flows is None:
        if frames is None:
            raise ValueError("opw needs the RGB frames (or precomputed flows)")
        flows = estimate_flows(frames, flow_model, tau)
    size = tuple(np.shape(pred[0])[:2])
    if len(flows) != len(pred) - 1 or tuple(flows.fwd.shape[2:]) != size:
        raise ValueError(f"flows {tuple(flows.fwd.shape)} do not fit a prediction of {len(pred)} frames of {size}")
    return flows


def opw(
    pred: Sequence[np.ndarray] | np.ndarray,
    frames: Sequence[np.ndarray] | np.ndarray | None = None,
    flow_model: FlowModel | None = None,
    *,
    flows: SequenceFlows | None = None,
    tau: float = CYCLE_TAU,
    task: Task | None = None,
    normalize: bool | None = None,
) -> float:
    """OPW of a predicted video (lower = more consistent); see the module docstring for the exact definition.

    Args:
        pred: relative disparity ``(T, H, W)`` or unit normals ``(T, H, W, 3)`` (any sequence of frames).
        frames: the RGB frames ``(T, H, W, 3)`` uint8, used to compute the flows when ``flows`` is not given.
        flow_model: ``(src, dst) -> flow`` callable (:func:`bufferanytime.flow.get_flow_model`); DIS if None.
        flows: precomputed :class:`SequenceFlows` (e.g. computed once per video for all models, or ground truth).
        tau: cycle-check threshold in pixels, used when the flows are computed here.
        task: what ``pred`` holds (default: from its shape, :func:`task_of`).
        normalize: apply the task's normalisation (:meth:`~bufferanytime.tasks.Task.opw_normalization`); default
            True; False compares the values as they are.
    """
    task = task or task_of(pred)
    if len(pred) < 2:
        return math.nan
    flows = _checked_flows(pred, frames, flow_model, flows, tau)
    t, s = (0.0, 1.0) if normalize is False else task.opw_normalization(pred)

    def load(k: int) -> torch.Tensor:
        return task.frame_from_disk((task.opw_values(np.asarray(pred[k], dtype=np.float32)) - t) / s)[None]

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
