"""Causal training: --causal --horizon builds the causal variant, saves it as causal, resume refuses a change."""

import json

import pytest
import torch

from bufferanytime.cli.main import main
from bufferanytime.errors import InputError
from bufferanytime.models import load_model
from bufferanytime.models.temporal import attention_layers
from bufferanytime.training import train

from .conftest import tiny_config


def test_causal_run_saves_a_causal_model_that_loads_back_as_causal(flicker_data, tiny_depth_prior, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(flicker_data, tiny_depth_prior, run, causal=True, horizon=3, steps=3))
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["temporal"]["causal"] is True and saved["temporal"]["horizon"] == 3
    model = load_model("depth", run / "model")
    assert model.temporal_config.causal and model.temporal_config.horizon == 3
    assert all(layer.horizon == 3 for layer in attention_layers(model))
    assert any(v.abs().max() > 0 for k, v in model.state_dict().items() if k.endswith("proj_out.weight"))

    with pytest.raises(InputError, match="horizon"):  # a changed horizon on resume is refused like any option
        train(tiny_config(flicker_data, tiny_depth_prior, run, causal=True, horizon=4, steps=4, resume=True))


def test_causal_from_a_bidirectional_video_model_keeps_its_temporal_weights(flicker_data, tiny_depth_prior,
                                                                            tmp_path):
    bidirectional = tmp_path / "bi"
    train(tiny_config(flicker_data, tiny_depth_prior, bidirectional, steps=2))
    source = load_model("depth", bidirectional / "model")
    assert not source.temporal_config.causal
    run = tmp_path / "causal"
    code = main(["train", "depth", "--data", str(flicker_data), "--model", str(bidirectional / "model"), "--out",
                 str(run), "--steps", "1", "--lr", "1e-12", "--warmup", "0", "--ema", "0", "--clip-len", "4",
                 "--res", "42x56", "--workers", "0", "--cpu", "-q", "--no-edge-mask", "--causal"])
    assert code == 0
    causal = load_model("depth", run / "model")
    assert causal.temporal_config.causal and causal.temporal_config.horizon == 4  # default: the clip length
    before, after = source.state_dict(), causal.state_dict()
    temporal = [k for k in before if k.startswith("temporal.")]
    assert temporal and all(torch.allclose(before[k], after[k], atol=1e-6) for k in temporal)


def test_horizon_without_causal_is_refused(flicker_data, tiny_depth_prior, tmp_path):
    with pytest.raises(InputError, match="--causal"):
        train(tiny_config(flicker_data, tiny_depth_prior, tmp_path / "run", horizon=3))
