"""``bufferanytime eval --align none|scale|affine``: the default follows the model's task, the numbers match a
direct computation, and bad combinations are one error line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bufferanytime.evaluation import load_sequences
from bufferanytime.inference import InferenceSettings, predict_frames
from bufferanytime.models import load_model
from bufferanytime.testing import make_tiny_metric_prior
from tests.helpers import files_under, run_main

MAX_RES = 56


@pytest.fixture(scope="module")
def metric_prior(tmp_path_factory):
    return make_tiny_metric_prior(tmp_path_factory.mktemp("metric") / "prior", max_depth=20)


def _eval(capsys, root, out, *models_and_flags):
    return run_main(capsys, "eval", "depth", "--dataset", "synthetic", "--root", str(root), "--flow", "gt",
                    "--max-res", str(MAX_RES), "--device", "cpu", "-o", str(out), "-q", *models_and_flags)


def _direct_abs_rel(prior, root, scale: float = 1.0) -> float:
    """AbsRel of ``scale`` x the metric prior's depth, computed here frame by frame, averaged over sequences."""
    model = load_model("depth", prior)
    values = []
    for seq in load_sequences("synthetic", str(root)):
        pred = list(predict_frames(model, seq.frames(), InferenceSettings(max_res=MAX_RES, device="cpu")))
        per_frame = []
        for i, frame in enumerate(pred):
            gt = seq.read_depth(i)
            valid = (gt > 1e-3) & (gt < 30.0)
            d = np.clip(scale * frame[valid], 1e-3, 30.0)
            per_frame.append(np.mean(np.abs(d - gt[valid]) / gt[valid]))
        values.append(np.mean(per_frame))
    return float(np.mean(values))


def test_metric_models_are_scored_without_alignment_by_default(capsys, synthetic_root, metric_prior, tmp_path):
    code, err = _eval(capsys, synthetic_root, tmp_path / "none", "--model", str(metric_prior))
    assert code == 0, err
    report = json.loads((tmp_path / "none" / "report.json").read_text())
    assert report["task"] == "metric_depth" and report["align"] == "none"
    metrics = report["mean"]["prior"]
    assert metrics["abs_rel"] == pytest.approx(_direct_abs_rel(metric_prior, synthetic_root), rel=1e-3)
    assert 0 < metrics["median_depth"] < 20
    assert "alignment **none**" in (tmp_path / "none" / "report.md").read_text()
    code, err = _eval(capsys, synthetic_root, tmp_path / "affine", "--model", str(metric_prior), "--align", "affine")
    assert code == 0, err
    affine = json.loads((tmp_path / "affine" / "report.json").read_text())
    assert affine["align"] == "affine"
    assert affine["mean"]["prior"]["abs_rel"] < metrics["abs_rel"]  # a fitted scale and shift can only help
    assert affine["mean"]["prior"]["opw"] == pytest.approx(metrics["opw"])  # OPW does not depend on alignment


def test_relative_models_keep_the_depthcrafter_protocol(capsys, synthetic_root, tiny_depth_prior, tmp_path):
    code, err = _eval(capsys, synthetic_root, tmp_path / "default", "--model", str(tiny_depth_prior))
    assert code == 0, err
    default = json.loads((tmp_path / "default" / "report.json").read_text())
    assert default["task"] == "depth" and default["align"] == "affine"
    code, err = _eval(capsys, synthetic_root, tmp_path / "scale", "--model", str(tiny_depth_prior), "--align", "scale")
    assert code == 0, err
    scale = json.loads((tmp_path / "scale" / "report.json").read_text())
    assert scale["align"] == "scale"
    for seq in scale["sequences"].values():
        assert seq["models"]["tiny-depth"]["shift"] == 0.0


@pytest.mark.parametrize("flags, message", [
    (("--align", "median"), "invalid choice: 'median'"),
    (("--align", "none"), "--align none does not apply to depth; choose from affine, scale"),
])
def test_bad_alignment_is_one_line(capsys, synthetic_root, tiny_depth_prior, tmp_path, flags, message):
    code, err = _eval(capsys, synthetic_root, tmp_path / "out", "--model", str(tiny_depth_prior), *flags)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert files_under(tmp_path) == []


def test_relative_and_metric_models_in_one_run_are_refused(capsys, synthetic_root, tiny_depth_prior, metric_prior,
                                                           tmp_path):
    code, err = _eval(capsys, synthetic_root, tmp_path / "out", "--model", str(tiny_depth_prior), "--model",
                      str(metric_prior))
    assert code == 2 and len(err) == 1 and "serve different tasks" in err[0], err
    assert files_under(tmp_path) == []


def test_align_for_normals_is_refused(capsys, synthetic_root, tiny_normal_prior, tmp_path):
    code, err = run_main(capsys, "eval", "normal", "--dataset", "synthetic", "--root", str(synthetic_root),
                         "--model", str(tiny_normal_prior), "--align", "scale", "--device", "cpu", "-q",
                         "-o", str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and "--align does not apply to normal" in err[0], err
    assert files_under(tmp_path) == []
