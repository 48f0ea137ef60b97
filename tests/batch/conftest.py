"""Batch runs: tiny clips, and one small Ray instance on this machine for the module (started and stopped here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bufferanytime.io.video import write_video
from tests.helpers import moving_pattern

# The head process: a Ray instance with 2 CPUs that lives until its standard input closes.
HEAD = """
import sys, ray
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""
START_TIMEOUT_S = 300
# The Ray instance of the tests requires Ray's token (~/.ray/auth_token, as a local instance does by default);
# Ray reads this when it is imported, so it is set before any test imports it.
os.environ.setdefault("RAY_AUTH_MODE", "token")


def make_clips(folder: Path, count: int, frames: int = 6, long: dict[int, int] | None = None) -> list[Path]:
    """``count`` tiny clips ``clip00.mp4``..., each a different texture; ``long`` maps an index to its frames."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"clip{i:02d}.mp4"
        write_video(path, moving_pattern(frames=(long or {}).get(i, frames), seed=i), fps=10)
        paths.append(path)
    return paths


def events(path: Path) -> list[dict]:
    """The workers' start/commit lines (see bufferanytime.batch.work.EVENTS_ENV)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def rows(out: Path, kind: str = "depth") -> dict[str, dict]:
    """The run manifest's rows, by input file name."""
    lines = (out / f"{kind}_manifest.jsonl").read_text().splitlines()
    return {Path(r["input"]).name: r for r in map(json.loads, lines)}


def staging_left(out: Path) -> list[str]:
    return [p.name for p in out.rglob(".*")] if out.exists() else []


@pytest.fixture(scope="session")
def ray_address():
    """The GCS address of a 2-CPU Ray instance on this machine, stopped when the tests end. It requires Ray's
    token (RAY_AUTH_MODE=token, the token in ~/.ray), as do the drivers of the tests and their workers."""
    pytest.importorskip("ray", reason="the [ray] extra is part of `make test`")
    head = subprocess.Popen([sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray instance did not start"
        yield address
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


def wait_for(condition, timeout: float = START_TIMEOUT_S, process: subprocess.Popen | None = None) -> None:
    """Poll ``condition`` until it holds; the bound only stops a hang (no duration is asserted)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        assert process is None or process.poll() is None, "the run ended early"
        time.sleep(0.05)
