import pytest
import torch

from bufferanytime.flow import get_flow_model
from bufferanytime.models import load_model
from bufferanytime.training import DepthObjective

from .conftest import tiny_config


def _objective(prior, tmp_path, **overrides):
    config = tiny_config(tmp_path, prior, tmp_path / "run", **overrides).resolved()
    return DepthObjective.build(load_model("depth", prior), get_flow_model("dis"), config, torch.device("cpu"))


@pytest.fixture(scope="module")
def frames():
    """Four frames of a smooth random texture moving right by one pixel per frame, with flickering brightness."""
    torch.manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 11, 15), size=(42, 60), mode="bicubic")
    moving = torch.cat([base.roll(shifts=t, dims=3) for t in range(4)])
    return (moving * torch.tensor([1.0, 0.85, 1.1, 0.9]).view(4, 1, 1, 1)).clamp(0, 1)


@pytest.mark.parametrize("norm, factor", [("clip", 1.0), ("none", 3.0)])
def test_clip_normalised_stabilization_ignores_the_disparity_scale(tiny_depth_prior, tmp_path, frames, norm,
                                                                 factor):
    objective = _objective(tiny_depth_prior, tmp_path, stable_norm=norm)
    clip = objective.prepare(frames, [1])
    with torch.no_grad():  # move the video model away from its prior, so that the regularization loss is not 0
        objective.model.head.conv2.weight.add_(0.1 * torch.randn_like(objective.model.head.conv2.weight))
    before = objective.losses(objective.net, [clip], [1])
    with torch.no_grad():  # the head ends in conv -> ReLU: scaling its last conv scales the disparity
        objective.model.head.conv3.weight.mul_(3.0)
        objective.model.head.conv3.bias.mul_(3.0)
    after = objective.losses(objective.net, [clip], [1])
    assert before.stable.item() > 0.05 and before.reg.item() > 0.1  # measured 0.18-0.73 and 1.6-2.3
    assert after.stable.item() == pytest.approx(factor * before.stable.item(), rel=1e-4)
    assert after.reg.item() == pytest.approx(before.reg.item(), rel=1e-4)  # Eq. 1 is scale-free as well


def test_targets_do_not_depend_on_which_frames_are_prepared(tiny_depth_prior, tmp_path, frames):
    objective = _objective(tiny_depth_prior, tmp_path)
    every = objective.prepare(frames, None)
    one = objective.prepare(frames, [2])
    assert every["target_frames"].tolist() == [0, 1, 2, 3] and one["target_frames"].tolist() == [2]
    assert torch.equal(every["targets"][2], one["targets"][0])  # bit for bit: what makes --cache exact
    for key in ("flow_fwd", "flow_bwd", "cycle_fwd", "cycle_bwd", "features.0", "features.3"):
        assert torch.equal(every[key], one[key]), key
    assert every["flow_fwd"].shape == (3, 2, 42, 60) and every["targets"].shape == (4, 42, 60)
