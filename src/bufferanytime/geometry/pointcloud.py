"""Per-frame point clouds: ``KIND_ply/000000.ply`` ..., binary little-endian PLY written with plyfile.

Each vertex: ``x, y, z`` float32 in camera coordinates (x right, y up, z towards the camera; points in front have
z < 0), ``red, green, blue`` uint8 from the input frame, and ``nx, ny, nz`` float32 when the normal buffer of the
same input (``normal.npz`` in the same output folder, written by an earlier ``bufferanytime normal`` run) has the
same frames and size. Metric depth is used in metres. Relative disparity has an unknown scale and shift: the
points assume zero shift (depth = s / disparity) with one scale ``s`` per video putting the median depth at
``--depth-scale`` (default 1); a warning says so once per run, and the meta file records it.
``--ply-stride N`` keeps every N-th pixel in x and y; ``--ply-drop-edges R`` drops points at depth
discontinuities (a relative jump above R to a 4-neighbour, :func:`~bufferanytime.geometry.unproject.depth_edges`),
the flying pixels that interpolated depth puts between surfaces.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement
from tqdm import tqdm

from bufferanytime.errors import InputError
from bufferanytime.geometry.intrinsics import Intrinsics
from bufferanytime.geometry.options import DEFAULT_DROP_EDGES, PointCloudOptions  # noqa: F401 - re-exported
from bufferanytime.geometry.unproject import depth_edges, pixel_rays, relative_depth, relative_depth_scale
from bufferanytime.tasks import NORMAL

PLY_FORMAT = "binary_little_endian"
_warned: set[str] = set()  # warnings already printed by this process (once per run, not per input)


def warn_once(message: str) -> None:
    """Print ``message`` on stderr the first time only."""
    if message not in _warned:
        _warned.add(message)
        print(message, file=sys.stderr)


def npz_member_shape(path: Path, key: str) -> tuple[int, ...] | None:
    """The shape of array ``key`` in an ``.npz`` without reading it; None when missing or unreadable."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as member:
            return _read_header(member)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _read_header(member) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(member)
    if fortran:
        raise ValueError("Fortran-ordered array")
    return shape, dtype


def npz_frames(path: Path, key: str) -> Iterator[np.ndarray]:
    """The frames of array ``key`` of an uncompressed or compressed ``.npz``, one at a time (bounded memory)."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as member:
        shape, dtype = _read_header(member)
        count = int(np.prod(shape[1:]))
        for _ in range(shape[0]):
            yield np.frombuffer(member.read(count * dtype.itemsize), dtype).reshape(shape[1:])


def vertices(points: np.ndarray, rgb: np.ndarray, normals: np.ndarray | None, keep: np.ndarray) -> np.ndarray:
    """The structured vertex array of the pixels ``keep`` (H, W bool) of one frame."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")] if normals is not None else []
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    out = np.empty(int(keep.sum()), dtype=fields)
    for j, name in enumerate("xyz"):
        out[name] = points[..., j][keep]
        if normals is not None:
            out[f"n{name}"] = normals[..., j][keep]
    for j, name in enumerate(("red", "green", "blue")):
        out[name] = rgb[..., j][keep]
    return out


def write_ply(path: Path, vertex: np.ndarray) -> None:
    """One binary little-endian PLY of the vertex array."""
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<").write(str(path))


def _keep_mask(depth: np.ndarray, options: PointCloudOptions) -> np.ndarray:
    """Pixels that become points: finite positive depth, off the discontinuities, on the stride grid."""
    keep = np.isfinite(depth) & (depth > 0)
    if options.drop_edges > 0:
        keep &= ~depth_edges(depth, options.drop_edges)
    if options.stride > 1:
        grid = np.zeros_like(keep)
        grid[:: options.stride, :: options.stride] = True
        keep &= grid
    return keep


def write_ply_frames(task, data: np.ndarray, rgb_source: Iterable[np.ndarray], intrinsics: Intrinsics,
                     folder: Path, options: PointCloudOptions, normals: Iterable[np.ndarray] | None = None,
                     progress: bool = False) -> dict:
    """Write ``folder/000000.ply`` ... from a task's predictions ``data`` (T, H, W) and the input frames.

    Returns how the depth was turned into points (for the meta file). The folder is created here.
    """
    to_depth, unprojection = depth_converter(task, data, options)
    folder.mkdir()
    rays = pixel_rays(intrinsics, *data.shape[1:3])
    normal_iter = iter(normals) if normals is not None else None
    count = 0
    for i, (frame, rgb) in enumerate(tqdm(zip(data, rgb_source, strict=False), total=len(data), unit="frame",
                                          desc=f"{folder.name}", disable=not progress)):
        depth = to_depth(frame)
        normal = next(normal_iter) if normal_iter is not None else None
        vertex = vertices(depth[..., None] * rays, rgb, normal, _keep_mask(depth, options))
        write_ply(folder / f"{i:06d}.ply", vertex)
        count += 1
    if count != len(data):
        raise InputError(f"the input gave {count} frames for the point clouds, the predictions {len(data)}")
    return unprojection


