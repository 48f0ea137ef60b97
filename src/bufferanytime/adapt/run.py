"""One adaptation from start to end: load, split, measure, plan, train with early stopping, check, write.

What happens, in order (each step is recorded in ``adapt.json``):

1. the starting model is loaded and MODEL_DIR checked (:mod:`~bufferanytime.adapt.record`), then the footage is
   opened, split and read (:mod:`~bufferanytime.adapt.footage`); static footage keeps the starting model;
2. one step is measured and the settings chosen (:mod:`~bufferanytime.adapt.plan`), printed and recorded;
3. the starting model and the prior are measured on the held-out footage (:mod:`~bufferanytime.adapt.guard`);
4. training (:mod:`~bufferanytime.adapt.session`), validated every ``val_every`` steps; it stops at the step
   budget, when the time left is what the end needs, or after ``PATIENCE`` validations without improvement; the
   weights kept are the steadiest on the held-out footage (lowest OPW) among those the guard rails pass;
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
import torch
from tqdm import tqdm

from bufferanytime.adapt.budget import Budget, parse_budget
from bufferanytime.adapt.engines import RayFootage
from bufferanytime.adapt.footage import (
    FORWARD_MOTION,
    HOLD_OUT_FRACTION,
    STATIC_CHANGE,
    Clip,
    Footage,
    cut_clips,
    forward_motion,
    load_footage,
    mean_change,
)
from bufferanytime.adapt.guard import PRIOR_TOLERANCE, Figures, figures, held_out_set, judge
from bufferanytime.adapt.plan import (
    FINAL_MARGIN,
    MAX_VAL_CLIPS,
    MIN_STEPS,
    Costs,
    Plan,
    Workload,
    candidates,
    choose,
)
from bufferanytime.adapt.record import (
    ADAPTED,
    KEPT_BASE,
    check_output,
    hardware,
    is_adapt_result,
    new_record,
    now,
    write_model_dir,
)
from bufferanytime.adapt.resume import (
    RESUMED_OPTIONS,
    STATE_KEY,
    check_same_run,
    has_run,
    interrupted_run,
    refuse_unless_resumed,
    resolved_options,
    to_json,
)
from bufferanytime.adapt.resume import load as load_checkpoint
from bufferanytime.adapt.resume import save as save_checkpoint
from bufferanytime.adapt.session import Losses, Session
from bufferanytime.constants import W_REG
from bufferanytime.errors import InputError
from bufferanytime.flow import get_flow_model
from bufferanytime.inference.pipeline import resolve_device
from bufferanytime.models import load_model, resolve_model_path
from bufferanytime.models.base import MODEL_KEY, VideoModel, read_config, tensors_digest
from bufferanytime.models.temporal import set_gradient_checkpointing
from bufferanytime.training.checkpoint import Checkpoint
from bufferanytime.training.config import TrainConfig
from bufferanytime.training.objectives import objective_class

TRAINED = {"temporal": "the temporal blocks", "all": "every trainable part"}  # as printed (depth: and fusion layers)
# Validations in a row without improvement that stop training: the held-out OPW is noisy from one validation to
# the next, and on benchmarks/adapt_domain_shift.py's validation clips 8 (160 steps at the longest period) gave
# 0.79x the shipped model's OPW where 4 stopped at 0.84x and no early stop gave 0.81x (learning rate 5e-4).
PATIENCE = 8
MIN_IMPROVEMENT = 1e-3  # relative decrease of the held-out OPW that counts as an improvement
END_SECONDS = 1.0  # besides the measured cost of the final check: writing the model
DEFAULT_BUDGET = "5m"


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
          budget: str | Budget = DEFAULT_BUDGET, **options) -> VideoModel:
    """Adapt a video model to ``sources`` (videos, frame folders, ``.txt`` lists) within ``budget``; the model to
    use: adapted, or the starting one when the guard rails refuse the adaptation. ``model``: a video model
    object (left unchanged), a name, a model folder, or None for the embedded model of ``kind``. ``options`` are
    those of :func:`run_adapt` (``out=MODEL_DIR`` writes it as the command does)."""
    return run_adapt(sources, model, budget, **options).model


def run_adapt(sources: str | Path | Iterable[str | Path], model: VideoModel | str | Path | None = None,
              budget: str | Budget | None = None, *, kind: str | None = None, out: str | Path | None = None,
              lr: float | None = None, w_reg: float | None = None, flow: str = "dis", seed: int | None = None,
              device: str = "auto", tolerance: float | None = None, copy_prior: bool = False, quiet: bool = True,
              started: float | None = None, progress: Callable[[int, int], None] | None = None,
              resume: bool = False, engine: RayFootage | None = None) -> AdaptResult:
    """The whole adaptation (see the module docstring); writes ``out`` when given. InputError for bad input.

    ``budget``: default ``DEFAULT_BUDGET``; ``lr``, ``w_reg``: default the objective's for an adaptation
    (:func:`default_lr`; :func:`default_w_reg`, by how fast the footage's camera moves along its axis); ``seed``:
    default 0; ``tolerance``: the guard rails' (:func:`~bufferanytime.adapt.guard.judge`), default
    ``PRIOR_TOLERANCE``. A time budget counts from ``started`` (a ``time.perf_counter()``; default: now), e.g. the
    command's start. ``progress(step, steps)`` is called after every training step (``steps``: the planned total, which
    follows the time left under a time budget), e.g. for a progress bar of its own. An ``out`` holding an
    interrupted run (:mod:`~bufferanytime.adapt.resume`) is continued with ``resume``, and refused without it.
    ``engine``: where each input is opened and read (:mod:`~bufferanytime.adapt.engines`; None: here), closed once
    the footage is."""
    sources = [sources] if isinstance(sources, str | Path) else list(sources)
    kind = _kind_of(model, kind)
    base, base_record = _base(model, kind)
    given = {"lr": lr, "w_reg": w_reg, "flow": flow, "seed": seed, "tolerance": tolerance}
    found = _interrupted(Path(out) if out is not None else None, base_record, resume)
    if found is not None:
        state = found.state[STATE_KEY]
        given = resolved_options(given, state["options"])
        recorded = parse_budget(state["record"]["budget"]["text"])
        if budget is not None and parse_budget(budget) != recorded:
            raise InputError(f"--resume with another --budget ({recorded.text} -> {parse_budget(budget).text}); the "
                             "run continues within its own: leave --budget out")
        budget = recorded
    run = _Run(parse_budget(budget if budget is not None else DEFAULT_BUDGET), _say(quiet), quiet, started)
    run.progress, run.engine = progress, engine
    options = {**given, "lr": given["lr"] if given["lr"] is not None else default_lr(base),
               "w_reg": given["w_reg"],  # None: chosen with the footage's camera motion (default_w_reg)
               "seed": 0 if given["seed"] is None else given["seed"], "device": resolve_device(device),
               "tolerance": PRIOR_TOLERANCE if given["tolerance"] is None else given["tolerance"],
               "copy_prior": copy_prior}
    threads = torch.get_num_threads()  # the run may step faster on fewer (Session.measure); the caller's after it
    try:
        return run.go(base, base_record, sources, kind, Path(out) if out is not None else None, options, found)
    finally:
        torch.set_num_threads(threads)
        set_gradient_checkpointing(base, False)  # the session's, for its steps only


def default_lr(model: VideoModel) -> float:
    """The learning rate of an adaptation of ``model`` when none is given: its objective's ``adapt_lr``, else the
    training default."""
    objective = objective_class(model)
    return objective.adapt_lr if objective.adapt_lr is not None else objective.defaults["lr"]


def default_w_reg(model: VideoModel, motion: float | None = None) -> float:
    """The regularization weight of an adaptation of ``model`` when none is given: its objective's
    ``adapt_w_reg_steady`` for footage whose camera hardly moves along its axis (``motion``, from
    :func:`~bufferanytime.adapt.footage.forward_motion`, under ``FORWARD_MOTION``), else its ``adapt_w_reg``, else
    the paper's ``W_REG``."""
    objective = objective_class(model)
    if motion is not None and motion < FORWARD_MOTION and objective.adapt_w_reg_steady is not None:
        return objective.adapt_w_reg_steady
    return objective.adapt_w_reg if objective.adapt_w_reg is not None else W_REG


