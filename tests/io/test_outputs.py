"""OutputFiles: a run's files are staged and moved into place one by one; nothing else is ever removed, and only
staging folders that carry the package's marker, of processes known to be gone, are cleaned up. The writers say a
full disk as ENOSPC with the path."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.io.outputs import (
    STAGING_MARKER,
    STALE_STAGING_AGE_S,
    OutputFiles,
    pid_alive,
    process_start,
    remove_stale_staging,
    save_npy,
    staging_marker,
    write_bytes,
    write_exr,
    write_image,
)
from tests.io.full_disk import FullDisk


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


def _dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()  # reaped: its id names no process any more
    return done.pid


def _staging(root, name: str, **changes) -> str:
    """A staging folder ``root/name`` as a run writes it, its marker changed by ``changes``."""
    folder = root / name
    (folder / "depth_png16").mkdir(parents=True)
    (folder / "predictions.raw").write_bytes(b"\0" * 100)
    (folder / STAGING_MARKER).write_text(json.dumps({**staging_marker(), **changes}))
    return name


def test_stale_staging_is_only_ours_and_only_of_gone_processes(tmp_path):
    dead, me = _dead_pid(), os.getpid()
    assert pid_alive(me) and not pid_alive(dead)
    removed = {
        _staging(tmp_path, f".a.tmp-{dead}", pid=dead),  # this host, process dead
        _staging(tmp_path, f".b.old-{dead}", pid=dead),
        _staging(tmp_path, f".c.tmp-{me}", start="another-boot:123"),  # the PID now names a later process
    }
    kept = {
        _staging(tmp_path, f".d.tmp-{me}"),  # alive: this very process
        _staging(tmp_path, f".e.tmp-{dead}", pid=dead, host="another-host"),  # cannot be checked from here
        _staging(tmp_path, f".f.tmp-{dead}", pid=dead, pid_namespace="pid:[1]"),  # another container
        _staging(tmp_path, f".g.tmp-{dead}", pid=dead + 1),  # the marker names another process: not this one's
        ".d.tmp-x", "e.tmp-1", f".h.tmp-{dead}", ".mine.tmp-999999",
    }
    for name in (".d.tmp-x", "e.tmp-1", ".mine.tmp-999999"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.txt").write_text("x")  # a user's folder with a staging-like name: no marker
    (tmp_path / f".h.tmp-{dead}").write_text("a file, not a staging folder")
    assert {p.name for p in remove_stale_staging(tmp_path)} == removed
    assert {p.name for p in tmp_path.iterdir()} == kept
    assert (tmp_path / ".mine.tmp-999999/data.txt").read_text() == "x"


def test_a_staging_folder_elsewhere_is_stale_only_after_the_age_limit(tmp_path):
    name = _staging(tmp_path, f".a.tmp-{os.getpid()}", host="another-host")
    assert remove_stale_staging(tmp_path) == []
    old = time.time() - STALE_STAGING_AGE_S - 60
    for path in (tmp_path / name, tmp_path / name / STAGING_MARKER):
        os.utime(path, (old, old))
    assert [p.name for p in remove_stale_staging(tmp_path)] == [name]
    assert list(tmp_path.iterdir()) == []


def test_process_start_tells_a_reused_pid_apart():
    start = process_start(os.getpid())
    if start is None:
        pytest.skip("no /proc here: only the PID is checked")
    assert start == process_start(os.getpid()) != process_start(_dead_pid())


def test_the_staging_marker_is_never_moved_into_the_result(tmp_path):
    final = tmp_path / "out/clip"
    with OutputFiles(final) as staging:
        marker = json.loads((staging / STAGING_MARKER).read_text())
        assert marker["pid"] == os.getpid() and marker["start"] == process_start(os.getpid())
        (staging / "depth.npz").write_text("new")
    assert [p.name for p in final.iterdir()] == ["depth.npz"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("write", [lambda path: save_npy(path, np.zeros((64, 64), np.float32)),
                                   lambda path: write_bytes(path, b"x" * 100_000)])
def test_a_full_device_raises_enospc_naming_the_file(write):
    """/dev/full: every write fails with ENOSPC. numpy's own writer would say "N requested and M written"."""
    with pytest.raises(OSError) as info:
        write(Path("/dev/full"))
    assert info.value.errno == errno.ENOSPC and info.value.filename == "/dev/full"


def test_a_disk_that_fills_up_midway_raises_enospc_naming_the_file(tmp_path, monkeypatch):
    FullDisk(files=1).install(monkeypatch)
    save_npy(tmp_path / "a.npy", np.arange(1000.0))
    for path, write in ((tmp_path / "b.npy", lambda p: save_npy(p, np.arange(1000.0))),
                        (tmp_path / "c.png", lambda p: write_image(p, np.zeros((32, 32, 3), np.uint8)))):
        with pytest.raises(OSError) as info:
            write(path)
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(1000.0))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("image", [np.ones((64, 64), np.float32), np.random.default_rng(0).random((128, 128))])
def test_an_exr_on_a_full_device_raises_enospc_naming_the_file(image):
    """Written by OpenEXR itself, the small image was lost without an error and the large one was a RuntimeError."""
    pytest.importorskip("OpenEXR")
    with pytest.raises(OSError) as info:
        write_exr("/dev/full", {"Y": image.astype(np.float32)})
    assert info.value.errno == errno.ENOSPC and info.value.filename == "/dev/full"
