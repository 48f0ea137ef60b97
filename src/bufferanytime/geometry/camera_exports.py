"""Writers of the camera formats (``--save poses,colmap,nerfstudio,exr-multi,fused,rrd``), each into a folder.

Axes: camera-to-world matrices are kept in this tool's camera axes (x right, y up, z towards the viewer: OpenGL's,
and nerfstudio's); the world is frame 0's camera. COLMAP's world-to-camera poses are in its own (OpenCV) axes:
x right, y down, z forward. Frames whose tracking failed have no pose and are left out of every format that needs
one (TUM, COLMAP, nerfstudio, the fused cloud); ``camera.json`` lists them with ``camera_to_world: null``.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bufferanytime.geometry.camera import CV_FLIP, CameraTrack
from bufferanytime.geometry.camera_glb import scene_glb
from bufferanytime.geometry.pointcloud import write_ply
from bufferanytime.geometry.unproject import depth_edges, normals_from_points, pixel_rays
from bufferanytime.io.outputs import save_npy, write_bytes, write_exr, write_image

AXES = ("camera-to-world 4x4 (column vectors: world = M @ camera); camera axes x right, y up, z towards the viewer "
        "(OpenGL); the world is frame 0's camera")
FUSED_POINTS_PER_FRAME = 20_000  # pixels lifted per frame into the fused cloud before the voxel grid
FUSED_VOXEL_PIXELS = 2.0  # voxel edge: this many pixels' footprint at the median depth


def quaternion(R: np.ndarray) -> np.ndarray:
    """``(w, x, y, z)`` unit quaternion of a rotation matrix (w >= 0)."""
    m = np.asarray(R, np.float64)
    w = np.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.sqrt(max(0.0, 1 + m[0, 0] - m[1, 1] - m[2, 2])) / 2
    y = np.sqrt(max(0.0, 1 - m[0, 0] + m[1, 1] - m[2, 2])) / 2
    z = np.sqrt(max(0.0, 1 - m[0, 0] - m[1, 1] + m[2, 2])) / 2
    x = np.copysign(x, m[2, 1] - m[1, 2])
    y = np.copysign(y, m[0, 2] - m[2, 0])
    z = np.copysign(z, m[1, 0] - m[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


def camera_json(track: CameraTrack, fps: float, units: str, masked: str) -> dict:
    """The content of ``camera.json``."""
    frames = [{"index": k, "tracked": bool(track.tracked[k]),
               "camera_to_world": track.poses[k].tolist() if track.tracked[k] else None,
               "inliers": int(track.inliers[k]),
               "reprojection_px": None if not np.isfinite(track.reprojection_px[k]) else track.reprojection_px[k]}
              for k in range(len(track.poses))]
    return {"axes": AXES, "units": units, "fps": fps,
            "intrinsics": {**track.intrinsics.to_meta(), "focal_source": track.focal_source},
            "reliable": track.reliable, "warnings": track.warnings,
            "lost_frames": [k for k in range(len(track.poses)) if not track.tracked[k]],
            "masked": masked, "frames": frames}


def write_poses(track: CameraTrack, folder: Path, fps: float, units: str, masked: str) -> dict:
    """``camera.json`` and ``camera_tum.txt`` (TUM: ``time tx ty tz qx qy qz qw`` per tracked frame)."""
    write_bytes(folder / "camera.json", (json.dumps(camera_json(track, fps, units, masked), indent=1) + "\n").encode())
    lines = ["# timestamp tx ty tz qx qy qz qw (camera-to-world; camera axes x right, y up, z back)"]
    for k in np.flatnonzero(track.tracked):
        t, (w, x, y, z) = track.poses[k][:3, 3], quaternion(track.poses[k][:3, :3])
        lines.append(f"{k / fps if fps else float(k):.6f} {t[0]:.9g} {t[1]:.9g} {t[2]:.9g} {x:.9g} {y:.9g} {z:.9g} "
                     f"{w:.9g}")
    write_bytes(folder / "camera_tum.txt", ("\n".join(lines) + "\n").encode())
    return {"files": ["camera.json", "camera_tum.txt"], "axes": AXES, "reliable": track.reliable}


def world_to_colmap(pose: np.ndarray) -> np.ndarray:
    """COLMAP's world-to-camera (OpenCV camera axes) of a camera-to-world pose in this tool's axes."""
    return np.linalg.inv(pose @ CV_FLIP)


def write_colmap(track: CameraTrack, depths: Iterable[np.ndarray], frames: Iterable[np.ndarray], folder: Path,
                 points_per_frame: int = 500, keyframes: int = 20) -> dict:
    """``colmap/sparse/0/{cameras,images,points3D}.txt`` and ``colmap/images/NNNNNN.png``.

    One PINHOLE camera; one image per tracked frame; 3D points lifted from the depth of up to ``keyframes``
    evenly spread frames (``points_per_frame`` each), each observed in the frame it comes from.
    """
    intr = track.intrinsics
    sparse, images = folder / "sparse" / "0", folder / "images"
    sparse.mkdir(parents=True)
    images.mkdir()
    tracked = np.flatnonzero(track.tracked)
    chosen = set(tracked[np.unique(np.linspace(0, len(tracked) - 1, min(keyframes, len(tracked))).astype(int))])
    rays = pixel_rays(intr, intr.height, intr.width)
    image_lines, point_lines, next_point = [], [], 1
    for k, (depth, rgb) in enumerate(zip(depths, frames, strict=False)):
        if not track.tracked[k]:
            continue
        write_image(images / f"{k:06d}.png", rgb)
        w2c = world_to_colmap(track.poses[k])
        q, t = quaternion(w2c[:3, :3]), w2c[:3, 3]
        image_lines.append(f"{k + 1} {' '.join(f'{v:.12g}' for v in q)} {' '.join(f'{v:.12g}' for v in t)} 1 "
                           f"{k:06d}.png")
        observations = []
        if k in chosen:
            ii, jj = _sample_pixels(depth, points_per_frame, k)
            world = _transform(track.poses[k], depth[ii, jj, None] * rays[ii, jj])
            for n, (i, j) in enumerate(zip(ii, jj, strict=True)):
                x, y, z = world[n]
                r, g, b = rgb[i, j]
                point_lines.append(f"{next_point} {x:.9g} {y:.9g} {z:.9g} {r} {g} {b} 0 {k + 1} {n}")
                observations.append(f"{j + 0.5} {i + 0.5} {next_point}")
                next_point += 1
        image_lines.append(" ".join(observations))
    write_bytes(sparse / "cameras.txt", ("# CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]\n"
                                         f"1 PINHOLE {intr.width} {intr.height} {intr.fx:.12g} {intr.fy:.12g} "
                                         f"{intr.cx:.12g} {intr.cy:.12g}\n").encode())
    write_bytes(sparse / "images.txt", ("# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, then POINTS2D[] as (X, Y, "
                                        "POINT3D_ID)\n" + "\n".join(image_lines) + "\n").encode())
    write_bytes(sparse / "points3D.txt", ("# POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
                                          + "\n".join(point_lines) + ("\n" if point_lines else "")).encode())
    return {"dir": folder.name, "files": "sparse/0/cameras.txt, images.txt, points3D.txt; images/NNNNNN.png",
            "images": int(len(tracked)), "points": next_point - 1,
            "axes": "COLMAP: world-to-camera, camera axes x right, y down, z forward"}


def _sample_pixels(depth: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` random pixels with a finite positive depth off its discontinuities."""
    ok = np.flatnonzero((~depth_edges(depth, 0.05)).ravel())
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(ok, size=min(count, ok.size), replace=False)) if ok.size else ok
    return np.unravel_index(pick, depth.shape)


