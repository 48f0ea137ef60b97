"""ONNX export of a video model (one window) and of its per-frame prior, with a JSON file describing them.

For the task NAME of the model (``depth``, ``normal``, ``metric_depth``), ``export_onnx`` writes into ``out_dir``:

- ``NAME_video.onnx``: ``frames`` float32 ``(1, T, 3, H, W)`` RGB in [0, 1] -> the window's buffers, ``(1, T, H, W)``
  (depth: disparity, or metres for a metric model) or ``(1, T, 3, H, W)`` (unit normals, x right, y up, z towards
  the camera). T (the window length) is a dynamic axis; H and W are fixed at export (``size``);
- ``NAME_prior.onnx``: the image prior alone, ``images`` ``(N, 3, H, W)`` -> ``(N, H, W)`` / ``(N, 3, H, W)``, N
  dynamic: the per-frame baseline;
- ``NAME.onnx.json``: inputs, outputs, dynamic axes, the size rule (resize every frame to exactly H x W as the
  command line does, resize the outputs back), the window and overlap the command line would use, and the
  largest difference to PyTorch measured at export with ONNX Runtime.

Windows of a long video are aligned and blended by the caller (see :mod:`bufferanytime.inference.windows`).
The graphs are traced by ``torch.onnx.export`` (``torch.export`` + onnxscript). Three things of the eager path do
not trace with a symbolic frame count and are changed for the export only, each with the same result: the
temporal blocks run on all pixels at once (eager: row chunks sized from T), their frame-position encodings are
computed instead of looked up in a cache keyed by T, and the normal model's VAE runs on all frames at once
(eager: chunks of ``decode_chunk``). Each prior family declares its graph (``Family.graph``, in its module of
:mod:`bufferanytime.families`), e.g. Depth Anything V2's: the library's DPT neck with the temporal blocks as forward
hooks (the eager path decodes the same modules in chunks of frames, equal within float rounding).
"""

from __future__ import annotations

import json
import logging
import time
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from bufferanytime import __version__
from bufferanytime.errors import InputError
from bufferanytime.inference.windows import default_overlap
from bufferanytime.models.base import VideoModel
from bufferanytime.models.temporal import TemporalBlock, attention_layers, sinusoidal_positions

REFERENCE_FRAME = (480, 640)  # default export size: the model's inference size for a 4:3 VGA frame
MAX_FRAMES = 4096  # upper bound of the dynamic window axis (torch.export wants one)
EXAMPLE_FRAMES = 4  # frames of the example input traced at export (T stays dynamic)


class ImageGraph(nn.Module):
    """A per-frame graph on images ``(N,3,H,W)``: the prior, for users who want the baseline without windows."""

    def __init__(self, video: nn.Module):
        super().__init__()
        self.video = video

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.video(images[None])[0]


