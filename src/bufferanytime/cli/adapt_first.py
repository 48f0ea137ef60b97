"""``bufferanytime depth|normal INPUT... --adapt BUDGET -o OUT``: adapt the model on the inputs themselves, then
predict them with it, in one command.

The adaptation is ``bufferanytime adapt`` (:mod:`bufferanytime.adapt`) on the inputs, within BUDGET (the
adaptation's own: prediction comes after it), starting from ``--model``; the model it gives (adapted, or the
starting one when the guard rails refuse the adaptation) is written to ``OUT/adapted_model`` (a model folder,
written whole or not at all, with its ``adapt.json``) and predicts every input. Each input's meta file records
it under ``model.adapt``: the budget, the steps, the guard rails' verdict and the OPW and distance to the prior
before and after, on the held-out part of the footage. Torch-free until the adaptation starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bufferanytime.cli.adapt import budget_type
from bufferanytime.errors import InputError

ADAPTED_DIR = "adapted_model"  # OUT/adapted_model: the model the inputs were predicted with
ADAPT_HELP = (f"adapt the model to the inputs first, within this budget (a time such as 5m, or a step count such as "
              f"200steps; as `bufferanytime adapt`), then predict them with it; the model is written to "
              f"OUT/{ADAPTED_DIR} and the meta files record the budget, the guard rails' verdict and the OPW before "
              "and after (docs/adapt.md)")


def add_adapt_option(parser: argparse.ArgumentParser) -> None:
    """``--adapt BUDGET`` (a bad budget is one usage error, before any work)."""
    parser.add_argument("--adapt", type=budget_type, default=None, metavar="TIME|Nsteps", help=ADAPT_HELP)


def check_adapt_option(args: argparse.Namespace) -> None:
    """InputError when ``--adapt`` is given with what it cannot go with."""
    if getattr(args, "adapt", None) is None:
        return
    for flag, given in (("--online", getattr(args, "online", None) is not None),
                        ("--engine", getattr(args, "engine", None) is not None),
                        ("--per-frame", getattr(args, "per_frame", False))):
        if given:
            raise InputError(f"--adapt trains a video model on files and folders; it cannot go with {flag}")


def adapt_first(args: argparse.Namespace, inputs: list[Path], out_root: Path, device: str) -> tuple[str, dict]:
    """Adapt ``args.model`` on ``inputs`` within ``args.adapt``, written to ``OUT/adapted_model``; the folder to
    predict with, and what the meta files record of the adaptation."""
    from bufferanytime.adapt.record import summary
    from bufferanytime.adapt.resume import has_run
    from bufferanytime.adapt.run import run_adapt

    target = out_root / ADAPTED_DIR
    if has_run(target):  # `adapt --resume` continues it; this command has no --resume of its own
        raise InputError(f"{target}: holds an interrupted adaptation; continue it with `bufferanytime adapt "
                         f"{args.kind} INPUT... -o {target} --resume` and predict with --model {target}, or remove "
                         "it to start over")
    result = run_adapt(inputs, args.model, args.adapt, kind=args.kind, out=target, device=device, quiet=args.quiet)
    return str(target), {**summary(result.record), "model_dir": str(target)}
