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

import numpy as np
from tqdm import tqdm

from bufferanytime import __version__
from bufferanytime.constants import CYCLE_TAU
from bufferanytime.errors import InputError
from bufferanytime.evaluation.consistency import SequenceFlows, estimate_flows, opw
from bufferanytime.evaluation.datasets import EvalSequence, load_sequences
from bufferanytime.evaluation.points import point_lines, point_metrics
from bufferanytime.evaluation.slices import column_index, compose_slices, time_slice
from bufferanytime.io.outputs import NpyStreamWriter, OutputDir, write_image
from bufferanytime.tasks import Task, get_task

FLOW_CHOICES = ("auto", "dis", "raft-small", "gt")
WORK_DIR = "_work"  # scratch space inside the temporary report folder, removed before it is renamed
REPORT_ENTRIES = frozenset({"report.json", "report.md", "slices"})  # what a report folder holds (and may replace)


class NoSequenceEvaluated(InputError):
    """Every sequence of the dataset was skipped; each was already reported on its own."""


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr that does not break the progress bars."""
    tqdm.write(f"error: {message}", file=sys.stderr)


@dataclass
class ModelSpec:
    """One row of the report: a model (name, directory or Hub id), whether it runs per frame, and whether it runs
    online, one frame at a time (``online``: ``rolling`` or ``stream``, :mod:`bufferanytime.inference.online`)."""

    model: str
    per_frame: bool = False
    label: str = ""
    online: str | None = None

    def __post_init__(self) -> None:
        if not self.label:
            base = Path(self.model).name if Path(self.model).exists() else self.model
            self.label = f"{base} (per-frame)" if self.per_frame else base
            self.label += f" (online {self.online})" if self.online else ""


def model_specs(models: list[str], per_frame_baselines: bool, online: tuple[str, ...] = ()) -> list[ModelSpec]:
    """Rows for ``models``; with ``per_frame_baselines`` each model's per-frame baseline comes first, and each
    mode of ``online`` adds a row of the model run online in that mode after its offline row."""
    specs = []
    for name in models:
        if per_frame_baselines:
            specs.append(ModelSpec(name, per_frame=True))
        specs.append(ModelSpec(name))
        specs += [ModelSpec(name, online=mode) for mode in online]
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
    align: str | None = None  # none | scale | affine; None: the task's default (relative affine, metric none)


class _Resized:
    """A frame sequence read lazily at another size (bilinear, as ``cv2.resize`` in DepthCrafter's eval.py)."""

    def __init__(self, frames, size: tuple[int, int], task: Task):
        self.frames, self.size, self.task = frames, size, task

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.task.resize(np.asarray(self.frames[i]), self.size)


def _flow_method(config: EvalConfig) -> str:
    if config.flow == "auto":
        return "raft-small" if config.flow_weights else "dis"
    return config.flow


def _check(config: EvalConfig) -> None:
    get_task(config.task)
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
    _check(config)
    task = get_task(config.task)
    output = Path(output).resolve()
    check_report_dir(output)
    sequences = load_sequences(config.dataset, config.root)[: config.sequences]
    if not task.has_ground_truth(sequences[0]):
        raise InputError(
            f"{config.dataset} has no {task.name} ground truth in its official folder structure; "
            f"{task.name} evaluation runs on --dataset synthetic"
        )
    run = _Run(config, task, _flow_method(config), progress)
    task = run.task  # what the models serve (a metric prior's models: metric depth)
    report = _new_report(config, task, run)
    start = time.perf_counter()
    with OutputDir(output) as tmp:
        (tmp / "slices").mkdir()
        for seq in tqdm(sequences, desc="sequences", unit="seq", disable=not progress):
            _evaluate_or_skip(seq.truncated(config.max_frames), run, report, tmp, on_skip)
        if not report["sequences"]:
            raise NoSequenceEvaluated(f"none of the {len(sequences)} sequence(s) could be evaluated")
        report["mean"] = _means(report["sequences"], config.models)
        report["elapsed_s"] = round(time.perf_counter() - start, 2)
        (tmp / "report.json").write_text(json.dumps(_finite(report), indent=2) + "\n")
        (tmp / "report.md").write_text(render_markdown(report))
    return report


class _Run:
    """What every sequence of an evaluation shares: the task, the flow estimator, the settings, the models."""

    def __init__(self, config: EvalConfig, task: Task, method: str, progress: bool):
        from bufferanytime.flow import get_flow_model
        from bufferanytime.inference import InferenceSettings, Predictor, resolve_device
        from bufferanytime.inference.online import OnlinePredictor
        from bufferanytime.models import load_model

        self.config, self.task, self.method, self.progress = config, task, method, progress
        self.flow_model = None if method == "gt" else get_flow_model(
            method, **({"weights": config.flow_weights} if method == "raft-small" else {})
        )
        self.settings = InferenceSettings(max_res=config.max_res, short_side=config.short_side,
                                          window=config.window, overlap=config.overlap, device=config.device,
                                          precision=config.precision)
        device = resolve_device(self.settings.device)
        self.predictors = {}
        for spec in config.models:
            model = load_model(task.name, spec.model, per_frame=spec.per_frame)
            self.predictors[spec.label] = (
                OnlinePredictor(model, spec.online, device, self.settings.precision, config.window) if spec.online
                else Predictor(model, device, self.settings.precision))
        self.task = _models_task(config.models, [p.model for p in self.predictors.values()])
        self.align = self.task.check_align(config.align)


def _models_task(specs: list[ModelSpec], models: list) -> Task:
    """The one task all evaluated models serve; InputError when they differ (e.g. relative and metric depth)."""
    tasks = {model.task.name: spec.model for spec, model in zip(specs, models, strict=True)}
    if len(tasks) > 1:
        shown = ", ".join(f"{model} serves {name}" for name, model in tasks.items())
        raise InputError(f"the models serve different tasks ({shown}); evaluate them in separate runs")
    return models[0].task


def _new_report(config: EvalConfig, task: Task, run: _Run) -> dict:
    """The report's settings and models, before any sequence is evaluated."""
    return {
        "task": task.name,
        "align": run.align,
        "dataset": config.dataset,
        "root": str(config.root),
        "max_depth": task.depth_cap(config.dataset),
        "flow": {"method": run.method, "tau": config.tau},
        "settings": {k: v for k, v in asdict(config).items() if k not in ("models", "notes", "task", "dataset",
                                                                            "root")},
        "models": [asdict(s) | {"clip_len": run.predictors[s.label].model.clip_len} for s in config.models],
        "notes": list(config.notes),
        "sequences": {},
        "skipped": {},
        "mean": {},
        "version": __version__,
    }


def _evaluate_or_skip(seq: EvalSequence, run: _Run, report: dict, tmp: Path, on_skip: Callable[[str], None]) -> None:
    """Evaluate one sequence into ``report``, or list it as skipped (and say so) when it cannot be."""
    work = tmp / WORK_DIR
    try:
        if seq.error is not None:
            raise InputError(seq.error)
        work.mkdir()
        report["sequences"][seq.name] = _evaluate_sequence(seq, run, work, tmp / "slices")
    except InputError as exc:
        report["skipped"][seq.name] = str(exc)
        on_skip(f"sequence {seq.name} skipped: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


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


def _sequence_flows(seq: EvalSequence, run: _Run, work: Path) -> SequenceFlows:
    """The ground-truth flows of the sequence, or those estimated on its RGB frames (memory-mapped in ``work``)."""
    if run.method != "gt":
        return estimate_flows(seq.frames(), run.flow_model, run.config.tau, directory=work / "flows",
                              progress=run.progress, desc=f"{seq.name}: flow")
    if seq.gt_flows is None:
        raise InputError(f"{seq.name}: no ground-truth flow")
    return SequenceFlows.from_flows(*seq.gt_flows(), tau=run.config.tau, method="ground truth")


def _predict(seq: EvalSequence, run: _Run, label: str, predictor, path: Path) -> tuple[np.ndarray, float]:
    """A model's predictions of the sequence (memory-mapped from ``path``) and the model time they took."""
    from bufferanytime.inference import predict_frames
    from bufferanytime.inference.online import predict_online

    frames = tqdm(seq.frames(), total=seq.num_frames, desc=f"{seq.name}: {label}", unit="frame",
                  disable=not run.progress, leave=False)
    before = predictor.seconds
    predictions = (predict_online(predictor, frames, run.settings) if getattr(predictor, "online", False)
                   else predict_frames(predictor.model, frames, run.settings, predictor))
    pred = _stream(predictions, path, np.float32, "prediction")
    return pred, predictor.seconds - before


def _evaluate_sequence(seq: EvalSequence, run: _Run, work: Path, slice_dir: Path) -> dict:
    """Metrics of every model on one sequence, and its time-slice image."""
    task, config = run.task, run.config
    gt = _stream((task.read_ground_truth(seq, i) for i in range(seq.num_frames)), work / "gt.raw", task.gt_dtype,
                 task.name)
    gt_size = tuple(gt.shape[1:3])
    flows = _sequence_flows(seq, run, work)
    first = seq.read_rgb(0)
    x_frame, x_gt = column_index(first.shape[1], config.column), column_index(gt_size[1], config.column)
    gt_rgb, value_range = task.gt_slice_rgb(time_slice(gt, x_gt), config.dataset)
    slices = [("RGB", time_slice(seq.frames(), x_frame)), ("ground truth", gt_rgb)]
    entry: dict = {"frames": seq.num_frames, "size": list(gt_size), "models": {}}
    for label, predictor in run.predictors.items():
        pred, seconds = _predict(seq, run, label, predictor, work / "pred.raw")
        at_gt = _Resized(pred, gt_size, task)
        metrics = task.score(at_gt, gt, config.dataset, align=run.align)
        metrics |= point_metrics(task, at_gt, gt, metrics, seq.info, config.dataset)
        slices.append((label, task.pred_slice_rgb(time_slice(at_gt, x_gt), metrics, value_range)))
        metrics["opw"] = opw(pred, flows=flows, task=task)
        metrics["seconds"] = seconds
        metrics["seconds_per_frame"] = seconds / max(seq.num_frames, 1)
        entry["models"][label] = metrics
        del pred, at_gt
        (work / "pred.raw").unlink()
    slice_name = f"{_safe(seq.name)}.png"
    write_image(slice_dir / slice_name, compose_slices(first, x_frame, slices))
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
    frames = sum(entry["frames"] for entry in per_sequence.values())
    for spec in specs:
        rows = [entry["models"][spec.label] for entry in per_sequence.values()]
        keys = [k for k in rows[0] if k not in ("seconds", "seconds_per_frame", "scale", "shift")] if rows else []
        out = {}
        for key in keys:
            values = [r[key] for r in rows if math.isfinite(r[key])]
            out[key] = float(np.mean(values)) if values else math.nan
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


def _table(rows: list[tuple[str, dict]], task: Task, first: str = "Model") -> list[str]:
    lines = [f"| {first} | " + " | ".join(c.header for c in task.columns) + " |",
             "|---|" + "|".join("---:" for _ in task.columns) + "|"]
    for label, metrics in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(metrics.get(c.key), c.digits) for c in task.columns) + " |")
    return lines


