"""``bufferanytime depth|normal INPUT --adapt BUDGET -o OUT``: adapt on the input, then predict it with that model."""

from __future__ import annotations

import json

import pytest

from bufferanytime.adapt import run
from bufferanytime.adapt.record import RECORD_NAME, is_adapt_result
from bufferanytime.cli.adapt_first import ADAPTED_DIR
from bufferanytime.models import load_model
from tests.helpers import files_under, run_main

FILES = {"depth": "depth.npz", "normal": "normal.npz"}


@pytest.mark.parametrize(("kind", "steps"), [("depth", 2), ("normal", 1)])
def test_adapts_then_predicts_and_records_it(kind, steps, clips, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "MIN_IMPROVEMENT", -1.0)  # each validation improves: the guard rails are reached
    out = tmp_path / "out"
    code, err = run_main(capsys, kind, str(clips[0]), "--adapt", f"{steps}steps", "-o", str(out), "-q")
    assert code == 0, err
    model_dir = out / ADAPTED_DIR
    assert is_adapt_result(model_dir) and load_model(kind, model_dir).kind == kind
    record = json.loads((model_dir / RECORD_NAME).read_text())
    assert record["inputs"][0]["path"] == str(clips[0]) and record["budget"]["steps"] == steps
    assert (out / "rgb" / FILES[kind]).is_file()
    meta = json.loads((out / "rgb" / f"{kind}.meta.json").read_text())
    adapt = meta["model"]["adapt"]
    assert meta["model"]["path"] == str(model_dir.resolve())  # predicted with the model written
    assert adapt["budget"] == f"{steps}steps" and adapt["steps"] == steps and adapt["result"] == record["result"]
    assert adapt["guard_passed"] == record["guard"]["passed"]
    assert adapt["opw_before"] == record["guard"]["before"]["opw"] > 0
    assert adapt["opw_after"] == record["guard"]["after"]["opw"] > 0
    assert sorted(p.name for p in out.iterdir()) == [ADAPTED_DIR, "rgb"]


@pytest.mark.parametrize("budget", ["soon", "0s", "0steps"])
def test_bad_budget_writes_nothing(budget, clips, tmp_path, capsys):
    code, err = run_main(capsys, "depth", str(clips[0]), "--adapt", budget, "-o", str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and err[0].startswith("error: argument --adapt: "), err
    assert files_under(tmp_path) == []


def test_adapt_with_per_frame_is_refused(clips, tmp_path, capsys):
    code, err = run_main(capsys, "depth", str(clips[0]), "--adapt", "2steps", "--per-frame", "-o", str(tmp_path))
    assert code == 2 and err == ["error: --adapt trains a video model on files and folders; it cannot go with "
                                 "--per-frame"]
    assert files_under(tmp_path) == []


def test_an_interrupted_adaptation_in_out_is_refused_naming_the_resume(clips, tmp_path, capsys):
    state = tmp_path / "out" / ADAPTED_DIR / "checkpoints" / "step-00000001" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"step": 1, "adapt": {}}')
    before = sorted(files_under(tmp_path))
    code, err = run_main(capsys, "depth", str(clips[0]), "--adapt", "2steps", "-o", str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and "interrupted adaptation" in err[0]
    assert f"bufferanytime adapt depth INPUT... -o {tmp_path / 'out' / ADAPTED_DIR} --resume" in err[0]
    assert sorted(files_under(tmp_path)) == before
