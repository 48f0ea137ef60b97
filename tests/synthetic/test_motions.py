"""The motion options of the synthetic world: a forward dolly, a pure rotation, objects moving in depth or none.

Each option is checked on what it promises about the exact camera poses and the moving-object mask, and the
folders record the options and the mask; the command refuses to mix videos made with other motions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.synthetic import SyntheticVideoDataset, render_video
from bufferanytime.synthetic.scene import sample_scene
from bufferanytime.synthetic.textures import TextureBank
from tests.helpers import run_main

SIZE = (32, 48)
SEEDS = (0, 1, 2)


def relative_poses(video) -> list[np.ndarray]:
    """Camera k -> camera k+1 transforms (4x4) of a video."""
    poses = np.stack(video.poses)
    return [np.linalg.inv(poses[k + 1]) @ poses[k] for k in range(len(poses) - 1)]


@pytest.mark.parametrize("seed", SEEDS)
def test_dolly_moves_straight_ahead_without_turning(seed):
    video = render_video(seed, 5, SIZE, camera="dolly", objects="static")
    steps = relative_poses(video)
    for rel in steps:
        np.testing.assert_allclose(rel[:3, :3], np.eye(3), atol=1e-12)  # no rotation
        np.testing.assert_allclose(rel[:3, 3], steps[0][:3, 3], atol=1e-12)  # constant speed
    t = steps[0][:3, 3]
    assert t[2] > 0.02 and abs(t[0]) < 1e-9  # the scene comes closer: the camera moves along its -z, not sideways
    assert not video.moving.any() and video.object_motion == "static"


@pytest.mark.parametrize("seed", SEEDS)
def test_rotation_turns_on_the_spot(seed):
    video = render_video(seed, 5, SIZE, camera="rotate", objects="static")
    for rel in relative_poses(video):
        np.testing.assert_allclose(rel[:3, 3], 0.0, atol=1e-9)  # the centre stays put
        angle = np.degrees(np.arccos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1, 1)))
        assert 0.3 < angle < 3.0


def test_objects_moving_in_depth_move_along_the_line_of_sight():
    frames = 8
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, frames, SIZE, TextureBank(np.random.default_rng(99)), objects="depth")
        eye = scene.cam_to_world[frames // 2][:3, 3]
        moving = [o for o in scene.objects if o.moving]
        assert moving
        for obj in moving:
            path = obj.translations - obj.translations[0]
            sight = (obj.translations[0] - eye) * np.array([1.0, 0.0, 1.0])
            sight /= np.linalg.norm(sight)
            # every displacement is parallel to the horizontal line of sight
            np.testing.assert_allclose(np.cross(path, sight), 0.0, atol=1e-9)
            assert np.abs(path @ sight).max() > 0.05


def test_static_objects_and_the_moving_mask():
    still = render_video(3, 3, SIZE, objects="static")
    assert not any(still.object_moving) and not still.moving.any()
    wander = render_video(1, 3, SIZE)
    flags = np.asarray(wander.object_moving)
    assert flags.any()
    np.testing.assert_array_equal(wander.moving, flags[wander.object_id])


def test_bad_motion_names_are_refused():
    with pytest.raises(InputError, match="camera must be one of"):
        render_video(0, 2, SIZE, camera="orbit")
    with pytest.raises(InputError, match="objects one of"):
        render_video(0, 2, SIZE, objects="fly")


def test_cli_records_the_motions_and_the_moving_mask(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["synth", "-o", str(out), "--frames", "3", "--size", "24x32", "--seed", "1", "-q"]
    code, err = run_main(capsys, *args, "--camera", "dolly", "--objects", "depth")
    assert code == 0 and err == []
    data = SyntheticVideoDataset(out)
    meta = data.meta(0)
    assert meta["motion"] == {"camera": "dolly", "objects": "depth"}
    assert len(meta["poses"]) == 3 and len(meta["scene"]["moving"]) == len(meta["scene"]["objects"])
    direct = render_video(1, 3, (24, 32), camera="dolly", objects="depth")
    np.testing.assert_array_equal(data[0]["moving"], direct.moving)
    np.testing.assert_allclose(np.array(meta["poses"]), np.stack(direct.poses))
    # the same folder with another motion is not silently kept
    before = (out / "seq_000001" / "meta.json").read_bytes()
    code, err = run_main(capsys, *args, "--camera", "rotate")
    assert code == 2
    assert err == [f"error: {out / 'seq_000001'} holds a video made with other settings; use --overwrite to replace it"]
    assert (out / "seq_000001" / "meta.json").read_bytes() == before


def test_cli_refuses_an_unknown_motion(tmp_path, capsys):
    code, err = run_main(capsys, "synth", "-o", str(tmp_path / "o"), "--camera", "orbit")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "--camera" in err[0]
    assert not (tmp_path / "o").exists()


def test_folders_without_the_mask_still_read(tmp_path):
    from bufferanytime.synthetic import write_video_dir

    folder = write_video_dir(render_video(2, 2, (16, 24)), tmp_path / "seq")
    (folder / "moving.npy").unlink()
    meta = json.loads((folder / "meta.json").read_text())
    sample = SyntheticVideoDataset(tmp_path)[0]
    assert "moving" not in sample and sample["depth"].shape == (2, 16, 24) and meta["motion"]["camera"] == "wander"
