"""Progress as a user sees it: `export onnx` says each long step as it starts (and -q hides it), and off a terminal
(stderr to a file or a pipe) nested progress bars never write cursor-up escapes (``ESC[A``) into the log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bufferanytime.synthetic import render_video, write_video_dir
from tests.helpers import files_under

CURSOR_UP = "\x1b[A"


@pytest.fixture()
def fast_export(monkeypatch):
    """torch.onnx.export and the ONNX Runtime check replaced by stand-ins: the steps, not the exporter, are tested."""
    pytest.importorskip("onnxruntime", reason="the [onnx] extra is part of `make test`")
    from bufferanytime.export import onnx

    monkeypatch.setattr(torch.onnx, "export", lambda graph, args, path, **kwargs: Path(path).write_bytes(b"onnx"))
    monkeypatch.setattr(onnx, "_check", lambda graph, path, name, example: {"relative": 0.0})


def _export_lines(capsys, tmp_path: Path, *options: str) -> tuple[int, list[str], list[str]]:
    from bufferanytime.cli.main import main

    code = main(["export", "onnx", "tiny-synthetic", "--kind", "depth", "--size", "28x28", "--frames", "2",
                 "-o", str(tmp_path / "out"), *options])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def test_export_progress_lines_in_order_and_hidden_by_quiet(fast_export, tmp_path, capsys):
    code, out, err = _export_lines(capsys, tmp_path)
    assert code == 0 and err == []
    assert out == ["loading the depth model tiny-synthetic ...",
                   "exporting depth_video.onnx (28x28, 2 frames traced) ...",
                   "checking depth_video.onnx with ONNX Runtime against PyTorch ...",
                   "exporting depth_prior.onnx (28x28, 2 frames traced) ...",
                   "checking depth_prior.onnx with ONNX Runtime against PyTorch ...",
                   "wrote " + str(tmp_path / "out") + "/ (depth_video.onnx, depth_prior.onnx, depth.onnx.json; "
                   "ONNX Runtime vs PyTorch max |diff| 0.0e+00 of the range)"]
    code, out, err = _export_lines(capsys, tmp_path, "-q")
    assert code == 0 and out == [] and err == []
    assert {p.name for p in files_under(tmp_path / "out")} == {"depth_video.onnx", "depth_prior.onnx",
                                                               "depth.onnx.json"}


def test_nested_bars_write_no_cursor_movement_into_a_log_file(tiny_depth_prior, tmp_path):
    """The command line, its stderr a file: eval draws a bar per sequence's frames under its bar of sequences, and
    the bars are still drawn, without ``ESC[A``."""
    data = tmp_path / "data"
    for seed in range(2):
        write_video_dir(render_video(seed, 3, (16, 16)), data / f"seq_{seed:06d}")
    report, log = tmp_path / "report", tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "bufferanytime", "eval", "depth", "--dataset", "synthetic",
                               "--root", str(data), "--model", str(tiny_depth_prior), "--flow", "gt", "--device",
                               "cpu", "--max-res", "28", "-o", str(report)],
                              stderr=stderr, stdout=subprocess.DEVNULL, timeout=600, check=False)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "sequences" in text and "seq_000001" in text  # the bars are drawn
    assert CURSOR_UP not in text
    assert (report / "report.md").is_file()
