"""Video and image input, streamed; outputs written atomically."""

from bufferanytime.io.outputs import NpyStreamWriter, OutputDir, colorize_depth, normals_to_rgb
from bufferanytime.io.video import VideoSource, VideoWriter, expand_inputs, open_video, write_video

__all__ = [
    "NpyStreamWriter",
    "OutputDir",
    "VideoSource",
    "VideoWriter",
    "colorize_depth",
    "expand_inputs",
    "normals_to_rgb",
    "open_video",
    "write_video",
]
