"""``bufferanytime train-prior``: supervised training of a small image prior on synthetic data.

This is how the embedded demonstration priors are made; real users start from the real pretrained priors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bufferanytime.cli.args import non_negative_int, positive_float, positive_int
from bufferanytime.training.prior import PRIOR_TRAINERS, PriorTrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    defaults = PriorTrainConfig()
    p = sub.add_parser("train-prior", help="train a small single-image prior on synthetic data (for demos)",
                       description=__doc__)
    p.add_argument("kind", choices=list(PRIOR_TRAINERS))
    p.add_argument("--data", nargs="+", required=True, help="folders of synthetic videos (bufferanytime synth)")
    p.add_argument("--val", default=None, help="folder of held-out synthetic videos for the final metrics")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the prior")
    p.add_argument("--steps", type=positive_int, default=defaults.steps, help=f"default {defaults.steps}")
    p.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                   help=f"default {defaults.batch_size}")
    p.add_argument("--lr", type=positive_float, default=defaults.lr, help=f"learning rate (default {defaults.lr})")
    p.add_argument("--seed", type=non_negative_int, default=defaults.seed, help=f"default {defaults.seed}")
    p.add_argument("--threads", type=positive_int, default=defaults.threads, help="torch CPU threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = PriorTrainConfig(kind=args.kind, data=args.data, val=args.val, steps=args.steps,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads)
    record = PRIOR_TRAINERS[args.kind](config, args.output, not args.quiet)
    print(json.dumps({"seconds": record["seconds"], "val_metrics": record["val_metrics"]}, indent=2))
    return 0
