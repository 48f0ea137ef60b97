"""Evaluation in 3D: the point error against the ground truth with the ground-truth camera."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bufferanytime.evaluation.points import point_metrics
from bufferanytime.geometry import parse_intrinsics, pixel_rays
from bufferanytime.synthetic import render_video, write_video_dir
from bufferanytime.tasks import DEPTH, NORMAL
from tests.helpers import run_main


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    video = render_video(50005, 3, (30, 40))
    write_video_dir(video, root / "seq")
    return video, root


def test_exact_prediction_has_no_error_and_a_known_error_is_measured(clip):
    video, root = clip
    info = {"intrinsics_file": str(root / "seq/meta.json")}
    gt = video.depth.astype(np.float64)
    exact = point_metrics(DEPTH, 2.0 / gt, gt, {"scale": 0.5, "shift": 0.0}, info, "synthetic")
    assert exact["point_rel"] == pytest.approx(0.0, abs=1e-6)
    # 10 % too far everywhere: the error is 0.1 x the ray length |(x, y, -1)| of each pixel
    far = point_metrics(DEPTH, 1.0 / (1.1 * gt), gt, {"scale": 1.0, "shift": 0.0}, info, "synthetic")
    rays = pixel_rays(parse_intrinsics(info["intrinsics_file"]).resolve(30, 40), 30, 40)
    assert far["point_rel"] == pytest.approx(0.1 * np.linalg.norm(rays, axis=-1).mean(), rel=1e-3)
    assert far["point_rel_std"] < 1e-3  # the same relative error in every frame (valid pixels differ slightly)
    assert point_metrics(DEPTH, gt, gt, {"scale": 1, "shift": 0}, {}, "synthetic") == {}  # no camera
    assert point_metrics(NORMAL, gt, gt, {}, info, "synthetic") == {}


def test_eval_reports_the_point_error_on_synthetic_data(clip, tiny_depth_prior, tmp_path, capsys):
    _, root = clip
    code, err = run_main(capsys, "eval", "depth", "--dataset", "synthetic", "--root", str(root), "--flow", "gt",
                         "--max-res", "42", "--device", "cpu", "--model", str(tiny_depth_prior), "-o",
                         str(tmp_path / "report"), "-q")
    assert code == 0, err
    report = json.loads((tmp_path / "report/report.json").read_text())
    metrics = next(iter(report["mean"].values()))
    assert 0.0 < metrics["point_rel"] < 10.0 and metrics["point_rel_std"] >= 0.0
    assert "## 3D points (ground-truth intrinsics)" in (tmp_path / "report/report.md").read_text()
