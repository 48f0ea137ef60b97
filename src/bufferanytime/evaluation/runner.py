"""``run_evaluation``: run models over a benchmark, score them, and write the report folder.

The report folder (written under a temporary name, renamed when complete; an existing folder is replaced only
when it holds nothing but an earlier report) holds

- ``report.json``: settings, models, per-sequence metrics of every model and their means over sequences;
- ``report.md``: the table of the paper (rows = models; AbsRel, delta1, OPW, seconds per frame for depth; mean,
  median, 11.25/22.5/30 degree accuracies and OPW for normals), per-sequence tables and the time slices;
- ``slices/<sequence>.png``: the centre pixel column over time for the RGB, the ground truth and every model.

Per sequence, ground truth, flows and predictions are streamed to raw files and read back through memory maps,
so memory stays bounded for long sequences; the flows are computed once and shared by all models.

A sequence that cannot be evaluated (missing or unreadable files, too few ground-truth frames) is reported in one
line as soon as it is found, listed under ``skipped`` in the report, and the other sequences are still evaluated;
when none can be, nothing is written and :class:`NoSequenceEvaluated` is raised.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from bufferanytime import __version__
from bufferanytime.constants import CYCLE_TAU, EVAL_MAX_DEPTH, EVAL_MIN_DEPTH, SYNTHETIC_MAX_DEPTH
from bufferanytime.errors import InputError
from bufferanytime.evaluation.consistency import SequenceFlows, estimate_flows, opw
from bufferanytime.evaluation.datasets import EvalSequence, load_sequences
from bufferanytime.evaluation.metrics import (
    depth_metrics,
    fit_disparity_affine,
    normal_metrics,
)
from bufferanytime.evaluation.slices import (
    column_index,
    compose_slices,
    depth_slice_rgb,
    normal_slice_rgb,
    time_slice,
    write_png,
)
from bufferanytime.io.outputs import NpyStreamWriter, OutputDir, robust_range

TASKS = ("depth", "normal")
FLOW_CHOICES = ("auto", "dis", "raft-small", "gt")
MAX_DEPTH = {**EVAL_MAX_DEPTH, "synthetic": SYNTHETIC_MAX_DEPTH}
WORK_DIR = "_work"  # scratch space inside the temporary report folder, removed before it is renamed
REPORT_ENTRIES = frozenset({"report.json", "report.md", "slices"})  # what a report folder holds (and may replace)


class NoSequenceEvaluated(InputError):
    """Every sequence of the dataset was skipped; each was already reported on its own."""


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr that does not break the progress bars."""
    tqdm.write(f"error: {message}", file=sys.stderr)

COLUMNS = {
    "depth": [("abs_rel", "AbsRel ↓", 3), ("delta1", "δ1 ↑", 3), ("opw", "OPW ↓", 3),
              ("seconds_per_frame", "s/frame", 3)],
    "normal": [("mean", "Mean ↓", 2), ("median", "Median ↓", 2), ("a11", "11.25° ↑", 2), ("a22", "22.5° ↑", 2),
               ("a30", "30° ↑", 2), ("opw", "OPW ↓", 3), ("seconds_per_frame", "s/frame", 3)],
}


@dataclass
class ModelSpec:
    """One row of the report: a model (name, directory or Hub id) and whether it runs per frame."""

    model: str
    per_frame: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            base = Path(self.model).name if Path(self.model).exists() else self.model
            self.label = f"{base} (per-frame)" if self.per_frame else base


def model_specs(models: list[str], per_frame_baselines: bool) -> list[ModelSpec]:
    """Rows for ``models``; with ``per_frame_baselines`` each model's per-frame baseline comes first."""
    specs = []
    for name in models:
        if per_frame_baselines:
            specs.append(ModelSpec(name, per_frame=True))
        specs.append(ModelSpec(name))
    seen: dict[str, int] = {}
    for spec in specs:
        count = seen.get(spec.label, 0)
        seen[spec.label] = count + 1
        if count:
            spec.label = f"{spec.label} #{count + 1}"
    return specs


@dataclass
class EvalConfig:
    task: str
    dataset: str
    root: str
    models: list[ModelSpec]
    flow: str = "auto"
    flow_weights: str | None = None
    max_frames: int | None = None
    sequences: int | None = None
    max_res: int | None = None  # None (with short_side None): each model's own input size
    short_side: int | None = None
    window: int | None = None
    overlap: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    column: float | None = None
    tau: float = CYCLE_TAU
    notes: list[str] = field(default_factory=list)


class _Resized:
    """A frame sequence read lazily at another size (bilinear, as ``cv2.resize`` in DepthCrafter's eval.py)."""

    def __init__(self, frames, size: tuple[int, int], kind: str):
        self.frames, self.size, self.kind = frames, size, kind

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        frame = np.asarray(self.frames[i])
        if frame.shape[:2] == self.size:
            return frame
        out = cv2.resize(frame, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        if self.kind == "normal":
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-8)
        return out


