"""A batch that cannot start is refused with one ``error:`` line and exit 2, before any input is run: an
unreachable ``--address``, ``--engine ray`` without Ray installed, a manifest without a path column, resources
no node has, a Ray option without ``--engine ray``. Nothing is written. ``--help`` and the local engine never
import Ray."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.batch.conftest import make_clips
from tests.helpers import run_main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _depth(capsys, tmp_path, *extra: str) -> tuple[int, list[str]]:
    clip = make_clips(tmp_path / "in", 1)[0]
    return run_main(capsys, "depth", str(clip), "-o", str(tmp_path / "out"), "-q", *extra)


def test_unreachable_address(tmp_path, capsys):
    pytest.importorskip("ray")
    port = _free_port()
    code, err = _depth(capsys, tmp_path, "--engine", "ray", "--address", f"127.0.0.1:{port}")
    assert code == 2
    assert err == [f"error: --address 127.0.0.1:{port}: no Ray cluster answers there (connection refused)"]
    assert not (tmp_path / "out").exists()


def test_ray_engine_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    code, err = _depth(capsys, tmp_path, "--engine", "ray")
    assert code == 2
    assert err == ["error: --engine ray needs Ray, which is not installed: pip install 'bufferanytime[ray]'"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_manifest_without_a_path_column(tmp_path, capsys, suffix):
    manifest = tmp_path / f"list{suffix}"
    if suffix == ".csv":
        manifest.write_text("name,size\nclip00.mp4,1\n")
    else:
        manifest.write_text(json.dumps({"name": "clip00.mp4", "size": 1}) + "\n")
    code, err = run_main(capsys, "depth", str(manifest), "-o", str(tmp_path / "out"), "--engine", "local")
    assert code == 2
    assert err == [f"error: {manifest}: no path column in the manifest (columns: 'name', 'size'); name it one of "
                   "path, paths, uri, video, input, or give a single column"]
    assert not (tmp_path / "out").exists()


def test_resources_no_node_has(ray_address, tmp_path, capsys):
    code, err = _depth(capsys, tmp_path, "--engine", "ray", "--address", ray_address, "--cpus-per-worker", "64")
    assert code == 2
    assert err == ["error: --cpus-per-worker 64 --gpus-per-worker 0: no node of the Ray cluster has that much "
                   "(largest: 2 CPUs, 0 GPUs)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("options", "line"), [
    (["--num-workers", "2"], "error: --num-workers needs --engine (ray, or local for --max-retries)"),
    (["--engine", "local", "--address", "auto"],
     "error: --address needs --engine ray (the local engine runs in this process)"),
])
def test_ray_options_without_the_ray_engine(tmp_path, capsys, options, line):
    code, err = _depth(capsys, tmp_path, *options)
    assert code == 2 and err == [line]
    assert not (tmp_path / "out").exists()


PROBE = """
import json, sys
from bufferanytime.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "ray": "ray" in sys.modules}))
"""


@pytest.mark.parametrize("local_run", [False, True])
def test_help_and_the_local_engine_never_import_ray(tmp_path, local_run):
    clip = make_clips(tmp_path / "in", 1)[0]
    argv = ["depth", str(clip), "-o", str(tmp_path / "out"), "-q", "--engine", "local"] if local_run else \
        ["depth", "--help"]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "ray": False}, done.stderr
