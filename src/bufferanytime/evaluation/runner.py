"""``run_evaluation``: run models over a benchmark, score them, and write the report folder.

The report folder (a new one is written under a temporary name and renamed when complete; an existing one, empty
or holding an earlier report, is never replaced as a whole: the new report's files replace the old ones in it, each
atomically; a folder holding anything else is refused) holds

- ``report.json``: settings, models, per-sequence metrics of every model and their means over sequences;
- ``report.md``: the table of the paper (rows = models; AbsRel, delta1, OPW, seconds per frame for depth; mean,
  median, 11.25/22.5/30 degree accuracies and OPW for normals), per-sequence tables and the time slices;
- ``slices/<sequence>.png``: the centre pixel column over time for the RGB, the ground truth and every model.

Per sequence, ground truth, flows and predictions are streamed to raw files and read back through memory maps,
so memory stays bounded for long sequences; the flows are computed once and shared by all models.

A sequence that cannot be evaluated (missing or unreadable files, too few ground-truth frames, a ground truth of
another size than its frames, no valid ground-truth pixel) is reported in one line as soon as it is found, listed
under ``skipped`` in the report, and the other sequences are still evaluated; when none can be, nothing is written
and :class:`NoSequenceEvaluated` is raised. A model output holding NaN or inf is not scored: one warning line, the
row marked "non-finite output" and listed under ``non_finite``, left out of the means.
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
import torch
from tqdm import tqdm

from bufferanytime import __version__
from bufferanytime.constants import CYCLE_TAU, EVAL_MIN_DEPTH
from bufferanytime.errors import InputError
from bufferanytime.evaluation.compare import check_comparable, compare_lines, load_report, paired_differences
from bufferanytime.evaluation.consistency import SequenceFlows, estimate_flows, opw
from bufferanytime.evaluation.datasets import EvalSequence, load_sequences
from bufferanytime.evaluation.points import point_lines, point_metrics
from bufferanytime.evaluation.slices import column_index, compose_slices, time_slice
from bufferanytime.inference.options import InferenceSettings
from bufferanytime.io.outputs import NpyStreamWriter, OutputDir, OutputFiles, write_image
from bufferanytime.losses.stabilization import valid_pair_masks
from bufferanytime.tasks import Task, get_task
from bufferanytime.tasks.metrics import NORMAL_MIN_NORM, valid_depth_mask

FLOW_CHOICES = ("auto", "dis", "raft-small", "gt")
WORK_DIR = "_work"  # scratch space inside the temporary report folder, removed before it is renamed
REPORT_ENTRIES = frozenset({"report.json", "report.md", "slices"})  # what a report folder holds (and may replace)
NON_FINITE = "non-finite output"  # how the report marks a model's result left unscored because of NaN/inf values


class NoSequenceEvaluated(InputError):
    """Every sequence of the dataset was skipped; each was already reported on its own."""


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr that does not break the progress bars."""
    tqdm.write(f"error: {message}", file=sys.stderr)


