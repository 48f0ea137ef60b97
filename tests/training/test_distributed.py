"""Data-parallel training under `accelerate launch`, two CPU processes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bufferanytime.training import train

from .conftest import tiny_config
from .frozen_rank import FROZEN_SECONDS

STEPS = 2
# `accelerate launch --cpu` starts a single process (multi-CPU needs MPI); torchrun's launcher with our --cpu gives
# two gloo processes on a machine without GPUs.
LAUNCH = [
    sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
    "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
]


def _train_args(data, model, run, *extra: str) -> list[str]:
    return ["train", "depth", "--data", str(data), "--model", str(model), "--out", str(run), "--clip-len", "4",
            "--res", "42x56", "--warmup", "0", "--workers", "0", "--no-edge-mask", "--cpu", "-q", *extra]


def _launch(script: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*LAUNCH, *script], env=env, capture_output=True, text=True, timeout=timeout)


def _error_lines(stderr: str) -> list[str]:
    """The CLI's own ``error:`` lines (the launcher adds its report after them)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.slow
def test_two_processes_end_with_identical_weights_equal_to_one_process_with_their_batch(
    flicker_data, tiny_depth_prior, tmp_path
):
    run = tmp_path / "ddp"
    args = _train_args(flicker_data, tiny_depth_prior, run, "--steps", str(STEPS), "--lr", "1e-3",
                       "--ema", "0.5")
    done = _launch(["-m", "bufferanytime", *args], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["samples_this_session"] == 2 * STEPS
    first, second = summary["weights_sha256_per_process"]
    assert first == second  # each process hashed its own weights

    # One process with both processes' clips in its batch takes the same steps (up to float rounding).
    single = tmp_path / "single"
    train(tiny_config(flicker_data, tiny_depth_prior, single, steps=STEPS, batch_size=2))
    ddp_log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    single_log = [json.loads(line) for line in (single / "log.jsonl").read_text().splitlines()]
    assert [e["clips"] for e in ddp_log] == [e["clips"] for e in single_log]
    assert [e["loss"] for e in ddp_log] == pytest.approx([e["loss"] for e in single_log], rel=1e-4)
    ddp_weights = load_file(str(run / "checkpoints" / f"step-{STEPS:08d}" / "model.safetensors"))
    single_weights = load_file(str(single / "checkpoints" / f"step-{STEPS:08d}" / "model.safetensors"))
    for key, value in ddp_weights.items():
        assert torch.allclose(value, single_weights[key], atol=1e-4), key


@pytest.mark.slow
def test_non_finite_loss_stops_every_process_and_leaves_no_nan_file(flicker_data, tiny_depth_prior, tmp_path):
    run = tmp_path / "ddp"
    args = _train_args(flicker_data, tiny_depth_prior, run, "--steps", "30", "--lr", "1e6", "--save-every", "1")
    done = _launch(["-m", "bufferanytime", *args], timeout=300)
    # Both processes stop at the same step; the launcher may SIGTERM the slower one before it says so itself.
    errors = [line for line in _error_lines(done.stderr) if line != "error: interrupted"]
    assert done.returncode != 0 and 1 <= len(errors) <= 2, done.stderr[-3000:]
    assert len(set(errors)) == 1 and "not finite" in errors[0]
    assert not (run / "model").exists()
    for path in [*run.rglob("*.safetensors"), *run.rglob("*.pt")]:
        tensors = load_file(str(path)).values() if path.suffix == ".safetensors" else []
        assert all(bool(torch.isfinite(t).all()) for t in tensors), path


@pytest.mark.slow
def test_frozen_process_ends_the_run_with_an_error_after_the_timeout(flicker_data, tiny_depth_prior,
                                                                      tmp_path):
    run = tmp_path / "ddp"
    script = Path(__file__).with_name("frozen_rank.py")  # the second process sleeps before its first step
    args = _train_args(flicker_data, tiny_depth_prior, run, "--steps", "2", "--dist-timeout", "5")
    started = time.monotonic()
    done = _launch([str(script), *args], timeout=100)
    assert done.returncode != 0 and time.monotonic() - started < FROZEN_SECONDS, done.stderr[-3000:]
    # the frozen process, stopped by the launcher with SIGTERM, may say it was interrupted
    errors = [line for line in _error_lines(done.stderr) if line != "error: interrupted"]
    assert errors == ["error: process 0 waited more than --dist-timeout 5 s for the other processes (one froze or "
                      "died); training stopped"], done.stderr[-3000:]
    assert not (run / "model").exists() and list((run / "checkpoints").iterdir()) == []
