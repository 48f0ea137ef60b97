"""Options declared once (training/options.py): a field gives its flag, its config-file key, the coercion of a
value to its type, its check with the message naming the flag, and the default shown in --help."""

import json
from dataclasses import dataclass, fields

import pytest

from bufferanytime.cli.main import build_parser
from bufferanytime.cli.train import build_config
from bufferanytime.errors import InputError
from bufferanytime.training import TrainConfig
from bufferanytime.training.options import (
    above,
    at_least,
    between,
    check_values,
    coerce,
    default_of,
    flag,
    info,
    option,
    value_types,
)


@dataclass
class Toy:
    name: str = option("a", "a name", choices=("a", "b"))
    count: int = option(1, "a count", at_least(1))
    rate: float | None = option(None, "a rate", above(0))
    share: float = option(0.5, "a share", between(0, 1, "(]"))
    switch: bool = option(True, "a switch")
    items: list[str] = option([], "items", required="no items: pass --items")


def test_config_file_values_are_coerced_to_the_field_type():
    assert coerce(Toy, "count", 2.0, "f") == 2 and coerce(Toy, "rate", "1e-3", "f") == 1e-3
    assert coerce(Toy, "rate", None, "f") is None and coerce(Toy, "items", "x", "f") == ["x"]
    for name, value in (("count", 2.5), ("count", True), ("switch", 1), ("rate", True)):
        with pytest.raises(InputError, match=f"f: bad value .* for option '{name}'"):
            coerce(Toy, name, value, "f")
    with pytest.raises(InputError, match="f: option 'count' cannot be null"):
        coerce(Toy, "count", None, "f")
    assert Toy().items is not Toy().items  # a list default is a fresh list per instance


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"items": []}, "^no items: pass --items$"),
        ({"count": 0}, "^--count must be >= 1$"),
        ({"rate": 0.0}, "^--rate must be > 0$"),
        ({"share": 0.0}, r"^--share must be in \(0, 1\]$"),
        ({"rate": float("nan")}, "^--rate must be a finite number, got nan$"),
        ({"share": 1e39}, "^--share must be a finite number"),
        ({"name": "c"}, "^--name must be one of a, b$"),
    ],
)
def test_checks_give_one_message_naming_the_flag(changes, message):
    with pytest.raises(InputError, match=message):
        check_values(Toy(**{"items": ["x"], **changes}))
    check_values(Toy(items=["x"], rate=None))  # an unset optional value is not checked


def _other_value(f):
    """A value of the field's type that differs from its default, as a flag's words and as a config value."""
    kind, _ = value_types(TrainConfig)[f.name]
    default = default_of(f)
    if kind is bool:
        return ([f"--no-{f.name.replace('_', '-')}"] if default else [flag(f.name)]), not default
    if info(f).choices:
        value = next(c for c in reversed(info(f).choices) if c != default)
        return [flag(f.name), value], value
    if kind is list:
        return [flag(f.name), "lr"], ["lr"]
    if kind is tuple:
        return [flag(f.name), "30x40"], "30x40"
    if kind is int:
        value = (default or 2) + 1
        return [flag(f.name), str(value)], value
    if kind is float:
        return [flag(f.name), "0.25"], 0.25
    return [flag(f.name), "some/path"], "some/path"


def test_every_option_is_a_flag_and_a_config_key_with_the_same_meaning(tmp_path):
    """The flag and the config-file key of each option (from its one declaration) give the same configuration."""
    words, values = [], {}
    for f in fields(TrainConfig):
        if not info(f).positional:
            argv, value = _other_value(f)
            words += argv
            values[f.name] = value
    config_file = tmp_path / "options.json"
    config_file.write_text(json.dumps({**values, "out": str(tmp_path / "run")}))
    parser = build_parser(["train"])
    from_flags = build_config(parser.parse_args(["train", "normal", *words, "--out", str(tmp_path / "run")]))
    from_file = build_config(parser.parse_args(["train", "normal", "--config", str(config_file)]))
    assert from_flags == from_file
    assert all(getattr(from_flags, f.name) != default_of(f) for f in fields(TrainConfig) if not info(f).positional)


def test_help_shows_each_default_from_its_field(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: no word broken at a hyphen
    with pytest.raises(SystemExit):
        build_parser(["train"]).parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--steps STEPS total optimizer steps of the run (default 20000)" in text
    assert "frames per clip (default 110 for depth, 32 for normals)" in text
    assert "(default 518 for depth, 512 for normals)" in text
    assert "AdamW learning rate (default 0.0001 for depth, 1e-05 for normals)" in text
    assert "--max-skipped-steps MAX_SKIPPED_STEPS stop after N steps in a row with no decodable clip (default 10)" \
        in text
    assert "--no-edge-mask do not mask" in text and "-q, --quiet no progress bar" in text
    assert "Always allowed: cache, cpu, dist-timeout, keep-checkpoints, max-skipped-steps, quiet, save-every" in text
