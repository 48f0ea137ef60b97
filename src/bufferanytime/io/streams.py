"""Live video input: a camera, a network stream, standard input or a named pipe, decoded as frames arrive.

:func:`open_live` names a source and checks what can be checked at once (a device or pipe that does not exist,
an unsupported URL scheme); :class:`LiveSource` decodes it with PyAV (FFmpeg) on a reader thread into a bounded
queue, and :meth:`LiveSource.frames` hands the frames to the caller:

- ``/dev/videoN``: a V4L2 camera (``av.open(dev, format="v4l2")``);
- ``rtsp://``, ``http(s)://``, ``udp://``, ``tcp://``, ``rtmp://``, ``srt://``: opened by FFmpeg, waiting at most
  ``timeout`` seconds to connect and to read;
- ``-`` (standard input), a named pipe (FIFO) or a file: any stream FFmpeg reads without seeking (MJPEG, y4m,
  MPEG-TS, ...). MJPEG, y4m and MPEG-TS are recognised from their first bytes; MJPEG and y4m are opened without
  FFmpeg's look-ahead probing, so a frame is handed over as soon as it is complete (an MJPEG frame when the next
  one starts); other formats are probed by FFmpeg (``input_format`` names one to skip format detection).

``options`` are FFmpeg's options for opening the source (e.g. ``{"rtsp_transport": "tcp"}``: RTSP with RTP
interleaved in its TCP connection rather than over UDP).

Two policies when frames arrive faster than the caller takes them. Default: every frame is processed, the reader
waits when the queue is full (a pipe's writer then waits too; a camera drops frames itself). With
``max_latency`` seconds: the reader never waits; the oldest queued frame is dropped when the queue is full, and
the caller is handed the oldest frame that is at most ``max_latency`` old, or else the newest (older ones are
dropped). Drops are counted (``dropped``).

Bad input is one :class:`~bufferanytime.errors.InputError`, raised in the caller's thread after the frames
decoded before it: a source that cannot be opened, no frame for ``stall_timeout`` seconds, a stream that ends
in the middle of a frame, a frame size that changes mid-stream.
"""

from __future__ import annotations

import io
import re
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from bufferanytime.errors import InputError
from bufferanytime.io.video import MIN_SIDE, rgb_array

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "rtp")
DEFAULT_TIMEOUT = 10.0  # seconds to connect to a network source
DEFAULT_STALL_TIMEOUT = 10.0  # seconds without a frame before a stream counts as stalled
QUEUE_FRAMES = 4  # decoded frames waiting for the model, at most
# First bytes -> FFmpeg demuxer, for the formats opened without look-ahead probing (see the module docstring).
SIGNATURES = ((b"\xff\xd8", "mjpeg"), (b"YUV4MPEG2", "yuv4mpegpipe"), (b"\x47", "mpegts"))
LOW_LATENCY = {"probesize": "32", "analyzeduration": "0"}
JPEG_END, JPEG_TAIL = b"\xff\xd9", 32  # a complete JPEG ends with EOI (some cameras pad a few bytes after it)
# Formats whose packets tile the byte stream: bytes left after the last packet = a frame cut off.
TILED_FORMATS = frozenset({"yuv4mpegpipe", "mjpeg"})
# Formats whose packets are whole JPEGs: one without its end marker was cut off (an MJPEG pipe, or an IP camera's
# multipart/x-mixed-replace HTTP stream, whose connection can drop in the middle of a part).
JPEGS = frozenset({"mjpeg", "mpjpeg"})


@dataclass
class LiveFrame:
    """One decoded frame: its index in the stream, ``(H, W, 3)`` uint8 RGB, and when it was read (monotonic s)."""

    index: int
    image: np.ndarray
    read_at: float


class _Reader(io.RawIOBase):
    """A non-seekable byte stream that counts what was read and can show its first bytes without consuming them."""

    def __init__(self, raw):
        self.raw, self.count, self._head = raw, 0, b""

    def readable(self) -> bool:
        return True

    def peek(self, n: int) -> bytes:
        while len(self._head) < n:
            more = self.raw.read(n - len(self._head))
            if not more:
                break
            self._head += more
        return self._head[:n]

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data, self._head = (self._head, b"") if n < 0 or n >= len(self._head) else (
                self._head[:n], self._head[n:])
        else:
            data = self.raw.read(n)
        self.count += len(data or b"")
        return data or b""

    def close(self) -> None:
        self.raw.close()
        super().close()


