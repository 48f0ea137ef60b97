"""Write ``docs/cli.md``, the command-line reference, from the command's own argparse parsers.

The reference is each command's ``--help``, so it cannot say anything the parsers do not; ``tests/test_docs.py``
regenerates it and fails when the file differs. After changing an option, run:

    .venv/bin/python scripts/gen_cli_reference.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
WIDTH = "110"  # help is wrapped at a fixed width, whatever the terminal

HEADER = """# Command-line reference

Generated from the parsers by `scripts/gen_cli_reference.py`: do not edit by hand. Each section is the
command's `--help`. Exit codes, for every command: 0 success, 1 some inputs failed (a batch), 2 bad input, a bad
option or an environment failure (one `error: ...` line on stderr), 130 interrupted (Ctrl-C or SIGTERM).
"""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _sections(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(``prog``, help text) of ``parser`` and of every sub-command under it, depth first."""
    sections = [(parser.prog, parser.format_help())]
    for child in _subcommands(parser).values():
        sections += _sections(child)
    return sections


def render() -> str:
    """The whole reference as Markdown."""
    os.environ["COLUMNS"] = WIDTH
    from bufferanytime.cli.main import build_parser

    lines = [HEADER]
    sections = _sections(build_parser(None))
    lines += [f"- [`{prog}`](#{prog.replace(' ', '-')})" for prog, _ in sections]
    for prog, text in sections:
        lines += ["", f"## {prog}", "", "```text", text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        same = OUTPUT.is_file() and OUTPUT.read_text() == text
        print(f"{OUTPUT} is {'up to date' if same else 'out of date: run scripts/gen_cli_reference.py'}")
        return 0 if same else 1
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
