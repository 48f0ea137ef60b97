"""``bufferanytime adapt`` and :func:`bufferanytime.adapt.adapt` on the embedded tiny model and synthetic clips.

Runs are a few steps long: these tests check what is written, kept and refused, not how much a model improves
(benchmarks/adapt_domain_shift.py measures that)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from bufferanytime.adapt import guard, run
from bufferanytime.adapt.footage import cut_clips, load_footage, open_sources, split
from bufferanytime.adapt.record import RECORD_MARK, RECORD_NAME
from bufferanytime.models import load_model
from bufferanytime.models.base import VideoModel, tensors_digest
from tests.helpers import files_under, run_main

STEPS = "3steps"


def _figures(before: guard.Figures, after: guard.Figures):
    """A stand-in for the guard rails' measure: ``before`` for the starting model, then ``after`` at every
    validation and at the final check."""
    values = itertools.chain([before], itertools.repeat(after))
    return lambda *args: next(values)


def _digest(model: VideoModel) -> str:
    return tensors_digest(model.trainable_state_dict())


@pytest.fixture(scope="module")
def base_digest() -> str:
    return _digest(load_model("depth"))


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, clips) -> Path:
    """MODEL_DIR of a command-line run on the three clips, the guard rails passed (figures made to pass)."""
    out = tmp_path_factory.mktemp("adapted") / "model"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "figures", _figures(guard.Figures(1.0, 0.01), guard.Figures(0.5, 0.01)))
        patch.setattr(run, "MIN_IMPROVEMENT", -1.0)
        from bufferanytime.cli.main import main

        assert main(["adapt", "depth", *map(str, clips), "-o", str(out), "--budget", STEPS, "-q"]) == 0
    return out


@pytest.fixture(autouse=True)
def _every_validation_improves(monkeypatch):
    """A few steps may or may not lower the validation loss: here each validation counts as the best so far, so
    that the guard rails are reached."""
    monkeypatch.setattr(run, "MIN_IMPROVEMENT", -1.0)


def test_output_loads_and_runs(adapted, clips, base_digest, tmp_path, capsys):
    model = load_model("depth", adapted)
    assert _digest(model) != base_digest  # trained weights, not the starting ones
    record = json.loads((adapted / RECORD_NAME).read_text())
    assert record[RECORD_MARK] and record["result"] == "adapted"
    assert [i["sha256"] for i in record["inputs"]] and all(len(i["sha256"]) == 64 for i in record["inputs"])
    assert record["settings"]["steps"] == 3 and record["validation"]["steps_done"] == 3
    assert [p["step"] for p in record["validation"]["curve"]][0] == 0
    assert record["guard"]["passed"] and record["hardware"]["cpu_count"] and record["date"]
    assert record["base_model"]["weights_sha256"] == base_digest
    code, err = run_main(capsys, "depth", str(clips[0]), "--model", str(adapted), "-o", str(tmp_path / "out"), "-q")
    assert code == 0, err
    assert (tmp_path / "out" / "rgb" / "depth.npz").is_file()


def test_held_out_part_is_disjoint(clips):
    one = split(open_sources([clips[0]]))
    train, held = [s for s in one if not s.held_out], [s for s in one if s.held_out]
    assert len(train) == len(held) == 1 and train[0].end <= held[0].start  # a later time segment
    several = split(open_sources(clips))
    assert [s.held_out for s in several] == [False, False, True]  # a whole video
    footage = load_footage([clips[0]], load_model("depth").size_rule())
    frames = {(False, c.segment, c.start + k) for c in cut_clips(footage, 4, False) for k in range(c.length)}
    held_frames = {(True, c.segment, c.start + k) for c in cut_clips(footage, 4, True) for k in range(c.length)}
    train_index = {footage.segments[seg].span.start + k for _, seg, k in frames}
    held_index = {footage.segments[seg].span.start + k for _, seg, k in held_frames}
    assert train_index and held_index and not train_index & held_index


@pytest.mark.parametrize("failing", ["opw", "prior"])
def test_guard_rail_keeps_the_starting_model(failing, clips, tmp_path, base_digest, monkeypatch, capsys):
    after = guard.Figures(1.2, 0.01) if failing == "opw" else guard.Figures(0.5, 0.5)
    monkeypatch.setattr(run, "figures", _figures(guard.Figures(1.0, 0.01), after))
    out = tmp_path / "model"
    code, err = run_main(capsys, "adapt", "depth", str(clips[0]), "-o", str(out), "--budget", STEPS, "-q")
    assert code == 0
    assert len(err) == 1 and err[0].startswith("warning: kept the starting model:") and "OPW" in err[0]
    assert "distance to the prior" in err[0]
    assert _digest(load_model("depth", out)) == base_digest
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["result"] == "kept_base" and not record["guard"]["passed"]


def test_a_looser_prior_tolerance_lets_further_weights_through(clips, tmp_path, monkeypatch, capsys):
    # twice as far from the prior as the starting model: refused at the default (1.5x), kept at --prior-tolerance 2
    for flags, result in (([], "kept_base"), (["--prior-tolerance", "2"], "adapted")):
        monkeypatch.setattr(run, "figures", _figures(guard.Figures(1.0, 0.1), guard.Figures(0.5, 0.2)))
        out = tmp_path / f"model{len(flags)}"
        code, err = run_main(capsys, "adapt", "depth", str(clips[0]), "-o", str(out), "--budget", STEPS, "-q", *flags)
        record = json.loads((out / RECORD_NAME).read_text())
        assert code == 0 and record["result"] == result, err
        tolerance = 2.0 if flags else guard.PRIOR_TOLERANCE
        assert record["settings"]["prior_tolerance"] == record["guard"]["prior_tolerance"] == tolerance
    code, err = run_main(capsys, "adapt", "depth", str(clips[0]), "-o", str(tmp_path / "bad"), "--prior-tolerance",
                         "-1")
    assert code == 2 and len(err) == 1 and "--prior-tolerance" in err[0] and not (tmp_path / "bad").exists()


def test_zero_tolerance_is_stated_in_the_verdict():
    verdict = guard.judge(guard.Figures(1.0, 0.03), guard.Figures(0.5, 0.031), "depth", tolerance=0.0)
    assert verdict.opw_ok and not verdict.prior_ok and not verdict.passed
    assert guard.judge(guard.Figures(1.0, 0.03), guard.Figures(0.5, 0.031), "depth").passed


def test_python_api_leaves_the_model_given_unchanged(clips):
    model = load_model("depth")
    before = _digest(model)
    steps = []
    adapted = run.adapt(model, clips[:2], STEPS, progress=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)]  # the guard rails are measured for real
    assert _digest(model) == before
    assert isinstance(adapted, VideoModel) and adapted is not model


def test_static_video_keeps_the_starting_model(static_clip, tmp_path, base_digest, capsys):
    out = tmp_path / "model"
    code, err = run_main(capsys, "adapt", "depth", str(static_clip), "-o", str(out), "-q")
    assert code == 0
    assert len(err) == 1 and err[0].startswith("warning: the footage is static")
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["result"] == "kept_base" and record["reason"] == "static footage"
    assert _digest(load_model("depth", out)) == base_digest


def _refused(capsys, tmp_path, *argv) -> str:
    before = sorted(files_under(tmp_path))
    code, err = run_main(capsys, "adapt", *argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert sorted(files_under(tmp_path)) == before  # nothing written, nothing touched
    return err[0]


def test_too_short_footage(short_clip, tmp_path, capsys):
    line = _refused(capsys, tmp_path, "depth", str(short_clip), "-o", str(tmp_path / "model"))
    assert "footage too short for one clip" in line
    assert not (tmp_path / "model").exists()


def test_base_model_that_does_not_load(clips, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"bufferanytime_model": "depth", "prior": "nowhere"}')
    line = _refused(capsys, tmp_path, "depth", str(clips[0]), "-o", str(tmp_path / "model"), "--model", str(broken))
    assert "nowhere" in line
    assert not (tmp_path / "model").exists()


def test_existing_folder_that_is_not_an_adapt_result(clips, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    line = _refused(capsys, tmp_path, "depth", str(clips[0]), "-o", str(out))
    assert "not an adapt result" in line
    assert (out / "notes.txt").read_text() == "keep me"


def test_interrupt_while_training_keeps_the_best_so_far(clips, tmp_path, monkeypatch, capsys, interrupt_at_step):
    interrupt_at_step(3)
    monkeypatch.setattr(run, "figures", _figures(guard.Figures(1.0, 0.01), guard.Figures(0.5, 0.01)))
    out = tmp_path / "model"
    code, err = run_main(capsys, "adapt", "depth", str(clips[0]), "-o", str(out), "--budget", "10steps", "-q")
    assert code == 0
    assert err == ["warning: interrupted: finishing with the best weights so far (interrupt again to stop without "
                   "writing)"]
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["validation"]["stopped"] == "interrupted" and record["validation"]["best_step"] == 2
    load_model("depth", out)


def test_interrupt_while_writing_leaves_nothing(clips, tmp_path, monkeypatch, capsys):
    def interrupted(self, directory, copy_prior=False):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "config.json").write_text("{")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(VideoModel, "save_pretrained", interrupted)
    code, err = run_main(capsys, "adapt", "depth", str(clips[0]), "-o", str(tmp_path / "model"), "--budget", STEPS,
                         "-q")
    assert code == 130 and err[-1] == "error: interrupted"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary beside it
    # no model half-written: only the run's last checkpoint, complete, for --resume
    assert [p.relative_to(tmp_path / "model").parts[:2] for p in files_under(tmp_path / "model")] == \
        [("checkpoints", "step-00000003")] * len(files_under(tmp_path / "model"))
