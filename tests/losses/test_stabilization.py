import numpy as np
import pytest
import torch

from bufferanytime.constants import EDGE_MANHATTAN_RADIUS
from bufferanytime.flow import cycle_mask
from bufferanytime.losses import diamond_kernel, edge_keep_mask, stabilization_loss

H, W, K = 40, 48, 4
VX, VY = 1.5, -0.75  # constant scene motion in pixels per frame


def _scene(k: int, channels: int = 1) -> torch.Tensor:
    """A smooth buffer moving with (VX, VY) per frame: G_k(p) = g(p - k v), so G_k(p) = G_{k+1}(p + v)."""
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    x, y = xs.double() - k * VX, ys.double() - k * VY
    chans = [2.0 + torch.sin(x / 12 + c) * torch.cos(y / 14 - c) for c in range(channels)]
    return torch.stack(chans)


def _clip(channels: int = 1):
    buffers = torch.stack([_scene(k, channels) for k in range(K)])[None]  # (1, K, C, H, W)
    fwd = torch.zeros(1, K - 1, 2, H, W, dtype=torch.float64)
    fwd[:, :, 0], fwd[:, :, 1] = VX, VY
    return buffers, fwd, -fwd


@pytest.mark.parametrize("channels", [1, 3])
def test_zero_for_consistent_buffers_and_grows_with_flicker(channels):
    buffers, fwd, bwd = _clip(channels)
    assert edge_keep_mask(buffers).float().mean() > 0.9  # smooth buffers: (almost) no edges
    base = stabilization_loss(buffers, fwd, bwd)
    scales = torch.tensor([1.0, 1.1, 0.9, 1.05], dtype=torch.float64).view(1, K, 1, 1, 1)
    small = stabilization_loss(buffers * (1 + 0.2 * (scales - 1)), fwd, bwd)
    large = stabilization_loss(buffers * scales, fwd, bwd)
    assert base < 1e-3 * channels  # only bilinear interpolation error (values are ~2)
    assert base < small < large
    assert large > 100 * base


def test_matches_algorithm_2_by_hand():
    torch.manual_seed(0)
    buffers = torch.rand(K, 1, H, W, dtype=torch.float64)
    _, fwd, bwd = _clip()
    fwd, bwd = fwd[0], bwd[0]
    loss = stabilization_loss(buffers, fwd, bwd, edge_mask=False)
    # integer-free flow: build the expected value with explicit bilinear sampling on the interior
    from bufferanytime.flow import warp

    m_f = cycle_mask(fwd, bwd)
    m_b = cycle_mask(bwd, fwd)
    lf = ((warp(buffers[1:], fwd) - buffers[:-1]).abs()[:, 0] * m_f).sum() / ((K - 1) * H * W)
    lb = ((warp(buffers[:-1], bwd) - buffers[1:]).abs()[:, 0] * m_b).sum() / ((K - 1) * H * W)
    assert torch.allclose(loss, (lf + lb) / 2)
    # out-of-view pixels are excluded: the last column of frame k samples outside frame k+1
    assert not m_f[:, :, -1].any() and m_f[:, 5:-5, 5:-5].all()


def test_masks_remove_inconsistent_flow_and_precomputed_masks_agree():
    buffers, fwd, bwd = _clip()
    bad_bwd = bwd.clone()
    bad_bwd[:, :, :, 10:20, 10:20] += 5.0  # a wrong backward flow: those pixels fail the cycle check
    flicker = buffers * torch.tensor([1.0, 1.2, 1.0, 1.2], dtype=torch.float64).view(1, K, 1, 1, 1)
    full = stabilization_loss(flicker, fwd, bad_bwd, edge_mask=False)
    cyc_f = cycle_mask(fwd.flatten(0, 1), bad_bwd.flatten(0, 1)).view(1, K - 1, H, W)
    cyc_b = cycle_mask(bad_bwd.flatten(0, 1), fwd.flatten(0, 1)).view(1, K - 1, H, W)
    assert not cyc_b[0, 0, 12, 12] and not cyc_f[0, 0, 12 - 1, 12 - 2]
    cached = stabilization_loss(flicker, fwd, bad_bwd, edge_mask=False, cycle_fwd=cyc_f, cycle_bwd=cyc_b)
    assert torch.allclose(full, cached)
    no_mask = stabilization_loss(flicker, fwd, bad_bwd, edge_mask=False, tau=1e9)
    assert no_mask > full
    keep = torch.ones(1, K, H, W, dtype=torch.bool)
    assert torch.allclose(stabilization_loss(flicker, fwd, bad_bwd, edge_mask=keep), full)


