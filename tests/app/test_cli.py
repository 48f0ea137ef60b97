"""`bufferanytime app` is a registered command with the documented options."""

from __future__ import annotations

import pytest

from bufferanytime.cli.main import COMMANDS, main


def test_app_command_help(capsys):
    assert "app" in COMMANDS
    with pytest.raises(SystemExit) as info:
        main(["app", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--host" in out and "--port" in out and "--max-frames" in out


def test_app_command_rejects_a_bad_limit(capsys):
    with pytest.raises(SystemExit) as info:
        main(["app", "--max-frames", "0"])
    assert info.value.code == 2 and capsys.readouterr().err.startswith("error: ")
