"""The 3D-consistent stabilization loss on the synthetic world's exact depth, normals, flows and poses.

A camera moving forward changes every point's depth, and a turning camera turns camera-space normals: the flow loss
of Alg. 2 penalises the exact answer in both cases, the 3D loss does not. Moving objects are found and left out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bufferanytime.losses import stabilization_loss
from bufferanytime.losses.stabilization_3d import (
    disparity_to_depth,
    disparity_to_depth_params,
    relative_poses,
    rigid_mask,
    stabilization_loss_3d,
)
from bufferanytime.synthetic import render_video

SIZE = (48, 64)
SEEDS = (0, 1, 2)
MARGIN = 0.05  # the 3D loss on exact geometry must be below this fraction of the flow loss


def tensors(video) -> dict[str, torch.Tensor]:
    """A rendered video as batched float64 tensors in the losses' layouts."""
    def t(x):
        return torch.from_numpy(np.ascontiguousarray(x))

    return {
        "depth": t(video.depth)[None, :, None].double(),
        "normal": t(video.normal).permute(0, 3, 1, 2)[None].double(),
        "flow_fwd": t(video.flow_fwd).permute(0, 3, 1, 2)[None].double(),
        "flow_bwd": t(video.flow_bwd).permute(0, 3, 1, 2)[None].double(),
        "cycle_fwd": t(video.flow_valid_fwd)[None],
        "cycle_bwd": t(video.flow_valid_bwd)[None],
        "poses": t(np.stack(video.poses))[None],
        "intrinsics": torch.tensor([[video.intrinsics[k] for k in ("fx", "fy", "cx", "cy")]], dtype=torch.float64),
    }


def both_losses(g: dict, kind: str, **kwargs) -> tuple[float, float]:
    """(3D loss, flow loss) of the exact buffers of ``kind``; depth goes to the flow loss as log depth (the same
    relative measure as the 3D loss)."""
    buffers = g[kind]
    flat = torch.log(buffers) if kind == "depth" else buffers
    masks = {"cycle_fwd": g["cycle_fwd"], "cycle_bwd": g["cycle_bwd"]}
    loss_3d = stabilization_loss_3d(buffers, g["flow_fwd"], g["flow_bwd"], g["poses"], g["intrinsics"],
                                    **masks, **kwargs)
    loss_2d = stabilization_loss(flat, g["flow_fwd"], g["flow_bwd"], **masks)
    return float(loss_3d), float(loss_2d)


@pytest.mark.parametrize("seed", SEEDS)
def test_forward_motion_exact_depth_costs_nothing_in_3d_only(seed):
    g = tensors(render_video(seed, 4, SIZE, camera="dolly", objects="static"))
    loss_3d, loss_2d = both_losses(g, "depth")
    assert loss_2d > 2e-3  # the flow loss penalises the exact depth of a camera moving forward
    assert loss_3d < MARGIN * loss_2d and loss_3d < 5e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_rotation_exact_normals_and_depth_cost_nothing_in_3d_only(seed):
    g = tensors(render_video(seed, 4, SIZE, camera="rotate", objects="static"))
    normal_3d, normal_2d = both_losses(g, "normal")
    assert normal_2d > 2e-3  # camera-space normals turn with the camera
    assert normal_3d < MARGIN * normal_2d
    depth_3d, depth_2d = both_losses(g, "depth")
    assert depth_3d < MARGIN * depth_2d


def test_flicker_still_costs_in_3d():
    """The 3D loss still sees what it is for: depth that changes between frames by more than the motion."""
    g = tensors(render_video(0, 4, SIZE, camera="dolly", objects="static"))
    exact, _ = both_losses(g, "depth")
    gains = torch.tensor([1.0, 1.1, 0.9, 1.05], dtype=torch.float64).view(1, 4, 1, 1, 1)
    g["depth"] = g["depth"] * gains
    flickering, _ = both_losses(g, "depth")
    assert flickering > 20 * exact


def test_gradient_reaches_the_buffers():
    g = tensors(render_video(1, 3, SIZE, camera="dolly", objects="static"))
    depth = g["depth"].clone().requires_grad_(True)
    noisy = depth * (1 + 0.01 * torch.randn_like(depth, generator=torch.Generator().manual_seed(0)))
    loss = stabilization_loss_3d(noisy, g["flow_fwd"], g["flow_bwd"], g["poses"], g["intrinsics"])
    loss.backward()
    assert torch.isfinite(depth.grad).all() and depth.grad.abs().sum() > 0


