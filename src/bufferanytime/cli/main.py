"""The ``bufferanytime`` command: one sub-command per job, each in its own module of this package.

A sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` as the parser default. Bad input raises :class:`~bufferanytime.errors.InputError`,
shown here as a single ``error: ...`` line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bufferanytime import __version__
from bufferanytime.errors import InputError

# Sub-command modules, in the order shown by --help.
SUBCOMMANDS = ["predict", "demo", "flow", "synth", "eval", "train"]

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse already exits with 2 and a one-line message on bad options; keep that format."""

    def error(self, message: str) -> None:  # noqa: D401
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bufferanytime",
        description="Temporally consistent video depth and surface normals from single-image priors "
        "(Buffer Anytime). Run `bufferanytime COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"bufferanytime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMANDS:
        importlib.import_module(f"bufferanytime.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