def _flow_method(config: EvalConfig) -> str:
    if config.flow == "auto":
        return "raft-small" if config.flow_weights else "dis"
    return config.flow


def _check(config: EvalConfig) -> None:
    if config.task not in TASKS:
        raise InputError(f"unknown task {config.task!r}; expected one of {', '.join(TASKS)}")
    if config.flow not in FLOW_CHOICES:
        raise InputError(f"unknown flow {config.flow!r}; expected one of {', '.join(FLOW_CHOICES)}")
    if not config.models:
        raise InputError("no model to evaluate: pass --model at least once")
    if config.flow == "gt" and config.dataset != "synthetic":
        raise InputError("--flow gt needs ground-truth flow, which only the synthetic dataset has")
    if config.flow_weights is not None and not Path(config.flow_weights).is_file():
        raise InputError(f"{config.flow_weights}: no such flow weights file")
    if config.column is not None and not 0.0 <= config.column < 1.0:
        raise InputError(f"--column must be a fraction of the width in [0, 1), got {config.column}")


def check_report_dir(output: Path) -> None:
    """The report folder is replaced whole: refuse one that holds anything but an earlier report."""
    if not output.exists():
        return
    if not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder")
    others = sorted(p.name for p in output.iterdir() if p.name not in REPORT_ENTRIES)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise InputError(f"{output}: holds files that are not an eval report ({shown}); they would be replaced, "
                         "so choose a new or empty folder")


