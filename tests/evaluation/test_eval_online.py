"""``bufferanytime eval --online``: the rolling-window baseline and the streaming model scored beside the offline
model on the same videos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bufferanytime.cli.main import main
from bufferanytime.evaluation import depth_metrics, load_sequences
from bufferanytime.inference import InferenceSettings
from bufferanytime.inference.online import OnlinePredictor, predict_online
from bufferanytime.models import load_model
from tests.evaluation.formats import make_synthetic

MAX_RES = 48


def test_rolling_baseline_is_a_row_of_the_report_with_its_own_numbers(tiny_depth_prior, tmp_path, capsys):
    root = make_synthetic(tmp_path / "data", seeds=(0,), frames=5, size=(32, 48))
    out = tmp_path / "report"
    code = main(["eval", "depth", "--dataset", "synthetic", "--root", str(root), "--model", str(tiny_depth_prior),
                 "--online", "rolling", "--window", "3", "--flow", "gt", "--max-res", str(MAX_RES),
                 "--device", "cpu", "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert [m["label"] for m in report["models"]] == ["tiny-depth", "tiny-depth (online rolling)"]
    assert report["models"][1]["online"] == "rolling"
    assert "rolling window of past frames" in (out / "report.md").read_text()

    seq = load_sequences("synthetic", root)[0]
    settings = InferenceSettings(max_res=MAX_RES, window=3, device="cpu")
    predictor = OnlinePredictor(load_model("depth", str(tiny_depth_prior)), "rolling", "cpu", window=3)
    pred = np.stack(list(predict_online(predictor, seq.frames(), settings)))
    gt = np.stack([seq.read_depth(i) for i in range(seq.num_frames)])
    for key, value in depth_metrics(pred, gt, max_depth=report["max_depth"]).items():
        assert report["sequences"]["seq_000000"]["models"]["tiny-depth (online rolling)"][key] == pytest.approx(
            value, rel=1e-5)


def test_stream_mode_refuses_a_bidirectional_model_in_one_line(tiny_depth_prior, tmp_path, capsys):
    root = make_synthetic(tmp_path / "data", seeds=(0,), frames=3, size=(16, 24))
    code = main(["eval", "depth", "--dataset", "synthetic", "--root", str(root), "--model", str(tiny_depth_prior),
                 "--online", "stream", "--flow", "gt", "--device", "cpu", "-o", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a causal model" in err[0]
    assert not (tmp_path / "r").exists()


def test_stream_row_of_a_causal_model_equals_its_offline_row(tiny_depth_prior, tmp_path, capsys):
    """A video shorter than the window: offline = one causal forward, which streaming reproduces exactly."""
    import torch

    from bufferanytime.models import VideoDepthModel

    model = VideoDepthModel.from_prior(tiny_depth_prior, temporal={"causal": True, "horizon": 3})
    torch.manual_seed(0)
    for block in model.temporal:
        torch.nn.init.normal_(block.proj_out.weight, std=0.05)
    model.save_pretrained(tmp_path / "causal")
    root = make_synthetic(tmp_path / "data", seeds=(0,), frames=5, size=(28, 42))
    out = tmp_path / "report"
    code = main(["eval", "depth", "--dataset", "synthetic", "--root", str(root), "--model", str(tmp_path / "causal"),
                 "--online", "stream", "--flow", "gt", "--max-res", "42", "--device", "cpu", "-o", str(out),
                 "-q"])
    assert code == 0, capsys.readouterr().err
    mean = json.loads((out / "report.json").read_text())["mean"]
    for key in ("abs_rel", "delta1", "opw"):  # the same predictions up to float rounding (streaming: 1e-4)
        assert mean["causal (online stream)"][key] == pytest.approx(mean["causal"][key], rel=1e-3, abs=1e-6)
