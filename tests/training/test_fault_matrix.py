"""The fault matrix of `bufferanytime train`: one case per fault, each asserting the exit code, the one line on
stderr and what is left on disk. Cases resume copies of one small run (4 steps, checkpoints at 2 and 4), so that
each costs a step or two."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from transformers import DepthAnythingForDepthEstimation

from bufferanytime.cli.main import main
from bufferanytime.synthetic import render_video, write_video_dir
from bufferanytime.training import checkpoint as ckpt
from bufferanytime.training.trainer import LOCK_NAME, StepLog

from .conftest import FRAMES, SIZE
from .test_faults import _assert_same, _checkpoint, _cli, _error_line, _log, _non_finite_files, _weights

SAVE = ("--save-every", "2", "--keep-checkpoints", "3")


@pytest.fixture(scope="module")
def base_run(flicker_data, tiny_depth_prior, tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4."""
    run = tmp_path_factory.mktemp("base") / "run"
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "4", *SAVE)) == 0
    return run


@pytest.fixture()
def run(base_run, tmp_path) -> Path:
    """A copy of the base run, to damage."""
    return Path(shutil.copytree(base_run, tmp_path / "run"))


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _stderr(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01  # in the tensor data: the file still loads
    path.write_bytes(bytes(data))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- damaged checkpoints: warned about, the next older one used ---------------------------------------------------


def _no_checksums_bit_flipped(folder: Path) -> None:
    (folder / ckpt.CHECKSUMS_NAME).unlink()
    _flip_bit(folder / "model.safetensors")


def _empty_checksums_bit_flipped(folder: Path) -> None:
    (folder / ckpt.CHECKSUMS_NAME).write_text("{}")
    _flip_bit(folder / "model.safetensors")


def _empty_checksums_truncated(folder: Path) -> None:
    (folder / ckpt.CHECKSUMS_NAME).write_text("{}")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def _model_missing(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _only_state(folder: Path) -> None:
    for file in folder.iterdir():
        if file.name != ckpt.STATE_NAME:
            file.unlink()


def _checksum_dropped_bit_flipped(folder: Path) -> None:
    sums = json.loads((folder / ckpt.CHECKSUMS_NAME).read_text())
    del sums["model.safetensors"]
    (folder / ckpt.CHECKSUMS_NAME).write_text(json.dumps(sums))
    _flip_bit(folder / "model.safetensors")


@pytest.mark.parametrize(("damage", "reason"), [
    (_no_checksums_bit_flipped, "checksums.json is missing"),
    (_empty_checksums_bit_flipped, "checksums.json lists no file"),
    (_empty_checksums_truncated, "checksums.json lists no file"),
    (_model_missing, "model.safetensors is missing"),
    (_only_state, "model.safetensors is missing"),
    (_checksum_dropped_bit_flipped, "model.safetensors has no checksum in checksums.json"),
], ids=["no-checksums", "empty-checksums", "empty-checksums-truncated", "model-missing", "only-state",
        "checksum-dropped"])
def test_damaged_checkpoint_is_passed_over_with_one_warning(run, base_run, flicker_data, tiny_depth_prior, capsys,
                                                            damage, reason):
    damage(_checkpoint(run, 4))
    capsys.readouterr()
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "4", *SAVE, "--resume")) == 0
    err = _stderr(capsys)
    assert len(err) == 1 and err[0].startswith("warning: ") and "step-00000004 is damaged" in err[0], err
    assert reason in err[0], err
    assert [e["step"] for e in _log(run)] == [1, 2, 3, 4]
    _assert_same(_weights(run, 4), _weights(base_run, 4))  # re-done from step 2: the uninterrupted result
    assert ckpt.damage(ckpt.latest_checkpoint(run)) is None


# -- values out of range ------------------------------------------------------------------------------------------


