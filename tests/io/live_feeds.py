"""Live streams for tests: MJPEG and y4m bytes, and a thread writing them into a named pipe at a set pace."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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


class PipeFeeder(threading.Thread):
    """Writes ``chunks`` into the named pipe ``path`` (created here), one every ``period`` seconds.

    ``before_write(k)`` is called just before chunk k is written (e.g. to look at the results so far); ``hold``
    seconds after the last chunk the pipe is closed (a stalled writer holds it open)."""

    def __init__(self, path: Path, chunks: Sequence[bytes], period: float = 0.0, hold: float = 0.0,
                 before_write: Callable[[int], None] | None = None):
        super().__init__(daemon=True)
        os.mkfifo(path)
        self.path, self.chunks, self.period, self.hold = path, list(chunks), period, hold
        self.before_write = before_write
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open(self.path, "wb", buffering=0) as pipe:
                for k, chunk in enumerate(self.chunks):
                    if k and self.period:
                        time.sleep(self.period)
                    if self.before_write is not None:
                        self.before_write(k)
                    pipe.write(chunk)
                time.sleep(self.hold)
        except BrokenPipeError:
            pass  # the reader gave up (e.g. after an error): what a real writer sees too
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