def depth_kind(task) -> str | None:
    """``"metric"`` for a task whose values are metres, ``"relative"`` for relative disparity (the array named
    ``disparity``), None for buffers that are not depth (no 3D points)."""
    if getattr(task, "units", "") == "metres":
        return "metric"
    if task.channels == 1 and task.array_key == "disparity":
        return "relative"
    return None


def check_point_cloud_task(task) -> None:
    """InputError for ``--save ply`` with a buffer that is not depth (checked before any model work)."""
    if depth_kind(task) is None:
        raise InputError(f"--save ply needs depth: {task.name} predictions alone give no 3D points (run "
                         "`bufferanytime depth --save ply` into the same output to give the points these normals)")


def depth_converter(task, data: np.ndarray, options: PointCloudOptions):
    """``(frame -> z-depth, description)`` for a task's predictions: metres as they are, disparity inverted."""
    check_point_cloud_task(task)
    if depth_kind(task) == "metric":
        return (lambda frame: np.asarray(frame, np.float64)), {"depth": "metric z-depth, metres"}
    scale = relative_depth_scale(data, options.depth_scale)
    assumption = (f"relative disparity: depth = s / disparity (zero shift assumed), s = {scale:.6g} so that the "
                  f"video's median depth is {options.depth_scale:g} (--depth-scale); units arbitrary")
    warn_once("warning: the depth is relative (unknown scale and shift): the point clouds assume zero shift, "
              f"depth = s / disparity with the median depth at {options.depth_scale:g} (--depth-scale); their "
              "shape is only as right as that assumption")
    return (lambda frame: relative_depth(frame, scale)), {"depth": assumption, "scale": scale, "shift": 0.0}


def _matching_normals(out_dir: Path, shape: tuple[int, ...]) -> tuple[Iterator[np.ndarray] | None, str | None]:
    """The frames of ``out_dir/normal.npz`` when it has ``shape`` + (3,), with its name; else (None, None)."""
    path = out_dir / NORMAL.files.npz
    if not path.is_file():
        return None, None
    found = npz_member_shape(path, NORMAL.array_key)
    if found != (*shape, 3):
        warn_once(f"warning: {path} holds normals of shape {found}, not those of this video {(*shape, 3)}: "
                  "the point clouds are written without normals")
        return None, None
    return npz_frames(path, NORMAL.array_key), NORMAL.files.npz


def point_cloud_outputs(task, data: np.ndarray, source, save: tuple[str, ...], options: PointCloudOptions | None,
                        staging: Path, out_dir: Path, progress: bool = False) -> tuple[dict, dict]:
    """The geometry part of a run: ``(outputs entry, meta entries)``.

    ``meta`` records the intrinsics for every depth run given ``options``; with ``"ply"`` in ``save`` the point
    clouds are written into ``staging/KIND_ply/`` (normals from ``out_dir/normal.npz`` when it matches).
    """
    if "ply" in save:
        check_point_cloud_task(task)
    if options is None or depth_kind(task) is None:
        return {}, {}
    intrinsics = options.intrinsics.resolve(source.height, source.width)
    meta: dict = {"intrinsics": intrinsics.to_meta()}
    if "ply" not in save:
        return {}, meta
    folder = staging / f"{task.name}_ply"
    normals, normals_file = _matching_normals(out_dir, tuple(data.shape))
    meta["unprojection"] = write_ply_frames(task, data, source, intrinsics, folder, options, normals, progress)
    info = {"dir": folder.name, "files": "000000.ply ... one per frame", "format": f"PLY {PLY_FORMAT}",
            "vertex": "x y z float32" + (", nx ny nz float32" if normals_file else "") + ", red green blue uint8",
            "coordinates": "camera: x right, y up, z towards the camera (points in front have z < 0)",
            "normals_from": normals_file, "stride": options.stride, "drop_edges": options.drop_edges}
    return {"ply": info}, meta
