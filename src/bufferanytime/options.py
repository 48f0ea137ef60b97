"""Options declared once, as dataclass fields: default, help, check and choices in one line each.

Training (:class:`~bufferanytime.training.config.TrainConfig`) and inference
(:class:`~bufferanytime.inference.options.InferenceSettings`) options alike are declared here; no torch, so a
command builds its parser and checks its options before any model library loads.

``name: int = option(1, "help", at_least(1))`` is the whole declaration of an option. From the field and its
:class:`OptionInfo` metadata come the command-line flag (``--name``, its argparse type, choices and help with the
default shown: :func:`bufferanytime.cli.args.add_option`), the keys of a config file and their coercion to the field's
type (:func:`coerce`), and the validation with an error that names the flag (:func:`check_values`).
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from bufferanytime.errors import InputError

FLOAT32_MAX = 3.4028234663852886e38  # float options reach float32 tensors (the optimizer's lr): larger ones overflow
POSITIVE, NON_NEGATIVE = "positive", "non_negative"  # what a flag's own argparse type refuses (Check.sign)


@dataclass(frozen=True)
class Check:
    """A rule on an option's value; ``text`` ends the error that names the option (``--NAME <text>``).

    ``sign`` is the part of the rule the flag's argparse type enforces at parse time (``POSITIVE``,
    ``NON_NEGATIVE`` or None): a one-sided bound at 0 or above, or a range open at 0; the rest is checked with
    the other values, with the fuller message.
    """

    ok: Callable[[Any], bool]
    text: str  # may say ``{value}``, the value refused
    sign: str | None = None
    high: float | None = None  # a documented upper limit, refused by the flag's argparse type too (see limited)
    limit_name: str = ""  # the constant that names ``high``, said in the error


def limited(check: Check, high: float, limit_name: str = "") -> Check:
    """``check`` and ``value <= high``: the limit is said in the flag's help and refused when the flag is parsed."""
    return Check(check.ok, check.text, check.sign, high, limit_name)


def at_least(low: float, note: str = "") -> Check:
    """``value >= low``; ``note`` is appended to the error (e.g. why)."""
    sign = POSITIVE if low > 0 else NON_NEGATIVE if low == 0 else None
    return Check(lambda value: value >= low, f"must be >= {low}{note}", sign)


def above(low: float, note: str = "") -> Check:
    """``value > low``."""
    return Check(lambda value: value > low, f"must be > {low}{note}", POSITIVE if low >= 0 else None)


def between(low: float, high: float, brackets: str = "[]", note: str = "") -> Check:
    """``low <= value <= high``, each end open or closed as ``brackets`` says: ``"(]"`` excludes ``low``."""
    low_open, high_open = brackets[0] == "(", brackets[1] == ")"

    def ok(value: float) -> bool:
        return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)

    sign = POSITIVE if low_open and low >= 0 else None
    return Check(ok, f"must be in {brackets[0]}{low}, {high}{brackets[1]}{note}", sign)


@dataclass(frozen=True)
class OptionInfo:
    """What an option is besides its name, type and default (``Field.metadata["option"]``)."""

    help: str  # ``{default}`` places the default; otherwise " (default X)" is appended when there is one
    check: Check | None = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    runtime: bool = False  # says how a run is executed or reported: may change when the run is resumed
    recorded: bool = True  # compared with the run's saved options on resume and recorded in its history
    required: str = ""  # the error when the option is missing or empty
    per_kind: bool = False  # None stands for the default of the kind of buffer (TrainConfig.resolved)
    split: Callable[[str], list[str]] | None = None  # a list option whose flag takes one word, split by this
    short: str | None = None  # a short flag, e.g. "-q"
    positional: bool = False  # given as a positional argument (the command's choice), not as a flag
    aliases: tuple[str, ...] = ()  # further flags of the option, e.g. a spelling ("--pixel-centers")
    group: str = ""  # the title of the --help section listing the flag; "": the command's own options
    kinds: tuple[str, ...] = ()  # the kinds of command (depth, normal) that take the option; (): every one
    app: str = ""  # the label of the option's control in the web app; "": not offered there


def option(default: Any, help: str, check: Check | None = None, **info: Any) -> Any:  # noqa: A002
    """A dataclass field holding an option: ``default`` (a list default is copied per instance) and its info."""
    metadata = {"option": OptionInfo(help, check, **info)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def info(f: Field) -> OptionInfo:
    return f.metadata["option"]


def flag(name: str) -> str:
    """``clip_len`` -> ``--clip-len``."""
    return "--" + name.replace("_", "-")


def default_of(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


@functools.cache
def value_types(cls: type) -> dict[str, tuple[type, bool]]:
    """``{name: (type, None allowed)}`` of a dataclass's fields: ``int | None`` -> ``(int, True)``."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            kinds = [a for a in args if a is not type(None)]
            out[name] = (typing.get_origin(kinds[0]) or kinds[0], len(kinds) < len(args))
        else:
            out[name] = (typing.get_origin(hint) or hint, False)
    return out


def parse_res(value: Any) -> tuple[int, int]:
    """``518``, ``"518"``, ``"294x518"`` or ``[294, 518]`` -> ``(H, W)``."""
    try:
        if isinstance(value, int | float):
            return int(value), int(value)
        if isinstance(value, list | tuple) and len(value) == 2:
            return int(value[0]), int(value[1])
        text = str(value).lower().strip()
        if "x" in text:
            h, w = text.split("x")
            return int(h), int(w)
        return int(text), int(text)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad resolution {value!r}: expected N or HxW (e.g. 518 or 294x518)") from exc


def _to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise TypeError
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    return float(value)


def _to_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


# How a value read from a config file becomes a field's type (argparse types the flags itself).
_COERCE: dict[type, Callable[[Any], Any]] = {
    bool: _to_bool, int: _to_int, float: _to_float, str: str, list: _to_list, tuple: parse_res,
}


def coerce(cls: type, name: str, value: Any, source: str) -> Any:
    """``value`` (from a config file, JSON or YAML) as option ``name`` of ``cls`` holds it; InputError if it can't."""
    kind, optional = value_types(cls)[name]
    if value is None:
        if optional:
            return None
        raise InputError(f"{source}: option {name!r} cannot be null")
    try:
        return _COERCE[kind](value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: bad value {value!r} for option {name!r}") from exc


def check_values(config: Any) -> None:
    """Refuse missing required options, then non-finite floats, then values outside their check or choices.

    NaN and infinity pass comparisons like ``lr > 0``: every float option is refused by name when it is not a
    finite number within float32's range. Options that are None (``int | None``) are not checked.
    """
    options = fields(config)
    for f in options:
        if info(f).required and not getattr(config, f.name):
            raise InputError(info(f).required)
    floats = [f for f in options if value_types(type(config))[f.name][0] is float]
    for f in floats:
        value = getattr(config, f.name)
        if value is not None and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise InputError(f"{flag(f.name)} must be a finite number, got {value}")
    for f in options:
        _check_one(f, getattr(config, f.name))


def _check_one(f: Field, value: Any) -> None:
    if value is None:
        return
    check, choices = info(f).check, info(f).choices
    if check is not None and check.high is not None and value > check.high:
        named = f" ({check.limit_name})" if check.limit_name else ""
        raise InputError(f"{flag(f.name)} must be at most {check.high}{named}, got {value}")
    if check is not None and not check.ok(value):
        raise InputError(f"{flag(f.name)} {check.text.format(value=value)}")
    if choices and value not in choices:
        raise InputError(f"{flag(f.name)} must be one of {', '.join(choices)}")
