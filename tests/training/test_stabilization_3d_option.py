"""``train --stabilization 3d``: the 3D-consistent stabilization loss, with the exact poses of synthetic data or
the camera estimated from the video.

A run trains and writes its model on data that brings its camera poses; a depth video without poses trains on its
estimated camera, recorded in the run folder and read back on resume; normals without poses are refused in one line
before any model work, leaving nothing behind; the crop's intrinsics follow the crop and the resize.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bufferanytime.cli.main import main
from bufferanytime.io.outputs import write_image
from bufferanytime.synthetic import render_video
from bufferanytime.synthetic.dataset import clip_camera, write_video_dir
from bufferanytime.training import train

from .conftest import tiny_config


def _cli(data: Path, model: Path, run: Path, *extra: str, kind: str = "depth") -> list[str]:
    return ["train", kind, "--data", str(data), "--model", str(model), "--out", str(run), "--clip-len", "4",
            "--res", "42x56", "--warmup", "0", "--lr", "1e-3", "--workers", "0", "--no-edge-mask", "--cpu", "-q",
            *extra]


def test_a_3d_run_trains_and_records_the_option(flicker_data, tiny_depth_prior, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(flicker_data, tiny_depth_prior, run, steps=2, stabilization="3d"))
    assert (run / "model").is_dir()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2]
    assert all(np.isfinite(e["loss_stable"]) and e["loss_stable"] > 0 for e in log), log
    assert json.loads((run / "config.json").read_text())["stabilization"] == "3d"


def test_normals_train_with_the_3d_loss_through_deferred_backward(flicker_data, tiny_normal_prior, tmp_path,
                                                                  monkeypatch):
    from bufferanytime.training import objectives

    calls = []
    real = objectives.training_stabilization_3d

    def spy(output, flows, camera, config, **kw):
        calls.append((tuple(output.shape), tuple(camera["poses"].shape)))
        return real(output, flows, camera, config, **kw)

    monkeypatch.setattr(objectives, "training_stabilization_3d", spy)
    run = tmp_path / "run"
    train(tiny_config(flicker_data, tiny_normal_prior, run, kind="normal", steps=1, res=(48, 64),
                      stabilization="3d"))
    assert (run / "model").is_dir()
    assert calls and all(c[1] == (1, 4, 4, 4) and c[0][2] == 3 for c in calls), calls


def _mixed_data(tmp_path: Path) -> tuple[Path, Path]:
    """A synthetic video with its exact poses and a folder of frames without any."""
    data = tmp_path / "data"
    write_video_dir(render_video(0, 4, (48, 64)), data / "seq_000000")
    frames = data / "plain"
    frames.mkdir()
    for k, frame in enumerate(render_video(1, 6, (48, 64), camera="dolly").rgb):
        write_image(frames / f"{k:04d}.png", frame)
    return data, frames


@pytest.mark.parametrize("poses", ["auto", "estimated"])
def test_a_video_without_poses_trains_on_its_estimated_camera(poses, tiny_depth_prior, tmp_path):
    data, frames = _mixed_data(tmp_path)
    run = tmp_path / "run"
    assert main(_cli(data, tiny_depth_prior, run, "--steps", "2", "--stabilization", "3d",
                     "--camera-poses", poses)) == 0
    cameras = json.loads((run / "cameras.json").read_text())
    expected = {str(frames)} if poses == "auto" else {str(frames), str(data / "seq_000000" / "rgb")}
    assert set(cameras) == expected, cameras
    camera = cameras[str(frames)]
    assert camera["source"] == "estimated" and len(camera["poses"]) == 6
    np.testing.assert_allclose(camera["poses"][0], np.eye(4))  # the world is frame 0's camera
    assert all(camera["intrinsics"][k] > 0 for k in ("fx", "fy"))
    # a resumed run reads them back rather than solving them again
    before = (run / "cameras.json").stat().st_mtime_ns
    assert main(_cli(data, tiny_depth_prior, run, "--steps", "3", "--stabilization", "3d",
                     "--camera-poses", poses, "--resume")) == 0
    assert (run / "cameras.json").stat().st_mtime_ns == before


def test_a_known_camera_sets_the_estimated_cameras_intrinsics(tiny_depth_prior, tmp_path, capsys):
    data, frames = _mixed_data(tmp_path)
    run = tmp_path / "run"
    assert main(_cli(data, tiny_depth_prior, run, "--steps", "1", "--stabilization", "3d", "--fov", "70")) == 0
    k = json.loads((run / "cameras.json").read_text())[str(frames)]["intrinsics"]
    focal = 32 / math.tan(math.radians(35))  # half of the 64 px width over tan(half the field of view)
    assert k["fx"] == pytest.approx(focal) and k["fy"] == pytest.approx(focal)
    assert (k["cx"], k["cy"]) == (32, 24)
    run = tmp_path / "given"
    assert main(_cli(data, tiny_depth_prior, run, "--steps", "1", "--stabilization", "3d",
                     "--intrinsics", "40,41,31.5,23.5")) == 0  # OpenCV pixel centres: + 0.5
    k = json.loads((run / "cameras.json").read_text())[str(frames)]["intrinsics"]
    assert (k["fx"], k["fy"], k["cx"], k["cy"]) == pytest.approx((40, 41, 32, 24))


THREE_D = ["--stabilization", "3d"]


@pytest.mark.parametrize("bad, word", [([*THREE_D, "--fov", "180"], "--fov"),
                                       ([*THREE_D, "--fov", "60", "--intrinsics", "1,1,1,1"], "not both"),
                                       ([*THREE_D, "--intrinsics", "1,1"], "--intrinsics"),
                                       (["--fov", "60"], "--stabilization 3d")])
def test_unusable_intrinsics_are_one_line_before_any_work(bad, word, tiny_depth_prior, tmp_path, capsys):
    data, _ = _mixed_data(tmp_path)
    run = tmp_path / "run"
    assert main(_cli(data, tiny_depth_prior, run, "--steps", "1", *bad)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and word in err[0], err
    assert not run.exists()


def test_normals_without_poses_are_one_line_before_any_work(tiny_normal_prior, tmp_path, capsys):
    data, frames = _mixed_data(tmp_path)
    run = tmp_path / "run"
    code = main(_cli(data, tiny_normal_prior, run, "--steps", "1", "--stabilization", "3d", kind="normal"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {frames}: --stabilization 3d with normal needs the exact camera poses"), err
    assert not run.exists()


def test_crop_intrinsics_project_like_the_full_frame(tmp_path):
    """A world point seen at (u, v) in the full frame is at the cropped and resized position in the clip."""
    video = render_video(2, 3, (48, 64))
    folder = write_video_dir(video, tmp_path / "seq")
    crop, res = (10, 6, 40, 30), (60, 80)
    poses, k = clip_camera(folder / "rgb", [1, 2], crop, res)
    np.testing.assert_allclose(poses, np.stack(video.poses)[[1, 2]])
    u, v, z = 33.5, 20.5, 4.0  # a point in front of the camera, as the full frame sees it
    full = video.intrinsics
    x, y = (u - full["cx"]) / full["fx"] * z, -(v - full["cy"]) / full["fy"] * z
    u2, v2 = k[2] + k[0] * x / z, k[3] - k[1] * y / z
    np.testing.assert_allclose([u2, v2], [(u - crop[0]) * res[1] / crop[2], (v - crop[1]) * res[0] / crop[3]])
