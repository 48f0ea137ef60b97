"""Video and image input, streamed; outputs written atomically; the layout contract (:mod:`bufferanytime.io.arrays`:
channel-last arrays on disk <-> channel-first tensors in memory, converted nowhere else)."""

from bufferanytime.io.outputs import (
    NpyStreamWriter,
    OutputDir,
    OutputFiles,
    check_output_root,
    colorize_depth,
    normals_to_rgb,
)
from bufferanytime.io.video import VideoSource, VideoWriter, expand_inputs, open_video, write_video

__all__ = [
    "NpyStreamWriter",
    "OutputDir",
    "OutputFiles",
    "VideoSource",
    "VideoWriter",
    "check_output_root",
    "colorize_depth",
    "expand_inputs",
    "normals_to_rgb",
    "open_video",
    "write_video",
]
