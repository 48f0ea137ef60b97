"""``bufferanytime adapt depth|normal INPUT... -o MODEL_DIR``: make a video model stable on the user's footage.

Trains on the inputs with the method's zero-shot losses for ``--budget`` (a time such as ``5m``, or a step count
such as ``200steps``), holding out part of the footage to stop on and to check the result; MODEL_DIR is loaded by
``depth|normal --model``, ``eval`` and ``export onnx`` like any saved video model (see
:mod:`bufferanytime.adapt`). The budget and the output folder are checked before torch is imported.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bufferanytime.adapt.budget import BUDGET_FORMS, MAX_BUDGET_SECONDS, MAX_BUDGET_STEPS, parse_budget
from bufferanytime.batch.options import ADDRESS_HELP, ENGINES
from bufferanytime.cli.args import non_negative_float, non_negative_int, positive_float, positive_int
from bufferanytime.errors import InputError

KINDS = ("depth", "normal")
RAY_ONLY = (("address", "--address"), ("num_workers", "--num-workers"), ("cpus_per_worker", "--cpus-per-worker"))
ENGINE_HELP = (
    "Training runs in this process; what is done per input before it (opening, hashing, decoding and resizing the "
    "frames kept) runs here, or with --engine ray on Ray workers, for many or long inputs. Either way the frames, "
    "and so the adapted model, are the same. The inputs' paths must be readable from the workers. Ray's start "
    "counts in a time --budget."
)
DESCRIPTION = (
    "Adapt a video model to your own footage, without ground truth: it trains on the inputs with the method's "
    "losses (stabilization along optical flow, regularization to the prior) for the --budget, holding out part of "
    "the footage (the last quarter of one video, or a quarter of the videos) to stop early on and to check the "
    "result. The settings (size, clip length, steps, what is trained) are chosen from one measured step to fit "
    "the budget on this machine, and printed. The adapted model is kept only if, on the held-out footage, it "
    "flickers less than the starting model (OPW) and stays about as close to the prior; otherwise the starting "
    "model is written, and a warning says why with both figures. MODEL_DIR holds the model (load it with "
    "`bufferanytime depth|normal --model MODEL_DIR`, `eval`, `export onnx`) and adapt.json, the record of the "
    "run. Ctrl-C (or SIGTERM) during training finishes with the best weights so far and keeps the run's last "
    "checkpoint, so that --resume continues it; a second one stops without writing."
)


def budget_type(text: str):
    """An argparse type: the budget, parsed (an unreadable or zero budget is one usage error)."""
    from bufferanytime.errors import InputError

    try:
        return parse_budget(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapt", help="adapt a video model to your own footage (no ground truth), within a budget",
                       description=DESCRIPTION)
    p.add_argument("kind", choices=KINDS, help="which video model to adapt")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video file (mp4/mov/avi/mkv/webm), folder of images, or .txt list of these")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="MODEL_DIR",
                   help="the model folder to write (refused if it exists and is not an earlier adapt result)")
    p.add_argument("--model", default=None,
                   help="the video model to start from: registered name, saved video-model folder, or prior folder / "
                   "Hugging Face id (default: the embedded model)")
    p.add_argument("--budget", type=budget_type, default=None, metavar="TIME|Nsteps",
                   help=f"{BUDGET_FORMS} (default 5m; with --resume, the interrupted run's). "
                   "A time covers the whole run, reading to writing; at most "
                   f"{MAX_BUDGET_SECONDS // 3600} hours or {MAX_BUDGET_STEPS} steps")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="AdamW learning rate (default 5e-4 for the DPT depth models: an adaptation affords "
                   "hundreds of steps, not train's many thousands; otherwise that of `train`: 1e-5 for normals)")
    p.add_argument("--w-reg", type=non_negative_float, default=None,
                   help="weight of the regularization loss to the prior (default for the DPT depth models: 0.25 "
                   "where the footage's camera hardly moves along its axis, so that depth is steady along the flow, "
                   "0.5 where it does, as a car's camera; measured on the footage and printed; otherwise 1, as in "
                   "`train`)")
    p.add_argument("--prior-tolerance", type=non_negative_float, default=None, metavar="T",
                   help="how much further from the prior than the starting model the adapted model may be, on the "
                   "held-out footage, as a fraction of the starting model's distance (default 0.5: at most 1.5x as "
                   "far). Higher lets the model leave more of a flickering prior's flicker behind and risks its "
                   "accuracy: on a synthetic domain the embedded depth model never saw (a camera turning on the "
                   "spot), 0.5 gave 0.79x the starting model's flicker with AbsRel +0.3 %%, 2 gave 0.72x with "
                   "+1.2 %%, no limit 0.63x with +1.8 %%; where the camera moves along its axis, keep the default")
    p.add_argument("--seed", type=non_negative_int, default=None, help="seed of the clip order (default 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto")
    p.add_argument("--copy-prior", action="store_true",
                   help="copy the prior into MODEL_DIR so that it is self-contained")
    p.add_argument("--resume", action="store_true",
                   help="continue the run interrupted in MODEL_DIR (Ctrl-C, SIGTERM or a kill) from its last "
                   "checkpoint, with its settings and what is left of its budget; without it, a MODEL_DIR holding "
                   "an interrupted run is refused")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no progress lines")
    _add_engine_options(p)
    p.set_defaults(func=run)


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and its Ray resources: where each input is opened, hashed, decoded and resized."""
    group = parser.add_argument_group("reading the footage (--engine)", ENGINE_HELP)
    group.add_argument("--engine", choices=ENGINES, default=None,
                       help="read the inputs here (local, the default) or on Ray workers (ray: pip install "
                       "'bufferanytime[ray]')")
    group.add_argument("--address", default=None, metavar="HOST:PORT", help=ADDRESS_HELP)
    group.add_argument("--num-workers", type=positive_int, default=None, metavar="N",
                       help="--engine ray: inputs read at once (default: as many as the cluster's CPUs allow at "
                       "--cpus-per-worker)")
    group.add_argument("--cpus-per-worker", type=positive_float, default=None, metavar="N",
                       help="--engine ray: CPUs of each worker, also its decoding threads (default 1)")


def check_engine_options(args: argparse.Namespace) -> None:
    """InputError for a Ray option without ``--engine ray`` (checked before any other work)."""
    given = [flag for attr, flag in RAY_ONLY if getattr(args, attr, None) is not None]
    if given and args.engine != "ray":
        raise InputError(f"{given[0]} needs --engine ray (the local engine reads the footage in this process)")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()  # the budget counts from here, imports included
    from bufferanytime.adapt.record import check_output
    from bufferanytime.adapt.resume import refuse_unless_resumed

    check_engine_options(args)
    check_output(args.output, None)  # refused before anything heavy is loaded
    refuse_unless_resumed(args.output, args.resume)
    from bufferanytime.adapt.engines import footage_engine

    engine = footage_engine(args.engine, args.address, args.num_workers, args.cpus_per_worker)
    try:
        from bufferanytime.adapt.run import run_adapt

        run_adapt(args.inputs, args.model, args.budget, kind=args.kind, out=args.output, lr=args.lr,
                  w_reg=args.w_reg, seed=args.seed, tolerance=args.prior_tolerance, device=args.device,
                  copy_prior=args.copy_prior, quiet=args.quiet, started=started, resume=args.resume, engine=engine)
    finally:
        if engine is not None:
            engine.close()
    return 0
