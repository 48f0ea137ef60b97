"""Training under faults: non-finite values, damaged checkpoints, changed options on resume, undecodable videos,
frozen processes, and a cache that must follow content, not paths and modification times."""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import DepthAnythingForDepthEstimation

from bufferanytime.cli.main import main
from bufferanytime.errors import InputError
from bufferanytime.io.video import open_video, write_video
from bufferanytime.synthetic import render_video, write_video_dir
from bufferanytime.training import TrainConfig, train
from bufferanytime.training import checkpoint as ckpt
from bufferanytime.training.checkpoint import CHECKSUMS_NAME, write_checksums
from bufferanytime.training.data import discover_videos
from bufferanytime.training.trainer import Trainer

from .conftest import FRAMES, SIZE, tiny_config


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _checkpoint(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def _weights(run: Path, step: int) -> dict:
    """A checkpoint's weights, copied out of the file's memory map (the tests damage files after reading them)."""
    return {k: v.clone() for k, v in load_file(str(_checkpoint(run, step) / "model.safetensors")).items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _tensors(value):
    """Every tensor in a nested checkpoint object (optimizer and random states)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def _non_finite_files(run: Path) -> list[str]:
    """Every safetensors / pt file under ``run`` that holds a NaN or an infinity."""
    bad = []
    for path in sorted(run.rglob("*")):
        if path.suffix == ".safetensors":
            tensors = list(load_file(str(path)).values())
        elif path.suffix == ".pt":
            tensors = list(_tensors(torch.load(path, weights_only=False)))
        else:
            continue
        if not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
            bad.append(str(path.relative_to(run)))
    return bad


def _as_legacy(checkpoint: Path) -> None:
    """Make ``checkpoint`` one of an earlier version: no checksums, no format, options or log copy."""
    state = json.loads((checkpoint / "state.json").read_text())
    old = {k: v for k, v in state.items() if k in ("step", "elapsed", "world_size", "seed", "version")}
    (checkpoint / "state.json").write_text(json.dumps(old))
    for name in (CHECKSUMS_NAME, "log.jsonl"):
        (checkpoint / name).unlink()


def _cli(data: Path, model: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "depth", "--data", str(data), "--model", str(model), "--out", str(run), "--clip-len", "4",
            "--res", "42x56", "--warmup", "0", "--lr", "1e-3", "--workers", "0", "--no-edge-mask", "--cpu", "-q",
            *extra]


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# -- non-finite values ------------------------------------------------------------------------------------------


def test_huge_lr_stops_with_one_line_error_and_leaves_no_nan_file(flicker_data, tiny_depth_prior, tmp_path,
                                                                   capsys):
    run = tmp_path / "run"
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "30", "--lr", "1e6", "--save-every", "1",
                     "--keep-checkpoints", "1"))
    line = _error_line(capsys)
    assert code == 2 and "not finite" in line and "--lr" in line and "intact" not in line, line
    assert not (run / "model").exists() and not (run / "summary.json").exists()
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(kept) == 1 and kept[0] in line  # the last good checkpoint survives and is named
    assert list(run.rglob("*.safetensors")) and _non_finite_files(run) == []
    stopped = int(line.split()[2].rstrip(":"))  # "error: step N: ..."
    assert [e["step"] for e in _log(run)] == list(range(1, stopped))  # nothing of the bad step is kept


def test_update_to_infinite_weights_is_caught_after_the_optimizer_step(flicker_data, tiny_depth_prior,
                                                                        tmp_path, capsys, monkeypatch):
    """A finite loss and gradient can still give infinite weights (an lr near float32's limit): injected here."""
    run = tmp_path / "run"
    step = torch.optim.AdamW.step

    def overflowing_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        self.param_groups[0]["params"][0].data.fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", overflowing_step)
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "2"))
    line = _error_line(capsys)
    assert code == 2 and line.startswith("error: step 1: the weights after the update are not finite"), line
    assert "no checkpoint was written" in line
    assert not (run / "model").exists() and list((run / "checkpoints").iterdir()) == []
    assert main(_cli(flicker_data, tiny_depth_prior, tmp_path / "big", "--lr", "1e39")) == 2
    assert "--lr must be a finite number" in _error_line(capsys)  # beyond float32: refused before training


@pytest.mark.parametrize("option", ["--lr", "--w-reg", "--ema", "--tau", "--dist-timeout", "--min-crop"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_float_options_are_refused(flicker_data, tiny_depth_prior, tmp_path, capsys, option,
                                              value):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error
        main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "1", option, value))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stopped.value.code == 2 and len(errors) == 1 and option in errors[0] and "finite" in errors[0], errors
    assert not run.exists()


@pytest.mark.parametrize("option", ["lr", "w_reg", "ema", "tau", "dist_timeout", "weight_decay"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e39])
def test_non_finite_values_from_a_config_file_are_refused(flicker_data, tiny_depth_prior, tmp_path, option,
                                                          value):
    config = tiny_config(flicker_data, tiny_depth_prior, tmp_path / "run", **{option: value})
    with pytest.raises(InputError, match=f"--{option.replace('_', '-')} must be"):
        config.resolved()


# -- damaged checkpoints ----------------------------------------------------------------------------------------


def test_resume_passes_over_damaged_checkpoints_and_ends_like_an_uninterrupted_run(
    flicker_data, tiny_depth_prior, tmp_path, capsys
):
    run, steps = tmp_path / "run", 6
    config = tiny_config(flicker_data, tiny_depth_prior, run, steps=steps, save_every=2, keep_checkpoints=3)
    train(config)
    model = load_file(str(run / "model" / "model.safetensors"))
    expected = {"checkpoint": _weights(run, steps), "model": {k: v.clone() for k, v in model.items()}}
    assert all((_checkpoint(run, s) / CHECKSUMS_NAME).is_file() for s in (2, 4, 6))

    optimizer = _checkpoint(run, 6) / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])  # truncated
    weights = _checkpoint(run, 4) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01  # one bit flipped in the tensor data: still a loadable file
    weights.write_bytes(bytes(data))
    assert load_file(str(weights)).keys() == expected["checkpoint"].keys()
    capsys.readouterr()

    train(tiny_config(flicker_data, tiny_depth_prior, run, steps=steps, save_every=2, keep_checkpoints=3,
                      resume=True))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and "step-00000006" in warnings[0] and "optimizer.pt" in warnings[0]
    assert "step-00000004" in warnings[1] and "model.safetensors" in warnings[1]
    assert [e["step"] for e in _log(run)] == list(range(1, steps + 1))
    _assert_same(_weights(run, steps), expected["checkpoint"])  # re-done from step 2, replacing the damaged one
    _assert_same(load_file(str(run / "model" / "model.safetensors")), expected["model"])


