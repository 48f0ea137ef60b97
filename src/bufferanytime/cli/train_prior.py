"""``bufferanytime train-prior``: supervised training of a small image prior on synthetic data.

This is how the embedded demonstration priors are made; real users start from the real pretrained priors.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from bufferanytime.cli.train import add_option
from bufferanytime.errors import InputError
from bufferanytime.families import prior_trainer, prior_trainer_tasks
from bufferanytime.training.options import coerce
from bufferanytime.training.prior import PriorTrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    """``bufferanytime train-prior KIND``: inputs and output, then one flag per option of PriorTrainConfig."""
    p = sub.add_parser("train-prior", help="train a small single-image prior on synthetic data (for demos)",
                       description=__doc__)
    p.add_argument("kind", choices=prior_trainer_tasks(), help="the task of the prior (its family says how it is "
                   "trained: bufferanytime.families)")
    p.add_argument("--data", nargs="+", required=True, help="folders of synthetic videos (bufferanytime synth)")
    p.add_argument("--val", default=None, help="folder of held-out synthetic videos for the final metrics")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the prior")
    p.add_argument("--init", default=None, metavar="PRIOR_DIR",
                   help="metric_depth: start from this Depth Anything prior (e.g. the relative tiny-synthetic one); "
                   "its head becomes metric (sigmoid times --max-depth)")
    for f in fields(PriorTrainConfig):
        if "option" in f.metadata:
            add_option(p, PriorTrainConfig, f)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    given = vars(args)
    options = {f.name: coerce(PriorTrainConfig, f.name, given[f.name], "command line")
               for f in fields(PriorTrainConfig) if "option" in f.metadata and f.name in given}
    if args.init is not None and not Path(args.init, "config.json").is_file():
        raise InputError(f"{args.init}: not a Depth Anything prior directory (no config.json)")
    config = PriorTrainConfig(kind=args.kind, data=args.data, val=args.val, init=args.init, **options)
    record = prior_trainer(args.kind)(config, args.output, not args.quiet)
    print(json.dumps({"seconds": record["seconds"], "val_metrics": record["val_metrics"]}, indent=2))
    return 0