def test_huge_w_reg_stops_before_the_optimizer_overflows(flicker_data, tiny_depth_prior, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "3", "--save-every", "1", "--w-reg", "1e38"))
    line = _error_line(capsys)
    assert code == 2 and line.startswith("error: step 1: the loss is ") and "beyond 1e+15" in line, line
    assert "lower --w-reg" in line and "--lr" not in line, line  # no update was made: the rate is not the cause
    assert not (run / "model").exists() and list((run / "checkpoints").iterdir()) == []
    assert _non_finite_files(run) == []


def test_overflowing_optimizer_moments_stop_the_run_and_are_never_saved(flicker_data, tiny_depth_prior, tmp_path,
                                                                        capsys, monkeypatch):
    run, step = tmp_path / "run", torch.optim.AdamW.step
    calls = []

    def overflowing_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # finite weights, infinite second moment (a squared gradient beyond float32)
            next(iter(self.state.values()))["exp_avg_sq"].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", overflowing_step)
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "3", "--save-every", "1"))
    line = _error_line(capsys)
    assert code == 2 and line.startswith("error: step 2: the optimizer's moments after the update are not finite")
    assert "step-00000001" in line and "intact" not in line and "Lower --lr" in line, line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000001"]
    assert _non_finite_files(run) == [] and not (run / "model").exists()


def _overflowing_prior(prior: Path, out: Path) -> Path:
    """The prior with a head whose last layer overflows float32: every disparity it gives is infinite."""
    model = DepthAnythingForDepthEstimation.from_pretrained(str(prior))
    with torch.no_grad():
        model.head.conv3.weight.fill_(3e38)
        model.head.conv3.bias.fill_(3e38)
    model.save_pretrained(str(out))
    return out


def test_overflowing_prior_is_named_not_the_learning_rate(flicker_data, tiny_depth_prior, tmp_path, capsys):
    prior = _overflowing_prior(tiny_depth_prior, tmp_path / "prior")
    run = tmp_path / "run"
    code = main(_cli(flicker_data, prior, run, "--steps", "2"))
    line = _error_line(capsys)
    assert code == 2 and line.startswith("error: step 1: the frozen prior's targets"), line
    assert "check --model" in line and "--lr" not in line, line
    assert not (run / "model").exists() and list((run / "checkpoints").iterdir()) == []


def test_fp16_on_cpu_says_fp32_is_used_and_records_it(flicker_data, tiny_depth_prior, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "1", "--mixed-precision", "fp16")) == 0
    err = _stderr(capsys)
    assert len(err) == 1 and err[0].startswith("warning: --mixed-precision fp16 has no effect on the CPU"), err
    assert "fp32" in err[0]
    assert json.loads((run / "config.json").read_text())["mixed_precision"] == "no"
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "2", "--mixed-precision", "fp16",
                     "--resume")) == 0
    assert json.loads((run / "config.json").read_text())["history"] == [{"step": 1, "changed": {"steps": [1, 2]}}]


# -- what a resume is measured against ----------------------------------------------------------------------------


def test_resume_without_config_json_refuses_changes_from_the_checkpoints_options(run, flicker_data,
                                                                                  tiny_depth_prior, capsys):
    (run / "config.json").unlink()
    before = _files(run)
    capsys.readouterr()
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "5", "--resume", "--lr", "2e-3"))
    line = _error_line(capsys)
    assert code == 2 and "lr: 0.001 -> 0.002" in line and "--allow-change lr" in line, line
    assert _files(run) == before
    # only --out and --resume: the options come from the checkpoint, and its history goes on
    assert main(["train", "depth", "--out", str(run), "--resume", "--steps", "5", "-q"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["lr"] == 1e-3 and saved["history"] == [{"step": 4, "changed": {"steps": [4, 5]}}]
    assert [e["step"] for e in _log(run)] == [1, 2, 3, 4, 5]


def test_resume_with_every_checkpoint_damaged_still_refuses_changes(run, flicker_data, tiny_depth_prior, capsys):
    for step in (2, 4):
        (_checkpoint(run, step) / "model.safetensors").unlink()
    before = _files(run)
    capsys.readouterr()
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "4", "--resume", "--lr", "2e-3"))
    err = _stderr(capsys)
    assert code == 2 and err[-1].startswith("error: ") and "lr: 0.001 -> 0.002" in err[-1], err
    assert all(line.startswith("warning: ") for line in err[:-1])
    assert _files(run) == before