def run_evaluation(config: EvalConfig, output: str | Path, progress: bool = True,
                   on_skip: Callable[[str], None] = print_error) -> dict:
    """Evaluate ``config.models`` on ``config.dataset`` and write the report folder ``output``; return the report.

    ``on_skip(message)`` is called for every sequence that cannot be evaluated (the report lists them too).
    """
    from bufferanytime.flow import get_flow_model
    from bufferanytime.inference import InferenceSettings, Predictor, resolve_device
    from bufferanytime.models import load_model

    _check(config)
    output = Path(output).resolve()
    check_report_dir(output)
    sequences = load_sequences(config.dataset, config.root)[: config.sequences]
    if config.task == "normal" and sequences[0].read_normal is None:
        raise InputError(
            f"{config.dataset} has no normal ground truth in its official folder structure; "
            "normal evaluation runs on --dataset synthetic"
        )
    method = _flow_method(config)
    flow_model = None if method == "gt" else get_flow_model(
        method, **({"weights": config.flow_weights} if method == "raft-small" else {})
    )
    settings = InferenceSettings(max_res=config.max_res, short_side=config.short_side, window=config.window,
                                 overlap=config.overlap,
                                 device=config.device, precision=config.precision)
    device = resolve_device(settings.device)
    predictors = {}
    for spec in config.models:
        model = load_model(config.task, spec.model, per_frame=spec.per_frame)
        predictors[spec.label] = Predictor(model, device, settings.precision)

    report = {
        "task": config.task,
        "dataset": config.dataset,
        "root": str(config.root),
        "max_depth": MAX_DEPTH[config.dataset] if config.task == "depth" else None,
        "flow": {"method": method, "tau": config.tau},
        "settings": {k: v for k, v in asdict(config).items() if k not in ("models", "notes", "task", "dataset",
                                                                            "root")},
        "models": [asdict(s) | {"clip_len": predictors[s.label].model.clip_len} for s in config.models],
        "notes": list(config.notes),
        "sequences": {},
        "skipped": {},
        "mean": {},
        "version": __version__,
    }
    start = time.perf_counter()
    with OutputDir(output) as tmp:
        (tmp / "slices").mkdir()
        work = tmp / WORK_DIR
        for seq in tqdm(sequences, desc="sequences", unit="seq", disable=not progress):
            seq = seq.truncated(config.max_frames)
            try:
                if seq.error is not None:
                    raise InputError(seq.error)
                work.mkdir()
                report["sequences"][seq.name] = _evaluate_sequence(
                    seq, config, method, flow_model, settings, predictors, work, tmp / "slices", progress
                )
            except InputError as exc:
                report["skipped"][seq.name] = str(exc)
                on_skip(f"sequence {seq.name} skipped: {exc}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        if not report["sequences"]:
            raise NoSequenceEvaluated(f"none of the {len(sequences)} sequence(s) could be evaluated")
        report["mean"] = _means(report["sequences"], config.models)
        report["elapsed_s"] = round(time.perf_counter() - start, 2)
        (tmp / "report.json").write_text(json.dumps(_finite(report), indent=2) + "\n")
        (tmp / "report.md").write_text(render_markdown(report))
    return report


def _stream(frames, path: Path, dtype, what: str) -> np.ndarray:
    """Write ``frames`` to a raw file and map it back; InputError if they do not all have the same shape."""
    writer = NpyStreamWriter(path, dtype)
    try:
        for frame in frames:
            writer.append(frame)
    except ValueError as exc:
        raise InputError(f"{what} frame {writer.count}: {exc}") from exc
    finally:
        writer.close()
    return writer.read()


def _evaluate_sequence(seq: EvalSequence, config: EvalConfig, method: str, flow_model, settings, predictors: dict,
                       work: Path, slice_dir: Path, progress: bool) -> dict:
    from bufferanytime.inference import predict_frames

    depth_task = config.task == "depth"
    if depth_task:
        gt = _stream((seq.read_depth(i) for i in range(seq.num_frames)), work / "gt.raw", np.float64, "depth")
    else:
        gt = _stream((seq.read_normal(i) for i in range(seq.num_frames)), work / "gt.raw", np.float32, "normal")
    gt_size = tuple(gt.shape[1:3])
    if method == "gt":
        if seq.gt_flows is None:
            raise InputError(f"{seq.name}: no ground-truth flow")
        flows = SequenceFlows.from_flows(*seq.gt_flows(), tau=config.tau, method="ground truth")
    else:
        flows = estimate_flows(seq.frames(), flow_model, config.tau, directory=work / "flows", progress=progress,
                               desc=f"{seq.name}: flow")
    first = seq.read_rgb(0)
    x_frame = column_index(first.shape[1], config.column)
    x_gt = column_index(gt_size[1], config.column)
    rgb_slice = time_slice(seq.frames(), x_frame)

    entry: dict = {"frames": seq.num_frames, "size": list(gt_size), "models": {}}
    slices = []
    if depth_task:
        max_depth = MAX_DEPTH[config.dataset]
        gt_slice = time_slice(gt, x_gt)
        valid = (gt_slice > EVAL_MIN_DEPTH) & (gt_slice < max_depth)
        gt_disp = np.where(valid, 1.0 / np.where(valid, gt_slice, 1.0), np.nan)
        lo, hi = robust_range(gt_disp[valid]) if valid.any() else (0.0, 1.0)
        slices.append(("ground truth", depth_slice_rgb(gt_disp, lo, hi, ~valid)))
    else:
        slices.append(("ground truth", normal_slice_rgb(time_slice(gt, x_gt))))

    for label, predictor in predictors.items():
        predictor.seconds = 0.0
        frames = tqdm(seq.frames(), total=seq.num_frames, desc=f"{seq.name}: {label}", unit="frame",
                      disable=not progress, leave=False)
        pred = _stream(predict_frames(predictor.model, frames, settings, predictor), work / "pred.raw", np.float32,
                       "prediction")
        at_gt = _Resized(pred, gt_size, config.task)
        if depth_task:
            metrics = depth_metrics(at_gt, gt, max_depth)
            scale, shift = fit_disparity_affine(at_gt, gt, max_depth)
            aligned = np.maximum(scale * np.maximum(time_slice(at_gt, x_gt), EVAL_MIN_DEPTH) + shift, EVAL_MIN_DEPTH)
            slices.append((label, depth_slice_rgb(aligned, lo, hi)))
            metrics |= {"scale": scale, "shift": shift}
        else:
            metrics = normal_metrics(at_gt, gt)
            slices.append((label, normal_slice_rgb(time_slice(at_gt, x_gt))))
        metrics["opw"] = opw(pred, flows=flows)
        metrics["seconds"] = predictor.seconds
        metrics["seconds_per_frame"] = predictor.seconds / max(seq.num_frames, 1)
        entry["models"][label] = metrics
        del pred, at_gt
        (work / "pred.raw").unlink()

    slice_name = f"{_safe(seq.name)}.png"
    write_png(slice_dir / slice_name, compose_slices(first, x_frame, [("RGB", rgb_slice), *slices]))
    entry["slice"] = f"slices/{slice_name}"
    entry["slice_column"] = {"frame": x_frame, "ground_truth": x_gt}
    entry["flow_matched_fraction"] = float(
        (np.mean(flows.mask_fwd) + np.mean(flows.mask_bwd)) / 2 if len(flows) else math.nan
    )
    return entry


def _size_text(settings: dict) -> str:
    """The inference size of the report's settings, in words."""
    parts = [f"{label} {settings[key]} px" for key, label in (("short_side", "short side"), ("max_res", "longest side"))
             if settings.get(key)]
    return ", ".join(parts) if parts else "each model's own input size"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _means(per_sequence: dict, specs: list[ModelSpec]) -> dict:
    """Mean over sequences of every metric (sequences where it is undefined are left out); time per frame is
    total model time over total frames."""
    means = {}
    for spec in specs:
        rows = [entry["models"][spec.label] for entry in per_sequence.values()]
        keys = [k for k in rows[0] if k not in ("seconds", "seconds_per_frame", "scale", "shift")] if rows else []
        out = {}
        for key in keys:
            values = [r[key] for r in rows if math.isfinite(r[key])]
            out[key] = float(np.mean(values)) if values else math.nan
        frames = sum(entry["frames"] for entry in per_sequence.values())
        out["seconds_per_frame"] = sum(r["seconds"] for r in rows) / max(frames, 1)
        out["sequences"] = len(rows)
        means[spec.label] = out
    return means


def _finite(obj):
    """JSON has no NaN: undefined values become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _table(rows: list[tuple[str, dict]], task: str, first: str = "Model") -> list[str]:
    columns = COLUMNS[task]
    lines = [f"| {first} | " + " | ".join(c[1] for c in columns) + " |",
             "|---|" + "|".join("---:" for _ in columns) + "|"]
    for label, metrics in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(metrics.get(k), d) for k, _, d in columns) + " |")
    return lines


def render_markdown(report: dict) -> str:
    """The human-readable report: header, the main table, per-sequence tables, time slices, definitions."""
    task, dataset = report["task"], report["dataset"]
    settings = report["settings"]
    seqs = report["sequences"]
    frames = sum(e["frames"] for e in seqs.values())
    title = "Video depth" if task == "depth" else "Video normals"
    lines = [f"# {title} evaluation: {dataset}", ""]
    lines += [f"> {note}" for note in report["notes"]] + ([""] if report["notes"] else [])
    skipped = f", {len(report['skipped'])} skipped (see below)" if report.get("skipped") else ""
    lines += [
        f"- data: `{report['root']}`, {len(seqs)} sequence(s){skipped}, {frames} frames"
        + (f" (at most {settings['max_frames']} per sequence)" if settings.get("max_frames") else ""),
        "- models: " + "; ".join(
            f"**{m['label']}** = `{m['model']}`" + (" run frame by frame (the image prior alone)" if m["per_frame"]
                                                    else f" as a video model (window {m['clip_len']} frames)")
            for m in report["models"]
        ),
        f"- inference: {_size_text(settings)}, device {settings['device']}, {settings['precision']}",
        "- OPW flow: " + ("the ground-truth flow and its validity masks" if report["flow"]["method"] == "gt"
                          else f"{report['flow']['method']} on the RGB frames")
        + f", forward-backward check at {report['flow']['tau']} px",
    ]
    if task == "depth":
        lines.append(f"- depth range: ({EVAL_MIN_DEPTH}, {report['max_depth']}) m; one scale and shift per video, "
                     "fitted in disparity (DepthCrafter protocol)")
    lines += ["", "## Results (mean over sequences)", ""]
    lines += _table([(m["label"], report["mean"].get(m["label"], {})) for m in report["models"]], task)
    lines += ["", "## Per sequence", ""]
    rows = []
    for name, entry in seqs.items():
        for m in report["models"]:
            rows.append((f"{name} / {m['label']}", entry["models"][m["label"]]))
    lines += _table(rows, task, first="Sequence / model")
    lines += ["", "## Time slices", "",
              "One pixel column (marked red on frame 0) over time, left to right: RGB, ground truth, then each model "
              "(depth: disparity after the per-video scale and shift, in the ground truth's colour range). Stable "
              "predictions give horizontal bands; flicker shows as vertical stripes.", ""]
    for name, entry in seqs.items():
        lines += [f"**{name}**", "", f"![{name}]({entry['slice']})", ""]
    if report.get("skipped"):
        lines += ["## Skipped sequences", "", "Not evaluated, so not in the means above:", ""]
        lines += [f"- **{name}**: {reason}" for name, reason in report["skipped"].items()] + [""]
    lines += ["## Definitions", ""]
    if task == "depth":
        lines += [
            "- AbsRel = mean |d − d*| / d*, δ1 = fraction of pixels with max(d / d*, d* / d) < 1.25, per frame over "
            "valid pixels, averaged over frames, then over sequences. d is the prediction after one least-squares "
            "scale and shift per video in disparity space, inverted and clipped to the depth range.",
        ]
    else:
        lines += [
            "- Mean / Median angular error (degrees) and the percentage of pixels under 11.25°, 22.5°, 30°, over all "
            "valid pixels of a sequence, then averaged over sequences.",
        ]
    lines += [
        "- OPW = mean over adjacent frame pairs and both flow directions of the mean L1 difference between a frame "
        "and the next (or previous) one warped onto it, over the pixels that pass the forward-backward flow check; "
        + ("disparity normalised once per video by its median and mean absolute deviation."
           if task == "depth" else "unit normals, not normalised."),
        "- s/frame = model time per frame (flow and metrics excluded).",
        "",
        f"Written by bufferanytime {report['version']}.",
        "",
    ]
    return "\n".join(lines)
