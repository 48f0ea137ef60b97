"""Every inference option is declared once, as a field of InferenceSettings: its flag, help, config key, check and
the app's control all come from that field."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

import pytest

from bufferanytime.cli.args import add_options, given_options
from bufferanytime.cli.main import build_parser
from bufferanytime.errors import InputError
from bufferanytime.evaluation.runner import EVAL_OPTIONS
from bufferanytime.inference.options import GROUPS, InferenceSettings
from bufferanytime.options import at_least, coerce, info, limited, option


@dataclass
class WithBlur(InferenceSettings):
    """The declaration with one more option: the whole of adding it, besides using its value."""

    blur: int = option(0, "blur the frames by PX pixels first (default {default})", limited(at_least(0), 9, "MAX_BLUR"),
                       metavar="PX", app="Blur (px)")


def _parser(cls: type, kind: str = "depth") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bufferanytime depth", exit_on_error=False)
    add_options(parser, cls, cls.option_names(kind), groups=GROUPS)
    return parser


def test_a_new_field_gives_its_flag_and_help():
    parser = _parser(WithBlur)
    settings = WithBlur(**given_options(parser.parse_args(["--blur", "3", "--window", "8"]), WithBlur,
                                        WithBlur.option_names("depth")))
    assert (settings.blur, settings.window, settings.max_res) == (3, 8, None)
    assert WithBlur(**given_options(parser.parse_args([]), WithBlur, WithBlur.option_names())).blur == 0
    help_text = " ".join(parser.format_help().split())
    assert "--blur PX blur the frames by PX pixels first (default 0)" in help_text


@pytest.mark.parametrize(("value", "words"), [("12", "must be at most 9 (MAX_BLUR), got 12"), ("-1", "must be >= 0"),
                                              ("x", "must be a whole number")])
def test_a_new_field_is_checked_when_its_flag_is_parsed(value, words):
    with pytest.raises(argparse.ArgumentError, match=words.replace("(", r"\(").replace(")", r"\)")):
        _parser(WithBlur).parse_args(["--blur", value])


def test_a_new_field_is_a_config_key_and_is_checked_there_too():
    assert coerce(WithBlur, "blur", 3.0, "run.yaml") == 3
    with pytest.raises(InputError, match="run.yaml: bad value 'x' for option 'blur'"):
        coerce(WithBlur, "blur", "x", "run.yaml")
    with pytest.raises(InputError, match=r"^--blur must be at most 9 \(MAX_BLUR\), got 12$"):
        WithBlur(blur=12).check()
    assert WithBlur(blur=9).check().blur == 9


def test_a_new_field_gets_an_app_control():
    labels = {f.name: info(f).app for f in fields(WithBlur) if info(f).app}
    assert labels["blur"] == "Blur (px)"
    from bufferanytime.app.work import APP_OPTIONS, Request

    assert [f.name for f in APP_OPTIONS] == [name for name in labels if name != "blur"]
    assert Request(None, ("depth",), options={"window": 3}).settings().window == 3
    with pytest.raises(InputError, match="--window must be at most 1024"):
        Request(None, ("depth",), options={"window": 5000}).settings()


@pytest.mark.parametrize("kind", ["depth", "normal"])
def test_every_option_of_a_command_is_a_flag_of_it(kind, capsys):
    with pytest.raises(SystemExit):
        build_parser([kind, "--help"]).parse_args([kind, "--help"])
    help_text = capsys.readouterr().out
    for name in InferenceSettings.option_names(kind):
        assert f"--{name.replace('_', '-')}" in help_text
    assert ("--intrinsics" in help_text) == (kind == "depth") and ("--decode-chunk" in help_text) == (kind == "normal")


def test_eval_takes_its_inference_options_from_the_same_fields(capsys):
    with pytest.raises(SystemExit):
        build_parser(["eval", "--help"]).parse_args(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in EVAL_OPTIONS:
        field_help = " ".join(info(next(f for f in fields(InferenceSettings) if f.name == name)).help.split())
        assert field_help.split("{")[0][:40] in help_text
    assert "(default fp32)" in help_text  # the library's precision, as before; depth and normal default to auto