def describe(spec: str) -> tuple[str, str]:
    """``(kind, name)`` of a source: kind camera | url | stdin | pipe | file; name = its output stem.

    InputError for a device, pipe or file that does not exist, or an unsupported URL scheme.
    """
    if spec == "-":
        return "stdin", "stdin"
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", spec)
    if scheme:
        if scheme.group(1).lower() not in URL_SCHEMES:
            raise InputError(f"{spec}: unsupported stream URL scheme (use one of {', '.join(URL_SCHEMES)})")
        parts = [p for p in re.split(r"[/:@?&=]+", spec[scheme.end():]) if p]
        return "url", re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(parts[:1] + parts[-1:]) or scheme.group(1))
    path = Path(spec)
    if spec.startswith("/dev/video"):
        if not path.exists():
            raise InputError(f"{spec}: no such camera device")
        return "camera", path.name
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(f"{spec}: no such file, named pipe or device") from exc
    if stat.S_ISCHR(mode):
        return "camera", path.name
    if stat.S_ISDIR(mode):
        raise InputError(f"{spec}: is a folder; --online reads a camera, a stream URL, '-' or a named pipe")
    return ("pipe" if stat.S_ISFIFO(mode) else "file"), path.stem


class LiveSource:
    """A live stream decoded on a reader thread; iterate :meth:`frames` in the consuming thread."""

    def __init__(self, spec: str, input_format: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 stall_timeout: float = DEFAULT_STALL_TIMEOUT, max_latency: float | None = None,
                 options: dict[str, str] | None = None):
        self.spec, self.input_format, self.options = spec, input_format, dict(options or {})
        self.kind, self.name = describe(spec)
        self.timeout, self.stall_timeout, self.max_latency = timeout, stall_timeout, max_latency
        self.fps: float | None = None
        self.format_name: str | None = None
        self.size: tuple[int, int] | None = None  # (height, width) of the first frame
        self.decoded = self.dropped = 0
        self._queue: deque[LiveFrame] = deque()
        self._end: BaseException | None = None  # set by the reader: _EndOfStream or the error that ended it
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"read {spec}", daemon=True)

    # --- consumer side ------------------------------------------------------------------------------------
    def frames(self) -> Iterator[LiveFrame]:
        """Frames in stream order (some dropped under ``max_latency``); InputError when the stream fails."""
        if not self._thread.is_alive() and self._end is None:
            self._thread.start()
        while True:
            frame = self._next()
            if frame is None:
                return
            yield frame

    def _next(self) -> LiveFrame | None:
        deadline = time.monotonic() + self.stall_timeout
        with self._cond:
            while not self._queue and self._end is None and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise InputError(f"{self.spec}: stream stalled (no frame for {self.stall_timeout:g} s; "
                                     "--stall-timeout sets the limit)")
                self._cond.wait(left)
            if self._stop:  # closed by the consumer (a stop request from another thread): no further frame
                return None
            if not self._queue:
                if isinstance(self._end, _EndOfStream):
                    return None
                raise self._end
            self._drop_stale()
            frame = self._queue.popleft()
            self._cond.notify_all()
            return frame

    def _drop_stale(self) -> None:
        """Under ``max_latency``, drop queued frames older than it, keeping at least the newest."""
        if self.max_latency is None:
            return
        now = time.monotonic()
        while len(self._queue) > 1 and now - self._queue[0].read_at > self.max_latency:
            self._queue.popleft()
            self.dropped += 1

    def close(self) -> None:
        """Stop the reader (it ends at its next frame; one blocked in a read is left to the process's exit) and end
        :meth:`frames`, also from another thread while it waits for a frame."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    # --- reader side --------------------------------------------------------------------------------------
    def _put(self, frame: LiveFrame) -> None:
        with self._cond:
            if self.max_latency is None:
                while len(self._queue) >= QUEUE_FRAMES and not self._stop:
                    self._cond.wait()
            elif len(self._queue) >= QUEUE_FRAMES:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(frame)
            self._cond.notify_all()

    def _finish(self, end: BaseException) -> None:
        with self._cond:
            self._end = end
            self._cond.notify_all()

    def _run(self) -> None:
        reader = None
        try:
            container, reader = self._open()
            with container:
                self._decode(container, reader)
            self._finish(_EndOfStream())
        except InputError as exc:
            self._finish(exc)
        except av.error.FFmpegError as exc:
            self._finish(InputError(f"{self.spec}: {_ffmpeg_reason(exc, self.decoded)}"))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._finish(exc)
        finally:
            if reader is not None and self.kind != "stdin":
                reader.close()

    def _open(self) -> tuple[av.container.InputContainer, _Reader | None]:
        """The container of the source (FFmpeg errors propagate), and the byte reader of a pipe or file."""
        fmt, options = self.input_format, self.options
        if self.kind == "camera":
            return av.open(self.spec, format=fmt or "v4l2", options=options, timeout=self.timeout), None
        if self.kind == "url":
            return av.open(self.spec, format=fmt, options=options, timeout=(self.timeout, self.stall_timeout)), None
        raw = sys.stdin.buffer.raw if self.kind == "stdin" else open(self.spec, "rb", buffering=0)  # noqa: SIM115
        reader = _Reader(raw)
        if fmt is None:
            head = reader.peek(16)
            fmt = next((name for magic, name in SIGNATURES if head.startswith(magic)), None)
            if not head:
                raise InputError(f"{self.spec}: stream ended before its first frame")
        if fmt in TILED_FORMATS:
            options = {**LOW_LATENCY, **options}
        return av.open(reader, format=fmt, options=options), reader

    def _decode(self, container, reader: _Reader | None) -> None:
        if not container.streams.video:
            raise InputError(f"{self.spec}: the stream has no video")
        stream = container.streams.video[0]
        self.format_name = container.format.name
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        end = 0
        for packet in container.demux(stream):
            if packet.size and packet.pos is not None and packet.pos >= 0:
                end = max(end, packet.pos + packet.size)
            if packet.size and self.format_name in JPEGS and JPEG_END not in bytes(memoryview(packet)[-JPEG_TAIL:]):
                raise InputError(f"{self.spec}: frame {self.decoded} is cut off (a JPEG without its end marker: the "
                                 "stream ended or broke in the middle of a frame)")
            for frame in packet.decode():
                if self._stop:
                    return
                self._put(LiveFrame(self.decoded, self._checked(rgb_array(frame)), time.monotonic()))
                self.decoded += 1
        if reader is not None and self.format_name in TILED_FORMATS and end and reader.count > end:
            raise InputError(f"{self.spec}: stream ended in the middle of frame {self.decoded} "
                             f"({reader.count - end} bytes after the last complete frame)")

    def _checked(self, image: np.ndarray) -> np.ndarray:
        """The frame, if it has the stream's size (that of the first frame) and is not too small."""
        size = image.shape[:2]
        if self.size is None:
            if min(size) < MIN_SIDE:
                raise InputError(f"{self.spec}: frame is {size[1]}x{size[0]}, smaller than the minimum side of "
                                 f"{MIN_SIDE} px")
            self.size = size
        elif size != self.size:
            raise InputError(f"{self.spec}: frame size changed mid-stream from {self.size[1]}x{self.size[0]} to "
                             f"{size[1]}x{size[0]} at frame {self.decoded}")
        return image


