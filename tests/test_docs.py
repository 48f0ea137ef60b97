"""The documents hold: their examples run as written, the CLI reference is the parsers' own help, the README is a
front door, links lead somewhere, and every test a guarantee names exists.

Every ```bash and ```python block in README.md and docs/ is marked on the line before it: ``<!-- runnable -->``
(run here, in a fresh folder, the blocks of one document in order) or ``<!-- not run: REASON -->`` (installs,
cameras, downloads, hours of work). A runnable bash block holds only ``bufferanytime`` commands, run in process.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import run_main

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# written by hand (the reports under docs/ are written by `bufferanytime eval`, without their slice images)
GUIDES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "docs" / "example_report" / "README.md"]
MARK = re.compile(r"^<!-- (runnable|not run: .+) -->$")
FENCE = re.compile(r"^```(\w*)\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
GUARANTEE_TEST = re.compile(r"`([\w/]+\.py)::(\w+)`")
README_MAX_LINES = 200
README_FIRST_LINES = 60


@dataclass
class Block:
    """One fenced example: where it is, its language, its mark (None when unmarked) and its text."""

    path: Path
    line: int
    lang: str
    mark: str | None
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The ```bash and ```python blocks of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence.group(1) in ("bash", "python"):
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            mark = MARK.match(previous.strip())
            found.append(Block(path, i + 1, fence.group(1), mark.group(1) if mark else None,
                               "\n".join(lines[i + 1:end])))
        i = end + 1
    return found


def commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped."""
    joined = code.replace("\\\n", " ")
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def runnable_docs() -> list[Path]:
    return [path for path in DOCS if any(b.mark == "runnable" for b in blocks(path))]


def test_every_example_is_marked_runnable_or_says_why_not():
    unmarked = [b.where for path in DOCS for b in blocks(path) if b.mark is None]
    assert not unmarked, "examples without <!-- runnable --> or <!-- not run: REASON -->: " + ", ".join(unmarked)


@pytest.mark.parametrize("doc", runnable_docs(), ids=lambda p: str(p.relative_to(REPO)))
def test_examples_run_as_written(doc, tmp_path, monkeypatch, capsys, one_torch_thread):
    monkeypatch.chdir(tmp_path)
    for block in (b for b in blocks(doc) if b.mark == "runnable"):
        if block.lang == "python":
            exec(compile(block.code, block.where, "exec"), {"__name__": "__docs__"})  # noqa: S102
            continue
        for argv in commands(block.code):
            assert argv[0] == "bufferanytime", f"{block.where}: a runnable bash block runs bufferanytime only: {argv}"
            code, err = run_main(capsys, *argv[1:])
            assert code == 0, f"{block.where}: `{shlex.join(argv)}` exited {code}: {err[-3:]}"


def test_cli_reference_is_generated_from_the_parsers(monkeypatch):
    """docs/cli.md is what scripts/gen_cli_reference.py writes now: change an option, rerun the script."""
    monkeypatch.setenv("COLUMNS", "80")  # restored after the test; the script sets its own width
    spec = importlib.util.spec_from_file_location("gen_cli_reference", REPO / "scripts" / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render()
    assert (REPO / "docs" / "cli.md").read_text(encoding="utf-8") == expected, (
        "docs/cli.md is out of date: run .venv/bin/python scripts/gen_cli_reference.py")


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    first = "\n".join(lines[:README_FIRST_LINES])
    assert len(lines) <= README_MAX_LINES
    assert "pip install" in first, "install within the first lines"
    assert re.search(r"^bufferanytime \w+ ", first, re.M), "one command-line run within the first lines"
    assert "load_model(" in first, "one Python call within the first lines"


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    heads = [m.group(1) for m in re.finditer(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)]
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_links_between_documents_lead_somewhere():
    broken = []
    for path in GUIDES:
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                broken.append(f"{path.relative_to(REPO)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_test_named_by_a_guarantee_exists():
    text = (REPO / "docs" / "guarantees.md").read_text(encoding="utf-8")
    named = GUARANTEE_TEST.findall(text)
    assert named
    missing = [f"{file}::{name}" for file, name in named
               if not (REPO / "tests" / file).is_file()
               or not re.search(rf"^\s*def {name}\(", (REPO / "tests" / file).read_text(encoding="utf-8"), re.M)]
    assert not missing, "docs/guarantees.md names tests that do not exist: " + ", ".join(missing)
