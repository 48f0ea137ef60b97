"""Benchmark readers on tiny folders in the official layouts: frame selection, depth decoding, crops, errors."""

from __future__ import annotations

import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.evaluation import benchmark_sort, load_sequences, read_dpt, write_dpt
from bufferanytime.synthetic import render_video, write_video_dir
from tests.evaluation.formats import make_bonn, make_kitti, make_scannet, make_sintel, ramp_depth, rgb_frame


def test_kitti_layout_depth_scale_holes_and_even_crop(tmp_path):
    make_kitti(tmp_path, frames=6, size=(11, 15))
    (seq,) = load_sequences("kitti", tmp_path)
    assert seq.name == "2011_09_26_drive_0001_sync" and seq.num_frames == 6
    depth = seq.read_depth(2)
    assert depth.shape == (10, 14) and seq.read_rgb(2).shape == (10, 14, 3)
    expected = np.round(ramp_depth(11, 15, 2, 2.0, 90.0) * 256.0)[:10, :14] / 256.0
    np.testing.assert_array_equal(depth[1:], expected[1:])
    assert np.all(depth[0, :3] == -1.0)  # png 0 = no LiDAR return
    np.testing.assert_array_equal(seq.read_rgb(2), rgb_frame(11, 15, 2)[:10, :14])


def test_kitti_keeps_the_first_110_frames(tmp_path):
    make_kitti(tmp_path, frames=112, size=(4, 4))
    (seq,) = load_sequences("kitti", tmp_path)
    assert seq.num_frames == 110
    np.testing.assert_array_equal(seq.read_rgb(109), rgb_frame(4, 4, 109))


def test_kitti_missing_raw_image_is_an_input_error(tmp_path):
    make_kitti(tmp_path, frames=3, size=(4, 4))
    next((tmp_path / "raw_data").rglob("0000000006.png")).unlink()
    with pytest.raises(InputError, match="raw KITTI image missing"):
        load_sequences("kitti", tmp_path)


def test_scannet_stride_numeric_order_and_crop(tmp_path):
    make_scannet(tmp_path, frames=280, size=(20, 26))
    (seq,) = load_sequences("scannet", tmp_path)
    assert seq.num_frames == 90  # frames 0, 3, ..., 267 of the first 270
    depth = seq.read_depth(89)
    assert depth.shape == (4, 4)  # [8:-8, 11:-11]
    np.testing.assert_allclose(depth, np.round(ramp_depth(20, 26, 267, 0.5, 4.0) * 1000)[8:-8, 11:-11] / 1000)
    rgb = seq.read_rgb(89)  # a JPEG: close to, not equal to, the written frame
    assert rgb.shape == (4, 4, 3)
    assert np.abs(rgb.astype(int) - rgb_frame(20, 26, 267)[8:-8, 11:-11]).mean() < 40


def test_bonn_official_sequences_and_frames_30_to_140(tmp_path):
    make_bonn(tmp_path, frames=36, size=(9, 13))
    (seq,) = load_sequences("bonn", tmp_path)  # rgbd_bonn_other is not one of the benchmark's five
    assert seq.name == "rgbd_bonn_balloon2" and seq.num_frames == 6
    np.testing.assert_array_equal(seq.read_rgb(0), rgb_frame(9, 13, 30)[:8, :12])
    depth = seq.read_depth(0)
    assert depth.shape == (8, 12) and depth[0, 0] == -1.0
    assert depth[3, 4] == pytest.approx(np.round(ramp_depth(9, 13, 30, 0.8, 6.0)[3, 4] * 5000) / 5000)


def test_bonn_without_official_sequences_uses_all(tmp_path):
    make_bonn(tmp_path, seqs=("mine_a", "mine_b"), frames=32, size=(4, 4))
    assert [s.name for s in load_sequences("bonn", tmp_path)] == ["mine_a", "mine_b"]


def test_sintel_dpt_and_first_50_frames(tmp_path):
    make_sintel(tmp_path, scenes=("alley_1", "bamboo_2"), frames=52, size=(10, 12))
    seqs = load_sequences("sintel", tmp_path)
    assert [s.name for s in seqs] == ["alley_1", "bamboo_2"]
    assert seqs[0].num_frames == 50
    np.testing.assert_array_equal(seqs[1].read_depth(4), ramp_depth(10, 12, 4, 1.0, 100.0).astype(np.float32))


def test_dpt_round_trip_and_bad_files(tmp_path):
    depth = np.random.default_rng(0).uniform(0, 50, (7, 9)).astype(np.float32)
    write_dpt(tmp_path / "a.dpt", depth)
    np.testing.assert_array_equal(read_dpt(tmp_path / "a.dpt"), depth)
    raw = (tmp_path / "a.dpt").read_bytes()
    (tmp_path / "tag.dpt").write_bytes(b"\x00\x00\x00\x00" + raw[4:])
    with pytest.raises(InputError, match="wrong tag"):
        read_dpt(tmp_path / "tag.dpt")
    (tmp_path / "short.dpt").write_bytes(raw[:-8])
    with pytest.raises(InputError, match="truncated"):
        read_dpt(tmp_path / "short.dpt")


def test_benchmark_sort_is_depthcrafters():
    names = ["frame_0010.png", "frame_0002.png", "frame_0001.png"]
    assert benchmark_sort(names) == ["frame_0001.png", "frame_0002.png", "frame_0010.png"]
    # the key is the last four digits before the first dot, after a plain sort (stable)
    assert benchmark_sort(["1000012.1.png", "0999999.5.png", "1000000.2.png"]) == [
        "1000000.2.png", "1000012.1.png", "0999999.5.png"]


def test_synthetic_layout(tmp_path):
    video = render_video(2, 4, (24, 32))
    write_video_dir(video, tmp_path / "seq_000002")
    (seq,) = load_sequences("synthetic", tmp_path)
    assert seq.name == "seq_000002" and seq.num_frames == 4
    np.testing.assert_array_equal(seq.read_rgb(3), video.rgb[3])
    np.testing.assert_array_equal(seq.read_depth(1), video.depth[1])
    np.testing.assert_array_equal(seq.read_normal(2), video.normal[2])
    short = seq.truncated(3)
    fwd, bwd, valid_fwd, valid_bwd = short.gt_flows()
    assert short.num_frames == 3 and fwd.shape == (2, 24, 32, 2) and valid_bwd.shape == (2, 24, 32)
    np.testing.assert_array_equal(fwd, video.flow_fwd[:2])


@pytest.mark.parametrize("dataset", ["kitti", "scannet", "bonn", "sintel", "synthetic"])
def test_empty_or_wrong_folders_are_input_errors(tmp_path, dataset):
    with pytest.raises(InputError):
        load_sequences(dataset, tmp_path)
    with pytest.raises(InputError, match="no such directory"):
        load_sequences(dataset, tmp_path / "missing")


def test_unknown_dataset(tmp_path):
    with pytest.raises(InputError, match="unknown dataset"):
        load_sequences("nyu", tmp_path)
