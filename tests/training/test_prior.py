"""train-prior: a few steps of each prior write a loadable prior and a training record."""

import json

import numpy as np
import torch

from bufferanytime.models import load_model
from bufferanytime.synthetic import render_video, write_video_dir
from bufferanytime.training.prior import PriorTrainConfig, train_depth_prior, train_normal_prior


def _data(tmp_path):
    for seed in (1, 2):
        write_video_dir(render_video(seed, 2, (96, 128)), tmp_path / "data" / f"seq_{seed}")
    return str(tmp_path / "data")


def test_depth_and_normal_priors_train_and_load(tmp_path):
    torch.set_num_threads(1)
    data = _data(tmp_path)
    common = {"data": [data], "val": data, "steps": 3, "batch_size": 2, "crop": (84, 112), "threads": 1,
              "hidden_size": 32, "num_layers": 4}
    record = train_depth_prior(PriorTrainConfig(kind="depth", **common), tmp_path / "depth", progress=False)
    assert np.isfinite(record["val_metrics"]["abs_rel"]) and record["train_frames"] == 4
    lines = (tmp_path / "depth/train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    with torch.no_grad():
        depth = load_model("depth", tmp_path / "depth", per_frame=True)(torch.rand(1, 2, 3, 42, 56))
    assert depth.shape == (1, 2, 42, 56)

    record = train_normal_prior(PriorTrainConfig(kind="normal", **common), tmp_path / "normal", progress=False)
    assert record["stages"] == {"vae_steps": 1, "unet_steps": 2}
    stages = [json.loads(line)["stage"] for line in (tmp_path / "normal/train_log.jsonl").read_text().splitlines()]
    assert stages == ["vae", "unet", "unet"]
    assert 0 <= record["val_metrics"]["mean"] <= 180
    with torch.no_grad():
        normals = load_model("normal", tmp_path / "normal", per_frame=True)(torch.rand(1, 2, 3, 32, 48))
    assert torch.allclose(normals.norm(dim=2), torch.ones(1, 2, 32, 48), atol=1e-4)


def test_cli_flags_are_the_config_options(tmp_path, capsys):
    """train-prior's flags come from PriorTrainConfig's fields: each given one reaches the run (its record)."""
    from bufferanytime.cli.main import main

    out = tmp_path / "prior"
    argv = ["train-prior", "depth", "--data", _data(tmp_path), "-o", str(out), "--steps", "2", "--batch-size", "1",
            "--crop", "28x42", "--hidden-size", "32", "--num-layers", "4", "--fusion-hidden-size", "16",
            "--weight-decay", "0", "--threads", "1", "-q"]
    assert main(argv) == 0
    config = json.loads((out / "training_record.json").read_text())["config"]
    assert (config["steps"], config["crop"], config["hidden_size"], config["num_layers"]) == (2, [28, 42], 32, 4)
    assert (config["fusion_hidden_size"], config["weight_decay"], config["lr"]) == (16, 0.0, 3e-4)  # lr: default
