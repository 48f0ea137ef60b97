"""Progress lines of the commands whose steps take long without a frame count to show (``demo``, ``export``).

Each step prints one line ``TEXT ...`` on stdout when it starts, flushed at once, so a terminal, a pipe or a log
shows what is running (a block-buffered stdout would hold the lines until the command ends). ``-q`` hides them.
stderr is left to ``error:``/``warning:`` lines (and progress bars on a terminal).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

Say = Callable[[str], None]


def step_printer(quiet: bool = False) -> Say:
    """A function printing the start of each step (``say("loading the depth model")``), or doing nothing with
    ``quiet``."""
    if quiet:
        return _silent
    return _say


def _say(text: str) -> None:
    sys.stdout.write(f"{text} ...\n")
    sys.stdout.flush()


def _silent(text: str) -> None:
    """No progress lines (``-q``)."""
