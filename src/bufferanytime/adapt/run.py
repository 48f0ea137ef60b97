"""One adaptation from start to end: load, split, measure, plan, train with early stopping, check, write.

What happens, in order (each step is recorded in ``adapt.json``):

1. the starting model is loaded and MODEL_DIR checked (:mod:`~bufferanytime.adapt.record`), then the footage is
   opened, split and read (:mod:`~bufferanytime.adapt.footage`); static footage keeps the starting model;
2. one step is measured and the settings chosen (:mod:`~bufferanytime.adapt.plan`), printed and recorded;
3. the starting model and the prior are measured on the held-out footage (:mod:`~bufferanytime.adapt.guard`);
4. training (:mod:`~bufferanytime.adapt.session`), validated every ``val_every`` steps; it stops at the step
   budget, when the time left is what the end needs, or after ``PATIENCE`` validations without improvement; the
   best weights by validation loss are kept;
5. the guard rails decide between those weights and the starting model; MODEL_DIR is written whole.

Ctrl-C (or SIGTERM, under the command line) during training ends training there and goes on with the best weights
so far; a second one, or one at any other time, stops without writing anything.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bufferanytime.adapt.budget import Budget, parse_budget
from bufferanytime.adapt.footage import (
    HOLD_OUT_FRACTION,
    STATIC_CHANGE,
    Clip,
    Footage,
    cut_clips,
    load_footage,
    mean_change,
)
from bufferanytime.adapt.guard import PRIOR_TOLERANCE, Figures, figures, held_out_set, judge
from bufferanytime.adapt.plan import FINAL_MARGIN, MAX_VAL_CLIPS, MIN_STEPS, Plan, Workload, candidates, choose
from bufferanytime.adapt.record import ADAPTED, KEPT_BASE, check_output, hardware, new_record, write_model_dir
from bufferanytime.adapt.session import Losses, Session
from bufferanytime.constants import W_REG
from bufferanytime.errors import InputError
from bufferanytime.flow import get_flow_model
from bufferanytime.inference.pipeline import resolve_device
from bufferanytime.models import load_model, resolve_model_path
from bufferanytime.models.base import MODEL_KEY, VideoModel, read_config, tensors_digest
from bufferanytime.training.config import TrainConfig
from bufferanytime.training.objectives import objective_class

TRAINED = {"temporal": "the temporal blocks", "all": "every trainable part"}  # as printed (depth: and fusion layers)
PATIENCE = 4  # validations in a row without improvement that stop training
MIN_IMPROVEMENT = 1e-3  # relative decrease of the validation loss that counts as an improvement
END_SECONDS = 1.0  # besides the measured cost of the final check: writing the model


@dataclass
class AdaptResult:
    """The model to use (adapted, or the starting one when a guard rail failed), whether it was adapted, and
    the record written as ``adapt.json``."""

    model: VideoModel
    adapted: bool
    record: dict


def _say(quiet: bool):
    def say(text: str) -> None:
        if not quiet:
            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()
    return say


def _warn(text: str) -> None:
    sys.stderr.write(f"warning: {text}\n")
    sys.stderr.flush()


def _kind_of(model, kind: str | None) -> str:
    """The kind of buffer: the model's own, else ``kind``, else depth."""
    if isinstance(model, VideoModel):
        return model.kind
    if model is not None and kind is None:
        location = Path(resolve_model_path("depth", model))
        config = read_config(location) if location.is_dir() else None
        if config is not None:
            return str(config[MODEL_KEY])
    return kind or "depth"


def _base(model, kind: str) -> tuple[VideoModel, dict]:
    """The starting model (a copy when given as an object: the caller's stays as it is) and its record."""
    if isinstance(model, VideoModel):
        loaded, ref, location = copy.deepcopy(model), "(a model object)", None
    else:
        loaded = load_model(kind, model)
        ref, location = str(model) if model is not None else "(the embedded model)", resolve_model_path(kind, model)
    if loaded.per_frame:
        raise InputError(f"{ref}: a per-frame model; adapt trains a video model's temporal blocks")
    state = loaded.trainable_state_dict()
    return loaded, {"ref": ref, "location": location, "prior": loaded.prior_ref,
                    "weights_sha256": tensors_digest(state), "clip_len": loaded.clip_len}


