import struct
import subprocess
import sys
import zlib
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from bufferanytime.errors import InputError
from bufferanytime.io import NpyStreamWriter, expand_inputs, open_video, write_video
from tests.helpers import moving_pattern, settled


def test_video_round_trip_streams_frames(tmp_path):
    clip = moving_pattern(frames=7, height=40, width=56)
    write_video(tmp_path / "a.mp4", clip, fps=12)
    source = open_video(tmp_path / "a.mp4")
    assert (source.width, source.height, source.num_frames) == (56, 40, 7)
    assert source.fps == pytest.approx(12)
    frames = list(source)
    assert len(frames) == 7 and frames[0].shape == (40, 56, 3) and frames[0].dtype == np.uint8
    errors = [np.abs(frames[3].astype(float) - c).mean() for c in clip]
    assert int(np.argmin(errors)) == 3 and errors[3] < 15  # lossy codec (4:2:0 chroma), same picture, in order


def test_stride_and_max_frames(tmp_path):
    write_video(tmp_path / "a.mp4", moving_pattern(frames=9), fps=10)
    assert len(list(open_video(tmp_path / "a.mp4", stride=2))) == 5
    assert len(list(open_video(tmp_path / "a.mp4", stride=2, max_frames=3))) == 3
    assert open_video(tmp_path / "a.mp4", stride=2, max_frames=3).expected_frames == 3


@pytest.mark.parametrize(("stride", "max_frames", "ahead"), [(1, None, 4), (2, 3, 8), (1, 5, 1)])
def test_frames_decoded_ahead_are_the_same_frames(tmp_path, stride, max_frames, ahead):
    """Decoding ahead takes at most its limit of frames, then the iteration hands them over and goes on: the same
    frames in the same order, once; a second iteration decodes from the start as usual."""
    write_video(tmp_path / "a.mp4", moving_pattern(frames=9), fps=10)
    plain = list(open_video(tmp_path / "a.mp4", stride=stride, max_frames=max_frames))
    source = open_video(tmp_path / "a.mp4", stride=stride, max_frames=max_frames)
    source.decode_ahead(max_frames=ahead)
    assert settled(source._ahead, min(ahead, len(plain))) == min(ahead, len(plain))
    for got in (list(source), list(source)):
        assert len(got) == len(plain) and all(np.array_equal(a, b) for a, b in zip(got, plain, strict=True))


def test_decoding_ahead_stops_at_its_byte_limit_and_close_drops_it(tmp_path):
    write_video(tmp_path / "a.mp4", moving_pattern(frames=9, height=48, width=64), fps=10)
    source = open_video(tmp_path / "a.mp4")
    source.decode_ahead(max_bytes=3 * 48 * 64 * 3 + 5)  # room for 3 frames
    ahead = source._ahead
    assert settled(ahead, 3) == 3
    source.close()
    assert ahead.taken == 0 and source._ahead is None
    assert len(list(source)) == 9


def test_a_truncated_video_read_ahead_is_still_refused_after_its_frames(tmp_path):
    write_video(tmp_path / "a.mp4", moving_pattern(frames=9), fps=10)
    source = open_video(tmp_path / "a.mp4")
    source.num_frames = 20  # as if the header announced more frames than the file holds
    source.decode_ahead(max_frames=30)
    frames = []
    with pytest.raises(InputError, match="truncated"):
        for frame in source:
            frames.append(frame)
    assert len(frames) == 9


def test_image_folder_is_naturally_sorted(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (1, 2, 10):
        Image.fromarray(np.full((16, 20, 3), i, np.uint8)).save(folder / f"f{i}.png")
    source = open_video(folder)
    assert source.kind == "folder" and source.num_frames == 3
    assert [int(f[0, 0, 0]) for f in source] == [1, 2, 10]


def test_text_list_expands_relative_paths(tmp_path):
    (tmp_path / "list.txt").write_text("# inputs\na.mp4\n\n/abs/b.png\n")
    assert expand_inputs([tmp_path / "list.txt", "c.mov"]) == [tmp_path / "a.mp4", Path("/abs/b.png"), Path("c.mov")]


def test_mixed_sizes_are_rejected_before_decoding(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(folder / "0.png")
    Image.fromarray(np.zeros((18, 20, 3), np.uint8)).save(folder / "1.png")
    with pytest.raises(InputError, match="different sizes"):
        open_video(folder)


def test_stream_writer_packs_an_npz_equal_to_numpy(tmp_path):
    data = np.random.default_rng(0).random((5, 7, 9, 3)).astype(np.float32)
    writer = NpyStreamWriter(tmp_path / "raw")
    for frame in data:
        writer.append(frame)
    writer.close()
    assert np.array_equal(writer.read(), data)
    writer.write_npz(tmp_path / "out.npz", "normal")
    with np.load(tmp_path / "out.npz") as npz:
        assert list(npz.keys()) == ["normal"]
        assert np.array_equal(npz["normal"], data)


def test_sixteen_bit_grey_and_rgb_images_are_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 65536, (20, 24), dtype=np.uint16)
    rgb = rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1])  # OpenCV writes BGR
    cv2.imwrite(str(tmp_path / "rgb16.tif"), rgb[..., ::-1])
    expected = {"grey16.png": np.repeat(grey[..., None], 3, axis=2), "rgb16.png": rgb, "rgb16.tif": rgb}
    for name, wide in expected.items():
        (frame,) = list(open_video(tmp_path / name))
        assert frame.dtype == np.uint8 and frame.shape == (20, 24, 3)
        np.testing.assert_array_equal(frame, np.round(wide / 257.0).astype(np.uint8), err_msg=name)
        assert (frame == 255).mean() < 0.01  # clipping to 8 bits would make almost every pixel 255