def print_warning(message: str) -> None:
    """One ``warning: ...`` line on stderr that does not break the progress bars."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


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


#: The inference options an evaluation takes (their flags, defaults, help and checks: InferenceSettings); the
#: report's settings list their values. None size options: each model's own input size.
EVAL_OPTIONS = ("short_side", "max_res", "window", "overlap", "device", "precision")


@dataclass
class EvalConfig:
    """What ``run_evaluation`` does: the benchmark, the models (rows), the flow for OPW and how models run."""

    task: str
    dataset: str
    root: str
    models: list[ModelSpec]
    flow: str = "auto"
    flow_weights: str | None = None
    max_frames: int | None = None
    sequences: int | None = None
    inference: InferenceSettings = field(default_factory=InferenceSettings)  # sizes, windows, device, precision
    column: float | None = None
    tau: float = CYCLE_TAU
    notes: list[str] = field(default_factory=list)
    align: str | None = None  # none | scale | affine; None: the task's default (relative affine, metric none)
    compare: str | None = None  # an earlier report (folder or report.json): paired differences with 95 % CIs


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
    """Refuse a report folder that holds anything but an earlier report (whose files the new one replaces)."""
    if not output.exists():
        return
    if not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder")
    others = sorted(p.name for p in output.iterdir() if p.name not in REPORT_ENTRIES)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise InputError(f"{output}: holds files that are not an eval report ({shown}); choose a new or empty "
                         "folder, or an earlier report's")


def report_writer(output: Path) -> OutputDir | OutputFiles:
    """Where the report is staged: a new folder is built whole and renamed into place; an existing one (an earlier
    report, an empty folder, the current directory) is never replaced as a whole, only the report's own files in it
    are, each atomically."""
    return OutputFiles(output) if output.is_dir() else OutputDir(output)


def run_evaluation(config: EvalConfig, output: str | Path, progress: bool = True,
                   on_skip: Callable[[str], None] = print_error,
                   on_warning: Callable[[str], None] = print_warning) -> dict:
    """Evaluate ``config.models`` on ``config.dataset`` and write the report folder ``output``; return the report.

    ``on_skip(message)`` is called for every sequence that cannot be evaluated (the report lists them too);
    ``on_warning(message)`` for every model whose output on a sequence is not finite (its row is marked, and listed
    under ``non_finite``).
    """
    _check(config)
    task = get_task(config.task)
    output = Path(output).resolve()
    check_report_dir(output)
    other = load_report(config.compare) if config.compare else None
    sequences = load_sequences(config.dataset, config.root)[: config.sequences]
    listed = next((s for s in sequences if s.error is None), None)  # a broken one lists no ground truth
    if listed is not None and not task.has_ground_truth(listed):
        raise InputError(
            f"{config.dataset} has no {task.name} ground truth in its official folder structure; "
            f"{task.name} evaluation runs on --dataset synthetic"
        )
    run = _Run(config, task, _flow_method(config), progress, on_warning)
    task = run.task  # what the models serve (a metric prior's models: metric depth)
    if other is not None:
        check_comparable(task.name, config.dataset, other)
    report = _new_report(config, task, run)
    start = time.perf_counter()
    with report_writer(output) as tmp:
        (tmp / "slices").mkdir()
        for seq in tqdm(sequences, desc="sequences", unit="seq", disable=not progress):
            _evaluate_or_skip(seq.truncated(config.max_frames), run, report, tmp, on_skip)
        if not report["sequences"]:
            raise NoSequenceEvaluated(f"none of the {len(sequences)} sequence(s) could be evaluated")
        report["mean"] = _means(report["sequences"], config.models)
        report["non_finite"] = _non_finite_rows(report["sequences"])
        report["resolution"] = _resolution(report)
        if other is not None:
            report["compare"] = paired_differences(_finite(report), other)
        report["elapsed_s"] = round(time.perf_counter() - start, 2)
        (tmp / "report.json").write_text(json.dumps(_finite(report), indent=2) + "\n")
        (tmp / "report.md").write_text(render_markdown(report))
    return report


class _Run:
    """What every sequence of an evaluation shares: the task, the flow estimator, the settings, the models."""

    def __init__(self, config: EvalConfig, task: Task, method: str, progress: bool,
                 warn: Callable[[str], None] = print_warning):
        from bufferanytime.flow import get_flow_model
        from bufferanytime.inference import Predictor, resolve_device
        from bufferanytime.inference.online import OnlinePredictor
        from bufferanytime.models import load_model

        self.config, self.task, self.method, self.progress, self.warn = config, task, method, progress, warn
        self.flow_model = None if method == "gt" else get_flow_model(
            method, **({"weights": config.flow_weights} if method == "raft-small" else {})
        )
        self.settings = config.inference
        device = resolve_device(self.settings.device)
        precision = self.settings.precision
        self.predictors = {}
        for spec in config.models:
            model = load_model(task.name, spec.model, per_frame=spec.per_frame)
            self.predictors[spec.label] = (
                OnlinePredictor(model, spec.online, device, precision, self.settings.window) if spec.online
                else Predictor(model, device, precision))
        self.task = _models_task(config.models, [p.model for p in self.predictors.values()])
        self.align = self.task.check_align(config.align)


def _models_task(specs: list[ModelSpec], models: list) -> Task:
    """The one task all evaluated models serve; InputError when they differ (e.g. relative and metric depth)."""
    tasks = {model.task.name: spec.model for spec, model in zip(specs, models, strict=True)}
    if len(tasks) > 1:
        shown = ", ".join(f"{model} serves {name}" for name, model in tasks.items())
        raise InputError(f"the models serve different tasks ({shown}); evaluate them in separate runs")
    return models[0].task


def _report_settings(config: EvalConfig) -> dict:
    """The options of the run, one level: the config's own and the inference options an evaluation takes."""
    own = {k: v for k, v in asdict(config).items() if k not in ("models", "notes", "task", "dataset", "root",
                                                                 "inference")}
    return {**own, **{name: getattr(config.inference, name) for name in EVAL_OPTIONS}}


