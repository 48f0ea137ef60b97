"""``bufferanytime depth|normal --online SOURCE``: results of a live stream, written frame by frame as computed.

SOURCE is a camera (``/dev/video0``), a network stream URL (rtsp, http, udp, ...), ``-`` (standard input) or a
named pipe (:mod:`bufferanytime.io.streams`). Each frame's result is written to ``OUT/<name>/`` as soon as it is
computed (:mod:`bufferanytime.io.sinks`), under names of its own (``KIND_online_*``) that no offline result uses;
``--name`` must be one folder name, so nothing is written outside OUT. One line of live statistics (frames,
fps, latency, drops) is updated on stderr. The model runs online: a causal model through its exact streaming
predictor (``--online-mode stream``), any other through the training-free rolling window of past frames
(``rolling``). Ctrl-C or SIGTERM ends the run with every written frame intact, the mp4 finalised and the meta
file written (exit 130); a bad source, a stall, a stream cut mid-frame, a frame size change or a full disk end it
with one ``error:`` line (exit 2), every result written before it intact.

Nothing heavy is imported before a run starts, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bufferanytime.cli.args import positive_float
from bufferanytime.errors import InputError

ONLINE_FORMATS = ("npy", "png16", "vis")  # per-frame .npy, per-frame 16-bit PNG, progressive mp4
DEFAULT_ONLINE_SAVE = ("npy", "vis")
ONLINE_MODES = ("auto", "stream", "rolling")
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
ONLINE_HELP = (
    "read a live stream instead of INPUT files and write each frame's result as soon as it is computed: SOURCE "
    "is a camera (/dev/video0), a stream URL (rtsp://, http://, udp://, tcp://, rtmp://, srt://), '-' (standard "
    "input) or a named pipe carrying a video stream (MJPEG, y4m, MPEG-TS, ...; e.g. `ffmpeg -i cam -f mjpeg - | "
    "bufferanytime depth --online - -o out`). Writes OUT/NAME/KIND_online_npy/<frame>.npy, "
    "KIND_online_png16/<frame>.png (--save npy,png16,vis; default npy,vis), KIND_online_vis.mp4 (fragmented: "
    "playable while written) and KIND_online.meta.json, names of their own beside an offline result; a stats line "
    "(fps, latency, dropped frames) on stderr. Without --max-latency every frame is processed and the reader waits "
    "for the model.")


def add_online_options(parser: argparse.ArgumentParser) -> None:
    """The ``--online`` options of ``depth``/``normal``; ``--save`` also accepts the online formats (npy)."""
    group = parser.add_argument_group("online (streaming) mode")
    group.add_argument("--online", metavar="SOURCE", default=None, help=ONLINE_HELP)
    group.add_argument("--online-mode", choices=ONLINE_MODES, default="auto",
                       help="stream = a causal model's exact incremental inference; rolling = the training-free "
                       "baseline (any video model over the last --window frames, default its clip length; depth "
                       "aligned to the outputs already written); auto (default) = stream for a causal model, "
                       "else rolling. Without --model, --online uses the embedded causal model "
                       "(tiny-synthetic-causal) when installed, else the embedded model")
    group.add_argument("--name", default=None,
                       help="output folder name under -o, one path component (default: the device, pipe or URL's "
                       "last part, 'stdin')")
    group.add_argument("--input-format", default=None, metavar="FMT",
                       help="FFmpeg demuxer of the stream (e.g. mjpeg, mpegts, h264); default: detected")
    group.add_argument("--max-latency", type=positive_float, default=None, metavar="SECONDS",
                       help="drop policy: when frames arrive faster than the model runs, frames that waited longer "
                       "than SECONDS are dropped, keeping the newest, so results stay close to live (drops are "
                       "counted on the stats line and in the meta file; the reader then never waits). Default: "
                       "none, every frame is processed")
    group.add_argument("--input-option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                       help="an FFmpeg option for opening SOURCE, repeatable: e.g. rtsp_transport=tcp (RTSP with RTP "
                       "inside its TCP connection, as behind NAT or a firewall; FFmpeg's default tries UDP first), "
                       "buffer_size=BYTES (udp), user_agent=... (http)")
    group.add_argument("--timeout", type=positive_float, default=10.0, metavar="SECONDS",
                       help="seconds to wait when connecting to a network stream (default 10)")
    group.add_argument("--stall-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                       help="end with an error when no frame arrives for SECONDS (default 10); results so far stay")
    group.add_argument("--mjpeg", default=None, metavar="PATH",
                       help="also write the visualisation as an MJPEG stream (concatenated JPEGs, e.g. for `ffplay "
                       "-f mjpeg`) to PATH, or '-' for standard output")
    for action in parser._actions:
        if action.dest == "save" and action.type is not None:
            action.type = _save_type(action.type)


def _key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--input-option``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. rtsp_transport=tcp")
    return key.strip(), value


def _save_type(offline_type):
    """``--save`` values: the offline formats, and the online ones, checked against the mode in :func:`run_online`."""

    def parse(text: str) -> tuple[str, ...]:
        formats = tuple(f.strip() for f in text.split(",") if f.strip())
        if formats and all(f in ONLINE_FORMATS for f in formats):
            return formats
        return offline_type(text)

    return parse


def _check(args: argparse.Namespace) -> tuple[str, ...]:
    """The formats of an online run; InputError for options that do not apply online."""
    if args.inputs:
        raise InputError("--online reads SOURCE, not INPUT files: drop the inputs or --online")
    save = tuple(dict.fromkeys(f for group in args.save or [DEFAULT_ONLINE_SAVE] for f in group))
    wrong = [f for f in save if f not in ONLINE_FORMATS]
    if wrong:
        raise InputError(f"--save {','.join(wrong)}: not written online, where each frame is written as it is "
                         f"computed; choose from {', '.join(ONLINE_FORMATS)}")
    if args.overlap is not None:
        raise InputError("--overlap does not apply online: each frame is predicted once, from the frames before it")
    if args.mjpeg not in (None, "-") and Path(args.mjpeg).is_dir():
        raise InputError(f"--mjpeg {args.mjpeg}: is a folder; give a file path or '-'")
    if args.name is not None:
        check_name(args.name)
    return save


def check_name(name: str) -> str:
    """``name`` when it is one folder name, so that ``OUT/name`` is inside OUT; InputError otherwise (a path such
    as ``../x`` or ``/abs`` would write outside -o)."""
    separators = {"/", os.sep, os.altsep} - {None}
    if name in ("", ".", "..") or any(c in name for c in separators) or any(ord(c) < 32 for c in name):
        raise InputError(f"--name {name!r}: give one folder name to create under -o (no '/', not '.' or '..', "
                         "one line)")
    return name


def _load(args: argparse.Namespace, settings) -> tuple[object, dict]:
    """The online predictor on its device, and what to record about its model."""
    from bufferanytime.inference.online import OnlinePredictor
    from bufferanytime.inference.pipeline import resolve_device
    from bufferanytime.models import CAUSAL_EMBEDDED_NAME, DEFAULT_MODEL, list_models, load_model, resolve_model_path

    causal_default = CAUSAL_EMBEDDED_NAME if CAUSAL_EMBEDDED_NAME in list_models(args.kind) else None
    name = args.model or causal_default or DEFAULT_MODEL.get(args.kind)
    device = resolve_device(settings.device)
    model = load_model(args.kind, name, per_frame=args.per_frame)
    if getattr(args, "decode_chunk", None):
        model.decode_chunk = args.decode_chunk
    causal = bool(getattr(model.temporal_config, "causal", False))
    mode = args.online_mode if args.online_mode != "auto" else ("stream" if causal else "rolling")
    predictor = OnlinePredictor(model, mode, device, settings.precision, settings.window)
    location = resolve_model_path(args.kind, name)
    info = {"name": str(name), "device": str(device), "path": str(Path(location).resolve()) if Path(location).exists()
            else location, "causal": causal, "online_mode": mode,
            "window": predictor.window, "horizon": getattr(model.temporal_config, "horizon", None)}
    return predictor, info


def run_online(args: argparse.Namespace, settings) -> int:
    """Run ``args.online`` through the model until the stream ends (0), fails (InputError) or is interrupted."""
    from bufferanytime.io.outputs import check_output_root
    from bufferanytime.io.streams import open_live

    save = _check(args)
    out_root = check_output_root(args.output)
    source = open_live(args.online, args.input_format, args.timeout, args.stall_timeout, args.max_latency,
                       dict(args.input_option))
    predictor, model_info = _load(args, settings)
    folder = out_root / (args.name or _default_name(source))
    session = _Session(args, settings, source, predictor, model_info)
    session.stream(folder, save)
    if session.outputs is None:
        raise InputError(f"{args.online}: the stream ended before its first frame; nothing was written")
    if not args.quiet:
        print(f"wrote {folder}/ ({session.outputs.frames} frames; {source.dropped} dropped)",
              file=sys.stderr if args.mjpeg == "-" else sys.stdout)
    return 0


def _default_name(source) -> str:
    """The source's own name, when it is one folder name (a file ``..x`` has the stem ``.``); else its kind."""
    try:
        return check_name(source.name)
    except InputError:
        return source.kind


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


