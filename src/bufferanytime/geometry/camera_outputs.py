"""The camera part of a depth run (``--save poses,colmap,nerfstudio,exr-multi,fused,rrd``): point tracks of the
input (:class:`~bufferanytime.geometry.tracks.FrameTracker`, Lucas-Kanade), :func:`~bufferanytime.geometry.camera.
solve_tracks` on the predicted depth, and the writers
of :mod:`~bufferanytime.geometry.camera_exports`, all into the run's staging folder (moved into place with the
run's other files, or not at all).

Tracks and poses are computed at :data:`CAMERA_SIDE` pixels on the long side (poses do not depend on the
resolution; the focal length is scaled back to the input's). The frames at that size and their tracks are taken
as the run decodes the video for the model (:class:`CameraFrames`), so the video is decoded once. Depth: metres
for a metric model; for relative disparity ``s / disparity`` with the video's median depth at ``--depth-scale``
(zero shift), as the point clouds.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from bufferanytime.errors import InputError
from bufferanytime.geometry.camera import CameraTrack, solve_tracks
from bufferanytime.geometry.camera_exports import (
    write_colmap,
    write_exr_multi,
    write_fused,
    write_nerfstudio,
    write_poses,
    write_rrd,
)
from bufferanytime.geometry.camera_formats import camera_formats
from bufferanytime.geometry.intrinsics import Intrinsics
from bufferanytime.geometry.pointcloud import _matching_normals, depth_converter, depth_kind, npz_frames
from bufferanytime.geometry.tracks import FrameTracker
from bufferanytime.io.outputs import NpyStreamWriter
from bufferanytime.tasks import NORMAL

CAMERA_SIDE = 256  # long side (px) of the frames the tracks and the poses are computed on
MASKED = ("points at depth discontinuities; points whose forward and backward tracks disagree by more than 1 px or "
          "that leave the image (occlusions, tracking failures); RANSAC outliers, points that move against the scene "
          "over 8 frames (moving objects) and points whose depth disagrees with the next frame's by more than 10 %")
WORK_DIR = ".camera-work"  # small depth and frames while solving, inside the staging folder; removed before commit


def camera_size(height: int, width: int) -> tuple[int, int]:
    """The size ``(H, W)`` the camera of frames of ``height`` x ``width`` is solved at (:data:`CAMERA_SIDE`)."""
    scale = min(1.0, CAMERA_SIDE / max(height, width))
    return max(8, round(height * scale)), max(8, round(width * scale))


def _gray(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    small = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA) if frame.shape[:2] != size else frame
    return cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY), small


class CameraFrames:
    """What the camera needs of the input frames, taken from the run's one decode pass (:meth:`observe` on the
    frames going to the model): each frame at the working size (:func:`camera_size`), its RGB appended to a
    memory-mapped file in ``staging/WORK_DIR`` (memory stays flat for any video length) and its gray fed to the
    point tracker."""

    def __init__(self, staging: Path):
        self.work = staging / WORK_DIR
        self.work.mkdir()
        self.rgb = NpyStreamWriter(self.work / "rgb.raw", np.uint8)
        self.size: tuple[int, int] | None = None
        self.tracker: FrameTracker | None = None

    def add(self, frame: np.ndarray) -> None:
        """Take one ``(H, W, 3)`` uint8 input frame."""
        if self.tracker is None:
            self.size = camera_size(*frame.shape[:2])
            self.tracker = FrameTracker(*self.size)
        gray, small = _gray(frame, self.size)
        self.rgb.append(small)
        self.tracker.add(gray)

    def observe(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``frames``, unchanged, each taken on its way."""
        for frame in frames:
            self.add(frame)
            yield frame

    def close(self) -> None:
        """The end of the frames (the RGB file complete)."""
        self.rgb.close()


def video_camera(frames: Sequence[np.ndarray], depth: Sequence[np.ndarray],
                 intrinsics: Intrinsics | None = None) -> CameraTrack:
    """The camera of a video held in memory, solved as a depth run's (tracks and poses at :func:`camera_size`, the
    focal length estimated unless ``intrinsics`` are given): ``(H, W, 3)`` uint8 frames and their z-depth ``(H, W)``
    at the same size; the intrinsics are given back at the frames' size (poses do not depend on it)."""
    height, width = frames[0].shape[:2]
    size = camera_size(height, width)
    tracker = FrameTracker(*size)
    small = []
    for frame, z in zip(frames, depth, strict=True):
        tracker.add(_gray(frame, size)[0])
        small.append(cv2.resize(np.asarray(z, np.float32), (size[1], size[0]), interpolation=cv2.INTER_NEAREST))
    track = solve_tracks(small, tracker.tracks, None if intrinsics is None else intrinsics.for_size(*size))
    return replace(track, intrinsics=track.intrinsics.for_size(height, width))


def camera_frames(save: Sequence[str], staging: Path) -> CameraFrames | None:
    """A :class:`CameraFrames` for a run whose ``save`` asks for a camera format, else None (nothing taken)."""
    return CameraFrames(staging) if camera_formats(save) else None