def adapt(model: VideoModel | str | Path | None, sources: str | Path | Iterable[str | Path],
          budget: str | Budget = "5m", **options) -> VideoModel:
    """Adapt a video model to ``sources`` (videos, frame folders, ``.txt`` lists) within ``budget``; the model to
    use: adapted, or the starting one when the guard rails refuse the adaptation. ``model``: a video model
    object (left unchanged), a name, a model folder, or None for the embedded model of ``kind``. ``options`` are
    those of :func:`run_adapt` (``out=MODEL_DIR`` writes it as the command does)."""
    return run_adapt(sources, model, budget, **options).model


def run_adapt(sources: str | Path | Iterable[str | Path], model: VideoModel | str | Path | None = None,
              budget: str | Budget = "5m", *, kind: str | None = None, out: str | Path | None = None,
              lr: float | None = None, w_reg: float = W_REG, flow: str = "dis", seed: int = 0, device: str = "auto",
              tolerance: float = PRIOR_TOLERANCE, copy_prior: bool = False, quiet: bool = True,
              started: float | None = None, progress: Callable[[int, int], None] | None = None) -> AdaptResult:
    """The whole adaptation (see the module docstring); writes ``out`` when given. InputError for bad input.

    A time budget counts from ``started`` (a ``time.perf_counter()``; default: now), e.g. the command's start.
    ``progress(step, steps)`` is called after every training step (``steps``: the planned total, which follows
    the time left under a time budget), e.g. for a progress bar of its own."""
    run = _Run(parse_budget(budget), _say(quiet), quiet, started)
    run.progress = progress
    sources = [sources] if isinstance(sources, str | Path) else list(sources)
    kind = _kind_of(model, kind)
    base, base_record = _base(model, kind)
    if out is not None:
        check_output(Path(out), base_record["location"])
    return run.go(base, base_record, sources, kind, Path(out) if out is not None else None,
                  {"lr": lr if lr is not None else objective_class(kind).defaults["lr"], "w_reg": w_reg,
                   "flow": flow, "seed": seed, "device": resolve_device(device), "tolerance": tolerance,
                   "copy_prior": copy_prior})


