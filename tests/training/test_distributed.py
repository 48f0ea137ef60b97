"""Data-parallel training under `accelerate launch`, two CPU processes."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bufferanytime.training import train

from .conftest import tiny_config

STEPS = 2


@pytest.mark.slow
def test_two_processes_end_with_identical_weights_equal_to_one_process_with_their_batch(
    flicker_data, informative_depth_prior, tmp_path
):
    run = tmp_path / "ddp"
    # `accelerate launch --cpu` starts a single process (multi-CPU needs MPI); torchrun's launcher with our --cpu
    # gives two gloo processes on a machine without GPUs.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "bufferanytime", "train", "depth", "--data", str(flicker_data), "--model", str(informative_depth_prior),
        "--out", str(run), "--steps", str(STEPS), "--clip-len", "4", "--res", "42x56", "--warmup", "0",
        "--lr", "1e-3", "--ema", "0.5", "--workers", "0", "--no-edge-mask", "--cpu", "-q",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["samples_this_session"] == 2 * STEPS
    first, second = summary["weights_sha256_per_process"]
    assert first == second  # each process hashed its own weights

    # One process with both processes' clips in its batch takes the same steps (up to float rounding).
    single = tmp_path / "single"
    train(tiny_config(flicker_data, informative_depth_prior, single, steps=STEPS, batch_size=2))
    ddp_log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    single_log = [json.loads(line) for line in (single / "log.jsonl").read_text().splitlines()]
    assert [e["clips"] for e in ddp_log] == [e["clips"] for e in single_log]
    assert [e["loss"] for e in ddp_log] == pytest.approx([e["loss"] for e in single_log], rel=1e-4)
    ddp_weights = load_file(str(run / "checkpoints" / f"step-{STEPS:08d}" / "model.safetensors"))
    single_weights = load_file(str(single / "checkpoints" / f"step-{STEPS:08d}" / "model.safetensors"))
    for key, value in ddp_weights.items():
        assert torch.allclose(value, single_weights[key], atol=1e-4), key
