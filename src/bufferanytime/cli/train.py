"""``bufferanytime train depth|normal``: fine-tune an image prior into a video model on unlabelled videos.

Options come, later ones winning, from the paper's defaults, the run's saved ``RUN/config.json`` (with
``--resume``), ``--config FILE`` (YAML or JSON, option names as below with ``_`` or ``-``) and the flags given.
Runs in one process, or in several with ``accelerate launch [--num_processes N] -m bufferanytime train ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bufferanytime.cli.args import finite_float, non_negative_float, non_negative_int, positive_float, positive_int
from bufferanytime.constants import (
    CLIP_LEN_DEPTH,
    CLIP_LEN_NORMAL,
    CYCLE_TAU,
    DEFERRED_CHUNK,
    EMA_DECAY,
    LR_DEPTH,
    LR_NORMAL,
    TRAIN_RES_DEPTH,
    TRAIN_RES_NORMAL,
    TRAIN_STEPS,
    W_REG,
    WARMUP_STEPS,
)
from bufferanytime.errors import InputError
from bufferanytime.training.config import (
    CACHE_DTYPES,
    DIST_TIMEOUT,
    FLOW_METHODS,
    MIXED_PRECISION,
    RUNTIME_OPTIONS,
    STABLE_NORMS,
    WORLD_SIZE,
    TrainConfig,
    read_config_file,
    read_run_config,
)

DESCRIPTION = (
    "Upgrade an image prior (Depth Anything V2 for depth, Marigold-E2E-FT for normals) to a temporally consistent "
    "video model using unlabelled videos only (Buffer Anytime): a regularization loss to the frozen prior on one "
    "random frame per clip plus an optical-flow stabilization loss on all frames. Writes RUN/log.jsonl (one line "
    "per step), RUN/checkpoints/, and RUN/model, loadable with `bufferanytime depth|normal --model RUN/model`. "
    "Under `accelerate launch --num_processes N -m bufferanytime train ...` it trains data-parallel."
)
SAVED_CONFIG = "config.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune an image prior into a video model (no video ground truth)",
                       description=DESCRIPTION)
    # Every option defaults to "not given" so that a config file or a resumed run's config is only overridden
    # by the flags actually passed.
    opt = {"default": argparse.SUPPRESS}
    p.add_argument("kind", choices=["depth", "normal"], help="which video model to train")
    p.add_argument("--data", nargs="+", action="extend", metavar="DIR", **opt,
                   help="folders searched recursively for videos, frame folders and `bufferanytime synth` "
                   "sequences (ground-truth files are ignored); may be repeated")
    p.add_argument("--model", **opt, help="image prior (Depth Anything V2 / Marigold-E2E-FT directory or Hugging "
                   "Face id) or a saved video model to continue from")
    p.add_argument("--out", **opt, metavar="RUN", help="run directory (config, log, checkpoints, final model)")
    p.add_argument("--config", default=None, metavar="FILE", help="YAML or JSON file of options (flags override it)")
    p.add_argument("--resume", action="store_true", **opt,
                   help="continue the run in --out from its newest valid checkpoint (options default to its config; "
                   "a changed option is refused unless it is a run-time one or named in --allow-change)")
    runtime = ", ".join(sorted(o.replace("_", "-") for o in RUNTIME_OPTIONS - {"out", "resume", "allow_change"}))
    p.add_argument("--allow-change", type=_names, action="extend", **opt, metavar="NAME[,NAME...]",
                   help=f"with --resume: options that may differ from the run's config (e.g. lr,w-reg), or "
                   f"{WORLD_SIZE.replace('_', '-')} for another number of processes; the change is applied and "
                   f"recorded in RUN/config.json's history. Always allowed: {runtime}")
    p.add_argument("--steps", type=positive_int, **opt,
                   help=f"total optimizer steps of the run (default {TRAIN_STEPS})")
    p.add_argument("--clip-len", type=positive_int, **opt,
                   help=f"frames per clip (default {CLIP_LEN_DEPTH} for depth, {CLIP_LEN_NORMAL} for normals); "
                   "shorter videos give shorter clips")
    p.add_argument("--stride", type=positive_int, **opt, help="use every N-th frame of a video (default 1)")
    p.add_argument("--clips-per-video", type=positive_int, **opt,
                   help="fixed clips (start frame and crop) drawn per video; epochs revisit them (default 1)")
    p.add_argument("--res", **opt, metavar="N|HxW",
                   help=f"training resolution after random crop and resize (default {TRAIN_RES_DEPTH} for depth, "
                   f"{TRAIN_RES_NORMAL} for normals)")
    p.add_argument("--min-crop", type=positive_float, **opt,
                   help="smallest random crop, as a fraction of the largest crop of the target aspect (default 0.5)")
    p.add_argument("--batch-size", type=positive_int, **opt, help="clips per process and step (default 1)")
    p.add_argument("--lr", type=positive_float, **opt,
                   help=f"AdamW learning rate (default {LR_DEPTH:g} for depth, {LR_NORMAL:g} for normals)")
    p.add_argument("--weight-decay", type=non_negative_float, **opt, help="AdamW weight decay (default 0.01)")
    p.add_argument("--warmup", type=non_negative_int, **opt,
                   help=f"linear learning-rate warm-up steps from 0, constant after (default {WARMUP_STEPS})")
    p.add_argument("--ema", type=finite_float, **opt,
                   help=f"decay of the weights' moving average saved as RUN/model (default {EMA_DECAY}; 0 = off)")
    p.add_argument("--w-reg", type=non_negative_float, **opt,
                   help=f"weight of the regularization loss (default {W_REG:g})")
    p.add_argument("--max-grad-norm", type=positive_float, **opt, help="clip the gradient norm (default: no clipping)")
    p.add_argument("--flow", choices=FLOW_METHODS, **opt, help="optical flow for the stabilization loss (default dis)")
    p.add_argument("--flow-weights", **opt, metavar="PATH", help="raft-small checkpoint (raft-small.pth)")
    p.add_argument("--tau", type=positive_float, **opt,
                   help=f"cycle-consistency threshold in pixels (default {CYCLE_TAU})")
    p.add_argument("--no-edge-mask", dest="edge_mask", action="store_false", **opt,
                   help="do not mask the stabilization loss near Canny edges of the prediction")
    p.add_argument("--stable-norm", choices=STABLE_NORMS, **opt,
                   help="depth: stabilization loss on the disparity normalised by one median / mean absolute "
                   "deviation per clip (clip, default; scale-free like the regularization loss) or on the raw "
                   "disparity, as Alg. 2 writes it (none)")
    p.add_argument("--deferred-chunk", type=positive_int, **opt,
                   help=f"normals: frames decoded at once in deferred back-propagation (default {DEFERRED_CHUNK})")
    p.add_argument("--seed", type=non_negative_int, **opt, help="seed of clips, crops and initial weights (default 0)")
    p.add_argument("--cache", **opt, metavar="DIR",
                   help="keep flows, prior targets and frozen features per clip in DIR (reused from epoch 2 on)")
    p.add_argument("--cache-dtype", choices=CACHE_DTYPES, **opt,
                   help="storage type of cached features and targets (default float32; flows stay float32)")
    p.add_argument("--save-every", type=positive_int, **opt, help="checkpoint every N steps (default 1000)")
    p.add_argument("--keep-checkpoints", type=positive_int, **opt, help="newest checkpoints kept (default 2)")
    p.add_argument("--workers", type=non_negative_int, **opt, help="data loading processes (default 2)")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISION, **opt,
                   help="auto (default): bf16/fp16 on GPU, or as set by `accelerate launch`; full precision on CPU")
    p.add_argument("--cpu", action="store_true", **opt, help="train on the CPU even if a GPU is present")
    p.add_argument("--dist-timeout", type=positive_float, **opt, metavar="SECONDS",
                   help=f"with several processes: stop with an error when one waits this long for the others, e.g. "
                   f"behind a frozen process (default {DIST_TIMEOUT:g})")
    p.add_argument("--tensorboard", action="store_true", **opt, help="also log to RUN/tensorboard/")
    p.add_argument("--copy-prior", action="store_true", **opt,
                   help="copy the prior into RUN/model so that it is self-contained")
    p.add_argument("-q", "--quiet", action="store_true", **opt, help="no progress bar")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults, the resumed run's config, ``--config`` and the flags (see the module docstring)."""
    names = set(TrainConfig.option_names())
    flags = {k: v for k, v in vars(args).items() if k in names and k != "kind"}
    if "res" in flags:
        flags["res"] = str(flags["res"])
    from_file = read_config_file(args.config) if args.config else {}
    file_kind = from_file.pop("kind", args.kind)
    if file_kind != args.kind:
        raise InputError(f"{args.config}: kind {file_kind!r} contradicts the command's {args.kind!r}")

    config = TrainConfig(kind=args.kind)
    out = flags.get("out", from_file.get("out"))
    resume = flags.get("resume", from_file.get("resume", False))
    if resume and out and (Path(out) / SAVED_CONFIG).is_file():
        saved_path = Path(out) / SAVED_CONFIG
        saved, _ = read_run_config(saved_path)
        if saved.get("kind", args.kind) != args.kind:
            raise InputError(f"{out} is a {saved.get('kind')} run, not {args.kind}")
        config = config.updated(saved, str(saved_path))
    if args.config:
        config = config.updated(from_file, args.config)
    return config.updated(flags, "command line")


def _names(text: str) -> list[str]:
    """``lr,w-reg`` -> ``["lr", "w_reg"]`` (option names as flags or as in config.json)."""
    return [name.strip().replace("-", "_") for name in text.split(",") if name.strip()]


def run(args: argparse.Namespace) -> int:
    from bufferanytime.training.trainer import train

    train(build_config(args))
    return 0
