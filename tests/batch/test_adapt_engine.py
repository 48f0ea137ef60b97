"""``bufferanytime adapt --engine local|ray``: each input is opened, hashed, decoded and resized on a Ray worker,
training runs in the command's process, and the adapted model is the same bytes as with the local engine. An
engine that cannot start is refused in one ``error:`` line (exit 2) before anything is written."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bufferanytime.adapt import guard, run
from bufferanytime.adapt.record import RECORD_NAME
from bufferanytime.synthetic import render_video, write_video_dir
from tests.helpers import run_main

STEPS = "3steps"


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> list[Path]:
    """Three synthetic videos of 16 frames with flicker: an mp4 and two frame folders."""
    root = tmp_path_factory.mktemp("adapt-engine")
    out = []
    for seed in range(3):
        folder = write_video_dir(render_video(100 + seed, 16, (48, 64), flicker=0.3), root / f"seq_{seed}")
        out.append(folder / "rgb.mp4" if seed == 0 else folder / "rgb")
    return out


def _adapt(capsys, monkeypatch, inputs: list[Path], out: Path, *extra: str) -> dict:
    """A 3-step adaptation whose guard rails pass (so that trained weights, not the starting ones, are written)."""
    figures = itertools.chain([guard.Figures(1.0, 0.01)], itertools.repeat(guard.Figures(0.5, 0.01)))  # before, after
    monkeypatch.setattr(run, "figures", lambda *args: next(figures))
    monkeypatch.setattr(run, "MIN_IMPROVEMENT", -1.0)  # every validation counts as the best so far
    code, err = run_main(capsys, "adapt", "depth", *map(str, inputs), "-o", str(out), "--budget", STEPS, "-q",
                         *extra)
    assert code == 0 and err == []
    return json.loads((out / RECORD_NAME).read_text())


@pytest.mark.slow
def test_ray_reads_the_footage_and_the_model_is_the_same(ray_address, footage, tmp_path, capsys, monkeypatch,
                                                         one_torch_thread):
    local = _adapt(capsys, monkeypatch, footage, tmp_path / "local", "--engine", "local")
    ray = _adapt(capsys, monkeypatch, footage, tmp_path / "ray", "--engine", "ray", "--address", ray_address,
                 "--num-workers", "2")
    assert local["engine"] == {"name": "local"}
    assert ray["engine"]["name"] == "ray" and ray["engine"]["workers"] == 2
    assert local["result"] == ray["result"] == "adapted"
    assert local["weights_sha256"] == ray["weights_sha256"] != local["base_model"]["weights_sha256"]
    assert local["inputs"] == ray["inputs"] and local["split"] == ray["split"]
    assert [p["loss"] for p in local["validation"]["curve"]] == [p["loss"] for p in ray["validation"]["curve"]]
    weights = [load_file(tmp_path / name / "model.safetensors") for name in ("local", "ray")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_a_bad_input_read_on_ray_fails_in_one_line(ray_address, footage, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 64)
    code, err = run_main(capsys, "adapt", "depth", str(footage[0]), str(bad), "-o", str(tmp_path / "out"),
                         "--budget", STEPS, "-q", "--engine", "ray", "--address", ray_address)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {bad}")
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _refused(capsys, tmp_path, footage, *extra: str) -> list[str]:
    code, err = run_main(capsys, "adapt", "depth", *map(str, footage), "-o", str(tmp_path / "out"), "-q", *extra)
    assert code == 2 and not (tmp_path / "out").exists()
    return err


def test_unreachable_address(footage, tmp_path, capsys):
    pytest.importorskip("ray")
    port = _free_port()
    err = _refused(capsys, tmp_path, footage, "--engine", "ray", "--address", f"127.0.0.1:{port}")
    assert err == [f"error: --address 127.0.0.1:{port}: no Ray cluster answers there (connection refused)"]


def test_without_ray_installed(footage, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    err = _refused(capsys, tmp_path, footage, "--engine", "ray")
    assert err == ["error: --engine ray needs Ray, which is not installed: pip install 'bufferanytime[ray]'"]


def test_resources_no_node_has(ray_address, footage, tmp_path, capsys):
    err = _refused(capsys, tmp_path, footage, "--engine", "ray", "--address", ray_address, "--cpus-per-worker", "64")
    assert err == ["error: --cpus-per-worker 64: no node of the Ray cluster has that much (largest: 2 CPUs)"]


@pytest.mark.parametrize("options", [["--num-workers", "2"], ["--engine", "local", "--address", "auto"]])
def test_ray_options_without_the_ray_engine(footage, tmp_path, capsys, options):
    err = _refused(capsys, tmp_path, footage, *options)
    flag = options[0] if options[0] != "--engine" else options[2]
    assert err == [f"error: {flag} needs --engine ray (the local engine reads the footage in this process)"]


def test_the_work_of_a_ray_worker_imports_no_torch():
    """A worker opens, hashes, decodes and resizes an input with the modules of the footage alone: no torch to
    import (seconds per worker)."""
    code = ("import sys, bufferanytime.adapt.footage, bufferanytime.adapt.engines; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
