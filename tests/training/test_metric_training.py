"""Zero-shot training on a metric prior keeps its metric scale (log-depth regularization), where Eq. 1 would not."""

from __future__ import annotations

import pytest
import torch

from bufferanytime.flow import get_flow_model
from bufferanytime.losses import affine_invariant_loss, log_l1_loss, split_log_l1_loss
from bufferanytime.models import load_model
from bufferanytime.tasks import DEPTH, METRIC_DEPTH, metric_depth
from bufferanytime.tasks.metric_depth import CLIP_SCALE_WEIGHT, METRIC_SCALE_WEIGHT
from bufferanytime.testing import make_tiny_metric_prior
from bufferanytime.training import DepthObjective, train

from .conftest import tiny_config


@pytest.fixture(scope="module")
def metric_prior(tmp_path_factory):
    return make_tiny_metric_prior(tmp_path_factory.mktemp("metric") / "prior", max_depth=20)


@pytest.fixture(scope="module")
def frames():
    """Four frames of a smooth random texture moving right by one pixel per frame, with flickering brightness."""
    torch.manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 11, 15), size=(42, 56), mode="bicubic")
    moving = torch.cat([base.roll(shifts=t, dims=3) for t in range(4)])
    return (moving * torch.tensor([1.0, 0.85, 1.1, 0.9]).view(4, 1, 1, 1)).clamp(0, 1)


def test_log_l1_keeps_the_scale_that_eq1_ignores():
    target = torch.rand(2, 8, 8) * 10 + 1
    assert log_l1_loss(2.0 * target, target).item() == pytest.approx(float(torch.log(torch.tensor(2.0))), rel=1e-5)
    assert affine_invariant_loss(2.0 * target, target).item() < 1e-8
    # scale-equivariant: the same relative error costs the same at 1 m and at 50 m
    assert log_l1_loss(torch.full((4, 4), 1.1), torch.ones(4, 4)).item() == pytest.approx(
        log_l1_loss(torch.full((4, 4), 55.0), torch.full((4, 4), 50.0)).item(), rel=1e-5)


def test_the_prior_decides_the_task_and_the_losses(metric_prior, tiny_depth_prior, tmp_path):
    metric = _objective(metric_prior, tmp_path)
    relative = _objective(tiny_depth_prior, tmp_path)
    assert metric.task is METRIC_DEPTH and relative.task is DEPTH
    pred, target = torch.rand(2, 8, 8) + 0.5, torch.rand(2, 8, 8) + 0.5
    assert metric.task.regularization_loss(pred, target) == split_log_l1_loss(pred, target, METRIC_SCALE_WEIGHT)
    assert relative.task.regularization_loss(pred, target) == affine_invariant_loss(pred, target)


def test_the_clip_anchor_holds_the_clip_scale_not_each_frame():
    """The clip-level term costs a global factor |log k| and nothing for the frames' scales around the clip's."""
    prior = torch.rand(2, 3, 8, 8) * 10 + 1
    flicker = torch.exp(torch.tensor([0.1, 0.0, -0.1])).view(1, 3, 1, 1)  # frame scales around the prior's
    assert METRIC_DEPTH.clip_scale_loss(prior, prior).item() == 0.0
    assert METRIC_DEPTH.clip_scale_loss(prior * flicker, prior).item() < 1e-6
    assert METRIC_DEPTH.clip_scale_loss(0.8 * prior, prior).item() == pytest.approx(
        abs(float(torch.log(torch.tensor(0.8)))) * CLIP_SCALE_WEIGHT, rel=1e-4)
    assert not DEPTH.clip_anchor  # relative disparity has no scale to keep


def test_a_metric_clip_is_prepared_with_the_prior_of_every_frame(metric_prior, tiny_depth_prior, tmp_path, frames):
    """The anchor needs the prior's depth on the whole clip, even when one regularization frame is asked for."""
    assert _objective(metric_prior, tmp_path).prepare(frames, [2])["target_frames"].tolist() == [0, 1, 2, 3]
    assert _objective(tiny_depth_prior, tmp_path).prepare(frames, [2])["target_frames"].tolist() == [2]


def _objective(prior, tmp_path, **overrides):
    config = tiny_config(tmp_path, prior, tmp_path / "run", **overrides).resolved()
    return DepthObjective.build(load_model("depth", prior), get_flow_model("dis"), config, torch.device("cpu"))


def _median_after_training(objective, frames, steps: int) -> tuple[float, float]:
    """Median predicted depth of the clip before and after ``steps`` Adam steps of the objective's loss."""
    clip = objective.prepare(frames, None)
    keys = sorted(objective.frame_tensor_keys(clip), key=lambda k: int(k.split(".")[1]))
    size = clip["pixel_size"].tolist()

    def median() -> float:
        with torch.no_grad():
            return float(objective.net([clip[k] for k in keys], 4, size, (42, 56)).median())

    before = median()
    optimizer = torch.optim.Adam(objective.model.trainable_parameters(), lr=3e-3)
    for step in range(steps):
        loss = objective.losses(objective.net, [clip], [step % 4]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return before, median()


def test_metric_training_keeps_the_median_depth_where_the_affine_loss_lets_it_drift(metric_prior, tmp_path, frames):
    """The stabilization loss on raw metres (--stable-norm none) is lowered by shrinking the depth: Eq. 1 lets it
    (scale-free), the log-depth regularization does not."""
    torch.manual_seed(0)
    metric = _objective(metric_prior, tmp_path, stable_norm="none")
    before, after = _median_after_training(metric, frames, steps=30)
    torch.manual_seed(0)
    affine = _objective(metric_prior, tmp_path, stable_norm="none")
    affine.task = DEPTH  # the relative prior's losses on the same metric model
    before_affine, after_affine = _median_after_training(affine, frames, steps=30)
    assert before_affine == pytest.approx(before)
    assert after / before == pytest.approx(1.0, abs=0.05)
    assert after_affine / before_affine < 0.8


def test_the_clip_anchor_alone_keeps_the_scale_that_the_stabilization_shrinks(metric_prior, tmp_path, frames,
                                                                                monkeypatch):
    """Without the per-frame scale term, the stabilization on raw metres shrinks the depth (to 0.50-0.68x in 30
    steps over three seeds); the clip-level anchor alone holds it (0.97-0.99x)."""
    monkeypatch.setattr(metric_depth, "METRIC_SCALE_WEIGHT", 0.0)
    ratios = {}
    for weight in (0.0, CLIP_SCALE_WEIGHT):
        monkeypatch.setattr(metric_depth, "CLIP_SCALE_WEIGHT", weight)
        torch.manual_seed(0)
        before, after = _median_after_training(_objective(metric_prior, tmp_path, stable_norm="none"), frames, 30)
        ratios[weight] = after / before
    assert ratios[0.0] < 0.8
    assert ratios[CLIP_SCALE_WEIGHT] == pytest.approx(1.0, abs=0.05)


def test_train_command_on_a_metric_prior_saves_a_metric_video_model(metric_prior, flicker_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(flicker_data, metric_prior, out, steps=2))
    model = load_model("depth", out / "model")
    assert model.task is METRIC_DEPTH and model.max_depth == 20.0
    with torch.no_grad():
        depth = model(torch.rand(1, 4, 3, 42, 56))
    assert 0 < float(depth.min()) and float(depth.max()) <= 20.0
