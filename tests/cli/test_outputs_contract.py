"""No command deletes what it did not write: outputs side by side, input folders untouched, temporaries cleaned.

Every case asserts the exit code, the one-line message and what is left on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bufferanytime.cli.main import main
from bufferanytime.io.video import write_video
from tests.helpers import moving_pattern

REPO = Path(__file__).resolve().parents[2]
FAST = ("--max-res", "64")
DEPTH_FILES = ["depth.meta.json", "depth.npz", "depth_vis.mp4"]


def _snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder`` (hidden ones included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _frames(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True)
    for i, frame in enumerate(moving_pattern(frames=count)):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    return folder


def _one_error(capsys, expect: str) -> None:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err


def test_depth_then_normal_keep_each_other_and_the_users_files(tiny_depth_prior, tiny_normal_prior, small_video,
                                                               tmp_path, capsys):
    out = tmp_path / "out"
    (out / "clip").mkdir(parents=True)
    (out / "clip/my_notes.txt").write_text("mine")
    (out / "clip/depth_png16").mkdir()
    (out / "clip/depth_png16/README").write_text("also mine")
    assert main(["depth", str(small_video), "--model", str(tiny_depth_prior), *FAST, "-o", str(out), "-q"]) == 0
    first_depth = _snapshot(out / "clip")
    assert main(["normal", str(small_video), "--model", str(tiny_normal_prior), *FAST, "--save", "npz,png16",
                 "-o", str(out), "-q"]) == 0
    files = sorted(p.name for p in (out / "clip").iterdir())
    assert files == sorted([*DEPTH_FILES, "depth_png16", "my_notes.txt", "normal.meta.json", "normal.npz",
                            "normal_png16"])
    after = _snapshot(out / "clip")
    assert {k: after[k] for k in first_depth} == first_depth  # depth outputs and the user's files untouched
    assert len(list((out / "clip/normal_png16").glob("*.png"))) == 6

    # a second depth run with png16 replaces its own files only; the user's file in depth_png16/ stays
    assert main(["depth", str(small_video), "--model", str(tiny_depth_prior), *FAST, "--save", "npz,png16",
                 "-o", str(out), "-q"]) == 0
    final = _snapshot(out / "clip")
    assert final["my_notes.txt"] == after["my_notes.txt"] and final["depth_png16/README"] == after["depth_png16/README"]
    assert final["normal.npz"] == after["normal.npz"] and final["depth_vis.mp4"] == after["depth_vis.mp4"]
    assert len(list((out / "clip/depth_png16").glob("*.png"))) == 6
    meta = json.loads((out / "clip/depth.meta.json").read_text())
    assert meta["settings"]["save"] == ["npz", "png16"] and "png16" in meta["outputs"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no hidden temporaries left


def test_output_into_the_input_folder_is_refused_and_the_frames_stay(tiny_depth_prior, tmp_path, capsys,
                                                                    monkeypatch):
    frames = _frames(tmp_path / "frames")
    before = _snapshot(frames)
    common = ["--model", str(tiny_depth_prior), *FAST, "-q"]
    monkeypatch.chdir(tmp_path)  # `bufferanytime depth frames -o .` beside the folder: OUT/frames IS the input
    assert main(["depth", "frames", *common, "-o", "."]) == 2
    _one_error(capsys, "into the input folder itself")
    monkeypatch.chdir(frames)  # inside it: `depth . -o .` would write frames/frames/
    assert main(["depth", ".", *common, "-o", "."]) == 2
    _one_error(capsys, "into the input folder itself")
    assert main(["depth", str(frames), *common, "-o", str(frames / "results")]) == 2
    _one_error(capsys, "into the input folder itself")
    assert _snapshot(frames) == before and sorted(p.name for p in frames.iterdir()) == sorted(before)


def test_dot_input_gets_the_folders_real_name_and_keeps_the_output_folder(tiny_depth_prior, tmp_path, capsys,
                                                                         monkeypatch):
    frames = _frames(tmp_path / "frames")
    results = tmp_path / "results"
    results.mkdir()
    (results / "keep.txt").write_text("kept")
    monkeypatch.chdir(frames)
    assert main(["depth", ".", "--model", str(tiny_depth_prior), *FAST, "-o", "../results"]) == 0
    assert f"wrote {Path('../results/frames')}/ (depth.npz, depth_vis.mp4, depth.meta.json)" in capsys.readouterr().out
    assert sorted(p.name for p in results.iterdir()) == ["frames", "keep.txt"]
    assert (results / "keep.txt").read_text() == "kept"
    assert sorted(p.name for p in (results / "frames").iterdir()) == DEPTH_FILES
    with np.load(results / "frames/depth.npz") as npz:
        assert npz["disparity"].shape == (3, 48, 64)


def test_nothing_is_created_when_every_input_fails(tiny_depth_prior, tmp_path, capsys):
    out = tmp_path / "new/out"
    assert main(["depth", str(tmp_path / "missing.mp4"), "--model", str(tiny_depth_prior), "-o", str(out)]) == 2
    _one_error(capsys, "no such file")
    assert not (tmp_path / "new").exists()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: its id names no process any more
    return process.pid


def test_rerun_removes_temporaries_of_dead_processes_only(tiny_depth_prior, small_video, tmp_path, capsys):
    out = tmp_path / "out"
    dead = out / f".clip.tmp-{_dead_pid()}"
    (dead / "depth_png16").mkdir(parents=True)
    (dead / "predictions.raw").write_bytes(b"\0" * 1000)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = out / f".other.tmp-{alive.pid}"
        live.mkdir()
        (out / ".hidden-user-folder").mkdir()
        assert main(["depth", str(small_video), "--model", str(tiny_depth_prior), *FAST, "-o", str(out), "-q"]) == 0
        assert capsys.readouterr().err == ""
        assert not dead.exists() and live.is_dir()  # a live process's staging folder is never touched
        assert sorted(p.name for p in out.iterdir()) == [".hidden-user-folder", live.name, "clip"]
    finally:
        alive.kill()
        alive.wait()


def _start_slow_run(tiny_depth_prior: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """A real `bufferanytime depth` process, returned once its staging folder exists (i.e. mid-run)."""
    video = tmp_path / "long.mp4"
    write_video(video, moving_pattern(frames=300), fps=10)  # minutes of work for the tiny prior at 518 px
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    # Depth Anything V2's own size (518 px short side) keeps this tiny prior busy for a while, window by window.
    process = subprocess.Popen([sys.executable, "-m", "bufferanytime", "depth", str(video), "--model",
                                str(tiny_depth_prior), "--window", "4", "-o", str(out), "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    staging = out / f".long.tmp-{process.pid}"
    deadline = time.monotonic() + 240
    while not (staging / "predictions.raw").is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never started writing"
        time.sleep(0.05)
    time.sleep(0.2)  # mid-prediction
    assert process.poll() is None, "the run ended before it could be interrupted; make it longer"
    return process, out, staging


def test_sigterm_cleans_up_like_ctrl_c(tiny_depth_prior, tmp_path):
    process, out, staging = _start_slow_run(tiny_depth_prior, tmp_path)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err.strip().splitlines() == ["error: interrupted"]
    assert not staging.exists() and not out.exists()  # temporaries gone; the folder it created, empty, too


def test_rerun_after_sigkill_removes_the_dead_runs_temporaries(tiny_depth_prior, tmp_path, capsys):
    process, out, staging = _start_slow_run(tiny_depth_prior, tmp_path)
    process.kill()
    process.wait()
    assert staging.is_dir()  # SIGKILL cannot be caught: the temporaries stay ...
    video = tmp_path / "long.mp4"
    assert main(["depth", str(video), "--model", str(tiny_depth_prior), *FAST, "--max-frames", "4", "-o", str(out),
                 "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in out.iterdir()) == ["long"]  # ... until the next run in the same folder
    assert sorted(p.name for p in (out / "long").iterdir()) == DEPTH_FILES


@pytest.mark.parametrize("quiet", [False, True])
def test_success_says_where_the_outputs_went_unless_quiet(quiet, tiny_depth_prior, small_video, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["depth", str(small_video), "--model", str(tiny_depth_prior), *FAST, "-o", str(out),
                 *(["-q"] if quiet else [])]) == 0
    printed = capsys.readouterr().out
    assert printed == ("" if quiet else f"wrote {out / 'clip'}/ (depth.npz, depth_vis.mp4, depth.meta.json)\n")
    assert sorted(p.name for p in (out / "clip").iterdir()) == DEPTH_FILES
