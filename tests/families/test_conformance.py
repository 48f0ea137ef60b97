"""Every registered prior family passes the same checks on its tiny random prior (as timm's test_models.py runs
over list_models()): the untrained video model is its prior exactly, it saves and loads, runs in sliding windows
and streamed when causal, exports to ONNX, lowers the stabilization loss in a short training run, and `eval` runs
on it. Nothing here names a family or a kind: a new family is tested by registering it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bufferanytime.cli.main import main
from bufferanytime.families import get_family, list_families
from bufferanytime.flow import get_flow_model
from bufferanytime.inference import InferenceSettings, predict_frames
from bufferanytime.inference.streaming import StreamingPredictor
from bufferanytime.models import load_model
from bufferanytime.models.temporal import TemporalBlock
from bufferanytime.synthetic import render_video, write_video_dir
from bufferanytime.training import TrainConfig
from bufferanytime.training.objectives import objective_class
from tests.helpers import one_torch_thread

FAMILIES = list_families()
HORIZON = 3
TOLERANCE = 1e-4  # of the output range: two float32 computations of the same values in another order


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return get_family(request.param)


@pytest.fixture(scope="module")
def prior_dir(family, tmp_path_factory):
    return family.make_tiny_prior(tmp_path_factory.mktemp("priors") / family.name)


def _size(model, at_least: int = 48) -> tuple[int, int]:
    """A frame size every layer of the model takes as it is (multiples of what its graph needs)."""
    multiple = model.family.graph.multiple(model)
    side = -(-at_least // multiple) * multiple
    return side, side + multiple


def _frames(model, count: int, seed: int = 0) -> torch.Tensor:
    """``(count, 3, H, W)`` frames: a smooth texture moving one pixel per frame, with flickering brightness."""
    generator = torch.Generator().manual_seed(seed)
    h, w = _size(model)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 7, 9, generator=generator), size=(h, w), mode="bicubic")
    flicker = 1 + 0.15 * torch.randn(count, 1, 1, 1, generator=generator)
    return (torch.cat([base.roll(shifts=t, dims=3) for t in range(count)]) * flicker).clamp(0, 1)


def _randomize_temporal(model, seed: int = 1, scale: float = 0.3) -> None:
    """Move every temporal block far from identity, so that equalities below are not those of the prior."""
    generator = torch.Generator().manual_seed(seed)
    for block in model.modules():
        if isinstance(block, TemporalBlock):
            for p in block.parameters():
                p.data = torch.randn(p.shape, generator=generator) * scale


def _span(x: torch.Tensor) -> float:
    return float(x.max() - x.min())


def _block_changes(model) -> tuple[list, list]:
    """Hooks recording, for every call of a temporal block, whether its output differs from its input at all."""
    inputs, changed = [], []
    handles = [block.register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone()))
               for block in model.modules() if isinstance(block, TemporalBlock)]
    handles += [block.register_forward_hook(lambda m, args, out: changed.append(not torch.equal(out, inputs.pop())))
                for block in model.modules() if isinstance(block, TemporalBlock)]
    return handles, changed


def test_untrained_video_model_is_its_prior_exactly(family, prior_dir):
    model, prior = load_model(prior_dir).eval(), load_model(prior_dir, per_frame=True).eval()
    assert model.family is family and model.kind == family.kind and model.task in family.tasks
    frames = _frames(model, 4)[None]
    handles, changed = _block_changes(model)
    with torch.no_grad():
        video, alone = model(frames), prior(frames)
    for handle in handles:
        handle.remove()
    assert changed and not any(changed)  # every zero-initialised temporal block ran and added exactly nothing
    assert _span(video) > 1e-3  # a real output, not a constant
    # the same modules; a family may decode a window in chunks of frames (float rounding only)
    assert (video - alone).abs().max().item() <= 1e-5 * _span(alone)


def test_save_and_load_round_trip_records_the_family(family, prior_dir, tmp_path):
    model = load_model(prior_dir).eval()
    _randomize_temporal(model)
    frames = _frames(model, 4)[None]
    for copy_prior in (False, True):
        folder = tmp_path / f"model-{copy_prior}"
        model.save_pretrained(folder, copy_prior=copy_prior)
        assert json.loads((folder / "config.json").read_text())["family"] == family.name
        loaded = load_model(folder).eval()  # no kind: the saved config says which family
        assert type(loaded) is type(model)
        with torch.no_grad():
            assert torch.equal(loaded(frames), model(frames))


def test_sliding_windows_of_a_fresh_model_give_the_prior_frame_by_frame(prior_dir):
    model, prior = load_model(prior_dir), load_model(prior_dir, per_frame=True)
    h, w = _size(model)
    frames = (_frames(model, 7).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    settings = InferenceSettings(window=3, overlap=1, short_side=min(h, w), device="cpu")
    windowed = np.stack(list(predict_frames(model, iter(frames), settings)))
    alone = np.stack(list(predict_frames(prior, iter(frames), settings)))
    assert windowed.shape[:3] == (7, h, w) and np.isfinite(windowed).all()
    assert np.abs(windowed - alone).max() <= TOLERANCE * (alone.max() - alone.min())


def test_a_causal_model_streamed_frame_by_frame_equals_its_offline_forward(family, prior_dir):
    model = family.model_class.from_prior(prior_dir, temporal={"causal": True, "horizon": HORIZON, "num_heads": 2})
    model.eval()
    _randomize_temporal(model)
    frames = _frames(model, 2 * HORIZON + 1)
    with torch.no_grad():
        offline = model(frames[None])[0]
    predictor = StreamingPredictor(model)
    streamed = torch.stack([predictor.step(frame) for frame in frames])
    assert (streamed - offline).abs().max().item() <= TOLERANCE * _span(offline)


def test_onnx_export_agrees_with_pytorch(prior_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="the [onnx] extra is part of `make test`")
    from bufferanytime.export.onnx import export_task

    model, prior = load_model(prior_dir).eval(), load_model(prior_dir, per_frame=True).eval()
    _randomize_temporal(model, scale=0.05)
    # the video graph (the prior's is the same graph class on the per-frame model: tests/export/test_onnx.py)
    info = export_task(model, prior, tmp_path, _size(model, at_least=28), frames=2, roles=("video",))
    assert (tmp_path / info["files"]["video"]["file"]).is_file()
    assert info["files"]["video"]["check"]["relative"] <= TOLERANCE
    assert info["family"] == model.family_name


def test_a_short_training_run_lowers_the_stabilization_loss(family, prior_dir, tmp_path):
    torch.manual_seed(0)
    model = load_model(prior_dir)
    config = TrainConfig(kind=family.kind, data=[str(tmp_path)], model=str(prior_dir), out=str(tmp_path / "run"),
                         clip_len=4, lr=2e-3, warmup=0, edge_mask=False, cpu=True, quiet=True).resolved()
    objective = objective_class(model).build(model, get_flow_model("dis"), config, torch.device("cpu"))
    clip = objective.prepare(_frames(model, 4), [1])
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=config.lr)
    stable = []
    for _ in range(6):
        losses = objective.losses(objective.net, [clip], [1])
        losses.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stable.append(float(losses.stable))
    assert stable[0] > 0 and stable[-1] < 0.9 * stable[0], stable


def test_eval_runs_on_the_family(family, prior_dir, tmp_path):
    root = tmp_path / "synthetic"
    write_video_dir(render_video(0, 4, (32, 48), flicker=0.2), root / "seq_000000")
    out = tmp_path / "report"
    code = main(["eval", family.kind, "--dataset", "synthetic", "--root", str(root), "--model", str(prior_dir),
                 "--per-frame", "--flow", "gt", "--max-res", "64", "--device", "cpu", "-o", str(out), "-q"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["models"]) == 2 and all(m["opw"] > 0 for m in report["mean"].values())
