"""The camera of each training video for ``--stabilization 3d``.

Where a video brings the exact poses of ``bufferanytime synth`` data (its ``meta.json``), those are used
(``--camera-poses auto``, the default). Any other video, or every video with ``--camera-poses estimated``, gets the
camera estimated from the video itself, as ``bufferanytime depth --save poses`` finds it
(:func:`~bufferanytime.geometry.camera_outputs.video_camera`: point tracks, the focal length, RANSAC poses) on the
depth of the starting model (``--model``; a bare prior is run frame by frame). Estimating is done once per video,
before the first step, and kept in ``RUN/cameras.json``: a resumed run reads the same cameras back. A frame whose
pose the estimate lost has none (NaN): the 3D loss leaves its pairs out. Normals carry no camera, so a normal run
needs the exact poses.

Why the starting model's depth rather than the prior's: on 16 training clips of benchmarks/stabilization_3d.py
(forward motion, 16 frames at 96x128) the embedded video model's steadier depth gave cameras off by a median 0.47
degrees of rotation per frame against the exact poses, the prior's 1.33 (ATE 4.4 and 4.7 % of the path; the same
28 of 256 frames lost).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from bufferanytime.errors import InputError
from bufferanytime.geometry.camera_outputs import camera_size, video_camera
from bufferanytime.geometry.intrinsics import IntrinsicsSpec, parse_intrinsics
from bufferanytime.geometry.pointcloud import depth_kind
from bufferanytime.geometry.unproject import relative_depth, relative_depth_scale
from bufferanytime.inference.options import InferenceSettings
from bufferanytime.inference.pipeline import predict_frames
from bufferanytime.io.atomic import write_text_atomic
from bufferanytime.io.video import open_video
from bufferanytime.synthetic.dataset import crop_intrinsics, sequence_camera
from bufferanytime.training.data import VideoInfo

CAMERAS_FILE = "cameras.json"  # RUN/cameras.json: {video path: camera} of the videos whose camera was estimated


@dataclass(frozen=True)
class VideoCamera:
    """A video's camera-to-world poses ``(T, 4, 4)`` (NaN where lost) and intrinsics at its frame size."""

    poses: np.ndarray
    intrinsics: dict[str, float]  # fx, fy, cx, cy in pixels, centres at +0.5
    source: str  # "exact" or "estimated"

    def clip(self, frames: list[int], crop: tuple[int, int, int, int], res: tuple[int, int]
             ) -> tuple[np.ndarray, np.ndarray]:
        """Poses of ``frames`` and the intrinsics of the clip's crop at ``res`` (see :func:`crop_intrinsics`)."""
        return self.poses[frames], crop_intrinsics(self.intrinsics, crop, res)

    def to_dict(self) -> dict:
        poses = [None if not np.isfinite(p).all() else p.tolist() for p in self.poses]
        return {"poses": poses, "intrinsics": self.intrinsics, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> VideoCamera:
        poses = np.stack([np.full((4, 4), np.nan) if p is None else np.asarray(p, np.float64) for p in data["poses"]])
        return cls(poses, {k: float(v) for k, v in data["intrinsics"].items()}, data["source"])


def exact_camera(video: VideoInfo) -> VideoCamera | None:
    """The exact camera of a ``bufferanytime synth`` video, None for any other."""
    try:
        poses, intrinsics, _ = sequence_camera(video.path)
    except InputError:
        return None
    return VideoCamera(poses, intrinsics, "exact")


def needs_estimate(videos: Sequence[VideoInfo], camera_poses: str) -> list[VideoInfo]:
    """The videos whose camera is to be estimated (``camera_poses``: ``auto`` or ``estimated``)."""
    return [v for v in videos if camera_poses == "estimated" or exact_camera(v) is None]


def check_estimable(task, videos: Sequence[VideoInfo], camera_poses: str, intrinsics: str | None = None,
                    fov: float | None = None) -> IntrinsicsSpec:
    """The given intrinsics (``--intrinsics``/``--fov``, read and checked); InputError, before any model work,
    when they are unusable, or when a video needs an estimated camera and the task's output is no depth to solve
    it on (normals)."""
    given = parse_intrinsics(intrinsics, fov)
    missing = needs_estimate(videos, camera_poses)
    if missing and depth_kind(task) is None:
        raise InputError(f"{missing[0].path}: --stabilization 3d with {task.name} needs the exact camera poses of "
                         "'bufferanytime synth' data (a meta.json beside rgb/): a camera is estimated from depth, "
                         f"and {task.name} gives none")
    return given


def estimate_camera(video: VideoInfo, model, device: torch.device, given: IntrinsicsSpec | None = None
                    ) -> VideoCamera:
    """The camera of ``video`` solved on the depth ``model`` predicts; intrinsics at the video's frame size (the
    ``given`` ones when they say any: ``--intrinsics`` or ``--fov``). The frames are kept at the camera's working
    size only (:func:`camera_size`): memory stays small for long videos."""
    size = camera_size(video.height, video.width)
    frames = [cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) if f.shape[:2] != size else f
              for f in open_video(video.path)]
    settings = InferenceSettings(device=str(device), precision="fp32")
    predictions = np.stack(list(predict_frames(model, iter(frames), settings)))
    if depth_kind(model.task) == "metric":
        depth = predictions.astype(np.float32)
    else:
        depth = relative_depth(predictions, relative_depth_scale(predictions)).astype(np.float32)
    known = given is not None and given.given
    track = video_camera(frames, depth, given.resolve(video.height, video.width) if known else None)
    k = track.intrinsics.for_size(video.height, video.width)
    poses = np.where(track.tracked[:, None, None], track.poses, np.nan)
    return VideoCamera(poses, {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}, "estimated")


