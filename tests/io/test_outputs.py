"""OutputFiles: a run's files are staged and moved into place one by one; nothing else is ever removed."""

from __future__ import annotations

import os

import pytest

from bufferanytime.errors import InputError
from bufferanytime.io.outputs import OutputFiles, pid_alive, remove_stale_staging


def test_commit_replaces_only_the_staged_files(tmp_path):
    final = tmp_path / "out/clip"
    final.mkdir(parents=True)
    (final / "depth.npz").write_text("old")
    (final / "user.txt").write_text("user")
    files = OutputFiles(final)
    with files as staging:
        assert staging.parent == final.parent and staging.name == f".clip.tmp-{os.getpid()}"
        (staging / "depth.npz").write_text("new")
        (staging / "depth_png16").mkdir()
        (staging / "depth_png16/000000.png").write_text("png")
        (staging / "depth.meta.json").write_text("{}")
    assert (final / "depth.npz").read_text() == "new" and (final / "user.txt").read_text() == "user"
    assert (final / "depth_png16/000000.png").read_text() == "png"
    assert files.written == ["depth.npz", "depth_png16", "depth.meta.json"]  # the meta file is moved last
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_leaves_nothing_and_removes_the_folders_it_created(error, tmp_path):
    final = tmp_path / "new/out/clip"
    with pytest.raises(error), OutputFiles(final) as staging:
        (staging / "depth.npz").write_text("half")
        raise error()
    assert not (tmp_path / "new").exists()


def test_failure_keeps_an_existing_output_folder_as_it_was(tmp_path):
    final = tmp_path / "out/clip"
    final.mkdir(parents=True)
    (final / "depth.npz").write_text("old")
    with pytest.raises(OSError), OutputFiles(final) as staging:
        (staging / "depth.npz").write_text("half")
        raise OSError(28, "No space left on device")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip"]
    assert (final / "depth.npz").read_text() == "old"


def test_a_directory_in_the_way_is_refused_before_anything_moves(tmp_path):
    final = tmp_path / "out/clip"
    (final / "depth.npz").mkdir(parents=True)
    with pytest.raises(InputError, match="is a directory"), OutputFiles(final) as staging:
        (staging / "depth_vis.mp4").write_text("vis")
        (staging / "depth.npz").write_text("npz")
    assert sorted(p.name for p in final.iterdir()) == ["depth.npz"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip"]


def test_stale_staging_of_dead_processes_only_is_removed(tmp_path):
    import subprocess
    import sys

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert pid_alive(os.getpid()) and not pid_alive(done.pid)
    for name in (f".a.tmp-{done.pid}", f".b.old-{done.pid}", f".c.tmp-{os.getpid()}", ".d.tmp-x", "e.tmp-1"):
        (tmp_path / name).mkdir()
    (tmp_path / f".f.tmp-{done.pid}").write_text("a file, not a staging folder")
    removed = remove_stale_staging(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".a.tmp-{done.pid}", f".b.old-{done.pid}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".c.tmp-{os.getpid()}", ".d.tmp-x", "e.tmp-1", f".f.tmp-{done.pid}"])