def _unchunked_block(block: TemporalBlock, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """TemporalBlock.forward on all pixels at once (its row chunks have a size derived from T)."""
    bt, c, h, w = x.shape
    b = bt // num_frames
    y = block.norm(x).reshape(b, num_frames, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, num_frames, c)
    y = block._sequences(y, slice(0, b * h * w))
    return x + y.reshape(b, h, w, num_frames, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)


@contextmanager
def traceable(model: VideoModel) -> Iterator[None]:
    """Within the ``with``, ``model`` computes what it computes eagerly, in a form ``torch.export`` can keep T
    symbolic in (see the module docstring); everything is restored after."""
    blocks = [m for m in model.modules() if isinstance(m, TemporalBlock)]
    layers = attention_layers(model)
    chunk = getattr(model, "decode_chunk", None)
    for block in blocks:
        block.forward = types.MethodType(_unchunked_block, block)
    for layer in layers:
        layer.positions = lambda frames, dim, device, dtype, layer=layer: sinusoidal_positions(
            frames, dim, layer.max_period, device, dtype)
    if chunk is not None:
        model.decode_chunk = MAX_FRAMES
    try:
        yield
    finally:
        for module in (*blocks, *layers):
            module.__dict__.pop("forward", None)
            module.__dict__.pop("positions", None)
        if chunk is not None:
            model.decode_chunk = chunk


def export_size(model: VideoModel, size: tuple[int, int] | None) -> tuple[int, int]:
    """The fixed H x W of the graphs: ``size`` (checked), else the model's inference size of a 4:3 frame."""
    from bufferanytime.inference.pipeline import inference_size

    multiple = model.family.graph.multiple(model)
    if size is None:
        h, w = inference_size(model, *REFERENCE_FRAME)
        return max(multiple, round(h / multiple) * multiple), max(multiple, round(w / multiple) * multiple)
    if any(side < multiple or side % multiple for side in size):
        raise InputError(f"--size {size[0]}x{size[1]}: both sides must be multiples of {multiple} for this model")
    return size


def _export_graph(graph: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str], axis: str) -> None:
    """One graph to ``path``, its first dimension (images) or second (frames) dynamic."""
    dim = 0 if example.ndim == 4 else 1
    dynamic = torch.export.Dim(axis, min=2, max=MAX_FRAMES)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(graph, (example,), str(path), dynamo=True, dynamic_shapes=({dim: dynamic},),
                          input_names=[names[0]], output_names=[names[1]], external_data=True, verbose=False)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes that do not concern these graphs (torchvision operators, deprecations)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _check(graph: nn.Module, path: Path, name: str, example: torch.Tensor) -> dict:
    """Run the file with ONNX Runtime on ``example`` and compare with PyTorch (max |diff| and output range)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = graph(example).numpy()
    got = session.run(None, {name: example.numpy()})[0]
    diff = float(abs(got - expected).max())
    span = float(expected.max() - expected.min())
    return {"frames": int(example.shape[-4]), "max_abs_diff": diff, "output_range": span,
            "relative": diff / max(span, 1e-12)}


def _silent(text: str) -> None:
    """No progress lines."""


def require_onnx() -> None:
    """InputError naming the extra to install when the ONNX packages are missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"ONNX export needs {', '.join(missing)}: pip install 'bufferanytime[onnx]'")


