"""The budget of an adaptation: a wall-clock time (``90s``, ``5m``, ``1h30m``) or a number of steps (``200steps``).

A time budget covers the whole run, from loading the model to writing the result: the settings are chosen so that
training, validation and the final checks fit in it (:mod:`bufferanytime.adapt.plan`). A step count fixes the
number of optimizer steps instead, and the time is whatever they take. Torch-free: the command line checks the
budget before anything heavy is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bufferanytime.errors import InputError

# A time budget (seconds) and a step count are refused beyond these (a typo such as 5000h), said in --help.
MAX_BUDGET_SECONDS = 7 * 24 * 3600
MAX_BUDGET_STEPS = 1_000_000
UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_TIME = re.compile(r"(?:\d+(?:\.\d+)?[hms])+")
_TIME_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_STEPS = re.compile(r"(\d+)\s*steps?")
BUDGET_FORMS = "a time such as 90s, 5m or 1h30m, or a step count such as 200steps"


@dataclass(frozen=True)
class Budget:
    """Either ``seconds`` (a wall-clock budget for the whole run) or ``steps`` (a fixed number of steps)."""

    seconds: float | None = None
    steps: int | None = None

    @property
    def text(self) -> str:
        """``5m``, ``90s``, ``200steps``: how the budget reads in messages and in the record."""
        if self.steps is not None:
            return f"{self.steps}steps"
        seconds = float(self.seconds or 0.0)
        if seconds >= 60 and seconds % 60 == 0:
            return f"{int(seconds // 60)}m"
        return f"{seconds:g}s"

    def to_dict(self) -> dict:
        return {"text": self.text, "seconds": self.seconds, "steps": self.steps}


def parse_budget(text: str | int | float | Budget) -> Budget:
    """``"5m"`` -> 300 s, ``"90s"``, ``"1h30m"``, ``"200steps"`` (or ``"200 steps"``, ``"1step"``) -> 200 steps.

    A plain number is refused (seconds or steps?), and so are zero, a negative or unreadable budget, and one
    beyond ``MAX_BUDGET_SECONDS`` / ``MAX_BUDGET_STEPS``: one InputError naming ``--budget``.
    """
    if isinstance(text, Budget):
        return _checked(text)
    raw = str(text).strip().lower()
    if _STEPS.fullmatch(raw):
        return _checked(Budget(steps=int(_STEPS.fullmatch(raw).group(1))), raw)
    if _TIME.fullmatch(raw):
        seconds = sum(float(value) * UNIT_SECONDS[unit] for value, unit in _TIME_PART.findall(raw))
        return _checked(Budget(seconds=seconds), raw)
    raise InputError(f"--budget {text!r}: cannot read it; give {BUDGET_FORMS}")


def _checked(budget: Budget, raw: str | None = None) -> Budget:
    shown = raw or budget.text
    if budget.steps is not None:
        if budget.steps < 1:
            raise InputError(f"--budget {shown}: must be at least 1 step")
        if budget.steps > MAX_BUDGET_STEPS:
            raise InputError(f"--budget {shown}: at most {MAX_BUDGET_STEPS} steps")
        return budget
    if budget.seconds is None or budget.seconds <= 0:
        raise InputError(f"--budget {shown}: must be more than zero; give {BUDGET_FORMS}")
    if budget.seconds > MAX_BUDGET_SECONDS:
        raise InputError(f"--budget {shown}: at most {MAX_BUDGET_SECONDS // 3600} hours")
    return budget
