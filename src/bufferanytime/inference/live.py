"""Online mode as a library call: :func:`run_stream` runs a live source through a model frame by frame and writes
each frame's result as soon as it is computed, as :func:`~bufferanytime.inference.pipeline.run_video` does for a
whole video.

The source is a :class:`~bufferanytime.io.streams.LiveSource` (a camera, a network stream URL, ``-`` for standard
input, a named pipe or a file, decoded on a reader thread into a bounded queue, with its drop policy
``max_latency`` and its ``stall_timeout``), a string opened as one with :func:`~bufferanytime.io.streams.open_live`'s
defaults, or a :class:`FrameSource` over ``(H, W, 3)`` uint8 RGB arrays from the caller's own code. Each frame goes
through an :class:`~bufferanytime.inference.online.OnlinePredictor` (a causal model streamed exactly, any other
through the rolling window of past frames) into :class:`~bufferanytime.io.sinks.ProgressiveOutputs`.

The run ends when the source ends or after ``max_frames`` results (status ``finished``), when ``stop`` is set
(``stopped``), on KeyboardInterrupt (``interrupted``, re-raised) or on an error (``failed: ...``, re-raised). In
every case each written frame is whole and in every chosen output, the mp4 is finalised and
``KIND_online.meta.json`` says how the run ended.

Only light modules are imported here at load time, so the command line reads :data:`ONLINE_FORMATS` without
importing torch.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bufferanytime.errors import InputError
from bufferanytime.inference.options import DEFAULT_SAVE, InferenceSettings

if TYPE_CHECKING:
    import numpy as np

    from bufferanytime.inference.online import OnlinePredictor
    from bufferanytime.io.streams import LiveSource
    from bufferanytime.models.base import VideoModel

ONLINE_FORMATS = ("npy", "png16", "vis")  # per-frame .npy, per-frame 16-bit PNG, progressive mp4
DEFAULT_ONLINE_SAVE = ("npy", "vis")
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
STOP_POLL_S = 0.05  # how often a stop request is looked for while the source waits for a frame


def online_save(save: tuple[str, ...]) -> tuple[str, ...]:
    """The formats of an online run from ``settings.save``: a subset of :data:`ONLINE_FORMATS`; the offline
    default (npz, vis) of an untouched :class:`InferenceSettings` stands for the online default (npy, vis)."""
    return DEFAULT_ONLINE_SAVE if tuple(save) == DEFAULT_SAVE else check_online_formats(save)


def check_online_formats(save: tuple[str, ...]) -> tuple[str, ...]:
    """``save`` without repeats when every format is written online; InputError naming the others."""
    wrong = [f for f in save if f not in ONLINE_FORMATS]
    if wrong:
        raise InputError(f"--save {','.join(wrong)}: not written online, where each frame is written as it is "
                         f"computed; choose from {', '.join(ONLINE_FORMATS)}")
    return tuple(dict.fromkeys(save))


@dataclass
class StreamStep:
    """What ``on_frame`` receives after each frame's result is written: the input frame's index, its result (the
    task's disk layout, at the frame's size), seconds from the frame being read to its result written, and the
    frames written and dropped so far."""

    index: int
    prediction: np.ndarray
    latency_s: float
    written: int
    dropped: int


class FrameSource:
    """Frames from the caller's own iterable of ``(H, W, 3)`` uint8 RGB arrays, for :func:`run_stream`.

    Each frame is taken when the model is ready for it (none is dropped); ``fps`` is the rate of the mp4 (25 when
    None) and ``name`` is recorded in the meta file. A frame of another size than the first, of another shape or
    type, or with a side under 8 px ends the run with an InputError, the results before it kept.
    """

    kind = "frames"
    format_name = None
    max_latency = None
    stall_timeout = None

    def __init__(self, frames: Iterable[np.ndarray], fps: float | None = None, name: str = "frames"):
        self.spec = self.name = name
        self.fps, self.options = fps, {}
        self.size: tuple[int, int] | None = None
        self.decoded = self.dropped = 0
        self._frames, self._stop = frames, False

    def frames(self) -> Iterator:
        import numpy as np

        from bufferanytime.io.streams import LiveFrame

        for image in self._frames:
            if self._stop:
                return
            index, self.decoded = self.decoded, self.decoded + 1
            yield LiveFrame(index, self._checked(np.asarray(image), index), time.monotonic())

    def _checked(self, image: np.ndarray, index: int) -> np.ndarray:
        from bufferanytime.io.video import MIN_SIDE

        if image.dtype.name != "uint8" or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"{self.spec}: frame {index} is {image.dtype} {image.shape}, expected (H, W, 3) uint8 "
                             "RGB")
        size = image.shape[:2]
        if self.size is None and min(size) < MIN_SIDE:
            raise InputError(f"{self.spec}: frame is {size[1]}x{size[0]}, smaller than the minimum side of "
                             f"{MIN_SIDE} px")
        if self.size is not None and size != self.size:
            raise InputError(f"{self.spec}: frame size changed mid-stream from {self.size[1]}x{self.size[0]} to "
                             f"{size[1]}x{size[0]} at frame {index}")
        self.size = size
        return image

    def close(self) -> None:
        """Take no further frame (the iterable itself is left to its owner)."""
        self._stop = True


def run_stream(
    model: VideoModel | OnlinePredictor,
    source: LiveSource | FrameSource | str,
    out_dir: str | Path,
    settings: InferenceSettings,
    model_info: dict | None = None,
    progress: bool = True,
    *,
    mode: str = "auto",
    mjpeg: str | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
    on_frame: Callable[[StreamStep], Any] | None = None,
) -> dict:
    """Run ``source`` through ``model`` frame by frame, writing each result into ``out_dir`` as it is computed, until
    the source ends, ``max_frames`` results are written or ``stop`` is set. Returns the meta dict (the content of
    ``KIND_online.meta.json``).

    ``model`` is a video model, run online in ``mode`` (``auto``: streamed exactly when causal, else the rolling
    window of ``settings.window`` past frames), or an :class:`~bufferanytime.inference.online.OnlinePredictor`,
    reset first. ``settings.save`` picks the outputs among :data:`ONLINE_FORMATS`; ``mjpeg`` also writes the
    visualisation as concatenated JPEGs to a path, or ``-`` for standard output. ``stride`` keeps every N-th input
    frame. ``progress`` shows a stats line on stderr (frames, fps, latency, drops); ``on_frame`` is called with a
    :class:`StreamStep` after each frame is written. ``stop``, set from any thread, ends the run after the frame
    being computed, also while the source waits for a frame; status ``stopped``.

    A source that ends before its first frame raises InputError and writes nothing. On an error or an interrupt
    the exception propagates after the outputs are closed and the meta file is written (status ``failed: ...`` or
    ``interrupted``).
    """
    save = online_save(settings.save)
    if isinstance(source, str):
        from bufferanytime.io.streams import open_live

        source = open_live(source)
    run = _StreamRun(_online_predictor(model, mode, settings), source, settings, model_info)
    with _stop_watch(stop, source):
        run.stream(Path(out_dir), save, mjpeg, _Limits(stride, max_frames, stop), progress, on_frame)
    if run.outputs is None and not (stop is not None and stop.is_set()):
        raise InputError(f"{source.spec}: the stream ended before its first frame; nothing was written")
    return run.final_meta


def _online_predictor(model, mode: str, settings: InferenceSettings) -> OnlinePredictor:
    """``model`` itself when it is an online predictor (reset: a new stream), else one for it in its mode."""
    from bufferanytime.inference.online import OnlinePredictor, resolve_mode

    if isinstance(model, OnlinePredictor):
        model.reset()
        return model
    return OnlinePredictor(model, resolve_mode(model, mode), settings.device, settings.precision, settings.window)


@dataclass
class _Limits:
    """Which frames of the source are run: every ``stride``-th, at most ``max_frames``, until ``stop`` is set."""

    stride: int = 1
    max_frames: int | None = None
    stop: threading.Event | None = None

    def select(self, items: Iterable) -> Iterator:
        taken = 0
        for item in items:
            if self.stop is not None and self.stop.is_set():
                return
            if item.index % self.stride:
                continue
            yield item
            taken += 1
            if self.max_frames and taken >= self.max_frames:
                return


@contextmanager
def _stop_watch(stop: threading.Event | None, source) -> Iterator[None]:
    """While the ``with`` runs, closing ``source`` as soon as ``stop`` is set (which ends a wait for a frame)."""
    if stop is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if stop.wait(STOP_POLL_S):
                source.close()
                return

    watcher = threading.Thread(target=watch, name="stream stop", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C / SIGTERM inside the ``with`` take effect (as KeyboardInterrupt) when it ends, not in the middle."""
    received: list[int] = []
    try:
        previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in INTERRUPTS}
    except ValueError:  # not the main thread: no signal handling here
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


