"""Point tracks of a video (:class:`Tracks`): which pixel of one frame is which pixel of another, over many frames.

The camera solver (:mod:`~bufferanytime.geometry.camera`) reads its correspondences from them. Two sources:

- :class:`FrameTracker`, from the frames themselves: a few hundred points tracked by pyramidal Lucas-Kanade, each
  step checked by tracking back (a point whose backward track misses its start by more than ``fb_px`` ends there:
  occlusions, textureless patches, moving edges). Far cheaper than a dense flow, and a track carries a point over
  many frames without chaining a flow.
- :func:`tracks_from_flow`, from dense forward and backward flows (exact flows of the synthetic world): the same
  grid of points carried by the flow, ended where the two flows disagree.

Both keep one point per cell of a grid of ``points`` cells: where a cell has lost its point (it left the image, was
occluded, or failed the check), a new track starts in it (at the cell's most trackable pixel, or at its centre for
a flow); where points crowd into one cell, the oldest stays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TrackSettings:
    """How points are tracked; pixel values at the resolution of the frames tracked."""

    points: int = 400  # at most this many points per frame: one per cell of a grid
    fb_px: float = 1.0  # forward-backward disagreement above which a track ends
    window: int = 9  # Lucas-Kanade window (px)
    levels: int = 2  # Lucas-Kanade pyramid levels above the frame
    min_texture: float = 1e-3  # a new track needs this fraction of the frame's best corner strength (min eigenvalue)


class Tracks:
    """Per frame, the ids of the tracks seen in it (increasing) and their positions ``(N, 2)`` (x, y in pixel index
    coordinates: pixel (i, j) at (j, i)). A track seen in frames ``a`` and ``b`` is seen in every frame between."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self.ids: list[np.ndarray] = []
        self.xy: list[np.ndarray] = []
        self.count = 0  # tracks started so far (the next id)

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, ids: np.ndarray, xy: np.ndarray) -> None:
        """Add the next frame's tracks."""
        self.ids.append(np.asarray(ids, np.int64))
        self.xy.append(np.asarray(xy, np.float32).reshape(-1, 2))

    def start(self, ids: np.ndarray, xy: np.ndarray, new_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, xy)`` with new tracks at ``new_xy`` appended (new ids)."""
        new_ids = np.arange(self.count, self.count + len(new_xy))
        self.count += len(new_xy)
        return np.concatenate([ids, new_ids]), np.concatenate([xy, new_xy.astype(np.float32)]).reshape(-1, 2)

    def pair(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``(index, xy_b)``: the tracks of frame ``a`` (indices into its arrays) also seen in ``b``, and their
        positions in ``b``."""
        _, index_a, index_b = np.intersect1d(self.ids[a], self.ids[b], assume_unique=True, return_indices=True)
        return index_a, self.xy[b][index_b]


