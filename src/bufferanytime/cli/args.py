"""Argument types and checks shared by the sub-commands.

The ``*_int`` and ``*_float`` functions are argparse types: argparse turns their errors into one-line usage
errors (exit 2). ``nan`` and ``inf`` parse as floats in Python, so every float option goes through one of the
float types here. :func:`add_option` makes the flag of an option declared once as a dataclass field
(:mod:`bufferanytime.options`). :func:`check_device` raises :class:`InputError` for a device this machine does not
have, and :func:`check_outside_input` for an output folder inside the input folder.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import Field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bufferanytime.inference.options import MAX_INFERENCE_SIDE, MAX_WINDOW
from bufferanytime.options import NON_NEGATIVE, POSITIVE, default_of, flag, info, value_types

if TYPE_CHECKING:
    from bufferanytime.io.video import VideoSource

__all__ = ["MAX_EXPORT_FRAMES", "MAX_INFERENCE_SIDE", "MAX_WINDOW"]  # the limits of the inference options are
# declared with them (bufferanytime.inference.options) and re-exported here for the other commands
#: export --frames: the length of the example window traced at export (T stays dynamic in the ONNX file).
MAX_EXPORT_FRAMES = 64


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def int_at_most(limit: int, low: int | None = 1, name: str = "") -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` (None: checked later, by the command) to ``limit``, a documented
    limit (``name``, the constant, is said in the message)."""

    def parse(text: str) -> int:
        value = _int(text)
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit}{f' ({name})' if name else ''}, got {value}")
        return value

    parse.__name__ = f"integer up to {limit}"  # how argparse names the type in its own messages
    return parse


def integer(text: str) -> int:
    """Any integer (the option's check says more once every option is read)."""
    return _int(text)


def finite_float(text: str) -> float:
    """A float that is neither NaN nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0 (rates, learning rates, frame rates)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite float >= 0 (amplitudes, noise levels)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def check_device(name: str) -> str:
    """``name`` if this machine has that torch device (``auto`` always); InputError otherwise, in one line."""
    from bufferanytime.inference.pipeline import resolve_device

    resolve_device(name)
    return name


def check_outside_input(source: VideoSource, target: Path) -> Path:
    """``target`` (the outputs of ``source``); InputError when it would lie inside a folder input (the outputs
    would mix with the frames)."""
    from bufferanytime.errors import InputError

    if source.kind == "folder":
        folder, resolved = source.path.resolve(), target.resolve()
        if resolved == folder or folder in resolved.parents:
            raise InputError(f"{source.path}: its outputs would go into the input folder itself ({target}); "
                             "choose an -o outside it")
    return target


# The argparse type of a number flag: its Python type and the sign its check asks for (Check.sign).
NUMBER_TYPES: dict[tuple[type, str | None], Callable[[str], Any]] = {
    (int, POSITIVE): positive_int,
    (int, NON_NEGATIVE): non_negative_int,
    (int, None): integer,
    (float, POSITIVE): positive_float,
    (float, NON_NEGATIVE): non_negative_float,
    (float, None): finite_float,
}
LOW_OF_SIGN = {POSITIVE: 1, NON_NEGATIVE: 0, None: None}


def add_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, f: Field,
               help_text: str | None = None, default: Any = argparse.SUPPRESS) -> None:
    """The flag of one option of the dataclass ``cls``, from its field: type, choices, action, help and default.

    ``help_text`` defaults to :func:`option_help`. The flag defaults to ``default``: "not given" (absent from the
    parsed arguments) unless said, so that only the flags actually passed override a config file, a resumed run's
    config or the dataclass's own defaults. A tuple option with ``split`` is repeatable: each flag gives a group.
    """
    option = info(f)
    value_type, _ = value_types(cls)[f.name]
    help_text = option_help(f) if help_text is None else help_text
    if option.positional:
        parser.add_argument(f.name, choices=option.choices, help=help_text)
        return
    kwargs: dict[str, Any] = {"default": default, "help": help_text}
    names = [flag(f.name)] if option.short is None else [option.short, flag(f.name)]
    names += option.aliases
    if value_type is bool:
        negated = default_of(f) is True
        kwargs["action"] = "store_false" if negated else "store_true"
        names = [f"--no-{f.name.replace('_', '-')}"] if negated else names
        kwargs["dest"] = f.name
    elif value_type in (list, tuple) and option.split:
        kwargs["action"] = "extend" if value_type is list else "append"
        kwargs["type"] = option.split
    elif value_type is list:
        kwargs["action"] = "extend"
        kwargs["nargs"] = "+"
    elif value_type in (int, float):
        kwargs["type"] = _number_type(value_type, option.check)
    kwargs["dest"] = f.name
    if option.choices:
        kwargs["choices"] = option.choices
    if option.metavar:
        kwargs["metavar"] = option.metavar
    parser.add_argument(*names, **kwargs)


def _number_type(value_type: type, check) -> Callable[[str], Any]:
    """The argparse type of a number option: its sign, and its documented upper limit (Check.high) if any."""
    sign = check.sign if check else None
    if check is not None and check.high is not None and value_type is int:
        return int_at_most(int(check.high), LOW_OF_SIGN[sign], check.limit_name)
    return NUMBER_TYPES[value_type, sign]


def option_help(f: Field, default: Any = None) -> str:
    """The option's help with its default (``default``, else the field's): where ``{default}`` says, else appended
    when there is one to show."""
    option = info(f)
    value = default_of(f) if default is None else default
    shown = shown_default(value)
    text = option.help.format(default=shown)
    if "{default}" in option.help or option.positional or value is None or isinstance(value, bool) or value == []:
        return text
    return f"{text} (default {shown})"


def shown_default(value: Any) -> str | None:
    """How a default reads in the help: ``1e-05``, ``npz,vis`` for ``("npz", "vis")``."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return None if value is None else str(value)


def add_options(parser: argparse.ArgumentParser, cls: type, names: list[str], defaults: dict | None = None,
                groups: dict[str, str] | None = None) -> None:
    """The flags of the options ``names`` of ``cls``, in its --help sections (``groups``: title -> description).

    Each flag defaults to None ("not given": :func:`given_options` leaves it to the dataclass's default); the help
    shows ``defaults[name]`` when the command has its own default for an option, else the field's.
    """
    by_name, sections = {f.name: f for f in fields(cls)}, {}
    for name in names:
        f = by_name[name]
        title = info(f).group
        if title and title not in sections:
            sections[title] = parser.add_argument_group(title, (groups or {}).get(title))
        default = (defaults or {}).get(name)
        add_option(sections.get(title, parser), cls, f, option_help(f, default), default=None)


def given_options(args: argparse.Namespace, cls: type, names: list[str], defaults: dict | None = None) -> dict:
    """``{name: value}`` of the options ``names`` given as flags (or the command's ``defaults``); the groups of a
    repeatable flag (a tuple option with ``split``) joined into one tuple."""
    out = dict(defaults or {})
    kinds = value_types(cls)
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        out[name] = tuple(v for group in value for v in group) if kinds[name][0] is tuple and isinstance(
            value, list) else value
    return out