def test_resume_without_any_valid_checkpoint_starts_over_and_says_so(flicker_data, tiny_depth_prior,
                                                                     tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(flicker_data, tiny_depth_prior, run, steps=2))
    expected = _weights(run, 2)
    (_checkpoint(run, 2) / "model.safetensors").write_bytes(b"")
    capsys.readouterr()
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "2", "--resume")) == 0
    err = capsys.readouterr().err
    assert "step-00000002 is damaged" in err and "no valid checkpoint to resume from; starting from step 0" in err
    assert [e["step"] for e in _log(run)] == [1, 2]
    _assert_same(_weights(run, 2), expected)


def test_checksums_file_that_is_not_a_mapping_is_damage_not_a_crash(tmp_path):
    """A ``checksums.json`` holding valid JSON of the wrong kind is reported like an unreadable one."""
    folder = tmp_path / "step-00000002"
    folder.mkdir()
    (folder / CHECKSUMS_NAME).write_text("[1, 2]\n")
    assert ckpt.damage(ckpt.Checkpoint(folder, 2, {})) == f"unreadable {CHECKSUMS_NAME}"


# -- changed options on resume ----------------------------------------------------------------------------------


def test_resume_refuses_changed_options_and_leaves_the_run_untouched(flicker_data, tiny_depth_prior,
                                                                     tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "2")) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "4", "--resume", "--lr", "2e-3",
                     "--w-reg", "0.5"))
    line = _error_line(capsys)
    assert code == 2 and "lr: 0.001 -> 0.002" in line and "w_reg: 1.0 -> 0.5" in line, line
    assert "--allow-change lr,w-reg" in line and "steps" not in line  # --steps may change
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_allowed_change_is_applied_and_recorded_in_the_history(flicker_data, tiny_depth_prior, tmp_path):
    run = tmp_path / "run"
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "2")) == 0
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "4", "--resume", "--lr", "2e-3",
                     "--allow-change", "lr")) == 0
    assert [e["lr"] for e in _log(run)] == [1e-3, 1e-3, 2e-3, 2e-3]  # really used, not only announced
    state = torch.load(_checkpoint(run, 4) / "scheduler.pt", weights_only=True)
    assert state["base_lrs"] == [2e-3]
    saved = json.loads((run / "config.json").read_text())
    assert saved["lr"] == 2e-3 and saved["allow_change"] == []
    assert saved["history"] == [{"step": 2, "changed": {"steps": [2, 4], "lr": [1e-3, 2e-3]}}]
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "5", "--resume", "--lr", "2e-3")) == 0
    history = json.loads((run / "config.json").read_text())["history"]
    assert history[1:] == [{"step": 4, "changed": {"steps": [4, 5]}}] and len(history) == 2  # kept, appended