def test_oversized_image_header_is_refused_before_decoding(tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    data = bytearray((tmp_path / "a.png").read_bytes())
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "a.png").write_bytes(bytes(data))
    with pytest.raises(InputError, match="more than the limit"):
        open_video(tmp_path / "a.png")


def test_empty_or_unreadable_text_list_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    with pytest.raises(InputError, match="names no input"):
        expand_inputs([tmp_path / "empty.txt"])
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="cannot read the input list"):
        expand_inputs([tmp_path / "binary.txt"])


def test_truncated_video_is_refused_when_opened_not_after_decoding(tmp_path):
    """A cut-off file whose index survives (moov first) is found by counting packets at open: no frame decoded."""
    clip = moving_pattern(frames=20, height=48, width=64)
    with av.open(str(tmp_path / "full.mp4"), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    assert open_video(tmp_path / "full.mp4").num_frames == 20
    with pytest.raises(InputError, match="truncated"):
        open_video(tmp_path / "cut.mp4")


def test_one_frame_is_refused_up_front_for_videos_and_frame_folders(tmp_path):
    write_video(tmp_path / "a.mp4", moving_pattern(frames=4), fps=10)
    with pytest.raises(InputError, match="at least 2"):
        open_video(tmp_path / "a.mp4", max_frames=1)
    with pytest.raises(InputError, match="at least 2"):
        open_video(tmp_path / "a.mp4", stride=4)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(InputError, match="at least 2"):
        open_video(folder, max_frames=1)
    assert len(list(open_video(folder, max_frames=2))) == 2


def test_dot_folder_is_named_after_its_real_name(tmp_path, monkeypatch):
    folder = tmp_path / "my_frames"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(folder / f"{i}.png")
    monkeypatch.chdir(folder)
    assert open_video(".").name == "my_frames"
    assert open_video("../my_frames/").name == "my_frames"


def test_interrupt_while_opening_the_writer_propagates_unchanged(tmp_path, monkeypatch):
    """A Ctrl-C/SIGTERM between opening the file and adding its stream must stay a KeyboardInterrupt (CI saw an
    AttributeError from flushing a stream that did not exist yet, which turned exit 130 into a traceback)."""
    from bufferanytime.io import video

    def interrupted(fps):
        raise KeyboardInterrupt

    monkeypatch.setattr(video, "_as_fraction", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "clip.mp4", [np.zeros((8, 8, 3), np.uint8)])


def _matroska(path: Path, codec: str, frames: int, audio_seconds: float = 0.0) -> Path:
    """Noise frames at 10 fps (every frame about the same size), with a silent audio track of ``audio_seconds``."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("libopus" if path.suffix == ".webm" else "aac", rate=48000) if audio_seconds \
            else None
        for frame in rng.integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
        for k in range(int(audio_seconds * 48000 / 960)):
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 48000, k * 960
            container.mux(audio.encode(sound))
        if audio is not None:
            container.mux(audio.encode())
    return path


@pytest.mark.parametrize(("suffix", "codec"), [(".mkv", "libx264"), (".webm", "libvpx-vp9")])
def test_truncated_matroska_is_refused_when_opened(suffix, codec, tmp_path):
    """Matroska/WebM headers carry a duration, not a frame count: a cut-off file ends before it."""
    full = _matroska(tmp_path / f"full{suffix}", codec, 30)
    assert open_video(full).num_frames == 30 and len(list(open_video(full))) == 30
    data = full.read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"video is truncated \(its frames end at .* of the 3.00 s its header"):
        open_video(tmp_path / f"cut{suffix}")


def test_matroska_with_a_longer_audio_track_is_not_called_truncated(tmp_path):
    clip = _matroska(tmp_path / "talk.mkv", "libx264", 10, audio_seconds=3.0)
    assert open_video(clip).num_frames == 10


def test_non_regular_files_are_refused_before_opening(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.mp4")
    for path in (tmp_path / "pipe.mp4", Path("/dev/null")):
        with pytest.raises(InputError, match=f"{path}: not a regular file .* use --online {path}"):
            open_video(path)


def test_folder_of_one_image_is_refused_unless_per_frame(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(folder / "0.png")
    with pytest.raises(InputError, match="folder holds 1 image; a video model needs at least 2 frames"):
        open_video(folder)
    assert len(list(open_video(folder, per_frame=True))) == 1
    assert open_video(tmp_path / "one" / "0.png").kind == "image"  # an image file stays accepted


FORK_WHILE_HELD = """
import subprocess, threading
import av
from bufferanytime.io.video import rgb_array
held, release = threading.Event(), threading.Event()
local = threading.local()

def hold():
    with av.open({path!r}) as container:
        local.frame = next(container.decode(video=0))
    rgb_array(local.frame)  # the frame keeps the converter it was converted with
    held.set()
    release.wait()

threading.Thread(target=hold, daemon=True).start()
held.wait()
subprocess.run(["true"], preexec_fn=lambda: None, check=True)
print("forked")
"""


def test_a_converted_frame_held_by_another_thread_does_not_hang_a_forked_child(tmp_path):
    """A child forked with a pre-exec function (as Ray starts its processes) frees what the parent's other threads
    hold; a frame converted on swscale's slice threads then waits for threads the child does not have."""
    write_video(tmp_path / "a.mp4", moving_pattern(frames=4), fps=10)
    code = FORK_WHILE_HELD.format(path=str(tmp_path / "a.mp4"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "forked", done.stderr
