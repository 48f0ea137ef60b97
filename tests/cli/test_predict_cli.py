"""`bufferanytime depth` end to end, and every bad input it refuses."""

from __future__ import annotations

import errno
import json
import struct
import zlib

import av
import numpy as np
import pytest
from PIL import Image

from bufferanytime.cli.main import main
from bufferanytime.io.video import write_video
from tests.helpers import moving_pattern

FAST = ("--max-res", "64")  # the tiny test prior would otherwise run at Depth Anything V2's 518 px


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def _assert_clean_error(code, err, out_dir, expect=""):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out_dir.exists()  # nothing written, not even an empty output folder


def test_depth_on_real_video_and_per_frame_baseline(shared_dir, tiny_depth_prior, tmp_path, capsys):
    video = shared_dir / "data/videos/davis_rollercoaster.mp4"
    code, err = _run(capsys, "depth", str(video), "--model", str(tiny_depth_prior), "--max-frames", "8",
                     "--max-res", "128", "-o", str(tmp_path / "out"), "-q")
    assert code == 0, err
    result = tmp_path / "out/davis_rollercoaster"
    with np.load(result / "depth.npz") as npz:
        disparity = npz["disparity"]
    assert disparity.shape == (8, 540, 960) and disparity.dtype == np.float32
    assert np.isfinite(disparity).all()
    with av.open(str(result / "depth_vis.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8
    meta = json.loads((result / "depth.meta.json").read_text())
    assert meta["frames"] == 8 and meta["input_size"] == [540, 960] and meta["version"]
    assert meta["inference_size"] == [72, 128] and meta["size_rule"]["from"] == "options"
    assert meta["model"]["path"] == str(tiny_depth_prior.resolve())
    assert meta["device"] == "cpu" and meta["dtype"] == "float32"

    code, err = _run(capsys, "depth", str(video), "--model", str(tiny_depth_prior), "--max-frames", "8",
                     "--max-res", "128", "--per-frame", "-o", str(tmp_path / "pf"), "-q")
    assert code == 0, err
    with np.load(tmp_path / "pf/davis_rollercoaster/depth.npz") as npz:
        per_frame = npz["disparity"]
    scale = float(per_frame.max() - per_frame.min()) or 1.0
    assert np.abs(per_frame - disparity).max() <= 1e-5 * max(scale, float(np.abs(per_frame).max()))


def test_png16_and_exr_outputs(tiny_depth_prior, small_video, tmp_path, capsys):
    code, err = _run(capsys, "depth", str(small_video), "--model", str(tiny_depth_prior), "--save", "npz,png16",
                     "--save", "exr", *FAST, "-o", str(tmp_path / "out"), "-q")
    assert code == 0, err
    result = tmp_path / "out/clip"
    assert sorted(p.name for p in result.iterdir()) == ["depth.meta.json", "depth.npz", "depth_exr", "depth_png16"]
    meta = json.loads((result / "depth.meta.json").read_text())
    png = np.asarray(Image.open(result / "depth_png16/000002.png"))
    assert png.dtype == np.uint16
    with np.load(result / "depth.npz") as npz:
        disparity = npz["disparity"]
    assert disparity.std() > 1e-3 * np.abs(disparity).mean()  # an informative prior: the round trip can fail
    np.testing.assert_allclose(png / meta["outputs"]["png16"]["scale"], disparity[2], atol=2e-5 * disparity.max())
    import OpenEXR

    with OpenEXR.File(str(result / "depth_exr/000002.exr")) as exr:
        np.testing.assert_array_equal(exr.channels()["Y"].pixels, disparity[2])


@pytest.mark.parametrize("before_input", [True, False])
def test_save_chooses_exactly_what_is_written_in_either_order(before_input, tiny_depth_prior, small_video, tmp_path,
                                                              capsys):
    save = ["--save", "exr"]
    args = [*save, str(small_video)] if before_input else [str(small_video), *save]
    code, err = _run(capsys, "depth", *args, "--model", str(tiny_depth_prior), *FAST, "-o", str(tmp_path / "o"), "-q")
    assert code == 0, err
    result = tmp_path / "o/clip"
    assert sorted(p.name for p in result.iterdir()) == ["depth.meta.json", "depth_exr"]
    assert len(list((result / "depth_exr").glob("*.exr"))) == 6


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


def _png_claiming(path, width: int, height: int) -> None:
    """A valid small PNG whose IHDR header is rewritten to claim ``width`` x ``height`` pixels."""
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


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
    _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    bad["image_header_100000x100000"] = tmp_path / "bomb.png"
    (tmp_path / "empty.txt").write_text("# nothing listed\n\n")
    bad["empty_txt_list"] = tmp_path / "empty.txt"
    return bad


BAD = {  # case -> words the one error line must contain
    "missing": "no such file", "dir_without_images": "contains no images", "text_named_mp4": "not a readable video",
    "truncated_video": "truncated", "truncated_video_no_index": "not a readable video",
    "no_decodable_frame": "no decodable frame", "one_frame_video": "at least 2", "1x1_image": "minimum side",
    "mixed_sizes": "different sizes", "image_header_100000x100000": "more than the limit",
    "empty_txt_list": "names no input",
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gives_one_clean_line(case, tiny_depth_prior, tmp_path, capsys):
    path = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    code, err = _run(capsys, "depth", str(path), "--model", str(tiny_depth_prior), *FAST, "-o", str(out), "-q")
    _assert_clean_error(code, err, out, BAD[case])


BAD_OPTIONS = {  # case -> (options, words of the one error line); with the embedded model (10-frame window)
    "max_res_1": (["--max-res", "1"], "--max-res must be at least 14"),
    "short_side_1": (["--short-side", "1"], "--short-side must be at least 14"),
    "max_frames_1_on_video": (["--max-frames", "1"], "a video model needs at least 2"),
    "stride_leaves_one_frame": (["--stride", "6"], "a video model needs at least 2"),
    "overlap_12_without_window": (["--overlap", "12"], "--overlap (12) must be smaller than the model's window"),
    "window_1": (["--window", "1"], "--window must be at least 2"),
    "device_cuda_absent": (["--device", "cuda"], "no CUDA device"),
    "device_mps_absent": (["--device", "mps"], "no Apple MPS device"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_bad_option_gives_one_clean_line(case, small_video, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on machines with a GPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    options, expect = BAD_OPTIONS[case]
    out = tmp_path / "out"
    code, err = _run(capsys, "depth", str(small_video), *options, "-o", str(out), "-q")
    _assert_clean_error(code, err, out, expect)


def test_short_window_warns_that_windows_do_not_overlap(small_video, tmp_path, capsys):
    code = main(["depth", str(small_video), "--window", "3", "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.startswith("warning: --window 3") and "do not overlap" in err and len(err.strip().splitlines()) == 1
    meta = json.loads((tmp_path / "out/clip/depth.meta.json").read_text())
    assert (meta["settings"]["window"], meta["settings"]["overlap"]) == (3, 0)


def test_sixteen_bit_frames_are_scaled_not_clipped(tiny_depth_prior, tmp_path, capsys):
    """A 16-bit grey frame folder and its 8-bit equivalent give the same depth (clipping would make it white)."""
    ramp = np.linspace(0, 1, 48 * 64).reshape(48, 64)
    frames16 = [np.roll(np.round(ramp * 65535), 3 * t, axis=1).astype(np.uint16) for t in range(3)]
    for name, scale in (("f16", 1), ("f8", 257)):
        (tmp_path / name).mkdir()
        for t, frame in enumerate(frames16):
            Image.fromarray(frame if scale == 1 else np.round(frame / scale).astype(np.uint8)).save(
                tmp_path / name / f"{t}.png")
    for name in ("f16", "f8"):
        assert main(["depth", str(tmp_path / name), "--model", str(tiny_depth_prior), *FAST, "--save", "npz",
                     "-o", str(tmp_path / "out"), "-q"]) == 0, capsys.readouterr().err
    with np.load(tmp_path / "out/f16/depth.npz") as a, np.load(tmp_path / "out/f8/depth.npz") as b:
        assert b["disparity"].std() > 0
        np.testing.assert_allclose(a["disparity"], b["disparity"], rtol=1e-5, atol=1e-6)


def test_unwritable_output_directory(tiny_depth_prior, small_video, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    code, err = _run(capsys, "depth", str(small_video), "--model", str(tiny_depth_prior),
                     "-o", str(tmp_path / "a_file/out"), "-q")
    _assert_clean_error(code, err, tmp_path / "a_file/out", "not a directory")


@pytest.mark.parametrize("bad", ["missing.mp4", "empty.txt", "bomb.png"])
def test_bad_input_before_a_good_one_exits_1_and_the_good_one_runs(bad, tiny_depth_prior, small_video, tmp_path,
                                                                   capsys):
    _bad_inputs(tmp_path)
    out = tmp_path / "out"
    code = main(["depth", str(tmp_path / bad), str(small_video), "--model", str(tiny_depth_prior), *FAST,
                 "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and bad in errors[0] and "Traceback" not in captured.err
    assert f"wrote {out / 'clip'}/ (depth.npz, depth_vis.mp4, depth.meta.json)" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["clip"]
    assert sorted(p.name for p in (out / "clip").iterdir()) == ["depth.meta.json", "depth.npz", "depth_vis.mp4"]


def test_full_disk_fails_one_input_leaves_no_trace_and_the_batch_goes_on(tiny_depth_prior, tmp_path, capsys,
                                                                         monkeypatch):
    from bufferanytime.io.outputs import NpyStreamWriter

    for name in ("a", "b"):
        write_video(tmp_path / f"{name}.mp4", moving_pattern(frames=4, seed=ord(name)), fps=10)
    out = tmp_path / "out"
    common = ["--model", str(tiny_depth_prior), *FAST, "-o", str(out), "-q"]
    assert main(["depth", str(tmp_path / "a.mp4"), *common]) == 0
    before = (out / "a/depth.npz").read_bytes()
    original, calls = NpyStreamWriter.write_npz, []

    def full_disk_once(self, path, key):
        calls.append(path)
        if len(calls) == 1:
            path.write_bytes(b"half an npz")
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, path, key)

    monkeypatch.setattr(NpyStreamWriter, "write_npz", full_disk_once)
    capsys.readouterr()
    code = main(["depth", str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), *common])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "No space left on device" in err
    assert (out / "a/depth.npz").read_bytes() == before  # the earlier result is intact, not half-replaced
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]  # no hidden temporaries left
    assert sorted(p.name for p in (out / "b").iterdir()) == ["depth.meta.json", "depth.npz", "depth_vis.mp4"]


def test_bad_options_and_unknown_model(small_video, tmp_path, capsys):
    code, err = _run(capsys, "depth", str(small_video), "--model", str(tmp_path / "no_model"), "-o",
                     str(tmp_path / "out"))
    _assert_clean_error(code, err, tmp_path / "out", "no_model")
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


def test_per_frame_output_is_the_prior_on_each_frame_in_order(tiny_depth_prior, tmp_path, capsys):
    """Frames at the inference size (no resize): the CLI must give the prior's output on each frame, in order, from
    RGB in [0, 1]; a wrong colour order or range, a flip or a frame shuffle would change the numbers."""
    import torch

    from bufferanytime.models import load_model

    frames = moving_pattern(frames=4, height=56, width=70, seed=3)
    frames[1] = frames[1][:, ::-1]  # distinct frames: a shuffle would show
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    code, err = _run(capsys, "depth", str(folder), "--model", str(tiny_depth_prior), "--per-frame", "--max-res", "70",
                     "-o", str(tmp_path / "out"), "-q")
    assert code == 0, err
    with np.load(tmp_path / "out/frames/depth.npz") as npz:
        cli = npz["disparity"]
    model = load_model("depth", tiny_depth_prior, per_frame=True).eval()
    with torch.no_grad():
        direct = model(torch.tensor(frames).permute(0, 3, 1, 2)[None].float() / 255.0)[0].numpy()
    spread = float(direct.std())
    assert spread > 0.05  # the prior's output means something
    assert np.abs(cli - direct).max() < 1e-4 * max(1.0, float(np.abs(direct).max()))
    assert np.abs(cli[0] - direct[1]).mean() > 0.1 * spread  # frames are told apart
