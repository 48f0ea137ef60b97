"""Optical flow: estimators behind one interface, warping, and the forward-backward consistency check.

``get_flow_model(name, **kw)`` returns a callable ``(src, dst) -> flow`` taking ``(N, 3, H, W)`` RGB in [0, 1]
and returning ``(N, 2, H, W)`` float32 flow in pixels (channel 0 = x right, 1 = y down) with ``src(p)``
matching ``dst(p + flow(p))``. Methods: ``"dis"`` (OpenCV DIS, no weights) and ``"raft-small"`` (RAFT-small
implemented here, loading the official checkpoint; small frames are upsampled to ``RAFT_MIN_SIDE`` first);
``list_flows()`` names them.
"""

from bufferanytime.flow.dis import DISFlow
from bufferanytime.flow.raft_small import RAFTSmall
from bufferanytime.flow.registry import (
    FLOW_MODELS,
    RAFT_MIN_SIDE,
    FlowModel,
    RAFTSmallFlow,
    get_flow_model,
    list_flows,
)
from bufferanytime.flow.visualize import flow_to_color, make_colorwheel
from bufferanytime.flow.warp import cycle_error, cycle_mask, inside_mask, warp

__all__ = [
    "FLOW_MODELS",
    "RAFT_MIN_SIDE",
    "DISFlow",
    "FlowModel",
    "RAFTSmall",
    "RAFTSmallFlow",
    "cycle_error",
    "cycle_mask",
    "flow_to_color",
    "get_flow_model",
    "inside_mask",
    "list_flows",
    "make_colorwheel",
    "warp",
]