def test_resume_with_fewer_steps_than_done_is_refused(run, flicker_data, tiny_depth_prior, capsys):
    before = _files(run)
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "2", *SAVE, "--resume"))
    line = _error_line(capsys)
    assert code == 2 and "already at step 4, past --steps 2" in line, line
    assert _files(run) == before


def test_truncated_log_is_restored_from_the_checkpoint(run, base_run, flicker_data, tiny_depth_prior, capsys):
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # cut short in step 2
    capsys.readouterr()
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "5", *SAVE, "--resume")) == 0
    err = _stderr(capsys)
    assert len(err) == 1 and err[0].startswith("warning: ") and "lacked steps 2-4; restored from" in err[0], err
    assert (run / "log.jsonl").read_text().splitlines()[:4] == (base_run / "log.jsonl").read_text().splitlines()
    assert [e["step"] for e in _log(run)] == [1, 2, 3, 4, 5]


def test_log_without_a_copy_to_restore_from_is_reported_lost(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 4, 5)))
    StepLog(log, 4).close()
    err = _stderr(capsys)
    assert len(err) == 1 and err[0].startswith("warning: ") and "lacks steps 2-3" in err[0], err
    assert "record is lost" in err[0]
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 4]


def test_new_videos_under_data_are_a_refused_change(flicker_data, tiny_depth_prior, tmp_path, capsys):
    data, run = Path(shutil.copytree(flicker_data, tmp_path / "data")), tmp_path / "run"
    assert main(_cli(data, tiny_depth_prior, run, "--steps", "1")) == 0
    write_video_dir(render_video(9, FRAMES, SIZE), data / "added")
    before = _files(run)
    capsys.readouterr()
    code = main(_cli(data, tiny_depth_prior, run, "--steps", "2", "--resume"))
    line = _error_line(capsys)
    assert code == 2 and "data: 3 videos (sha256 " in line and "-> 4 videos (sha256 " in line, line
    assert "--allow-change data" in line and _files(run) == before
    assert main(_cli(data, tiny_depth_prior, run, "--steps", "2", "--resume", "--allow-change", "data")) == 0
    changed = json.loads((run / "config.json").read_text())["history"][0]["changed"]
    assert changed["data"][0].startswith("3 videos") and changed["data"][1].startswith("4 videos")


# -- the run folder -----------------------------------------------------------------------------------------------


def test_second_run_into_the_same_folder_is_refused_and_touches_nothing(run, flicker_data, tiny_depth_prior,
                                                                        capsys):
    before = _files(run)
    with (run / LOCK_NAME).open("a") as held:  # as the first run holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "5", "--resume"))
    line = _error_line(capsys)
    assert code == 2 and line == f"error: {run} is in use by another training run; wait for it to end, or pass " \
                                 "another --out"
    assert _files(run) == before


