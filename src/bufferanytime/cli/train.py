"""``bufferanytime train depth|normal``: fine-tune an image prior into a video model on unlabelled videos.

Options come, later ones winning, from the paper's defaults, the run's saved ``RUN/config.json`` (with
``--resume``), ``--config FILE`` (YAML or JSON, option names as below with ``_`` or ``-``) and the flags given.
Runs in one process, or in several with ``accelerate launch [--num_processes N] -m bufferanytime train ...``.
"""

from __future__ import annotations

import argparse
from dataclasses import Field, fields
from pathlib import Path

from bufferanytime.cli.args import add_option as add_flag
from bufferanytime.errors import InputError
from bufferanytime.tasks import list_tasks
from bufferanytime.training.checkpoint import STATE_NAME, list_checkpoints
from bufferanytime.training.config import (
    RECORDED_OPTIONS,
    RUN_CONFIG,
    RUNTIME_OPTIONS,
    TrainConfig,
    read_config_file,
    read_run_config,
)
from bufferanytime.training.objectives import objective_class
from bufferanytime.training.options import default_of, flag, info

DESCRIPTION = (
    "Upgrade an image prior (Depth Anything V2 for depth, Marigold-E2E-FT for normals) to a temporally consistent "
    "video model using unlabelled videos only (Buffer Anytime): a regularization loss to the frozen prior on one "
    "random frame per clip plus an optical-flow stabilization loss on all frames. Writes RUN/log.jsonl (one line "
    "per step), RUN/checkpoints/, and RUN/model, loadable with `bufferanytime depth|normal --model RUN/model`. "
    "Under `accelerate launch --num_processes N -m bufferanytime train ...` it trains data-parallel."
)


def register(sub: argparse._SubParsersAction) -> None:
    """``bufferanytime train``: one flag per field of :class:`TrainConfig`, plus ``--config FILE``."""
    p = sub.add_parser("train", help="fine-tune an image prior into a video model (no video ground truth)",
                       description=DESCRIPTION)
    for f in fields(TrainConfig):
        add_option(p, TrainConfig, f)
        if f.name == "out":  # --help lists where options come from next to where the run goes
            p.add_argument("--config", default=None, metavar="FILE",
                           help="YAML or JSON file of options (flags override it)")
    p.set_defaults(func=run)


def add_option(parser: argparse.ArgumentParser, cls: type, f: Field) -> None:
    """The flag of one option of the dataclass ``cls`` (:func:`bufferanytime.cli.args.add_option`), with its
    help saying the default of each kind of buffer."""
    add_flag(parser, cls, f, _help(f))


def _help(f: Field) -> str:
    """The option's help with its default: where ``{default}`` says, else appended when there is one to show."""
    option, value = info(f), default_of(f)
    if option.per_kind:
        kinds = [objective_class(name) for name in list_tasks()]
        default = ", ".join(f"{_shown(kind.defaults[f.name])} for {kind.noun}" for kind in kinds)
    else:
        default = _shown(value)
    runtime = ", ".join(sorted(flag(name)[2:] for name in RUNTIME_OPTIONS & RECORDED_OPTIONS))
    text = option.help.format(default=default, runtime=runtime)
    nothing_to_show = not option.per_kind and (value is None or isinstance(value, bool) or value == [])
    if "{default}" in option.help or option.positional or nothing_to_show:
        return text
    return f"{text} (default {default})"


def _shown(value) -> str | None:
    """How a default reads in the help: ``1e-05``, ``518`` for ``(518, 518)``, ``294x518``."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"
    return None if value is None else str(value)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults, the resumed run's config, ``--config`` and the flags (see the module docstring)."""
    names = set(TrainConfig.option_names())
    flags = {k: v for k, v in vars(args).items() if k in names and k != "kind"}
    from_file = read_config_file(args.config) if args.config else {}
    file_kind = from_file.pop("kind", args.kind)
    if file_kind != args.kind:
        raise InputError(f"{args.config}: kind {file_kind!r} contradicts the command's {args.kind!r}")

    config = TrainConfig(kind=args.kind)
    out = flags.get("out", from_file.get("out"))
    resume = flags.get("resume", from_file.get("resume", False))
    recorded = _recorded_options(Path(out)) if resume and out else None
    if recorded is not None:
        saved, saved_path = recorded
        if saved.get("kind", args.kind) != args.kind:
            raise InputError(f"{out} is a {saved.get('kind')} run, not {args.kind}")
        config = config.updated(saved, saved_path)
    if args.config:
        config = config.updated(from_file, args.config)
    return config.updated(flags, "command line")


def _recorded_options(run: Path) -> tuple[dict, str] | None:
    """The options a run recorded: its ``config.json``, else (lost) those its newest checkpoint carries."""
    if (run / RUN_CONFIG).is_file():
        return read_run_config(run / RUN_CONFIG)[0], str(run / RUN_CONFIG)
    if not run.is_dir():
        return None
    for checkpoint in reversed(list_checkpoints(run)):
        options = checkpoint.state.get("options")
        if isinstance(options, dict):
            return dict(options), str(checkpoint.path / STATE_NAME)
    return None


def run(args: argparse.Namespace) -> int:
    from bufferanytime.training.trainer import train

    train(build_config(args))
    return 0
