"""The budget: times and step counts, and the one-line refusals of zero and unreadable budgets."""

from __future__ import annotations

import pytest

from bufferanytime.adapt.budget import MAX_BUDGET_STEPS, Budget, parse_budget
from bufferanytime.errors import InputError
from tests.helpers import run_main


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", Budget(seconds=90.0)), ("5m", Budget(seconds=300.0)), ("1h30m", Budget(seconds=5400.0)),
    ("1.5m", Budget(seconds=90.0)), ("200steps", Budget(steps=200)), ("200 steps", Budget(steps=200)),
    ("1step", Budget(steps=1)), (" 5M ", Budget(seconds=300.0)),
])
def test_budget_forms(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["0s", "0m", "0steps", "abc", "300", "5 minutes", "-5m", "",
                                  f"{MAX_BUDGET_STEPS + 1}steps", "200h"])
def test_bad_budget_is_refused(text):
    with pytest.raises(InputError, match="--budget"):
        parse_budget(text)


@pytest.mark.parametrize("text", ["0s", "soon", "0steps"])
def test_bad_budget_on_the_command_line(capsys, tmp_path, clips, text):
    code, err = run_main(capsys, "adapt", "depth", str(clips[0]), "-o", str(tmp_path / "model"), "--budget", text)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: argument --budget:")
    assert not (tmp_path / "model").exists()