def _transform(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ pose[:3, :3].T + pose[:3, 3]


def write_nerfstudio(track: CameraTrack, depths: Iterable[np.ndarray], frames: Iterable[np.ndarray],
                     normals: Iterable[np.ndarray] | None, folder: Path) -> dict:
    """``nerfstudio/transforms.json`` with ``images/``, ``depth/`` (float32 ``.npy`` z-depth) and, when the
    normals exist, ``normals/`` (``.npy``, camera axes x right, y up, z back) per tracked frame."""
    intr = track.intrinsics
    for name in ("images", "depth") + (("normals",) if normals is not None else ()):
        (folder / name).mkdir(parents=True)
    normal_iter = iter(normals) if normals is not None else None
    entries = []
    for k, (depth, rgb) in enumerate(zip(depths, frames, strict=False)):
        normal = next(normal_iter) if normal_iter is not None else None
        if not track.tracked[k]:
            continue
        entry = {"file_path": f"images/{k:06d}.png", "transform_matrix": track.poses[k].tolist(),
                 "depth_file_path": f"depth/{k:06d}.npy"}
        write_image(folder / entry["file_path"], rgb)
        save_npy(folder / entry["depth_file_path"], np.asarray(depth, np.float32))
        if normal is not None:
            entry["normal_file_path"] = f"normals/{k:06d}.npy"
            save_npy(folder / entry["normal_file_path"], np.asarray(normal, np.float32))
        entries.append(entry)
    transforms = {"camera_model": "OPENCV", "fl_x": intr.fx, "fl_y": intr.fy, "cx": intr.cx, "cy": intr.cy,
                  "w": intr.width, "h": intr.height, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
                  "depth_unit_scale_factor": 1.0, "frames": entries}
    write_bytes(folder / "transforms.json", (json.dumps(transforms, indent=1) + "\n").encode())
    return {"dir": folder.name, "file": "transforms.json", "frames": len(entries),
            "axes": "nerfstudio (OpenGL): camera x right, y up, z back", "normals": normals is not None}


def write_exr_multi(track: CameraTrack, depths: Iterable[np.ndarray], normals: Iterable[np.ndarray] | None,
                    folder: Path, units: str) -> dict:
    """``NNNNNN.exr`` per frame: ``Z`` (z-depth), ``N.x N.y N.z`` when the normals exist; the camera in the header
    (``worldToCamera``: OpenEXR's standard attribute, row-vector convention as Imath, camera axes x right, y up,
    z back; ``cameraToWorld``: the same pose in column-vector convention; ``fx fy cx cy``, ``tracked``)."""
    folder.mkdir()
    normal_iter = iter(normals) if normals is not None else None
    intr = track.intrinsics
    for k, depth in enumerate(depths):
        channels = {"Z": np.ascontiguousarray(depth, np.float32)}
        if normal_iter is not None:
            normal = np.asarray(next(normal_iter), np.float32)
            for c, name in enumerate(("N.x", "N.y", "N.z")):
                channels[name] = np.ascontiguousarray(normal[..., c])
        header = {"fx": float(intr.fx), "fy": float(intr.fy), "cx": float(intr.cx), "cy": float(intr.cy),
                  "units": units, "tracked": int(track.tracked[k]), "focalSource": track.focal_source}
        if track.tracked[k]:
            header["cameraToWorld"] = track.poses[k].astype(np.float32)
            header["worldToCamera"] = np.ascontiguousarray(np.linalg.inv(track.poses[k]).T, np.float32)
        write_exr(folder / f"{k:06d}.exr", channels, header)
    return {"dir": folder.name, "channels": "Z" + (", N.x, N.y, N.z" if normals is not None else ""),
            "header": "worldToCamera (Imath row vectors), cameraToWorld, fx, fy, cx, cy, units, tracked"}


def fuse(track: CameraTrack, depths: Iterable[np.ndarray], frames: Iterable[np.ndarray],
         normals: Iterable[np.ndarray] | None, voxel: float, drop_edges: float = 0.1) -> np.ndarray:
    """One world-space cloud of every tracked frame, averaged per voxel: a structured array x y z nx ny nz red
    green blue (float32, float32, uint8). Normals from ``normals`` (camera axes) or else implied by the depth."""
    intr = track.intrinsics
    rays = pixel_rays(intr, intr.height, intr.width)
    normal_iter = iter(normals) if normals is not None else None
    keys, sums, counts = [], [], []
    for k, (depth, rgb) in enumerate(zip(depths, frames, strict=False)):
        normal = next(normal_iter) if normal_iter is not None else None
        if not track.tracked[k]:
            continue
        points = np.asarray(depth, np.float64)[..., None] * rays
        n = normals_from_points(points) if normal is None else np.asarray(normal, np.float64)
        keep = ~depth_edges(depth, drop_edges) & np.isfinite(n).all(axis=-1)
        idx = np.flatnonzero(keep.ravel())
        if idx.size > FUSED_POINTS_PER_FRAME:
            idx = idx[:: int(np.ceil(idx.size / FUSED_POINTS_PER_FRAME))]
        pose = track.poses[k]
        world = _transform(pose, points.reshape(-1, 3)[idx])
        nw = n.reshape(-1, 3)[idx] @ pose[:3, :3].T
        cols = rgb.reshape(-1, 3)[idx].astype(np.float64)
        key, total, count = _voxel_sums(np.floor(world / voxel).astype(np.int64), np.hstack([world, nw, cols]))
        keys.append(key)
        sums.append(total)
        counts.append(count)
    if not keys:
        return _cloud(np.zeros((0, 9)))
    _, total, count = _voxel_sums(np.concatenate(keys), np.concatenate(sums), np.concatenate(counts))
    return _cloud(total / count[:, None])


def _voxel_sums(keys: np.ndarray, values: np.ndarray, counts: np.ndarray | None = None):
    """Per distinct voxel key ``(N, 3)``: the sum of ``values`` and of ``counts`` (None: one per row)."""
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    total = np.zeros((len(unique), values.shape[1]))
    np.add.at(total, inverse, values)
    return unique, total, np.bincount(inverse, weights=counts, minlength=len(unique))


def _cloud(values: np.ndarray) -> np.ndarray:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4"),
              ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    out = np.empty(len(values), dtype=fields)
    normals = values[:, 3:6] / np.maximum(np.linalg.norm(values[:, 3:6], axis=1, keepdims=True), 1e-12)
    for c, name in enumerate("xyz"):
        out[name] = values[:, c]
        out[f"n{name}"] = normals[:, c]
    for c, name in enumerate(("red", "green", "blue")):
        out[name] = np.clip(np.round(values[:, 6 + c]), 0, 255)
    return out


def write_fused(track: CameraTrack, depths: Iterable[np.ndarray], frames: Iterable[np.ndarray],
                normals: Iterable[np.ndarray] | None, path: Path, median_depth: float) -> dict:
    """``fused.ply``: :func:`fuse` with a voxel of :data:`FUSED_VOXEL_PIXELS` pixels' footprint at the median depth;
    beside it ``fused.glb``, the same cloud with the camera's path and frustums for 3D viewers."""
    voxel = FUSED_VOXEL_PIXELS * median_depth / track.intrinsics.fx
    cloud = fuse(track, depths, frames, normals, voxel)
    write_ply(path, cloud)
    write_bytes(path.with_suffix(".glb"), scene_glb(cloud, track))
    return {"file": path.name, "glb": path.with_suffix(".glb").name, "points": int(len(cloud)), "voxel": voxel,
            "vertex": "x y z, nx ny nz float32, red green blue uint8", "coordinates": AXES.split(";")[-1].strip(),
            "normals_from": "normal.npz" if normals is not None else "the depth (central differences)"}


def _check_recording(path: Path) -> None:
    """OSError unless ``path`` reads back as a recording: rerun's file sink reports no write failure (a full disk)."""
    from rerun.chunk import RrdReader

    try:
        ok = bool(RrdReader(str(path)).recordings())
    except (RuntimeError, OSError, ValueError):
        ok = False
    if not ok:
        raise OSError(errno.EIO, "the rerun recording could not be written completely", str(path))


def write_rrd(track: CameraTrack, depths: Iterable[np.ndarray], frames: Iterable[np.ndarray],
              normals: Iterable[np.ndarray] | None, path: Path, points_per_frame: int = 5000) -> dict:
    """``scene.rrd``: a rerun recording over the timeline ``frame``: ``world/camera`` (pose and pinhole: the
    frustum), ``world/camera/image`` (RGB), ``world/camera/depth``, ``world/camera/normals`` (as colours, when
    present) and ``world/points`` (the frame's points in the world)."""
    import rerun as rr

    intr = track.intrinsics
    rays = pixel_rays(intr, intr.height, intr.width)
    rec = rr.RecordingStream("bufferanytime")
    rec.save(str(path))
    normal_iter = iter(normals) if normals is not None else None
    rec.log("world", rr.ViewCoordinates.RUB, static=True)
    k_matrix = [[intr.fx, 0, intr.cx], [0, intr.fy, intr.cy], [0, 0, 1]]
    rec.log("world/camera", rr.Pinhole(image_from_camera=k_matrix, resolution=[intr.width, intr.height],
                                       camera_xyz=rr.ViewCoordinates.RUB), static=True)
    for k, (depth, rgb) in enumerate(zip(depths, frames, strict=False)):
        normal = next(normal_iter) if normal_iter is not None else None
        rec.set_time("frame", sequence=k)
        rec.log("world/camera/image", rr.Image(rgb))
        rec.log("world/camera/depth", rr.DepthImage(np.asarray(depth, np.float32), meter=1.0))
        if normal is not None:
            rec.log("world/camera/normals", rr.Image(np.clip((normal * 0.5 + 0.5) * 255, 0, 255).astype(np.uint8)))
        if not track.tracked[k]:
            continue
        pose = track.poses[k]
        rec.log("world/camera", rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]))
        ii, jj = _sample_pixels(np.asarray(depth, np.float64), points_per_frame, k)
        world = _transform(pose, np.asarray(depth, np.float64)[ii, jj, None] * rays[ii, jj])
        rec.log("world/points", rr.Points3D(world, colors=rgb[ii, jj]))
    rec.flush()
    rec.disconnect()
    _check_recording(path)
    return {"file": path.name, "entities": ["world/camera", "world/camera/image", "world/camera/depth",
                                            "world/points"] + (["world/camera/normals"] if normals is not None else []),
            "timeline": "frame"}