def test_out_that_is_a_file_or_under_one_is_refused(flicker_data, tiny_depth_prior, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    for out, says in ((file, "a file is there"), (file / "run", f"{file} is a file, not a folder")):
        code = main(_cli(flicker_data, tiny_depth_prior, out, "--steps", "1"))
        line = _error_line(capsys)
        assert code == 2 and says in line, line
    assert file.read_text() == "mine\n" and sorted(tmp_path.iterdir()) == [file]


def test_refused_fresh_run_leaves_no_folder(flicker_data, tiny_depth_prior, tmp_path, capsys):
    run = tmp_path / "new"
    code = main(_cli(tmp_path / "nothing-here", tiny_depth_prior, run, "--steps", "1"))
    assert code == 2 and "no such data folder" in _error_line(capsys)
    assert not run.exists()


def _raise_no_space_safetensors(*args, **kwargs):
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _full_checkpoint_weights(monkeypatch, run: Path) -> str:
    monkeypatch.setattr(ckpt, "save_file", _raise_no_space_safetensors)
    return f"{run}/checkpoints/.tmp-step-00000005/model.safetensors"


def _full_checkpoint_optimizer(monkeypatch, run: Path) -> str:
    save = torch.save

    def short_write(obj, path, *args, **kwargs):
        if Path(path).name == "optimizer.pt":  # what torch reports when the disk fills up under it
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return save(obj, path, *args, **kwargs)

    class Full:
        f_bavail = 0

    monkeypatch.setattr(ckpt.torch, "save", short_write)
    monkeypatch.setattr(ckpt.os, "statvfs", lambda path: Full())
    return f"{run}/checkpoints/.tmp-step-00000005/optimizer.pt"


def _full_checksums(monkeypatch, run: Path) -> str:
    write = Path.write_text

    def full(self, text, *args, **kwargs):
        if self.name == ckpt.CHECKSUMS_NAME:
            raise OSError(errno.ENOSPC, "No space left on device")  # as a failed write on an open file: no name
        return write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    return f"{run}/checkpoints/.tmp-step-00000005/checksums.json"


def _full_final_model(monkeypatch, run: Path) -> str:
    from bufferanytime.models import base

    monkeypatch.setattr(base, "save_file", _raise_no_space_safetensors)
    return f"{run}/model"


def _full_log(monkeypatch, run: Path) -> str:
    def full(self, line):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(StepLog, "_append", full)
    return f"{run}/log.jsonl"


@pytest.mark.parametrize("fill", [_full_checkpoint_weights, _full_checkpoint_optimizer, _full_checksums,
                                  _full_final_model, _full_log],
                         ids=["checkpoint-weights", "checkpoint-optimizer", "checksums", "final-model", "log"])
def test_full_disk_is_one_line_and_keeps_the_earlier_checkpoints(run, flicker_data, tiny_depth_prior, capsys,
                                                                 monkeypatch, fill):
    before = {step: _files(_checkpoint(run, step)) for step in (2, 4)}
    model = _files(run / "model")
    path = fill(monkeypatch, run)
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "5", "--save-every", "1", "--keep-checkpoints",
                     "3", "--resume"))
    monkeypatch.undo()
    assert code == 2 and _error_line(capsys) == f"error: {path}: no space left on device"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no partial checkpoint
    assert {step: _files(_checkpoint(run, step)) for step in (2, 4)} == before
    assert _files(run / "model") == model and not list(run.glob(".model.*"))  # the earlier model, whole


def test_leftovers_of_killed_runs_are_removed_and_nothing_else(run, flicker_data, tiny_depth_prior, capsys):
    dead, alive = _dead_pid(), os.getppid()
    leftovers = [run / f".model.tmp-{dead}", run / f".model.old-{dead}", run / "checkpoints" / "step-00000001",
                 run / "checkpoints" / ".del-step-00000003"]
    for folder in leftovers:
        folder.mkdir()
        (folder / "ema.safetensors").write_bytes(b"partial")
    (run / "checkpoints" / "step-00000001" / ckpt.CHECKSUMS_NAME).write_text("{}")
    (run / f".config.json.tmp-{dead}").write_text("{")
    kept = [run / f".model.tmp-{alive}", run / f".mine.tmp-{dead}", run / "checkpoints" / "notes"]
    for folder in kept:
        folder.mkdir()
        (folder / "data.txt").write_text("mine\n")
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "5", "--save-every", "1", "--keep-checkpoints",
                     "1", "--resume")) == 0
    assert not any(p.exists() for p in [*leftovers, run / f".config.json.tmp-{dead}"])
    assert all((folder / "data.txt").read_text() == "mine\n" for folder in kept)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["notes", "step-00000005"]