def export_task(model: VideoModel, prior: VideoModel, staging: Path, size: tuple[int, int] | None,
                frames: int = EXAMPLE_FRAMES, check: bool = True, say: Callable[[str], None] | None = None,
                roles: tuple[str, ...] = ("video", "prior")) -> dict:
    """Write ``TASK_video.onnx``, ``TASK_prior.onnx`` and ``TASK.onnx.json`` of ``model`` (and of its per-frame
    ``prior``) into ``staging``; returns the description written to the JSON file.

    With ``check``, each file is run by ONNX Runtime on a window longer than the traced one (the dynamic axis at
    work) and compared with PyTorch; the differences are recorded in the JSON file. ``say`` is told the start of
    each step (each takes seconds to minutes). ``roles`` picks the files: both by default."""
    say = say or _silent
    task, (h, w) = model.task, export_size(model, size)
    graph_class = model.family.graph
    graphs = {"video": (model, graph_class(model).eval(), (1, frames), "frames", "T"),
              "prior": (prior, ImageGraph(graph_class(prior).eval()).eval(), (frames,), "images", "N")}
    files = {}
    for role in roles:
        source, graph, lead, input_name, axis = graphs[role]
        name, start = f"{task.name}_{role}.onnx", time.perf_counter()
        say(f"exporting {name} ({h}x{w}, {frames} frames traced)")
        with traceable(source):
            _export_graph(graph, torch.rand(*lead, 3, h, w), staging / name, (input_name, task.files.key), axis)
            files[role] = _file_info(name, task, input_name, axis, lead, (h, w))
            files[role]["export_s"] = round(time.perf_counter() - start, 2)
            if check:
                say(f"checking {name} with ONNX Runtime against PyTorch")
                longer = torch.rand(*lead[:-1], frames + 3, 3, h, w)
                files[role]["check"] = _check(graph, staging / name, input_name, longer)
    info = _description(model, task, (h, w), files)
    (staging / f"{task.name}.onnx.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _file_info(name: str, task, input_name: str, axis: str, lead: tuple[int, ...], size: tuple[int, int]) -> dict:
    """Inputs, outputs and dynamic axis of one exported file, for the JSON description."""
    batch = [*([1] if len(lead) == 2 else []), axis]
    channels = [] if task.channels == 1 else [task.channels]
    return {
        "file": name,
        "weights": f"{name}.data",  # the tensors, stored beside the graph (ONNX external data)
        "inputs": [{"name": input_name, "shape": [*batch, 3, *size], "dtype": "float32",
                    "content": "RGB in [0, 1], each frame resized to exactly H x W"}],
        "outputs": [{"name": task.files.key, "shape": [*batch, *channels, *size], "dtype": "float32",
                     "units": task.units or "relative"}],
        # traced with at least 2 (torch.export specialises sizes 0 and 1); one image or frame runs too (tested)
        "dynamic_axes": {axis: {"min": 1, "max": MAX_FRAMES}},
    }


def _description(model: VideoModel, task, size: tuple[int, int], files: dict) -> dict:
    """The JSON file: what each file takes and gives, how frames are sized, and how windows are run."""
    window = model.clip_len
    return {
        "format": "onnx",
        "task": task.name,
        "kind": model.kind,
        "family": model.family_name,
        "prior": model.prior_ref,
        "size_rule": {
            "height": size[0], "width": size[1],
            "rule": "resize every frame to exactly height x width (area when shrinking, cubic when enlarging, as "
                    "`bufferanytime depth|normal` does), run, then resize each output back to the frame's size "
                    "(bilinear; normals renormalised)",
        },
        "windows": {"window": window, "overlap": default_overlap(window),
                    "rule": f"run overlapping windows of the video model; {task.window_note} "
                            "(bufferanytime.inference.windows)"},
        "files": files,
        **_scale_anchor(model),
        "torch": torch.__version__,
        "version": __version__,
    }


def _scale_anchor(model: VideoModel) -> dict:
    """The description of a metric model's scale anchor, which the graph leaves out ({} without one)."""
    from bufferanytime.inference.pipeline import scale_anchor_info

    info = scale_anchor_info(model)
    if not info:
        return {}
    stride = info["scale_anchor"]["stride"]
    return {"scale_anchor": {
        "stride": stride,
        "rule": f"not in the video model's graph: multiply each window's output by exp(mean over every {stride}-th "
                "frame of the window (median log depth of the per-frame prior's output - median log depth of the "
                "video model's)), the per-frame file giving the prior, as `bufferanytime depth` does "
                "(VideoDepthModel.set_scale_anchor)",
    }}


def model_kinds(name_or_path: str, kind: str | None = None) -> list[str]:
    """The kinds to export: ``kind`` if given; every kind of a registered name; else the kind of the checkpoint's
    family (a saved video model or a prior directory: :func:`bufferanytime.families.family_of`). A Hugging Face
    prior is not read before it is loaded: InputError asking for ``--kind``."""
    from bufferanytime.families import family_of
    from bufferanytime.models import MODELS, list_models

    if kind is not None:
        return [kind]
    if name_or_path in MODELS:
        return list(MODELS.get(name_or_path))
    path = Path(name_or_path)
    if path.is_dir():
        return [family_of(path).kind]
    raise InputError(f"{name_or_path}: unknown model (no such directory; registered models: "
                     f"{', '.join(list_models())}); for a Hugging Face prior pass --kind")


def export_onnx(name_or_path: str, out_dir: str | Path, kind: str | None = None,
                size: tuple[int, int] | None = None, frames: int | None = None, check: bool = True,
                say: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Export every kind of ``name_or_path`` (see :func:`model_kinds`) into ``out_dir``; returns task -> JSON.
    ``say`` is told the start of each long step (loading, exporting, checking each file).

    Files are staged and moved into place together (:class:`~bufferanytime.io.outputs.OutputFiles`): a failure or
    an interrupt leaves nothing, and other files in ``out_dir`` are kept."""
    from bufferanytime.io.outputs import OutputFiles, check_output_root
    from bufferanytime.models import load_model, model_class

    require_onnx()
    check_output_root(out_dir)
    if frames is not None and frames < 2:
        raise InputError(f"--frames must be at least 2 (a window of the video model), got {frames}")
    kinds = model_kinds(str(name_or_path), kind)
    for name in kinds:
        model_class(name)  # an unknown kind is refused here, naming the choices
    say = say or _silent
    models = []
    for name in kinds:
        say(f"loading the {name} model {name_or_path}")
        models.append((load_model(name, name_or_path), load_model(name, name_or_path, per_frame=True)))
    described = {}
    with OutputFiles(out_dir) as staging:
        for model, prior in models:
            info = export_task(model.eval(), prior.eval(), staging, size, frames or EXAMPLE_FRAMES, check, say)
            described[info["task"]] = info
    return described
