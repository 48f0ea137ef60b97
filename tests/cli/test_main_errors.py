"""Top-level failures of the ``bufferanytime`` command: full disk and friends, bad option values (NaN, inf, <= 0),
an output under a file, a device this machine lacks. Each is one ``error:`` line, exit 2, and nothing written."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bufferanytime.cli.args import check_device, finite_float, non_negative_float, positive_float
from bufferanytime.cli.main import main
from bufferanytime.errors import InputError
from tests.helpers import files_under, run_main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded"),
     (errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")],
)
def test_full_disk_while_writing_is_one_line_and_leaves_nothing(code, reason, tmp_path, capsys, monkeypatch):
    """``synth`` with the disk filling up while it writes an array: no traceback, no partial video folder."""
    import bufferanytime.synthetic.dataset as dataset

    def full(file, array):
        with open(file, "wb") as f:
            f.write(b"partial")
        raise OSError(code, "simulated", str(file))

    monkeypatch.setattr(dataset.np, "save", full)
    out = tmp_path / "synth"
    status, err = run_main(capsys, "synth", "-o", str(out), "--frames", "2", "--size", "8x8", "-q")
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"error: {out}/.seq_000000.tmp-") and err[0].endswith(f"depth.npy: {reason}")
    assert files_under(out) == []


def test_full_disk_on_an_open_file_names_the_output(tmp_path, capsys, monkeypatch):
    """A write that fails on an already open file has no path in its OSError: the command's output is named."""
    import bufferanytime.synthetic.dataset as dataset

    def full(file, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dataset.np, "save", full)
    out = tmp_path / "synth"
    status, err = run_main(capsys, "synth", "-o", str(out), "--frames", "2", "--size", "8x8", "-q")
    assert status == 2 and err == [f"error: {out}: no space left on device"]
    assert files_under(out) == []


def test_other_os_errors_are_not_hidden(tmp_path, monkeypatch):
    """An OSError that is not the environment's fault (here EIO) stays a traceback: it is a bug to report."""
    import bufferanytime.synthetic.dataset as dataset

    def broken(file, array):
        raise OSError(errno.EIO, "simulated", str(file))

    monkeypatch.setattr(dataset.np, "save", broken)
    with pytest.raises(OSError, match="simulated"):
        main(["synth", "-o", str(tmp_path / "synth"), "--frames", "2", "--size", "8x8"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-2"])
def test_synth_fps_must_be_positive_and_finite(value, tmp_path, capsys):
    out = tmp_path / "synth"
    code, err = run_main(capsys, "synth", "-o", str(out), "--frames", "2", "--size", "8x8", f"--fps={value}")
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: argument --fps: must be ")
    assert err[0].endswith("(see `bufferanytime synth --help`)")
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--flicker", "nan"), ("--exposure", "inf"), ("--noise", "nan"),
                                               ("--noise", "-0.5")])
def test_synth_float_options_refuse_non_finite(option, value, tmp_path, capsys):
    out = tmp_path / "synth"
    code, err = run_main(capsys, "synth", "-o", str(out), "--frames", "2", "--size", "8x8", f"{option}={value}")
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: argument {option}: must be ")
    assert not out.exists()


def test_synth_output_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    code, err = run_main(capsys, "synth", "-o", str(blocker / "sub"), "--frames", "2", "--size", "8x8", "-q")
    assert code == 2
    assert err == [f"error: {blocker / 'sub'}: cannot create the output directory ({blocker} is not a directory)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"] and blocker.read_text() == "mine"


@pytest.mark.parametrize(("option", "value"), [("--lr", "nan"), ("--lr", "0"), ("--steps", "0"),
                                               ("--batch-size", "-1"), ("--threads", "0")])
def test_train_prior_numeric_options(option, value, tmp_path, capsys):
    out = tmp_path / "prior"
    code, err = run_main(capsys, "train-prior", "depth", "--data", str(tmp_path), "-o", str(out), f"{option}={value}")
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: argument {option}: must be ")
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--iters", "0"), ("--raft-min-side", "-1"), ("--stride", "0"),
                                               ("--max-frames", "0"), ("--iters", "nan"), ("--stride", "1.5")])
def test_flow_numeric_options(option, value, tmp_path, capsys):
    out = tmp_path / "flow"
    code, err = run_main(capsys, "flow", str(tmp_path), "-o", str(out), f"{option}={value}")
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: argument {option}: must be ")
    assert not out.exists()


def test_flow_missing_device_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    frames = tmp_path / "clip"
    frames.mkdir()
    for k in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * k, np.uint8)).save(frames / f"{k}.png")
    out = tmp_path / "flow"
    code, err = run_main(capsys, "flow", str(frames), "-o", str(out), "--device", "cuda")
    assert code == 2 and err == ["error: --device cuda: no CUDA device on this machine (use --device cpu)"]
    assert not out.exists()


def test_float_types():
    assert finite_float("-1.5") == -1.5 and positive_float("2") == 2.0 and non_negative_float("0") == 0.0
    for text in ("nan", "inf", "-inf", "abc"):
        with pytest.raises(argparse.ArgumentTypeError):
            finite_float(text)
    for text, check in (("0", positive_float), ("-1e-9", non_negative_float), ("nan", positive_float)):
        with pytest.raises(argparse.ArgumentTypeError):
            check(text)


def test_check_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1" and check_device("auto") == "auto" and check_device("cpu") == "cpu"
    with pytest.raises(InputError, match="has 2 CUDA device"):
        check_device("cuda:2")
    for bad in ("tpu", "cpu:1", "cuda:x"):
        with pytest.raises(InputError, match="expected auto, cpu|only cuda takes"):
            check_device(bad)


def test_sigterm_cleans_up_every_command_like_ctrl_c(tmp_path):
    """SIGTERM is handled in cli.main for all commands: `synth` killed mid-video leaves no hidden temporary."""
    out = tmp_path / "synth"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen([sys.executable, "-m", "bufferanytime", "synth", "-o", str(out), "--videos", "50",
                                "--frames", "12", "--size", "120x160", "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".") for p in (out.iterdir() if out.is_dir() else ())):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "synth never started writing"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in err
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no hidden temporaries left


def test_the_program_exits_with_the_command_s_code_and_its_outputs_whole(tmp_path, small_video):
    """The installed program and ``python -m bufferanytime`` go through ``entry``, which skips the collector's
    passes at exit: a run still leaves every output complete and readable, and a bad input is still one line and
    exit 2."""
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["bufferanytime"] == "bufferanytime.cli.main:entry"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    program = [sys.executable, "-m", "bufferanytime", "depth"]
    done = subprocess.run([*program, str(small_video), "-o", str(tmp_path / "out"), "-q"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / "clip"
    assert np.load(folder / "depth.npz")["disparity"].shape[0] == 6
    from bufferanytime.io.video import open_video

    assert len(list(open_video(folder / "depth_vis.mp4"))) == 6
    assert '"model_s"' in (folder / "depth.meta.json").read_text()
    bad = subprocess.run([*program, str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "bad")], capture_output=True,
                         text=True, env=env, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and len(bad.stderr.splitlines()) == 1
    assert not (tmp_path / "bad").exists()