class _EndOfStream(Exception):
    """The stream ended normally."""


def _ffmpeg_reason(exc: av.error.FFmpegError, decoded: int) -> str:
    reason = (exc.strerror or type(exc).__name__).lower()
    if decoded == 0:
        return f"cannot open or read the stream ({reason})"
    return f"stream broke off after frame {decoded - 1} ({reason}; a frame cut off or corrupt data)"


def open_live(spec: str, input_format: str | None = None, timeout: float = DEFAULT_TIMEOUT,
              stall_timeout: float = DEFAULT_STALL_TIMEOUT, max_latency: float | None = None,
              options: dict[str, str] | None = None) -> LiveSource:
    """A :class:`LiveSource` for ``spec``, checked (see :func:`describe`); reading starts at ``frames()``."""
    for flag, value in (("--timeout", timeout), ("--stall-timeout", stall_timeout), ("--max-latency", max_latency)):
        if value is not None and not value > 0:
            raise InputError(f"{flag} must be > 0 seconds, got {value}")
    readable = {name for names in av.formats_available for name in names.split(",")}
    if input_format is not None and input_format not in readable:
        raise InputError(f"--input-format {input_format}: not a format FFmpeg can read here")
    return LiveSource(spec, input_format, timeout, stall_timeout, max_latency, options)


__all__ = ["DEFAULT_STALL_TIMEOUT", "DEFAULT_TIMEOUT", "LiveFrame", "LiveSource", "describe", "open_live"]
