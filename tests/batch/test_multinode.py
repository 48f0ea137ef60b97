"""Training across machines with Accelerate, shown on this machine: two node ranks (``accelerate launch
--num_machines 2 --machine_rank R --main_process_ip 127.0.0.1``, one CPU process each, gloo) end with the weights of
one node running two processes, bit for bit, also when one node is killed mid-run and both are started again with
``--resume``. scripts/slurm/train.sbatch runs the same launch, one node per Slurm task."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bufferanytime.synthetic import render_video, write_video_dir
from bufferanytime.testing import make_tiny_prior
from tests.helpers import launcher_env

STEPS = 4
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--num_processes", "2"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("multinode")
    for seed in range(3):
        write_video_dir(render_video(seed, 8, (48, 64), flicker=0.3), root / "data" / f"seq_{seed:06d}")
    return root / "data", make_tiny_prior("depth", root / "prior")


def _train(data: Path, prior: Path, run: Path, *extra: str) -> list[str]:
    return ["-m", "bufferanytime", "train", "depth", "--data", str(data), "--model", str(prior), "--out", str(run),
            "--clip-len", "4", "--res", "42x56", "--warmup", "0", "--workers", "0", "--no-edge-mask", "--cpu", "-q",
            "--steps", str(STEPS), "--lr", "1e-3", "--save-every", "1", *extra]


def _nodes(args: list[str], tmp: Path) -> list[subprocess.Popen]:
    """Two node ranks of one run, each an `accelerate launch` of one process, meeting at 127.0.0.1."""
    port = str(_free_port())
    return [subprocess.Popen([*ACCELERATE, "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip",
                              "127.0.0.1", "--main_process_port", port, *args], env=launcher_env(tmp),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
            for rank in range(2)]


def _finish(nodes: list[subprocess.Popen]) -> list[str]:
    return [node.communicate(timeout=600)[1] for node in nodes]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


@pytest.mark.slow
def test_two_nodes_train_the_weights_of_one_node_and_resume_after_one_is_killed(setup, tmp_path):
    data, prior = setup
    one = tmp_path / "one-node"
    done = subprocess.run([*ACCELERATE, "--num_machines", "1", "--main_process_port", "0",
                           *_train(data, prior, one)], env=launcher_env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    # every step of this run is taken by two nodes, before node 1 is killed and after both resume
    killed = tmp_path / "two-nodes"
    nodes = _nodes(_train(data, prior, killed), tmp_path)
    deadline = time.monotonic() + 600
    while not (killed / "checkpoints" / "step-00000002").exists():
        assert time.monotonic() < deadline and nodes[0].poll() is None, nodes[0].stderr.read()[-3000:]
        time.sleep(0.1)
    os.killpg(nodes[1].pid, signal.SIGKILL)  # node 1 is lost: its launcher and its training process
    errors = _finish(nodes)
    assert nodes[0].returncode != 0 and not (killed / "model").exists()
    nodes = _nodes(_train(data, prior, killed, "--resume"), tmp_path)
    errors = _finish(nodes)
    assert [n.returncode for n in nodes] == [0, 0], errors
    reference, weights = _weights(one), _weights(killed)
    assert sorted(reference) == sorted(weights)
    assert all(torch.equal(value, weights[key]) for key, value in reference.items())
