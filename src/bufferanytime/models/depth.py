"""The Depth Anything V2 video model, which lives with its family: :mod:`bufferanytime.families.depth_anything_v2`.

Kept so that ``from bufferanytime.models.depth import VideoDepthModel`` goes on working."""

from bufferanytime.families.depth_anything_v2 import DA_V2_SHORT_SIDE, DECODE_CHUNK, METRIC, VideoDepthModel

__all__ = ["DA_V2_SHORT_SIDE", "DECODE_CHUNK", "METRIC", "VideoDepthModel"]
