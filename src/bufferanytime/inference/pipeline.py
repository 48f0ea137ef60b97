"""Run a video model over one input and write its outputs, streaming from reader to model to writer.

Per input ``OUT/<stem>/`` receives (depth | normals):

- ``depth.npz`` with ``disparity`` float32 ``(T, H, W)`` | ``normal.npz`` with ``normal`` float32 ``(T, H, W, 3)``,
  at the input resolution;
- ``depth_vis.mp4`` (one colour range for the whole video) | ``normal_vis.mp4`` (``n * 0.5 + 0.5`` as RGB);
- optionally ``png16/`` (16-bit PNG per frame) and ``exr/`` (float32 OpenEXR per frame);
- ``meta.json``: model, settings, timings, value range of the visualisation, package version.

The folder is assembled under a temporary name and renamed when complete. Predictions are appended to a raw
file as they are made and re-read through a memory map for the second pass (npz, visualisation, images), so
memory stays bounded for any video length.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from bufferanytime import __version__
from bufferanytime.inference.windows import default_overlap, sliding_windows
from bufferanytime.io.outputs import NpyStreamWriter, OutputDir, colorize_depth, normals_to_rgb, robust_range
from bufferanytime.io.video import VideoSource, VideoWriter
from bufferanytime.models.base import VideoModel

DEFAULT_MAX_RES = 518  # Depth Anything V2's default input side
PER_FRAME_BATCH = 8  # frames per forward pass of the per-frame baseline (no temporal context, no overlap)
PNG16_MAX = 65535
SAVE_FORMATS = ("npz", "png16", "exr")
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

OUTPUT_NAMES = {
    "depth": {"npz": "depth.npz", "key": "disparity", "vis": "depth_vis.mp4"},
    "normal": {"npz": "normal.npz", "key": "normal", "vis": "normal_vis.mp4"},
}


@dataclass
class InferenceSettings:
    """How a video is run through a model. ``None`` window/overlap means: derived from the model."""

    max_res: int = DEFAULT_MAX_RES
    window: int | None = None
    overlap: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    save: tuple[str, ...] = ("npz",)
    extra: dict = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def inference_size(height: int, width: int, max_res: int) -> tuple[int, int]:
    """Downscale so the longest side is at most ``max_res`` (never upscale)."""
    scale = min(1.0, max_res / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def window_settings(model: VideoModel, settings: InferenceSettings) -> tuple[int, int]:
    if model.per_frame:
        return settings.window or PER_FRAME_BATCH, 0
    window = settings.window or model.clip_len
    overlap = default_overlap(window) if settings.overlap is None else settings.overlap
    return window, overlap


class Predictor:
    """Model + device + precision: ``__call__(clip (T,3,h,w) in [0,1], reused) -> outputs (T,...)`` float32, CPU.

    The frozen per-frame stage of the model (``encode_frames``: the ViT for depth, the VAE encoder for normals)
    is deterministic, so the features of the last ``keep`` frames of a window are kept and reused when the next
    window starts with those frames (``reused`` of them): overlapping windows cost only the temporal part again.
    """

    def __init__(self, model: VideoModel, device: torch.device, precision: str, keep: int = 0):
        self.model = model.to(device).eval()
        self.device = device
        self.dtype = PRECISIONS[precision]
        self.keep = keep
        self.seconds = 0.0
        self._tail: list[torch.Tensor] = []

    def __call__(self, clip: torch.Tensor, reused: int = 0) -> torch.Tensor:
        start = time.perf_counter()
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        )
        with torch.no_grad(), autocast:
            clip = clip.to(self.device)
            features = self.model.encode_frames(clip[reused:])
            if reused:
                features = [torch.cat([old[-reused:], new]) for old, new in zip(self._tail, features, strict=True)]
            self._tail = [f[-self.keep :] for f in features] if self.keep else []
            out = self.model.decode_frames(features, len(clip), tuple(clip.shape[-2:]))
        out = out.float().cpu()
        self.seconds += time.perf_counter() - start
        return out


def predict_frames(
    model: VideoModel,
    frames: Iterator[np.ndarray],
    settings: InferenceSettings,
    predictor: Predictor | None = None,
) -> Iterator[np.ndarray]:
    """Yield one prediction per ``(H, W, 3)`` uint8 frame, at the frame's resolution.

    Depth: ``(H, W)`` float32 disparity; normals: ``(H, W, 3)`` float32 unit vectors.
    """
    window, overlap = window_settings(model, settings)
    predictor = predictor or Predictor(model, resolve_device(settings.device), settings.precision)
    predictor.keep = overlap
    sizes: deque[tuple[int, int]] = deque()  # input sizes of frames read but not yet yielded

    def tensors() -> Iterator[torch.Tensor]:
        for frame in frames:
            h, w = frame.shape[:2]
            sizes.append((h, w))
            small = inference_size(h, w, settings.max_res)
            if small != (h, w):
                frame = cv2.resize(frame, (small[1], small[0]), interpolation=cv2.INTER_AREA)
            yield torch.tensor(frame, dtype=torch.float32).permute(2, 0, 1) / 255.0  # a copy: frames may be read-only

    for out in sliding_windows(tensors(), predictor, model.kind, window, overlap):
        yield _to_output(model.kind, out, *sizes.popleft())


def _to_output(kind: str, out: torch.Tensor, height: int, width: int) -> np.ndarray:
    if kind == "depth":
        arr = out.numpy().astype(np.float32)
        if arr.shape != (height, width):
            arr = cv2.resize(arr, (width, height), interpolation=cv2.INTER_LINEAR)
        return arr
    arr = out.permute(1, 2, 0).numpy().astype(np.float32)
    if arr.shape[:2] != (height, width):
        arr = cv2.resize(arr, (width, height), interpolation=cv2.INTER_LINEAR)
        arr /= np.maximum(np.linalg.norm(arr, axis=-1, keepdims=True), 1e-8)
    return arr


def run_video(
    model: VideoModel,
    source: VideoSource,
    out_dir: str | Path,
    settings: InferenceSettings,
    model_name: str = "",
    progress: bool = True,
    predictor: Predictor | None = None,
) -> dict:
    """Predict every frame of ``source`` and write ``out_dir`` (atomically). Returns the meta dict."""
    names = OUTPUT_NAMES[model.kind]
    predictor = predictor or Predictor(model, resolve_device(settings.device), settings.precision)
    predictor.seconds = 0.0
    window, overlap = window_settings(model, settings)
    start = time.perf_counter()
    with OutputDir(out_dir) as tmp:
        writer = NpyStreamWriter(tmp / "predictions.raw")
        bar = tqdm(total=source.expected_frames or None, desc=source.name, unit="frame", disable=not progress)
        try:
            for pred in predict_frames(model, iter(source), settings, predictor):
                writer.append(pred)
                bar.update(1)
        finally:
            bar.close()
            writer.close()
        data = writer.read()
        writer.write_npz(tmp / names["npz"], names["key"])
        vis = _write_visualisations(model.kind, data, tmp, names["vis"], source.fps, settings.save)
        del data
        (tmp / "predictions.raw").unlink()
        elapsed = time.perf_counter() - start
        meta = {
            "kind": model.kind,
            "model": model_name or model.prior_ref,
            "per_frame": model.per_frame,
            "input": str(source.path),
            "frames": writer.count,
            "input_size": [source.height, source.width],
            "inference_size": list(inference_size(source.height, source.width, settings.max_res)),
            "fps": source.fps,
            "settings": {**asdict(settings), "window": window, "overlap": overlap, "stride": source.stride,
                         "max_frames": source.max_frames},
            "timings": {
                "total_s": round(elapsed, 3),
                "model_s": round(predictor.seconds, 3),
                "model_s_per_frame": round(predictor.seconds / max(writer.count, 1), 5),
            },
            "visualisation": vis,
            "process": {"rank": int(os.environ.get("RANK", 0)), "world_size": int(os.environ.get("WORLD_SIZE", 1))},
            "version": __version__,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _write_visualisations(
    kind: str, data: np.ndarray, out: Path, vis_name: str, fps: float, save: tuple[str, ...]
) -> dict:
    info: dict = {"file": vis_name}
    if kind == "depth":
        lo, hi = robust_range(data)
        info.update({"range": [lo, hi], "colormap": "inferno", "normalisation": "global robust percentiles"})
        to_rgb = lambda d: colorize_depth(d, lo, hi)  # noqa: E731
    else:
        info.update({"mapping": "rgb = n * 0.5 + 0.5"})
        to_rgb = normals_to_rgb
    with VideoWriter(out / vis_name, fps) as video:
        for frame in data:
            video.write(to_rgb(frame))
    if "png16" in save:
        info["png16"] = _write_png16(kind, data, out / "png16")
    if "exr" in save:
        _write_exr(kind, data, out / "exr")
        info["exr"] = {"dir": "exr", "channels": "Y" if kind == "depth" else "X,Y,Z"}
    return info


def _write_png16(kind: str, data: np.ndarray, folder: Path) -> dict:
    folder.mkdir()
    if kind == "depth":
        peak = float(max(np.max(frame) for frame in data)) or 1.0
        scale = PNG16_MAX / peak
        for i, frame in enumerate(data):
            cv2.imwrite(str(folder / f"{i:06d}.png"), np.round(np.clip(frame, 0, None) * scale).astype(np.uint16))
        return {"dir": "png16", "decode": "disparity = png / scale", "scale": scale}
    for i, frame in enumerate(data):
        img = np.round((np.clip(frame, -1, 1) * 0.5 + 0.5) * PNG16_MAX).astype(np.uint16)
        cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return {"dir": "png16", "decode": f"normal = png / {PNG16_MAX} * 2 - 1 (RGB = xyz)"}


def _write_exr(kind: str, data: np.ndarray, folder: Path) -> None:
    import OpenEXR

    folder.mkdir()
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    for i, frame in enumerate(data):
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        channels = {"Y": frame} if kind == "depth" else {c: frame[..., j].copy() for j, c in enumerate("XYZ")}
        with OpenEXR.File(header, channels) as exr:
            exr.write(str(folder / f"{i:06d}.exr"))
