import pytest
import torch
from diffusers import AutoencoderKL

from bufferanytime.losses import deferred_backward, stabilization_loss

K, LATENT = 6, 4


def _tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=LATENT,
        norm_num_groups=4,
        sample_size=16,
    )
    return vae.double().eval().requires_grad_(False)


def _setup(batch: bool):
    vae = _tiny_vae()
    torch.manual_seed(1)
    model = torch.nn.Conv2d(3, LATENT, 3, stride=2, padding=1).double()  # stands in for the video model
    frames = torch.rand(2 if batch else 1, K, 3, 16, 16, dtype=torch.float64)
    flows = 0.7 * torch.randn(frames.shape[0], K - 1, 2, 16, 16, dtype=torch.float64)
    calls = []

    def decode(z):  # (..., k, C, h, w) -> (..., k, 3, H, W)
        calls.append((z.shape[-4], torch.is_grad_enabled()))
        return vae.decode(z.flatten(0, -4)).sample.unflatten(0, z.shape[:-3])

    def pixel_loss(g):  # couples every pair of adjacent frames, across chunk boundaries too
        g = g if batch else g[None]
        stab = stabilization_loss(g, flows, -flows, tau=1e9, edge_mask=False)
        return stab + (g[:, 1:] - g[:, :-1]).square().mean()

    def latents():
        z = model(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        return z if batch else z[0]

    return model, decode, pixel_loss, latents, calls


@pytest.mark.parametrize("batch", [False, True])
def test_deferred_gradients_equal_direct_backprop(batch):
    model, decode, pixel_loss, latents, calls = _setup(batch)
    direct = pixel_loss(decode(latents()))
    direct.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    calls.clear()

    surrogate = deferred_backward(latents(), decode, pixel_loss, chunk=4)
    assert torch.allclose(surrogate, direct, rtol=1e-10)
    surrogate.backward()
    for got, want in zip((p.grad for p in model.parameters()), expected, strict=True):
        assert (got - want).norm() / want.norm() < 1e-4
    # the decoder only ever runs on one chunk (4 + 2 frames) with gradient enabled
    assert [n for n, grad in calls if grad] == [4, 2]


def test_deferred_handles_a_loss_without_gradient():
    model, decode, _, latents, _ = _setup(False)
    out = deferred_backward(latents(), decode, lambda g: torch.tensor(0.5, dtype=torch.float64), chunk=4)
    assert out.item() == 0.5
    out.backward()
    assert all((p.grad == 0).all() for p in model.parameters())
    with pytest.raises(ValueError):
        deferred_backward(torch.zeros(3, 4, 4), decode, lambda g: g.sum())
