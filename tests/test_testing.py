"""The tiny random priors the other tests run on are informative: their output follows the image.

A prior whose output is constant (the default initialisation of a random DPT gives 1.0 +- 1e-6) lets a test pass
with frames in the wrong colour order, range, orientation or order; these checks make sure that cannot happen.
"""

import pytest
import torch

from bufferanytime.models import load_model
from tests.helpers import moving_pattern

# Mean absolute change of the output that counts as "seen"; measured changes are 0.18-0.62 for both priors,
# float noise is below 1e-5.
SEEN = 0.05


def _frames(seed: int) -> torch.Tensor:
    """Two frames ``(1, 2, 3, H, W)`` in [0, 1] of a smooth random texture."""
    clip = torch.from_numpy(moving_pattern(frames=2, seed=seed)).permute(0, 3, 1, 2).float() / 255
    return clip[None]


@pytest.fixture(scope="module", params=["depth", "normal"])
def prior_output(request):
    """``(kind, run)``: the per-frame prior of that kind and a function applying it without gradient."""
    model = load_model(request.param, request.getfixturevalue(f"tiny_{request.param}_prior"), per_frame=True).eval()

    def run(frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(frames)

    return request.param, run


def _change(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().mean().item()


def test_output_varies_across_pixels_and_images(prior_output):
    kind, run = prior_output
    first, second = run(_frames(0)), run(_frames(1))
    assert torch.isfinite(first).all()
    spatial = first.std(dim=(-2, -1)).mean().item()  # per frame (and channel) across pixels
    assert spatial > SEEN, (kind, spatial)
    assert _change(first, second) > SEEN, kind


def test_output_depends_on_colour_order_range_and_orientation(prior_output):
    """Swapped channels, a halved range or a mirrored image each give a different output (mapped back)."""
    kind, run = prior_output
    frames = _frames(0)
    reference = run(frames)
    mirrored = run(frames.flip(-1)).flip(-1)
    if kind == "normal":  # a mirrored scene has mirrored normals: x changes sign
        mirrored = mirrored * torch.tensor([-1.0, 1.0, 1.0]).view(1, 1, 3, 1, 1)
    changes = {
        "bgr": _change(run(frames.flip(2)), reference),
        "range": _change(run(frames * 0.5), reference),
        "mirror": _change(mirrored, reference),
    }
    assert min(changes.values()) > SEEN, (kind, changes)


def test_each_frame_output_follows_its_own_frame(prior_output):
    """Reversing the frames reverses the per-frame output: a wrong frame order would be seen."""
    kind, run = prior_output
    frames = torch.cat([_frames(0)[:, :1], _frames(1)[:, :1]], dim=1)  # two unrelated frames
    forward, backward = run(frames), run(frames.flip(1))
    assert _change(forward[:, 0], forward[:, 1]) > SEEN, kind
    torch.testing.assert_close(backward.flip(1), forward, rtol=0, atol=1e-4)
