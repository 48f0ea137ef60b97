"""The product speaks of what it does, never of how it was made: no tracked file (source, tests, scripts,
benchmarks, documents, and the JSON records shipped inside the wheel) mentions work sessions, issue numbers or
tags, agents, helpers as workers, or the machine's load average during some run.

"helper" as a piece of code (``tests/helpers.py``, "a helper function") is fine; "session" as a browser's or
pytest's session is fine; only the phrases below are refused.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ISSUE_TAGS = r"trust|house|speed|depth|stream|embedded|geometry|long-video|flow\+losses|front-door"
CHATTER = re.compile("|".join([
    r"\bsessions? \d",                                    # "session 6", "sessions 6-10"
    r"\b(?:this|next|previous|earlier|later|that) session\b",
    r"\bissues? ?#\d", r"\bissue \d", r"\bissue \[",      # "issue #19", "issue 14", "issue [stream]"
    rf"\[(?:{ISSUE_TAGS})\](?!\()",                       # an issue's tag, "[trust]" (not a Markdown link)
    r"\bthe issue(?:'s)?\b",                              # "the issue's target"
    r"(?<![-_])\bagents?\b",                              # not "User-Agent", "user_agent"
    r"\bload average\b", r"\bload (?:of )?\d",            # "load 10-16"
    r"\b(?:other|another|five|four|the other) helpers?\b", r"\bhelpers? (?:sessions?|agents?)\b",
    r"\btrust-\d",
]), re.IGNORECASE)
SKIP = {"tests/test_chatter.py"}  # this file names the patterns it refuses


def tracked_text_files() -> list[Path]:
    """Every file git tracks that reads as UTF-8 text (binary files such as weights and images are left out)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / n for n in names.decode().split("\0") if n and n not in SKIP and (REPO / n).is_file()]


def chatter_lines(path: Path) -> list[str]:
    """``path:line: text`` for each line of ``path`` with process chatter."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return []
    if "\0" in text:
        return []
    rel = path.relative_to(REPO)
    return [f"{rel}:{i}: {line.strip()[:160]}" for i, line in enumerate(text.splitlines(), 1) if CHATTER.search(line)]


def test_no_tracked_file_talks_about_how_it_was_made():
    files = tracked_text_files()
    assert any(f.suffix == ".json" and "weights" in f.parts for f in files), "the shipped JSON records are scanned"
    found = [hit for path in files for hit in chatter_lines(path)]
    assert not found, f"{len(found)} line(s) of process chatter:\n" + "\n".join(found)


def test_the_patterns_catch_chatter_and_spare_the_product_words():
    chatter = ["measured in session 6", "sessions 6-10", "levers for the next session", "see issue #19",
               "(issue [stream])", "the [trust] and [house] fixes", "the issue's own table", "shared by five agents",
               "load average: 14.10", "on a shared machine (load 10-16)", "another helper edits it", "trust-2"]
    product = ["from tests.helpers import run_main", "a helper for every writer", "one browser session",
               "scope=\"session\"", "the User-Agent header", "self.user_agents.append(agent_name)",
               "[depth](docs/outputs.md)", "pip install '.[onnx]'", "the model's load time", "load_model(kind)"]
    assert [c for c in chatter if not CHATTER.search(c)] == []
    assert [p for p in product if CHATTER.search(p)] == []
