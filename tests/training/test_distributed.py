"""Data-parallel training under `accelerate launch`, two CPU processes; a process that freezes or is killed, and a
launcher that is killed."""

import json
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

from bufferanytime.training import train
from tests.helpers import launcher_env

from .conftest import tiny_config
from .frozen_rank import FROZEN_SECONDS

FAULT_SCRIPT = Path(__file__).with_name("frozen_rank.py")

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


def _launch(script: list[str], timeout: float, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, *script], env=launcher_env(tmp), capture_output=True, text=True, timeout=timeout)


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
    done = _launch(["-m", "bufferanytime", *args], timeout=300, tmp=tmp_path)
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
    done = _launch(["-m", "bufferanytime", *args], timeout=300, tmp=tmp_path)
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
    # ends long before the frozen one wakes
    done = _launch([str(script), *args], timeout=FROZEN_SECONDS / 3, tmp=tmp_path)
    assert done.returncode != 0, done.stderr[-3000:]
    # the frozen process, stopped by the launcher with SIGTERM, may say it was interrupted
    errors = [line for line in _error_lines(done.stderr) if line != "error: interrupted"]
    assert errors == ["error: process 0 waited more than --dist-timeout 5 s for the other processes (one froze or "
                      "died); training stopped"], done.stderr[-3000:]
    assert not (run / "model").exists() and list((run / "checkpoints").iterdir()) == []


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its new parent to reap it has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_until_ended(pids: list[int], timeout: float) -> list[int]:
    """The processes of ``pids`` still running after at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [pid for pid in pids if _running(pid)]


@pytest.mark.slow
def test_killed_launcher_ends_its_workers_and_no_model_is_written(flicker_data, tiny_depth_prior, tmp_path):
    run, pids = tmp_path / "ddp", tmp_path / "pids"
    pids.mkdir()
    # Every process sleeps a second per step, far from its 1000th: only the launcher's end can stop them.
    args = _train_args(flicker_data, tiny_depth_prior, run, "--steps", "1000", "--save-every", "1")
    env = launcher_env(tmp_path, RANK_FAULT="slow", RANK_FAULT_DIR=str(pids))
    launcher = subprocess.Popen([*LAUNCH, str(FAULT_SCRIPT), *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while len(list(pids.glob("*.pid"))) < 2 and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert launcher.poll() is None, launcher.stderr.read()[-3000:]
        workers = [int(path.read_text()) for path in pids.glob("*.pid")]
        launcher.kill()
        launcher.wait()
        assert _wait_until_ended(workers, timeout=600) == []
    finally:
        for pid in workers:  # a worker that outlived the test would go on writing into tmp_path
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        stderr = launcher.stderr.read()
        launcher.stderr.close()
    assert not (run / "model").exists() and not (run / "summary.json").exists()
    # Each worker stops as on Ctrl-C, or, when the other stopped first, says that it ended.
    errors = [line for line in _error_lines(stderr) if line != "error: interrupted"]
    assert all("ended (killed or crashed)" in line for line in errors) and "Traceback" not in stderr, stderr[-3000:]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_killed_process_is_one_error_line_of_the_others(flicker_data, tiny_depth_prior, tmp_path):
    """The two processes are started as a launcher would, so that the survivor's own exit code and stderr show."""
    run = tmp_path / "ddp"
    args = _train_args(flicker_data, tiny_depth_prior, run, "--steps", "3")
    common = {**os.environ, "OMP_NUM_THREADS": "1", "RANK_FAULT": "kill", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    processes = [
        subprocess.Popen([sys.executable, str(FAULT_SCRIPT), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={**common, "RANK": str(rank), "LOCAL_RANK": str(rank)}, text=True)
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=300)[1] for p in processes]
    assert processes[1].returncode == -signal.SIGKILL
    assert processes[0].returncode == 2, outputs[0][-3000:]
    assert outputs[0].strip().splitlines() == [
        "error: process 1 of 2 ended (killed or crashed); process 0 stopped training (continue the run with --resume)"
    ]
    assert not (run / "model").exists() and not list(run.glob("checkpoints/*"))


# The watch of the launcher alone, in small processes that do not import torch: ``launcher`` starts ``worker``,
# which arms the watch (with or without Linux's parent-death signal) and waits; the test kills the launcher.
WORKER = """
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("distributed", sys.argv[1])
distributed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(distributed)
mode, marker = sys.argv[2], sys.argv[3]
if mode != "prctl":
    distributed._set_parent_death_signal = lambda: False
distributed.GRACE_SECONDS = 1.0
distributed.watch_launcher()
try:  # the launcher may be killed as soon as the PID is out, before print returns
    print(os.getpid(), flush=True)
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    open(marker, "w").write("interrupted")
    if mode == "stuck":  # a process that does not stop by itself: ended after the grace
        while True:
            time.sleep(0.05)
"""
LAUNCHER = "import subprocess, sys; subprocess.run([sys.executable, '-c', *sys.argv[1:]])"


@pytest.mark.parametrize("mode", ["prctl", "watchdog", "stuck"])
def test_watched_worker_ends_when_its_launcher_is_killed(tmp_path, mode):
    import bufferanytime.training.distributed as distributed

    marker = tmp_path / "marker"
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, WORKER, distributed.__file__, mode, str(marker)],
        env={**os.environ, "LOCAL_RANK": "0"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    worker = int(launcher.stdout.readline())
    try:
        launcher.kill()
        launcher.wait()
        assert _wait_until_ended([worker], timeout=600) == []
    finally:
        if _running(worker):
            os.kill(worker, signal.SIGKILL)
    assert marker.read_text() == "interrupted"  # it stopped as on Ctrl-C: its own clean-up ran
    stderr = launcher.stderr.read()
    assert stderr.splitlines() == (["error: the launcher ended and this process did not stop within 1 s; it is "
                                    "ended now"] if mode == "stuck" else []), stderr


def test_parent_death_signal_without_a_new_parent_is_ignored(monkeypatch):
    """Linux sends the signal when the launcher's *thread* that started the worker ends, not only its process."""
    import bufferanytime.training.distributed as distributed

    monkeypatch.setitem(distributed._state, "stopping", False)  # restored after the test
    monkeypatch.setitem(distributed._state, "parent", os.getppid())
    distributed._on_parent_death(distributed.DEATH_SIGNAL, None)  # no KeyboardInterrupt
    monkeypatch.setitem(distributed._state, "parent", -1)
    with pytest.raises(KeyboardInterrupt):
        distributed._on_parent_death(distributed.DEATH_SIGNAL, None)
    distributed._on_parent_death(distributed.DEATH_SIGNAL, None)  # once only: the clean-up is not interrupted


def test_outside_a_launcher_nothing_is_watched(monkeypatch):
    """A run started from a shell must outlive it (nohup)."""
    import bufferanytime.training.distributed as distributed

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert distributed.watch_launcher() is False


def test_only_a_lost_connection_is_named_as_a_process_that_ended():
    from bufferanytime.training.distributed import lost_process_error

    closed = RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:36552")
    assert str(lost_process_error(closed, 0, 2)).startswith("process 1 of 2 ended (killed or crashed)")
    assert str(lost_process_error(closed, 2, 4)).startswith("another process of 4 ended")
    assert lost_process_error(RuntimeError("shape mismatch"), 0, 2) is None
    assert lost_process_error(closed, 0, 1) is None
