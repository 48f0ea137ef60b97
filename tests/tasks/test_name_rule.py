"""The rule of one task object per kind: no code outside the task definitions tells the kinds apart by comparing
their names (the CLI chooses a sub-command by name through argparse, not by comparing strings)."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "bufferanytime"
# A comparison with a task's name, either way round ("x == 'depth'", "'normal' != y").
NAME_COMPARISON = re.compile(r"""(==|!=) *['"](depth|normal)['"]|['"](depth|normal)['"] *(==|!=)""")
ALLOWED = {SRC / "tasks"}  # the task definitions


def test_no_code_outside_the_tasks_compares_task_names():
    """Kinds differ through their task object; only the task definitions (and no other module) name them in a
    comparison. The CLI chooses a sub-command by name through argparse, not by comparing strings."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if any(folder in path.parents for folder in ALLOWED):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if NAME_COMPARISON.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