def _new_report(config: EvalConfig, task: Task, run: _Run) -> dict:
    """The report's settings and models, before any sequence is evaluated."""
    return {
        "task": task.name,
        "align": run.align,
        "dataset": config.dataset,
        "root": str(config.root),
        "max_depth": task.depth_cap(config.dataset),
        "flow": {"method": run.method, "tau": config.tau},
        "settings": _report_settings(config),
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
    if not writer.count or 0 in writer.shape:
        raise InputError(f"{what}: no data (frames of shape {writer.shape[1:]})")
    return writer.read()


def _sequence_flows(seq: EvalSequence, run: _Run, work: Path, size: tuple[int, int]) -> SequenceFlows:
    """The ground-truth flows of the sequence, or those estimated on its RGB frames (memory-mapped in ``work``);
    InputError when ground-truth flows and masks are not ``T - 1`` pairs at the frames' ``size``."""
    if run.method != "gt":
        return estimate_flows(seq.frames(), run.flow_model, run.config.tau, directory=work / "flows",
                              progress=run.progress, desc=f"{seq.name}: flow")
    if seq.gt_flows is None:
        raise InputError(f"{seq.name}: no ground-truth flow")
    try:
        fwd, bwd, valid_fwd, valid_bwd = seq.gt_flows()
    except ValueError as exc:  # an array of the wrong number of dimensions
        raise InputError(f"ground-truth flow: {exc}") from exc
    pairs = seq.num_frames - 1
    for what, array, expected in (("forward flow", fwd, (pairs, 2, *size)), ("backward flow", bwd, (pairs, 2, *size)),
                                  ("forward flow mask", valid_fwd, (pairs, *size)),
                                  ("backward flow mask", valid_bwd, (pairs, *size))):
        if array is not None and tuple(np.shape(array)) != expected:
            raise InputError(f"ground-truth {what} has shape {tuple(np.shape(array))}, expected {expected} "
                             f"({pairs} frame pairs of {size[1]}x{size[0]} px)")
    for what, flow in (("forward", fwd), ("backward", bwd)):
        bad = sum(int(np.count_nonzero(~np.isfinite(pair))) for pair in flow)
        if bad:
            raise InputError(f"ground-truth {what} flow has {bad} non-finite value(s) (NaN or inf)")
    return SequenceFlows.from_flows(fwd, bwd, valid_fwd, valid_bwd, tau=run.config.tau, method="ground truth")


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


def _read_ground_truth(seq: EvalSequence, task: Task, work: Path, frame_size: tuple[int, int]) -> np.ndarray:
    """The sequence's ground truth, memory-mapped from ``work``; InputError when its frames are not the RGB
    frames' size (they are never resized to fit) or none of its pixels is valid."""
    gt = _stream((task.read_ground_truth(seq, i) for i in range(seq.num_frames)), work / "gt.raw", task.gt_dtype,
                 task.name)
    size = tuple(gt.shape[1:3])
    if size != frame_size:
        raise InputError(f"ground-truth {task.name} is {size[1]}x{size[0]} px but the RGB frames are "
                         f"{frame_size[1]}x{frame_size[0]} px")
    return gt


def _check_valid_pixels(gt: np.ndarray, task: Task, dataset: str) -> None:
    """InputError when no pixel of the ground truth counts for the metrics (nothing could be scored)."""
    cap = task.depth_cap(dataset)
    if any(_has_valid_pixel(np.asarray(frame), cap) for frame in gt):
        return
    rule = f"depth in ({EVAL_MIN_DEPTH:g}, {cap:g}) m" if cap is not None else "a finite, non-zero normal"
    raise InputError(f"no valid ground-truth pixel in any of its {len(gt)} frames (valid: {rule})")


def _has_valid_pixel(frame: np.ndarray, depth_cap: float | None) -> bool:
    """Whether a ground-truth frame has a pixel the metrics use (:func:`_valid_pixels`)."""
    return bool(_valid_pixels(frame, depth_cap).any())


def _valid_pixels(frame: np.ndarray, depth_cap: float | None) -> np.ndarray:
    """Bool ``(H, W)``: the pixels of a ground-truth frame the metrics use: depth inside the dataset's range
    (``depth_cap`` given), or a finite normal of non-zero length."""
    if depth_cap is not None:
        return valid_depth_mask(frame, depth_cap)
    finite = np.all(np.isfinite(frame), axis=-1, keepdims=True)
    return np.linalg.norm(np.where(finite, frame, 0.0), axis=-1) > NORMAL_MIN_NORM


def _non_finite(pred: np.ndarray) -> tuple[int, int]:
    """How many values, and in how many frames, of a prediction are NaN or infinite (read one frame at a time)."""
    values = frames = 0
    for frame in pred:
        bad = int(np.count_nonzero(~np.isfinite(frame)))
        values, frames = values + bad, frames + bool(bad)
    return values, frames


def _evaluate_sequence(seq: EvalSequence, run: _Run, work: Path, slice_dir: Path) -> dict:
    """Metrics of every model on one sequence, and its time-slice image."""
    task, config = run.task, run.config
    first = seq.read_rgb(0)
    gt = _read_ground_truth(seq, task, work, tuple(first.shape[:2]))
    _check_valid_pixels(gt, task, config.dataset)
    gt_size = tuple(gt.shape[1:3])
    flows = _sequence_flows(seq, run, work, gt_size)
    x_frame, x_gt = column_index(first.shape[1], config.column), column_index(gt_size[1], config.column)
    gt_rgb, value_range = task.gt_slice_rgb(time_slice(gt, x_gt), config.dataset)
    slices = [("RGB", time_slice(seq.frames(), x_frame)), ("ground truth", gt_rgb)]
    entry: dict = {"frames": seq.num_frames, "size": list(gt_size), "models": {}}
    floor = ground_truth_opw(gt, flows, task, config.dataset)
    truth = error_basis(task, gt, flows, config.dataset)
    moving = _moving_mask(seq, work, gt_size)
    for label, predictor in run.predictors.items():
        pred, seconds = _predict(seq, run, label, predictor, work / "pred.raw")
        metrics = _score(seq, run, label, pred, gt, flows, (x_gt, value_range, slices))
        if not metrics.get("error"):
            metrics["opw_gt"] = floor
            at_gt = _Resized(pred, gt_size, task)
            metrics |= moving_static_metrics(task, at_gt, gt, metrics, moving, config.dataset)
            metrics |= error_opw_of(truth, at_gt, metrics)
        metrics["seconds"] = seconds
        metrics["seconds_per_frame"] = seconds / max(seq.num_frames, 1)
        entry["models"][label] = metrics
        del pred
        (work / "pred.raw").unlink()
    slice_name = f"{_safe(seq.name)}.png"
    write_image(slice_dir / slice_name, compose_slices(first, x_frame, slices))
    entry["slice"] = f"slices/{slice_name}"
    entry["slice_column"] = {"frame": x_frame, "ground_truth": x_gt}
    entry["flow_matched_fraction"] = float(
        (np.mean(flows.mask_fwd) + np.mean(flows.mask_bwd)) / 2 if len(flows) else math.nan
    )
    return entry


def _score(seq: EvalSequence, run: _Run, label: str, pred: np.ndarray, gt: np.ndarray, flows: SequenceFlows,
           slice_info: tuple) -> dict:
    """One model's metrics on the sequence (and its time slice appended to the others); a prediction with NaN or
    inf values is not scored: one warning, and its row says so."""
    task, dataset = run.task, run.config.dataset
    bad_values, bad_frames = _non_finite(pred)
    if bad_values:
        run.warn(f"sequence {seq.name}: {label} gave {bad_values} non-finite value(s) (NaN or inf) in {bad_frames} "
                 f"of {len(pred)} frames; not scored, marked '{NON_FINITE}' in the report")
        return {c.key: math.nan for c in task.columns} | {
            "error": NON_FINITE, "non_finite_values": bad_values, "non_finite_frames": bad_frames}
    x_gt, value_range, slices = slice_info
    at_gt = _Resized(pred, tuple(gt.shape[1:3]), task)
    metrics = task.score(at_gt, gt, dataset, align=run.align)
    metrics |= point_metrics(task, at_gt, gt, metrics, seq.info, dataset)
    slices.append((label, task.pred_slice_rgb(time_slice(at_gt, x_gt), metrics, value_range)))
    metrics["opw"] = opw(pred, flows=flows, task=task)
    return metrics


class _Reciprocal:
    """A depth video read as ``1 / depth`` frame by frame (what the disparity-space metrics take)."""

    def __init__(self, depth):
        self.depth = depth

    def __len__(self) -> int:
        return len(self.depth)

    def __getitem__(self, i: int) -> np.ndarray:
        return 1.0 / np.maximum(np.asarray(self.depth[i], dtype=np.float64), EVAL_MIN_DEPTH)


def error_opw(task: Task, pred, gt: np.ndarray, flows: SequenceFlows, metrics: dict, dataset: str) -> dict:
    """``{"opw_err": ...}``: OPW of the prediction's error, the aligned prediction minus the ground truth in what
    OPW compares (disparity; log depth for metric depth; normals), with the same flows and masks, in the units of
    the ground truth's OPW normalisation. Zero for the exact answer whatever the camera does, where OPW itself
    scores the floor ``opw_gt``: flicker raises it, and so does flattening true motion in depth, which lowers OPW.
    Over the pixels whose ground truth is valid in both frames of a pair (a sensor's holes and the sky beyond the
    depth cap are left out); ``{}`` when none is. ``pred``: at the ground truth's size."""
    return error_opw_of(error_basis(task, gt, flows, dataset), pred, metrics)


@dataclass
class ErrorBasis:
    """What :func:`error_opw` needs of a video's ground truth, whatever the model: the task, the ground truth as a
    prediction, its valid pixels, the flows with their masks restricted to valid pairs, and its OPW spread."""

    task: Task
    truth: object
    valid: np.ndarray
    flows: SequenceFlows
    spread: float


def error_basis(task: Task, gt: np.ndarray, flows: SequenceFlows, dataset: str) -> ErrorBasis | None:
    """The :class:`ErrorBasis` of a video (computed once, used for every model); None when no pair has a pixel
    whose ground truth is valid in both frames."""
    cap = task.depth_cap(dataset)
    valid = np.stack([_valid_pixels(np.asarray(frame), cap) for frame in gt])
    masks = _valid_pair_masks(flows, valid)
    if not any(m.any() for m in masks):
        return None
    truth = _as_prediction(gt, task)
    _, spread = task.opw_normalization(np.concatenate(
        [task.opw_values(np.asarray(truth[i], dtype=np.float64))[valid[i]].ravel() for i in range(len(gt))]))
    return ErrorBasis(task, truth, valid, SequenceFlows(flows.fwd, flows.bwd, *masks, method=flows.method), spread)


def error_opw_of(basis: ErrorBasis | None, pred, metrics: dict) -> dict:
    """:func:`error_opw` of ``pred`` on a video's :class:`ErrorBasis` (``{}`` for None)."""
    if basis is None:
        return {}
    error = _Error(pred, basis.truth, basis.valid, basis.task, metrics, basis.spread)
    return {"opw_err": opw(error, normalize=False, flows=basis.flows)}


def _valid_pair_masks(flows: SequenceFlows, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OPW's masks restricted to pixels valid in their own frame whose flow target is valid in the other, pair by
    pair, by the rule of the training losses (:func:`~bufferanytime.losses.stabilization.valid_pair_masks`)."""
    fwd, bwd = [], []
    for k in range(len(flows)):
        masks = (torch.from_numpy(np.array(m[k : k + 1], dtype=bool))[None] for m in (flows.mask_fwd, flows.mask_bwd))
        pair = (torch.from_numpy(np.array(f[k : k + 1], dtype=np.float32)) for f in (flows.fwd, flows.bwd))
        m_fwd, m_bwd = valid_pair_masks(*masks, torch.from_numpy(valid[k : k + 2])[None], *pair, torch.float32)
        fwd.append(m_fwd[0, 0].numpy())
        bwd.append(m_bwd[0, 0].numpy())
    return np.stack(fwd), np.stack(bwd)


class _Error:
    """A prediction's error against the ground truth, frame by frame (see :func:`error_opw`); 0 where the ground
    truth is not valid (left out by the masks, and kept finite for the warping)."""

    def __init__(self, pred, truth, valid: np.ndarray, task: Task, metrics: dict, spread: float):
        self.pred, self.truth, self.valid, self.task = pred, truth, valid, task
        self.metrics, self.spread = metrics, spread

    def __len__(self) -> int:
        return len(self.pred)

    def __getitem__(self, i: int) -> np.ndarray:
        aligned = self.task.aligned_opw_values(np.asarray(self.pred[i], dtype=np.float64), self.metrics)
        truth = self.task.opw_values(np.asarray(self.truth[i], dtype=np.float64))
        keep = self.valid[i] if aligned.ndim == 2 else self.valid[i][..., None]
        return np.where(keep, (aligned - truth) / self.spread, 0.0).astype(np.float32)


def _as_prediction(gt: np.ndarray, task: Task):
    """The ground truth in what the task's models output: relative depth models give disparity, metric ones
    metres, normal models unit normals."""
    return _Reciprocal(gt) if task.disparity else gt


def ground_truth_opw(gt: np.ndarray, flows: SequenceFlows, task: Task, dataset: str) -> float:
    """OPW of the ground truth itself, with the same flows and normalisation as the models' (the floor: what a
    perfect prediction scores, real motion in depth and turning normals included); NaN when the ground truth does
    not cover every pixel of every frame (sparse or capped depth), where it would not be comparable."""
    cap = task.depth_cap(dataset)
    if not all(_valid_pixels(np.asarray(frame), cap).all() for frame in gt):
        return math.nan
    return opw(_as_prediction(gt, task), flows=flows, task=task)


def _moving_mask(seq: EvalSequence, work: Path, size: tuple[int, int]) -> np.ndarray | None:
    """The sequence's moving-object mask ``(T, H, W)`` (memory-mapped from ``work``), where the dataset knows it."""
    if seq.read_moving is None:
        return None
    mask = _stream((seq.read_moving(i) for i in range(seq.num_frames)), work / "moving.raw", bool, "moving mask")
    if tuple(mask.shape) != (seq.num_frames, *size):
        raise InputError(f"the moving-object mask has shape {tuple(mask.shape)}, expected {seq.num_frames} frames of "
                         f"{size[1]}x{size[0]} px")
    return mask


def moving_static_metrics(task: Task, pred, gt: np.ndarray, metrics: dict, moving: np.ndarray | None,
                          dataset: str) -> dict:
    """AbsRel on the pixels of objects that move on their own apart from the static ones, with the video's own
    alignment (the ``scale`` and ``shift`` of ``metrics``); empty for normals or where no mask is known."""
    from bufferanytime.tasks.metrics import depth_metrics

    if moving is None or task.channels != 1 or "scale" not in metrics:  # depth, relative or metric
        return {}
    values = pred if task.disparity else _Reciprocal(pred)
    cap, affine = task.depth_cap(dataset), (metrics["scale"], metrics["shift"])
    split = {}
    for name, mask in (("moving", moving), ("static", _Not(moving))):
        scored = any((np.asarray(mask[i]) & valid_depth_mask(np.asarray(gt[i]), cap)).any() for i in range(len(gt)))
        split[f"abs_rel_{name}"] = (depth_metrics(values, gt, cap, valid=mask, affine=affine)["abs_rel"] if scored
                                    else math.nan)  # e.g. nothing moves in this video
    split["moving_fraction"] = float(np.mean([np.mean(frame) for frame in moving]))
    return split


class _Not:
    """A bool video negated frame by frame."""

    def __init__(self, frames):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        return ~np.asarray(self.frames[i], bool)


def _resolution(report: dict) -> dict:
    """Where the figures are computed, stated in the report: the sizes of the ground truth, and how the models'
    outputs get there."""
    sizes = sorted({f"{w}x{h}" for h, w in (e["size"] for e in report["sequences"].values())})
    return {
        "metrics": "at each video's ground-truth size (" + ", ".join(sizes) + " px, width x height); predictions "
                   "are resized to it bilinearly",
        "opw": "on the predictions at the input frames' size, which is the ground truth's",
        "inference": _size_text(report["settings"]),
        "sizes": sizes,
    }


def _non_finite_rows(per_sequence: dict) -> list[dict]:
    """The (sequence, model) results left unscored because the model's output was not finite."""
    return [{"sequence": name, "model": label, "values": m["non_finite_values"], "frames": m["non_finite_frames"]}
            for name, entry in per_sequence.items() for label, m in entry["models"].items() if m.get("error")]


def _size_text(settings: dict) -> str:
    """The inference size of the report's settings, in words."""
    parts = [f"{label} {settings[key]} px" for key, label in (("short_side", "short side"), ("max_res", "longest side"))
             if settings.get(key)]
    return ", ".join(parts) if parts else "each model's own input size"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


UNAVERAGED = ("seconds", "seconds_per_frame", "scale", "shift")


def _means(per_sequence: dict, specs: list[ModelSpec]) -> dict:
    """Mean over sequences of every metric (sequences where it is undefined, or where the model's output was not
    finite, are left out); time per frame is total model time over total frames."""
    means = {}
    every = [m for entry in per_sequence.values() for m in entry["models"].values() if not m.get("error")]
    keys = [k for k in dict.fromkeys(k for m in every for k in m) if k not in UNAVERAGED]  # those of every model
    for spec in specs:
        scored = [e for e in per_sequence.values() if not e["models"][spec.label].get("error")]
        rows = [entry["models"][spec.label] for entry in scored]
        frames = sum(entry["frames"] for entry in scored)
        out = {}
        for key in keys:
            values = [r[key] for r in rows if key in r and math.isfinite(r[key])]
            out[key] = float(np.mean(values)) if values else math.nan
        out["seconds_per_frame"] = sum(r["seconds"] for r in rows) / frames if frames else math.nan
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
    rows = [(_row_label(name, m["label"], entry["models"][m["label"]]), entry["models"][m["label"]])
            for name, entry in seqs.items() for m in report["models"]]
    lines += _table(rows, task, first="Sequence / model")
    lines += point_lines(report)
    lines += _floor_lines(report)
    lines += _moving_lines(report)
    if report.get("compare"):
        lines += compare_lines(report["compare"], [(c.key, c.header, c.digits) for c in task.columns] + [
            (k, h, 4) for k, h in (("opw_err", "OPW of the error"), ("abs_rel_moving", "AbsRel moving"),
                                   ("abs_rel_static", "AbsRel static"))])
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
        "- OPW of the error = OPW of the prediction after the alignment above minus the ground truth, in the ground "
        "truth's units and OPW normalisation, with the same flows and masks, over the pixels whose ground truth is "
        "valid in both frames of a pair: zero for a perfect prediction whatever the camera does.",
        "- s/frame = model time per frame (flow and metrics excluded).",
        "",
        f"Written by bufferanytime {report['version']}.",
        "",
    ]
    return "\n".join(lines)


