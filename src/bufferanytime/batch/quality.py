"""Per-video quality figures that need no ground truth, for filtering a collection by its run manifest.

- ``opw_dis``: the OPW of the prediction (:func:`bufferanytime.evaluation.opw`, the definition eval uses) with
  DIS flow computed on the input frames; lower = steadier over time.
- ``scale_jitter`` (depth): the mean over adjacent frame pairs of ``|log(m_{k+1} / m_k)|``, ``m_k`` the median
  of frame k's positive values (disparity, or metres for metric depth): how much the whole frame's scale jumps
  from one frame to the next, which a viewer sees as flicker. 0.01 is a 1% jump on average.

Both are computed on the first :data:`QUALITY_MAX_FRAMES` frames at a long side of at most :data:`QUALITY_SIDE`
pixels (prediction and frames alike, area-averaged): a bounded cost and bounded memory for any video. The
prediction is read from the written npz one frame at a time; without ``npz`` in ``--save`` there are no figures.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

QUALITY_SIDE = 160
QUALITY_MAX_FRAMES = 256


def _npz_frames(path: Path, key: str) -> Iterator[np.ndarray]:
    """The frames of array ``key`` of an uncompressed ``.npz``, read one at a time (never the whole video)."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(member)
        if fortran:
            raise ValueError(f"{path}: {key} is stored in Fortran order")
        frame_shape = shape[1:]
        size = int(np.prod(frame_shape)) * dtype.itemsize
        for _ in range(shape[0]):
            yield np.frombuffer(member.read(size), dtype=dtype).reshape(frame_shape)


def _small(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    scale = min(1.0, QUALITY_SIDE / max(height, width))
    if scale == 1.0:
        return np.ascontiguousarray(frame)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(np.ascontiguousarray(frame), size, interpolation=cv2.INTER_AREA)


def scale_jitter(pred: list[np.ndarray]) -> float:
    """Mean ``|log(m_{k+1} / m_k)|`` over adjacent frames (see the module docstring); NaN below two frames."""
    medians = []
    for frame in pred:
        positive = frame[frame > 0]
        medians.append(float(np.median(positive)) if positive.size else math.nan)
    jumps = [abs(math.log(b / a)) for a, b in zip(medians, medians[1:], strict=False) if a > 0 and b > 0]
    return float(np.mean(jumps)) if jumps else math.nan


def quality_figures(source: object, npz: Path, key: str, depth: bool) -> dict:
    """``opw_dis`` (and ``scale_jitter`` for depth) of one written prediction against its input ``source``."""
    from bufferanytime.evaluation import opw
    from bufferanytime.flow import get_flow_model

    pred = [_small(f.astype(np.float32)) for f in islice(_npz_frames(npz, key), QUALITY_MAX_FRAMES)]
    frames = [_small(f) for f in islice(iter(source), len(pred))]
    figures = {"frames_used": len(pred), "side": QUALITY_SIDE}
    figures["opw_dis"] = _finite(opw(pred, frames, get_flow_model("dis"))) if len(pred) >= 2 else None
    if depth:
        figures["scale_jitter"] = _finite(scale_jitter(pred))
    return figures


def _finite(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None
