"""Structure rules of the package that a reviewer would otherwise check by hand; the rule against
comparing buffer kinds as strings is in tests/tasks/test_name_rule.py."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "bufferanytime"
MAX_FUNCTION_LINES = 60


def _functions():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path.relative_to(SRC), node


def test_no_function_is_longer_than_60_lines():
    long = [f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions() if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def test_the_rule_sees_long_functions():
    """The count above is of real functions: the package has some close to the limit."""
    assert max(node.end_lineno - node.lineno + 1 for _, node in _functions()) > MAX_FUNCTION_LINES // 2


def test_every_folder_says_what_it_owns():
    folders = sorted(SRC.glob("*/__init__.py"))
    assert len(folders) >= 10
    for init in folders:
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 8, f"{init.relative_to(SRC)} has no docstring saying what it owns"
