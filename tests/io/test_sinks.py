"""Progressive outputs: each frame's files complete as soon as written, a killed run's mp4 still plays, only the
run's own files are touched."""

from __future__ import annotations

import errno
import json
import os
import shutil

import av
import numpy as np
import pytest

from bufferanytime.io.sinks import ProgressiveOutputs
from bufferanytime.tasks import get_task
from tests.io.full_disk import FullDisk


def _depth(i: int) -> np.ndarray:
    return np.linspace(1.0, 2.0 + i, 48 * 64, dtype=np.float32).reshape(48, 64)


def _count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_every_frame_is_on_disk_when_written_and_the_mp4_plays_before_and_after_close(tmp_path):
    folder = tmp_path / "out" / "cam"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("keep")
    outputs = ProgressiveOutputs(folder, get_task("depth"), ("npy", "png16", "vis"), fps=10)
    for i in range(25):
        outputs.write(i * 2, _depth(i))  # even indices: odd ones were "dropped"
        np.testing.assert_array_equal(np.load(folder / "depth_online_npy" / f"{i * 2:06d}.npy"), _depth(i))
        assert (folder / "depth_online_png16" / f"{i * 2:06d}.png").is_file()
    shutil.copy(folder / "depth_online_vis.mp4", tmp_path / "killed.mp4")  # what a SIGKILL now would leave
    assert _count(tmp_path / "killed.mp4") >= 20  # every complete one-second fragment plays
    outputs.close()
    outputs.write_meta({"status": "finished"})
    assert _count(folder / "depth_online_vis.mp4") == 25
    meta = json.loads((folder / "depth_online.meta.json").read_text())
    assert meta["frames_written"] == 25 and meta["last_frame_index"] == 48
    assert len(meta["outputs"]["png16"]["scale_per_written_frame"]) == 25
    assert sorted(p.name for p in folder.iterdir()) == ["depth_online.meta.json", "depth_online_npy",
                                                        "depth_online_png16", "depth_online_vis.mp4", "mine.txt"]
    assert (folder / "mine.txt").read_text() == "keep"


def test_png16_frames_decode_with_their_meta(tmp_path):
    import cv2

    outputs = ProgressiveOutputs(tmp_path / "o", get_task("depth"), ("png16",), fps=10)
    for i in range(3):
        outputs.write(i, _depth(i))
    outputs.close()
    outputs.write_meta({})
    meta = json.loads((tmp_path / "o" / "depth_online.meta.json").read_text())
    scales = meta["outputs"]["png16"]["scale_per_written_frame"]
    for i, scale in enumerate(scales):
        png = cv2.imread(str(tmp_path / "o" / "depth_online_png16" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_allclose(png / scale, _depth(i), atol=1.0 / scale)


def test_mjpeg_stream_holds_one_jpeg_per_frame(tmp_path):
    outputs = ProgressiveOutputs(tmp_path / "o", get_task("normal"), (), fps=10, mjpeg=str(tmp_path / "vis.mjpeg"))
    normal = np.dstack([np.zeros((48, 64)), np.zeros((48, 64)), np.ones((48, 64))]).astype(np.float32)
    for i in range(4):
        outputs.write(i, normal)
    outputs.close()
    with av.open(str(tmp_path / "vis.mjpeg"), format="mjpeg") as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 4
    assert np.abs(decoded[-1].astype(int) - [128, 128, 255]).mean() < 3  # n * 0.5 + 0.5 of (0, 0, 1)


def test_nothing_written_leaves_no_folder(tmp_path):
    outputs = ProgressiveOutputs(tmp_path / "a" / "b", get_task("depth"), ("npy", "vis"), fps=10)
    outputs.close()
    outputs.write_meta({"status": "failed"})
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("kind", ["depth", "normal", "metric_depth"])
def test_names_follow_the_task_and_are_none_of_the_offline_names(kind, tmp_path):
    names = ProgressiveOutputs(tmp_path, get_task(kind), ("npy",), fps=10).names
    assert names == {"npy": f"{kind}_online_npy", "png16": f"{kind}_online_png16", "vis": f"{kind}_online_vis.mp4",
                     "meta": f"{kind}_online.meta.json"}
    offline = get_task(kind).files
    assert not set(names.values()) & {offline.npz, offline.vis, offline.png16, offline.exr, offline.meta}


@pytest.mark.parametrize("whole", [0, 1])  # 1: frame 2's npy is written whole, its png is not
def test_a_full_disk_mid_frame_leaves_that_frame_in_no_output(whole, tmp_path, monkeypatch):
    """The disk fills while frame 2 is written: its files already written are removed, frames 0 and 1 stay whole."""
    folder = tmp_path / "cam"
    outputs = ProgressiveOutputs(folder, get_task("depth"), ("npy", "png16", "vis"), fps=10)
    for i in range(2):
        outputs.write(i, _depth(i))
    disk = FullDisk(files=whole).install(monkeypatch)
    with pytest.raises(OSError) as info:
        outputs.write(2, _depth(2))
    assert info.value.errno == errno.ENOSPC and info.value.filename == disk.failed[0]
    assert disk.failed[0].endswith(".png" if whole else f".npy.tmp-{os.getpid()}")
    monkeypatch.undo()
    outputs.close()
    outputs.write_meta({"status": "failed"})
    for fmt, suffix in (("npy", ".npy"), ("png16", ".png")):
        assert sorted(p.name for p in (folder / f"depth_online_{fmt}").iterdir()) == [f"00000{i}{suffix}"
                                                                                     for i in (0, 1)]
    np.testing.assert_array_equal(np.load(folder / "depth_online_npy/000001.npy"), _depth(1))
    assert not [p for p in folder.rglob(".*")]  # no temporary left
    assert _count(folder / "depth_online_vis.mp4") == 2
    assert json.loads((folder / "depth_online.meta.json").read_text())["frames_written"] == 2
