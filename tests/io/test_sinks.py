"""Progressive outputs: each frame's files complete as soon as written, a killed run's mp4 still plays, only the
run's own files are touched."""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest

from bufferanytime.io.sinks import ProgressiveOutputs
from bufferanytime.tasks import get_task


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
        np.testing.assert_array_equal(np.load(folder / "depth_npy" / f"{i * 2:06d}.npy"), _depth(i))
        assert (folder / "depth_png16" / f"{i * 2:06d}.png").is_file()
    shutil.copy(folder / "depth_vis.mp4", tmp_path / "killed.mp4")  # what a SIGKILL now would leave
    assert _count(tmp_path / "killed.mp4") >= 20  # every complete one-second fragment plays
    outputs.close()
    outputs.write_meta({"status": "finished"})
    assert _count(folder / "depth_vis.mp4") == 25
    meta = json.loads((folder / "depth.meta.json").read_text())
    assert meta["frames_written"] == 25 and meta["last_frame_index"] == 48
    assert len(meta["outputs"]["png16"]["scale_per_written_frame"]) == 25
    assert sorted(p.name for p in folder.iterdir()) == ["depth.meta.json", "depth_npy", "depth_png16",
                                                        "depth_vis.mp4", "mine.txt"]
    assert (folder / "mine.txt").read_text() == "keep"


def test_png16_frames_decode_with_their_meta(tmp_path):
    import cv2

    outputs = ProgressiveOutputs(tmp_path / "o", get_task("depth"), ("png16",), fps=10)
    for i in range(3):
        outputs.write(i, _depth(i))
    outputs.close()
    outputs.write_meta({})
    scales = json.loads((tmp_path / "o" / "depth.meta.json").read_text())["outputs"]["png16"]["scale_per_written_frame"]
    for i, scale in enumerate(scales):
        png = cv2.imread(str(tmp_path / "o" / "depth_png16" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
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


@pytest.mark.parametrize("kind", ["depth", "normal"])
def test_names_follow_the_task(kind, tmp_path):
    names = ProgressiveOutputs(tmp_path, get_task(kind), ("npy",), fps=10).names
    assert names["npy"] == f"{kind}_npy" and names["meta"] == get_task(kind).files.meta