def render_markdown(report: dict) -> str:
    """The human-readable report: header, the main table, per-sequence tables, time slices, definitions."""
    task = get_task(report["task"])
    seqs = report["sequences"]
    lines = [f"# {task.title} evaluation: {report['dataset']}", ""]
    lines += [f"> {note}" for note in report["notes"]] + ([""] if report["notes"] else [])
    lines += _header(report, task)
    lines += ["", "## Results (mean over sequences)", ""]
    lines += _table([(m["label"], report["mean"].get(m["label"], {})) for m in report["models"]], task)
    lines += ["", "## Per sequence", ""]
    rows = [(f"{name} / {m['label']}", entry["models"][m["label"]]) for name, entry in seqs.items()
            for m in report["models"]]
    lines += _table(rows, task, first="Sequence / model")
    lines += point_lines(report)
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
    lines += [f"- {text}" for text in task.definitions]
    lines += [
        "- OPW = mean over adjacent frame pairs and both flow directions of the mean L1 difference between a frame "
        "and the next (or previous) one warped onto it, over the pixels that pass the forward-backward flow check; "
        + task.opw_note,
        "- s/frame = model time per frame (flow and metrics excluded).",
        "",
        f"Written by bufferanytime {report['version']}.",
        "",
    ]
    return "\n".join(lines)


