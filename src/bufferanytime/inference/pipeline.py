"""Run a video model over one input and write its outputs, streaming from reader to model to writer.

Per input ``OUT/<stem>/`` receives, for the task KIND (``depth`` | ``normal``, :mod:`bufferanytime.tasks`: it
names the files and encodes each format), the formats chosen by ``save``:

- ``npz``: ``depth.npz`` with ``disparity`` float32 ``(T, H, W)`` | ``normal.npz`` with ``normal`` float32
  ``(T, H, W, 3)``, at the input resolution;
- ``vis``: ``depth_vis.mp4`` (one colour range for the whole video) | ``normal_vis.mp4`` (``n * 0.5 + 0.5``);
- ``png16``: ``KIND_png16/`` (16-bit PNG per frame); ``exr``: ``KIND_exr/`` (float32 OpenEXR per frame);
- always ``KIND.meta.json``: model, device, dtype, sizes, settings, timings, decoding of the files, version.

Depth and normal outputs of one input live side by side: a run replaces only the files it writes (staged under a
hidden name and moved into place when all are complete, :class:`~bufferanytime.io.outputs.OutputFiles`).
Input and output run on their own threads (:mod:`bufferanytime.io.threads`), with bounded queues: frames are
decoded and resized ahead of the model, and each prediction is appended to a raw file (and written as an EXR
frame) by a writer thread while the model computes the next window. The formats that need the whole video (the
npz header's frame count, the visualisation's one colour range, depth png16's one scale) are written after the
last frame from a memory map of the raw file, concurrently; memory stays bounded for any video length.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from bufferanytime import __version__
from bufferanytime.errors import InputError
from bufferanytime.geometry.camera_outputs import camera_frames, camera_outputs
from bufferanytime.geometry.pointcloud import point_cloud_outputs
from bufferanytime.inference.options import (  # noqa: F401 - re-exported: the options module is torch-free
    DEFAULT_SAVE,
    MIN_INFERENCE_SIDE,
    MIN_OVERLAP,
    PER_FRAME_BATCH,
    PRECISION_DTYPES,
    SAVE_FORMATS,
    InferenceSettings,
    check_size_options,
    check_window_options,
    scaled_size,
)
from bufferanytime.inference.precision import resolve_precision
from bufferanytime.inference.windows import default_overlap, sliding_windows
from bufferanytime.io.arrays import frame_to_uint8_tensor, unit_float
from bufferanytime.io.outputs import NpyStreamWriter, OutputFiles, write_exr
from bufferanytime.io.threads import BackgroundWriter, Prefetch
from bufferanytime.io.video import MIN_VIDEO_FRAMES, VIS_CODEC_OPTIONS, VideoSource, VideoWriter
from bufferanytime.models.base import VideoModel, window_like
from bufferanytime.tasks import OutputNames, Task

# Frames decoded and resized ahead of the model, and predictions waiting for the writer thread: enough to hide
# the I/O behind the model, few enough to bound memory (8 frames at 1080p: 200 MB of float32 depth at most).
PREFETCH_FRAMES = 8
WRITE_QUEUE_FRAMES = 8
# Frames per call of the frozen per-frame stage (the ViT) inside a window: its activations (the attention of every
# frame above all) are held for this many frames, not for the whole window. 4: no slower than 8 (Small at 518x924,
# bf16: 0.94x the time, fastest of three each) and about half the activations, which come on top of the window's
# maps (docs/benchmarks.md).
ENCODE_CHUNK = 4
DEVICE_PATTERN = re.compile(r"(auto|cpu|cuda|mps)(:\d+)?")  # what --device accepts
PRECISIONS = {name: None if dtype is None else getattr(torch, dtype) for name, dtype in PRECISION_DTYPES.items()}


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
    check_window_options(settings)
    overlap = default_overlap(window) if settings.overlap is None else settings.overlap
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
    """Model + device + precision: ``__call__(clip (T,3,h,w), reused) -> outputs (T,...)`` float32, CPU.

    ``clip`` is float in [0, 1], or uint8 (0-255): a window waits in memory as uint8 (a quarter of the float32
    size: 160 MB instead of 630 MB for 110 frames at 518x924) and each chunk becomes float only when encoded.

    The per-frame stage of the model (``encode_window``: for depth the ViT and the neck's reassemble + convs, for
    normals the VAE encoder) is deterministic, so its output for the last ``keep`` frames of a window is kept and
    reused when the next window starts with those frames (``reused`` of them): overlapping windows cost only the
    temporal part again.
    ``seconds`` adds up the model time of every call.
    """

    def __init__(self, model: VideoModel, device: torch.device, precision: str):
        self.model = model.to(device).eval()
        self.task = model.task  # what the model's output holds (a metric depth prior: metres)
        self.device = device
        self.requested_precision = precision
        self.precision = resolve_precision(precision, device, model)  # auto -> bf16 or fp32 for this device
        self.dtype = PRECISIONS[self.precision]
        self.seconds = 0.0
        self.fp32_retries = 0  # half-precision windows whose output was not finite, recomputed in fp32
        self._tail: list[torch.Tensor] = []

    def __call__(self, clip: torch.Tensor, reused: int = 0, keep: int = 0) -> torch.Tensor:
        start = time.perf_counter()
        clip = clip.to(self.device)
        out = self._run(clip, reused, keep, self.dtype)
        if self.dtype is not None and not bool(torch.isfinite(out).all()):
            self.fp32_retries += 1  # a black or NaN window in half precision: this window again, fully in fp32
            out = self._run(clip, 0, keep, None)
        out = out.float().cpu()
        self.seconds += time.perf_counter() - start
        return out

    def _run(self, clip: torch.Tensor, reused: int, keep: int, dtype: torch.dtype | None) -> torch.Tensor:
        """One window at ``dtype`` (None: fp32)."""
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        with torch.no_grad(), autocast:
            features = self._encode(clip, reused)
            self._tail = [f[-keep:].clone() for f in features] if keep else []  # not views holding the window
            return self.model.decode_window(features, len(clip), tuple(clip.shape[-2:]))

    def _encode(self, clip: torch.Tensor, reused: int) -> list[torch.Tensor]:
        """The per-frame stage of a window: the kept features of its first ``reused`` frames, then the others
        computed ENCODE_CHUNK frames at a time, each written into one tensor per level as it comes (a window's
        features are never held twice, as a list of chunks and their concatenation)."""
        features: list[torch.Tensor] = []
        for start in range(reused, len(clip), ENCODE_CHUNK):
            maps = self.model.encode_window(unit_float(clip[start : start + ENCODE_CHUNK]))
            if not features:
                features = [window_like(m, len(clip)) for m in maps]
                if reused:
                    for window, old in zip(features, self._tail, strict=True):
                        window[:reused] = old[-reused:]
            for window, m in zip(features, maps, strict=True):
                window[start : start + len(m)] = m
        return features


def load_predictor(kind: str, model: str | None, settings: InferenceSettings, per_frame: bool = False
                   ) -> tuple[Predictor, dict]:
    """The video model ``model`` of ``kind`` (None: the embedded one) on the settings' device, checked against
    the settings (a window that cannot overlap is warned about on stderr), and what a meta file records of it."""
    from bufferanytime.models import DEFAULT_MODEL, load_model, resolve_model_path

    device = resolve_device(settings.device)
    location = resolve_model_path(kind, model)
    loaded = load_model(kind, model, per_frame=per_frame)
    if getattr(settings, "decode_chunk", None):
        loaded.decode_chunk = settings.decode_chunk
    warning = window_warning(loaded, settings)
    if warning:
        print(warning, file=sys.stderr)
    path = Path(location)
    info = {"name": str(model or DEFAULT_MODEL.get(kind)), "path": str(path.resolve()) if path.exists() else location}
    return Predictor(loaded, device, settings.precision), info


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
    sizes: deque[tuple[int, int]] = deque()  # input sizes of frames read but not yet yielded

    def tensors() -> Iterator[torch.Tensor]:
        for frame in frames:
            sizes.append(frame.shape[:2])
            yield frame_to_uint8_tensor(_resized_input(frame, scaled_size(*frame.shape[:2], rule)))

    def predict(clip: torch.Tensor, reused: int) -> torch.Tensor:
        return predictor(clip, reused, keep=overlap)

    task = predictor.task
    with Prefetch(tensors(), PREFETCH_FRAMES, "decode") as inputs:  # decoded and resized on their own thread
        for out in sliding_windows(inputs, predict, task, window, overlap):
            yield task.resize(task.frame_to_disk(out), sizes.popleft())


def _resized_input(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB frame at the model's input ``size`` (area when shrinking, cubic when enlarging)."""
    if size == frame.shape[:2]:
        return frame
    shrink = size[0] < frame.shape[0]
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


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
    predictor = predictor or Predictor(model, resolve_device(settings.device), settings.precision)
    task, seconds_before = predictor.task, predictor.seconds
    start = time.perf_counter()
    files = OutputFiles(out_dir)
    with files as staging:
        writer = NpyStreamWriter(staging / "predictions.raw")
        taken = camera_frames(settings.save, staging)  # what the camera needs, taken as the frames are decoded
        frames = iter(source) if taken is None else taken.observe(source)
        bar = tqdm(total=source.expected_frames or None, desc=source.name, unit="frame", disable=not progress)
        try:
            # on any error the reader thread is joined first (closing), then the writer's (before staging goes)
            with (
                BackgroundWriter(_frame_writer(task, writer, staging, settings.save), WRITE_QUEUE_FRAMES) as out,
                closing(predict_frames(model, frames, settings, predictor)) as preds,
            ):
                for pred in preds:
                    out.put(pred)
                    bar.update(1)
        finally:
            bar.close()
            writer.close()
            if taken is not None:
                taken.close()
        outputs = _write_outputs(task, writer, staging, source.fps, settings.save)
        ply, geometry = point_cloud_outputs(task, writer.frames(), source, settings.save, settings.point_cloud(),
                                            staging, Path(out_dir), progress)
        outputs.update(ply)
        camera, camera_meta = camera_outputs(task, writer.frames(), source, settings, staging, Path(out_dir), progress,
                                             taken)
        outputs.update(camera)
        (staging / "predictions.raw").unlink()
        meta = _meta(model, source, settings, predictor, predictor.seconds - seconds_before, writer.count,
                     model_info, outputs) | geometry | camera_meta
        meta["timings"]["total_s"] = round(time.perf_counter() - start, 3)
        (staging / task.files.meta).write_text(json.dumps(meta, indent=2) + "\n")
    meta["written"] = files.written
    return meta


