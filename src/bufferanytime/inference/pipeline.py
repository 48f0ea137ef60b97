"""Run a video model over one input and write its outputs, streaming from reader to model to writer.

Per input ``OUT/<stem>/`` receives, for the task KIND (``depth`` | ``normal``), the formats chosen by ``save``:

- ``npz``: ``depth.npz`` with ``disparity`` float32 ``(T, H, W)`` | ``normal.npz`` with ``normal`` float32
  ``(T, H, W, 3)``, at the input resolution;
- ``vis``: ``depth_vis.mp4`` (one colour range for the whole video) | ``normal_vis.mp4`` (``n * 0.5 + 0.5``);
- ``png16``: ``KIND_png16/`` (16-bit PNG per frame); ``exr``: ``KIND_exr/`` (float32 OpenEXR per frame);
- always ``KIND.meta.json``: model, device, dtype, sizes, settings, timings, decoding of the files, version.

Depth and normal outputs of one input live side by side: a run replaces only the files it writes (staged under a
hidden name and moved into place when all are complete, :class:`~bufferanytime.io.outputs.OutputFiles`).
Predictions are appended to a raw file as they are made and re-read through a memory map for the second pass
(npz, visualisation, images), so memory stays bounded for any video length.
"""

from __future__ import annotations

import json
import os
import re
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
from bufferanytime.errors import InputError
from bufferanytime.inference.windows import MIN_OVERLAP, default_overlap, sliding_windows
from bufferanytime.io.outputs import NpyStreamWriter, OutputFiles, colorize_depth, normals_to_rgb, robust_range
from bufferanytime.io.video import MIN_VIDEO_FRAMES, VideoSource, VideoWriter
from bufferanytime.models.base import VideoModel

MIN_INFERENCE_SIDE = 14  # --max-res / --short-side below one ViT patch cannot give the prior an image
PER_FRAME_BATCH = 8  # frames per forward pass of the per-frame baseline (no temporal context, no overlap)
PNG16_MAX = 65535
SAVE_FORMATS = ("npz", "vis", "png16", "exr")
DEFAULT_SAVE = ("npz", "vis")
DEVICE_PATTERN = re.compile(r"(auto|cpu|cuda|mps)(:\d+)?")  # what --device accepts
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def output_names(kind: str) -> dict[str, str]:
    """File and folder names of each format of a task, in ``OUT/<stem>/``: all prefixed by the task."""
    return {"npz": f"{kind}.npz", "key": "disparity" if kind == "depth" else "normal", "vis": f"{kind}_vis.mp4",
            "png16": f"{kind}_png16", "exr": f"{kind}_exr", "meta": f"{kind}.meta.json"}


