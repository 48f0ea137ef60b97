"""The ``bufferanytime`` command: one sub-command per job, each in its own module of this package.

A sub-command module exposes ``register(subparsers)``, which adds its parser(s) and sets ``func(args) -> int``
as the parser default. Only the module of the command being run is imported (the others pull in torch,
transformers and diffusers, seconds of start-up); ``bufferanytime --help`` lists every command from
``COMMANDS``. Bad input raises :class:`~bufferanytime.errors.InputError`, shown here as a single ``error: ...``
line with exit code 2; so are a bad option (argparse) and a file-system failure the user has to fix (full disk,
quota, read-only or forbidden output: :data:`USER_OS_ERRORS`). SIGTERM is handled like Ctrl-C (KeyboardInterrupt),
so every command removes its temporaries and exits with 130. The libraries' own progress bars (Hub downloads,
weight loading) are turned off here, for the process the command owns, not at import of the library.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import gc
import importlib
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from bufferanytime import __version__
from bufferanytime.errors import InputError

# command -> (module in bufferanytime.cli, one-line help), in the order shown by --help.
COMMANDS = {
    "depth": ("predict", "predict temporally consistent relative depth for videos"),
    "normal": ("predict", "predict temporally consistent surface normals for videos"),
    "demo": ("demo", "run the whole method on a synthetic and a real clip (no set-up needed)"),
    "app": ("app", "a web page to run the models on a clip (Gradio, offline)"),
    "train": ("train", "fine-tune an image prior into a video model (no video ground truth)"),
    "adapt": ("adapt", "adapt a video model to your own footage (no ground truth), within a time budget"),
    "eval": ("eval", "score models on a benchmark (report.json, report.md, time slices)"),
    "flow": ("flow", "optical flow between consecutive frames (DIS or RAFT-small)"),
    "synth": ("synth", "render synthetic videos with exact depth, normals and flow"),
    "export": ("export", "export a model to ONNX (video model with a dynamic window, and its per-frame prior)"),
    "train-prior": ("train_prior", "train a small single-image prior on synthetic data (for demos)"),
    "consistency": ("consistency", "angle between the normals implied by the depth and the predicted normals"),
    "models": ("models", "list the prior families, the embedded models and what each produces"),
}

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
# File-system errors caused by the environment, not by a bug: reported in one line, without a traceback.
USER_OS_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})
# glibc gives each thread that allocates its own malloc arena (up to 8 per core), and memory freed goes back to
# the arena it came from: with the reader and writer threads beside the model, what one thread frees cannot serve
# another's next large allocation: `bufferanytime depth` (DA-V2-Small at 518x924, window 110) peaked at 3.6 GB
# in one run and 6.0 GB in another, and at 3.2-3.6 GB with two arenas (docs/benchmarks.md).
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter for MALLOC_ARENA_MAX


class _Parser(argparse.ArgumentParser):
    """A bad option exits with 2 and one ``error: ...`` line that points to ``--help`` (no usage block)."""

    def error(self, message: str) -> None:  # noqa: D401
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def os_error_line(exc: OSError, fallback: object = None) -> str:
    """``<path>: no space left on device`` and the like, from an OSError of :data:`USER_OS_ERRORS`.

    A failed write on an open file carries no path: ``fallback`` (the command's output) is named instead."""
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    path = exc.filename if exc.filename is not None else fallback
    return f"{path}: {reason}" if path is not None else reason


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


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub-)command ``args`` ran, e.g. ``bufferanytime export onnx``: an unknown option is
    reported by it, so the line points to that command's ``--help``, not to ``bufferanytime --help``."""
    while True:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, actions[0].dest, None) if actions else None
        if chosen not in (actions[0].choices if actions else {}):
            return parser
        parser = actions[0].choices[chosen]


def say_error(message: str) -> None:
    """Print ``error: message`` as ONE write, so lines of processes sharing stderr never run into each other."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so a terminated command cleans up its temporaries as Ctrl-C does."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on, as ``MALLOC_ARENA_MAX`` does; returns
    whether it applied (not where the C library is not glibc, nor when the user set ``MALLOC_ARENA_MAX``)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


def quiet_library_progress_bars() -> None:
    """Turn off the progress bars of huggingface_hub and transformers (the commands show their own).

    transformers reads huggingface_hub's setting when it is imported; if it already is, it is told directly."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:
        hf_logging.disable_progress_bar()


@contextmanager
def plain_progress_off_a_terminal() -> Iterator[None]:
    """Inside the ``with``, when stderr is not a terminal (a log file, a pipe), progress bars never move the cursor.

    tqdm draws a nested bar (e.g. eval's frames under its sequences) one line down and returns with cursor-up
    escapes (``ESC[A``), which a log keeps as garbage; off a terminal each bar is redrawn in place with ``\r``
    only, as a single bar is. On a terminal nothing changes."""
    if sys.stderr.isatty():
        yield
        return
    from tqdm import std

    moveto = std.tqdm.moveto
    std.tqdm.moveto = lambda self, n: None
    try:
        yield
    finally:
        std.tqdm.moveto = moveto


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (default: the command line) and return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    quiet_library_progress_bars()
    limit_malloc_arenas()  # before any I/O thread starts
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        with sigterm_as_interrupt(), plain_progress_off_a_terminal():
            return int(args.func(args) or 0)
    except InputError as exc:
        say_error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        if exc.errno not in USER_OS_ERRORS:
            raise
        say_error(os_error_line(exc, getattr(args, "output", None) or getattr(args, "out", None)))
        return EXIT_USAGE
    except KeyboardInterrupt:
        say_error("interrupted")
        return 130


def entry(argv: list[str] | None = None) -> int:
    """The ``bufferanytime`` program: :func:`main`, then an exit that skips the cyclic collector's passes over
    everything torch and transformers created (``gc.freeze``).

    The interpreter's own clean-up collects garbage over every object left, which after torch and transformers
    were imported took 0.8-0.9 s of the process (0.1 s frozen), after the command's outputs were all written and
    closed. Everything else of the exit still runs: atexit handlers, finalizers registered with ``weakref``,
    flushing the standard streams. ``main`` is what to call in a process that goes on (tests, other programs)."""
    code = main(argv)
    gc.freeze()
    return code


if __name__ == "__main__":
    raise SystemExit(entry())
