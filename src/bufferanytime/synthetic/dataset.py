"""On-disk layout of synthetic videos: ``write_video_dir`` writes one folder, ``SyntheticVideoDataset`` reads them.

One folder per video::

    rgb/000000.png ...       frames, RGB uint8
    rgb.mp4                  the same frames as a video, for viewing
    depth.npy                (T, H, W) float32, metric z-depth (metres)
    normal.npy               (T, H, W, 3) float32, unit, camera coordinates (x right, y up, z to the camera)
    flow_fwd.npy             (T-1, H, W, 2) float32, frame k -> k+1, pixels, src(x) ~ dst(x + flow(x))
    flow_bwd.npy             (T-1, H, W, 2) float32, frame k+1 -> k
    flow_valid_fwd.npy       (T-1, H, W) bool, in view and not occluded in the target frame
    flow_valid_bwd.npy       (T-1, H, W) bool
    moving.npy               (T, H, W) bool, the pixel sees an object that moves on its own (absent in old folders)
    meta.json                intrinsics (fx, fy, cx, cy; pixel centres at +0.5), exact per-frame camera-to-world
                             poses (metres), seed, the camera and object motions, ...
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bufferanytime.errors import InputError
from bufferanytime.io import OutputDir, write_video
from bufferanytime.io.images import read_rgb
from bufferanytime.io.outputs import save_npy, write_bytes, write_image
from bufferanytime.synthetic.renderer import SyntheticVideo

LAYOUT_VERSION = 1
DEFAULT_FPS = 10.0  # frame rate of rgb.mp4; the motion per frame, not per second, is what the data fixes
ARRAYS = ("depth", "normal", "flow_fwd", "flow_bwd", "flow_valid_fwd", "flow_valid_bwd")
PER_FRAME = ("depth", "normal", "moving")  # T entries; the flow arrays have T-1
OPTIONAL_ARRAYS = ("moving",)  # written since the motion options; folders written before lack them


def video_meta(video: SyntheticVideo, fps: float = DEFAULT_FPS) -> dict[str, Any]:
    """The ``meta.json`` content of a video: camera, poses, seed, nuisances and conventions."""
    height, width = video.size
    return {
        "layout_version": LAYOUT_VERSION,
        "seed": video.seed,
        "num_frames": video.num_frames,
        "height": height,
        "width": width,
        "fps": float(fps),
        "intrinsics": {k: float(video.intrinsics[k]) for k in ("fx", "fy", "cx", "cy")},
        "poses": [np.asarray(p, np.float64).tolist() for p in video.poses],
        "conventions": {
            "pixel_centres": "pixel (i, j) has its centre at (x, y) = (j + 0.5, i + 0.5)",
            "poses": "camera-to-world 4x4; camera axes x right, y up, z towards the viewer (as the normals)",
            "depth": "metric z-depth along the optical axis, metres",
            "normal": "unit vectors in camera coordinates: x right, y up, z towards the camera",
            "flow": "pixels, channel 0 = x right, 1 = y down; src(x) matches dst(x + flow(x)); "
            "flow_fwd[k]: frame k -> k+1, flow_bwd[k]: frame k+1 -> k",
        },
        "nuisances": dict(video.nuisances),
        "flicker_gains": list(video.flicker_gains),
        "exposure_gains": list(video.exposure_gains),
        "scene": {"kind": video.scene_kind, "objects": list(video.object_names), "moving": list(video.object_moving)},
        "motion": {"camera": video.camera_motion, "objects": video.object_motion},
    }


def write_video_dir(video: SyntheticVideo, out_dir: str | Path, fps: float = DEFAULT_FPS) -> Path:
    """Write ``video`` in the layout above to ``out_dir``, atomically (a temporary folder, then a rename).

    An existing ``out_dir`` is replaced only once the new folder is complete.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with OutputDir(out_dir) as tmp:
        (tmp / "rgb").mkdir()
        for k, frame in enumerate(video.rgb):
            write_image(tmp / "rgb" / f"{k:06d}.png", frame)
        write_video(tmp / "rgb.mp4", iter(video.rgb), fps)
        for name in ARRAYS + OPTIONAL_ARRAYS:
            save_npy(tmp / f"{name}.npy", getattr(video, name))
        write_bytes(tmp / "meta.json", _meta_json(video_meta(video, fps)).encode())
    return out_dir


def _meta_json(meta: dict[str, Any]) -> str:
    """Indented JSON, except that each pose (a 4x4 matrix) stays on one line, last."""
    head = json.dumps({k: v for k, v in meta.items() if k != "poses"}, indent=1)
    poses = ",\n  ".join(json.dumps(p) for p in meta["poses"])
    return f'{head[:-2]},\n "poses": [\n  {poses}\n ]\n}}\n'


