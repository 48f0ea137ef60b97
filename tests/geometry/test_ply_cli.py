"""``bufferanytime depth --save ply``: PLY files that trimesh reads back with the right points, colours and normals;
the ground-truth depth of a synthetic video gives the scene's own points; bad camera options are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from bufferanytime.geometry import parse_intrinsics, unproject
from bufferanytime.geometry.options import PointCloudOptions
from bufferanytime.geometry.pointcloud import write_ply_frames
from bufferanytime.geometry.unproject import relative_depth
from bufferanytime.synthetic import render_video, write_video_dir
from bufferanytime.synthetic.renderer import _cast
from bufferanytime.synthetic.scene import sample_scene
from bufferanytime.synthetic.textures import TextureBank
from bufferanytime.tasks import METRIC_DEPTH
from bufferanytime.testing import make_tiny_metric_prior
from tests.helpers import files_under, run_main

SEED, FRAMES, SIZE = 50002, 3, (30, 40)
FAST = ("--max-res", "42", "-q")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    video = render_video(SEED, FRAMES, SIZE)
    return video, write_video_dir(video, tmp_path_factory.mktemp("synthetic") / "clip")


def _load(path):
    cloud = trimesh.load(path)
    assert isinstance(cloud, trimesh.PointCloud)
    return cloud, cloud.metadata["_ply_raw"]["vertex"]["data"]


def test_ground_truth_depth_gives_the_scenes_points(clip, tmp_path):
    """PLY of the exact metric depth with the exact camera: every point lies where the renderer's ray hits."""
    video, folder = clip
    intrinsics = parse_intrinsics(str(folder / "meta.json")).resolve(*SIZE)
    options = PointCloudOptions(drop_edges=0)
    write_ply_frames(METRIC_DEPTH, video.depth, video.rgb, intrinsics, tmp_path / "ply", options)
    scene_rng, texture_rng, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(SEED).spawn(3))
    scene = sample_scene(scene_rng, FRAMES, SIZE, TextureBank(texture_rng, None))
    for t in range(FRAMES):
        cloud, raw = _load(tmp_path / f"ply/{t:06d}.ply")
        assert len(cloud.vertices) == SIZE[0] * SIZE[1]
        np.testing.assert_array_equal(cloud.colors[:, :3], video.rgb[t].reshape(-1, 3))
        pose = video.poses[t]
        direction = cloud.vertices @ pose[:3, :3].T
        distance = np.linalg.norm(direction, axis=1)
        hits = _cast(scene.objects, t, pose[:3, 3], direction / distance[:, None])
        assert (np.abs(hits.depth - distance) / distance).max() < 1e-4  # float32 coordinates in the file
        assert "nx" not in raw.dtype.names


def test_depth_then_ply_with_the_normals_of_an_earlier_run(clip, tiny_depth_prior, tiny_normal_prior, tmp_path,
                                                           capsys):
    _, folder = clip
    out = tmp_path / "out"
    code, err = run_main(capsys, "normal", str(folder / "rgb"), "--model", str(tiny_normal_prior), "-o", str(out),
                         "--save", "npz", *FAST)
    assert code == 0, err
    code, err = run_main(capsys, "depth", str(folder / "rgb"), "--model", str(tiny_depth_prior), "-o", str(out),
                         "--save", "npz,ply", "--intrinsics", str(folder / "meta.json"), "--ply-drop-edges", "0",
                         *FAST)
    assert code == 0, err
    assert sum("zero shift" in line for line in err) == 1  # the relative-depth assumption, said once
    result = out / "rgb"
    meta = json.loads((result / "depth.meta.json").read_text())
    assert meta["intrinsics"]["fx"] == pytest.approx(json.loads((folder / "meta.json").read_text())["intrinsics"]["fx"])
    assert meta["outputs"]["ply"]["normals_from"] == "normal.npz"
    assert meta["unprojection"]["shift"] == 0.0
    with np.load(result / "depth.npz") as npz, np.load(result / "normal.npz") as normals_npz:
        disparity, normals = npz["disparity"], normals_npz["normal"]
    intrinsics = parse_intrinsics(str(folder / "meta.json")).resolve(*SIZE)
    rgb = json.loads((folder / "meta.json").read_text())  # noqa: F841 - the frames are read below
    from bufferanytime.io.images import read_rgb

    for t in range(FRAMES):
        keep = disparity[t] > 0
        cloud, raw = _load(result / f"depth_ply/{t:06d}.ply")
        assert len(cloud.vertices) == keep.sum() > 0
        expected = unproject(relative_depth(disparity[t], meta["unprojection"]["scale"]), intrinsics)[keep]
        np.testing.assert_allclose(cloud.vertices, expected, rtol=1e-5)
        assert (cloud.vertices[:, 2] < 0).all()
        frame = read_rgb(folder / f"rgb/{t:06d}.png")
        np.testing.assert_array_equal(cloud.colors[:, :3], frame[keep])
        np.testing.assert_array_equal(np.stack([raw["nx"], raw["ny"], raw["nz"]], 1), normals[t][keep])


