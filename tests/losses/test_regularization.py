import pytest
import torch

from bufferanytime.losses import affine_invariant_loss, latent_l2_loss, normalize_affine


def test_affine_invariant_loss_ignores_scale_and_shift():
    torch.manual_seed(0)
    target = torch.rand(3, 16, 20)
    pred = 4.0 * target + 1.5
    assert affine_invariant_loss(pred, target) < 1e-10
    assert affine_invariant_loss(torch.rand(3, 16, 20), target) > 0.1


def _normalized(d: torch.Tensor) -> torch.Tensor:
    """Eq. 1 of the paper written out: minus the median, divided by the mean absolute deviation from it."""
    t = d.flatten().median()
    return (d - t) / (d - t).abs().mean()


def test_affine_invariant_loss_matches_definition_and_shapes():
    torch.manual_seed(1)
    pred, target = torch.rand(9, 7, dtype=torch.float64), torch.rand(9, 7, dtype=torch.float64)
    expected = ((_normalized(pred) - _normalized(target)) ** 2).mean()
    assert torch.allclose(affine_invariant_loss(pred, target), expected, rtol=1e-5)
    batched = affine_invariant_loss(torch.stack([pred, target]), torch.stack([target, target]))
    assert torch.allclose(batched, expected / 2, rtol=1e-5)
    with pytest.raises(ValueError):
        affine_invariant_loss(pred, target[:-1])


def test_affine_invariant_loss_constant_maps_and_gradients():
    const = torch.full((2, 8, 8), 3.0, requires_grad=True)
    loss = affine_invariant_loss(const, torch.full((2, 8, 8), 7.0))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(const.grad).all()
    assert torch.isfinite(normalize_affine(torch.zeros(4, 4))).all()

    torch.manual_seed(2)
    pred = torch.rand(9, 7, dtype=torch.float64, requires_grad=True)
    target = torch.rand(9, 7, dtype=torch.float64, requires_grad=True)
    affine_invariant_loss(pred, target).backward()
    assert target.grad is None  # the target is detached
    # the gradient of the definition (its epsilon aside: 5e-6 apart), of real size (mean 0.16)
    (expected,) = torch.autograd.grad(((_normalized(pred) - _normalized(target.detach())) ** 2).mean(), pred)
    assert expected.abs().mean() > 0.05 and torch.allclose(pred.grad, expected, rtol=0, atol=1e-4)


def test_latent_l2_loss():
    pred = torch.zeros(2, 4, 3, 3, requires_grad=True)
    target = torch.ones(2, 4, 3, 3, requires_grad=True)
    loss = latent_l2_loss(pred, target)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.allclose(pred.grad, torch.full_like(pred, -2.0 / pred.numel())) and target.grad is None