def _floor_lines(report: dict) -> list[str]:
    """OPW beside the ground truth's own OPW (the floor) and the OPW of the error, per model and per video, where
    the ground truth allows."""
    rows = [(name, m["label"], e["models"][m["label"]]) for name, e in report["sequences"].items()
            for m in report["models"]]
    if not any(_known(r[2].get("opw_gt")) or _known(r[2].get("opw_err")) for r in rows):
        return []
    lines = ["", "## OPW and its floor", "",
             "The ground truth's own OPW (same flows and normalisation) is what a perfect prediction scores: real "
             "motion in depth, and normals that turn with the camera, are not flicker; a model far below it has "
             "flattened that motion. OPW of the error is OPW of the aligned prediction minus the ground truth, in "
             "the ground truth's units: zero for a perfect prediction, raised by flicker and by flattened motion "
             "alike.", "",
             "| Video / model | OPW | OPW of the ground truth | ratio | OPW of the error |",
             "|---|---:|---:|---:|---:|"]
    for label in (m["label"] for m in report["models"]):
        mean = report["mean"].get(label, {})
        lines.append(f"| mean / {label} | {_fmt(mean.get('opw'), 4)} | {_fmt(mean.get('opw_gt'), 4)} | "
                     f"{_ratio(mean.get('opw'), mean.get('opw_gt'))} | {_fmt(mean.get('opw_err'), 4)} |")
    for name, label, m in rows:
        lines.append(f"| {name} / {label} | {_fmt(m.get('opw'), 4)} | {_fmt(m.get('opw_gt'), 4)} | "
                     f"{_ratio(m.get('opw'), m.get('opw_gt'))} | {_fmt(m.get('opw_err'), 4)} |")
    return lines