def _max_jump(disparity: np.ndarray) -> np.ndarray:
    """Per pixel, the largest relative depth jump to a 4-neighbour (written out again, independently)."""
    z = 1.0 / disparity.astype(np.float64)
    jump = np.zeros_like(z)
    for a, b, sa, sb in ((z[:, 1:], z[:, :-1], np.s_[:, 1:], np.s_[:, :-1]), (z[1:], z[:-1], np.s_[1:], np.s_[:-1])):
        rel = np.abs(a - b) / np.minimum(a, b)
        jump[sa] = np.maximum(jump[sa], rel)
        jump[sb] = np.maximum(jump[sb], rel)
    return jump


def test_stride_and_edge_dropping_thin_the_points(clip, tiny_depth_prior, tmp_path, capsys):
    _, folder = clip

    def run(name, *extra):
        code, err = run_main(capsys, "depth", str(folder / "rgb"), "--model", str(tiny_depth_prior), "-o",
                             str(tmp_path / name), "--save", "npz,ply", "--fov", "70", *extra, *FAST)
        assert code == 0, err
        meta = json.loads((tmp_path / f"{name}/rgb/depth.meta.json").read_text())
        assert meta["intrinsics"]["source"] == "--fov 70"
        return len(_load(tmp_path / f"{name}/rgb/depth_ply/000000.ply")[0].vertices)

    every = run("all", "--ply-drop-edges", "0")
    with np.load(tmp_path / "all/rgb/depth.npz") as npz:
        disparity = npz["disparity"][0]
    assert (disparity > 0).all() and every == SIZE[0] * SIZE[1]
    assert run("stride", "--ply-stride", "3", "--ply-drop-edges", "0") == 10 * 14
    jump = _max_jump(disparity)
    values = np.unique(jump)
    middle = len(values) // 2
    threshold = float((values[middle] + values[middle + 1]) / 2)  # halfway between two jumps: no rounding ties
    kept = run("edges", "--ply-drop-edges", f"{threshold!r}")
    assert kept == int((jump <= threshold).sum())
    assert 0 < kept < every


def test_default_intrinsics_are_recorded(clip, tiny_depth_prior, tmp_path, capsys):
    _, folder = clip
    code, err = run_main(capsys, "depth", str(folder / "rgb"), "--model", str(tiny_depth_prior), "-o",
                         str(tmp_path / "o"), "--save", "npz", *FAST)
    assert code == 0, err
    meta = json.loads((tmp_path / "o/rgb/depth.meta.json").read_text())
    assert meta["intrinsics"]["source"] == "default fov 60" and meta["intrinsics"]["cx"] == SIZE[1] / 2
    assert "ply" not in meta["outputs"]


@pytest.mark.parametrize(("kind", "options", "expect"), [
    ("depth", ("--intrinsics", "500,500,20"), "expected 4 values"),
    ("depth", ("--intrinsics=-500,500,20,15",), "focal lengths must be positive"),
    ("depth", ("--intrinsics", "CALIB"), "cannot parse"),
    ("depth", ("--intrinsics", "no-such-calib.txt"), "no such file"),
    ("depth", ("--fov", "200"), "between 0 and 180"),
    ("normal", ("--save", "ply"), "--save ply needs depth"),
])
def test_bad_camera_options_give_one_line_and_write_nothing(clip, tmp_path, capsys, kind, options, expect):
    _, folder = clip
    calib = tmp_path / "calib.txt"
    calib.write_text("this is not a calibration\n")
    options = tuple(str(calib) if o == "CALIB" else o for o in options)
    out = tmp_path / "out"
    code, err = run_main(capsys, kind, str(folder / "rgb"), "-o", str(out), "--save", "ply", *options)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err
    assert not files_under(out) and not out.exists()


def test_metric_prior_on_a_real_clip_writes_metres_and_ply_in_metres(shared_dir, tmp_path, capsys):
    prior = make_tiny_metric_prior(tmp_path / "metric-prior")
    video = shared_dir / "data/videos/davis_rollercoaster.mp4"
    code, err = run_main(capsys, "depth", str(video), "--model", str(prior), "--max-frames", "3", "--save",
                         "npz,ply", "--ply-stride", "8", "--ply-drop-edges", "0", "--fov", "55", "-o",
                         str(tmp_path / "out"), *FAST)
    assert code == 0, err
    assert not any("zero shift" in line for line in err)  # metres need no assumption
    result = tmp_path / "out/davis_rollercoaster"
    meta = json.loads((result / "metric_depth.meta.json").read_text())
    assert meta["unprojection"]["depth"] == "metric z-depth, metres"
    with np.load(result / "metric_depth.npz") as npz:
        depth = npz["depth"]
    assert depth.shape == (3, 540, 960) and 0 < np.median(depth) < 20
    intrinsics = parse_intrinsics(fov=55).resolve(540, 960)
    for t in range(3):
        cloud, _ = _load(result / f"metric_depth_ply/{t:06d}.ply")
        expected = unproject(depth[t], intrinsics)[::8, ::8].reshape(-1, 3)
        np.testing.assert_allclose(cloud.vertices, expected, rtol=1e-5)
