"""The ``bufferanytime`` command: one sub-command per job, each in its own module of this package.

A sub-command module exposes ``register(subparsers)``, which adds its parser(s) and sets ``func(args) -> int``
as the parser default. Only the module of the command being run is imported (the others pull in torch,
transformers and diffusers, seconds of start-up); ``bufferanytime --help`` lists every command from
``COMMANDS``. Bad input raises :class:`~bufferanytime.errors.InputError`, shown here as a single ``error: ...``
line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bufferanytime import __version__
from bufferanytime.errors import InputError

# command -> (module in bufferanytime.cli, one-line help), in the order shown by --help.
COMMANDS = {
    "depth": ("predict", "predict temporally consistent relative depth for videos"),
    "normal": ("predict", "predict temporally consistent surface normals for videos"),
    "demo": ("demo", "run the whole method on a synthetic and a real clip (no set-up needed)"),
    "train": ("train", "fine-tune an image prior into a video model (no video ground truth)"),
    "eval": ("eval", "score models on a benchmark (report.json, report.md, time slices)"),
    "flow": ("flow", "optical flow between consecutive frames (DIS or RAFT-small)"),
    "synth": ("synth", "render synthetic videos with exact depth, normals and flow"),
    "train-prior": ("train_prior", "train a small single-image prior on synthetic data (for demos)"),
}

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse already exits with 2 and a one-line message on bad options; keep that format."""

    def error(self, message: str) -> None:  # noqa: D401
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; the module of the command named in ``argv`` (all modules if ``argv`` is None) is imported."""
    parser = _Parser(
        prog="bufferanytime",
        description="Temporally consistent video depth and surface normals from single-image priors "
        "(Buffer Anytime). Run `bufferanytime COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"bufferanytime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    if argv is None:
        load = {module for module, _ in COMMANDS.values()}
    else:
        wanted = next((a for a in argv if not a.startswith("-")), None)
        load = {COMMANDS[wanted][0]} if wanted in COMMANDS else set()
    registered: set[str] = set()
    for command, (module, help_text) in COMMANDS.items():
        if module not in load:
            sub.add_parser(command, help=help_text)
        elif module not in registered:
            importlib.import_module(f"bufferanytime.cli.{module}").register(sub)
            registered.add(module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
