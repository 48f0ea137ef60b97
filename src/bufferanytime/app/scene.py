"""The app's 3D part of a depth run: the camera formats it asks the run for, the 3D view's file and the downloads.

The video model's depth run also writes the camera's path, the fused scene and the files 3D tools read
(:mod:`bufferanytime.geometry.camera_outputs`); the page shows ``fused.glb`` (the cloud and the camera's path) in
its 3D view and offers the PLY, the GLB, ``camera.json`` and zips of the COLMAP and nerfstudio folders.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from bufferanytime.geometry.pointcloud import depth_kind
from bufferanytime.tasks import Task

CAMERA_SAVE = ("poses", "colmap", "nerfstudio", "fused")  # the camera formats of an app's depth run
SCENE_FILE = "fused.glb"  # what the 3D view shows
FILES = ("fused.ply", "fused.glb", "camera.json")  # offered as they are
FOLDERS = ("colmap", "nerfstudio")  # offered as zips


def camera_save(task: Task) -> tuple[str, ...]:
    """The camera formats to add to ``task``'s run: :data:`CAMERA_SAVE` for depth, none for other buffers."""
    return CAMERA_SAVE if depth_kind(task) is not None else ()


def scene_file(out: Path) -> Path | None:
    """The GLB the 3D view shows, when the run in ``out`` wrote one."""
    path = out / SCENE_FILE
    return path if path.is_file() else None


def camera_downloads(out: Path) -> list[Path]:
    """The 3D files of the run in ``out`` to download: the fused PLY and GLB, camera.json, and a zip per folder."""
    files = [out / name for name in FILES if (out / name).is_file()]
    return files + [_zip_tree(out / name, out / f"{name}.zip") for name in FOLDERS if (out / name).is_dir()]


def _zip_tree(folder: Path, archive: Path) -> Path:
    """``folder`` with its subfolders into ``archive``, under the folder's own name."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(file, f"{folder.name}/{file.relative_to(folder).as_posix()}")
    return archive
