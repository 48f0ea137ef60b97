"""Inputs and options of `depth`/`normal`/`export` that used to hang, pass silently or allocate without bound, and the
wording of their errors: each is one ``error:`` line, exit 2, before any work, and nothing written."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bufferanytime.cli.args import MAX_EXPORT_FRAMES, MAX_INFERENCE_SIDE, MAX_WINDOW
from bufferanytime.cli.main import main
from tests.helpers import files_under, moving_pattern, run_main

FAST = ("--max-res", "64", "--device", "cpu")


def _only_error(code: int, err: list[str], out: Path, *words: str) -> None:
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(word in err[0] for word in words), err[0]
    assert files_under(out) == [] and not out.exists()


def write_truncated(path: Path, codec: str, frames: int = 30) -> Path:
    """A clip of ``frames`` frames written by PyAV, then cut to its first half (as an interrupted copy is); noise
    frames, so that every frame takes about as many bytes and half the file holds about half the frames."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in rng.integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(("suffix", "codec"), [(".mkv", "libx264"), (".webm", "libvpx-vp9")])
def test_truncated_matroska_and_webm_are_refused(suffix, codec, tiny_depth_prior, tmp_path, capsys):
    clip = write_truncated(tmp_path / f"cut{suffix}", codec)
    out = tmp_path / "out"
    code, err = run_main(capsys, "depth", str(clip), "--model", str(tiny_depth_prior), *FAST, "-o", str(out), "-q")
    _only_error(code, err, out, f"{clip}: video is truncated", "of the 3.00 s its header announces")


@pytest.mark.parametrize("kind", ["fifo", "char_device"])
def test_non_regular_file_is_refused_offline_at_once(kind, tmp_path, capsys):
    """A FIFO (nobody writing to it) or /dev/zero would block or never end: refused before anything opens it."""
    if kind == "fifo":
        path = tmp_path / "pipe.mp4"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    out = tmp_path / "out"
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=run_main(capsys, "depth", str(path), "-o", str(out))),
                              daemon=True)
    worker.start()
    worker.join(timeout=120)  # it answers at once; a hang is caught instead of freezing the suite
    assert not worker.is_alive(), f"{kind} input blocked"
    code, err = result["r"]
    _only_error(code, err, out, f"{path}: not a regular file", f"use --online {path}")


def test_folder_of_one_image_needs_per_frame(tiny_depth_prior, tmp_path, capsys):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(moving_pattern(frames=1)[0]).save(folder / "000.png")
    out = tmp_path / "out"
    code, err = run_main(capsys, "depth", str(folder), "--model", str(tiny_depth_prior), *FAST, "-o", str(out), "-q")
    _only_error(code, err, out, f"{folder}: folder holds 1 image; a video model needs at least 2 frames")
    code, err = run_main(capsys, "depth", str(folder), "--model", str(tiny_depth_prior), *FAST, "--per-frame",
                         "-o", str(out), "-q")
    assert code == 0 and err == []
    with np.load(out / "one" / "depth.npz") as npz:
        assert npz["disparity"].shape == (1, 48, 64)


SIZE_OPTIONS = {  # case -> (command and options, words of the one error line)
    "short_side": (["depth", "x.mp4", "--short-side", "100000"], f"must be at most {MAX_INFERENCE_SIDE}"),
    "max_res": (["normal", "x.mp4", "--max-res", "100000"], f"must be at most {MAX_INFERENCE_SIDE}"),
    "window": (["depth", "x.mp4", "--window", "100000000"], f"must be at most {MAX_WINDOW}"),
    "overlap": (["depth", "x.mp4", "--overlap", "100000000"], f"must be at most {MAX_WINDOW - 1}"),
    "decode_chunk": (["normal", "x.mp4", "--decode-chunk", "100000"], f"must be at most {MAX_WINDOW}"),
    "export_size": (["export", "onnx", "tiny-synthetic", "--size", "100002x100002"],
                    f"each side must be at most {MAX_INFERENCE_SIDE}"),
    "export_frames": (["export", "onnx", "tiny-synthetic", "--frames", "100000"],
                      f"must be at most {MAX_EXPORT_FRAMES}"),
}


@pytest.mark.parametrize("case", SIZE_OPTIONS)
def test_huge_sizes_are_refused_before_any_work(case, tmp_path, capsys, monkeypatch):
    """Refused by the option parser (the input need not even exist), pointing to the command's --help, which
    states the limit."""
    monkeypatch.chdir(tmp_path)
    argv, words = SIZE_OPTIONS[case]
    command = " ".join(argv[:2] if argv[0] == "export" else argv[:1])
    out = tmp_path / "out"
    code, err = run_main(capsys, *argv, "-o", str(out))
    _only_error(code, err, out, words, f"(see `bufferanytime {command} --help`)")
    assert files_under(tmp_path) == []
    flag = argv[-2]
    with pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert flag in help_text and words.split()[-1] in help_text  # the limit is said in --help


@pytest.mark.parametrize(("argv", "command"), [
    (["normal", "x.mp4", "-o", "out", "--fov", "60"], "normal"),
    (["depth", "x.mp4", "-o", "out", "--bogus"], "depth"),
    (["export", "onnx", "tiny-synthetic", "-o", "out", "--bogus"], "export onnx"),
    (["--bogus"], ""),
])
def test_unknown_option_points_to_its_commands_help(argv, command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(capsys, *argv)
    unknown = " ".join(argv[argv.index(next(a for a in argv if a in ("--fov", "--bogus"))):])
    assert code == 2 and err == [f"error: unrecognized arguments: {unknown} (see `bufferanytime"
                                 f"{' ' + command if command else ''} --help`)"]
    assert files_under(tmp_path) == []
