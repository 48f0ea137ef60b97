"""Tiny benchmark folders in the official layouts (KITTI, ScanNet, Bonn, Sintel), written with the real formats,
and tiny synthetic datasets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bufferanytime.evaluation import write_dpt
from bufferanytime.synthetic import render_video, write_video_dir


def rgb_frame(h: int, w: int, k: int) -> np.ndarray:
    """A textured frame that shifts one pixel per frame, so flow is meaningful."""
    yy, xx = np.mgrid[0:h, 0:w]
    x = xx + k
    return np.stack([(x * 37 + yy * 11) % 256, (x * 5 + yy * 23) % 256, (x * yy) % 256], -1).astype(np.uint8)


def depth_png(depth_m: np.ndarray, scale: float) -> np.ndarray:
    """Metric depth -> 16-bit PNG values (0 where the depth is unknown, <= 0)."""
    return np.where(depth_m > 0, np.round(depth_m * scale), 0).astype(np.uint16)


def ramp_depth(h: int, w: int, k: int, near: float, far: float) -> np.ndarray:
    return np.linspace(near, far, h * w).reshape(h, w) + 0.01 * k


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_kitti(root: Path, seq: str = "2011_09_26_drive_0001_sync", frames: int = 6, size=(11, 15)) -> Path:
    """data_depth_annotated/val/<seq>/proj_depth/groundtruth/image_02/*.png + raw_data/<date>/<seq>/image_02/data."""
    h, w = size
    gt_dir = root / "data_depth_annotated" / "val" / seq / "proj_depth" / "groundtruth" / "image_02"
    img_dir = root / "raw_data" / seq[:10] / seq / "image_02" / "data"
    for k in range(frames):
        name = f"{k + 5:010d}.png"  # the annotated frames start at 5
        depth = ramp_depth(h, w, k, 2.0, 90.0)
        depth[0, :3] = 0  # LiDAR holes
        save_png(gt_dir / name, depth_png(depth, 256.0))
        save_png(img_dir / name, rgb_frame(h, w, k))
    return root


def make_scannet(root: Path, scenes=("scene0707_00",), frames: int = 12, size=(20, 26)) -> Path:
    h, w = size
    for scene in scenes:
        for k in range(frames):
            path = root / "scans_test" / scene / "color" / f"{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rgb_frame(h, w, k)[..., ::-1])
            depth = depth_png(ramp_depth(h, w, k, 0.5, 4.0), 1000.0)
            save_png(root / "scans_test" / scene / "depth" / f"{k}.png", depth)
    return root


def make_bonn(root: Path, seqs=("rgbd_bonn_balloon2", "rgbd_bonn_other"), frames: int = 36, size=(9, 13)) -> Path:
    h, w = size
    for seq in seqs:
        for k in range(frames):
            stamp = f"{1548266469 + k // 10}.{k % 10:05d}"  # TUM-style timestamps
            save_png(root / seq / "rgb" / f"{stamp}.png", rgb_frame(h, w, k))
            depth = ramp_depth(h, w, k, 0.8, 6.0)
            depth[0, 0] = 0  # a hole, inside the even-size crop
            save_png(root / seq / "depth" / f"{stamp}.png", depth_png(depth, 5000.0))
    return root


def make_sintel(root: Path, scenes=("alley_1",), frames: int = 5, size=(10, 12)) -> Path:
    h, w = size
    for scene in scenes:
        (root / "training" / "depth" / scene).mkdir(parents=True, exist_ok=True)
        for k in range(frames):
            save_png(root / "training" / "clean" / scene / f"frame_{k + 1:04d}.png", rgb_frame(h, w, k))
            write_dpt(root / "training" / "depth" / scene / f"frame_{k + 1:04d}.dpt", ramp_depth(h, w, k, 1.0, 100.0))
    return root



def make_synthetic(root: Path, seeds=(0, 1, 2), frames: int = 3, size=(16, 24)) -> Path:
    """One synthetic video folder ``seq_<seed>`` per seed."""
    for seed in seeds:
        write_video_dir(render_video(seed, frames, size), root / f"seq_{seed:06d}")
    return root


def shorten_depth(root: Path, name: str) -> None:
    """Drop the last frame of video ``name``'s depth: fewer ground-truth frames than RGB frames."""
    file = root / name / "depth.npy"
    np.save(file, np.load(file)[:-1])
