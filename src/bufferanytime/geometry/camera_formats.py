"""The camera formats of ``--save`` and their checks before any model work; light (no torch, no OpenCV), so that
``--help`` and a refused option stay fast."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from bufferanytime.errors import InputError

CAMERA_FORMATS = ("poses", "colmap", "nerfstudio", "exr-multi", "fused", "rrd")


def camera_formats(save: Sequence[str]) -> list[str]:
    """The camera formats among ``save``, in their fixed order."""
    return [f for f in CAMERA_FORMATS if f in save]


def check_camera_formats(save: Sequence[str], kind: str) -> None:
    """InputError for camera formats of a buffer that is not depth (the ``kind`` of command: ``depth``,
    ``normal``), or for ``rrd`` without the rerun SDK; nothing is imported when no camera format is asked for."""
    formats = camera_formats(save)
    if not formats:
        return
    from bufferanytime.geometry.pointcloud import depth_kind
    from bufferanytime.tasks import get_task

    task = get_task(kind)
    if depth_kind(task) is None:
        raise InputError(f"--save {','.join(formats)} needs depth: {task.name} predictions alone give no camera (run "
                         f"`bufferanytime depth --save {','.join(formats)}` into the same output; it adds these "
                         "normals where the format holds them)")
    if "rrd" in formats and importlib.util.find_spec("rerun") is None:
        raise InputError("--save rrd needs the rerun SDK: pip install 'bufferanytime[camera]' (or rerun-sdk)")