class _StreamRun:
    """One online run: source -> predictor -> progressive outputs, with latencies and the meta record."""

    def __init__(self, predictor: OnlinePredictor, source, settings: InferenceSettings, model_info: dict | None):
        from bufferanytime.inference.pipeline import size_rule

        self.source, self.predictor, self.settings = source, predictor, settings
        model = predictor.model
        self.model_info = {**(model_info or {}), "device": str(predictor.device),
                           "causal": bool(getattr(model.temporal_config, "causal", False)),
                           "online_mode": predictor.mode, "window": predictor.window,
                           "horizon": getattr(model.temporal_config, "horizon", None)}
        self.rule = size_rule(model, settings)
        self.outputs = None
        self.mjpeg: str | None = None
        self.final_meta: dict = {}
        self.latency = {"last": 0.0, "sum": 0.0, "max": 0.0}
        self.started = time.perf_counter()

    def stream(self, folder: Path, save: tuple[str, ...], mjpeg: str | None, limits: _Limits, progress: bool,
               on_frame: Callable | None) -> None:
        from tqdm import tqdm

        from bufferanytime.io.sinks import ProgressiveOutputs

        self.mjpeg = mjpeg
        bar = tqdm(desc=folder.name, unit="frame", disable=not progress, file=sys.stderr)
        status = "failed"
        try:
            for item in limits.select(self.source.frames()):
                if self.outputs is None:
                    self.outputs = ProgressiveOutputs(folder, self.predictor.task, save, self.source.fps or 25.0,
                                                      mjpeg)
                self._one(item, on_frame)
                bar.update(1)
                bar.set_postfix(latency=f"{self.latency['last']:.3f}s", dropped=self.source.dropped, refresh=False)
            status = "stopped" if limits.stop is not None and limits.stop.is_set() else "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except InputError as exc:
            status = f"failed: {exc}"
            raise
        except OSError as exc:  # e.g. a full disk: said in the meta file too, if it can still be written
            status = f"failed: {exc.filename or folder}: {(exc.strerror or str(exc)).lower()}"
            raise
        finally:
            bar.close()
            self._close(status)

    def _one(self, item, on_frame: Callable | None) -> None:
        from bufferanytime.inference.online import predict_one

        pred = predict_one(self.predictor, item.image, self.rule)
        try:
            with interrupts_deferred():  # a frame is in every output or in none
                self.outputs.write(item.index, pred)
        except BrokenPipeError as exc:
            raise InputError(f"--mjpeg {self.mjpeg}: the reading end was closed") from exc
        last = time.monotonic() - item.read_at
        self.latency = {"last": last, "sum": self.latency["sum"] + last, "max": max(self.latency["max"], last)}
        if self.outputs.frames == 1:
            self.outputs.write_meta(self.meta("running"))
        if on_frame is not None:
            on_frame(StreamStep(item.index, pred, last, self.outputs.frames, self.source.dropped))

    def _close(self, status: str) -> None:
        self.source.close()
        meta = self.meta(status)
        self.final_meta = {**meta, "frames_written": 0, "last_frame_index": None, "outputs": {}}
        if self.outputs is None:
            return
        try:
            self.outputs.close()
        finally:
            self.outputs.write_meta(meta)
            self.final_meta = {**meta, "frames_written": self.outputs.frames,
                               "last_frame_index": self.outputs.last_index, "outputs": self.outputs.formats()}

    def meta(self, status: str) -> dict:
        """What the run used and did: source, model, sizes, drop policy, counts, latencies."""
        from bufferanytime import __version__
        from bufferanytime.inference.pipeline import scaled_size

        source, predictor = self.source, self.predictor
        height, width = source.size or (0, 0)
        written = max(self.outputs.frames if self.outputs else 0, 1)
        return {
            "kind": predictor.model.kind, "task": predictor.task.name, "status": status,
            "source": {"spec": source.spec, "kind": source.kind, "format": source.format_name, "fps": source.fps,
                       "options": source.options},
            "model": {**self.model_info, "prior": predictor.model.prior_ref},
            "input_size": [height, width],
            "inference_size": list(scaled_size(height, width, self.rule) if source.size else (0, 0)),
            "size_rule": self.rule, "device": self.model_info["device"],
            "precision": {"requested": self.settings.precision, "used": predictor.precision},
            "policy": {"max_latency_s": source.max_latency, "stall_timeout_s": source.stall_timeout,
                       "rule": "every frame" if source.max_latency is None else "drop frames older than max_latency, "
                       "keep the newest"},
            "frames_read": source.decoded, "frames_dropped": source.dropped,
            "timings": {"model_s": round(predictor.seconds, 3), "wall_s": round(time.perf_counter() - self.started, 3),
                        "latency_mean_s": round(self.latency["sum"] / written, 4),
                        "latency_max_s": round(self.latency["max"], 4)},
            "version": __version__,
        }
