"""Training losses of Buffer Anytime: per-frame regularization (Sec. 3.1), flow-based stabilization (Sec. 3.2,
Alg. 2) or its 3D-consistent variant (camera poses known), and deferred back-propagation through a frame decoder
(Alg. 1)."""

from bufferanytime.losses.deferred import deferred_backward
from bufferanytime.losses.regularization import (
    affine_invariant_loss,
    latent_l2_loss,
    log_depth,
    log_l1_loss,
    normalize_affine,
    silog_loss,
    split_log_l1_loss,
)
from bufferanytime.losses.stabilization import canny_edges, diamond_kernel, edge_keep_mask, stabilization_loss
from bufferanytime.losses.stabilization_3d import disparity_to_depth, disparity_to_depth_params, stabilization_loss_3d

__all__ = [
    "affine_invariant_loss",
    "canny_edges",
    "deferred_backward",
    "diamond_kernel",
    "disparity_to_depth",
    "disparity_to_depth_params",
    "edge_keep_mask",
    "latent_l2_loss",
    "log_depth",
    "log_l1_loss",
    "normalize_affine",
    "silog_loss",
    "split_log_l1_loss",
    "stabilization_loss",
    "stabilization_loss_3d",
]