@dataclass
class InferenceSettings:
    """How a video is run through a model. ``None`` window/overlap/size means: derived from the model.

    ``short_side``/``max_res`` (either given) replace the model's own resize rule, see :func:`size_rule`.
    """

    max_res: int | None = None
    short_side: int | None = None
    window: int | None = None
    overlap: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    save: tuple[str, ...] = DEFAULT_SAVE
    extra: dict = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the best available device; a malformed name or a device this machine lacks -> InputError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    match = DEVICE_PATTERN.fullmatch(name)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise InputError(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    device = torch.device(name)
    count = torch.cuda.device_count() if device.type == "cuda" and torch.cuda.is_available() else 0
    if device.type == "cuda" and count == 0:
        raise InputError(f"--device {name}: no CUDA device on this machine (use --device cpu)")
    if device.type == "cuda" and (device.index or 0) >= count:
        raise InputError(f"--device {name}: this machine has {count} CUDA device(s)")
    if device.type == "mps" and not _mps_available():
        raise InputError(f"--device {name}: no Apple MPS device on this machine (use --device cpu)")
    return device


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def check_size_options(settings: InferenceSettings) -> None:
    """Refuse ``--short-side``/``--max-res`` below one ViT patch (smaller inputs carry no usable image)."""
    for flag, value in (("--short-side", settings.short_side), ("--max-res", settings.max_res)):
        if value is not None and value < MIN_INFERENCE_SIDE:
            raise InputError(f"{flag} must be at least {MIN_INFERENCE_SIDE} px (one 14-pixel ViT patch), got {value}")


def size_rule(model: VideoModel, settings: InferenceSettings) -> dict:
    """The resize rule of a run: from the options when ``short_side`` or ``max_res`` is set, else the model's.

    A rule bounds the short side (``short_side``) and the long side (``long_side``); ``upscale`` says whether
    small frames are enlarged to meet them. ``max_res`` alone never enlarges; ``short_side`` does.
    """
    check_size_options(settings)
    if settings.short_side is None and settings.max_res is None:
        return {**model.size_rule(), "from": "model"}
    return {"short_side": settings.short_side, "long_side": settings.max_res,
            "upscale": settings.short_side is not None, "from": "options"}


def scaled_size(height: int, width: int, rule: dict) -> tuple[int, int]:
    """The largest size (aspect kept) with short side <= ``short_side`` and long side <= ``long_side``."""
    scales = []
    if rule.get("short_side"):
        scales.append(rule["short_side"] / min(height, width))
    if rule.get("long_side"):
        scales.append(rule["long_side"] / max(height, width))
    scale = min(scales, default=1.0)
    if not rule.get("upscale"):
        scale = min(scale, 1.0)
    return max(1, round(height * scale)), max(1, round(width * scale))


def inference_size(
    model: VideoModel, height: int, width: int, short_side: int | None = None, max_res: int | None = None
) -> tuple[int, int]:
    """The size a ``height`` x ``width`` frame is resized to before ``model`` (the CLI's and eval's default).

    Without ``short_side``/``max_res``: the model's own rule (Depth Anything V2: short side 518; Marigold: long
    side 768; embedded models: their training size), which enlarges small frames as those priors' processors do.
    """
    return scaled_size(height, width, size_rule(model, InferenceSettings(max_res=max_res, short_side=short_side)))


def window_settings(model: VideoModel, settings: InferenceSettings) -> tuple[int, int]:
    """(window, overlap) of a run; InputError when they cannot work together."""
    if model.per_frame:
        return settings.window or PER_FRAME_BATCH, 0
    window = settings.window or model.clip_len
    if window < MIN_VIDEO_FRAMES:
        raise InputError(f"--window must be at least {MIN_VIDEO_FRAMES} frames for a video model, got {window} "
                         "(--per-frame runs the prior alone)")
    overlap = default_overlap(window) if settings.overlap is None else settings.overlap
    if overlap >= window and settings.window:
        raise InputError(f"--overlap ({overlap}) must be smaller than --window ({window})")
    if overlap >= window:
        raise InputError(f"--overlap ({overlap}) must be smaller than the model's window of {window} frames (its "
                         "training clip length); pass a larger --window")
    return window, overlap


def window_warning(model: VideoModel, settings: InferenceSettings) -> str | None:
    """A one-line warning when a short ``--window`` leaves no room for the default overlap, else None."""
    window, overlap = window_settings(model, settings)
    if model.per_frame or settings.overlap is not None or overlap:
        return None
    return (f"warning: --window {window} is too short for the default overlap of {MIN_OVERLAP} frames, so windows "
            "do not overlap and seams between them are not blended; use --window 4 or more, or set --overlap 1")


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
    rule = size_rule(model, settings)
    predictor = predictor or Predictor(model, resolve_device(settings.device), settings.precision)
    predictor.keep = overlap
    sizes: deque[tuple[int, int]] = deque()  # input sizes of frames read but not yet yielded

    def tensors() -> Iterator[torch.Tensor]:
        for frame in frames:
            h, w = frame.shape[:2]
            sizes.append((h, w))
            small = scaled_size(h, w, rule)
            if small != (h, w):
                shrink = small[0] < h
                frame = cv2.resize(frame, (small[1], small[0]),
                                   interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
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
    model_info: dict | None = None,
    progress: bool = True,
    predictor: Predictor | None = None,
) -> dict:
    """Predict every frame of ``source`` and write the chosen formats into ``out_dir``. Returns the meta dict.

    Only the files of this task are replaced in ``out_dir``; ``meta["written"]`` lists them.
    """
    names = output_names(model.kind)
    predictor = predictor or Predictor(model, resolve_device(settings.device), settings.precision)
    predictor.seconds = 0.0
    start = time.perf_counter()
    files = OutputFiles(out_dir)
    with files as staging:
        writer = NpyStreamWriter(staging / "predictions.raw")
        bar = tqdm(total=source.expected_frames or None, desc=source.name, unit="frame", disable=not progress)
        try:
            for pred in predict_frames(model, iter(source), settings, predictor):
                writer.append(pred)
                bar.update(1)
        finally:
            bar.close()
            writer.close()
        outputs = _write_outputs(model.kind, writer, staging, names, source.fps, settings.save)
        (staging / "predictions.raw").unlink()
        meta = _meta(model, source, settings, predictor, writer.count, model_info, outputs)
        meta["timings"]["total_s"] = round(time.perf_counter() - start, 3)
        (staging / names["meta"]).write_text(json.dumps(meta, indent=2) + "\n")
    meta["written"] = files.written
    return meta


def _meta(model: VideoModel, source: VideoSource, settings: InferenceSettings, predictor: Predictor, frames: int,
          model_info: dict | None, outputs: dict) -> dict:
    """What a run used, as actually resolved: model location, device, dtype, sizes, windows."""
    window, overlap = window_settings(model, settings)
    rule = size_rule(model, settings)
    return {
        "kind": model.kind,
        "model": {**(model_info or {}), "prior": model.prior_ref},
        "per_frame": model.per_frame,
        "input": str(source.path),
        "frames": frames,
        "input_size": [source.height, source.width],
        "inference_size": list(scaled_size(source.height, source.width, rule)),
        "size_rule": rule,
        "fps": source.fps,
        "device": str(predictor.device),
        "dtype": str(predictor.dtype or torch.float32).removeprefix("torch."),
        "settings": {**asdict(settings), "window": window, "overlap": overlap, "stride": source.stride,
                     "max_frames": source.max_frames},
        "timings": {
            "model_s": round(predictor.seconds, 3),
            "model_s_per_frame": round(predictor.seconds / max(frames, 1), 5),
        },
        "outputs": outputs,
        "process": {"rank": int(os.environ.get("RANK", 0)), "world_size": int(os.environ.get("WORLD_SIZE", 1))},
        "version": __version__,
    }


def _write_outputs(
    kind: str, writer: NpyStreamWriter, staging: Path, names: dict, fps: float, save: tuple[str, ...]
) -> dict:
    """Write the chosen formats into ``staging`` from the raw predictions; returns how to read each."""
    info: dict = {}
    if "npz" in save:
        writer.write_npz(staging / names["npz"], names["key"])
        info["npz"] = {"file": names["npz"], "array": names["key"]}
    data = writer.read()
    if "vis" in save:
        info["vis"] = _write_visualisation(kind, data, staging / names["vis"], fps)
    if "png16" in save:
        info["png16"] = _write_png16(kind, data, staging / names["png16"])
    if "exr" in save:
        _write_exr(kind, data, staging / names["exr"])
        info["exr"] = {"dir": names["exr"], "channels": "Y" if kind == "depth" else "X,Y,Z"}
    del data
    return info


def _write_visualisation(kind: str, data: np.ndarray, path: Path, fps: float) -> dict:
    info: dict = {"file": path.name}
    if kind == "depth":
        lo, hi = robust_range(data)
        info.update({"range": [lo, hi], "colormap": "inferno", "normalisation": "global robust percentiles"})
        to_rgb = lambda d: colorize_depth(d, lo, hi)  # noqa: E731
    else:
        info.update({"mapping": "rgb = n * 0.5 + 0.5"})
        to_rgb = normals_to_rgb
    with VideoWriter(path, fps) as video:
        for frame in data:
            video.write(to_rgb(frame))
    return info


def _write_png16(kind: str, data: np.ndarray, folder: Path) -> dict:
    folder.mkdir()
    if kind == "depth":
        peak = float(max(np.max(frame) for frame in data)) or 1.0
        scale = PNG16_MAX / peak
        for i, frame in enumerate(data):
            _imwrite(folder / f"{i:06d}.png", np.round(np.clip(frame, 0, None) * scale).astype(np.uint16))
        return {"dir": folder.name, "decode": "disparity = png / scale", "scale": scale}
    for i, frame in enumerate(data):
        img = np.round((np.clip(frame, -1, 1) * 0.5 + 0.5) * PNG16_MAX).astype(np.uint16)
        _imwrite(folder / f"{i:06d}.png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return {"dir": folder.name, "decode": f"normal = png / {PNG16_MAX} * 2 - 1 (RGB = xyz)"}


def _imwrite(path: Path, image: np.ndarray) -> None:
    """cv2.imwrite, which reports a failed write (e.g. a full disk) by returning False, made to raise."""
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path.name}")


def _write_exr(kind: str, data: np.ndarray, folder: Path) -> None:
    import OpenEXR

    folder.mkdir()
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    for i, frame in enumerate(data):
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        channels = {"Y": frame} if kind == "depth" else {c: frame[..., j].copy() for j, c in enumerate("XYZ")}
        with OpenEXR.File(header, channels) as exr:
            exr.write(str(folder / f"{i:06d}.exr"))
