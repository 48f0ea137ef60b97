"""Writing, reading back and the ``bufferanytime synth`` command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bufferanytime.cli.main import main
from bufferanytime.cli.synth import MAX_FRAMES, MAX_SIDE, MAX_VIDEO_PIXELS, MAX_VIDEOS
from bufferanytime.errors import InputError
from bufferanytime.synthetic import SyntheticVideoDataset, render_video, write_video_dir
from tests.helpers import run_main

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


def test_write_and_read_back(tmp_path):
    video = render_video(3, 4, (24, 40))
    out = write_video_dir(video, tmp_path / "seq")
    assert sorted(p.name for p in (out / "rgb").iterdir()) == [f"{k:06d}.png" for k in range(4)]
    assert (out / "rgb.mp4").stat().st_size > 0
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left

    data = SyntheticVideoDataset(tmp_path)
    assert len(data) == 1 and data.names == ["seq"]
    sample = data[0]
    np.testing.assert_array_equal(sample["rgb"], video.rgb)  # PNG is lossless
    for name in ("depth", "normal", "flow_fwd", "flow_bwd", "flow_valid_fwd", "flow_valid_bwd"):
        assert isinstance(sample[name], np.memmap), name
        np.testing.assert_array_equal(sample[name], getattr(video, name))
    assert sample["flow_valid_fwd"].dtype == bool
    meta = sample["meta"]
    assert meta["seed"] == 3 and meta["num_frames"] == 4 and (meta["height"], meta["width"]) == (24, 40)
    assert set(meta["intrinsics"]) == {"fx", "fy", "cx", "cy"}
    assert meta["intrinsics"]["cx"] == 20.0 and meta["intrinsics"]["cy"] == 12.0
    np.testing.assert_allclose(np.array(meta["poses"]), np.stack(video.poses))
    assert [f.shape for f in data.frames(0)] == [(24, 40, 3)] * 4
    np.testing.assert_array_equal(data.frame(0, 2), video.rgb[2])

    clip = data.clip(0, 1, 3)
    np.testing.assert_array_equal(clip["rgb"], video.rgb[1:3])
    np.testing.assert_array_equal(clip["depth"], video.depth[1:3])
    np.testing.assert_array_equal(clip["flow_fwd"], video.flow_fwd[1:2])
    with pytest.raises(IndexError):
        data[1]


def test_same_seed_same_files(tmp_path):
    a = write_video_dir(render_video(8, 3, (24, 32)), tmp_path / "a")
    b = write_video_dir(render_video(8, 3, (24, 32)), tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 + 1 + 6 + 1 + 1  # frames, rgb.mp4, arrays, moving.npy, meta.json
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_dataset_errors(tmp_path):
    with pytest.raises(InputError):
        SyntheticVideoDataset(tmp_path / "missing")
    with pytest.raises(InputError):
        SyntheticVideoDataset(tmp_path)


def test_cli_writes_seeded_folders(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["synth", "-o", str(out), "--videos", "2", "--frames", "3", "--size", "24x32", "--seed", "40", "-q"]
    assert main([*args, "--flicker", "0.2"]) == 0
    data = SyntheticVideoDataset(out)
    assert data.names == ["seq_000040", "seq_000041"]
    meta = data.meta(1)
    assert meta["seed"] == 41 and meta["nuisances"]["flicker"] == 0.2
    assert data[0]["rgb"].shape == (3, 24, 32, 3)
    # same video with the same seed as the library call, apart from the colours changed by flicker
    direct = render_video(40, 3, (24, 32))
    np.testing.assert_array_equal(data[0]["depth"], direct.depth)
    # an identical re-run keeps the folders; other settings need --overwrite
    assert main([*args, "--flicker", "0.2"]) == 0
    assert "kept 2" in capsys.readouterr().out
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((out / "seq_000040" / "meta.json").read_text())["nuisances"]["flicker"] == 0.0


@pytest.mark.parametrize(
    "extra",
    [
        ["--size", "24-32"],
        ["--size", "24x"],
        ["--frames", "1"],
        ["--videos", "0"],
        ["--seed", "-3"],
        ["--flicker", "2"],
        ["--flicker", "nan"],
        ["--noise", "-0.1"],
        ["--fps", "nan"],
        ["--fps", "0"],
        ["--textures", "/nonexistent/folder"],
    ],
)
def test_cli_bad_arguments(tmp_path, capsys, extra):
    code, err = run_main(capsys, "synth", "-o", str(tmp_path / "o"), "--frames", "2", "--size", "16x16", *extra)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "o").exists()


def test_cli_conflicting_folder_before_a_good_one(tmp_path, capsys):
    """A video that cannot be written is one error line; the later ones are still rendered (exit 1)."""
    out = tmp_path / "synth"
    (out / "seq_000005").mkdir(parents=True)
    (out / "seq_000005" / "mine.txt").write_text("kept")
    code = main(["synth", "-o", str(out), "--videos", "2", "--frames", "2", "--size", "8x8", "--seed", "5", "-q"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip().splitlines() == [
        f"error: {out / 'seq_000005'} is not a synthetic video; use --overwrite to replace it"]
    assert "wrote 1 video(s)" in captured.out and "1 failed" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["seq_000005", "seq_000006"]
    assert [p.name for p in (out / "seq_000005").iterdir()] == ["mine.txt"]
    assert SyntheticVideoDataset(out).names == ["seq_000006"]


def test_photo_textures(tmp_path):
    """Photo crops from a folder of images (the shared real frames when present, else a made-up photo)."""
    frames = SHARED / "data" / "frames"
    if frames.is_dir():
        folder = frames
    else:
        import cv2

        folder = tmp_path / "photos"
        folder.mkdir()
        rng = np.random.default_rng(0)
        cv2.imwrite(str(folder / "a.png"), (rng.random((60, 80, 3)) * 255).astype(np.uint8))
    with_photos = render_video(2, 2, (24, 32), texture_dir=folder)
    plain = render_video(2, 2, (24, 32))
    assert with_photos.rgb.tobytes() != plain.rgb.tobytes()
    np.testing.assert_array_equal(with_photos.depth, plain.depth)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError):
        render_video(2, 2, (24, 32), texture_dir=empty)


def test_tiny_16_bit_and_unreadable_photos(tmp_path):
    """A photo smaller than a crop is used whole; a 16-bit one is scaled to 8 bits; a broken one is one InputError."""
    import cv2

    from bufferanytime.synthetic.textures import TEXTURE_SIZE, photo_texture

    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "tiny.png"), np.full((3, 5, 3), 200, np.uint8))
    tile = photo_texture(rng, tmp_path / "tiny.png")
    assert tile.shape == (TEXTURE_SIZE, TEXTURE_SIZE, 3) and np.allclose(tile, 200 / 255)
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((40, 40, 3), 40000, np.uint16))
    np.testing.assert_allclose(photo_texture(rng, tmp_path / "deep.png"), 40000 / 65535, atol=1 / 255)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="bad.png: not a readable image"):
        photo_texture(rng, tmp_path / "bad.png")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--size", "100000x100000"], f"--size must be at most {MAX_SIDE}x{MAX_SIDE}, got 100000x100000"),
        (["--size", f"8x{MAX_SIDE + 1}"], f"--size must be at most {MAX_SIDE}x{MAX_SIDE}, got 8x{MAX_SIDE + 1}"),
        (["--frames", "100000000"], f"--frames must be 2 to {MAX_FRAMES}, got 100000000"),
        (["--videos", "100000000"], f"--videos must be 1 to {MAX_VIDEOS}, got 100000000"),
        (["--frames", str(MAX_FRAMES), "--size", "240x320"],
         f"--frames {MAX_FRAMES} at --size 240x320: {MAX_FRAMES * 240 * 320} pixels, more than the "
         f"{MAX_VIDEO_PIXELS} a video may hold"),
    ],
)
def test_sizes_beyond_the_documented_limits_are_one_line_before_any_work(tmp_path, capsys, monkeypatch, extra,
                                                                          message):
    """--size 100000x100000 was a MemoryError traceback and --frames 100000000 ran for ever."""
    import bufferanytime.cli.synth as synth

    monkeypatch.setattr(synth, "render_video", lambda *args, **kwargs: pytest.fail("rendering started"))
    code, err = run_main(capsys, "synth", "-o", str(tmp_path / "o"), *extra)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert list(tmp_path.iterdir()) == []


def test_the_limits_are_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for limit in (f"{MAX_SIDE}x{MAX_SIDE}", f"at most {MAX_FRAMES}", f"at most {MAX_VIDEO_PIXELS}",
                  f"at most {MAX_VIDEOS}"):
        assert limit in text


def test_the_largest_video_allowed_fits_the_limits():
    assert MAX_FRAMES * 8 * 8 <= MAX_VIDEO_PIXELS and 2 * MAX_SIDE * MAX_SIDE <= MAX_VIDEO_PIXELS


@pytest.mark.parametrize("whole_videos", [0, 1])
def test_a_full_disk_is_one_line_and_leaves_no_partial_video(tmp_path, capsys, monkeypatch, whole_videos):
    """The disk fills at a video's depth.npy (numpy's own writer said "N requested and M written", exit 1): one
    line naming the file, exit 2; the videos written before stay whole, the one being written leaves nothing."""
    from tests.io.full_disk import FullDisk

    files_per_video = 2 + 6 + 1 + 1  # frames, arrays, moving.npy, meta.json (rgb.mp4 is written by the encoder)
    disk = FullDisk(files=whole_videos * files_per_video + 2).install(monkeypatch)
    out = tmp_path / "synth"
    code, err = run_main(capsys, "synth", "-o", str(out), "--videos", "2", "--frames", "2", "--size", "16x16", "-q")
    assert code == 2 and err == [f"error: {disk.failed[0]}: no space left on device"], err
    assert disk.failed[0].endswith(f"/.seq_00000{whole_videos}.tmp-{os.getpid()}/depth.npy")
    assert sorted(p.name for p in out.iterdir()) == [f"seq_00000{i}" for i in range(whole_videos)]
    if whole_videos:
        monkeypatch.undo()
        assert SyntheticVideoDataset(out)[0]["depth"].shape == (2, 16, 16)
