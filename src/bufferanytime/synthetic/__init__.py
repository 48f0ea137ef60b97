"""Procedural video with exactly known geometry and motion, deterministic from a seed.

``render_video`` ray-casts random rooms or outdoor scenes (planes, boxes, spheres, ellipsoids, cylinders,
procedural or photo textures, Lambertian shading) seen by a moving pinhole camera, with some objects
moving on their own, and returns RGB with metric depth, camera-space normals, forward/backward optical
flow and their validity masks. ``write_video_dir`` stores a video as a folder and
``SyntheticVideoDataset`` reads such folders back, for training and evaluation.
"""

from bufferanytime.synthetic.dataset import SyntheticVideoDataset, video_meta, write_video_dir
from bufferanytime.synthetic.renderer import SyntheticVideo, render_video

__all__ = ["SyntheticVideo", "SyntheticVideoDataset", "render_video", "video_meta", "write_video_dir"]
