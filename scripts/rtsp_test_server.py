"""A test RTSP server (GStreamer's gst-rtsp-server) at rtsp://127.0.0.1:PORT/test, to try ``--online rtsp://...``.

Not part of the package or its tests: it needs Debian's GStreamer and its Python bindings, run with the system
Python (not the project's venv)::

    apt-get install -y --no-install-recommends gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good \\
        gstreamer1.0-plugins-ugly gstreamer1.0-plugins-base gstreamer1.0-tools gstreamer1.0-rtsp
    /usr/bin/python3 scripts/rtsp_test_server.py [--codec h264|jpeg] [--port 8554] [--size 320x240] [--fps 25]

The stream is GStreamer's moving test pattern (``videotestsrc pattern=ball``), live at ``--fps``, as H.264 (x264,
``zerolatency``, a key frame every second, RTP payload ``rtph264pay``) or as JPEG (``rtpjpegpay``). Each client
gets its own pipeline (the stream starts when it connects); RTP over UDP and interleaved in the RTSP TCP
connection are both offered (the client chooses: ``--input-option rtsp_transport=tcp|udp``). Ctrl-C stops it.
docs/online.md says what was run against it and what came out.
"""

from __future__ import annotations

import argparse
import signal

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402 - after require_version, as PyGObject needs

ENCODERS = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph264pay name=pay0 pt=96",
    "jpeg": "jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26",
}


def launch_line(codec: str, width: int, height: int, fps: int) -> str:
    """The gst-launch description of one client's pipeline."""
    source = (f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
              f"framerate={fps}/1,format=I420 ! videoconvert")
    return f"( {source} ! {ENCODERS[codec].format(fps=fps)} )"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="h264", help="RTP payload (default h264)")
    parser.add_argument("--port", type=int, default=8554, help="RTSP port (default 8554)")
    parser.add_argument("--path", default="/test", help="mount point (default /test)")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT (default 320x240)")
    parser.add_argument("--fps", type=int, default=25, help="frames per second (default 25)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.codec, width, height, args.fps))
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.path, factory)
    server.attach(None)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print(f"rtsp://127.0.0.1:{args.port}{args.path} ({args.codec}, {width}x{height} at {args.fps} fps)", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
