"""``bufferanytime adapt --resume``: an interrupted run (Ctrl-C, SIGTERM or a kill) continues where it stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bufferanytime.adapt import guard, plan, run
from bufferanytime.adapt.record import RECORD_NAME, is_adapt_result
from bufferanytime.models import load_model
from bufferanytime.models.base import tensors_digest
from bufferanytime.training.checkpoint import CHECKPOINTS
from tests.helpers import files_under, run_main

WAIT_SECONDS = 300  # for the killed run's checkpoint to appear: over 10x what it takes on a busy 2-core machine

# The command, with a training step that blocks (until a signal) once `steps` steps are done: the test kills the
# process while it waits there, after the checkpoint of step `steps` is complete.
CHILD = """
import signal, sys
from bufferanytime.adapt import session
from bufferanytime.cli.main import main

real, calls = session.Session.step, []
def step(self, clip):
    calls.append(clip)
    if len(calls) > int(sys.argv[1]):
        signal.pause()
    return real(self, clip)
session.Session.step = step
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(autouse=True)
def _every_validation_improves(monkeypatch):
    """Each validation that the guard rails pass counts as the best so far, and none stops the run early."""
    monkeypatch.setattr(run, "MIN_IMPROVEMENT", -1.0)
    monkeypatch.setattr(run, "PATIENCE", 10**6)


def _record(out: Path) -> dict:
    return json.loads((out / RECORD_NAME).read_text())


def _digest(out: Path) -> str:
    return tensors_digest(load_model("depth", out).trainable_state_dict())


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not path.is_dir():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def test_killed_run_is_refused_then_resumed(clips, tmp_path, capsys):
    out = tmp_path / "model"
    argv = ["adapt", "depth", str(clips[0]), "-o", str(out), "--budget", "5steps", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", CHILD, "2", *argv], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        _wait_for(out / CHECKPOINTS / "step-00000002", process)  # validated at every step, checkpointed then
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (out / RECORD_NAME).exists()  # killed: no model, only the checkpoint
    before = sorted(files_under(tmp_path))
    code, err = run_main(capsys, *argv)
    assert code == 2 and len(err) == 1 and "interrupted adapt run" in err[0] and "--resume" in err[0]
    assert sorted(files_under(tmp_path)) == before
    code, err = run_main(capsys, *argv[:-3], "--resume", "-q")  # the budget is the interrupted run's
    assert code == 0, err
    record = _record(out)
    assert is_adapt_result(out) and record["result"] in ("adapted", "kept_base")
    assert [r["from_step"] for r in record["resumed"]] == [2]
    assert record["budget"]["steps"] == 5 and record["validation"]["steps_done"] == 5
    assert [p["step"] for p in record["validation"]["curve"]] == list(range(6))  # each step validated once
    assert not (out / CHECKPOINTS).exists()  # a finished run keeps none
    load_model("depth", out)


def test_ctrl_c_then_resume_ends_as_an_uninterrupted_run(clips, tmp_path, monkeypatch, capsys, interrupt_at_step):
    base = tensors_digest(load_model("depth").trainable_state_dict())

    def figures(model, *args):  # steadier once trained, within the guard rails: the same in every run
        return guard.Figures(1.0 if tensors_digest(model.trainable_state_dict()) == base else 0.5, 0.01)

    monkeypatch.setattr(run, "figures", figures)
    whole, out = tmp_path / "whole", tmp_path / "model"
    argv = ["adapt", "depth", str(clips[1]), "--budget", "4steps", "-q"]
    assert run_main(capsys, *argv, "-o", str(whole))[0] == 0
    interrupt_at_step(3)
    code, err = run_main(capsys, *argv, "-o", str(out))
    assert code == 0 and err[0].startswith("warning: interrupted")
    assert _record(out)["validation"]["stopped"] == "interrupted" and load_model("depth", out)  # the best so far
    assert (out / CHECKPOINTS / "step-00000002").is_dir()
    code, err = run_main(capsys, "adapt", "depth", str(clips[0]), "-o", str(out), "--resume", "-q")
    assert code == 2 and err == ["error: --resume: the interrupted run was made with other data (other inputs); "
                                 "pass the same inputs and --model, or another -o"]
    code, err = run_main(capsys, *argv[:-3], "--budget", "9steps", "-o", str(out), "--resume", "-q")
    assert code == 2 and "--resume with another --budget (4steps -> 9steps)" in err[0]
    code, err = run_main(capsys, *argv, "-o", str(out), "--resume")
    assert code == 0, err
    record = _record(out)
    assert record["result"] == "adapted" and [r["from_step"] for r in record["resumed"]] == [2]
    whole_curve, curve = _record(whole)["validation"]["curve"], record["validation"]["curve"]
    assert curve == [{**p, "time": q["time"]} for p, q in zip(whole_curve, curve, strict=True)]  # same losses
    assert _digest(out) == _digest(whole)  # the same weights as the run that was never interrupted
    assert not (out / CHECKPOINTS).exists()
    code, err = run_main(capsys, *argv, "-o", str(out), "--resume")
    assert code == 2 and "has finished; there is nothing to resume" in err[0]


def test_a_damaged_checkpoint_is_not_resumed_from(tmp_path):
    import torch

    from bufferanytime.adapt import resume

    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(layer.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = {k: v.detach() for k, v in layer.state_dict().items()}
    resume.save(tmp_path, 3, 1.5, state, state, optimizer, scheduler, {"record": {}})
    found = resume.interrupted_run(tmp_path)
    assert found is not None and found.step == 3 and found.state["elapsed"] == 1.5
    assert [p.name for p in (tmp_path / CHECKPOINTS).iterdir()] == ["step-00000003"]  # nothing half-assembled
    weights = found.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"x")  # one byte changed: the checksum no longer matches
    assert resume.interrupted_run(tmp_path) is None and resume.has_run(tmp_path)
    with pytest.raises(resume.InputError, match="interrupted adapt run .* pass --resume"):
        resume.refuse_unless_resumed(tmp_path, False)


def test_a_resumed_time_budget_counts_the_time_spent_before(clips, tmp_path, monkeypatch, capsys,
                                                            interrupt_at_step):
    """A time budget covers the whole run across resumes: a checkpoint that had spent all but a second of its minute
    leaves its resumed run no time to train, where the minute alone would have left it dozens of steps."""
    out = tmp_path / "model"
    argv = ["adapt", "depth", str(clips[1]), "-o", str(out), "--budget", "1m", "-q"]
    interrupt_at_step(3)
    monkeypatch.setattr(plan, "MAX_VAL_EVERY", 2)  # validated, and checkpointed, at step 2
    assert run_main(capsys, *argv)[0] == 0
    assert (out / CHECKPOINTS / "step-00000002").is_dir()
    real_interrupted = run._interrupted

    def interrupted(*args):  # the checkpoint as a run that had spent 59 of its 60 s would have left it
        found = real_interrupted(*args)
        found.state["elapsed"] = 59.0
        return found

    monkeypatch.setattr(run, "_interrupted", interrupted)
    code, err = run_main(capsys, *argv[:-1], "--resume", "-q")
    assert code == 0, err
    record = _record(out)
    assert record["resumed"][0]["elapsed_s"] == 59.0 and record["resumed"][0]["from_step"] == 2
    assert record["validation"]["stopped"] == "budget" and record["validation"]["steps_done"] == 2
