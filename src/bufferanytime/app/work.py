"""What one request of the web app does, without any web framework: read the input, run the per-frame prior and
the video model of each chosen task, and write the side-by-side video, the time slice, the metrics and the
downloads into the request's own folder.

Every problem a user can cause is an :class:`~bufferanytime.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bufferanytime.app.scene import camera_downloads, camera_save, scene_file
from bufferanytime.errors import InputError
from bufferanytime.inference.options import DEFAULT_SAVE, InferenceSettings
from bufferanytime.io.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoSource, open_video
from bufferanytime.options import info
from bufferanytime.tasks import Task, get_task

EXAMPLE_SEED = 777_777  # the demo's held-out seed: never used to train the embedded models
# long and large enough that the per-frame prior's flicker shows: 64 frames of 320x240, a 5 s loop at 12 fps
EXAMPLE_VIDEO = {"num_frames": 64, "size": (240, 320), "flicker": 0.3, "exposure": 0.1, "noise": 0.01}
EXAMPLE_FPS = 12.0
EXAMPLE_DATASET = "synthetic"  # the depth cap of the ground truth's metrics
MAX_FRAMES = 120  # longer inputs are refused with a message (the app runs on a CPU in seconds per frame)
MAX_ZIP_BYTES = 500 << 20  # uncompressed size of a zip of frames
LABELS = ("per-frame prior", "video model")
#: The inference options the app offers, each with a control labelled by its declaration (OptionInfo.app).
APP_OPTIONS = tuple(f for f in dataclasses.fields(InferenceSettings) if info(f).app)

Progress = Callable[[float, str], None]


@dataclass
class Request:
    """One run: an input (a file, or None for the bundled example), the tasks and the model settings."""

    input: Path | None
    tasks: tuple[str, ...]
    model: str | None = None  # a name of list_models(), a directory or a Hub id; None: the embedded default
    options: dict = field(default_factory=dict)  # inference options of APP_OPTIONS by name; absent: the default
    max_frames: int = MAX_FRAMES
    first: int | None = None  # use only the first N frames (after the stride) of an upload; None: all
    stride: int = 1  # use every N-th frame of an upload
    adapt: str | None = None  # adapt each video model to the input first, within this budget (e.g. 1m, 20steps)

    def settings(self, save: tuple[str, ...] = DEFAULT_SAVE) -> InferenceSettings:
        """The checked inference settings of the request, on the CPU; InputError naming a bad option."""
        return InferenceSettings(**self.options, device="cpu", save=save).check()


@dataclass
class Result:
    """What a run leaves in its folder, and its numbers: ``metrics[task][label]`` = {"opw", "accuracy"?}."""

    side_by_side: Path
    time_slice: Path
    downloads: list[Path]
    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)
    frames: int = 0
    total_frames: int = 0  # the input's own length, before the first N frames and the stride
    adaptation: dict[str, dict] = field(default_factory=dict)  # by task: adapt.record.summary of its adaptation
    scene: Path | None = None  # the depth run's fused scene and camera path (GLB) for the 3D view


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


_example_lock = threading.Lock()
_example_cache: dict[tuple, object] = {}


def example_video(max_frames: int = MAX_FRAMES) -> object:
    """The bundled example (at most ``max_frames`` frames): its RGB frames and exact depth and normals, rendered
    at first use (seconds of work) and kept for every later request; the app starts this at launch."""
    from types import SimpleNamespace

    from bufferanytime.synthetic import render_video

    settings = {**EXAMPLE_VIDEO, "num_frames": min(EXAMPLE_VIDEO["num_frames"], max_frames)}
    key = tuple(sorted(settings.items()))
    with _example_lock:
        if key not in _example_cache:
            video = render_video(EXAMPLE_SEED, **settings)
            _example_cache.clear()  # one example at a time: the flows and masks are not kept either
            _example_cache[key] = SimpleNamespace(rgb=video.rgb, depth=video.depth, normal=video.normal)
        return _example_cache[key]


def _example_source(folder: Path, max_frames: int) -> tuple[VideoSource, object]:
    """The bundled example as PNG frames in ``folder``, played at :data:`EXAMPLE_FPS`, and its ground truth."""
    from bufferanytime.io.outputs import write_image

    video = example_video(max_frames)
    folder.mkdir(parents=True)
    for i, frame in enumerate(video.rgb):
        write_image(folder / f"{i:06d}.png", frame)
    return dataclasses.replace(open_video(folder), fps=EXAMPLE_FPS), video


def _check_length(source: VideoSource, request: Request, name: str) -> None:
    """InputError when the frames the request would use exceed its limit, saying how to trim the clip."""
    limit, total = request.max_frames, source.num_frames
    if source.expected_frames <= limit:
        return
    used = "the video has" if request.stride == 1 and not request.first else \
        f"{source.expected_frames} frames of its {total} would be used; the video has"
    raise InputError(f"{name}: {used} {total} frames; this app takes at most {limit}: set "
                     f"'First frames' to {limit}, or 'Every Nth frame' to {-(-total // limit)} "
                     "(or run `bufferanytime depth` on the command line)")


def open_input(request: Request, workdir: Path) -> tuple[VideoSource, object | None]:
    """The request's frames as a VideoSource (and the example's ground truth); InputError when unusable.

    An upload is cut to its first ``request.first`` frames at ``request.stride`` and played at its frame rate over
    the stride, so that time runs as in the clip."""
    if request.input is None:
        return _example_source(workdir / "example", request.max_frames)
    path = name = Path(request.input)
    if request.stride < 1 or (request.first is not None and request.first < 1):
        raise InputError("'First frames' and 'Every Nth frame' must be whole numbers >= 1 (First frames 0: all)")
    if path.suffix.lower() == ".zip":
        path = _unzip_frames(path, workdir / "frames")
    elif path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise InputError(f"{path.name}: not a video or a zip of frames (videos: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    source = open_video(path, max_frames=request.first, stride=request.stride)
    _check_length(source, request, name.name)
    return dataclasses.replace(source, fps=source.fps / request.stride), None


def predict(task: Task, request: Request, frames: np.ndarray, per_frame: bool) -> np.ndarray:
    """The predictions of the prior (``per_frame``) or of the video model of ``task`` on ``frames``."""
    from bufferanytime.inference import predict_frames
    from bufferanytime.models import load_model

    model = load_model(task.name, request.model, per_frame=per_frame)
    return np.stack(list(predict_frames(model, iter(frames), request.settings())))


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


def adapt_budget(text: str):
    """The request's adaptation budget, parsed; InputError in the page's words."""
    from bufferanytime.adapt.budget import parse_budget

    try:
        return parse_budget(text)
    except InputError as exc:
        raise InputError(f"adaptation budget {text!r}: {str(exc).split(': ', 1)[-1]}") from None


def adapt_model(task: Task, request: Request, frames: np.ndarray, workdir: Path, progress: Progress,
                span: tuple[float, float]):
    """The video model of ``task`` adapted to ``frames`` (:mod:`bufferanytime.adapt`; the starting one when the
    guard rails refuse), and the summary of the adaptation; ``progress`` runs over ``span`` step by step."""
    from bufferanytime.adapt.record import summary
    from bufferanytime.adapt.run import run_adapt
    from bufferanytime.io.outputs import write_image

    folder = workdir / "adapt_input"  # exactly the frames used (after the first N and the stride), once
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for i, frame in enumerate(frames):
            write_image(folder / f"{i:06d}.png", frame)
    low, high = span

    def step(done: int, steps: int) -> None:
        progress(low + (high - low) * done / max(steps, done, 1),
                 f"{task.name}: adapting to this video, step {done} of {steps}")

    progress(low, f"{task.name}: adapting to this video (reading, measuring one step, the starting model's OPW)")
    result = run_adapt([folder], request.model, adapt_budget(request.adapt), kind=task.name, device="cpu",
                       progress=step)
    return result.model, summary(result.record)


def run_task(task: Task, request: Request, source: VideoSource, frames: np.ndarray, out: Path, model=None
             ) -> tuple[dict[str, np.ndarray], list[Path]]:
    """The prior and the video model of ``task`` (``model``: the one to use, e.g. adapted; default: the
    request's); the video model's npz, 16-bit PNG and EXR files (the CLI's)."""
    from bufferanytime.inference import run_video
    from bufferanytime.models import load_model

    model = model if model is not None else load_model(task.name, request.model)
    settings = request.settings(save=("npz", "png16", "exr", *camera_save(task)))
    run_video(model, source, out, settings, model_info={"name": request.model or "default"}, progress=False)
    names = task.files
    with np.load(out / names.npz) as npz:
        video = np.asarray(npz[names.key])
    preds = {LABELS[0]: predict(task, request, frames, per_frame=True), LABELS[1]: video}
    downloads = [out / names.npz, _zip_folder(out / names.png16, out / f"{names.png16}.zip"),
                 _zip_folder(out / names.exr, out / f"{names.exr}.zip"), *camera_downloads(out)]
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
    request.settings()  # a bad option is refused before any work
    if request.adapt is not None:
        adapt_budget(request.adapt)
    progress(0.0, "reading the input")
    source, truth = open_input(request, workdir)
    frames = np.stack(list(source))
    progress(0.1, "optical flow for OPW")
    flows = estimate_flows(frames)
    x = column_index(frames.shape[2])
    rows, slices, downloads, metrics, adaptation = [], [("RGB", time_slice(frames, x))], [], {}, {}
    for i, task in enumerate(tasks):
        start, share = 0.2 + 0.7 * i / len(tasks), 0.7 / len(tasks)
        model = None
        if request.adapt is not None:  # the first half of the task's share: adapting, step by step
            model, adaptation[task.name] = adapt_model(task, request, frames, workdir, progress,
                                                       (start, start + share / 2))
            start += share / 2
        progress(start, f"{task.name}: per-frame prior and video model")
        preds, files = run_task(task, request, source, frames, workdir / "outputs", model)
        downloads += files
        metrics[task.name] = scores(task, preds, flows, truth)
        ranges = column_ranges(task, preds)
        rows.append(side_by_side(task, frames, preds, ranges))
        slices += [(f"{task.name} {label}", task.to_rgb(time_slice(p, x), ranges[label])) for label, p in preds.items()]
    progress(0.95, "writing the videos")
    result = Result(workdir / "side_by_side.mp4", workdir / "time_slice.png", downloads, metrics, len(frames),
                    source.num_frames, adaptation)
    result.scene = scene_file(workdir / "outputs")
    write_video(result.side_by_side, np.concatenate(rows, axis=1), fps=source.fps, codec_options=VIS_CODEC_OPTIONS)
    write_image(result.time_slice, compose_slices(frames[0], x, slices))
    return result
