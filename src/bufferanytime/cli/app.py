"""``bufferanytime app``: a web page (Gradio) to run the per-frame prior and the video model on a clip.

Offline: it serves on ``--host:--port`` only (default 127.0.0.1:7860), downloads nothing and sends no
analytics. Uploads are limited in size and length; each request works in its own temporary folder, removed
when the browser session ends and at exit.
"""

from __future__ import annotations

import argparse
import os

from bufferanytime.cli.args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="a web page to run the models on a clip (Gradio, offline)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-frames", type=positive_int, default=None,
                   help="longest input accepted, in frames (default 120)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bufferanytime.app.ui import MAX_FRAMES, Sessions, build_app, launch

    sessions = Sessions()  # removed at exit, with Gradio's own copies of uploads and results kept inside it
    os.environ["GRADIO_TEMP_DIR"] = str(sessions.root / "gradio")
    demo = build_app(sessions, max_frames=args.max_frames or MAX_FRAMES)
    print(f"Serving on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    launch(demo, args.host, args.port, block=True)
    return 0
