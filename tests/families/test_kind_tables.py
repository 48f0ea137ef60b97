"""Kinds of buffer differ in their task objects (bufferanytime/tasks/) and prior families in their family modules
(bufferanytime/families/): tables keyed by kind elsewhere are the exception, and stay at most two (today the
description of each prediction sub-command and the default model of each kind)."""

from __future__ import annotations

import ast
from pathlib import Path

from bufferanytime.tasks import list_tasks

SRC = Path(__file__).resolve().parents[2] / "src" / "bufferanytime"
ALLOWED = {SRC / "tasks"}  # what a buffer is
MAX_TABLES = 2
TASK_OBJECTS = {"DEPTH", "NORMAL", "METRIC_DEPTH"}


def _is_kind_key(node: ast.expr, names: set[str]) -> bool:
    """A kind's name as a key: the string itself, or ``DEPTH.name``, ``something.task.name``."""
    if isinstance(node, ast.Constant):
        return node.value in names
    if isinstance(node, ast.Attribute) and node.attr == "name":
        base = node.value
        return (isinstance(base, ast.Name) and base.id in TASK_OBJECTS) or (
            isinstance(base, ast.Attribute) and base.attr == "task")
    return False


def _keyed_by_kind(value: ast.expr, names: set[str]) -> bool:
    """A dict literal whose keys are all kinds (a table mixing kinds with other keys, like the command list, is
    keyed by something else), or a comprehension over kinds (``{kind: ... for kind in ...}``)."""
    if isinstance(value, ast.Dict):
        return bool(value.keys) and all(key is not None and _is_kind_key(key, names) for key in value.keys)
    if isinstance(value, ast.DictComp):
        return any(isinstance(g.target, ast.Name) and g.target.id == "kind" for g in value.generators)
    return False


def kind_keyed_tables(source: str, names: set[str]) -> set[str]:
    """Module-level tables of ``source`` keyed by kind: dict literals and comprehensions (:func:`_keyed_by_kind`)
    and ``X.register(KIND, ...)`` calls (also inside module-level loops and conditions)."""
    found = set()
    tree = ast.parse(source)
    body = [node for top in tree.body for node in ast.walk(top)
            if not isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    for node in body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            if _keyed_by_kind(node.value, names):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found |= {ast.unparse(t) for t in targets}
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register"
                and node.args and _is_kind_key(node.args[0], names)):
            found.add(ast.unparse(node.func.value))
    return found


def test_at_most_two_tables_keyed_by_kind_remain_outside_the_tasks():
    names = set(list_tasks(every=True))
    tables = []
    for path in sorted(SRC.rglob("*.py")):
        if any(folder in path.parents for folder in ALLOWED):
            continue
        tables += [f"{path.relative_to(SRC)}:{name}" for name in kind_keyed_tables(path.read_text(), names)]
    assert len(tables) <= MAX_TABLES, tables


def test_the_rule_sees_each_form_of_table():
    names = {"depth", "normal"}
    source = '''
from x import DEPTH, Registry
LITERAL = {"depth": 1, "normal": 2}
BY_TASK = {DEPTH.name: 1}
DEFAULTS: dict = {kind: "x" for kind in KINDS}
MIXED = {"depth": 1, "demo": 2}
REG = Registry("thing")
REG.register("normal", 1)
for _o in (1, 2):
    OBJ.register(_o.task.name, _o)
NOT_KEYED = {"x": "depth"}
def inside():
    LOCAL = {"depth": 1}
'''
    assert kind_keyed_tables(source, names) == {"LITERAL", "BY_TASK", "DEFAULTS", "REG", "OBJ"}
