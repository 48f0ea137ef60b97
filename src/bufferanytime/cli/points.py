"""The camera and point-cloud options of ``bufferanytime depth`` (``--save ply``), checked before any model work."""

from __future__ import annotations

import argparse
import sys

from bufferanytime.cli.args import finite_float, non_negative_float, positive_float, positive_int
from bufferanytime.geometry.intrinsics import DEFAULT_FOV_DEG, PIXEL_CENTRES, parse_intrinsics
from bufferanytime.geometry.options import DEFAULT_DROP_EDGES, PointCloudOptions

POINT_CLOUD_COMMANDS = ("depth",)  # the sub-commands that take these options (their buffers give 3D points)


def add_point_cloud_arguments(parser: argparse.ArgumentParser) -> None:
    """``--intrinsics``, ``--pixel-centres``, ``--fov``, ``--ply-stride``, ``--ply-drop-edges``, ``--depth-scale``."""
    group = parser.add_argument_group(
        "camera and point clouds (--save ply)",
        "PLY files hold points in camera coordinates (x right, y up, z towards the camera: points in front have "
        "z < 0) with the input's colours, and normals when OUT/<name>/normal.npz of the same input exists (run "
        "`bufferanytime normal` first). The intrinsics are recorded in the meta file.")
    group.add_argument("--intrinsics", metavar="VALUES|FILE", default=None,
                       help="fx,fy,cx,cy in pixels of the input frames (OpenCV pixel centres unless --pixel-centres "
                       "says otherwise), or fx,fy,cx,cy,W,H for W x H frames (scaled to the input's size); or a "
                       "file: a synthetic meta.json, a KITTI or KITTI-360 calibration (P2:, P_rect_02:, P_rect_00: or "
                       "K: line), a COLMAP cameras.txt (first camera, pinhole part), or bare numbers fx fy cx cy "
                       "(DeepV2D's intrinsics.txt) or a 3x3 matrix")
    group.add_argument("--pixel-centres", "--pixel-centers", dest="pixel_centres", choices=tuple(PIXEL_CENTRES),
                       default=None,
                       help="how to read the cx, cy of --intrinsics: opencv = the top-left pixel's centre is (0, 0) "
                       "(OpenCV, KITTI, DeepV2D), colmap = it is (0.5, 0.5) (COLMAP, this tool's meta files). "
                       "Default: opencv for numbers, a file's own format's convention. Recorded in the meta file")
    group.add_argument("--fov", type=finite_float, metavar="DEG", default=None,
                       help=f"horizontal field of view in degrees, square pixels, centred principal point (default "
                       f"when neither is given: {DEFAULT_FOV_DEG:g} degrees)")
    group.add_argument("--ply-stride", type=positive_int, metavar="N", default=1,
                       help="keep every N-th pixel in x and y (default 1: every pixel)")
    group.add_argument("--ply-drop-edges", type=non_negative_float, metavar="R", default=DEFAULT_DROP_EDGES,
                       help=f"drop points whose depth jumps by more than R (relative) to a neighbouring pixel: the "
                       f"flying pixels between surfaces (default {DEFAULT_DROP_EDGES:g}; 0 keeps all)")
    group.add_argument("--depth-scale", type=positive_float, metavar="S", default=1.0,
                       help="relative depth only: the median depth of the video's points (zero shift is assumed, "
                       "depth = s / disparity; default 1)")


def point_cloud_options(args: argparse.Namespace, kind: str, save: tuple[str, ...]) -> PointCloudOptions | None:
    """The checked options (InputError on a bad value or file), or None for a command without them.

    ``--save ply`` for a buffer that is not depth is refused here too; calibration warnings go to stderr.
    """
    if "ply" in save:
        from bufferanytime.geometry.pointcloud import check_point_cloud_task
        from bufferanytime.tasks import get_task

        check_point_cloud_task(get_task(kind))
    if not hasattr(args, "intrinsics"):
        return None
    spec = parse_intrinsics(args.intrinsics, args.fov, args.pixel_centres)
    for warning in spec.warnings:
        print(warning, file=sys.stderr)
    return PointCloudOptions(intrinsics=spec, stride=args.ply_stride, drop_edges=args.ply_drop_edges,
                             depth_scale=args.depth_scale)
