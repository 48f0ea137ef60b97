"""``bufferanytime depth --save poses,colmap,nerfstudio,exr-multi,fused,rrd``: each format read back by its own
reader (pycolmap, json, OpenEXR, trimesh, rerun) and consistent with camera.json; bad input refused before any
model work; a short video warned about and marked; a failed write leaves nothing."""

from __future__ import annotations

import errno
import importlib.util
import json
import math

import numpy as np
import pytest

from bufferanytime.geometry.camera_exports import world_to_colmap
from bufferanytime.geometry.unproject import relative_depth
from bufferanytime.synthetic import render_video, write_video_dir
from tests.helpers import files_under, run_main

FAST = ("--max-res", "42", "-q")
ALL = "npz,poses,colmap,nerfstudio,exr-multi,fused,rrd"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video_dir(render_video(50003, 10, (48, 64)), tmp_path_factory.mktemp("synthetic") / "clip")


@pytest.fixture(scope="module")
def run(clip, tiny_depth_prior, tiny_normal_prior, tmp_path_factory):
    """A normal run, then a depth run writing every camera format into the same output."""
    from bufferanytime.cli.main import main

    out = tmp_path_factory.mktemp("camera") / "out"
    assert main(["normal", str(clip / "rgb"), "--model", str(tiny_normal_prior), "-o", str(out), "--save", "npz",
                 *FAST]) == 0
    assert main(["depth", str(clip / "rgb"), "--model", str(tiny_depth_prior), "-o", str(out), "--save", ALL,
                 *FAST]) == 0
    folder = out / "rgb"
    return folder, json.loads((folder / "camera.json").read_text())


def _poses(camera: dict) -> dict[int, np.ndarray]:
    return {f["index"]: np.array(f["camera_to_world"]) for f in camera["frames"] if f["tracked"]}


def test_camera_json_and_tum_hold_every_frame(run):
    folder, camera = run
    meta = json.loads((folder / "depth.meta.json").read_text())
    assert len(camera["frames"]) == 10 and camera["intrinsics"]["focal_source"] in ("estimated", "default")
    assert meta["camera"]["intrinsics"]["fx"] == camera["intrinsics"]["fx"]
    assert "moving objects" in camera["masked"] and "z towards the viewer" in camera["axes"]
    np.testing.assert_allclose(camera["frames"][0]["camera_to_world"], np.eye(4), atol=1e-12)
    tum = [line.split() for line in (folder / "camera_tum.txt").read_text().splitlines() if not line.startswith("#")]
    assert len(tum) == len(_poses(camera))
    assert not [p for p in folder.parent.rglob(".*")]  # no staging or work folder left


def test_pycolmap_reads_the_colmap_files(run):
    pycolmap = pytest.importorskip("pycolmap")
    folder, camera = run
    reconstruction = pycolmap.Reconstruction(str(folder / "colmap" / "sparse" / "0"))
    poses = _poses(camera)
    assert reconstruction.num_images() == len(poses) and reconstruction.num_points3D() > 0
    cam = reconstruction.cameras[1]
    assert cam.model.name == "PINHOLE" and cam.params[0] == pytest.approx(camera["intrinsics"]["fx"])
    for image in reconstruction.images.values():
        k = int(image.name.split(".")[0])
        np.testing.assert_allclose(image.cam_from_world().matrix(), world_to_colmap(poses[k])[:3], atol=1e-8)
        assert (folder / "colmap" / "images" / image.name).is_file()


def test_nerfstudio_transforms_agree_with_camera_json(run):
    folder, camera = run
    transforms = json.loads((folder / "nerfstudio" / "transforms.json").read_text())
    intr = camera["intrinsics"]
    assert (transforms["fl_x"], transforms["fl_y"], transforms["cx"], transforms["cy"]) == (
        intr["fx"], intr["fy"], intr["cx"], intr["cy"])
    assert (transforms["w"], transforms["h"]) == (64, 48)
    poses = _poses(camera)
    assert len(transforms["frames"]) == len(poses)
    for frame in transforms["frames"]:
        k = int(frame["file_path"].split("/")[1].split(".")[0])
        np.testing.assert_array_equal(frame["transform_matrix"], poses[k])
        assert np.load(folder / "nerfstudio" / frame["depth_file_path"]).shape == (48, 64)
        assert np.load(folder / "nerfstudio" / frame["normal_file_path"]).shape == (48, 64, 3)


def test_exr_multi_reads_back_every_channel_exactly(run):
    import OpenEXR

    folder, camera = run
    meta = json.loads((folder / "depth.meta.json").read_text())
    with np.load(folder / "depth.npz") as npz, np.load(folder / "normal.npz") as normals:
        disparity, normal = npz["disparity"], normals["normal"]
    scale = meta["camera"]["relative_depth_scale"]
    poses = _poses(camera)
    for k in range(10):
        with OpenEXR.File(str(folder / "exr_multi" / f"{k:06d}.exr")) as exr:
            channels = {name: channel.pixels.copy() for name, channel in exr.channels().items()}
            header = dict(exr.header())
        np.testing.assert_array_equal(channels["Z"], relative_depth(disparity[k], scale).astype(np.float32))
        for c, name in enumerate(("N.x", "N.y", "N.z")):
            np.testing.assert_array_equal(channels[name], normal[k][..., c])
        assert header["fx"] == pytest.approx(camera["intrinsics"]["fx"])
        if k in poses:
            np.testing.assert_allclose(header["cameraToWorld"], poses[k], atol=1e-6)
            np.testing.assert_allclose(header["worldToCamera"].T @ poses[k], np.eye(4), atol=1e-5)


