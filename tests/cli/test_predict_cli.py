"""`bufferanytime depth` end to end, and every bad input of the [depth] issue."""

from __future__ import annotations

import json
import struct

import av
import numpy as np
import pytest
from PIL import Image

from bufferanytime.cli.main import main
from bufferanytime.io.video import write_video
from tests.helpers import moving_pattern


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def _assert_clean_error(code, err, out_dir):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.iterdir())  # nothing half-written


def test_depth_on_real_video_and_per_frame_baseline(shared_dir, tiny_depth_prior, tmp_path, capsys):
    video = shared_dir / "data/videos/davis_rollercoaster.mp4"
    code, err = _run(capsys, "depth", str(video), "--model", str(tiny_depth_prior), "--max-frames", "8",
                     "-o", str(tmp_path / "out"), "-q")
    assert code == 0, err
    result = tmp_path / "out/davis_rollercoaster"
    with np.load(result / "depth.npz") as npz:
        disparity = npz["disparity"]
    assert disparity.shape == (8, 540, 960) and disparity.dtype == np.float32
    assert np.isfinite(disparity).all()
    with av.open(str(result / "depth_vis.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8
    meta = json.loads((result / "meta.json").read_text())
    assert meta["frames"] == 8 and meta["input_size"] == [540, 960] and meta["version"]

    code, err = _run(capsys, "depth", str(video), "--model", str(tiny_depth_prior), "--max-frames", "8",
                     "--per-frame", "-o", str(tmp_path / "pf"), "-q")
    assert code == 0, err
    with np.load(tmp_path / "pf/davis_rollercoaster/depth.npz") as npz:
        per_frame = npz["disparity"]
    scale = float(per_frame.max() - per_frame.min()) or 1.0
    assert np.abs(per_frame - disparity).max() <= 1e-5 * max(scale, float(np.abs(per_frame).max()))


def test_png16_and_exr_outputs(tiny_depth_prior, small_video, tmp_path, capsys):
    code, err = _run(capsys, "depth", str(small_video), "--model", str(tiny_depth_prior), "--save", "npz", "png16",
                     "exr", "-o", str(tmp_path / "out"), "-q")
    assert code == 0, err
    result = tmp_path / "out/clip"
    meta = json.loads((result / "meta.json").read_text())
    png = np.asarray(Image.open(result / "png16/000002.png"))
    assert png.dtype == np.uint16
    with np.load(result / "depth.npz") as npz:
        disparity = npz["disparity"]
    np.testing.assert_allclose(png / meta["visualisation"]["png16"]["scale"], disparity[2], atol=2e-5 * disparity.max())
    import OpenEXR

    with OpenEXR.File(str(result / "exr/000002.exr")) as exr:
        np.testing.assert_array_equal(exr.channels()["Y"].pixels, disparity[2])


def _faststart_mp4(path, frames: np.ndarray) -> None:
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _mdat_offset(data: bytes) -> int:
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"mdat":
            return offset
        offset += size
    raise AssertionError("no mdat atom")


def _bad_inputs(tmp_path):
    """name -> path of an input the tool must refuse with one clean line."""
    bad = {"missing": tmp_path / "nope.mp4"}
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_dir/notes.txt").write_text("no images here")
    bad["dir_without_images"] = tmp_path / "empty_dir"
    (tmp_path / "fake.mp4").write_text("this is not a video")
    bad["text_named_mp4"] = tmp_path / "fake.mp4"

    clip = moving_pattern(frames=20, height=48, width=64)
    _faststart_mp4(tmp_path / "full.mp4", clip)
    data = (tmp_path / "full.mp4").read_bytes()
    mdat = _mdat_offset(data)
    (tmp_path / "truncated.mp4").write_bytes(data[: mdat + (len(data) - mdat) // 2])
    bad["truncated_video"] = tmp_path / "truncated.mp4"
    write_video(tmp_path / "plain.mp4", clip, fps=10)  # moov atom at the end: cut-off files lose it
    (tmp_path / "truncated_plain.mp4").write_bytes((tmp_path / "plain.mp4").read_bytes()[:3000])
    bad["truncated_video_no_index"] = tmp_path / "truncated_plain.mp4"
    (tmp_path / "no_frames.mp4").write_bytes(data[: mdat + 8])
    bad["no_decodable_frame"] = tmp_path / "no_frames.mp4"

    write_video(tmp_path / "one.mp4", clip[:1], fps=10)
    bad["one_frame_video"] = tmp_path / "one.mp4"
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "tiny.png")
    bad["1x1_image"] = tmp_path / "tiny.png"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(clip[0]).save(mixed / "000.png")
    Image.fromarray(clip[1][:40]).save(mixed / "001.png")
    bad["mixed_sizes"] = mixed
    return bad


BAD = ["missing", "dir_without_images", "text_named_mp4", "truncated_video", "truncated_video_no_index",
       "no_decodable_frame", "one_frame_video", "1x1_image", "mixed_sizes"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gives_one_clean_line(case, tiny_depth_prior, tmp_path, capsys):
    path = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    code, err = _run(capsys, "depth", str(path), "--model", str(tiny_depth_prior), "-o", str(out), "-q")
    _assert_clean_error(code, err, out)


def test_unwritable_output_directory(tiny_depth_prior, small_video, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    code, err = _run(capsys, "depth", str(small_video), "--model", str(tiny_depth_prior),
                     "-o", str(tmp_path / "a_file/out"), "-q")
    _assert_clean_error(code, err, tmp_path / "a_file/out")


def test_partial_batch_failure_exits_1_and_keeps_good_outputs(tiny_depth_prior, small_video, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run(capsys, "depth", str(tmp_path / "missing.mp4"), str(small_video), "--model",
                     str(tiny_depth_prior), "-o", str(out), "-q")
    assert code == 1
    assert err.count("error: ") == 1 and "missing.mp4" in err
    assert sorted(p.name for p in out.iterdir()) == ["clip"]
    assert (out / "clip/depth.npz").is_file()


def test_bad_options_and_unknown_model(small_video, tmp_path, capsys):
    code, err = _run(capsys, "depth", str(small_video), "--model", str(tmp_path / "no_model"), "-o", str(tmp_path))
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["depth", str(small_video), "-o", str(tmp_path), "--stride", "0"])
    assert exc.value.code == 2


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "bufferanytime" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["depth", "--help"])
    assert "--per-frame" in capsys.readouterr().out
