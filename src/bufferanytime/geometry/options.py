"""The options of ``--save ply`` (no torch, no plyfile: the command line checks them before any model work)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bufferanytime.geometry.intrinsics import IntrinsicsSpec

DEFAULT_DROP_EDGES = 0.1  # relative depth jump to a neighbour above which a point is dropped (10 %)


@dataclass(frozen=True)
class PointCloudOptions:
    """The geometry options of a depth run: camera, and how ``--save ply`` samples the points."""

    intrinsics: IntrinsicsSpec = field(default_factory=IntrinsicsSpec)
    stride: int = 1
    drop_edges: float = DEFAULT_DROP_EDGES  # 0: keep every point
    depth_scale: float = 1.0  # relative depth only: the median depth of the video's points