class _Run:
    """The state of one adaptation across its steps."""

    def __init__(self, budget: Budget, say, quiet: bool, started: float | None = None):
        self.started = time.perf_counter() if started is None else started
        self.budget = budget
        self.say = say
        self.quiet = quiet
        self.timings: dict[str, float] = {}
        self.progress: Callable[[int, int], None] | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _lap(self, name: str, began: float) -> None:
        self.timings[name] = round(time.perf_counter() - began, 3)

    def go(self, base: VideoModel, base_record: dict, sources: list, kind: str, out: Path | None,
           options: dict) -> AdaptResult:
        began = time.perf_counter()
        footage = load_footage(sources, base.size_rule())
        record = new_record(kind, base_record)
        record["inputs"] = [s.to_dict() for s in footage.sources]
        record["split"] = {"hold_out_fraction": HOLD_OUT_FRACTION, **footage.split_record()}
        record["budget"] = self.budget.to_dict()
        record["hardware"] = hardware(options["device"])
        self._lap("read_s", began)
        self._describe(footage)
        change = mean_change(footage.segments)
        record["footage_change"] = change
        if change < STATIC_CHANGE:
            _warn(f"the footage is static (consecutive frames differ by {change * 255:.2g}/255 on average, under "
                  f"{STATIC_CHANGE * 255:.2g}): flow has nothing to teach; the starting model is kept")
            return self._finish(base, False, record, out, options, "static footage")
        config = TrainConfig(kind=kind, w_reg=options["w_reg"], flow=options["flow"])
        flow_model = get_flow_model(options["flow"])
        session = Session(base, footage, config, flow_model, options["device"], options["seed"])
        plan = self._plan(session, footage, kind, options)
        record["settings"] = self._settings(session, plan, config, options)
        began = time.perf_counter()
        prior = load_model(kind, base.prior_ref, per_frame=True)
        held = held_out_set(session.held_out_frames(), prior, flow_model, config.tau, options["device"])
        del prior
        check_began = time.perf_counter()
        before = figures(base, held, options["device"])
        self.check_seconds = time.perf_counter() - check_began
        self._lap("before_s", began)
        base_state = session.snapshot()
        began = time.perf_counter()
        best_step = self._train(session, footage, plan, record)
        self._lap("train_s", began)
        if best_step == 0:
            session.restore(base_state)
            reason = "the validation loss never went below the starting model's"
            _warn(f"kept the starting model: {reason}")
            record["guard"] = {"before": before.to_dict(), "after": None, "passed": False}
            return self._finish(base, False, record, out, options, reason)
        return self._judge(session, base_state, before, held, record, out, options)

    # -- steps -------------------------------------------------------------------------------------------------
    def _describe(self, footage: Footage) -> None:
        train = sum(len(s.frames) for s in footage.train)
        held = sum(len(s.frames) for s in footage.held_out)
        names = sorted({str(footage.sources[s.span.source].path) for s in footage.held_out})
        how = ("whole videos: " + ", ".join(names)
               if len({s.span.source for s in footage.segments}) > 1 else "the last part of the video")
        self.say(f"footage: {len(footage.sources)} input(s); training on {train} frames, holding out {held} "
                 f"frames ({how})")

    def _plan(self, session: Session, footage: Footage, kind: str, options: dict) -> Plan:
        """Measure one step at the cheapest setting and choose the settings (printed)."""
        began = time.perf_counter()
        ladder = candidates(session.model.clip_len)
        first = cut_clips(footage, ladder[0].clip_len, held_out=False)[0]
        session.start(ladder[-1].side_fraction, "all", options["lr"], 0)
        costs = session.measure(first, ladder[-1])
        held_frames = sum(len(s.frames) for s in footage.held_out)
        loads = {c: Workload(session.pixels(c.side_fraction), len(cut_clips(footage, c.clip_len, False)),
                             min(len(cut_clips(footage, c.clip_len, True)), MAX_VAL_CLIPS), held_frames)
                 for c in ladder}
        left = self.budget.seconds - self.elapsed() if self.budget.seconds is not None else None
        train_frames = sum(len(s.frames) for s in footage.train)
        plan = choose(costs, loads, left, self.budget.steps, objective_class(kind).temporal_only, options["lr"],
                      train_frames)
        self.costs = costs
        self._lap("measure_s", began)
        if self.budget.seconds is not None and plan.steps < MIN_STEPS:
            need = self.budget.seconds + (MIN_STEPS - plan.steps) * plan.projected_step_seconds * 1.5
            raise InputError(f"--budget {self.budget.text} is too short for this footage on this machine: it affords "
                             f"{plan.steps} step(s) of {plan.projected_step_seconds:.2g} s after "
                             f"{self.elapsed():.0f} s of reading and measuring; give at least "
                             f"{math.ceil(need / 10) * 10}s")
        session.forget()
        session.start(plan.side_fraction, plan.trained, options["lr"], plan.warmup)
        h, w = session.size(0)
        fusion = objective_class(kind).light_extra if plan.trained == "temporal" else ""
        trained = TRAINED[plan.trained] + fusion
        self.say(f"settings: {h}x{w}, clips of {plan.clip_len} frames, {plan.steps} steps of about "
                 f"{plan.projected_step_seconds:.2g} s, validation every {plan.val_every} steps, training {trained}, "
                 f"lr {options['lr']:g}")
        return plan

    def _settings(self, session: Session, plan: Plan, config: TrainConfig, options: dict) -> dict:
        return {**plan.to_dict(), "sizes": sorted({session.size(i) for i in range(len(session.footage.segments))}),
                "w_reg": options["w_reg"], "flow": options["flow"], "tau": config.tau, "edge_mask": config.edge_mask,
                "stable_norm": config.stable_norm, "seed": options["seed"], "prior_tolerance": options["tolerance"],
                "measured_seconds_per_megapixel_frame": {k: v * 1e6 for k, v in self.costs.__dict__.items()}}

    def _time_left(self) -> float:
        return math.inf if self.budget.seconds is None else self.budget.seconds - self.elapsed()

    def _train(self, session: Session, footage: Footage, plan: Plan, record: dict) -> int:
        """Train, validate, stop early; the best weights are left in the model. Returns the best step (0: none
        improved on the starting model)."""
        clips = _epochs(cut_clips(footage, plan.clip_len, held_out=False), session.rng)
        val = _Validation(session, cut_clips(footage, plan.clip_len, held_out=True, limit=MAX_VAL_CLIPS), self.elapsed)
        first = val(0)
        stopped, step, step_seconds = "steps", 0, []
        bar = tqdm(total=plan.steps, desc=f"adapt {session.config.kind}", unit="step", disable=self.quiet)
        try:
            while self.budget.steps is None or step < plan.steps:
                typical = float(np.median(step_seconds)) if step_seconds else plan.projected_step_seconds
                # the final check slows down as much as the steps did since they were measured (a busier machine)
                slower = max(1.0, typical / max(plan.projected_step_seconds, 1e-9))
                if self._time_left() < 1.5 * typical + FINAL_MARGIN * slower * self.check_seconds + val.seconds \
                        + END_SECONDS:
                    stopped = "budget"
                    break
                began = time.perf_counter()
                losses = session.step(next(clips))
                step += 1
                step_seconds.append(time.perf_counter() - began)
                bar.update(1)
                if self.progress is not None:
                    self.progress(step, int(bar.total or plan.steps))
                if not math.isfinite(losses.loss):
                    stopped = "not finite"
                    break
                if step % plan.val_every == 0:
                    bar.set_postfix(val=f"{val(step).loss:.4g}", best=f"{val.best:.4g}")
                    if val.since >= PATIENCE:
                        stopped = "early stop"
                        break
                    if self.budget.seconds is not None:  # the bar's total follows the time left
                        bar.total = step + max(0, int(self._time_left() // max(np.median(step_seconds), 1e-9)))
                        bar.refresh()
        except KeyboardInterrupt:
            stopped = "interrupted"
            bar.close()
            _warn("interrupted: finishing with the best weights so far (interrupt again to stop without writing)")
        finally:
            bar.close()
        if stopped != "interrupted" and val.curve[-1]["step"] != step and math.isfinite(val.best):
            val(step)
        session.restore(val.best_state)
        record["validation"] = {"every": plan.val_every, "clips": len(val.clips), "curve": val.curve,
                                "best_step": val.best_step, "best_loss": val.best, "steps_done": step,
                                "stopped": stopped,
                                "median_step_seconds": float(np.median(step_seconds)) if step_seconds else None}
        self.say(f"trained {step} steps ({stopped}); best validation loss {val.best:.4g} at step {val.best_step} "
                 f"(starting model {first.loss:.4g})")
        return val.best_step

    def _judge(self, session: Session, base_state: dict, before: Figures, held, record: dict, out: Path | None,
               options: dict) -> AdaptResult:
        """The guard rails on the best weights; the starting model's weights back when they fail."""
        began = time.perf_counter()
        model = session.model
        after = figures(model, held, options["device"])
        verdict = judge(before, after, model.task.name, options["tolerance"])
        self._lap("after_s", began)
        record["guard"] = verdict.to_dict()
        if verdict.passed:
            self.say(f"adapted: on the held-out footage, {verdict.line()}")
            return self._finish(model, True, record, out, options, None)
        session.restore(base_state)
        _warn(f"kept the starting model: on the held-out footage the adapted model gives {verdict.line()}")
        failed = [name for name, ok in (("OPW not lower", verdict.opw_ok),
                                        ("too far from the prior", verdict.prior_ok)) if not ok]
        return self._finish(model, False, record, out, options, "guard rail failed: " + ", ".join(failed))

    def _finish(self, model: VideoModel, adapted: bool, record: dict, out: Path | None, options: dict,
                reason: str | None) -> AdaptResult:
        record["result"] = ADAPTED if adapted else KEPT_BASE
        record["reason"] = reason
        record["weights_sha256"] = tensors_digest(model.trainable_state_dict())
        self.timings["total_s"] = round(self.elapsed(), 3)
        record["timings"] = dict(self.timings)
        model.eval()
        if out is not None:
            write_model_dir(out, model, record, options["copy_prior"])
            self.say(f"{'adapted' if adapted else 'starting'} model written to {out}")
        return AdaptResult(model, adapted, record)


class _Validation:
    """The validation losses so far (``curve``), the best weights and how many validations ago they came."""

    def __init__(self, session: Session, clips: list[Clip], elapsed):
        self.session, self.clips, self.elapsed = session, clips, elapsed
        self.curve: list[dict] = []
        self.best, self.best_step, self.best_state, self.since, self.seconds = math.inf, 0, None, 0, 0.0

    def __call__(self, step: int) -> Losses:
        """Validate the weights of ``step``; they become the best when they improve on it (step 0: always)."""
        began = time.perf_counter()
        value = self.session.validate(self.clips)
        self.seconds = time.perf_counter() - began
        self.curve.append({"step": step, **value.to_dict(), "time": round(self.elapsed(), 2)})
        if step == 0 or value.loss < self.best * (1 - MIN_IMPROVEMENT):
            self.best, self.best_step, self.best_state, self.since = value.loss, step, self.session.snapshot(), 0
        else:
            self.since += 1
        return value


def _epochs(clips: list[Clip], rng: np.random.Generator) -> Iterator[Clip]:
    """The training clips, each epoch in a new random order."""
    while True:
        for index in rng.permutation(len(clips)):
            yield clips[int(index)]


def validation_losses(curve: list[dict]) -> list[float]:
    """The validation losses of a record's curve, in step order."""
    return [float(point["loss"]) for point in curve]


__all__ = ["AdaptResult", "Losses", "adapt", "run_adapt", "validation_losses"]