def scale_anchor_info(model: VideoModel) -> dict:
    """``{"scale_anchor": {"stride": k}}`` when windowed inference holds ``model``'s metric scale at its prior's
    (``VideoDepthModel.set_scale_anchor``), else ``{}``."""
    stride = None if model.per_frame else getattr(model, "scale_anchor", None)
    return {} if stride is None else {"scale_anchor": {"stride": stride}}


def _meta(model: VideoModel, source: VideoSource, settings: InferenceSettings, predictor: Predictor,
          seconds: float, frames: int, model_info: dict | None, outputs: dict) -> dict:
    """What a run used, as actually resolved: model location, device, dtype, sizes, windows."""
    window, overlap = window_settings(model, settings)
    rule = size_rule(model, settings)
    return {
        "kind": model.kind,
        "task": model.task.name,
        "units": model.task.units,
        "array": {"file": model.task.files.npz, "key": model.task.files.key},
        "model": {**(model_info or {}), "prior": model.prior_ref, **scale_anchor_info(model)},
        "per_frame": model.per_frame,
        "input": str(source.path),
        "frames": frames,
        "input_size": [source.height, source.width],
        "inference_size": list(scaled_size(source.height, source.width, rule)),
        "size_rule": rule,
        "fps": source.fps,
        "device": str(predictor.device),
        "dtype": str(predictor.dtype or torch.float32).removeprefix("torch."),
        "precision": {"requested": predictor.requested_precision, "used": predictor.precision,
                      "fp32_retried_windows": predictor.fp32_retries},
        "settings": {**asdict(settings), "window": window, "overlap": overlap, "stride": source.stride,
                     "max_frames": source.max_frames},
        "timings": {
            "model_s": round(seconds, 3),
            "model_s_per_frame": round(seconds / max(frames, 1), 5),
        },
        "outputs": outputs,
        "process": {"rank": int(os.environ.get("RANK", 0)), "world_size": int(os.environ.get("WORLD_SIZE", 1))},
        "version": __version__,
    }


