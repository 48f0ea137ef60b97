"""``fused.glb``: the fused cloud and the camera's path as one binary glTF 2.0 file, for 3D viewers (Blender,
three.js, Babylon.js, the app's 3D view), written without any 3D library.

glTF's axes are this tool's world axes (x right, y up, z towards the viewer; the world is frame 0's camera), so the
coordinates are written as they are. Three meshes: the cloud (``POINTS``, vertex colours), the camera path (``LINES``
joining the centres of consecutive tracked frames) and small frustums (``LINES``) at a few tracked frames.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from bufferanytime.geometry.camera import CameraTrack

PATH_RGBA = (255, 200, 0, 255)  # the camera path: amber
FRUSTUM_RGBA = (255, 80, 40, 255)  # the frustums: red-orange
FRUSTUMS = 8  # frustums drawn along the path (at most)
FRUSTUM_DEPTH = 0.1  # a frustum's depth, as a fraction of the cloud's median distance to the first camera

_FLOAT, _UBYTE, _ARRAY_BUFFER = 5126, 5121, 34962
_POINTS, _LINES = 0, 1


def camera_lines(track: CameraTrack, size: float) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices (2N, 3) float32, colours (2N, 4) uint8)`` of line segments: the path joining consecutive tracked
    frames' centres, and frustums of depth ``size`` (the image's aspect and field of view) at a few frames."""
    tracked = np.flatnonzero(track.tracked)
    centres = track.poses[tracked, :3, 3]
    segments = [np.stack([centres[:-1], centres[1:]], axis=1)] if len(centres) > 1 else []
    colours = [np.tile(PATH_RGBA, (2 * len(segments[0]), 1))] if segments else []
    intr = track.intrinsics
    half_w, half_h = intr.width / 2 / intr.fx * size, intr.height / 2 / intr.fy * size
    corners = np.array([[sx * half_w, sy * half_h, -size] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    for k in tracked[np.unique(np.linspace(0, len(tracked) - 1, FRUSTUMS).round().astype(int))]:
        world = corners @ track.poses[k][:3, :3].T + track.poses[k][:3, 3]  # the camera looks along -z
        centre = np.broadcast_to(track.poses[k][:3, 3], (4, 3))
        frustum = np.concatenate([np.stack([centre, world], axis=1),
                                  np.stack([world, np.roll(world, -1, axis=0)], axis=1)])
        segments.append(frustum)
        colours.append(np.tile(FRUSTUM_RGBA, (2 * len(frustum), 1)))
    if not segments:
        return np.zeros((0, 3), np.float32), np.zeros((0, 4), np.uint8)
    return (np.concatenate(segments).reshape(-1, 3).astype(np.float32),
            np.concatenate(colours).astype(np.uint8))


def scene_glb(cloud: np.ndarray, track: CameraTrack) -> bytes:
    """The GLB bytes of ``cloud`` (the structured array of :func:`~bufferanytime.geometry.camera_exports.fuse`)
    and the camera path of ``track``."""
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1).astype(np.float32)
    rgba = np.column_stack([cloud["red"], cloud["green"], cloud["blue"], np.full(len(cloud), 255)]).astype(np.uint8)
    distance = float(np.median(np.linalg.norm(xyz, axis=1))) if len(xyz) else 1.0
    line_xyz, line_rgba = camera_lines(track, FRUSTUM_DEPTH * (distance or 1.0))
    gltf: dict = {"asset": {"version": "2.0", "generator": "bufferanytime"}, "scene": 0, "scenes": [{"nodes": []}],
                  "nodes": [], "meshes": [], "accessors": [], "bufferViews": [], "buffers": []}
    blob = bytearray()
    for name, (positions, colours, mode) in {"cloud": (xyz, rgba, _POINTS),
                                            "camera": (line_xyz, line_rgba, _LINES)}.items():
        if not len(positions):
            continue
        attributes = {"POSITION": _accessor(gltf, blob, positions, _FLOAT, "VEC3"),
                      "COLOR_0": _accessor(gltf, blob, colours, _UBYTE, "VEC4")}
        gltf["meshes"].append({"name": name, "primitives": [{"attributes": attributes, "mode": mode}]})
        gltf["nodes"].append({"name": name, "mesh": len(gltf["meshes"]) - 1})
        gltf["scenes"][0]["nodes"].append(len(gltf["nodes"]) - 1)
    gltf["buffers"].append({"byteLength": len(blob)})
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(text), b"JSON") + text
            + struct.pack("<I4s", len(blob), b"BIN\x00") + bytes(blob))


def _accessor(gltf: dict, blob: bytearray, values: np.ndarray, component: int, kind: str) -> int:
    """Append ``values`` to the binary chunk (4-byte aligned) with its buffer view and accessor; the index."""
    data = np.ascontiguousarray(values).tobytes()
    gltf["bufferViews"].append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data),
                                "target": _ARRAY_BUFFER})
    blob += data + b"\x00" * (-len(data) % 4)
    accessor = {"bufferView": len(gltf["bufferViews"]) - 1, "componentType": component, "count": len(values),
                "type": kind}
    if component == _UBYTE:
        accessor["normalized"] = True
    else:
        accessor["min"], accessor["max"] = values.min(axis=0).tolist(), values.max(axis=0).tolist()
    gltf["accessors"].append(accessor)
    return len(gltf["accessors"]) - 1
