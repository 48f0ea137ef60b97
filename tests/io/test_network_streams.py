"""Working network streams, served live by the test itself: H.264 in MPEG-TS over UDP; over HTTP an MJPEG stream
as IP cameras serve it (``multipart/x-mixed-replace``), a progressive MPEG-TS and a fragmented mp4; RTSP pushed to a
listening reader over TCP and UDP. Read by :mod:`bufferanytime.io.streams` and by ``bufferanytime depth --online
URL`` (the unreachable-URL errors are in tests/io/test_streams.py and tests/cli/test_online_cli.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.io.streams import open_live
from tests.helpers import run_main
from tests.io.live_feeds import HttpFeeder, UdpFeeder, frames

REPO = Path(__file__).resolve().parents[2]
# Seconds to connect and without a frame before a stream counts as stalled: no stream here ends by a stall (UDP ends
# at --max-frames or when the test has its frames), so these are reached only when something is broken, and leave a
# margin for a machine 10x slower than usual.
WAIT = 120
SMALL = ["--max-res", "42", "--window", "3", "--device", "cpu", "--timeout", f"{WAIT}", "--stall-timeout", f"{WAIT}",
         "-q"]
SAME = 6.0  # mean grey difference below which a decoded frame is the sent one (coding error <= 3; next frame >= 11)


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(type=kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sent_index(decoded: np.ndarray, sent: np.ndarray) -> int:
    """Which sent frame ``decoded`` is (each frame is shifted by one pixel from the one before): its index, or -1
    when it is none of them (e.g. a corrupt frame)."""
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY).astype(float) for f in (decoded, *sent)]
    distance = [np.abs(gray[0] - g).mean() for g in gray[1:]]
    return int(np.argmin(distance)) if min(distance) < SAME else -1


def _read_all(spec: str) -> tuple[list, BaseException | None, object]:
    """Every frame of the stream, the error that ended it (None at a normal end), and the source."""
    source, got = open_live(spec, timeout=WAIT, stall_timeout=WAIT), []
    try:
        for item in source.frames():
            got.append(item)
    except InputError as exc:
        return got, exc, source
    return got, None, source


def _npy(folder: Path) -> list[Path]:
    return sorted((folder / "depth_online_npy").glob("*.npy"))


def _mp4_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _online(capsys, prior: Path, url: str, out: Path, *extra: str) -> tuple[int, list[str]]:
    return run_main(capsys, "depth", "--online", url, "--model", str(prior), "-o", str(out), *SMALL, *extra)


def _check_outputs(folder: Path, count: int, url: str, container_format: str) -> dict:
    """``count`` whole results (npy and mp4), finite, at the input size; the meta file names the source."""
    files = _npy(folder)
    assert [p.name for p in files] == [f"{i:06d}.npy" for i in range(count)]
    depth = np.stack([np.load(p) for p in files])
    assert depth.shape == (count, 28, 42) and np.isfinite(depth).all() and depth.std() > 0
    assert _mp4_frames(folder / "depth_online_vis.mp4") == count
    meta = json.loads((folder / "depth_online.meta.json").read_text())
    assert meta["source"]["spec"] == url and meta["source"]["kind"] == "url"
    assert meta["source"]["format"] == container_format and meta["input_size"] == [28, 42]
    assert meta["frames_written"] == count
    return meta


def test_udp_mpegts_frames_arrive_in_order_and_are_the_sent_ones():
    """A live UDP stream has no end. The sender starts once the reader listens, sends the frames to check, then
    black frames until stopped: the test reads until the first black frame (MPEG-TS hands a frame over when the
    next one starts, so that also brings the last checked frames out), however slow the machine. UDP may still lose
    datagrams (then frames up to the next key frame, every 10). Once the sender has stopped, the stream stalls."""
    sent, port = frames(50, 28, 42), _free_port()
    feeder = UdpFeeder(port, sent, then=np.zeros_like(sent[0]))
    source = open_live(f"udp://127.0.0.1:{port}", timeout=WAIT, stall_timeout=WAIT)
    feeder.start()
    got, stream = [], source.frames()
    for item in stream:
        if item.image.mean() < 20:  # black: the checked frames are over
            break
        got.append(item)
    feeder.stop()
    assert feeder.error is None
    source.stall_timeout = 0.5  # nothing is sent any more: whatever the clock, the stream can only stall
    with pytest.raises(InputError, match=r"stalled \(no frame for 0.5 s"):
        for _ in stream:
            pass
    which = [_sent_index(item.image, sent) for item in got]
    assert len(got) >= 40 and -1 not in which, which
    assert which == sorted(set(which)) and which[0] <= 10 and which[-1] >= 46, which
    assert [item.index for item in got] == list(range(len(got)))
    assert (source.kind, source.format_name, source.fps, source.size) == ("url", "mpegts", 25.0, (28, 42))


@pytest.mark.parametrize(("kind", "part_length", "container_format"), [
    ("mjpeg", True, "mpjpeg"), ("mjpeg", False, "mpjpeg"), ("mpegts", True, "mpegts"),
    ("mp4", True, "mov,mp4,m4a,3gp,3g2,mj2")])
def test_http_stream_gives_every_frame_in_order_and_ends_cleanly(kind, part_length, container_format):
    """Over TCP nothing is lost: every sent frame, in order, and the end of the response ends the stream."""
    sent = frames(30, 28, 42)
    feeder = HttpFeeder(sent, kind, part_length=part_length)
    feeder.start()
    got, error, source = _read_all(feeder.url)
    feeder.stop()
    assert error is None and feeder.error is None
    assert [_sent_index(item.image, sent) for item in got] == list(range(30))
    assert (source.format_name, source.size) == (container_format, (28, 42))


def test_online_cli_reads_a_live_udp_stream(tiny_depth_prior, tmp_path, capsys, one_torch_thread):
    """``--online udp://...``: the stream never ends, ``--max-frames`` does; results are numbered from the first
    frame received."""
    port = _free_port()
    url = f"udp://127.0.0.1:{port}"
    sent = frames(150, 28, 42)
    feeder = UdpFeeder(port, sent, then=sent[-1])  # never runs dry before --max-frames, however slow the reader
    feeder.start()
    code, err = _online(capsys, tiny_depth_prior, url, tmp_path / "out", "--max-frames", "20")
    feeder.stop()
    assert code == 0, err
    assert feeder.error is None
    meta = _check_outputs(tmp_path / "out" / f"127.0.0.1_{port}", 20, url, "mpegts")
    assert meta["status"] == "finished" and meta["source"]["fps"] == 25.0


def test_online_cli_reads_an_ip_camera_mjpeg_stream(tiny_depth_prior, tmp_path, capsys, one_torch_thread):
    feeder = HttpFeeder(frames(12, 28, 42), "mjpeg")
    feeder.start()
    code, err = _online(capsys, tiny_depth_prior, feeder.url, tmp_path / "out", "--input-option",
                        "user_agent=bufferanytime-test")
    feeder.stop()
    assert code == 0, err
    meta = _check_outputs(tmp_path / "out" / "127.0.0.1_stream", 12, feeder.url, "mpjpeg")
    assert meta["status"] == "finished" and meta["frames_read"] == 12 and meta["frames_dropped"] == 0
    assert feeder.user_agents == ["bufferanytime-test"]  # --input-option reached FFmpeg
    assert meta["source"]["options"] == {"user_agent": "bufferanytime-test"}


def test_input_option_must_be_key_equals_value(tiny_depth_prior, tmp_path, capsys):
    code, err = _online(capsys, tiny_depth_prior, "udp://127.0.0.1:9", tmp_path / "out", "--input-option", "tcp")
    assert code == 2 and "expected KEY=VALUE" in err[-1]
    assert not (tmp_path / "out").exists()


def test_online_cli_http_stream_cut_off_is_one_error_line_and_the_frames_before_stay(tiny_depth_prior, tmp_path,
                                                                                   capsys):
    """The camera goes away in the middle of a frame: one ``error:`` line (exit 2), the 8 whole frames kept."""
    feeder = HttpFeeder(frames(8, 28, 42), "mjpeg", cut=True)
    feeder.start()
    code, err = _online(capsys, tiny_depth_prior, feeder.url, tmp_path / "out")
    feeder.stop()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {feeder.url}: "), err
    assert "frame 8 is cut off" in err[0]
    meta = _check_outputs(tmp_path / "out" / "127.0.0.1_stream", 8, feeder.url, "mpjpeg")
    assert meta["status"].startswith("failed: ")


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_online_cli_reads_rtsp_pushed_to_it(tiny_depth_prior, tmp_path, capsys, one_torch_thread, transport):
    """RTSP with nothing to install: the CLI listens (FFmpeg's ``rtsp_flags=listen``) and a sender in another process
    pushes H.264 to it as ``ffmpeg -f rtsp URL`` does (ANNOUNCE, RECORD), RTP over TCP or UDP: the same RTSP demuxer
    and RTP depacketiser as reading from a camera's server (that was run by hand: docs/online.md). Every frame
    arrives, and the sender's TEARDOWN ends the run normally."""
    url = f"rtsp://127.0.0.1:{_free_port(socket.SOCK_STREAM)}/live"
    push = f"from tests.io.live_feeds import push_rtsp; push_rtsp({url!r}, 20, transport={transport!r})"
    pusher = subprocess.Popen([sys.executable, "-c", push], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        code, err = _online(capsys, tiny_depth_prior, url, tmp_path / "out", "--input-option", "rtsp_flags=listen",
                            "--input-option", f"listen_timeout={WAIT}", "--input-option",
                            f"rtsp_transport={transport}")
        pusher.wait(timeout=WAIT)
    finally:
        pusher.kill()
    assert code == 0, err
    assert pusher.returncode == 0
    meta = _check_outputs(tmp_path / "out" / "127.0.0.1_live", 20, url, "rtsp")
    assert meta["status"] == "finished" and meta["frames_read"] == 20
    assert meta["source"]["options"]["rtsp_transport"] == transport