def _frame_writer(task: Task, writer: NpyStreamWriter, staging: Path, save: tuple[str, ...]) -> Callable:
    """What is written of each frame as it comes (on the writer thread): the raw array, and the EXR frame."""
    folder = staging / task.files.exr

    def write(frame: np.ndarray) -> None:
        if "exr" in save:
            folder.mkdir(exist_ok=True)
            _write_exr_frame(task, frame, folder / f"{writer.count:06d}.exr")
        writer.append(frame)

    return write


def _write_outputs(task: Task, writer: NpyStreamWriter, staging: Path, fps: float, save: tuple[str, ...]) -> dict:
    """Write the formats that need the whole video into ``staging``, each on its own thread: the npz (its header
    holds the frame count), the visualisation (one colour range for all frames) and the 16-bit PNGs (depth: one
    scale for all frames). Returns how to read each format, the EXR frames (written as they came) included."""
    names: OutputNames = task.files
    data = writer.frames()
    jobs = {
        "npz": lambda: writer.write_npz(staging / names.npz, names.key) or {"file": names.npz, "array": names.key},
        "vis": lambda: _write_visualisation(task, data, staging / names.vis, fps),
        "png16": lambda: task.write_png16(data, staging / names.png16),
    }
    pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="outputs")
    try:
        futures = {fmt: pool.submit(job) for fmt, job in jobs.items() if fmt in save}
        info = {fmt: futures[fmt].result() for fmt in SAVE_FORMATS if fmt in futures}
    finally:  # an interrupt drops the jobs not started and waits for the running ones (staging is removed after)
        pool.shutdown(wait=True, cancel_futures=True)
    if "exr" in save:
        info["exr"] = {"dir": names.exr, "channels": ",".join(task.exr_channels)}
    return info


def _write_visualisation(task: Task, data: Sequence[np.ndarray], path: Path, fps: float) -> dict:
    """The video in the task's colours, with one colour range for all frames; frames are coloured on a thread of
    their own while the encoder takes the previous ones."""
    value_range = task.vis_range(data)
    with (VideoWriter(path, fps, codec_options=VIS_CODEC_OPTIONS) as video,
          Prefetch((task.to_rgb(frame, value_range) for frame in data), PREFETCH_FRAMES, "vis-colours") as rgb):
        for frame in rgb:
            video.write(frame)
    return {"file": path.name, **task.vis_info(value_range)}


def _write_exr_frame(task: Task, frame: np.ndarray, path: Path) -> None:
    write_exr(path, task.exr_planes(frame))
