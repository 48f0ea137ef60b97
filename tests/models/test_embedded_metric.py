"""The embedded metric depth model: registered by name, serves metric depth, small, with its records."""

from __future__ import annotations

import json

import torch

from bufferanytime.models import MODELS, WEIGHTS_DIR, load_model
from bufferanytime.tasks import METRIC_DEPTH

NAME = "tiny-synthetic-metric"


def test_embedded_metric_model_loads_by_name_and_outputs_metres():
    assert NAME in MODELS and "depth" in MODELS.get(NAME)
    model = load_model("depth", NAME).eval()
    assert model.task is METRIC_DEPTH and model.max_depth == 80.0
    torch.manual_seed(0)
    with torch.no_grad():
        depth = model(torch.rand(1, 4, 3, 56, 70))
    assert float(depth.min()) > 0 and float(depth.max()) <= 80.0


def test_embedded_metric_model_is_small_and_recorded():
    folder = WEIGHTS_DIR / NAME / "depth"
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 20e6
    prior = json.loads((folder / "prior_training_record.json").read_text())
    video = json.loads((folder / "video_training_record.json").read_text())
    assert prior["kind"] == "metric_depth" and prior["val_metrics"]["align"] == "none"
    assert [s["run"] for s in video["stages"]] == ["a", "b", "c", "d", "e", "f", "g", "h"]
    assert "Shipped" in video["selection"]


def test_embedded_metric_model_holds_its_prior_scale_and_says_so(small_video, tmp_path):
    from bufferanytime.cli.main import main

    assert load_model("depth", NAME).scale_anchor == 2
    for extra, anchor in (([], {"stride": 2}), (["--per-frame"], None)):
        out = tmp_path / ("prior" if extra else "video")
        assert main(["depth", str(small_video), "--model", NAME, "-o", str(out), "--save", "npz", "-q", *extra]) == 0
        meta = json.loads((out / "clip" / "metric_depth.meta.json").read_text())
        assert meta["model"].get("scale_anchor") == anchor
