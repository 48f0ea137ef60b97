"""Live sources: frames from named pipes in order, the two queue policies, and one InputError per bad stream."""

from __future__ import annotations

import socket
import time

import cv2
import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.io.streams import LiveSource, describe, open_live
from tests.io.live_feeds import PipeFeeder, frames, mjpeg, y4m, y4m_frame, y4m_header


def _close(decoded: np.ndarray, sent: np.ndarray) -> bool:
    """Same picture: 4:2:0 chroma and JPEG change colours, so brightness is compared (another frame is far off)."""
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY).astype(int) for f in (decoded, sent)]
    return np.abs(gray[0] - gray[1]).mean() < 4


def _read(source: LiveSource, delay: float = 0.0) -> list:
    out = []
    for item in source.frames():
        out.append(item)
        time.sleep(delay)
    return out


def test_y4m_pipe_gives_every_frame_in_order_exactly(tmp_path):
    images = frames(5)
    PipeFeeder(tmp_path / "pipe", [y4m(images)]).start()
    source = open_live(str(tmp_path / "pipe"), stall_timeout=20)
    got = _read(source)
    assert [f.index for f in got] == list(range(5))
    assert source.format_name == "yuv4mpegpipe" and source.fps == 10 and source.kind == "pipe"
    assert all(_close(item.image, image) for item, image in zip(got, images, strict=True))


def test_mjpeg_pipe_is_detected_and_read_frame_by_frame(tmp_path):
    images = frames(4)
    PipeFeeder(tmp_path / "pipe", [mjpeg(f) for f in images], period=0.05).start()
    source = open_live(str(tmp_path / "pipe"), stall_timeout=20)
    got = _read(source)
    assert source.format_name == "mjpeg" and [f.index for f in got] == [0, 1, 2, 3]
    assert all(_close(g.image, f) for g, f in zip(got, images, strict=True))


def test_without_max_latency_a_slow_consumer_gets_every_frame(tmp_path):
    (tmp_path / "clip.y4m").write_bytes(y4m(frames(12)))
    source = open_live(str(tmp_path / "clip.y4m"))
    assert [f.index for f in _read(source, delay=0.02)] == list(range(12)) and source.dropped == 0


def test_max_latency_drops_old_frames_keeps_the_newest_and_counts_drops(tmp_path):
    """The whole stream is there at once (a file) and the consumer is slow: old frames are dropped."""
    (tmp_path / "clip.y4m").write_bytes(y4m(frames(12)))
    source = open_live(str(tmp_path / "clip.y4m"), max_latency=0.01)
    got = [f.index for f in _read(source, delay=0.15)]
    assert got[-1] == 11 and got == sorted(got)
    assert source.dropped >= 1 and len(got) + source.dropped == 12


def test_stalled_pipe_is_an_error_after_the_frames_before_it(tmp_path):
    images = frames(2)
    feeder = PipeFeeder(tmp_path / "pipe", [y4m(images)], hold=3600)  # held open until the reader gave up
    feeder.start()
    try:
        source = open_live(str(tmp_path / "pipe"), stall_timeout=0.5)
        got = []
        with pytest.raises(InputError, match=r"stalled \(no frame for 0.5 s"):
            for item in source.frames():
                got.append(item.index)
    finally:
        feeder.stop()
    assert got == [0, 1]


@pytest.mark.parametrize("encode", ["y4m", "mjpeg"])
def test_stream_ending_mid_frame_is_an_error_after_the_complete_frames(tmp_path, encode):
    images = frames(3)
    data = y4m(images) if encode == "y4m" else b"".join(mjpeg(f) for f in images)
    PipeFeeder(tmp_path / "pipe", [data[:-300]]).start()
    source = open_live(str(tmp_path / "pipe"), stall_timeout=20)
    got = []
    with pytest.raises(InputError, match="middle of frame 2|frame 2 is cut off"):
        for item in source.frames():
            got.append(item.index)
    assert got == [0, 1]


def test_frame_size_change_is_an_error_after_the_frames_of_the_first_size(tmp_path):
    small, large = frames(2, 48, 64), frames(2, 64, 96)
    PipeFeeder(tmp_path / "pipe", [mjpeg(f) for f in [*small, *large]]).start()
    source = open_live(str(tmp_path / "pipe"), stall_timeout=20)
    got = []
    with pytest.raises(InputError, match="frame size changed mid-stream from 64x48 to 96x64 at frame 2"):
        for item in source.frames():
            got.append(item.index)
    assert got == [0, 1]


def test_missing_camera_pipe_and_bad_scheme_are_refused_at_once(tmp_path):
    with pytest.raises(InputError, match="/dev/video97: no such camera device"):
        open_live("/dev/video97")
    with pytest.raises(InputError, match="no such file, named pipe or device"):
        open_live(str(tmp_path / "nothing"))
    with pytest.raises(InputError, match="unsupported stream URL scheme"):
        open_live("gopher://example.org/x")
    with pytest.raises(InputError, match="is a folder"):
        open_live(str(tmp_path))
    assert describe("-") == ("stdin", "stdin")
    assert describe("rtsp://cam.local:554/live/main") == ("url", "cam.local_main")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_unreachable_url_is_one_error(scheme):
    """http: refused at once; udp: nothing ever arrives, so the open times out."""
    source = open_live(f"{scheme}://127.0.0.1:{_free_port()}/live", timeout=0.5, stall_timeout=3)
    with pytest.raises(InputError, match="cannot open or read the stream|stalled"):
        _read(source)


def test_stream_with_a_header_and_no_frame_ends_without_frames(tmp_path):
    (tmp_path / "empty.y4m").write_bytes(y4m_header(48, 64))
    assert _read(open_live(str(tmp_path / "empty.y4m"))) == []
    (tmp_path / "one.y4m").write_bytes(y4m_header(48, 64) + y4m_frame(frames(1)[0]))
    assert len(_read(open_live(str(tmp_path / "one.y4m")))) == 1
