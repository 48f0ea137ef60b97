"""Adapt a video model to the user's own footage, with the method's zero-shot losses only (no ground truth).

``bufferanytime adapt depth|normal INPUT... -o MODEL_DIR`` and :func:`adapt` train a video model on the inputs for a
time or step budget, stop on the loss of a held-out part of the footage, and keep the result only if it flickers
less there than the starting model (OPW) while staying as close to the prior (:mod:`~bufferanytime.adapt.guard`).
MODEL_DIR loads like any saved video model and holds ``adapt.json``, the record of the run. One module per
concern: ``budget`` (parsing), ``footage`` (inputs, split, frames), ``plan`` (settings from a measured step),
``session`` (the training loop's parts), ``guard`` (the final checks), ``record`` (MODEL_DIR) and ``run`` (all of
it, in order).
"""

from __future__ import annotations

from typing import Any

from bufferanytime.adapt.budget import Budget, parse_budget

__all__ = ["AdaptResult", "Budget", "adapt", "parse_budget", "run_adapt"]


def __getattr__(name: str) -> Any:
    """``adapt``, ``run_adapt`` and ``AdaptResult`` import torch: loaded when first asked for."""
    if name in ("adapt", "run_adapt", "AdaptResult"):
        from bufferanytime.adapt import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
