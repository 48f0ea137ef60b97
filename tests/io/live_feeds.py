"""Live streams for tests: MJPEG and y4m bytes, a thread writing them into a named pipe at a set pace, and network
streams sent from the test itself (UDP MPEG-TS, HTTP MJPEG / MPEG-TS / fragmented mp4) by a thread, and an RTSP
sender to run in another process.

Every wait here ends on an event (a reader listening, :meth:`_Feed.stop`) or has a margin for a machine many times
slower than usual: the deadlines below are reached only when something is broken."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import cv2
import numpy as np

from tests.helpers import moving_pattern


def frames(count: int = 6, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return moving_pattern(count, height, width, seed)


def mjpeg(image: np.ndarray) -> bytes:
    """One RGB frame as a JPEG (an MJPEG stream is these, concatenated)."""
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def y4m_header(height: int, width: int, fps: int = 10) -> bytes:
    return f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode()


def y4m_frame(image: np.ndarray) -> bytes:
    return b"FRAME\n" + cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420).tobytes()


def y4m(images: Sequence[np.ndarray]) -> bytes:
    return y4m_header(*images[0].shape[:2]) + b"".join(y4m_frame(f) for f in images)


class _Feed(threading.Thread):
    """A thread that sends a live stream (into a pipe or over the network) until its frames run out or :meth:`stop`
    is called; an error other than the reader going away is kept in ``error`` for the test to report."""

    def __init__(self):
        super().__init__(daemon=True)
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)

    def run(self) -> None:
        try:
            self.send()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader went away (after an error or --max-frames): what a real sender sees too
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def send(self) -> None:
        raise NotImplementedError


class PipeFeeder(_Feed):
    """Writes ``chunks`` into the named pipe ``path`` (created here), one every ``period`` seconds.

    ``before_write(k)`` is called just before chunk k is written (e.g. to wait for the results so far); ``hold``
    seconds after the last chunk, or at :meth:`stop` if that comes first, the pipe is closed (a stalled writer
    holds it open: a test of a stall holds it for long and stops the feeder once the reader has given up)."""

    def __init__(self, path: Path, chunks: Sequence[bytes], period: float = 0.0, hold: float = 0.0,
                 before_write: Callable[[int], None] | None = None):
        super().__init__()
        os.mkfifo(path)
        self.path, self.chunks, self.period, self.hold = path, list(chunks), period, hold
        self.before_write = before_write

    def send(self) -> None:
        with open(self.path, "wb", buffering=0) as pipe:
            for k, chunk in enumerate(self.chunks):
                if k and self.period:
                    time.sleep(self.period)
                if self.before_write is not None:
                    self.before_write(k)
                pipe.write(chunk)
            self.halt.wait(self.hold)


# --- network streams: UDP (MPEG-TS) and HTTP (MJPEG as IP cameras serve it, progressive MPEG-TS or fragmented mp4)
def paced(images: Iterable[np.ndarray], fps: float, stop: threading.Event) -> Iterator[np.ndarray]:
    """``images`` one every ``1 / fps`` seconds (the first at once), until they run out or ``stop`` is set; a
    sender that falls behind (a loaded machine) catches up at once rather than dropping frames."""
    start = time.monotonic()
    for k, image in enumerate(images):
        time.sleep(max(0.0, start + k / fps - time.monotonic()))
        if stop.is_set():
            return
        yield image


def encode_live(target, images: Iterable[np.ndarray], fps: float, stop: threading.Event, container_format: str,
                options: dict | None = None, gop: int = 10) -> None:
    """H.264 as a live camera sends it (x264 ``zerolatency``: no B-frames, nothing held back; a key frame every
    ``gop`` frames, so a reader that joins late starts at the next one), muxed into ``target`` (a URL or a
    writable object) frame by frame at ``fps``; ``images`` may be endless (then ``stop`` ends it)."""
    first, images = _peek(images)
    height, width = first.shape[:2]
    with av.open(target, "w", format=container_format, options=options or {}) as out:
        stream = out.add_stream("libx264", rate=round(fps), options={"tune": "zerolatency", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        for image in paced(images, fps, stop):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())


def _peek(images: Iterable[np.ndarray]) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """The first image, and all of them again."""
    images = iter(images)
    first = next(images)
    return first, itertools.chain([first], images)


class UdpFeeder(_Feed):
    """Sends ``images`` as H.264 in MPEG-TS to ``udp://127.0.0.1:PORT`` at ``fps`` (one datagram per 7 TS packets,
    as IPTV and cameras do), starting once a reader listens on the port (waited for up to ``wait`` seconds, ended
    by :meth:`stop`), so that a slow start of the reader does not eat the stream; frames sent before it listens
    would be lost, as from a camera. With ``then``, that image follows the others until :meth:`stop`: the stream
    never runs dry under a slow reader, and a test can see where the frames it checks end."""

    def __init__(self, port: int, images: Sequence[np.ndarray], fps: float = 25.0, wait: float = 600.0,
                 then: np.ndarray | None = None):
        super().__init__()
        self.port, self.images, self.fps, self.wait, self.then = port, images, fps, wait, then

    def send(self) -> None:
        deadline = time.monotonic() + self.wait
        while not _udp_port_taken(self.port) and time.monotonic() < deadline and not self.halt.is_set():
            time.sleep(0.02)
        images = self.images if self.then is None else itertools.chain(self.images, itertools.repeat(self.then))
        encode_live(f"udp://127.0.0.1:{self.port}?pkt_size=1316", images, self.fps, self.halt, "mpegts")


def _udp_port_taken(port: int) -> bool:
    """Whether a socket is bound to UDP ``port``: Linux lists them in /proc/net/udp (looked at, not bound to, so
    the reader's own bind cannot collide with the check)."""
    rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(int(row.split()[1].rsplit(":", 1)[1], 16) == port for row in rows)


class _ChunkedBody:
    """The body of an HTTP/1.1 response in chunked encoding, each write sent at once (one chunk)."""

    def __init__(self, wfile):
        self.wfile = wfile

    def write(self, data: bytes) -> int:
        if data:
            self.wfile.write(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
            self.wfile.flush()
        return len(data)

    def end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


MJPEG_BOUNDARY = "frame-boundary"
HTTP_CONTENT_TYPES = {"mjpeg": f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}", "mpegts": "video/mp2t",
                      "mp4": "video/mp4"}


class HttpFeeder(_Feed):
    """A tiny HTTP server on a free port serving one live stream at ``/stream`` (:attr:`url`), frames pushed at
    ``fps`` once a client connects:

    - ``kind="mjpeg"``: ``multipart/x-mixed-replace`` JPEG parts, as IP cameras serve them (each part with its
      ``Content-Length`` unless ``part_length=False``: some cameras leave it out);
    - ``kind="mpegts"`` or ``"mp4"``: H.264 in MPEG-TS, or in fragmented mp4 (one fragment per key frame),
      written progressively by FFmpeg.

    After the last frame the response ends properly (the chunked body's last chunk), or with ``cut=True`` the
    connection is dropped in the middle of a frame (a camera unplugged)."""

    def __init__(self, images: Sequence[np.ndarray], kind: str = "mjpeg", fps: float = 25.0,
                 part_length: bool = True, cut: bool = False):
        super().__init__()
        self.images, self.kind, self.fps, self.part_length, self.cut = images, kind, fps, part_length, cut
        self.user_agents: list[str | None] = []  # of each request, to check what the client sent
        feeder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                feeder.respond(self)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream"

    def send(self) -> None:
        self.server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        self.halt.set()
        self.server.shutdown()
        self.server.server_close()
        self.join(timeout=10)

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        self.user_agents.append(handler.headers.get("User-Agent"))
        if handler.path != "/stream":
            handler.send_error(404)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", HTTP_CONTENT_TYPES[self.kind])
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        body = _ChunkedBody(handler.wfile)
        try:
            self._body(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away

    def _body(self, body: _ChunkedBody) -> None:
        if self.kind == "mjpeg":
            for image in paced(self.images, self.fps, self.halt):
                jpeg = mjpeg(image)
                length = f"Content-Length: {len(jpeg)}\r\n" if self.part_length else ""
                body.write(f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n{length}\r\n".encode() + jpeg + b"\r\n")
            if self.cut:
                body.write(f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n".encode() + jpeg[:len(jpeg) // 2])
        else:
            options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if self.kind == "mp4" else {}
            encode_live(body, self.images, self.fps, self.halt, self.kind, options)
        if not self.cut:
            body.end()


def push_rtsp(url: str, count: int = 20, fps: float = 25.0, transport: str = "tcp", height: int = 28,
              width: int = 42, wait: float = 600.0) -> None:
    """Push ``frames(count, height, width)`` to an RTSP server that records (``ANNOUNCE``/``RECORD``, as ``ffmpeg -f
    rtsp URL`` does), H.264 over ``transport``; retries connecting until the server listens (it starts later: a
    whole CLI start, slow on a loaded machine), for at most ``wait`` seconds.

    Run it in another process than the reader: PyAV holds the GIL while the RTSP muxer connects, which would stall a
    reader in the same process."""
    deadline = time.monotonic() + wait
    while True:
        try:
            options = {"rtsp_transport": transport}
            encode_live(url, frames(count, height, width), fps, threading.Event(), "rtsp", options)
            return
        except (av.error.ConnectionRefusedError, av.error.ConnectionResetError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