def test_valid_mask_and_gradients():
    buffers, fwd, bwd = _clip(3)
    buffers = buffers * torch.tensor([1.0, 1.3, 1.0, 1.3], dtype=torch.float64).view(1, K, 1, 1, 1)
    buffers.requires_grad_(True)
    loss = stabilization_loss(buffers, fwd, bwd)
    loss.backward()
    assert torch.isfinite(buffers.grad).all()
    # the gradient is the true one: along a random direction it matches a central finite difference
    torch.manual_seed(0)
    direction, eps = torch.randn_like(buffers), 1e-6
    with torch.no_grad():
        moved = [stabilization_loss(buffers + sign * eps * direction, fwd, bwd) for sign in (1, -1)]
    slope = ((moved[0] - moved[1]) / (2 * eps)).item()
    assert abs(slope) > 1e-3 and (buffers.grad * direction).sum().item() == pytest.approx(slope, rel=1e-4)
    valid = torch.zeros(1, K, H, W, dtype=torch.bool)
    assert stabilization_loss(buffers, fwd, bwd, valid=valid).item() == 0.0
    valid[:, :, :, : W // 2] = True
    half = stabilization_loss(buffers.detach(), fwd, bwd, valid=valid)
    assert 0 < half < loss.detach()
    with pytest.raises(ValueError):
        stabilization_loss(buffers, fwd[:, :-1], bwd)


def test_edge_mask_masks_a_diamond_around_depth_steps():
    assert diamond_kernel(EDGE_MANHATTAN_RADIUS).sum() == 2 * 3 * 4 + 1  # |dx| + |dy| <= 3: 25 offsets
    depth = torch.ones(1, 1, 32, 32)
    depth[..., :, 16:] = 3.0  # a vertical depth step
    keep = edge_keep_mask(depth)
    assert keep.shape == (1, 32, 32)
    cols = np.where(~keep[0, 16].numpy())[0]
    assert cols.min() >= 16 - 1 - EDGE_MANHATTAN_RADIUS and cols.max() <= 16 + EDGE_MANHATTAN_RADIUS
    assert keep[0, :, :10].all() and keep[0, :, 22:].all()
    assert edge_keep_mask(torch.full((2, 3, 8, 8), 0.5)).all()  # flat maps have no edges
    normals = torch.zeros(1, 3, 32, 32)
    normals[:, 2] = 1.0
    normals[:, :, 16:, :] = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)  # horizontal crease in a 3-channel map
    keep_n = edge_keep_mask(normals)
    assert not keep_n[0, 16, 5] and keep_n[0, 5, 5] and keep_n[0, 28, 5]


def test_synthetic_ground_truth_is_stable_and_flicker_is_not():
    from bufferanytime.synthetic import render_video

    video = render_video(3, 5, (48, 64))
    disparity = 1.0 / torch.from_numpy(video.depth)[:, None].double()
    fwd = torch.from_numpy(video.flow_fwd).permute(0, 3, 1, 2).double()
    bwd = torch.from_numpy(video.flow_bwd).permute(0, 3, 1, 2).double()
    base = stabilization_loss(disparity, fwd, bwd)
    # only the true change of disparity under camera motion and interpolation remain: ~1 % of the values
    assert base < 0.03 * disparity.mean()
    losses = []
    for amplitude in (0.05, 0.1, 0.2):
        scale = 1 + amplitude * torch.tensor([0, 1, -1, 1, -1], dtype=torch.float64).view(5, 1, 1, 1)
        losses.append(stabilization_loss(disparity * scale, fwd, bwd))
    assert base < losses[0] < losses[1] < losses[2] and losses[1] > 3 * base