def test_resume_refuses_another_number_of_processes_unless_allowed(flicker_data, tiny_depth_prior, tmp_path,
                                                                   capsys):
    run = tmp_path / "run"
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "2")) == 0
    checkpoint = _checkpoint(run, 2)
    state = json.loads((checkpoint / "state.json").read_text())
    (checkpoint / "state.json").write_text(json.dumps({**state, "world_size": 2}))  # as written by 2 processes
    write_checksums(checkpoint)
    capsys.readouterr()
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "3", "--resume"))
    line = _error_line(capsys)
    assert code == 2 and "world_size: 2 -> 1" in line and "--allow-change world-size" in line, line
    assert len(_log(run)) == 2
    assert main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "3", "--resume", "--allow-change",
                     "world-size")) == 0
    history = json.loads((run / "config.json").read_text())["history"]
    assert history == [{"step": 2, "changed": {"steps": [2, 3], "world_size": [2, 1]}}]


# -- undecodable videos -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def damaged_video_data(tmp_path_factory) -> Path:
    """Two frame folders and an mp4 whose middle bytes are overwritten: its header reads, its frames do not."""
    root = tmp_path_factory.mktemp("damaged")
    for seed in range(2):
        write_video_dir(render_video(seed, FRAMES, SIZE, flicker=0.3), root / f"seq_{seed}")
    video = root / "broken.mp4"
    write_video(video, list(render_video(5, FRAMES, SIZE, flicker=0.3).rgb))
    data = bytearray(video.read_bytes())
    middle, length = len(data) // 2, len(data) // 10
    data[middle : middle + length] = b"\xff" * length
    video.write_bytes(bytes(data))
    assert open_video(video).num_frames == FRAMES
    with pytest.raises(InputError, match="cannot decode"):
        list(open_video(video))
    return root


def test_undecodable_clip_is_skipped_counted_and_resume_stays_exact(damaged_video_data, tiny_depth_prior,
                                                                    tmp_path, capsys):
    videos = discover_videos([damaged_video_data])
    broken = [i for i, v in enumerate(videos) if v.path.endswith("broken.mp4")]
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny_config(damaged_video_data, tiny_depth_prior, full, steps=6, save_every=3))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "broken.mp4" in warnings[0]  # once per video, not per visit
    log = _log(full)
    skipped = [e["step"] for e in log if e["step_skipped"]]
    assert skipped == [e["step"] for e in log if e["clips"] == broken] and len(skipped) == 2
    for entry in log:
        assert entry["skipped_clips"] == int(entry["step_skipped"])
        assert (entry["loss"] is None) == entry["step_skipped"]
    assert (full / "model" / "model.safetensors").is_file()

    train(tiny_config(damaged_video_data, tiny_depth_prior, part, steps=3, save_every=3))
    train(tiny_config(damaged_video_data, tiny_depth_prior, part, steps=6, save_every=3, resume=True))
    assert [(e["step"], e["loss"], e["step_skipped"]) for e in _log(part)] == [
        (e["step"], e["loss"], e["step_skipped"]) for e in log
    ]
    _assert_same(_weights(part, 6), _weights(full, 6))


