"""Benchmark readers on tiny folders in the official layouts: frame selection, depth decoding, crops, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from bufferanytime.errors import InputError
from bufferanytime.evaluation import benchmark_sort, load_sequences, read_dpt, write_dpt
from bufferanytime.io.arrays import flows_to_disk
from bufferanytime.synthetic import render_video, write_video_dir
from tests.evaluation.formats import (
    make_bonn,
    make_kitti,
    make_scannet,
    make_sintel,
    make_synthetic,
    ramp_depth,
    rgb_frame,
    shorten_depth,
)


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


def test_kitti_missing_raw_image_marks_only_its_sequence(tmp_path):
    make_kitti(tmp_path, frames=3, size=(4, 4))
    make_kitti(tmp_path, seq="2011_09_26_drive_0002_sync", frames=3, size=(4, 4))
    missing = next((tmp_path / "raw_data").rglob("0000000006.png"))
    missing.unlink()
    bad, good = load_sequences("kitti", tmp_path)
    assert bad.error == f"{missing}: missing file (1 missing in this sequence)"
    assert good.error is None and good.read_rgb(2).shape == (4, 4, 3)


def test_missing_depth_or_count_mismatch_marks_the_sequence(tmp_path):
    make_scannet(tmp_path / "scannet", scenes=("scene0707_00", "scene0708_00"), frames=6, size=(20, 26))
    (tmp_path / "scannet/scans_test/scene0707_00/depth/3.png").unlink()
    assert [s.error is None for s in load_sequences("scannet", tmp_path / "scannet")] == [False, True]
    make_sintel(tmp_path / "sintel", scenes=("alley_1", "bamboo_2"), frames=3, size=(6, 8))
    (tmp_path / "sintel/training/depth/bamboo_2/frame_0002.dpt").unlink()
    errors = [s.error for s in load_sequences("sintel", tmp_path / "sintel")]
    assert errors[0] is None and "bamboo_2/frame_0002.dpt: missing file" in errors[1]
    make_bonn(tmp_path / "bonn", frames=36, size=(4, 4))
    sorted((tmp_path / "bonn/rgbd_bonn_balloon2/depth").iterdir())[-1].unlink()
    errors = [s.error for s in load_sequences("bonn", tmp_path / "bonn")]
    assert errors == [f"{tmp_path / 'bonn/rgbd_bonn_balloon2'}: 6 rgb but 5 depth frames in [30:140]"]


def test_unreadable_frames_raise_one_input_error(tmp_path):
    make_bonn(tmp_path, seqs=("rgbd_bonn_balloon2",), frames=32, size=(4, 4))
    (seq,) = load_sequences("bonn", tmp_path)
    depth = sorted((tmp_path / "rgbd_bonn_balloon2/depth").iterdir())[30]
    depth.write_bytes(depth.read_bytes()[:20])  # truncated PNG
    with pytest.raises(InputError, match="not a readable depth PNG"):
        seq.read_depth(0)
    rgb = sorted((tmp_path / "rgbd_bonn_balloon2/rgb").iterdir())[31]
    rgb.write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a readable image"):
        seq.read_rgb(1)


def test_16_bit_depth_and_rgb_pngs_keep_their_range(tmp_path):
    """KITTI depth beyond 255/256 m needs all 16 bits; 16-bit RGB or grayscale frames are scaled, not clipped."""
    make_kitti(tmp_path, frames=2, size=(4, 6))
    gt_file = next((tmp_path / "data_depth_annotated").rglob("0000000005.png"))
    far = np.full((4, 6), 60000, np.uint16)  # 234.375 m
    Image.fromarray(far).save(gt_file)
    image_file = next((tmp_path / "raw_data").rglob("0000000005.png"))
    gray16 = np.linspace(0, 65535, 24).reshape(4, 6).astype(np.uint16)
    Image.fromarray(gray16).save(image_file)
    (seq,) = load_sequences("kitti", tmp_path)
    np.testing.assert_array_equal(seq.read_depth(0), np.full((4, 6), 60000 / 256.0))
    gray = seq.read_rgb(0)
    np.testing.assert_array_equal(gray, np.repeat(np.round(gray16 / 257.0).astype(np.uint8)[..., None], 3, -1))
    assert (gray == 255).mean() < 0.1  # Pillow's convert("RGB") would make 23 of 24 pixels 255
    rgb16 = (np.arange(4 * 6 * 3).reshape(4, 6, 3) * 900).astype(np.uint16)
    cv2.imwrite(str(image_file), rgb16[..., ::-1])
    np.testing.assert_allclose(seq.read_rgb(0), rgb16 / 257.0, atol=1.0)


def test_synthetic_short_ground_truth_or_missing_frame(tmp_path):
    make_synthetic(tmp_path, size=(16, 16))
    shorten_depth(tmp_path, "seq_000000")
    (tmp_path / "seq_000002/rgb/000001.png").unlink()
    errors = [s.error for s in load_sequences("synthetic", tmp_path)]
    assert "seq_000000/depth.npy: shape (2, 16, 16), expected 3 frames" in errors[0]
    assert errors[1] is None
    assert errors[2] == f"{tmp_path / 'seq_000002/rgb'}: 2 frames but meta.json says 3"


def test_synthetic_16_bit_frames_are_scaled(tmp_path):
    video = render_video(0, 2, (16, 16))
    write_video_dir(video, tmp_path / "seq")
    cv2.imwrite(str(tmp_path / "seq/rgb/000001.png"), (video.rgb[1][..., ::-1].astype(np.uint16) * 257))
    (seq,) = load_sequences("synthetic", tmp_path)
    np.testing.assert_array_equal(seq.read_rgb(1), video.rgb[1])


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
    assert short.num_frames == 3 and fwd.shape == (2, 2, 24, 32) and valid_bwd.shape == (2, 24, 32)  # memory layout
    np.testing.assert_array_equal(flows_to_disk(fwd), video.flow_fwd[:2])


@pytest.mark.parametrize("dataset", ["kitti", "scannet", "bonn", "sintel", "synthetic"])
def test_empty_or_wrong_folders_are_input_errors(tmp_path, dataset):
    with pytest.raises(InputError):
        load_sequences(dataset, tmp_path)
    with pytest.raises(InputError, match="no such directory"):
        load_sequences(dataset, tmp_path / "missing")


def test_unknown_dataset(tmp_path):
    with pytest.raises(InputError, match="unknown dataset"):
        load_sequences("nyu", tmp_path)