def _how_run(m: dict) -> str:
    """How a report's model was run, in words."""
    if m.get("online") == "rolling":
        return " run online: each frame's output from the model over a rolling window of past frames, aligned"
    if m.get("online"):
        return " run online, one frame at a time (causal model, cached keys and values)"
    if m["per_frame"]:
        return " run frame by frame (the image prior alone)"
    return f" as a video model (window {m['clip_len']} frames)"


def _header(report: dict, task: Task) -> list[str]:
    """The report's list of what was evaluated how: data, models, inference, flow, task-specific lines."""
    settings, seqs = report["settings"], report["sequences"]
    frames = sum(e["frames"] for e in seqs.values())
    skipped = f", {len(report['skipped'])} skipped (see below)" if report.get("skipped") else ""
    return [
        f"- data: `{report['root']}`, {len(seqs)} sequence(s){skipped}, {frames} frames"
        + (f" (at most {settings['max_frames']} per sequence)" if settings.get("max_frames") else ""),
        "- models: " + "; ".join(
            f"**{m['label']}** = `{m['model']}`" + _how_run(m)
            for m in report["models"]
        ),
        f"- inference: {_size_text(settings)}, device {settings['device']}, {settings['precision']}",
        "- OPW flow: " + ("the ground-truth flow and its validity masks" if report["flow"]["method"] == "gt"
                          else f"{report['flow']['method']} on the RGB frames")
        + f", forward-backward check at {report['flow']['tau']} px",
        *task.report_lines(report),
    ]