def test_run_without_any_decodable_clip_stops_after_the_limit(damaged_video_data, tiny_depth_prior,
                                                              tmp_path, capsys):
    run = tmp_path / "run"
    code = main(_cli(damaged_video_data / "broken.mp4", tiny_depth_prior, run, "--steps", "50"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 2 and err[0].startswith("warning: ") and "broken.mp4" in err[0]
    limit = TrainConfig().max_skipped_steps
    assert err[1] == (f"error: step {limit}: no decodable clip in {limit} steps in "
                      "a row; check the videos named in the warnings above")
    assert len(_log(run)) == limit - 1 and not (run / "model").exists()


# -- frozen processes -------------------------------------------------------------------------------------------


def test_dist_timeout_reaches_the_process_group(flicker_data, tiny_depth_prior, tmp_path):
    config = tiny_config(flicker_data, tiny_depth_prior, tmp_path / "run", dist_timeout=42.0)
    handler = Trainer(config.resolved()).accelerator.init_handler
    assert handler is not None and handler.timeout == timedelta(seconds=42)
    with pytest.raises(InputError, match="--dist-timeout must be > 0"):
        TrainConfig(**{**config.to_dict(), "dist_timeout": 0.0}).resolved()


# -- cache keyed by content -------------------------------------------------------------------------------------


def _perturb_prior_in_place(prior: Path) -> None:
    """New weights at the same path (another model file, same config)."""
    model = DepthAnythingForDepthEstimation.from_pretrained(str(prior))
    torch.manual_seed(1)
    with torch.no_grad():
        for conv in model.neck.fusion_stage.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.add_(0.5 * torch.randn_like(conv.weight) * conv.weight.std())
    model.save_pretrained(str(prior))


def test_prior_replaced_in_place_is_a_cache_miss(flicker_data, tiny_depth_prior, tmp_path):
    prior, cache = tmp_path / "prior", tmp_path / "cache"
    shutil.copytree(tiny_depth_prior, prior)

    def first_step(name: str) -> dict:
        train(tiny_config(flicker_data, prior, tmp_path / name, steps=1, cache=str(cache)))
        return _log(tmp_path / name)[0]

    assert first_step("a")["cache_hits"] == 0
    again = first_step("b")
    assert again["cache_hits"] == 1 and again["loss_reg"] < 1e-8  # unchanged prior and data: a hit
    _perturb_prior_in_place(prior)
    replaced = first_step("c")
    # A fresh video model is its prior: nothing to regularize, unless the targets came from the old prior.
    assert replaced["cache_hits"] == 0 and replaced["loss_reg"] < 1e-8, replaced


def test_frames_replaced_with_their_old_times_are_a_cache_miss(tiny_depth_prior, tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_video_dir(render_video(0, FRAMES, SIZE, flicker=0.3), data / "seq")
    frames = sorted((data / "seq" / "rgb").iterdir())

    def first_step(name: str) -> dict:
        train(tiny_config(data, tiny_depth_prior, tmp_path / name, steps=1, cache=str(cache)))
        return _log(tmp_path / name)[0]

    assert first_step("a")["cache_hits"] == 0
    assert first_step("b")["cache_hits"] == 1
    other = tmp_path / "other"
    write_video_dir(render_video(7, FRAMES, SIZE, flicker=0.3), other)
    for frame, new in zip(frames, sorted((other / "rgb").iterdir()), strict=True):
        times = frame.stat()
        shutil.copyfile(new, frame)
        os.utime(frame, ns=(times.st_atime_ns, times.st_mtime_ns))  # as `cp -p` and `rsync -a` do
    replaced = first_step("c")
    assert replaced["cache_hits"] == 0 and replaced["loss_reg"] < 1e-8


def test_video_signature_follows_bytes_not_size_or_time(tmp_path):
    frames = list(render_video(0, FRAMES, SIZE).rgb)
    write_video(tmp_path / "a.mp4", frames)
    write_video_dir(render_video(0, FRAMES, SIZE), tmp_path / "seq")
    first = {v.path: v.signature for v in discover_videos([tmp_path], by_content=True)}
    assert first == {v.path: v.signature for v in discover_videos([tmp_path], by_content=True)}  # stable
    video = tmp_path / "a.mp4"
    data, times = bytearray(video.read_bytes()), video.stat()
    data[len(data) // 2] ^= 0xFF  # same size
    video.write_bytes(bytes(data))
    os.utime(video, ns=(times.st_atime_ns, times.st_mtime_ns))  # same time
    second = {v.path: v.signature for v in discover_videos([tmp_path], by_content=True)}
    changed = [path for path in first if first[path] != second[path]]
    assert changed == [str(video.resolve())]


def test_checkpoint_from_before_checksums_resumes_when_readable(flicker_data, tiny_depth_prior, tmp_path,
                                                                capsys):
    """A checkpoint of an earlier version (no checksums.json) is used when every file reads, else passed over."""
    run, steps = tmp_path / "run", 4
    train(tiny_config(flicker_data, tiny_depth_prior, run, steps=steps, save_every=2, keep_checkpoints=2))
    expected = _weights(run, steps)
    for step in (2, 4):
        _as_legacy(_checkpoint(run, step))
    ema = _checkpoint(run, 4) / "ema.safetensors"
    ema.write_bytes(ema.read_bytes()[:100])  # the newest one cannot be read any more
    capsys.readouterr()

    train(tiny_config(flicker_data, tiny_depth_prior, run, steps=steps, save_every=2, keep_checkpoints=2,
                      resume=True))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "step-00000004 is damaged" in err[0] and "ema.safetensors cannot be read" in err[0]
    # the readable legacy checkpoint is resumed from, and said to be unverifiable
    assert err[1].startswith("warning: ") and "step-00000002 has no checksums.json" in err[1]
    assert "cannot be verified" in err[1]
    assert [e["step"] for e in _log(run)] == list(range(1, steps + 1))
    _assert_same(_weights(run, steps), expected)
