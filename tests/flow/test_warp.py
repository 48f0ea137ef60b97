import pytest
import torch

from bufferanytime.flow import cycle_error, cycle_mask, inside_mask, warp


def _const_flow(n, h, w, dx, dy):
    flow = torch.zeros(n, 2, h, w, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def test_zero_flow_is_identity():
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    assert torch.allclose(warp(x, torch.zeros(2, 2, 9, 11, dtype=torch.float64)), x, atol=1e-12)


def test_integer_shift_samples_at_p_plus_flow():
    x = torch.rand(1, 1, 8, 10, dtype=torch.float64)
    out = warp(x, _const_flow(1, 8, 10, 2, -1))
    # out(i, j) = x(i - 1, j + 2) wherever that pixel exists
    assert torch.allclose(out[0, 0, 1:, :-2], x[0, 0, :-1, 2:], atol=1e-12)


def test_fractional_shift_is_exact_on_linear_ramp():
    h, w = 12, 16
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (3 * xs - 2 * ys)[None, None]
    out = warp(ramp, _const_flow(1, h, w, 0.25, 0.75))
    expected = 3 * (xs + 0.25) - 2 * (ys + 0.75)
    assert torch.allclose(out[0, 0, :-2, :-2], expected[:-2, :-2], atol=1e-9)


def test_warp_is_differentiable_and_validates_shapes():
    """Gradients in the image and in the flow match finite differences (flows kept away from whole pixels,
    where bilinear sampling has a kink)."""
    torch.manual_seed(0)
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    flow = (0.2 + 0.6 * torch.rand(1, 2, 5, 6, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(warp, (x, flow))
    warp(x, flow).sum().backward()
    assert flow.grad.abs().mean() > 0.01  # not a trivially zero gradient
    with pytest.raises(ValueError):
        warp(x, torch.zeros(1, 2, 4, 6, dtype=torch.float64))  # flow of another size


def test_inside_mask_drops_targets_outside_the_frame():
    m = inside_mask(_const_flow(1, 4, 6, 3.0, 0.0))
    # centres at x = j + 0.5 move to j + 3.5, which must stay within the last centre, 5.5: j <= 2
    assert m[0, 0].tolist() == [True, True, True, False, False, False]
    m = inside_mask(_const_flow(1, 4, 6, -0.25, 0.0))
    assert m[0, 0].tolist() == [False, True, True, True, True, True]


def test_cycle_mask_consistent_translation_and_outliers():
    h, w = 10, 12
    fwd, bwd = _const_flow(1, h, w, 2, 1), _const_flow(1, h, w, -2, -1)
    assert cycle_error(fwd, bwd).max() < 1e-9
    mask = cycle_mask(fwd, bwd, tau=0.34)
    assert torch.equal(mask, inside_mask(fwd))
    assert mask[0, :-1, :-2].all() and not mask[0, -1].any()
    # an inconsistent backward flow at one spot breaks the cycle exactly where it is sampled
    bad = bwd.clone()
    bad[0, :, 5, 6] += torch.tensor([0.5, 0.0], dtype=torch.float64)
    mask_bad = cycle_mask(fwd, bad, tau=0.34)
    assert not mask_bad[0, 4, 4] and mask_bad[0, 2, 2]
    # the threshold is strict: an error of exactly 0.3 passes 0.34 and fails 0.3
    off = bwd + 0.3 * torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 2, 1, 1)
    assert cycle_mask(fwd, off, tau=0.34)[0, 0, 0] and not cycle_mask(fwd, off, tau=0.3)[0, 0, 0]
