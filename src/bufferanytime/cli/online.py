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

This module parses and checks the options, picks the model and names the output folder; the run itself is the
library's :func:`bufferanytime.inference.live.run_stream`.

Nothing heavy is imported before a run starts, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from bufferanytime.cli.args import positive_float
from bufferanytime.errors import InputError
from bufferanytime.inference.live import DEFAULT_ONLINE_SAVE, ONLINE_FORMATS, check_online_formats

ONLINE_MODES = ("auto", "stream", "rolling")
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
    check_online_formats(save)
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
    """The model of the run (the embedded causal model by default, when installed), and where it comes from."""
    from bufferanytime.inference.pipeline import resolve_device
    from bufferanytime.models import CAUSAL_EMBEDDED_NAME, DEFAULT_MODEL, list_models, load_model, resolve_model_path

    causal_default = CAUSAL_EMBEDDED_NAME if CAUSAL_EMBEDDED_NAME in list_models(args.kind) else None
    name = args.model or causal_default or DEFAULT_MODEL.get(args.kind)
    resolve_device(settings.device)  # a device this machine lacks is refused before the model loads
    model = load_model(args.kind, name, per_frame=args.per_frame)
    if getattr(args, "decode_chunk", None):
        model.decode_chunk = args.decode_chunk
    location = resolve_model_path(args.kind, name)
    path = str(Path(location).resolve()) if Path(location).exists() else location
    return model, {"name": str(name), "path": path}


def run_online(args: argparse.Namespace, settings) -> int:
    """Run ``args.online`` through the model until the stream ends (0), fails (InputError) or is interrupted."""
    from bufferanytime.inference.live import run_stream
    from bufferanytime.io.outputs import check_output_root
    from bufferanytime.io.streams import open_live

    save = _check(args)
    out_root = check_output_root(args.output)
    source = open_live(args.online, args.input_format, args.timeout, args.stall_timeout, args.max_latency,
                       dict(args.input_option))
    model, model_info = _load(args, settings)
    folder = out_root / (args.name or _default_name(source))
    meta = run_stream(model, source, folder, replace(settings, save=save), model_info, progress=not args.quiet,
                      mode=args.online_mode, mjpeg=args.mjpeg, stride=args.stride, max_frames=args.max_frames)
    if not args.quiet:
        print(f"wrote {folder}/ ({meta['frames_written']} frames; {meta['frames_dropped']} dropped)",
              file=sys.stderr if args.mjpeg == "-" else sys.stdout)
    return 0


def _default_name(source) -> str:
    """The source's own name, when it is one folder name (a file ``..x`` has the stem ``.``); else its kind."""
    try:
        return check_name(source.name)
    except InputError:
        return source.kind
