"""Geometry: camera intrinsics (options and calibration files), unprojection of depth to 3D points in camera
coordinates, per-frame point clouds (binary PLY) and the depth-normal consistency of two buffers of one video.

Conventions: pixel (i, j) has its centre at (x, y) = (j + 0.5, i + 0.5); camera coordinates are x right, y up,
z towards the camera, so points in front of the camera have z < 0 (as the normals and the synthetic world).
Depth is z-depth (along the optical axis), as the synthetic world renders it.
"""

from bufferanytime.geometry.intrinsics import DEFAULT_FOV_DEG, Intrinsics, IntrinsicsSpec, parse_intrinsics
from bufferanytime.geometry.unproject import depth_edges, normals_from_depth, pixel_rays, unproject

__all__ = ["DEFAULT_FOV_DEG", "Intrinsics", "IntrinsicsSpec", "depth_edges", "normals_from_depth", "parse_intrinsics",
           "pixel_rays", "unproject"]