def _small_depth(data: Sequence[np.ndarray], to_depth: Callable, size: tuple[int, int], work: Path) -> np.ndarray:
    """The depth at ``size``, as a memory map in ``work``."""
    writer = NpyStreamWriter(work / "depth.raw")
    for pred in data:
        writer.append(cv2.resize(to_depth(pred).astype(np.float32), (size[1], size[0]),
                                 interpolation=cv2.INTER_NEAREST))
    writer.close()
    return writer.read()


def _normals(out_dir: Path, shape: tuple[int, ...]) -> Callable[[], Iterator[np.ndarray] | None]:
    """A fresh iterator over the matching ``normal.npz`` frames at each call (None when there are none)."""
    first, _ = _matching_normals(out_dir, shape)
    if first is None:
        return lambda: None
    first.close()
    return lambda: npz_frames(out_dir / NORMAL.files.npz, NORMAL.array_key)


def camera_outputs(task, data: Sequence[np.ndarray], source, settings, staging: Path, out_dir: Path,
                   progress: bool = False, taken: CameraFrames | None = None) -> tuple[dict, dict]:
    """The camera formats of ``settings.save`` written into ``staging``: ``(outputs entries, meta entries)``.

    ``taken``: the input frames taken during the run's decode pass (:func:`camera_frames`); without them the
    input is decoded again here."""
    formats = camera_formats(settings.save)
    if not formats:
        return {}, {}
    if depth_kind(task) is None:
        raise InputError(f"--save {','.join(formats)} needs depth, not {task.name}")
    options = settings.point_cloud()
    start = time.perf_counter()
    to_depth, unprojection = depth_converter(task, data, options)
    height, width = data.shape[1:3]
    size = camera_size(height, width)
    try:
        taken, rgb = _taken(taken, source, staging, len(data))
        depth = _small_depth(data, to_depth, size, taken.work)
        spec = options.intrinsics
        given = spec.given
        track = solve_tracks(depth, taken.tracker.tracks, spec.resolve(*size) if given else None)
        small = track
        full = spec.resolve(height, width) if given else track.intrinsics.for_size(height, width)
        track = replace(track, intrinsics=full)
        for warning in track.warnings:
            print(f"warning: {source.name}: {warning}", file=sys.stderr)
        units = "metres" if depth_kind(task) == "metric" else unprojection["depth"]
        normals = _normals(out_dir, tuple(data.shape))
        outputs = _write(formats, track, small, data, to_depth, source, normals, staging, units, depth, rgb)
    finally:
        shutil.rmtree(staging / WORK_DIR, ignore_errors=True)
    meta = {"camera": {"intrinsics": {**full.to_meta(), "focal_source": track.focal_source},
                       "reliable": track.reliable, "warnings": track.warnings,
                       "lost_frames": [int(k) for k in np.flatnonzero(~track.tracked)],
                       "working_size": list(size), "flow": "Lucas-Kanade point tracks (OpenCV), checked backward",
                       "units": units,
                       "relative_depth_scale": unprojection.get("scale"),
                       "masked": MASKED, "seconds": round(time.perf_counter() - start, 3)}}
    return outputs, meta


def _taken(taken: CameraFrames | None, source, staging: Path, count: int) -> tuple[CameraFrames, np.ndarray]:
    """``taken`` (the input decoded here when None), checked against the ``count`` predictions, and its RGB."""
    if taken is None:
        taken = CameraFrames(staging)
        for frame in source:
            taken.add(frame)
    taken.close()
    if taken.rgb.count != count:
        raise InputError(f"the input gave {taken.rgb.count} frames for the camera, the predictions {count}")
    return taken, taken.rgb.read()


def _write(formats: list[str], track: CameraTrack, small: CameraTrack, data: Sequence[np.ndarray],
           to_depth: Callable, source, normals: Callable, staging: Path, units: str, depth_small: np.ndarray,
           rgb_small: np.ndarray) -> dict:
    """Each chosen format into ``staging``; the rerun recording at the working size (a small file)."""

    def depths() -> Iterator[np.ndarray]:
        return (to_depth(frame) for frame in data)

    out = {}
    fps = float(getattr(source, "fps", 0.0) or 0.0)
    for fmt in formats:
        if fmt == "poses":
            out[fmt] = write_poses(track, staging, fps, units, MASKED)
        elif fmt == "colmap":
            out[fmt] = write_colmap(track, depths(), iter(source), staging / "colmap")
        elif fmt == "nerfstudio":
            out[fmt] = write_nerfstudio(track, depths(), iter(source), normals(), staging / "nerfstudio")
        elif fmt == "exr-multi":
            out[fmt] = write_exr_multi(track, depths(), normals(), staging / "exr_multi", units)
        elif fmt == "fused":
            median = float(np.nanmedian(depth_small[len(depth_small) // 2]))
            out[fmt] = write_fused(track, depths(), iter(source), normals(), staging / "fused.ply", median)
        elif fmt == "rrd":
            small_normals = _resized(normals(), depth_small.shape[1:3])
            out[fmt] = write_rrd(small, depth_small, rgb_small, small_normals,
                                 staging / "scene.rrd")
    return out


def _resized(frames: Iterator[np.ndarray] | None, size: tuple[int, int]) -> Iterator[np.ndarray] | None:
    if frames is None:
        return None
    return (cv2.resize(np.asarray(f, np.float32), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
            for f in frames)