def test_a_frame_without_a_pose_leaves_its_pairs_out():
    """A frame an estimated camera lost has a NaN pose: its pairs count for nothing, the others as before."""
    g = tensors(render_video(2, 3, SIZE, camera="dolly", objects="static"))
    depth = g["depth"] * (1 + 0.05 * torch.rand_like(g["depth"], generator=torch.Generator().manual_seed(1)))
    masks = {"cycle_fwd": g["cycle_fwd"], "cycle_bwd": g["cycle_bwd"]}
    lost = g["poses"].clone()
    lost[:, 2] = float("nan")
    loss = stabilization_loss_3d(depth, g["flow_fwd"], g["flow_bwd"], lost, g["intrinsics"], **masks)
    first = stabilization_loss_3d(depth[:, :2], g["flow_fwd"][:, :1], g["flow_bwd"][:, :1], g["poses"][:, :2],
                                  g["intrinsics"], cycle_fwd=g["cycle_fwd"][:, :1], cycle_bwd=g["cycle_bwd"][:, :1])
    assert float(first) > 0
    assert float(loss) == pytest.approx(float(first) / 2, rel=1e-9)  # one pair of two, normalised by both
    params = disparity_to_depth_params(1 / g["depth"][:, :, 0], g["flow_fwd"], lost, g["intrinsics"])
    assert torch.isfinite(params).all()


@pytest.mark.parametrize("camera", ["dolly", "wander"])
def test_moving_objects_are_left_out_not_flattened(camera):
    """With exact flows (so a tight tolerance), the rigid test keeps the static scene and drops what moves (here,
    objects moving in depth: the flattening the flow loss would impose), and the loss is the static scene's."""
    video = render_video(1, 4, (64, 96), camera=camera, objects="depth")
    g = tensors(video)
    fwd, _ = relative_poses(g["poses"])
    rigid = rigid_mask(g["flow_fwd"][0], fwd[0], g["intrinsics"].repeat(3, 1), g["depth"][0, :-1], motion_px=0.05)
    rigid = rigid.numpy()
    valid, moving = video.flow_valid_fwd, video.moving[:-1]
    assert rigid[valid & ~moving].mean() > 0.999
    assert (~rigid[valid & moving]).mean() > 0.8
    masked, _ = both_losses(g, "depth", motion_px=0.05)
    unmasked, _ = both_losses(g, "depth", mask_motion=False)
    assert masked < 0.2 * unmasked and masked < 2e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_relative_disparity_becomes_depth_on_the_poses_scale(seed):
    """An affine disparity of the exact depth is mapped back to the depth in metres by the per-clip fit."""
    g = tensors(render_video(seed, 4, SIZE, camera="dolly", objects="static"))
    depth = g["depth"][:, :, 0]
    disparity = 3.0 / depth + 0.1
    params = disparity_to_depth_params(disparity, g["flow_fwd"], g["poses"], g["intrinsics"], mask=g["cycle_fwd"])
    np.testing.assert_allclose(params[0].numpy(), [1 / 3, -0.1 / 3], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(disparity_to_depth(disparity, params).numpy(), depth.numpy(), rtol=1e-3)


def test_a_pure_rotation_carries_no_scale():
    g = tensors(render_video(0, 3, SIZE, camera="rotate", objects="static"))
    disparity = 2.0 / g["depth"][:, :, 0]
    params = disparity_to_depth_params(disparity, g["flow_fwd"], g["poses"], g["intrinsics"])
    assert params[0, 1] == 0 and params[0, 0] == pytest.approx(1 / float(disparity.median()))


def test_shapes_are_checked():
    g = tensors(render_video(0, 3, SIZE, camera="rotate", objects="static"))
    with pytest.raises(ValueError, match="poses must be"):
        stabilization_loss_3d(g["depth"], g["flow_fwd"], g["flow_bwd"], g["poses"][:, :2], g["intrinsics"])
    with pytest.raises(ValueError, match="channels"):
        stabilization_loss_3d(g["normal"][:, :, :2], g["flow_fwd"], g["flow_bwd"], g["poses"], g["intrinsics"])