class _Grid:
    """The cells new tracks start in: ``points`` square cells over the frame."""

    def __init__(self, height: int, width: int, points: int):
        self.cell = max(2, int(math.sqrt(height * width / points)))
        self.rows, self.cols = math.ceil(height / self.cell), math.ceil(width / self.cell)
        self.height, self.width = height, width

    def thin(self, ids: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, xy)`` less all but the oldest track (smallest id) of each cell: points that crowd together
        (the camera moving back) add cost and no information."""
        cells = np.floor(xy / self.cell).astype(int)
        cell = np.clip(cells[:, 1], 0, self.rows - 1) * self.cols + np.clip(cells[:, 0], 0, self.cols - 1)
        order = np.argsort(ids, kind="stable")
        first = np.sort(order[np.unique(cell[order], return_index=True)[1]])
        return ids[first], xy[first]

    def empty(self, xy: np.ndarray) -> np.ndarray:
        """(rows, cols) bool: the cells with no point of ``xy``."""
        full = np.zeros((self.rows, self.cols), bool)
        cells = np.floor(xy / self.cell).astype(int)
        full[np.clip(cells[:, 1], 0, self.rows - 1), np.clip(cells[:, 0], 0, self.cols - 1)] = True
        return ~full

    def centres(self, empty: np.ndarray) -> np.ndarray:
        """(M, 2) the centre pixels of the ``empty`` cells that lie in the frame."""
        i, j = np.nonzero(empty)
        xy = np.stack([j * self.cell + self.cell // 2, i * self.cell + self.cell // 2], axis=1)
        return xy[(xy[:, 0] < self.width) & (xy[:, 1] < self.height)].astype(np.float32)

    def strongest(self, strength: np.ndarray, empty: np.ndarray, floor: float) -> np.ndarray:
        """(M, 2) per ``empty`` cell its pixel of greatest ``strength`` (H, W), where that exceeds ``floor``."""
        c = self.cell
        padded = np.full((self.rows * c, self.cols * c), -np.inf, np.float32)
        padded[: self.height, : self.width] = strength
        blocks = padded.reshape(self.rows, c, self.cols, c).transpose(0, 2, 1, 3).reshape(self.rows, self.cols, c * c)
        best = blocks.argmax(axis=2)
        value = np.take_along_axis(blocks, best[..., None], axis=2)[..., 0]
        i, j = np.nonzero(empty & (value > floor))
        k = best[i, j]
        return np.stack([j * c + k % c, i * c + k // c], axis=1).astype(np.float32)


class FrameTracker:
    """Tracks points through frames given one at a time (grayscale uint8, all of one size): :meth:`add`."""

    def __init__(self, height: int, width: int, settings: TrackSettings | None = None):
        self.settings = settings or TrackSettings()
        self.tracks = Tracks(height, width)
        self.grid = _Grid(height, width, self.settings.points)
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # frame, ids, xy

    def _follow(self, gray: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(kept, xy in the new frame)``: the points tracked there and back within ``fb_px``, inside it."""
        previous = self._previous[0]
        s = self.settings
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03)
        options = {"winSize": (s.window, s.window), "maxLevel": s.levels, "criteria": criteria}
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(previous, gray, xy, None, **options)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(gray, previous, moved, None, **options)
        h, w = self.tracks.height, self.tracks.width
        kept = ((ok[:, 0] == 1) & (ok_back[:, 0] == 1) & (np.linalg.norm(back - xy, axis=1) < s.fb_px)
                & (moved[:, 0] >= 0) & (moved[:, 0] <= w - 1) & (moved[:, 1] >= 0) & (moved[:, 1] <= h - 1))
        return kept, moved

    def add(self, gray: np.ndarray) -> None:
        """Track the points of the previous frame into ``gray`` and start new ones in the cells left empty."""
        ids, xy = np.zeros(0, np.int64), np.zeros((0, 2), np.float32)
        if self._previous is not None and len(self._previous[1]):
            kept, moved = self._follow(gray, self._previous[2])
            ids, xy = self.grid.thin(self._previous[1][kept], moved[kept])
        strength = cv2.cornerMinEigenVal(gray, 3)
        new = self.grid.strongest(strength, self.grid.empty(xy), self.settings.min_texture * float(strength.max()))
        ids, xy = self.tracks.start(ids, xy, new)
        self.tracks.append(ids, xy)
        self._previous = (gray, ids, xy)


def _flow_check(fwd: np.ndarray, bwd: np.ndarray, fb_px: float) -> np.ndarray:
    """(H, W, 3) float32: the flow ``fwd`` and 1 where it lands in the image and ``bwd`` brings it back within
    ``fb_px`` (0 elsewhere): sampled as one image."""
    h, w = fwd.shape[:2]
    xs = np.arange(w, dtype=np.float32)[None, :] + fwd[..., 0]
    ys = np.arange(h, dtype=np.float32)[:, None] + fwd[..., 1]
    back = cv2.remap(bwd, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    ok = inside & (np.linalg.norm(fwd + back, axis=-1) < fb_px)
    return np.dstack([fwd, ok.astype(np.float32)])


def _sample(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N, C) bilinear samples of ``image`` at ``xy`` (pixel index coordinates); 0 outside."""
    if not len(xy):
        return np.zeros((0, image.shape[2]), np.float32)
    x, y = (np.ascontiguousarray(xy[None, :, k], np.float32) for k in (0, 1))
    return cv2.remap(image, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)[0]


def tracks_from_flow(flow_fwd: Sequence[np.ndarray], flow_bwd: Sequence[np.ndarray], height: int, width: int,
                     settings: TrackSettings | None = None) -> Tracks:
    """The tracks of a grid of points carried by dense flows ``(T-1, H, W, 2)`` (pixels, ``src(p)`` matching
    ``dst(p + flow(p))``; forward and backward), bilinearly; a point ends where the two flows disagree by more
    than ``fb_px`` or it leaves the image."""
    settings = settings or TrackSettings()
    tracks, grid = Tracks(height, width), _Grid(height, width, settings.points)
    ids, xy = tracks.start(np.zeros(0, np.int64), np.zeros((0, 2), np.float32),
                           grid.centres(grid.empty(np.zeros((0, 2)))))
    tracks.append(ids, xy)
    for k in range(len(flow_fwd)):
        check = _flow_check(np.asarray(flow_fwd[k], np.float32), np.asarray(flow_bwd[k], np.float32), settings.fb_px)
        sample = _sample(check, xy)
        kept = sample[:, 2] > 0.99
        ids, xy = grid.thin(ids[kept], xy[kept] + sample[kept, :2])
        ids, xy = tracks.start(ids, xy, grid.centres(grid.empty(xy)))
        tracks.append(ids, xy)
    return tracks
