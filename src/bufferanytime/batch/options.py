"""The batch options of ``bufferanytime depth|normal`` (``--engine`` and its resources), torch- and Ray-free.

Declared here once and added to the predict parser by :func:`add_batch_options`; :func:`check_batch_options`
refuses a combination that cannot work in one ``error:`` line, before any input is read or any model loaded.
"""

from __future__ import annotations

import argparse

from bufferanytime.cli.args import non_negative_float, non_negative_int, positive_float, positive_int
from bufferanytime.errors import InputError

ENGINES = ("local", "ray")
DEFAULT_MAX_RETRIES = 2
GROUP = "batch runs (--engine)"
GROUP_HELP = (
    "With --engine the inputs are run as a batch: each INPUT may also be a quoted glob ('clips/*.mp4') or a "
    "manifest (.csv, .jsonl, .parquet) with one column of paths (named path, or the only column); OUT/KIND_manifest."
    "jsonl gets one row per input (status, error, input and settings hashes, output folder, timings, worker, and "
    "quality figures needing no ground truth: OPW with DIS flow and, for depth, the frame-to-frame scale jitter); "
    "a rerun skips the inputs whose outputs and row match their content and the settings; a worker lost mid-video "
    "has only that input retried. Without --engine the inputs are run one after the other, without a manifest."
)
#: The options that only the Ray engine takes, as (attribute, flag).
RAY_ONLY = (("address", "--address"), ("num_workers", "--num-workers"), ("cpus_per_worker", "--cpus-per-worker"),
            ("gpus_per_worker", "--gpus-per-worker"))

# --address, as depth, normal and adapt take it
ADDRESS_HELP = ("--engine ray: the Ray cluster to join (HOST:PORT, ray://HOST:PORT or auto); default: start a Ray "
                "instance on this machine for the run")


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--engine``, ``--address``, ``--num-workers``, ``--cpus-per-worker``, ``--gpus-per-worker`` and
    ``--max-retries`` to a predict parser, in their own --help section."""
    group = parser.add_argument_group(GROUP, GROUP_HELP)
    group.add_argument("--engine", choices=ENGINES, default=None,
                       help="run the inputs as a batch on this machine (local: one process, no Ray needed) or on "
                       "Ray (ray: one model per worker; pip install 'bufferanytime[ray]')")
    group.add_argument("--address", default=None, metavar="HOST:PORT", help=ADDRESS_HELP)
    group.add_argument("--num-workers", type=positive_int, default=None, metavar="N",
                       help="--engine ray: workers, each loading the model once (default: as many as the cluster's "
                       "CPUs allow at --cpus-per-worker, at most one per input)")
    group.add_argument("--cpus-per-worker", type=positive_float, default=None, metavar="N",
                       help="--engine ray: CPUs of each worker, also its torch threads (default 1)")
    group.add_argument("--gpus-per-worker", type=non_negative_float, default=None, metavar="N",
                       help="--engine ray: GPUs of each worker (default 0); a worker with a GPU runs the model on it")
    group.add_argument("--max-retries", type=non_negative_int, default=None, metavar="N",
                       help=f"--engine: times an input is tried again after its worker was lost mid-video (killed, "
                       f"node gone; default {DEFAULT_MAX_RETRIES}); a bad input is not retried")


def check_batch_options(args: argparse.Namespace) -> None:
    """InputError for batch options that cannot be used together (checked before any other work)."""
    engine = getattr(args, "engine", None)
    if engine is None:
        given = [flag for attr, flag in (*RAY_ONLY, ("max_retries", "--max-retries"))
                 if getattr(args, attr, None) is not None]
        if given:
            raise InputError(f"{given[0]} needs --engine (ray, or local for --max-retries)")
        return
    if getattr(args, "online", None) is not None:
        raise InputError("--engine runs files and folders; --online reads one live source (drop one of them)")
    if engine == "local":
        given = [flag for attr, flag in RAY_ONLY if getattr(args, attr, None) is not None]
        if given:
            raise InputError(f"{given[0]} needs --engine ray (the local engine runs in this process)")
