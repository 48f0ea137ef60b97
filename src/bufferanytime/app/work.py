"""What one request of the web app does, without any web framework: read the input, run the per-frame prior and
the video model of each chosen task, and write the side-by-side video, the time slice, the metrics and the
downloads into the request's own folder.

Every problem a user can cause is an :class:`~bufferanytime.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bufferanytime.errors import InputError
from bufferanytime.io.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoSource, open_video
from bufferanytime.tasks import Task, get_task

EXAMPLE_SEED = 777_777  # the demo's held-out seed: never used to train the embedded models
EXAMPLE_VIDEO = {"num_frames": 16, "size": (120, 160), "flicker": 0.3, "exposure": 0.1, "noise": 0.01}
EXAMPLE_DATASET = "synthetic"  # the depth cap of the ground truth's metrics
MAX_FRAMES = 120  # longer inputs are refused with a message (the app runs on a CPU in seconds per frame)
MAX_ZIP_BYTES = 500 << 20  # uncompressed size of a zip of frames
LABELS = ("per-frame prior", "video model")

Progress = Callable[[float, str], None]


@dataclass
class Request:
    """One run: an input (a file, or None for the bundled example), the tasks and the model settings."""

    input: Path | None
    tasks: tuple[str, ...]
    model: str | None = None  # a name of list_models(), a directory or a Hub id; None: the embedded default
    max_res: int | None = None  # None: the model's own input size
    window: int | None = None  # None: the model's own window
    precision: str = "fp32"
    max_frames: int = MAX_FRAMES


@dataclass
class Result:
    """What a run leaves in its folder, and its numbers: ``metrics[task][label]`` = {"opw", "accuracy"?}."""

    side_by_side: Path
    time_slice: Path
    downloads: list[Path]
    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)
    frames: int = 0


def _no_progress(fraction: float, text: str) -> None:
    return None


def _unzip_frames(archive: Path, folder: Path) -> Path:
    """Extract the images of a zip of frames into ``folder`` (flat; other files ignored)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and Path(m.filename).suffix.lower()
                       in IMAGE_EXTENSIONS and not Path(m.filename).name.startswith(".")]
            if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise InputError(f"{archive.name}: the frames are larger than {MAX_ZIP_BYTES >> 20} MB unpacked")
            folder.mkdir(parents=True)
            for m in members:
                (folder / Path(m.filename).name).write_bytes(zf.read(m))
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{archive.name}: not a readable zip of frames ({exc})") from exc
    return folder


def _example_source(folder: Path) -> tuple[VideoSource, object]:
    """The bundled example: a synthetic clip rendered now, as PNG frames, and its exact ground truth."""
    from bufferanytime.io.outputs import write_image
    from bufferanytime.synthetic import render_video

    video = render_video(EXAMPLE_SEED, **EXAMPLE_VIDEO)
    folder.mkdir(parents=True)
    for i, frame in enumerate(video.rgb):
        write_image(folder / f"{i:06d}.png", frame)
    return open_video(folder), video


def open_input(request: Request, workdir: Path) -> tuple[VideoSource, object | None]:
    """The request's frames as a VideoSource (and the example's ground truth); InputError when unusable."""
    if request.input is None:
        return _example_source(workdir / "example")
    path = Path(request.input)
    if path.suffix.lower() == ".zip":
        source = open_video(_unzip_frames(path, workdir / "frames"))
    elif path.suffix.lower() in VIDEO_EXTENSIONS:
        source = open_video(path)
    else:
        raise InputError(f"{path.name}: not a video or a zip of frames (videos: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    if source.num_frames > request.max_frames:
        raise InputError(f"{path.name}: the video has {source.num_frames} frames; this app takes at most "
                         f"{request.max_frames} (cut it, or run `bufferanytime depth` on the command line)")
    return source, None


def predict(task: Task, request: Request, frames: np.ndarray, per_frame: bool) -> np.ndarray:
    """The predictions of the prior (``per_frame``) or of the video model of ``task`` on ``frames``."""
    from bufferanytime.inference import InferenceSettings, predict_frames
    from bufferanytime.models import load_model

    model = load_model(task.name, request.model, per_frame=per_frame)
    settings = InferenceSettings(max_res=request.max_res, window=request.window, precision=request.precision,
                                 device="cpu")
    return np.stack(list(predict_frames(model, iter(frames), settings)))


def column_ranges(task: Task, preds: dict[str, np.ndarray]) -> dict[str, tuple[float, float] | None]:
    """One colour range per prediction for its whole video: outputs on different scales are each shown in full
    (one shared range would flatten the per-frame prior's column and hide its flicker)."""
    return {label: task.vis_range(p) for label, p in preds.items()}


def side_by_side(task: Task, frames: np.ndarray, preds: dict[str, np.ndarray],
                 ranges: dict[str, tuple[float, float] | None] | None = None) -> np.ndarray:
    """``(T, H, W * (1 + len(preds)), 3)``: input | each prediction, EACH in its own colour range for the video
    (``ranges``: the :func:`column_ranges` of ``preds``, computed here when not given)."""
    ranges = column_ranges(task, preds) if ranges is None else ranges
    return np.stack([np.concatenate([frames[t], *(task.to_rgb(p[t], ranges[label]) for label, p in preds.items())],
                                    axis=1) for t in range(len(frames))])


def _zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, f"{folder.name}/{file.name}")
    return archive


