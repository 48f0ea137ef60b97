"""``bufferanytime consistency``: the ground truth of a synthetic video agrees with itself; a wrong normal
convention does not; missing buffers are one error line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bufferanytime.synthetic import render_video, write_video_dir
from tests.helpers import run_main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    video = render_video(50004, 3, (36, 48))
    return video, write_video_dir(video, tmp_path_factory.mktemp("synthetic") / "clip")


def _outputs(folder, disparity, normals) -> None:
    """An output folder as `bufferanytime depth` and `normal` leave it."""
    folder.mkdir()
    np.savez(folder / "depth.npz", disparity=disparity.astype(np.float32))
    np.savez(folder / "normal.npz", normal=normals.astype(np.float32))


def test_ground_truth_buffers_agree_and_mirrored_normals_do_not(world, tmp_path, capsys):
    video, clip = world
    good, bad = tmp_path / "good", tmp_path / "bad"
    _outputs(good, 3.0 / video.depth, video.normal)  # exact depth as disparity: the zero shift holds
    _outputs(bad, 3.0 / video.depth, video.normal * np.array([1.0, -1.0, 1.0]))
    report = tmp_path / "c.json"
    code, err = run_main(capsys, "consistency", str(good), str(bad), "--intrinsics", str(clip / "meta.json"), "-o",
                         str(report))
    assert code == 0, err
    data = json.loads(report.read_text())
    good_r, bad_r = data[str(good)]["depth.npz"], data[str(bad)]["depth.npz"]
    assert good_r["mean_deg"] < 3.0 and len(good_r["per_frame_deg"]) == 3
    assert good_r["std_over_frames_deg"] < 2.0
    assert bad_r["mean_deg"] > 20.0
    assert "meta.json" in good_r["intrinsics"]["source"]


def test_recorded_intrinsics_are_used_and_a_wrong_camera_is_seen(world, tmp_path, capsys):
    video, clip = world
    folder = tmp_path / "v"
    _outputs(folder, 1.0 / video.depth, video.normal)
    meta = json.loads((clip / "meta.json").read_text())
    (folder / "depth.meta.json").write_text(json.dumps({"intrinsics": {**meta["intrinsics"], "width": 48,
                                                                       "height": 36, "source": "test"}}))
    report = tmp_path / "r.json"
    assert run_main(capsys, "consistency", str(folder), "-o", str(report))[0] == 0
    recorded = json.loads(report.read_text())[str(folder)]["depth.npz"]
    assert recorded["mean_deg"] < 3.0 and "recorded in depth.meta.json" in recorded["intrinsics"]["source"]
    assert run_main(capsys, "consistency", str(folder), "--fov", "150", "-o", str(report))[0] == 0
    assert json.loads(report.read_text())[str(folder)]["depth.npz"]["mean_deg"] > recorded["mean_deg"] + 5.0


def test_missing_buffers_are_one_error_line(world, tmp_path, capsys):
    video, _ = world
    only_depth = tmp_path / "d"
    only_depth.mkdir()
    np.savez(only_depth / "depth.npz", disparity=np.ones((2, 8, 8), np.float32))
    code, err = run_main(capsys, "consistency", str(only_depth))
    assert code == 2 and len(err) == 1 and "no readable normal.npz" in err[0]
    mismatched = tmp_path / "m"
    _outputs(mismatched, np.ones((2, 8, 8)), np.ones((2, 8, 9, 3)))
    code, err = run_main(capsys, "consistency", str(mismatched), str(only_depth), "-o", str(tmp_path / "x.json"))
    assert code == 2 and len(err) == 2 and "does not match" in err[0]
    assert not (tmp_path / "x.json").exists()


def test_missing_folder_or_a_file_is_named_as_such(world, tmp_path, capsys, monkeypatch):
    video, _ = world
    good = tmp_path / "good"
    _outputs(good, 3.0 / video.depth, video.normal)
    afile = tmp_path / "depth.npz"
    afile.write_bytes(b"mine")
    report = tmp_path / "c.json"
    code, err = run_main(capsys, "consistency", str(tmp_path / "nope"), str(afile), str(good), "-o", str(report))
    assert code == 1
    assert err == [f"error: {tmp_path / 'nope'}: no such folder",
                   f"error: {afile}: not a folder; give the output folder of one input (OUT/NAME)"]
    assert list(json.loads(report.read_text())) == [str(good)]
    assert not (tmp_path / "nope").exists() and afile.read_bytes() == b"mine"
    monkeypatch.chdir(tmp_path)
    assert run_main(capsys, "consistency", "nope") == (2, ["error: nope: no such folder"])
