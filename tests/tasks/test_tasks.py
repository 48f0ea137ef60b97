"""Task objects: registry, memory <-> disk layout of a frame and of flows, window alignment, resizing, OPW
normalisation, visualisation and encodings."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from bufferanytime.errors import InputError
from bufferanytime.io.arrays import flows_from_disk, flows_to_disk
from bufferanytime.tasks import DEPTH, METRIC_DEPTH, NORMAL, get_task, list_tasks
from bufferanytime.tasks.metric_depth import WINDOW_PULL


def test_registry():
    assert list_tasks() == ["depth", "normal"]
    assert get_task("depth") is DEPTH and get_task("normal") is NORMAL and get_task(NORMAL) is NORMAL
    with pytest.raises(InputError, match="unknown task 'metric'"):
        get_task("metric")
    assert [get_task(name).files.npz for name in list_tasks()] == ["depth.npz", "normal.npz"]
    assert (DEPTH.files.key, NORMAL.files.key) == ("disparity", "normal")
    assert (DEPTH.files.meta, NORMAL.files.vis) == ("depth.meta.json", "normal_vis.mp4")


@pytest.mark.parametrize("task", [DEPTH, NORMAL], ids=str)
def test_frame_round_trips_memory_disk_memory(task):
    memory = torch.rand(task.channels, 5, 7)
    disk = task.frame_to_disk(memory)
    assert disk.dtype == np.float32
    assert disk.shape == ((5, 7) if task.channels == 1 else (5, 7, task.channels))
    back = task.frame_from_disk(disk)
    assert back.shape == (task.channels, 5, 7) and torch.equal(back, memory)
    if task.channels == 3:  # channel c of memory is the last axis on disk
        assert np.array_equal(disk[..., 1], memory[1].numpy())


def test_depth_window_aligns_a_scaled_and_shifted_copy_back_exactly():
    previous = torch.rand(3, 6, 8) + 0.1
    new = torch.cat([(previous - 0.4) / 2.5, torch.rand(4, 6, 8)])  # the same frames under another scale/shift
    aligned = DEPTH.align_window(new, previous)
    assert torch.allclose(aligned[:3], previous, atol=1e-6)
    assert torch.allclose(aligned[3:], new[3:] * 2.5 + 0.4, atol=1e-6)


def test_metric_window_moves_halfway_to_the_previous_scale_so_a_video_cannot_drift():
    previous = torch.rand(2, 6, 8) + 1.0
    new = torch.cat([previous * 2.0, torch.rand(3, 6, 8) + 1.0])  # the same frames at twice the scale
    aligned = METRIC_DEPTH.align_window(new, previous)
    assert WINDOW_PULL == 0.5
    assert torch.allclose(aligned, new * 2.0 ** -0.5, rtol=1e-5)  # half the log step removed, whole window alike
    # windows each at their own scale: the output's scale stays between them (an average), however many windows
    scale = 1.0
    for own in [1.0, 2.0] * 20:
        scale = float(METRIC_DEPTH.align_window(torch.full((4, 2, 2), own), torch.full((2, 2, 2), scale))[0, 0, 0])
        assert 1.0 - 1e-5 <= scale <= 2.0 + 1e-5


def test_normals_are_not_aligned_but_renormalised_after_blending_and_resizing():
    new = torch.nn.functional.normalize(torch.randn(4, 3, 5, 5), dim=1)
    assert torch.equal(NORMAL.align_window(new, new[:2] * -1), new)
    blended = 0.5 * new + 0.5 * torch.nn.functional.normalize(torch.randn(4, 3, 5, 5), dim=1)
    assert torch.allclose(NORMAL.after_blend(blended).norm(dim=1), torch.ones(4, 5, 5), atol=1e-6)
    frame = NORMAL.frame_to_disk(new[0])
    resized = NORMAL.resize(frame, (9, 11))
    assert resized.shape == (9, 11, 3)
    assert np.allclose(np.linalg.norm(resized, axis=-1), 1.0, atol=1e-5)
    assert NORMAL.resize(frame, (5, 5)) is frame


def test_depth_resize_is_plain_bilinear():
    frame = np.random.default_rng(0).random((6, 8)).astype(np.float32)
    expected = cv2.resize(frame, (16, 12), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(DEPTH.resize(frame, (12, 16)), expected)


def test_opw_normalisation_removes_one_affine_map_for_depth_only():
    video = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)
    t, s = DEPTH.opw_normalization(video)
    t2, s2 = DEPTH.opw_normalization(2.0 * video + 3.0)
    assert np.allclose((video - t) / s, (2.0 * video + 3.0 - t2) / s2, atol=1e-5)
    assert NORMAL.opw_normalization(video[..., None].repeat(3, -1)) == (0.0, 1.0)


def test_png16_and_exr_encodings(tmp_path):
    disparity = np.random.default_rng(2).random((2, 4, 5)).astype(np.float32) + 0.5
    info = DEPTH.write_png16(disparity, tmp_path / "d")
    png = cv2.imread(str(tmp_path / "d" / "000001.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and np.allclose(png / info["scale"], disparity[1], atol=1 / info["scale"])
    normals = np.zeros((1, 4, 5, 3), np.float32)
    normals[..., 0] = 1.0  # x right: red
    NORMAL.write_png16(normals, tmp_path / "n")
    png = cv2.imread(str(tmp_path / "n" / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert png[0, 0, 2] == 65535 and png[0, 0, 1] == 32768  # OpenCV's BGR: red is the last channel
    assert list(DEPTH.exr_planes(disparity[0])) == ["Y"] and list(NORMAL.exr_planes(normals[0])) == ["X", "Y", "Z"]
    assert np.array_equal(NORMAL.exr_planes(normals[0])["X"], normals[0, ..., 0])


def test_visualisation():
    disparity = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    value_range = DEPTH.vis_range(disparity)
    rgb = DEPTH.to_rgb(disparity, value_range, invalid=disparity > 0.9)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8 and (rgb[-1, -1] == 0).all()
    assert rgb[0, 0].sum() < rgb[3, 2].sum()  # near (large disparity) is bright
    normal = np.zeros((2, 2, 3), np.float32)
    normal[..., 2] = 1.0
    assert (NORMAL.to_rgb(normal, None)[0, 0] == [128, 128, 255]).all()
    assert DEPTH.vis_info(value_range)["colormap"] == "inferno" and "mapping" in NORMAL.vis_info(None)


def test_flow_layout_round_trip():
    disk = np.random.default_rng(3).random((3, 4, 5, 2)).astype(np.float32)
    memory = flows_from_disk(disk)
    assert memory.shape == (3, 2, 4, 5) and np.array_equal(memory[:, 0], disk[..., 0])
    assert np.array_equal(flows_to_disk(torch.from_numpy(np.ascontiguousarray(memory))), disk)
    with pytest.raises(ValueError):
        flows_from_disk(memory)