class _Session:
    """One online run: source -> predictor -> progressive outputs, with the live statistics line."""

    def __init__(self, args, settings, source, predictor, model_info: dict):
        from bufferanytime.inference.pipeline import size_rule

        self.args, self.settings, self.source, self.predictor = args, settings, source, predictor
        self.model_info = model_info
        self.rule = size_rule(predictor.model, settings)
        self.outputs = None
        self.latency = {"last": 0.0, "sum": 0.0, "max": 0.0}
        self.started = time.perf_counter()

    def stream(self, folder: Path, save: tuple[str, ...]) -> None:
        from tqdm import tqdm

        from bufferanytime.io.sinks import ProgressiveOutputs

        bar = tqdm(desc=folder.name, unit="frame", disable=self.args.quiet, file=sys.stderr)
        status = "failed"
        try:
            for item in self._selected():
                if self.outputs is None:
                    self.outputs = ProgressiveOutputs(folder, self.predictor.task, save, self.source.fps or 25.0,
                                                      self.args.mjpeg)
                self._one(item)
                bar.update(1)
                bar.set_postfix(latency=f"{self.latency['last']:.3f}s", dropped=self.source.dropped, refresh=False)
            status = "finished"
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

    def _selected(self):
        """The source's frames after ``--stride`` (every N-th input frame), at most ``--max-frames`` of them."""
        taken = 0
        for item in self.source.frames():
            if item.index % self.args.stride:
                continue
            yield item
            taken += 1
            if self.args.max_frames and taken >= self.args.max_frames:
                return

    def _one(self, item) -> None:
        from bufferanytime.inference.online import predict_one

        pred = predict_one(self.predictor, item.image, self.rule)
        try:
            with interrupts_deferred():  # a frame is in every output or in none
                self.outputs.write(item.index, pred)
        except BrokenPipeError as exc:
            raise InputError(f"--mjpeg {self.args.mjpeg}: the reading end was closed") from exc
        last = time.monotonic() - item.read_at
        self.latency = {"last": last, "sum": self.latency["sum"] + last, "max": max(self.latency["max"], last)}
        if self.outputs.frames == 1:
            self.outputs.write_meta(self.meta("running"))

    def _close(self, status: str) -> None:
        self.source.close()
        if self.outputs is None:
            return
        try:
            self.outputs.close()
        finally:
            self.outputs.write_meta(self.meta(status))

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
            "input_size": [height, width], "inference_size": list(scaled_size(height, width, self.rule)),
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
