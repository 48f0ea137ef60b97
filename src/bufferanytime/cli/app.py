"""``bufferanytime app``: a web page (Gradio) to run the per-frame prior and the video model on a clip.

Offline: it serves on ``--host:--port`` only (default 127.0.0.1:7860), downloads nothing and sends no
analytics. Uploads are limited in size and length; each request works in its own temporary folder, removed
when the browser session ends and at exit.

On this machine only (the default host), the model box takes any embedded name, local directory or Hugging Face
id. Served beyond it (e.g. ``--host 0.0.0.0``), visitors may choose only the embedded models and the directories
given with ``--models``, and the page's messages name no server path.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from bufferanytime.cli.args import positive_int
from bufferanytime.errors import InputError

MAX_PORT = 65535


def port_number(text: str) -> int:
    """A TCP port, 1-65535 (argparse type)."""
    value = positive_int(text)
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to {MAX_PORT}, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="a web page to run the models on a clip (Gradio, offline)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=7860, help="port, 1-65535 (default 7860)")
    p.add_argument("--max-frames", type=positive_int, default=None,
                   help="longest input accepted, in frames (default 120)")
    p.add_argument("--models", nargs="+", default=[], metavar="DIR",
                   help="model directories the page offers besides the embedded models; served beyond this machine, "
                   "the only other ones it accepts")
    p.set_defaults(func=run)


def check_port(host: str, port: int) -> None:
    """InputError, in one line, when ``host:port`` cannot be served (the port is taken, or the address is not this
    machine's): checked before the slow start-up, and again by the server itself."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: unknown address ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"cannot serve on {host}:{port}: the port is in use (choose another with --port)"
                                 ) from None
            raise InputError(f"cannot serve on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}"
                             ) from None


def step(text: str) -> None:
    """A progress line on stderr for a start-up step that can take a while."""
    print(f"app: {text} ...", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from bufferanytime.app.access import check_model_dirs

    directories = check_model_dirs(args.models)
    check_port(args.host, args.port)
    root = Path(tempfile.mkdtemp(prefix="bufferanytime-app-"))  # the request folders and Gradio's own files
    try:
        os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")  # before Gradio is imported: it reads it then
        _serve_app(args, directories, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _serve_app(args: argparse.Namespace, directories: list[Path], root: Path) -> None:
    step("loading Gradio and the model code")
    from bufferanytime.app.access import ModelAccess, is_local
    from bufferanytime.app.ui import MAX_FRAMES, Sessions, build_app, launch
    from bufferanytime.app.work import example_video

    max_frames = args.max_frames or MAX_FRAMES
    access = ModelAccess(directories, open_paths=is_local(args.host))
    step("building the page")
    demo = build_app(Sessions(root / "sessions"), max_frames=max_frames, access=access)
    step("starting the server")
    url = launch(demo, args.host, args.port)
    threading.Thread(target=example_video, args=(max_frames,), daemon=True).start()  # ready for its first use
    beyond = "" if access.open_paths else "; visitors may load only the embedded models and those of --models"
    print(f"Serving on {url} (Ctrl-C to stop){beyond}", flush=True)
    _serve(demo)


def _serve(demo) -> None:
    """Wait until the server stops or Ctrl-C (or SIGTERM) stops it."""
    try:
        while demo.is_running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # Gradio's own "Closing server" line
            demo.close()