def test_the_fused_cloud_opens_in_trimesh_with_colours_and_normals(run):
    import trimesh

    folder, _ = run
    cloud = trimesh.load(folder / "fused.ply")
    raw = cloud.metadata["_ply_raw"]["vertex"]["data"]
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) > 100
    assert {"nx", "ny", "nz", "red", "green", "blue"} <= set(raw.dtype.names)
    lengths = np.linalg.norm(np.stack([raw["nx"], raw["ny"], raw["nz"]], axis=1), axis=1)
    np.testing.assert_allclose(lengths, 1.0, atol=1e-5)


def test_the_fused_glb_holds_the_cloud_and_the_camera_path(run):
    import trimesh

    folder, camera = run
    ply = trimesh.load(folder / "fused.ply")
    scene = trimesh.load(folder / "fused.glb")
    cloud, = [g for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud)]
    np.testing.assert_allclose(cloud.vertices, ply.vertices, atol=1e-6)  # the same cloud, same (glTF's) axes
    assert cloud.colors.shape == (len(ply.vertices), 4)
    lines = np.concatenate([g.vertices for g in scene.geometry.values() if isinstance(g, trimesh.path.Path3D)])
    centres = np.array([p[:3, 3] for p in _poses(camera).values()])
    for centre in centres:  # every tracked camera centre lies on the drawn path
        assert np.linalg.norm(lines - centre, axis=1).min() < 1e-5


def test_the_rerun_recording_holds_the_scene(run):
    pytest.importorskip("rerun")
    from rerun.chunk import RrdReader

    folder, _ = run
    schema = str(RrdReader(str(folder / "scene.rrd")).store().schema())
    for entity in ("/world/camera:Pinhole", "/world/camera:Transform3D", "/world/camera/image:Image",
                   "/world/camera/depth:DepthImage", "/world/camera/normals:Image", "/world/points:Points3D"):
        assert entity in schema, entity


@pytest.mark.parametrize("fmt", ["colmap", "nerfstudio", "fused"])
def test_a_normal_run_refuses_the_camera_formats_before_any_model_work(fmt, small_video, tmp_path, capsys):
    code, err = run_main(capsys, "normal", str(small_video), "-o", str(tmp_path / "out"), "--save", f"npz,{fmt}")
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: --save {fmt} needs depth"), err
    assert not (tmp_path / "out").exists()


def test_rrd_without_the_rerun_sdk_is_refused_before_any_model_work(small_video, tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rerun" else find_spec(name, *a))
    code, err = run_main(capsys, "depth", str(small_video), "-o", str(tmp_path / "out"), "--save", "rrd")
    assert code == 2 and err == ["error: --save rrd needs the rerun SDK: pip install 'bufferanytime[camera]' (or "
                                 "rerun-sdk)"]
    assert not (tmp_path / "out").exists()


def test_a_two_frame_video_warns_and_marks_the_poses_unreliable(small_video, tiny_depth_prior, tmp_path, capsys):
    code, err = run_main(capsys, "depth", str(small_video), "--model", str(tiny_depth_prior), "-o",
                         str(tmp_path / "out"), "--save", "poses", "--max-frames", "2", *FAST)
    assert code == 0, err
    assert [line for line in err if "camera path needs at least 3" in line][0].startswith("warning: clip: ")
    camera = json.loads((tmp_path / "out" / "clip" / "camera.json").read_text())
    assert camera["reliable"] is False and camera["warnings"]


def test_a_given_fov_keeps_priority(clip, tiny_depth_prior, tmp_path, capsys):
    code, err = run_main(capsys, "depth", str(clip / "rgb"), "--model", str(tiny_depth_prior), "-o",
                         str(tmp_path / "out"), "--save", "poses", "--fov", "70", *FAST)
    assert code == 0, err
    intr = json.loads((tmp_path / "out" / "rgb" / "camera.json").read_text())["intrinsics"]
    assert intr["focal_source"] == "given" and intr["fx"] == pytest.approx(32 / math.tan(math.radians(35)))


def test_a_failed_camera_write_leaves_nothing_and_keeps_other_files(clip, tiny_depth_prior, tmp_path, capsys,
                                                                    monkeypatch):
    from bufferanytime.geometry import camera_exports

    folder = tmp_path / "out" / "rgb"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    write_bytes = camera_exports.write_bytes

    def full_disk(path, data):
        if str(path).endswith("transforms.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        write_bytes(path, data)

    monkeypatch.setattr(camera_exports, "write_bytes", full_disk)
    code, err = run_main(capsys, "depth", str(clip / "rgb"), "--model", str(tiny_depth_prior), "-o",
                         str(tmp_path / "out"), "--save", "npz,poses,nerfstudio", *FAST)
    assert code == 2
    assert len([line for line in err if line.startswith("error: ")]) == 1 and "No space left" in err[-1], err
    assert files_under(tmp_path / "out") == [folder / "notes.txt"]