def sequence_camera(frames_dir: str | Path) -> tuple[np.ndarray, dict[str, float], tuple[int, int]]:
    """The exact camera of the synthetic sequence whose RGB frames are in ``frames_dir`` (its ``rgb/`` folder, or
    the sequence folder): camera-to-world poses ``(T, 4, 4)`` float64, intrinsics and frame size ``(H, W)``.

    Raises InputError in one line when the folder is not a synthetic sequence with one pose per frame.
    """
    folder = Path(frames_dir)
    meta_path = next((p for p in (folder / "meta.json", folder.parent / "meta.json") if p.is_file()), None)
    if meta_path is None:
        raise InputError(f"{folder}: no camera poses (only synthetic sequences written by 'bufferanytime synth' "
                         f"have them: a meta.json beside rgb/)")
    try:
        meta = json.loads(meta_path.read_text())
        poses = np.asarray(meta["poses"], np.float64)
        intrinsics = {k: float(meta["intrinsics"][k]) for k in ("fx", "fy", "cx", "cy")}
        size = (int(meta["height"]), int(meta["width"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{meta_path}: no readable camera poses ({exc})") from exc
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) != int(meta.get("num_frames", -1)):
        raise InputError(f"{meta_path}: the poses are not one 4x4 matrix per frame")
    return poses, intrinsics, size


def clip_camera(
    frames_dir: str | Path, frames: list[int], crop: tuple[int, int, int, int], res: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Poses ``(L, 4, 4)`` of ``frames`` and intrinsics ``[fx, fy, cx, cy]`` of a clip cropped to ``crop``
    ``(x0, y0, w, h)`` and resized to ``res`` ``(H, W)`` (pixel centres at +0.5 before and after)."""
    poses, k, _ = sequence_camera(frames_dir)
    return poses[frames], crop_intrinsics(k, crop, res)


def crop_intrinsics(k: dict[str, float], crop: tuple[int, int, int, int], res: tuple[int, int]) -> np.ndarray:
    """``[fx, fy, cx, cy]`` of a camera ``k`` whose frames are cropped to ``crop`` ``(x0, y0, w, h)`` and resized
    to ``res`` ``(H, W)`` (pixel centres at +0.5 before and after)."""
    x0, y0, w, h = crop
    sx, sy = res[1] / w, res[0] / h
    return np.array([k["fx"] * sx, k["fy"] * sy, (k["cx"] - x0) * sx, (k["cy"] - y0) * sy])


class SyntheticVideoDataset:
    """The synthetic video folders (each with a ``meta.json``) found under ``root``, sorted by path.

    ``dataset[i]`` gives a dict with ``name``, ``rgb`` (T, H, W, 3) uint8, the arrays of the layout (memory
    mapped, so only what is used is read) and ``meta``; ``clip(i, start, stop)`` reads frames
    ``start:stop`` only; ``frames(i)`` streams the RGB frames one by one and ``frame(i, t)`` reads one.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"synthetic data folder not found: {self.root}")
        metas = sorted(self.root.rglob("meta.json"))
        self.paths = [
            m.parent for m in metas if not any(part.startswith(".") for part in m.parent.relative_to(self.root).parts)
        ]
        if not self.paths:
            raise InputError(f"no synthetic videos (folders with meta.json) under {self.root}")

    @property
    def names(self) -> list[str]:
        return [p.name if p == self.root else p.relative_to(self.root).as_posix() for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def meta(self, i: int) -> dict[str, Any]:
        return json.loads((self.paths[i] / "meta.json").read_text())

    def _frame_paths(self, i: int) -> list[Path]:
        return sorted((self.paths[i] / "rgb").glob("*.png"))

    def frames(self, i: int) -> Iterator[np.ndarray]:
        """The RGB frames of video ``i``, one ``(H, W, 3)`` uint8 array at a time."""
        for path in self._frame_paths(i):
            yield read_rgb(path)

    def frame(self, i: int, t: int) -> np.ndarray:
        """RGB frame ``t`` of video ``i``, ``(H, W, 3)`` uint8."""
        return read_rgb(self._frame_paths(i)[t])

    def clip(self, i: int, start: int = 0, stop: int | None = None) -> dict[str, Any]:
        """Frames ``start:stop`` of video ``i``: per-frame arrays get ``stop - start`` entries, flows one less."""
        meta = self.meta(i)
        total = int(meta["num_frames"])
        start, stop, _ = slice(start, stop).indices(total)
        if stop - start < 1:
            raise IndexError(f"empty clip {start}:{stop} of a {total}-frame video")
        folder = self.paths[i]
        sample: dict[str, Any] = {"name": self.names[i], "meta": meta, "start": start}
        paths = self._frame_paths(i)[start:stop]
        sample["rgb"] = np.stack([read_rgb(p) for p in paths])
        for name in ARRAYS + OPTIONAL_ARRAYS:
            if name in OPTIONAL_ARRAYS and not (folder / f"{name}.npy").is_file():
                continue
            array = np.load(folder / f"{name}.npy", mmap_mode="r")
            sample[name] = array[start:stop] if name in PER_FRAME else array[start : stop - 1]
        return sample

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} videos")
        return self.clip(i % len(self))
