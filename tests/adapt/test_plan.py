"""The plan of an adaptation: what it affords in the time left, and how often it validates (torch-free)."""

from __future__ import annotations

import math

import pytest

from bufferanytime.adapt.plan import (
    FINAL_MARGIN,
    MAX_VAL_EVERY,
    TARGET_EVALS,
    Candidate,
    Costs,
    Workload,
    affordable_steps,
    choose,
    validation_period,
    validations,
)

COSTS = Costs(prepare=2e-6, forward=1e-6, step=4e-6)  # seconds per frame-pixel
LOAD = Workload(pixels=126 * 168, train_clips=6, val_clips=2, held_out_frames=32, held_out_pixels=126 * 168)
CANDIDATE = Candidate(1.0, 10)


def spent(steps: int, costs: Costs = COSTS, load: Workload = LOAD, candidate: Candidate = CANDIDATE) -> float:
    """Seconds a run of ``steps`` takes by the plan's own costs, validations at their period included."""
    unit = load.pixels * candidate.clip_len
    evals = validations(steps)
    per_eval = (load.held_out_frames * load.held_out_pixels + load.val_clips * unit) * costs.forward
    prepared = (min(load.train_clips, steps) + load.val_clips) * unit * costs.prepare
    final = FINAL_MARGIN * load.held_out_frames * load.held_out_pixels * (costs.prepare + costs.forward)
    return steps * costs.step * unit + evals * per_eval + prepared + final


@pytest.mark.parametrize("steps", [1, 9, 10, 55, 199, 200, 201, 860, 5000])
def test_validations_are_never_further_apart_than_the_cap(steps):
    period = validation_period(steps)
    assert 1 <= period <= MAX_VAL_EVERY
    assert math.ceil(steps / period) >= min(TARGET_EVALS, steps)


@pytest.mark.parametrize("seconds", [30, 60, 120, 300, 900, 3600])
def test_the_steps_afforded_fit_the_time_with_their_validations(seconds):
    """A long budget validates more often than TARGET_EVALS times; the steps it affords still fit, with little to
    spare (one more step and its share of a validation would not)."""
    steps = affordable_steps(COSTS, CANDIDATE, LOAD, seconds)
    assert steps > 0
    assert spent(steps) <= seconds * 1.0001
    assert spent(steps + validation_period(steps) + 1) > seconds


def test_more_time_never_affords_fewer_steps():
    afforded = [affordable_steps(COSTS, CANDIDATE, LOAD, s) for s in range(20, 2000, 7)]
    assert afforded == sorted(afforded)


def test_a_long_budget_of_cheap_steps_validates_at_the_cap():
    loads = {CANDIDATE: LOAD}
    plan = choose(COSTS, loads, 3600.0, None, False, 1e-3, train_frames=64)
    assert plan.steps > TARGET_EVALS * MAX_VAL_EVERY
    assert plan.val_every == MAX_VAL_EVERY
