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


def _staging_of(folder: Path, pid: int, **changes) -> Path:
    """A staging folder as the run of process ``pid`` leaves it, with its marker (changed by ``changes``)."""
    from bufferanytime.io.outputs import STAGING_MARKER, process_start, staging_marker

    (folder / "depth_png16").mkdir(parents=True)
    (folder / "predictions.raw").write_bytes(b"\0" * 1000)
    marker = {**staging_marker(), "pid": pid, "start": process_start(pid), **changes}
    (folder / STAGING_MARKER).write_text(json.dumps(marker))
    return folder


def test_rerun_removes_temporaries_of_dead_processes_only(tiny_depth_prior, small_video, tmp_path, capsys):
    out = tmp_path / "out"
    dead_pid = _dead_pid()
    dead = _staging_of(out / f".clip.tmp-{dead_pid}", dead_pid)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = _staging_of(out / f".other.tmp-{alive.pid}", alive.pid)
        (out / ".hidden-user-folder").mkdir()
        assert main(["depth", str(small_video), "--model", str(tiny_depth_prior), *FAST, "-o", str(out), "-q"]) == 0
        assert capsys.readouterr().err == ""
        assert not dead.exists() and live.is_dir()  # a live process's staging folder is never touched
        assert sorted(p.name for p in out.iterdir()) == [".hidden-user-folder", live.name, "clip"]
    finally:
        alive.kill()
        alive.wait()


def test_a_users_folder_named_like_a_temporary_and_other_hosts_runs_are_never_removed(tiny_depth_prior, small_video,
                                                                                      tmp_path, capsys):
    """`mkdir -p out/.mine.tmp-999999 && echo x > out/.mine.tmp-999999/data.txt && bufferanytime depth clip.mp4
    -o out` deleted the user's folder; a live run on another host (NFS) or in another container (another PID
    namespace) had its staging folder deleted, its PID being unknown here."""
    out = tmp_path / "out"
    (out / ".mine.tmp-999999").mkdir(parents=True)
    (out / ".mine.tmp-999999/data.txt").write_text("x\n")
    dead_pid = _dead_pid()
    elsewhere = [_staging_of(out / f".a.tmp-{dead_pid}", dead_pid, host="another-host"),
                 _staging_of(out / f".b.tmp-{dead_pid}", dead_pid, pid_namespace="pid:[1]")]
    before = _snapshot(out)
    assert main(["depth", str(small_video), "--model", str(tiny_depth_prior), *FAST, "-o", str(out), "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert {k: v for k, v in _snapshot(out).items() if not k.startswith("clip/")} == before
    assert sorted(p.name for p in out.iterdir()) == sorted([".mine.tmp-999999", *(p.name for p in elsewhere), "clip"])


def test_a_full_disk_while_writing_exr_is_one_line_and_leaves_nothing(tiny_depth_prior, small_video, tmp_path,
                                                                      capsys, monkeypatch):
    """`--save exr` on a full disk was a RuntimeError traceback from OpenEXR (exit 1)."""
    from tests.io.full_disk import FullDisk

    out = tmp_path / "out"
    (out / "clip").mkdir(parents=True)
    (out / "clip/mine.txt").write_text("kept")
    disk = FullDisk(files=3).install(monkeypatch)  # the raw predictions and two EXR frames fit; the third does not
    code = main(["depth", str(small_video), "--model", str(tiny_depth_prior), *FAST, "--save", "exr", "-o", str(out),
                 "-q"])
    assert code == 2
    assert disk.failed[0].endswith("/depth_exr/000002.exr")
    _one_error(capsys, "(No space left on device); nothing was written for this input")
    assert _snapshot(out) == {"clip/mine.txt": _snapshot(out)["clip/mine.txt"]}
    assert sorted(p.name for p in out.iterdir()) == ["clip"]


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
