"""The benchmarks' memory figures are the measured process's own peak, not its parent's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peak_memory import own_peak_kb, run_python  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")

MB = 1024  # kB


def test_a_small_child_of_a_large_parent_reports_its_own_peak():
    """ru_maxrss would report at least the parent's 300 MB here (the image exec replaced); the helper reports the
    child's 50 MB and its interpreter."""
    parent = b"\x01" * 300_000_000  # touched pages: resident in this process
    assert own_peak_kb() > 300 * MB
    done, peak = run_python(["-c", "import sys; block = b'1' * 50_000_000; sys.exit(3)"])
    assert done.returncode == 3
    assert 50 * MB < peak < 200 * MB
    del parent


def test_the_peak_is_reported_when_the_child_fails_and_its_output_is_passed_on():
    done, peak = run_python(["-c", "print('out'); raise ValueError('boom')"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stdout == "out\n"
    assert "ValueError: boom" in done.stderr
    assert 0 < peak < 200 * MB


def test_modules_run_with_their_arguments():
    done, _ = run_python(["-m", "json.tool", "--compact"], input='{"a": [1, 2]}', capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, '{"a":[1,2]}\n')