def run_task(task: Task, request: Request, source: VideoSource, frames: np.ndarray, out: Path
             ) -> tuple[dict[str, np.ndarray], list[Path]]:
    """The prior and the video model of ``task``; the video model's npz, 16-bit PNG and EXR files (the CLI's)."""
    from bufferanytime.inference import InferenceSettings, run_video
    from bufferanytime.models import load_model

    model = load_model(task.name, request.model)
    settings = InferenceSettings(max_res=request.max_res, window=request.window, precision=request.precision,
                                 device="cpu", save=("npz", "png16", "exr"))
    run_video(model, source, out, settings, model_info={"name": request.model or "default"}, progress=False)
    names = task.files
    with np.load(out / names.npz) as npz:
        video = np.asarray(npz[names.key])
    preds = {LABELS[0]: predict(task, request, frames, per_frame=True), LABELS[1]: video}
    downloads = [out / names.npz, _zip_folder(out / names.png16, out / f"{names.png16}.zip"),
                 _zip_folder(out / names.exr, out / f"{names.exr}.zip")]
    return preds, downloads


def scores(task: Task, preds: dict[str, np.ndarray], flows, truth: object | None) -> dict[str, dict]:
    """OPW of each prediction with the given flows, and the accuracy against the ground truth when there is one."""
    from bufferanytime.evaluation import opw

    out = {}
    for label, pred in preds.items():
        out[label] = {"opw": opw(pred, flows=flows, task=task)}
        if truth is not None:
            out[label]["accuracy"] = task.headline(task.score(pred, getattr(truth, task.name), EXAMPLE_DATASET))
    return out


def run(request: Request, workdir: Path, progress: Progress = _no_progress) -> Result:
    """Do one request in ``workdir`` (which must be this request's own folder)."""
    from bufferanytime.evaluation import estimate_flows
    from bufferanytime.evaluation.slices import column_index, compose_slices, time_slice
    from bufferanytime.io.outputs import write_image
    from bufferanytime.io.video import VIS_CODEC_OPTIONS, write_video

    tasks = [get_task(name) for name in request.tasks]
    if not tasks:
        raise InputError("choose depth, normals or both")
    progress(0.0, "reading the input")
    source, truth = open_input(request, workdir)
    frames = np.stack(list(source))
    progress(0.1, "optical flow for OPW")
    flows = estimate_flows(frames)
    x = column_index(frames.shape[2])
    rows, slices, downloads, metrics = [], [("RGB", time_slice(frames, x))], [], {}
    for i, task in enumerate(tasks):
        progress(0.2 + 0.7 * i / len(tasks), f"{task.name}: per-frame prior and video model")
        preds, files = run_task(task, request, source, frames, workdir / "outputs")
        downloads += files
        metrics[task.name] = scores(task, preds, flows, truth)
        ranges = column_ranges(task, preds)
        rows.append(side_by_side(task, frames, preds, ranges))
        slices += [(f"{task.name} {label}", task.to_rgb(time_slice(p, x), ranges[label])) for label, p in preds.items()]
    progress(0.95, "writing the videos")
    result = Result(workdir / "side_by_side.mp4", workdir / "time_slice.png", downloads, metrics, len(frames))
    write_video(result.side_by_side, np.concatenate(rows, axis=1), fps=source.fps, codec_options=VIS_CODEC_OPTIONS)
    write_image(result.time_slice, compose_slices(frames[0], x, slices))
    return result
