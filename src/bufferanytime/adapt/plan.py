"""The settings of an adaptation, chosen to fit the budget and the machine from one measured step.

Candidates (:func:`candidates`) go from the model's own inference size and clip length down to half the size and
short clips, in order of preference. One step is measured at the cheapest (:mod:`bufferanytime.adapt.session`): its
preparation (frozen features, flows, the prior's targets), a forward pass and a forward-backward pass, per frame-
pixel. From those, each candidate's step time is projected, and the first candidate that leaves ``TARGET_STEPS``
steps in the time left is chosen (else the one that leaves the most); with a step budget, the first whose step takes
at most ``MAX_STEP_SECONDS``. Validations come every tenth of the steps, at most ``MAX_VAL_EVERY`` steps apart, and
their cost is counted in what a time budget affords. Depth models train their temporal blocks (with the DPT fusion
layers around them) only when the footage is short (fewer than ``FEW_TRAIN_FRAMES`` frames to train on) or the steps
are few (fewer than ``FEW_STEPS``), where changing the per-frame head risks fitting that little footage; otherwise
every part the trainer trains (DPT neck, head and temporal blocks). Normal models always train their temporal blocks
(the only trainable part). Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SIDE_FRACTIONS = (1.0, 0.75, 0.5)  # of the model's inference size
MAX_CLIP_LEN = 16  # frames per training clip at most (the paper's 110 and 32 are for GPUs with 80 GB)
MIN_PLAN_CLIP_LEN = 4
TARGET_STEPS = 100  # the steps a time budget should afford; a smaller size or shorter clips are chosen until it does
MIN_STEPS = 10  # a time budget that affords fewer steps is refused (the run would only waste it)
MAX_STEP_SECONDS = 4.0  # with a step budget: the largest setting whose step takes at most this
TARGET_EVALS = 10  # validations in a run (each on every held-out clip), more when they would be too far apart
# Steps between two validations at most: at the adaptation's learning rate the weights can pass the guard rails'
# distance to the prior within a few dozen steps, and validations further apart than that stepped over every
# weights that passed (a run planned at 860 steps validated every 86 and kept the starting model). On the domain-
# shift benchmark's validation clips (wandering camera, weight 0.25), 10 gave OPW 0.73x the shipped model's where 20
# gave 0.75x.
MAX_VAL_EVERY = 10
MAX_VAL_CLIPS = 8  # held-out clips validated on (evenly spread)
FEW_TRAIN_FRAMES = 240
FEW_STEPS = 60
# Part of the time left kept aside for what comes after training (predicting the held-out footage once more,
# OPW, writing), on top of its measured cost before training.
FINAL_MARGIN = 1.3
WARMUP_FRACTION = 0.1  # of the steps: linear learning-rate warm-up


@dataclass(frozen=True)
class Candidate:
    side_fraction: float
    clip_len: int


@dataclass(frozen=True)
class Costs:
    """Measured seconds per frame-pixel of one clip: preparing it, a forward pass, a forward-backward step."""

    prepare: float
    forward: float
    step: float


@dataclass
class Plan:
    """What the run does: sizes, clip length, steps, validation period and what is trained, with the reasons."""

    side_fraction: float
    clip_len: int
    steps: int
    val_every: int
    trained: str  # "temporal" (temporal blocks only) or "all" (every trainable part)
    lr: float
    warmup: int
    projected_step_seconds: float
    reasons: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def candidates(model_clip_len: int) -> list[Candidate]:
    """Settings in order of preference: larger size first, then longer clips."""
    longest = max(MIN_PLAN_CLIP_LEN, min(model_clip_len, MAX_CLIP_LEN))
    lengths = sorted({longest, max(MIN_PLAN_CLIP_LEN, longest // 2)}, reverse=True)
    out = [Candidate(f, n) for f in SIDE_FRACTIONS for n in lengths]
    return [*out, Candidate(SIDE_FRACTIONS[-1], MIN_PLAN_CLIP_LEN)] if lengths[-1] > MIN_PLAN_CLIP_LEN else out


@dataclass(frozen=True)
class Workload:
    """What a candidate costs besides its steps: frame-pixels of a clip, and how many clips are prepared."""

    pixels: float  # mean H*W of the frames at the candidate size
    train_clips: int
    val_clips: int
    held_out_frames: int
    held_out_pixels: float  # mean H*W of the held-out frames, checked at the model's inference size


def step_seconds(costs: Costs, candidate: Candidate, load: Workload) -> float:
    return costs.step * load.pixels * candidate.clip_len


def validation_period(steps: int) -> int:
    """Steps between two validations in a run of ``steps``: a ``TARGET_EVALS``-th of them, at most
    ``MAX_VAL_EVERY``."""
    return max(1, min(steps // TARGET_EVALS, MAX_VAL_EVERY))


def validations(steps: int) -> int:
    """Validations in a run of ``steps``: the starting model's, one every ``validation_period`` steps and one at
    the last step when it is not on the period."""
    return 1 + math.ceil(steps / validation_period(steps)) if steps > 0 else 1


def affordable_steps(costs: Costs, candidate: Candidate, load: Workload, seconds_left: float) -> int:
    """The most steps that fit in ``seconds_left`` with what they need besides: the clips they use, prepared once;
    their ``validations`` (each on the validation clips, with the guard rails' check on the held-out footage); the
    final check."""
    unit = load.pixels * candidate.clip_len
    per_eval = (load.held_out_frames * load.held_out_pixels + load.val_clips * unit) * costs.forward
    fixed = load.val_clips * unit * costs.prepare + FINAL_MARGIN * load.held_out_frames * load.held_out_pixels * (
        costs.prepare + costs.forward)
    step = costs.step * unit

    def seconds(steps: int) -> float:
        prepared = min(load.train_clips, max(steps, 1)) * unit * costs.prepare
        return fixed + prepared + steps * step + validations(steps) * per_eval

    if step <= 0 or seconds(0) > seconds_left:
        return 0
    # from an upper bound (every step carrying its share of the validations at the cap), down to the first that fits
    steps = max(0, math.floor((seconds_left - seconds(0)) / (step + per_eval / MAX_VAL_EVERY)))
    while steps > 0 and seconds(steps) > seconds_left:
        steps -= 1
    return steps


def choose(costs: Costs, loads: dict[Candidate, Workload], seconds_left: float | None, steps: int | None,
           temporal_only: bool, lr: float, train_frames: int) -> Plan:
    """The plan (see the module docstring); ``loads`` in order of preference (:func:`candidates`)."""
    reasons: list[str] = []
    if steps is not None:
        fits = [c for c in loads if step_seconds(costs, c, loads[c]) <= MAX_STEP_SECONDS]
        chosen = fits[0] if fits else list(loads)[-1]
        planned = steps
        reasons.append(f"the largest setting whose step takes at most {MAX_STEP_SECONDS:g} s" if fits else
                       f"no setting steps within {MAX_STEP_SECONDS:g} s: the cheapest")
    else:
        afford = {c: affordable_steps(costs, c, load, float(seconds_left)) for c, load in loads.items()}
        fits = [c for c in loads if afford[c] >= TARGET_STEPS]
        chosen = fits[0] if fits else max(afford, key=afford.get)
        planned = afford[chosen]
        reasons.append(f"the largest setting that affords {TARGET_STEPS} steps in the time left" if fits else
                       f"no setting affords {TARGET_STEPS} steps: the one that affords the most")
    trained = "all"
    if temporal_only:
        trained = "temporal"
        reasons.append("the temporal blocks are the trainable part of this model")
    elif train_frames < FEW_TRAIN_FRAMES or planned < FEW_STEPS:
        trained = "temporal"
        reasons.append(f"temporal blocks and fusion layers only: {train_frames} frames to train on and {planned} "
                       f"steps (head too from {FEW_TRAIN_FRAMES} frames and {FEW_STEPS} steps)")
    else:
        reasons.append("DPT neck, head and temporal blocks (enough footage and steps)")
    val_every = validation_period(planned)
    return Plan(chosen.side_fraction, chosen.clip_len, planned, val_every, trained, lr,
                max(0, round(planned * WARMUP_FRACTION)), step_seconds(costs, chosen, loads[chosen]), reasons)