def _interrupted(out: Path | None, base_record: dict, resume: bool):
    """The checkpoint to resume from (None: a new run), once ``out`` is known to be writable."""
    if out is None:
        if resume:
            raise InputError("--resume needs the MODEL_DIR (-o) of the interrupted run")
        return None
    check_output(out, base_record["location"])
    refuse_unless_resumed(out, resume)
    found = interrupted_run(out) if resume else None
    if resume and found is None:
        if out.is_dir() and is_adapt_result(out) and not has_run(out):
            raise InputError(f"--resume: the adapt run in {out} has finished; there is nothing to resume (leave out "
                             "--resume to start a new one)")
        _warn(f"no {'valid ' if has_run(out) else ''}interrupted adapt run in {out} to resume; starting a new one")
    return found


class _Run:
    """The state of one adaptation across its steps."""

    def __init__(self, budget: Budget, say, quiet: bool, started: float | None = None):
        self.started = time.perf_counter() if started is None else started
        self.budget = budget
        self.say = say
        self.quiet = quiet
        self.timings: dict[str, float] = {}
        self.progress: Callable[[int, int], None] | None = None
        self.resumable: _Resumable | None = None
        self.interrupted = False  # training stopped by Ctrl-C or SIGTERM (its checkpoint is then kept)
        self.engine: RayFootage | None = None  # where the footage is read (None: here)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _lap(self, name: str, began: float) -> None:
        self.timings[name] = round(time.perf_counter() - began, 3)

    def go(self, base: VideoModel, base_record: dict, sources: list, kind: str, out: Path | None,
           options: dict, found: Checkpoint | None = None) -> AdaptResult:
        began = time.perf_counter()
        footage = self._read(sources, base)
        record = self._record(footage, kind, base_record, options, found)
        record["engine"] = self.engine.describe() if self.engine is not None else {"name": "local"}
        self._lap("read_s", began)
        self._describe(footage)
        change = mean_change(footage.segments)
        record["footage_change"] = change
        if change < STATIC_CHANGE:
            _warn(f"the footage is static (consecutive frames differ by {change * 255:.2g}/255 on average, under "
                  f"{STATIC_CHANGE * 255:.2g}): flow has nothing to teach; the starting model is kept")
            return self._finish(base, False, record, out, options, "static footage")
        if options["w_reg"] is None:
            options["w_reg"] = self._regularization(base, footage, record)
        config = TrainConfig(kind=kind, w_reg=options["w_reg"], flow=options["flow"])
        flow_model = get_flow_model(options["flow"])
        session = Session(base, footage, config, flow_model, options["device"], options["seed"])
        if found is None:
            plan = self._plan(session, footage, kind, options)
            record["settings"] = self._settings(session, plan, config, options)
        else:
            plan = self._resumed_plan(session, found, options)
        began = time.perf_counter()
        prior = load_model(kind, base.prior_ref, per_frame=True)
        held = held_out_set(session.held_out_frames(), prior, flow_model, config.tau, options["device"])
        del prior
        before = self._before(base, held, options, found)
        self._lap("before_s", began)
        base_state = session.snapshot()
        began = time.perf_counter()
        self.resumable = _Resumable(out, options, record, before, self) if out is not None else None
        check = _Check(session, held, before, options)
        best_step = self._train(session, footage, plan, record, check, found)
        self._lap("train_s", began)
        if best_step == 0:
            return self._none_passed(session, base_state, check, record, out, options)
        return self._judge(session, base_state, before, held, record, out, options)

    def _none_passed(self, session: Session, base_state: dict, check: _Check, record: dict, out: Path | None,
                     options: dict) -> AdaptResult:
        """No validated weights passed the guard rails: the starting model, with the figures of the steadiest."""
        session.restore(base_state)
        closest = check.steadiest
        if closest is None:
            reason = "no step was validated"
            _warn(f"kept the starting model: {reason}")
            record["guard"] = {"before": check.before.to_dict(), "after": None, "passed": False}
            return self._finish(session.model, False, record, out, options, reason)
        verdict = judge(check.before, closest, session.model.task.name, options["tolerance"])
        record["guard"] = verdict.to_dict()
        _warn(f"kept the starting model: on the held-out footage the steadiest adapted weights give {verdict.line()}")
        failed = [name for name, ok in (("OPW not lower", verdict.opw_ok),
                                        ("too far from the prior", verdict.prior_ok)) if not ok]
        return self._finish(session.model, False, record, out, options, "guard rail failed: " + ", ".join(failed))

    def _read(self, sources: list, base: VideoModel) -> Footage:
        """The footage, read here or by the engine; the engine's workers are let go then (training runs here)."""
        if self.engine is None:
            return load_footage(sources, base.size_rule())
        try:
            return load_footage(sources, base.size_rule(), self.engine)
        finally:
            self.engine.close()

    def _record(self, footage: Footage, kind: str, base_record: dict, options: dict,
                found: Checkpoint | None) -> dict:
        """A new run's record; or the interrupted run's, checked to be of the same data, with the resume noted
        (and the budget then counting the time it had spent)."""
        inputs = [s.to_dict() for s in footage.sources]
        if found is not None:
            state = found.state[STATE_KEY]
            record = state["record"]
            check_same_run(record, base_record["weights_sha256"], inputs, kind)
            elapsed = float(found.state.get("elapsed", 0.0))
            record.setdefault("resumed", []).append({"from_step": found.step, "elapsed_s": round(elapsed, 3),
                                                     "date": now()})
            self.started -= elapsed
            self.timings.update({k: v for k, v in state.get("timings", {}).items() if k != "read_s"})
            self.say(f"resuming the interrupted run in {found.path.parent.parent} from step {found.step}")
            return record
        record = new_record(kind, base_record)
        record["inputs"] = inputs
        record["split"] = {"hold_out_fraction": HOLD_OUT_FRACTION, **footage.split_record()}
        record["budget"] = self.budget.to_dict()
        record["hardware"] = hardware(options["device"])
        return record

    def _resumed_plan(self, session: Session, found: Checkpoint, options: dict) -> Plan:
        """The interrupted run's plan, training set up as it was."""
        state = found.state[STATE_KEY]
        plan = Plan(**state["plan"])
        self.costs = Costs(**state["costs"])
        session.threads = int(state["record"].get("settings", {}).get("threads", session.threads))
        torch.set_num_threads(session.threads)
        session.start(plan.side_fraction, plan.trained, options["lr"], plan.warmup)
        return plan

    def _before(self, base: VideoModel, held, options: dict, found: Checkpoint | None) -> Figures:
        """The starting model's figures on the held-out footage: measured (and timed), or the interrupted run's."""
        if found is not None:
            state = found.state[STATE_KEY]
            self.check_seconds = float(state["check_seconds"])
            return Figures(**state["before"])
        check_began = time.perf_counter()
        before = figures(base, held, options["device"])
        self.check_seconds = time.perf_counter() - check_began
        return before

    # -- steps -------------------------------------------------------------------------------------------------
    def _regularization(self, base: VideoModel, footage: Footage, record: dict) -> float:
        """The regularization weight for this footage (printed): lower where the camera hardly moves along its
        axis, so that depth is steady along the flow and the stabilization loss can be trusted further."""
        motion = forward_motion(footage.train)
        record["footage_forward_motion"] = motion
        w_reg = default_w_reg(base, motion)
        how = "little" if motion < FORWARD_MOTION else "forward or backward"
        self.say(f"camera motion along its axis: {how} (the image expands {motion:.2%} per frame): regularization "
                 f"weight {w_reg:g}")
        return w_reg

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
        held_pixels = float(np.mean([s.frames.shape[1] * s.frames.shape[2] for s in footage.held_out]))
        loads = {c: Workload(session.pixels(c.side_fraction), len(cut_clips(footage, c.clip_len, False)),
                             min(len(cut_clips(footage, c.clip_len, True)), MAX_VAL_CLIPS), held_frames, held_pixels)
                 for c in ladder}
        left = self.budget.seconds - self.elapsed() if self.budget.seconds is not None else None
        train_frames = sum(len(s.frames) for s in footage.train)
        temporal_only = objective_class(session.model).temporal_only
        plan = choose(costs, loads, left, self.budget.steps, temporal_only, options["lr"], train_frames)
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
        fusion = objective_class(session.model).light_extra if plan.trained == "temporal" else ""
        trained = TRAINED[plan.trained] + fusion
        self.say(f"settings: {h}x{w}, clips of {plan.clip_len} frames, {plan.steps} steps of about "
                 f"{plan.projected_step_seconds:.2g} s on {session.threads} thread(s), validation every "
                 f"{plan.val_every} steps, training {trained}, lr {options['lr']:g}")
        return plan

    def _settings(self, session: Session, plan: Plan, config: TrainConfig, options: dict) -> dict:
        return {**plan.to_dict(), "sizes": sorted({session.size(i) for i in range(len(session.footage.segments))}),
                "w_reg": options["w_reg"], "flow": options["flow"], "tau": config.tau, "edge_mask": config.edge_mask,
                "stable_norm": config.stable_norm, "seed": options["seed"], "prior_tolerance": options["tolerance"],
                "threads": session.threads,
                "measured_seconds_per_megapixel_frame": {k: v * 1e6 for k, v in self.costs.__dict__.items()}}

    def _time_left(self) -> float:
        return math.inf if self.budget.seconds is None else self.budget.seconds - self.elapsed()

    def _train(self, session: Session, footage: Footage, plan: Plan, record: dict, check: _Check,
               found: Checkpoint | None = None) -> int:
        """Train, validate, stop early; the best weights are left in the model. Returns the best step (0: none
        improved on the starting model). Continues an interrupted run from ``found``."""
        clips = _ClipOrder(cut_clips(footage, plan.clip_len, held_out=False), session.rng)
        val = _Validation(session, cut_clips(footage, plan.clip_len, held_out=True, limit=MAX_VAL_CLIPS), self.elapsed,
                          check)
        loop = _Loop(step=0, step_seconds=[])
        if found is None:
            val(0)
        else:
            loop.step, loop.step_seconds = _restore(session, val, clips, found)
        bar = tqdm(total=max(plan.steps, loop.step), initial=loop.step, desc=f"adapt {session.config.kind}",
                   unit="step", disable=self.quiet)
        try:
            while self.budget.steps is None or loop.step < plan.steps:
                if not self._one_step(session, clips, val, plan, bar, loop):
                    break
        except KeyboardInterrupt:
            loop.stopped = "interrupted"
            bar.close()
            _warn("interrupted: finishing with the best weights so far (interrupt again to stop without writing)")
        finally:
            bar.close()
        step = loop.step
        if loop.stopped != "interrupted" and val.curve[-1]["step"] != step and math.isfinite(val.best):
            val(step)
        self.interrupted = loop.stopped == "interrupted"
        session.restore(val.best_state)
        record["validation"] = {"every": plan.val_every, "clips": len(val.clips), "curve": val.curve,
                                "best_step": val.best_step, "best_opw": val.best, "steps_done": step,
                                "stopped": loop.stopped, "median_step_seconds":
                                float(np.median(loop.step_seconds)) if loop.step_seconds else None}
        self.say(f"trained {step} steps ({loop.stopped}); held-out OPW {val.best:.4g} at step {val.best_step}, the "
                 f"steadiest within the guard rails (starting model {val.curve[0]['opw']:.4g})")
        return val.best_step

    def _one_step(self, session: Session, clips: _ClipOrder, val: _Validation, plan: Plan, bar,
                  loop: _Loop) -> bool:
        """One training step, and the validation (and checkpoint) when due; False when training stops here."""
        step_seconds = loop.step_seconds
        typical = float(np.median(step_seconds)) if step_seconds else plan.projected_step_seconds
        # the final check slows down as much as the steps did since they were measured (a busier machine)
        slower = max(1.0, typical / max(plan.projected_step_seconds, 1e-9))
        if self._time_left() < 1.5 * typical + FINAL_MARGIN * slower * self.check_seconds + val.seconds \
                + END_SECONDS:
            loop.stopped = "budget"
            return False
        began = time.perf_counter()
        losses = session.step(next(clips))
        loop.step += 1
        step_seconds.append(time.perf_counter() - began)
        bar.update(1)
        if self.progress is not None:
            self.progress(loop.step, int(bar.total or plan.steps))
        if not math.isfinite(losses.loss):
            loop.stopped = "not finite"
            return False
        if loop.step % plan.val_every == 0:
            bar.set_postfix(opw=f"{val(loop.step).opw:.4g}", best=f"{val.best:.4g}")
            if val.since >= PATIENCE:
                loop.stopped = "early stop"
                return False
            if self.resumable is not None:
                self.resumable.save(loop, session, val, clips, plan)
            if self.budget.seconds is not None:  # the bar's total follows the time left
                bar.total = loop.step + max(0, int(self._time_left() // max(np.median(step_seconds), 1e-9)))
                bar.refresh()
        return True

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
            keep = self.interrupted and has_run(out)  # Ctrl-C: the best model so far, and --resume continues
            write_model_dir(out, model, record, options["copy_prior"], keep_checkpoints=keep)
            self.say(f"{'adapted' if adapted else 'starting'} model written to {out}"
                     + ("; pass --resume to continue the run" if keep else ""))
        return AdaptResult(model, adapted, record)


class _Check:
    """The guard rails' figures of the weights being trained, on the held-out footage (at each validation), and
    whether the guard rails would pass them; the steadiest weights' figures are remembered for the warning when
    none pass."""

    def __init__(self, session: Session, held, before: Figures, options: dict):
        self.session, self.held, self.before, self.options = session, held, before, options
        self.steadiest: Figures | None = None

    def __call__(self, step: int) -> tuple[Figures, bool]:
        if step == 0:  # the starting model: measured before training
            return self.before, False
        model = self.session.model
        try:
            after = figures(model, self.held, self.options["device"])
        finally:
            model.train()
        if self.steadiest is None or after.opw < self.steadiest.opw:
            self.steadiest = after
        return after, judge(self.before, after, model.task.name, self.options["tolerance"]).passed


class _Validation:
    """The validations so far (``curve``), the weights kept and how many validations ago they came.

    Each validation records the held-out loss (the training losses on the held-out clips) and the guard rails'
    figures (OPW, distance to the prior) on the held-out footage. The weights kept are those of the lowest OPW
    among the validations the guard rails pass (step 0, the starting model, until one does): the loss, whose
    regularization term rises as the model departs from a flickering prior, would keep the starting model where
    the adapted one flickers less and is as accurate (benchmarks/adapt_domain_shift.py)."""

    def __init__(self, session: Session, clips: list[Clip], elapsed, check: _Check):
        self.session, self.clips, self.elapsed, self.check = session, clips, elapsed, check
        self.curve: list[dict] = []
        self.best, self.best_step, self.best_state, self.since, self.seconds = math.inf, 0, None, 0, 0.0

    def __call__(self, step: int) -> Figures:
        """Validate the weights of ``step``; they are kept when they pass and improve on the OPW kept (step 0:
        always)."""
        began = time.perf_counter()
        value = self.session.validate(self.clips)
        measured, passed = self.check(step)
        self.seconds = time.perf_counter() - began
        self.curve.append({"step": step, **value.to_dict(), **measured.to_dict(), "passed": passed,
                           "time": round(self.elapsed(), 2)})
        if step == 0 or (passed and measured.opw < self.best * (1 - MIN_IMPROVEMENT)):
            self.best, self.best_step, self.best_state, self.since = measured.opw, step, self.session.snapshot(), 0
        else:
            self.since += 1
        return measured

    def state(self) -> dict:
        """What a checkpoint keeps of it (the best weights are saved beside)."""
        steadiest = self.check.steadiest
        return {"curve": self.curve, "best": self.best, "best_step": self.best_step, "since": self.since,
                "seconds": self.seconds, "steadiest": steadiest.to_dict() if steadiest is not None else None}

    def load(self, state: dict, best_state: dict) -> None:
        self.curve = list(state["curve"])
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.best_step, self.since, self.seconds = int(state["best_step"]), int(state["since"]), state["seconds"]
        self.best_state = best_state
        if state.get("steadiest") is not None:
            self.check.steadiest = Figures(**state["steadiest"])


class _ClipOrder:
    """The training clips, each epoch in a new random order; its position is kept in checkpoints."""

    def __init__(self, clips: list[Clip], rng: np.random.Generator):
        self.clips, self.rng = clips, rng
        self.order: list[int] = []
        self.position = 0

    def __iter__(self) -> Iterator[Clip]:
        return self

    def __next__(self) -> Clip:
        if self.position >= len(self.order):
            self.order, self.position = [int(i) for i in self.rng.permutation(len(self.clips))], 0
        self.position += 1
        return self.clips[self.order[self.position - 1]]

    def state(self) -> dict:
        """The epoch's order, the position in it and the random state (of the reg frames too: the same rng)."""
        return {"order": self.order, "position": self.position, "rng": self.rng.bit_generator.state}

    def load(self, state: dict) -> None:
        self.order, self.position = [int(i) for i in state["order"]], int(state["position"])
        self.rng.bit_generator.state = state["rng"]


@dataclass
class _Loop:
    """Where training is: the steps done, their durations, and why it stopped."""

    step: int
    step_seconds: list[float]
    stopped: str = "steps"


class _Resumable:
    """Writes a checkpoint of the run at every validation (:mod:`~bufferanytime.adapt.resume`)."""

    def __init__(self, out: Path, options: dict, record: dict, before: Figures, run: _Run):
        self.out, self.options, self.record, self.before, self.run = out, options, record, before, run

    def save(self, loop: _Loop, session: Session, val: _Validation, clips: _ClipOrder, plan: Plan) -> None:
        run = self.run
        state = to_json({"record": self.record, "plan": plan.to_dict(), "costs": run.costs.__dict__,
                         "before": self.before.to_dict(), "check_seconds": run.check_seconds,
                         "options": {k: self.options[k] for k in RESUMED_OPTIONS}, "timings": run.timings,
                         "validation": val.state(), "step_seconds": loop.step_seconds, "clips": clips.state()})
        save_checkpoint(self.out, loop.step, run.elapsed(), session.model.trainable_state_dict(), val.best_state,
                        session.optimizer, session.scheduler, state)


def _restore(session: Session, val: _Validation, clips: _ClipOrder, found: Checkpoint) -> tuple[int, list[float]]:
    """The interrupted run's weights, optimizer, schedule, random states, validation and clip order; its step."""
    loaded = load_checkpoint(found, session.device)
    if set(loaded["trainable"]) != set(session.model.trainable_state_dict()):
        raise InputError(f"{found.path}: the checkpoint does not match the model")
    session.restore(loaded["trainable"])
    session.optimizer.load_state_dict(loaded["optimizer"])
    session.scheduler.load_state_dict(loaded["scheduler"])
    state = found.state[STATE_KEY]
    val.load(state["validation"], {k: v.cpu() for k, v in loaded["ema"].items()})
    clips.load(state["clips"])
    return found.step, [float(x) for x in state["step_seconds"]]


def validation_losses(curve: list[dict]) -> list[float]:
    """The validation losses of a record's curve, in step order."""
    return [float(point["loss"]) for point in curve]


__all__ = ["AdaptResult", "Losses", "adapt", "run_adapt", "validation_losses"]