def read_cameras(run_dir: Path) -> dict[str, VideoCamera]:
    """The estimated cameras a run recorded (none when it recorded none)."""
    path = run_dir / CAMERAS_FILE
    if not path.is_file():
        return {}
    try:
        return {name: VideoCamera.from_dict(c) for name, c in json.loads(path.read_text()).items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: unreadable estimated cameras ({exc}); remove it to estimate them again") from exc


def estimate_cameras(videos: Sequence[VideoInfo], camera_poses: str, load_model, device: torch.device,
                     run_dir: Path, quiet: bool = False, given: IntrinsicsSpec | None = None
                     ) -> dict[str, VideoCamera]:
    """Main process: the estimated cameras of the videos that need one, those ``RUN/cameras.json`` holds read back,
    the others solved (on the depth of ``load_model()``, with the ``given`` intrinsics) and the file written
    again."""
    known = read_cameras(run_dir)
    todo = [v for v in needs_estimate(videos, camera_poses) if v.path not in known]
    if todo:
        model = load_model()
        for video in tqdm(todo, desc="cameras", unit="video", disable=quiet, file=sys.stderr):
            known[video.path] = camera = estimate_camera(video, model, device, given)
            lost = int((~np.isfinite(camera.poses).all(axis=(1, 2))).sum())
            if lost:
                tqdm.write(f"warning: {video.path}: the estimated camera lost {lost} of {len(camera.poses)} frames; "
                           "their pairs are left out of the 3D loss", file=sys.stderr)
        text = json.dumps({name: c.to_dict() for name, c in known.items()}) + "\n"
        write_text_atomic(run_dir / CAMERAS_FILE, text)
    return known


def video_cameras(videos: Sequence[VideoInfo], camera_poses: str, estimated: dict[str, VideoCamera]
                  ) -> dict[str, VideoCamera]:
    """The camera of every video: the estimated one where it needed one, else its exact one (each video's poses
    read once)."""
    exact = {v.path: None if camera_poses == "estimated" else exact_camera(v) for v in videos}
    return {path: camera if camera is not None else estimated[path] for path, camera in exact.items()}
