"""The camera and point-cloud checks of ``bufferanytime depth`` (``--save ply``), done before any model work.

The options themselves (``--intrinsics``, ``--pixel-centres``, ``--fov``, ``--ply-stride``, ``--ply-drop-edges``,
``--depth-scale``) are declared with every other inference option, in
:class:`bufferanytime.inference.options.InferenceSettings`.
"""

from __future__ import annotations

import sys

from bufferanytime.inference.options import InferenceSettings


def check_point_clouds(settings: InferenceSettings, kind: str) -> None:
    """InputError for ``--save ply`` with a buffer that is not depth, or for unusable camera options (a bad
    ``--intrinsics`` file); the calibration's warnings go to stderr."""
    if "ply" in settings.save:
        from bufferanytime.geometry.pointcloud import check_point_cloud_task
        from bufferanytime.tasks import get_task

        check_point_cloud_task(get_task(kind))
    if "intrinsics" in InferenceSettings.option_names(kind):
        for warning in settings.point_cloud().intrinsics.warnings:
            print(warning, file=sys.stderr)
