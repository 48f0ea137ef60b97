"""Progress as a user sees it: `export onnx` says each long step as it starts (and -q hides it), and off a terminal
(stderr to a file or a pipe) nested progress bars never write cursor-up escapes (``ESC[A``) into the log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bufferanytime.synthetic import render_video, write_video_dir
from tests.helpers import files_under, moving_pattern, run_main

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


def test_nested_bars_write_no_cursor_movement_into_a_log(tiny_depth_prior, tmp_path, capsys):
    """eval draws a bar per sequence's frames under its bar of sequences: with stderr captured (not a terminal) the
    bars are still drawn, without ``ESC[A``."""
    data = tmp_path / "data"
    for seed in range(2):
        write_video_dir(render_video(seed, 3, (16, 16)), data / f"seq_{seed:06d}")
    report = tmp_path / "report"
    code, err = run_main(capsys, "eval", "depth", "--dataset", "synthetic", "--root", str(data), "--model",
                         str(tiny_depth_prior), "--flow", "gt", "--device", "cpu", "--max-res", "28", "-o", str(report))
    log = "\n".join(err)
    assert code == 0, log
    assert "sequences" in log and "frame" in log  # the bars are drawn
    assert CURSOR_UP not in log
    assert (report / "report.md").is_file()


def test_depth_run_logged_to_a_file_has_no_cursor_movement(tiny_depth_prior, tmp_path):
    """The command line itself, its stderr a file, two inputs (a bar each)."""
    from bufferanytime.io.video import write_video

    for name in ("a", "b"):
        write_video(tmp_path / f"{name}.mp4", moving_pattern(frames=4), fps=10)
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "bufferanytime", "depth", str(tmp_path / "a.mp4"),
                               str(tmp_path / "b.mp4"), "--model", str(tiny_depth_prior), "--max-res", "28",
                               "--device", "cpu", "--save", "npz", "-o", str(tmp_path / "out")],
                              stderr=stderr, stdout=subprocess.DEVNULL, timeout=600, check=False)
    text = log.read_text()
    assert done.returncode == 0, text
    assert CURSOR_UP not in text and "frame" in text
    assert sorted(p.name for p in files_under(tmp_path / "out")) == ["depth.meta.json", "depth.meta.json",
                                                                     "depth.npz", "depth.npz"]