def _moving_lines(report: dict) -> list[str]:
    """AbsRel on moving-object pixels apart from static ones, where the dataset knows which they are."""
    means = [(m["label"], report["mean"].get(m["label"], {})) for m in report["models"]]
    if not any(_known(mean.get("abs_rel_moving")) or _known(mean.get("abs_rel_static")) for _, mean in means):
        return []
    lines = ["", "## Moving objects", "", "AbsRel on the pixels of objects that move on their own, apart from the "
             "static scene (the video's own alignment; the synthetic world's mask).", "",
             "| Model | AbsRel moving | AbsRel static | moving pixels |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {_fmt(m.get('abs_rel_moving'), 4)} | {_fmt(m.get('abs_rel_static'), 4)} | "
              f"{_fmt(m.get('moving_fraction'), 3)} |" for label, m in means]
    return lines


def _known(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _ratio(value, floor) -> str:
    return f"{value / floor:.2f}x" if _known(value) and _known(floor) and floor > 0 else "–"


def _row_label(sequence: str, label: str, metrics: dict) -> str:
    """A per-sequence row's label; an unscored result says why (e.g. **non-finite output**)."""
    return f"{sequence} / {label}" + (f" (**{metrics['error']}**)" if metrics.get("error") else "")


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
    unscored = [f"{r['model']} on {r['sequence']} ({r['values']} NaN/inf values in {r['frames']} frames)"
                for r in report.get("non_finite", [])]
    return [
        f"- data: `{report['root']}`, {len(seqs)} sequence(s){skipped}, {frames} frames"
        + (f" (at most {settings['max_frames']} per sequence)" if settings.get("max_frames") else ""),
        "- models: " + "; ".join(
            f"**{m['label']}** = `{m['model']}`" + _how_run(m)
            for m in report["models"]
        ),
        f"- inference: {_size_text(settings)}, device {settings['device']}, {settings['precision']}",
        *([f"- evaluation resolution: metrics {report['resolution']['metrics']}; OPW "
           f"{report['resolution']['opw']}"] if report.get("resolution") else []),
        "- OPW flow: " + ("the ground-truth flow and its validity masks" if report["flow"]["method"] == "gt"
                          else f"{report['flow']['method']} on the RGB frames")
        + f", forward-backward check at {report['flow']['tau']} px",
        *task.report_lines(report),
        *([f"- {NON_FINITE}, not scored and left out of the means: " + "; ".join(unscored)] if unscored else []),
    ]
