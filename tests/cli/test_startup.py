"""Start-up: a command imports only what it uses. Each case runs in a fresh interpreter and
reports which heavy libraries ended up in ``sys.modules``; timings are in docs/benchmarks.md, not asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bufferanytime.io.video import write_video
from tests.helpers import moving_pattern

HEAVY = ("torch", "transformers", "diffusers")
PROBE = """
import json, sys
from bufferanytime.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _loaded(*argv: str) -> tuple[int, set[str]]:
    """Exit code and the heavy libraries imported by ``bufferanytime ARGV`` in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["code"], set(report["loaded"])


@pytest.mark.parametrize("command", ["depth", "normal"])
def test_help_imports_no_model_library_and_not_torch(command):
    code, loaded = _loaded(command, "--help")
    assert code == 0
    assert loaded == set(), loaded


@pytest.mark.parametrize("bad", [["missing.mp4"], ["clip.mp4", "--max-res", "5"], ["clip.mp4", "--save", "nope"]])
def test_bad_input_is_refused_before_any_model_library_is_imported(tmp_path, bad):
    """A missing input, a bad size and a bad format: exit 2 before torch, transformers or diffusers load."""
    write_video(tmp_path / "clip.mp4", moving_pattern(), fps=10)
    argv = [str(tmp_path / arg) if arg.endswith(".mp4") else arg for arg in bad]
    code, loaded = _loaded("depth", *argv, "-o", str(tmp_path / "out"))
    assert code == 2
    assert loaded == set(), loaded
    assert not (tmp_path / "out").exists()


def test_depth_on_the_embedded_model_never_imports_diffusers(tmp_path):
    write_video(tmp_path / "clip.mp4", moving_pattern(frames=4), fps=10)
    code, loaded = _loaded("depth", str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "out"), "-q")
    assert code == 0
    assert (tmp_path / "out" / "clip" / "depth.npz").is_file()
    assert "diffusers" not in loaded
    assert {"torch", "transformers"} <= loaded  # the probe sees imports: the depth prior is a transformers model
