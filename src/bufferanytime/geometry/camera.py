"""Camera poses and focal length of a video from its depth and point tracks (:func:`solve_tracks`; from dense
optical flows: :func:`solve_cameras`).

For each frame the camera-to-world pose relative to frame 0 (the world is frame 0's camera: x right, y up, z
towards the viewer, as the normals and the point clouds), in the depth's units: metres for metric depth, the
units of ``--depth-scale`` for relative depth.

1. Correspondences: the tracks (:mod:`~bufferanytime.geometry.tracks`) seen in frames ``a`` and ``b``, lifted to 3D
   by the depth of frame ``a`` (bilinear in inverse depth). Occlusions and tracking failures have ended their tracks.
2. Masked before any fit: points at depth discontinuities (a relative jump above ``edge_rtol`` to a neighbour,
   where depth flies between surfaces).
3. Relative pose of consecutive frames: the previous frame's motion when it explains :data:`GUESS_INLIERS` of the
   points, else 3-point RANSAC; then Levenberg-Marquardt on the inliers. Moving objects are RANSAC outliers, and so
   are points whose depth in frame ``b`` disagrees with the moved point by more than ``depth_check`` (relative,
   after the median ratio: an object moving along the line of sight) and tracks that move against the scene over
   ``static_gap`` frames. A frame that gives too few inliers is tracked from up to ``max_gap`` frames back instead;
   failing that it is marked lost (no pose is invented for it) and later frames are tracked from the last frame
   that was not.
4. Refinement, when ``window`` > 0 (off by default: it did not lower the errors on the benchmark's videos): over a
   sliding window of ``window`` frames (step: half of it), least squares of the reprojection errors of the points
   of the frame pairs ``refine_gaps`` apart that end in the window (Gauss-Newton with Huber weights and analytic
   derivatives, both frames of a pair varying when in the window; earlier frames are fixed).
5. Focal length when not given: the horizontal field of view, between ``fov_range`` degrees, whose poses best
   reproject the tracked points (a robust mean of squared errors over frame pairs ``focal_gap`` apart, searched on
   a grid then by golden section). Only rotation reveals the focal length (a wrong focal length with pure translation
   is an exact fit with a scaled translation), so a video turning by less than :data:`MIN_FOCAL_ROTATION_DEG` keeps
   the default field of view, source ``default``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import cv2
import numpy as np

from bufferanytime.geometry.intrinsics import DEFAULT_FOV_DEG, Intrinsics, fov_intrinsics
from bufferanytime.geometry.tracks import Tracks, tracks_from_flow
from bufferanytime.geometry.unproject import depth_edges

CV_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])  # this tool's camera axes (y up, z back) <-> OpenCV's (y down, z forward)
MIN_CAMERA_FRAMES = 3  # fewer frames give no camera path worth the name
MIN_FOCAL_ROTATION_DEG = 2.0  # total rotation below which the focal length cannot be estimated
STATIC_ROTATION_DEG = 0.5  # a video whose camera turns less than this ...
SECOND_MOTION = 0.2  # fraction of the points a second motion must explain to compete with the first
STATIC_TRANSLATION = 0.01  # ... and moves less than this fraction of the median depth is too static for a camera
FOCAL_GRID = 10  # fields of view first tried over the range searched (then golden section between neighbours)
FOCAL_TOLERANCE_DEG = 0.05  # golden section stops here: about 0.1 % of the focal length at 60 degrees
FOCAL_RESELECT_DEG = 10.0  # the grid's best this far from the first field of view: its points are found again
REFINE_POINTS = 100  # inliers per frame pair in the window refinement (evenly spread): plenty for 6 unknowns
RANSAC_HYPOTHESES = 200  # 3-point motions per RANSAC (all-inlier triple among them: 99.5 % at a 30 % inlier ratio)
RANSAC_PRESCORED = 100  # points every hypothesis is scored on (evenly spread over the matches) ...
RANSAC_KEPT = 20  # ... and the best hypotheses, scored again on
RANSAC_SCORED = 1000  # points
GUESS_INLIERS = 0.5  # fraction of the points the previous motion must explain to stand in for a RANSAC
STATIC_STRIDE = 4  # frames whose tracks one long-baseline pose judges static or moving


@dataclass(frozen=True)
class CameraSettings:
    """How :func:`solve_tracks` works; pixel thresholds are at the resolution of the arrays it is given."""

    ransac_px: float = 1.5  # RANSAC inlier threshold, pixels
    pose_rounds: int = 3  # Levenberg-Marquardt on the inliers, then their re-selection, this many times per pose
    min_threshold_px: float = 0.1  # the inlier threshold adapts to the errors' spread, down to this
    static_gap: int = 8  # frames over which points are checked for moving against the scene
    min_inliers: int = 30  # a pose from fewer inliers is a tracking failure
    min_inlier_ratio: float = 0.2  # ... as is one from fewer than this fraction of the valid points
    depth_check: float = 0.1  # relative depth disagreement above which a point is an outlier
    edge_rtol: float = 0.05  # depth discontinuities (see geometry.unproject.depth_edges)
    max_gap: int = 3  # frames back a frame may be tracked from when its predecessor fails
    window: int = 0  # frames per refinement window (step: half of it); 0: no refinement
    refine_gaps: tuple[int, ...] = (1, 2, 4)
    refine_iterations: int = 2  # Gauss-Newton steps per window
    focal_gap: int = 12  # frames between the pairs that judge a focal length
    focal_pairs: int = 6
    fov_range: tuple[float, float] = (25.0, 120.0)


@dataclass
class CameraTrack:
    """The result: ``poses`` (T, 4, 4) camera-to-world (this tool's axes; NaN for lost frames) and what they rest on."""

    poses: np.ndarray
    intrinsics: Intrinsics
    focal_source: str  # "given", "estimated" or "default"
    tracked: np.ndarray  # (T,) bool: False where tracking failed (no pose)
    inliers: list[int]  # per frame: points that supported its pose (frame 0: 0)
    reprojection_px: list[float]  # per frame: median reprojection error of those points (px)
    reliable: bool = True
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# correspondences


class Correspondences:
    """The tracks of a video lifted by its depth: the points of one frame and where another frame sees them."""

    def __init__(self, depth: Sequence[np.ndarray], tracks: Tracks, settings: CameraSettings):
        self.depth, self.tracks, self.settings = depth, tracks, settings
        self.height, self.width = np.shape(depth[0])
        self._edges: dict[int, np.ndarray] = {}
        self._inverse: dict[int, np.ndarray] = {}  # inverse depth of the frames last read
        self._static: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}

    def at_edges(self, a: int) -> np.ndarray:
        """(N,) bool per track of frame ``a``: its depth is sampled across a depth discontinuity."""
        if a not in self._edges:
            edges = depth_edges(np.asarray(self.depth[a], np.float64), self.settings.edge_rtol).astype(np.uint8)
            edges = cv2.dilate(edges, np.ones((2, 2), np.uint8), anchor=(0, 0))  # any pixel bilinear sampling reads
            xy = self.tracks.xy[a]
            i = np.clip(np.floor(xy[:, 1]).astype(int), 0, self.height - 1)
            j = np.clip(np.floor(xy[:, 0]).astype(int), 0, self.width - 1)
            self._edges[a] = edges[i, j] > 0
            if len(self._edges) > 64:
                self._edges.pop(next(iter(self._edges)))
        return self._edges[a]

    def pair(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``(index, xy_b)``: tracks of frame ``a`` (indices into its tracks) seen in ``b`` and not at a depth
        discontinuity in ``a``, and their pixel positions in ``b`` (pixel centres at +0.5)."""
        index, xy = self.tracks.pair(a, b)
        keep = ~self.at_edges(a)[index]
        return index[keep], xy[keep].astype(np.float64) + 0.5

    def ids(self, a: int, index: np.ndarray) -> np.ndarray:
        """The track ids of tracks ``index`` of frame ``a``."""
        return self.tracks.ids[a][index]

    def points(self, a: int, index: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
        """(N, 3) points of tracks ``index`` of frame ``a`` in OpenCV camera axes (z forward)."""
        xy = self.tracks.xy[a][index].astype(np.float64) + 0.5
        z = self.depth_at(a, xy)
        return np.stack([z * (xy[:, 0] - intrinsics.cx) / intrinsics.fx, z * (xy[:, 1] - intrinsics.cy) / intrinsics.fy,
                         z], axis=1)

    def depth_at(self, b: int, xy: np.ndarray) -> np.ndarray:
        """Depth of frame ``b`` at pixel positions ``xy`` (centres at +0.5), bilinear in inverse depth (exact on a
        plane, whose inverse depth is affine in the pixel coordinates); NaN outside."""
        if not len(xy):
            return np.zeros(0)
        if b not in self._inverse:
            with np.errstate(divide="ignore"):
                self._inverse[b] = 1 / np.asarray(self.depth[b], np.float32)
            if len(self._inverse) > 64:
                self._inverse.pop(next(iter(self._inverse)))
        inverse = self._inverse[b]
        x, y = (xy[:, 0] - 0.5).astype(np.float32), (xy[:, 1] - 0.5).astype(np.float32)
        out = cv2.remap(inverse, x[None], y[None], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]
        inside = (x >= 0) & (x <= self.width - 1) & (y >= 0) & (y <= self.height - 1)
        with np.errstate(divide="ignore"):
            return np.where(inside, 1 / out.astype(np.float64), np.nan)


def camera_matrix(intrinsics: Intrinsics) -> np.ndarray:
    """The 3x3 K of pixel-centre coordinates (centres at +0.5, as the correspondences)."""
    return np.array([[intrinsics.fx, 0, intrinsics.cx], [0, intrinsics.fy, intrinsics.cy], [0, 0, 1.0]])


def _project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    z = points[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (points[:, :2] / z) * np.diag(K)[:2] + K[:2, 2]


def _transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ T[:3, :3].T + T[:3, 3]


def _matrix(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64))[0]
    T[:3, 3] = np.ravel(tvec)
    return T


# ----------------------------------------------------------------------------------------------------------------
# relative poses


class PoseFit(NamedTuple):
    """The relative pose of two frames and the correspondences it was fitted to."""

    T: np.ndarray  # T_b<-a, OpenCV axes
    inliers: np.ndarray  # (N,) bool over ``index``/``xy``
    error_px: float  # median reprojection error of the inliers
    index: np.ndarray  # (N,) the points of frame a used (:meth:`Correspondences.pair`, after the static check)
    xy: np.ndarray  # (N, 2) their positions in frame b


def relative_pose(corr: Correspondences, a: int, b: int, intrinsics: Intrinsics, settings: CameraSettings,
                  ransac_px: float | None = None, static: bool = True,
                  guess: np.ndarray | None = None) -> PoseFit | None:
    """The pose of frame ``b`` relative to ``a`` (:class:`PoseFit`), or None when tracking fails. ``static``: leave
    out the points that move against the scene over a longer baseline (:func:`_static_only`). ``guess``: a likely
    T_b<-a (the previous frames' motion), taken instead of a RANSAC when it explains :data:`GUESS_INLIERS` of the
    points."""
    index, xy = corr.pair(a, b)
    if static:
        index, xy = _static_only(corr, a, index, xy, intrinsics, settings)
    if len(index) < settings.min_inliers:
        return None
    points, K, depth_b = corr.points(a, index, intrinsics), camera_matrix(intrinsics), corr.depth_at(b, xy)
    found = _guessed(points, xy, K, ransac_px or settings.ransac_px, settings, guess) if guess is not None else None
    found = found or _background_ransac(points, xy, _lift(xy, depth_b, K), K, ransac_px or settings.ransac_px,
                                        settings)
    if found is None:
        return None
    rvec, tvec, inl = found
    mask = np.zeros(len(index), bool)
    mask[inl] = True
    threshold = ransac_px or settings.ransac_px
    for _ in range(settings.pose_rounds):  # refine on the inliers, re-select them (depth check, tighter threshold)
        rvec, tvec = cv2.solvePnPRefineLM(points[mask], xy[mask], K, None, rvec, tvec)
        T = _matrix(rvec, tvec)
        mask = _inliers(depth_b, points, xy, T, K, threshold, settings.depth_check)
        if mask.sum() < max(settings.min_inliers, settings.min_inlier_ratio * len(index)):
            return None
        median = _median_error(points[mask], xy[mask], T, K)
        threshold = _adaptive_threshold(median, threshold, settings)
    return PoseFit(T, mask, median, index, xy)


def _guessed(points: np.ndarray, xy: np.ndarray, K: np.ndarray, px: float, settings: CameraSettings,
             guess: np.ndarray):
    """``(rvec, tvec, inlier indices)`` of ``guess`` when it explains enough of the points, else None."""
    if not np.isfinite(guess).all():
        return None
    inliers = np.flatnonzero(_errors2(guess[None, :3, :3], guess[None, :3, 3], points, xy, K)[0] < px**2)
    if len(inliers) < max(settings.min_inliers, GUESS_INLIERS * len(points)):
        return None
    return cv2.Rodrigues(guess[:3, :3])[0], guess[:3, 3].reshape(3, 1).copy(), inliers


def _lift(xy: np.ndarray, z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 3) points in OpenCV camera axes of pixels ``xy`` (centres at +0.5) at z-depth ``z``."""
    return np.stack([z * (xy[:, 0] - K[0, 2]) / K[0, 0], z * (xy[:, 1] - K[1, 2]) / K[1, 1], z], axis=1)


def _hypotheses(points: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(R (H, 3, 3), t (H, 3))``: rigid motions of random triples of 3D-3D matches (Umeyama, all at once). The
    similarity's scale is divided out of the translation: it moves no pixel, and per-frame depth scale may differ."""
    valid = np.flatnonzero(np.isfinite(target).all(axis=1) & (target[:, 2] > 0))
    if len(valid) < 3:
        return np.zeros((0, 3, 3)), np.zeros((0, 3))
    sample = valid[rng.integers(0, len(valid), size=(RANSAC_HYPOTHESES, 3))]
    p, q = points[sample], target[sample]
    mp, mq = p.mean(axis=1), q.mean(axis=1)
    pc, qc = p - mp[:, None], q - mq[:, None]
    U, S, Vt = np.linalg.svd(qc.transpose(0, 2, 1) @ pc)
    D = np.ones((len(sample), 3))
    D[:, 2] = np.sign(np.linalg.det(U @ Vt))
    R = (U * D[:, None, :]) @ Vt
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (S * D).sum(axis=1) / (pc**2).sum(axis=(1, 2))
        t = mq / scale[:, None] - (R @ mp[:, :, None])[..., 0]
    good = np.isfinite(t).all(axis=1) & (scale > 0)
    return R[good], t[good]


def _ransac(points: np.ndarray, xy: np.ndarray, target: np.ndarray, K: np.ndarray, px: float):
    """``(rvec, tvec, inlier indices)`` of the hypothesis of :func:`_hypotheses` with the least truncated squared
    reprojection error (MSAC) on at most :data:`RANSAC_SCORED` points, or None. 3-point hypotheses from the depth
    of both frames, all scored at once, cost a fraction of EPnP's per-hypothesis solves; the pose is refined on
    the 2D reprojection errors afterwards."""
    rng = np.random.default_rng(len(points))
    R, t = _hypotheses(points, target, rng)
    if not len(R):
        return None
    for count in (RANSAC_PRESCORED, RANSAC_SCORED):  # preemptive: all on a few points, the best few on more
        scored = np.linspace(0, len(points) - 1, min(len(points), count)).round().astype(int)
        costs = np.minimum(_errors2(R, t, points[scored], xy[scored], K), px**2).sum(axis=1)
        keep = np.argsort(costs, kind="stable")[:RANSAC_KEPT]
        R, t = R[keep], t[keep]
    inliers = np.flatnonzero(_errors2(R[:1], t[:1], points, xy, K)[0] < px**2)
    if len(inliers) < 6:
        return None
    return cv2.Rodrigues(R[0])[0], t[0].reshape(3, 1).copy(), inliers


def _errors2(R: np.ndarray, t: np.ndarray, points: np.ndarray, xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H, N) squared reprojection errors of ``points`` moved by each motion (inf behind the camera)."""
    x, y, z = (R[:, k, 0:1] * points[:, 0] + R[:, k, 1:2] * points[:, 1] + R[:, k, 2:3] * points[:, 2]
               + t[:, k : k + 1] for k in range(3))  # elementwise: a threaded BLAS product is slower at this size
    with np.errstate(divide="ignore", invalid="ignore"):
        ex = x * (K[0, 0] / z) + (K[0, 2] - xy[:, 0])
        ey = y * (K[1, 1] / z) + (K[1, 2] - xy[:, 1])
        err = ex * ex + ey * ey
    err[~(z > 0) | ~np.isfinite(err)] = np.inf
    return err


def _background_ransac(points: np.ndarray, xy: np.ndarray, target: np.ndarray, K: np.ndarray, px: float,
                       settings: CameraSettings):
    """``(rvec, tvec, inlier indices)`` of PnP in RANSAC, or None. When a second motion explains a large part
    (:data:`SECOND_MOTION`) of the points the first left out, the motion of the farther points is the camera's: a
    large object moving close to the camera can outnumber the static background's points, never be farther."""
    first = _ransac(points, xy, target, K, px)
    if first is None or len(first[2]) < settings.min_inliers:
        return None
    rest = np.ones(len(points), bool)
    rest[first[2]] = False
    if rest.sum() < max(settings.min_inliers, SECOND_MOTION * len(points)):
        return first
    second = _ransac(points[rest], xy[rest], target[rest], K, px)
    if second is None or len(second[2]) < max(settings.min_inliers, SECOND_MOTION * len(points)):
        return first
    second = (second[0], second[1], np.flatnonzero(rest)[second[2]])
    farther = np.median(points[second[2], 2]) > np.median(points[first[2], 2])
    return second if farther else first


def _median_error(points: np.ndarray, xy: np.ndarray, T: np.ndarray, K: np.ndarray) -> float:
    """Median reprojection error (px) of ``points`` of frame a moved by ``T`` against their positions ``xy``."""
    return float(np.median(np.linalg.norm(_project(_transform(T, points), K) - xy, axis=1)))


def _adaptive_threshold(median: float, threshold: float, settings: CameraSettings) -> float:
    """3 robust sigmas of the inliers' errors (their ``median``), within [min_threshold_px, threshold]: slow moving
    objects err by less than the RANSAC threshold but by far more than the static scene when depth and flow are
    good."""
    return float(np.clip(3 * 1.4826 * median, settings.min_threshold_px, threshold))


def _static_only(corr: Correspondences, a: int, index: np.ndarray, xy: np.ndarray, intrinsics: Intrinsics,
                 settings: CameraSettings) -> tuple[np.ndarray, np.ndarray]:
    """The correspondences of frame ``a`` less the tracks that are outliers to the camera's motion over
    ``static_gap`` frames: an object that moves slowly errs by a fraction of a pixel from one frame to the next,
    but by several over the longer baseline. The verdict is per track, so one long-baseline pose judges the
    tracks of :data:`STATIC_STRIDE` consecutive frames."""
    verdict = _static_verdict(corr, a - a % STATIC_STRIDE, intrinsics, settings)
    if verdict is None:
        return index, xy
    judged, values = verdict
    ids = corr.ids(a, index)
    at = np.clip(np.searchsorted(judged, ids), 0, max(0, len(judged) - 1))
    found = judged[at] == ids if len(judged) else np.zeros(len(ids), bool)
    state = np.where(found, values[at] if len(judged) else 0, 0)  # 0: not judged, 1: static, 2: moving
    keep = state == 1  # the tracks seen static over the baseline, when there are enough of them
    if keep.sum() < max(3 * settings.min_inliers, 0.2 * len(index)):
        keep = state != 2  # else also those it could not judge
    return index[keep], xy[keep]


def _static_verdict(corr: Correspondences, a: int, intrinsics: Intrinsics,
                    settings: CameraSettings) -> tuple[np.ndarray, np.ndarray] | None:
    """``(track ids, 1 static / 2 moving)`` of the tracks of frame ``a`` seen ``static_gap`` frames later (or
    earlier near the end of the video), by the pose between the two; None when there is none."""
    key = a  # whatever the focal length: a moving object moves under any
    if key not in corr._static:
        T = len(corr.depth)
        b = a + settings.static_gap if a + settings.static_gap < T else max(0, a - settings.static_gap)
        verdict = None
        if abs(b - a) > 1:
            found = relative_pose(corr, a, b, intrinsics, settings, static=False)
            if found is not None:
                verdict = (corr.ids(a, found.index), np.where(found.inliers, 1, 2).astype(np.int8))
        corr._static[key] = verdict
        if len(corr._static) > 64:
            corr._static.pop(next(iter(corr._static)))
    return corr._static[key]


def _inliers(depth_b: np.ndarray, points: np.ndarray, xy: np.ndarray, T: np.ndarray, K: np.ndarray,
             px: float, depth_check: float) -> np.ndarray:
    """Points that reproject within ``px`` and whose depth agrees with frame ``b``'s there (``depth_b`` at
    ``xy``; median ratio removed)."""
    moved = _transform(T, points)
    err = np.linalg.norm(_project(moved, K) - xy, axis=1)
    ratio = moved[:, 2] / depth_b
    good = (err < px) & np.isfinite(ratio) & (moved[:, 2] > 0)
    if good.sum() > 0:
        good &= np.abs(ratio / np.median(ratio[good]) - 1) < depth_check
    return good


# ----------------------------------------------------------------------------------------------------------------
# sliding-window refinement


def _edges(poses: np.ndarray, tracked: np.ndarray, frames: range, gaps: tuple[int, ...]) -> list[tuple[int, int]]:
    return [(b - g, b) for b in frames for g in gaps if b - g >= 0 and tracked[b - g] and tracked[b]]


def _edge_data(corr: Correspondences, poses: np.ndarray, a: int, b: int, intrinsics: Intrinsics,
               settings: CameraSettings) -> tuple[np.ndarray, np.ndarray] | None:
    """``(points of a, xy in b)``: at most :data:`REFINE_POINTS` static inliers (evenly spread) of the current
    poses, or None when fewer than 6."""
    index, xy = _static_only(corr, a, *corr.pair(a, b), intrinsics, settings)
    if len(index) < 6:
        return None
    K = camera_matrix(intrinsics)
    points = corr.points(a, index, intrinsics)
    T = np.linalg.inv(poses[b]) @ poses[a]
    keep = _inliers(corr.depth_at(b, xy), points, xy, T, K, 3 * settings.ransac_px, settings.depth_check)
    if keep.sum() >= 6:
        threshold = _adaptive_threshold(_median_error(points[keep], xy[keep], T, K), 3 * settings.ransac_px,
                                        settings)
        keep &= np.linalg.norm(_project(_transform(T, points), K) - xy, axis=1) < threshold
    if keep.sum() < 6:
        return None
    keep = np.flatnonzero(keep)
    keep = keep[np.linspace(0, len(keep) - 1, min(len(keep), REFINE_POINTS)).round().astype(int)]
    return points[keep], xy[keep]


def _refine_window(corr: Correspondences, poses: np.ndarray, tracked: np.ndarray, frames: list[int],
                   intrinsics: Intrinsics, settings: CameraSettings, cache: dict) -> None:
    """Gauss-Newton (Huber weights, Levenberg damping) of the reprojection errors over the edges ending in
    ``frames``, whose poses vary (right perturbations); earlier frames are fixed. ``poses`` are updated in place.
    ``cache``: each edge's points, chosen once (by the poses before the first window that holds it)."""
    K = camera_matrix(intrinsics)
    variable = {f: n for n, f in enumerate(frames)}
    data = []
    for a, b in _edges(poses, tracked, range(frames[0], frames[-1] + 1), settings.refine_gaps):
        if (a, b) not in cache:
            cache[a, b] = _edge_data(corr, poses, a, b, intrinsics, settings)
        if cache[a, b] is not None:
            data.append((a, b, *cache[a, b]))
    if not data:
        return
    edges = [(variable.get(a, -1), variable.get(b, -1)) for a, b, _, _ in data]
    points, xy = np.concatenate([d[2] for d in data]), np.concatenate([d[3] for d in data])
    starts = np.cumsum([0] + [len(d[2]) for d in data])[:-1]
    damping = 1e-3
    for _ in range(settings.refine_iterations):
        motions = np.stack([np.linalg.inv(poses[b]) @ poses[a] for a, b, _, _ in data])
        H, g = _normal_equations(motions, np.repeat(np.arange(len(data)), np.diff([*starts, len(points)])), starts,
                                 edges, points, xy, K, settings.ransac_px, len(frames))
        step = np.linalg.solve(H + damping * np.diag(np.diag(H) + 1e-9), -g)
        for f, n in variable.items():
            poses[f] = poses[f] @ _exp(step[6 * n : 6 * n + 6])
        if np.abs(step).max() < 1e-9:
            break


def _exp(delta: np.ndarray) -> np.ndarray:
    """The 4x4 transform of a small (rotation vector, translation) step."""
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(delta[:3])[0]
    T[:3, 3] = delta[3:]
    return T




def _normal_equations(motions: np.ndarray, edge: np.ndarray, starts: np.ndarray, edges: list[tuple[int, int]],
                      points: np.ndarray, xy: np.ndarray, K: np.ndarray, huber: float,
                      frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``(H, g)``: the Huber-weighted normal equations of all edges at once. Point ``n`` of frame ``a`` of edge
    ``edge[n]`` (motion ``motions[edge[n]]``: b <- a; points of an edge contiguous from ``starts``) is observed at
    ``xy[n]`` in ``b``; ``edges``: per edge the variable numbers of ``a`` and ``b`` (-1: fixed). Elementwise
    (closed-form Jacobians): numpy's stacked products of tiny matrices cost more than the arithmetic."""
    M = motions[edge]
    R = M[:, :3, :3]
    moved = np.einsum("nij,nj->ni", R, points)  # R p
    q = moved + M[:, :3, 3]
    u, v, iz = q[:, 0] / q[:, 2], q[:, 1] / q[:, 2], 1 / q[:, 2]
    fx, fy = K[0, 0], K[1, 1]
    r = np.stack([fx * u + K[0, 2], fy * v + K[1, 2]], axis=1) - xy
    zero = np.zeros_like(u)
    # b varies (q = E_b^-1 q0): d pixel / d(w_b, t_b) = Jp [[q]x, -I]
    JB = np.stack([fx * np.stack([u * v, -(1 + u * u), v, -iz, zero, u * iz], axis=1),
                   fy * np.stack([1 + v * v, -u * v, -u, zero, -iz, v * iz], axis=1)], axis=1)  # (N, 2, 6)
    # a varies (q = M E_a p): d q / d(w_a, t_a) = [-[R p]x R, R]; Jp [q]x is JB's rotation part, Jp is -JB's
    # translation part, and [R p]x = [q]x - [t]x
    Jp = -JB[:, :, 3:]
    t = M[:, :3, 3]
    tx = np.stack([np.stack([zero + 0, -t[:, 2], t[:, 1]], 1), np.stack([t[:, 2], zero, -t[:, 0]], 1),
                   np.stack([-t[:, 1], t[:, 0], zero], 1)], axis=1)  # [t]x (N, 3, 3)
    Jrot = -(JB[:, :, :3] - _rows_times(Jp, tx))  # -Jp [R p]x
    JA = np.concatenate([_rows_times(Jrot, R), _rows_times(Jp, R)], axis=2)
    norm = np.linalg.norm(r, axis=1)
    w = np.where(norm <= huber, 1.0, huber / np.maximum(norm, 1e-12))
    J = np.concatenate([JA, JB], axis=2).reshape(-1, 12)  # rows: x and y of each point
    weighted, r = J * np.repeat(w.ravel(), 2)[:, None], r.ravel()
    H, g = np.zeros((6 * frames, 6 * frames)), np.zeros(6 * frames)
    for k, (na, nb) in enumerate(edges):
        rows = slice(2 * starts[k], 2 * starts[k + 1] if k + 1 < len(starts) else len(J))
        Hk, gk = weighted[rows].T @ J[rows], weighted[rows].T @ r[rows]  # (12, 12), (12,): a then b
        for n, m, i, j in ((na, na, 0, 0), (na, nb, 0, 6), (nb, na, 6, 0), (nb, nb, 6, 6)):
            if n >= 0 and m >= 0:
                H[6 * n : 6 * n + 6, 6 * m : 6 * m + 6] += Hk[i : i + 6, j : j + 6]
        for n, i in ((na, 0), (nb, 6)):
            if n >= 0:
                g[6 * n : 6 * n + 6] += gk[i : i + 6]
    return H, g


def _rows_times(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(N, 2, 3) @ (N, 3, 3), elementwise."""
    return sum(A[:, :, k, None] * B[:, None, k, :] for k in range(3))


def _refine(corr: Correspondences, poses: np.ndarray, tracked: np.ndarray, intrinsics: Intrinsics,
            settings: CameraSettings) -> None:
    step, cache = max(1, settings.window // 2), {}
    for start in range(1, len(poses), step):
        frames = [f for f in range(start, min(start + settings.window, len(poses))) if tracked[f]]
        if frames:
            _refine_window(corr, poses, tracked, frames, intrinsics, settings, cache)


# ----------------------------------------------------------------------------------------------------------------
# tracking


def track(corr: Correspondences, intrinsics: Intrinsics, settings: CameraSettings,
          refine: bool = True) -> tuple[np.ndarray, np.ndarray, list[int], list[float]]:
    """Camera-to-world poses (T, 4, 4) in OpenCV axes (frame 0: identity; NaN when lost), tracked mask, inliers
    and their median reprojection errors (px; after the refinement when there is one: ``window`` > 0)."""
    T = len(corr.depth)
    poses = np.full((T, 4, 4), np.nan)
    poses[0] = np.eye(4)
    tracked = np.zeros(T, bool)
    tracked[0] = True
    inliers, errors = [0] * T, [0.0] + [float("nan")] * (T - 1)
    for b in range(1, T):
        previous = [a for a in range(b - 1, max(-1, b - 1 - settings.max_gap), -1) if tracked[a]]
        for a in previous or [int(np.flatnonzero(tracked[:b])[-1])]:  # beyond the gap: the last tracked frame
            guess = np.linalg.inv(poses[a]) @ poses[a - 1] if a == b - 1 and a > 0 and tracked[a - 1] else None
            found = relative_pose(corr, a, b, intrinsics, settings, guess=guess)
            if found is not None:
                poses[b] = poses[a] @ np.linalg.inv(found.T)
                tracked[b], inliers[b], errors[b] = True, int(found.inliers.sum()), found.error_px
                break
    if refine and settings.window > 0:
        _refine(corr, poses, tracked, intrinsics, settings)
        errors = reprojection_errors(corr, poses, tracked, intrinsics, settings)
    return poses, tracked, inliers, errors


def reprojection_errors(corr: Correspondences, poses: np.ndarray, tracked: np.ndarray, intrinsics: Intrinsics,
                        settings: CameraSettings) -> list[float]:
    """Per frame, the median reprojection error (px) of the inlier points from its predecessor (NaN if none)."""
    K, out = camera_matrix(intrinsics), [0.0]
    for b in range(1, len(poses)):
        a = b - 1
        if not (tracked[a] and tracked[b]):
            out.append(float("nan"))
            continue
        index, xy = corr.pair(a, b)
        points = corr.points(a, index, intrinsics)
        T = np.linalg.inv(poses[b]) @ poses[a]
        keep = _inliers(corr.depth_at(b, xy), points, xy, T, K, 3 * settings.ransac_px, settings.depth_check)
        err = np.linalg.norm(_project(_transform(T, points[keep]), K) - xy[keep], axis=1)
        out.append(float(np.median(err)) if err.size else float("nan"))
    return out


# ----------------------------------------------------------------------------------------------------------------
# focal length


class FocalUnobservable(ValueError):
    """The video does not tell its focal length (the error has no minimum inside the range searched)."""


FocalData = list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]  # (frame a, grid indices, xy in b, T_b<-a)


def focal_data(corr: Correspondences, pairs: list[tuple[int, int]], intrinsics: Intrinsics,
               settings: CameraSettings) -> FocalData:
    """The inlier points of each pair under ``intrinsics`` (RANSAC with a wide threshold, then the adaptive one),
    and its pose. The pairs are ``focal_gap`` frames apart, over which a moving object errs by more than the static
    scene: the static check and the pair's own inliers leave it out."""
    out = []
    for a, b in pairs:
        found = relative_pose(corr, a, b, intrinsics, settings, ransac_px=2 * settings.ransac_px)
        if found is not None:
            out.append((a, found.index[found.inliers], found.xy[found.inliers], found.T))
    return out


def focal_cost(corr: Correspondences, data: FocalData, intrinsics: Intrinsics, settings: CameraSettings) -> float:
    """Robust mean squared reprojection error (px^2, truncated) of the best pose of each pair under
    ``intrinsics``, on the same points whatever the focal length (so that costs compare)."""
    cap = (2 * settings.ransac_px) ** 2
    K = camera_matrix(intrinsics)
    costs = []
    for a, index, xy, T in data:
        points = corr.points(a, index, intrinsics)
        rvec, tvec = cv2.Rodrigues(T[:3, :3])[0], T[:3, 3].reshape(3, 1).copy()
        rvec, tvec = cv2.solvePnPRefineLM(points, xy, K, None, rvec, tvec)
        err = _project(_transform(_matrix(rvec, tvec), points), K) - xy
        costs.append(np.minimum(np.nan_to_num(np.sum(err**2, axis=1), nan=cap), cap))
    values = np.concatenate(costs) if costs else np.array([cap])
    return float(values.mean()) if values.size else cap


def _intrinsics_for_fov(fov: float, height: int, width: int, source: str) -> Intrinsics:
    return fov_intrinsics(fov, height, width, source)


def estimate_fov(corr: Correspondences, pairs: list[tuple[int, int]], settings: CameraSettings,
                 start_fov: float = DEFAULT_FOV_DEG, data: FocalData | None = None) -> float:
    """The horizontal field of view (degrees) of least :func:`focal_cost`: a coarse grid on the points found with
    ``start_fov`` (``data`` when already found), then golden section on the same points, or on those found with
    the grid's best when it is more than :data:`FOCAL_RESELECT_DEG` away."""
    h, w = corr.height, corr.width
    lo_fov, hi_fov = settings.fov_range
    data = data if data is not None else focal_data(corr, pairs, _intrinsics_for_fov(start_fov, h, w, ""), settings)

    def cost(fov: float) -> float:
        return focal_cost(corr, data, _intrinsics_for_fov(fov, h, w, ""), settings)

    grid = np.linspace(lo_fov, hi_fov, FOCAL_GRID)
    values = [cost(f) for f in grid]
    best = int(np.argmin(values))
    if best in (0, len(grid) - 1):
        raise FocalUnobservable(f"the reprojection error keeps falling towards a field of view of {grid[best]:g} "
                                "degrees, the end of the range searched")
    if abs(grid[best] - start_fov) > FOCAL_RESELECT_DEG:  # the points found with a camera far from the best
        data = focal_data(corr, pairs, _intrinsics_for_fov(grid[best], h, w, ""), settings)
    lo, hi = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = cost(c), cost(d)
    while hi - lo > FOCAL_TOLERANCE_DEG:
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = cost(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = cost(d)
    return float((lo + hi) / 2)


def _focal_pairs(T: int, settings: CameraSettings) -> list[tuple[int, int]]:
    gap = min(settings.focal_gap, T - 1)
    starts = np.unique(np.linspace(0, T - 1 - gap, settings.focal_pairs).round().astype(int)) if gap > 0 else []
    return [(int(a), int(a) + gap) for a in starts]


def rotation_deg(R: np.ndarray) -> float:
    """The angle of a rotation matrix, degrees."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R[:3, :3]) - 1) / 2, -1.0, 1.0))))


# ----------------------------------------------------------------------------------------------------------------
# the solver


def solve_cameras(depth: Sequence[np.ndarray], flow_fwd: Sequence[np.ndarray], flow_bwd: Sequence[np.ndarray],
                  intrinsics: Intrinsics | None = None, settings: CameraSettings | None = None) -> CameraTrack:
    """The cameras of a video from its z-depth ``(T, H, W)`` and flows ``(T-1, H, W, 2)`` (pixels, ``src(p)``
    matching ``dst(p + flow(p))``): a grid of points carried by the flows (:func:`tracks_from_flow`), then
    :func:`solve_tracks`. Any sequences of arrays will do (memory maps for long videos)."""
    height, width = np.shape(depth[0])
    return solve_tracks(depth, tracks_from_flow(flow_fwd, flow_bwd, height, width), intrinsics, settings)


def solve_tracks(depth: Sequence[np.ndarray], tracks: Tracks, intrinsics: Intrinsics | None = None,
                 settings: CameraSettings | None = None) -> CameraTrack:
    """The cameras of a video from its z-depth ``(T, H, W)`` and point tracks at that size: see the module
    docstring. ``intrinsics`` None: the focal length is estimated (square pixels, centred principal point)."""
    settings = settings or CameraSettings()
    T = len(depth)
    height, width = np.shape(depth[0])
    warnings: list[str] = []
    default = fov_intrinsics(DEFAULT_FOV_DEG, height, width, f"default fov {DEFAULT_FOV_DEG:g}")
    if T < MIN_CAMERA_FRAMES:
        poses = np.repeat(np.eye(4)[None], T, axis=0)
        warnings.append(f"the video has {T} frame(s): a camera path needs at least {MIN_CAMERA_FRAMES}; "
                        "poses are marked unreliable")
        return CameraTrack(poses, intrinsics or default, "given" if intrinsics else "default", np.ones(T, bool),
                           [0] * T, [0.0] * T, reliable=False, warnings=warnings)
    corr = Correspondences(depth, tracks, settings)
    source = "given"
    if intrinsics is None:
        intrinsics, source = _estimate_intrinsics(corr, default, settings, warnings)
    poses, tracked, inliers, errors = track(corr, intrinsics, settings)
    reliable = _check_motion(poses, tracked, depth, warnings)
    ours = np.array([CV_FLIP @ p @ CV_FLIP for p in poses])
    return CameraTrack(ours, intrinsics, source, tracked, inliers, errors, reliable, warnings)


def _estimate_intrinsics(corr: Correspondences, default: Intrinsics, settings: CameraSettings,
                         warnings: list[str]) -> tuple[Intrinsics, str]:
    """The estimated camera, or the default one when the video turns too little to tell. The pairs that judge the
    focal length are solved directly (the tracks they share), not through a first tracking of every frame."""
    pairs = _focal_pairs(len(corr.depth), settings)
    data = focal_data(corr, pairs, default, settings)
    turn = max((rotation_deg(T) for _, _, _, T in data), default=0.0)
    if not data:
        warnings.append(f"too few points are tracked over {settings.focal_gap} frames to estimate the focal length; "
                        f"the default field of view of {DEFAULT_FOV_DEG:g} degrees is used (give --fov or "
                        "--intrinsics)")
        return default, "default"
    if turn < MIN_FOCAL_ROTATION_DEG:
        warnings.append(f"the camera turns by {turn:.2f} degrees at most: too little to estimate the focal length; "
                        f"the default field of view of {DEFAULT_FOV_DEG:g} degrees is used (give --fov or "
                        "--intrinsics)")
        return default, "default"
    try:
        fov = estimate_fov(corr, pairs, settings, data=data)
    except FocalUnobservable as exc:
        warnings.append(f"the focal length could not be estimated ({exc}); the default field of view of "
                        f"{DEFAULT_FOV_DEG:g} degrees is used (give --fov or --intrinsics)")
        return default, "default"
    return replace(_intrinsics_for_fov(fov, corr.height, corr.width, f"estimated: fov {fov:.3f}"),
                   source=f"estimated from the video: horizontal fov {fov:.3f} degrees"), "estimated"


def _check_motion(poses: np.ndarray, tracked: np.ndarray, depth: Sequence[np.ndarray], warnings: list[str]) -> bool:
    """False, with a warning, when frames were lost or the camera hardly moves."""
    reliable = True
    lost = int((~tracked).sum())
    if lost:
        reliable = False
        warnings.append(f"tracking failed on {lost} of {len(tracked)} frames: they have no pose (marked lost)")
    good = np.flatnonzero(tracked)
    turn = max(rotation_deg(poses[k]) for k in good)
    move = max(float(np.linalg.norm(poses[k][:3, 3])) for k in good)
    scale = float(np.nanmedian(np.asarray(depth[len(depth) // 2], np.float64)))
    if turn < STATIC_ROTATION_DEG and move < STATIC_TRANSLATION * scale:
        reliable = False
        warnings.append(f"the camera hardly moves (at most {turn:.2f} degrees and {move:.3g} depth units): too static "
                        "for a camera path; poses are marked unreliable")
    return reliable
